//! The filesystem store: every call is our own, on `std::fs` through [`FsCalls`] (on the
//! runtime's thread while the filesystem is fast, on blocking threads otherwise). Writes go
//! through [`FsWriter`] (temporary file, then rename or link), responses and re-hashing
//! through the mapped reader (`fs_reader.rs`). Keys are paths below the root.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::Stream;
use stowage_core::range::Span;
use stowage_core::step::{ObjectInfo, Outcome, Piece, Versioned, WriteCondition};
use stowage_core::time::Millis;

use crate::StoreOpenError;
use crate::committed::Committed;
use crate::fs_calls::{FsCalls, always_offloads};
use crate::fs_kind::remote_kind_at;
use crate::fs_reader;
use crate::fs_writer::{FsWriter, place, sync_folder};
use crate::object_writer::ObjectWriter;
use crate::settings::FsSettings;
use crate::shared::{StoredObject, failed};

/// Temporary files live beside the tree (same filesystem, so commits are renames), in a
/// folder Distribution ignores.
const TEMP_DIR: &str = ".stowage-tmp";

/// Whether every call of the store at `settings.root_dir` goes to blocking threads.
fn offload_always(settings: &FsSettings) -> bool {
    let remote = remote_kind_at(Path::new(&settings.root_dir));
    let offload = always_offloads(settings.inline_calls, remote);
    if let Some(kind) = remote {
        tracing::info!(
            root = settings.root_dir,
            filesystem = kind,
            offload,
            "store on a network or FUSE filesystem"
        );
    }
    offload
}

fn absent_is<T>(result: std::io::Result<T>, absent: T) -> std::io::Result<T> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(absent),
        other => other,
    }
}

/// When the file was last written, in milliseconds since the epoch; `None` when the
/// filesystem has no such time or it is before the epoch.
fn modified_millis(meta: &std::fs::Metadata) -> Option<u64> {
    let since_epoch = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    u64::try_from(since_epoch.as_millis()).ok()
}

/// A delete's outcome: nothing there to delete is fine.
fn deleted(key: &str, removed: std::io::Result<()>) -> Outcome {
    match absent_is(removed, ()) {
        Ok(()) => Outcome::Ok,
        Err(e) => failed("delete", key, e),
    }
}

