//! Writing an object on the filesystem: bytes go to a temporary file beside the tree, and
//! the file is renamed into place only when the caller commits. OpenDAL's fs writer always
//! fsyncs on close; this one fsyncs (file and folder) only with `sync_to_disk` (default off,
//! as the design's configuration has it), so by default a push runs at page-cache speed.
//! (Distribution's filesystem driver fsyncs every upload write it commits.)
//!
//! Chunks are kept as they arrived and written with one vectored write per batch: no copy
//! into a gathering buffer, and no large buffer of our own for the allocator to hold on to.
//! The temporary file is created with the first batch, so a small object costs one call
//! (create, write, rename) in all.
//!
//! Batches are written on the thread that received and hashed them, while those bytes are
//! still in its cache: a write into the page cache takes a few dozen microseconds, and
//! handing it to another thread costs more CPU than it saves (the copy reads the bytes from
//! the other core's cache, and the busy threads, client included, share few cores).
//! Opening, finishing and placing the file run there too. While the filesystem is slow
//! (see [`FsCalls`]) batches go to a blocking thread instead, one in flight, so the worker
//! keeps serving its other connections.
//!
//! A create-new commit hard-links the file into place instead, which fails when the target
//! exists (a rename would replace it), then unlinks the temporary name. The filesystem has
//! no compare-and-swap for replacing an object, so every other commit is a rename.
//!
//! An upload's data file is written in place instead ([`FsWriter::in_place`]): from an
//! offset, into the file itself, with nothing to move on commit.

use std::fs::File;
use std::io::{IoSlice, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use stowage_core::range::Span;
use tokio::task::{JoinHandle, spawn_blocking};

use crate::committed::Committed;
use crate::fs_calls::{FsCalls, joined};

/// Bytes gathered before one write.
const BATCH_BYTES: usize = 256 * 1024;

/// Chunks gathered before one write, well below the kernel's `IOV_MAX` (1024).
const BATCH_CHUNKS: usize = 256;

pub(crate) struct FsWriter {
    /// The file the bytes go to: a fresh temporary file, or, in place, the object itself.
    path: PathBuf,
    /// Where a temporary file goes on commit; `None` in place.
    placement: Option<Placement>,
    /// Where in the file the first byte goes.
    offset: u64,
    calls: FsCalls,
    batch: Vec<Bytes>,
    batched: usize,
    /// The file, once created: idle, or with a write in flight that will hand it back.
    file: FileSlot,
}

struct Placement {
    target: PathBuf,
    /// Commit only if nothing is at `target`.
    create_new: bool,
}

enum FileSlot {
    NotCreated,
    Idle(File),
    Writing(JoinHandle<std::io::Result<File>>),
    Gone,
}

/// Opens `path` as `open` does, creating its folder if it is missing (tried first
/// without: it usually exists).
fn open_in_folder(
    path: &Path,
    open: impl Fn(&Path) -> std::io::Result<File>,
) -> std::io::Result<File> {
    match open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            open(path)
        }
        other => other,
    }
}

