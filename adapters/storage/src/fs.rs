//! The local filesystem through OpenDAL's fs service.

use std::path::{Path, PathBuf};

use opendal::Operator;
use opendal::services::Fs;

use crate::fs_calls::{FsCalls, always_offloads};
use crate::fs_kind::remote_kind_at;
use crate::fs_writer::{FsWriter, place, sync_folder};
use crate::object_writer::Committed;
use crate::settings::FsSettings;

/// Temporary files live beside the tree (same filesystem, so commits are renames), in a
/// folder Distribution ignores.
const TEMP_DIR: &str = ".stowage-tmp";

pub(crate) fn operator(settings: &FsSettings) -> opendal::Result<Operator> {
    let root = Path::new(&settings.root_dir);
    let temp = root.join(TEMP_DIR);
    let builder = Fs::default()
        .root(&settings.root_dir)
        .atomic_write_dir(&temp.to_string_lossy());
    Operator::new(builder)
}

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

/// Where a filesystem store writes, and how its calls run (whether commits are fsynced).
#[derive(Clone, Debug)]
pub(crate) struct FsTarget {
    root: PathBuf,
    calls: FsCalls,
}

impl FsTarget {
    pub(crate) fn new(settings: &FsSettings) -> Self {
        FsTarget {
            root: PathBuf::from(&settings.root_dir),
            calls: FsCalls::new(settings.sync_to_disk, offload_always(settings)),
        }
    }

    /// A writer of `key`; with `create_new`, its commit leaves an existing `key` alone.
    pub(crate) fn writer(&self, key: &str, create_new: bool) -> FsWriter {
        let (temp_dir, target) = (self.root.join(TEMP_DIR), self.root.join(key));
        FsWriter::new(&temp_dir, target, create_new, self.calls.clone())
    }

    /// A writer of `key` itself, from `offset` on; see [`FsWriter::in_place`].
    pub(crate) fn writer_at(&self, key: &str, offset: u64) -> FsWriter {
        FsWriter::in_place(self.path(key), offset, self.calls.clone())
    }

    /// Where `key` is on disk.
    pub(crate) fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// A small object's whole content in one call (OpenDAL's fs reader zeroes a 2 MiB
    /// buffer for every read of unknown size), or `None` when absent.
    pub(crate) async fn read(&self, key: &str) -> std::io::Result<Option<Vec<u8>>> {
        let path = self.path(key);
        self.calls
            .run(move || match std::fs::read(path) {
                Ok(data) => Ok(Some(data)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            })
            .await
    }

    /// Deletes a folder and everything below it in one blocking call (OpenDAL lists it and
    /// deletes entry by entry). Absent is fine.
    pub(crate) async fn delete_all(&self, prefix: &str) -> std::io::Result<()> {
        let path = self.path(prefix);
        self.calls
            .offload(move || match std::fs::remove_dir_all(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            })
            .await
    }

    /// Moves `from` to `to` unless something is at `to` (then `from` stays): a hard link,
    /// which fails where a rename would replace, then the old name's removal.
    pub(crate) async fn move_new(&self, from: &str, to: &str) -> std::io::Result<Committed> {
        let (from, to) = (self.root.join(from), self.root.join(to));
        self.calls
            .run_commit(move |sync| {
                let committed = place(&from, &to, true)?;
                if sync && committed == Committed::Done {
                    sync_folder(&to)?;
                }
                Ok(committed)
            })
            .await
    }
}