/// The entries of the folder at `path`: none where there is no folder (nothing there, or a
/// file: a key is never both).
fn folder_entries(path: &Path) -> std::io::Result<Option<std::fs::ReadDir>> {
    match std::fs::read_dir(path) {
        Ok(entries) => Ok(Some(entries)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Where a filesystem store keeps its objects, and how its calls run (whether commits are
/// fsynced).
#[derive(Clone, Debug)]
pub struct FsStore {
    root: PathBuf,
    calls: FsCalls,
}

impl FsStore {
    pub(crate) fn new(settings: &FsSettings) -> Self {
        FsStore {
            root: PathBuf::from(&settings.root_dir),
            calls: FsCalls::new(settings.sync_to_disk, offload_always(settings)),
        }
    }

    /// Where `key` is on disk.
    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// A writer of `key` whose commit leaves an existing `key` alone for
    /// [`WriteCondition::CreateNew`]. The filesystem has no compare-and-swap: it replaces
    /// whatever is there for [`WriteCondition::IfVersion`] (its reads report no versions, so
    /// the core never asks it to); there the lock alone protects a replacement.
    pub(crate) fn writer(&self, key: &str, condition: &WriteCondition) -> ObjectWriter {
        ObjectWriter::Fs(self.fs_writer(key, *condition == WriteCondition::CreateNew))
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the temporary folder if it is missing and an empty file in it, then removes
    /// the file: what every write needs. An empty file takes no block, so a full disk
    /// passes (its reads still serve, and deletions make room). Replicas on a shared
    /// filesystem may share a process id (1, in containers): one may remove the other's
    /// file first, which proves as much.
    pub(crate) fn check_writable(&self) -> Result<(), StoreOpenError> {
        let temp = self.root.join(TEMP_DIR);
        let probe = temp.join(format!("writable-{}", std::process::id()));
        std::fs::create_dir_all(&temp)
            .and_then(|()| std::fs::File::create(&probe))
            .and_then(|_| absent_is(std::fs::remove_file(&probe), ()))
            .map_err(|source| StoreOpenError::FsNotWritable {
                root: self.root.display().to_string(),
                source,
            })
    }

    fn fs_writer(&self, key: &str, create_new: bool) -> FsWriter {
        let (temp_dir, target) = (self.root.join(TEMP_DIR), self.path(key));
        FsWriter::new(&temp_dir, target, create_new, self.calls.clone())
    }

    /// A writer of `key` itself, from `offset` on; see [`FsWriter::in_place`].
    pub(crate) fn writer_at(&self, key: &str, offset: u64) -> ObjectWriter {
        ObjectWriter::Fs(FsWriter::in_place(
            self.path(key),
            offset,
            self.calls.clone(),
        ))
    }

    /// The size of the file at `key`; `None` when there is none.
    async fn size(&self, key: &str) -> std::io::Result<Option<u64>> {
        let path = self.path(key);
        self.calls
            .run(move || {
                let meta = absent_is(std::fs::metadata(path).map(Some), None)?;
                Ok(meta.filter(|meta| meta.is_file()).map(|meta| meta.len()))
            })
            .await
    }

    pub(crate) async fn stat(&self, key: &str) -> Outcome {
        match self.size(key).await {
            Ok(size) => Outcome::Stat(size),
            Err(e) => failed("stat", key, e),
        }
    }

    /// The file's size and time of last write (what the collector's grace period reads).
    pub(crate) async fn inspect(&self, key: &str) -> Outcome {
        let path = self.path(key);
        let info = self
            .calls
            .run(move || {
                let meta = absent_is(std::fs::metadata(path).map(Some), None)?;
                Ok(meta.filter(|meta| meta.is_file()).map(|meta| {
                    // A time before the epoch or none at all makes the file look new: the
                    // collector then spares it rather than guess its age.
                    let modified = modified_millis(&meta).unwrap_or(u64::MAX);
                    ObjectInfo {
                        size: meta.len(),
                        modified: Millis(modified),
                    }
                }))
            })
            .await;
        match info {
            Ok(info) => Outcome::Inspected(info),
            Err(e) => failed("inspect", key, e),
        }
    }

    /// The temporary files written before `cutoff`: writes that never committed, their
    /// process having died (a live write's file is younger: every chunk touches it). With
    /// `remove`, they are removed. Answers how many and their bytes.
    pub(crate) async fn temp_leftovers(
        &self,
        cutoff: Millis,
        remove: bool,
    ) -> std::io::Result<(usize, u64)> {
        let temp = self.root.join(TEMP_DIR);
        self.calls
            .run(move || {
                let mut found = (0, 0);
                // `<TEMP_DIR>/<two characters>/<file>`, as `FsWriter::new` names them.
                for folder in absent_is(std::fs::read_dir(&temp).map(Some), None)?
                    .into_iter()
                    .flatten()
                {
                    let folder = folder?;
                    if !folder.file_type()?.is_dir() {
                        continue;
                    }
                    for file in absent_is(std::fs::read_dir(folder.path()).map(Some), None)?
                        .into_iter()
                        .flatten()
                    {
                        let file = file?;
                        let Some(meta) = absent_is(file.metadata().map(Some), None)? else {
                            continue;
                        };
                        let modified = modified_millis(&meta);
                        if !meta.is_file() || modified.is_none_or(|m| m >= cutoff.0) {
                            continue;
                        }
                        if remove {
                            absent_is(std::fs::remove_file(file.path()), ())?;
                        }
                        found.0 += 1;
                        found.1 += meta.len();
                    }
                }
                Ok(found)
            })
            .await
    }

    /// A small object's whole content in one call, or `None` when absent.
    async fn read(&self, key: &str) -> std::io::Result<Option<Bytes>> {
        let path = self.path(key);
        self.calls
            .run(move || absent_is(std::fs::read(path).map(|data| Some(data.into())), None))
            .await
    }

    pub(crate) async fn read_outcome(&self, key: &str) -> Outcome {
        match self.read(key).await {
            Ok(data) => Outcome::Read(data),
            Err(e) => failed("read", key, e),
        }
    }

    /// As a read: the filesystem has no versions.
    pub(crate) async fn read_versioned(&self, key: &str) -> Outcome {
        match self.read(key).await {
            Ok(found) => Outcome::Versioned(found.map(|data| Versioned {
                data,
                version: None,
            })),
            Err(e) => failed("read", key, e),
        }
    }

    /// The bytes of a piece, through the mapped reader; all of them, or an error.
    pub(crate) async fn read_piece(
        &self,
        piece: &Piece,
    ) -> std::io::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>> {
        let span = match piece.span {
            Some(span) => span,
            None => {
                let size = self.size(&piece.key).await?;
                let len = size.ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such object")
                })?;
                Span { start: 0, len }
            }
        };
        self.read_span(&piece.key, span).await
    }

    pub(crate) async fn read_span(
        &self,
        key: &str,
        span: Span,
    ) -> std::io::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>> {
        fs_reader::read_span(self.path(key), span.start, span.len).await
    }

    /// Nothing but a single whole piece is moved (linked, then unlinked); anything else is
    /// copied by the kernel into one new file, placed only if nothing is at `to`.
    pub(crate) async fn concat(&self, pieces: &[Piece], to: &str) -> std::io::Result<Committed> {
        if let [Piece { key, span: None }] = pieces {
            return self.move_new(key, to).await;
        }
        let mut writer = self.fs_writer(to, true);
        for piece in pieces {
            if let Err(e) = writer.append_file(self.path(&piece.key), piece.span).await {
                writer.abort().await;
                return Err(e);
            }
        }
        writer.commit().await
    }

    /// Moves `from` to `to` unless something is at `to` (then `from` stays): a hard link,
    /// which fails where a rename would replace, then the old name's removal.
    async fn move_new(&self, from: &str, to: &str) -> std::io::Result<Committed> {
        let (from, to) = (self.path(from), self.path(to));
        self.calls
            .run_commit(move |sync| {
                let committed = place(&from, &to, true)?;
                if sync && committed == Committed::Written {
                    sync_folder(&to)?;
                }
                Ok(committed)
            })
            .await
    }

    pub(crate) async fn delete(&self, key: &str) -> Outcome {
        let path = self.path(key);
        let removed = self.calls.run(move || std::fs::remove_file(path)).await;
        deleted(key, removed)
    }

    /// Deletes a folder and everything below it in one blocking call.
    pub(crate) async fn delete_all_outcome(&self, prefix: &str) -> Outcome {
        let path = self.path(prefix);
        let removed = self
            .calls
            .offload(move || std::fs::remove_dir_all(path))
            .await;
        deleted(prefix, removed)
    }

    /// The children of a folder: files by name, folders with a trailing `/`.
    pub(crate) async fn list(&self, prefix: &str) -> Outcome {
        let path = self.path(prefix);
        let listed = self
            .calls
            .run(move || {
                let Some(entries) = folder_entries(&path)? else {
                    return Ok(Vec::new());
                };
                let mut names = Vec::new();
                for entry in entries {
                    let entry = entry?;
                    let mut name = entry.file_name().to_string_lossy().into_owned();
                    if entry.file_type()?.is_dir() {
                        name.push('/');
                    }
                    names.push(name);
                }
                Ok(names)
            })
            .await;
        match listed {
            Ok(names) => Outcome::List(names),
            Err(e) => failed("list", prefix, e),
        }
    }

    /// Every file below `prefix`, at any depth, keyed by its path below the root.
    pub(crate) async fn list_objects(&self, prefix: &str) -> std::io::Result<Vec<StoredObject>> {
        let (root, start) = (self.root.clone(), self.path(prefix));
        self.calls
            .offload(move || {
                let mut found = Vec::new();
                let mut pending = vec![start];
                while let Some(dir) = pending.pop() {
                    let Some(entries) = folder_entries(&dir)? else {
                        continue;
                    };
                    for entry in entries {
                        let entry = entry?;
                        let path = entry.path();
                        if entry.file_type()?.is_dir() {
                            if path != root.join(TEMP_DIR) {
                                pending.push(path);
                            }
                            continue;
                        }
                        let key = path.strip_prefix(&root).map_err(std::io::Error::other)?;
                        found.push(StoredObject {
                            key: key.to_string_lossy().into_owned(),
                            size: entry.metadata()?.len(),
                        });
                    }
                }
                Ok(found)
            })
            .await
    }
}