/// `write_all` for a list of buffers, in as few system calls as the kernel allows.
fn write_all_vectored(file: &mut File, chunks: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl FsWriter {
    /// Starts writing `target` through a fresh temporary file in `temp_dir`.
    pub(crate) fn new(temp_dir: &Path, target: PathBuf, create_new: bool, calls: FsCalls) -> Self {
        let name = format!("{:016x}{:016x}", rand_u64(), rand_u64());
        // Spread over 256 folders: concurrent creates and renames in one folder queue on
        // its lock.
        let temp = temp_dir.join(&name[..2]).join(name);
        let placement = Placement { target, create_new };
        Self::writing(temp, Some(placement), 0, calls)
    }

    /// Starts writing `path` itself from `offset` on (creating it if absent): what is written
    /// is there at once, and stays there if the write fails.
    pub(crate) fn in_place(path: PathBuf, offset: u64, calls: FsCalls) -> Self {
        Self::writing(path, None, offset, calls)
    }

    fn writing(path: PathBuf, placement: Option<Placement>, offset: u64, calls: FsCalls) -> Self {
        FsWriter {
            path,
            placement,
            offset,
            calls,
            batch: Vec::new(),
            batched: 0,
            file: FileSlot::NotCreated,
        }
    }

    /// Opens the file for the first write.
    fn open(path: &Path, temporary: bool, offset: u64) -> std::io::Result<File> {
        if temporary {
            return open_in_folder(path, |path| File::create_new(path));
        }
        let mut file = open_in_folder(path, |path| {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
        })?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(file)
    }

    /// Opens the file when the first write needs it.
    fn opener(&self) -> impl FnOnce() -> std::io::Result<File> + Send + 'static {
        let (path, temporary, offset) = (self.path.clone(), self.placement.is_some(), self.offset);
        move || Self::open(&path, temporary, offset)
    }

    pub(crate) async fn write(&mut self, chunk: Bytes) -> std::io::Result<()> {
        if chunk.is_empty() {
            return Ok(()); // a vectored write of nothing reads as a failed write
        }
        self.batched += chunk.len();
        self.batch.push(chunk);
        if self.batched >= BATCH_BYTES || self.batch.len() >= BATCH_CHUNKS {
            self.flush().await?;
        }
        Ok(())
    }

    /// Appends the file at `path`, whole or a span of it (a kernel-side copy:
    /// `std::io::copy` between files uses `copy_file_range`, which also shares extents
    /// where the filesystem can).
    pub(crate) async fn append_file(
        &mut self,
        path: PathBuf,
        span: Option<Span>,
    ) -> std::io::Result<()> {
        self.flush().await?;
        let file = self.take_file().await?;
        let open = self.opener();
        self.file = FileSlot::Writing(spawn_blocking(move || {
            let mut file = match file {
                Some(file) => file,
                None => open()?,
            };
            let mut from = File::open(path)?;
            let Some(span) = span else {
                std::io::copy(&mut from, &mut file)?;
                return Ok(file);
            };
            from.seek(SeekFrom::Start(span.start))?;
            if std::io::copy(&mut from.take(span.len), &mut file)? != span.len {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            Ok(file)
        }));
        Ok(())
    }

    /// Waits for the write in flight, if any, and hands the file back (`None` before the
    /// first write).
    async fn take_file(&mut self) -> std::io::Result<Option<File>> {
        match std::mem::replace(&mut self.file, FileSlot::Gone) {
            FileSlot::NotCreated => Ok(None),
            FileSlot::Idle(file) => Ok(Some(file)),
            FileSlot::Writing(handle) => joined(handle.await).map(Some),
            FileSlot::Gone => Err(std::io::Error::other("file lost after a failed write")),
        }
    }

    /// Writes the batch here, or while the filesystem is slow starts writing it on a
    /// blocking thread once the previous write has finished.
    async fn flush(&mut self) -> std::io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut file = match self.take_file().await? {
            Some(file) => file,
            None => self.calls.run(self.opener()).await?,
        };
        let batch = std::mem::take(&mut self.batch);
        self.batched = 0;
        if self.calls.offloading() {
            self.file = FileSlot::Writing(spawn_blocking(move || {
                write_all_vectored(&mut file, &batch)?;
                Ok(file)
            }));
            return Ok(());
        }
        let started = Instant::now();
        write_all_vectored(&mut file, &batch)?;
        self.calls.took(started.elapsed());
        self.file = FileSlot::Idle(file);
        Ok(())
    }

    /// Writes the rest and moves the file into place (creating its folders): renamed, or
    /// for a create-new commit linked, leaving an existing target as it was. In place, only
    /// the rest is written.
    pub(crate) async fn commit(mut self) -> std::io::Result<Committed> {
        if matches!(self.file, FileSlot::NotCreated)
            && self.batch.is_empty()
            && let Some(Placement {
                target,
                create_new: true,
            }) = &self.placement
        {
            // No temporary file exists, so nothing to discard whatever the outcome.
            return create_empty(target.clone(), &self.calls).await;
        }
        let temporary = self.placement.is_some();
        let result = self.finish().await;
        if temporary && !matches!(result, Ok(Committed::Written)) {
            self.discard().await;
        }
        result
    }

    async fn finish(&mut self) -> std::io::Result<Committed> {
        let file = self.take_file().await?;
        let batch = std::mem::take(&mut self.batch);
        let open = self.opener();
        let (path, placement) = (self.path.clone(), self.placement.take());
        self.calls
            .run_commit(move |sync| {
                let mut file = match file {
                    Some(file) => file,
                    None => open()?,
                };
                write_all_vectored(&mut file, &batch)?;
                if sync {
                    file.sync_all()?;
                }
                drop(file);
                let Some(Placement { target, create_new }) = placement else {
                    if sync {
                        // The file may be new: its name must last as well.
                        sync_folder(&path)?;
                    }
                    return Ok(Committed::Written);
                };
                let committed = place(&path, &target, create_new)?;
                if sync && committed == Committed::Written {
                    sync_folder(&target)?;
                }
                Ok(committed)
            })
            .await
    }

    /// Drops everything written to a temporary file, so nothing ever appears at the
    /// target. In place, what was written stays.
    pub(crate) async fn abort(mut self) {
        let created = !matches!(self.file, FileSlot::NotCreated);
        let _ = self.take_file().await;
        if created && self.placement.is_some() {
            self.discard().await;
        }
    }

    async fn discard(&self) {
        let temp = self.path.clone();
        let _ = self.calls.run(move || std::fs::remove_file(temp)).await;
    }
}

/// Creates `target` empty unless something is there. With no bytes nothing can be
/// half-written, so it is created in place: a claim on an upload's offset costs one create
/// instead of a temporary file, a link and an unlink.
async fn create_empty(target: PathBuf, calls: &FsCalls) -> std::io::Result<Committed> {
    calls
        .run_commit(
            move |sync| match open_in_folder(&target, |path| File::create_new(path)) {
                Ok(file) => {
                    if sync {
                        file.sync_all()?;
                        sync_folder(&target)?;
                    }
                    Ok(Committed::Written)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Ok(Committed::ConditionFailed)
                }
                Err(e) => Err(e),
            },
        )
        .await
}

/// Makes a new name in `path`'s folder last.
pub(crate) fn sync_folder(path: &Path) -> std::io::Result<()> {
    File::open(path.parent().unwrap_or(Path::new("/")))?.sync_all()
}

/// Moves the finished file `temp` to `target`, creating its folders if they are missing
/// (tried first without: they usually exist).
pub(crate) fn place(temp: &Path, target: &Path, create_new: bool) -> std::io::Result<Committed> {
    let attempt = || {
        if create_new {
            std::fs::hard_link(temp, target).and_then(|()| std::fs::remove_file(temp))
        } else {
            std::fs::rename(temp, target)
        }
    };
    let placed = match attempt() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(target.parent().unwrap_or(Path::new("/")))?;
            attempt()
        }
        other => other,
    };
    match placed {
        Ok(()) => Ok(Committed::Written),
        Err(e) if create_new && e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(Committed::ConditionFailed)
        }
        Err(e) => Err(e),
    }
}

/// Temporary names only need to be unique among concurrent writers of this process and
/// leftovers of earlier ones; `RandomState` is seeded randomly per process.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1 MiB and a bit in 64 KiB chunks: several batches, and a rest for the commit.
    fn chunks() -> (Vec<u8>, Vec<Bytes>) {
        let data: Vec<u8> = (0..(1 << 20) + 777u32).map(|i| (i % 251) as u8).collect();
        let chunks = data.chunks(64 * 1024).map(Bytes::copy_from_slice).collect();
        (data, chunks)
    }

    /// Calls that run here, or (`offloaded`) on blocking threads as after a slow call.
    fn calls(offloaded: bool) -> FsCalls {
        let calls = FsCalls::new(false, false);
        if offloaded {
            calls.took(std::time::Duration::from_secs(1));
            assert!(calls.offloading());
        }
        calls
    }

    async fn write_all(mut writer: FsWriter) -> Committed {
        for chunk in chunks().1 {
            writer.write(chunk).await.expect("write");
        }
        writer.commit().await.expect("commit")
    }

    /// Batches written on the receiving thread and batches handed to a blocking thread (as
    /// after a slow write) make the same file, through a temporary file and in place.
    #[tokio::test]
    async fn inline_and_offloaded_batches_make_the_same_file() {
        let dir = std::env::temp_dir().join(format!("stowage-fs-writer-{}", rand_u64()));
        let data = chunks().0;
        for offloaded in [false, true] {
            let target = dir.join(format!("whole-{offloaded}"));
            let writer = FsWriter::new(&dir.join("tmp"), target.clone(), true, calls(offloaded));
            assert_eq!(write_all(writer).await, Committed::Written);
            assert_eq!(std::fs::read(&target).expect("read"), data);

            let in_place = dir.join(format!("in-place-{offloaded}"));
            std::fs::write(&in_place, b"head").expect("seed");
            let writer = FsWriter::in_place(in_place.clone(), 4, calls(offloaded));
            assert_eq!(write_all(writer).await, Committed::Written);
            assert_eq!(
                std::fs::read(&in_place).expect("read"),
                [b"head", &data[..]].concat()
            );
        }
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    /// An empty create-new object (an upload's claim) is made in place, in a folder created
    /// for it, and only once.
    #[tokio::test]
    async fn an_empty_object_created_new_is_created_once() {
        let dir = std::env::temp_dir().join(format!("stowage-fs-claim-{}", rand_u64()));
        let target = dir.join("claims").join("0");
        let first = FsWriter::new(&dir.join("tmp"), target.clone(), true, calls(false));
        assert_eq!(first.commit().await.expect("commit"), Committed::Written);
        assert_eq!(std::fs::read(&target).expect("read"), b"");
        std::fs::write(&target, b"taken").expect("mark");
        let second = FsWriter::new(&dir.join("tmp"), target.clone(), true, calls(false));
        assert_eq!(
            second.commit().await.expect("commit"),
            Committed::ConditionFailed
        );
        assert_eq!(std::fs::read(&target).expect("read"), b"taken");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
