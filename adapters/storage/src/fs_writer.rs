//! Writing an object on the filesystem: bytes go to a temporary file beside the tree, one
//! write in flight on a blocking thread while the next chunks are received and hashed, and
//! the file is renamed into place only when the caller commits. OpenDAL's fs writer always
//! fsyncs on close; this one fsyncs (file and folder) only with `sync_to_disk`, so a push
//! runs at page-cache speed by default, as Distribution's does.
//!
//! Chunks are kept as they arrived and written with one vectored write per batch: no copy
//! into a gathering buffer, and no large buffer of our own for the allocator to hold on to.
//! The temporary file is created with the first batch, so a small object costs one
//! blocking call (create, write, rename) in all.

use std::fs::File;
use std::io::{IoSlice, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::task::{JoinHandle, spawn_blocking};

/// Bytes gathered before one blocking write.
const BATCH_BYTES: usize = 256 * 1024;

/// Chunks gathered before one blocking write, well below the kernel's `IOV_MAX` (1024).
const BATCH_CHUNKS: usize = 256;

pub(crate) struct FsWriter {
    temp: PathBuf,
    target: PathBuf,
    sync: bool,
    batch: Vec<Bytes>,
    batched: usize,
    /// The write in flight that will hand the file back, once one was started.
    file: FileSlot,
}

enum FileSlot {
    NotCreated,
    Writing(JoinHandle<std::io::Result<File>>),
    Gone,
}

fn joined<T>(result: Result<std::io::Result<T>, tokio::task::JoinError>) -> std::io::Result<T> {
    result.map_err(std::io::Error::other)?
}

fn create_temp(temp: &Path) -> std::io::Result<File> {
    match File::create_new(temp) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = temp.parent() {
                std::fs::create_dir_all(dir)?;
            }
            File::create_new(temp)
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
    pub(crate) fn new(temp_dir: &Path, target: PathBuf, sync: bool) -> Self {
        let name = format!("{:016x}{:016x}", rand_u64(), rand_u64());
        FsWriter {
            // Spread over 256 folders: concurrent creates and renames in one folder queue
            // on its lock.
            temp: temp_dir.join(&name[..2]).join(name),
            target,
            sync,
            batch: Vec::new(),
            batched: 0,
            file: FileSlot::NotCreated,
        }
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

    /// Appends the whole file at `path` (a kernel-side copy: `std::io::copy` between files
    /// uses `copy_file_range`, which also shares extents where the filesystem can).
    pub(crate) async fn append_file(&mut self, path: PathBuf) -> std::io::Result<()> {
        self.flush().await?;
        let file = self.take_file().await?;
        let temp = self.temp.clone();
        self.file = FileSlot::Writing(spawn_blocking(move || {
            let mut file = match file {
                Some(file) => file,
                None => create_temp(&temp)?,
            };
            std::io::copy(&mut File::open(path)?, &mut file)?;
            Ok(file)
        }));
        Ok(())
    }

    /// Waits for the write in flight and hands the file back (`None` before the first).
    async fn take_file(&mut self) -> std::io::Result<Option<File>> {
        match std::mem::replace(&mut self.file, FileSlot::Gone) {
            FileSlot::NotCreated => Ok(None),
            FileSlot::Writing(handle) => joined(handle.await).map(Some),
            FileSlot::Gone => Err(std::io::Error::other("file lost after a failed write")),
        }
    }

    /// Starts writing the batch; returns once the previous write has finished.
    async fn flush(&mut self) -> std::io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let file = self.take_file().await?;
        let batch = std::mem::take(&mut self.batch);
        self.batched = 0;
        let temp = self.temp.clone();
        self.file = FileSlot::Writing(spawn_blocking(move || {
            let mut file = match file {
                Some(file) => file,
                None => create_temp(&temp)?,
            };
            write_all_vectored(&mut file, &batch)?;
            Ok(file)
        }));
        Ok(())
    }

    /// Writes the rest and renames the file into place (creating its folders).
    pub(crate) async fn commit(mut self) -> std::io::Result<()> {
        let file = self.take_file().await?;
        let batch = std::mem::take(&mut self.batch);
        let (temp, target, sync) = (self.temp.clone(), self.target.clone(), self.sync);
        let result = joined(
            spawn_blocking(move || {
                let mut file = match file {
                    Some(file) => file,
                    None => create_temp(&temp)?,
                };
                write_all_vectored(&mut file, &batch)?;
                if sync {
                    file.sync_all()?;
                }
                drop(file);
                let dir = target.parent().unwrap_or(Path::new("/"));
                if let Err(e) = std::fs::rename(&temp, &target) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        return Err(e);
                    }
                    std::fs::create_dir_all(dir)?;
                    std::fs::rename(&temp, &target)?;
                }
                if sync {
                    File::open(dir)?.sync_all()?;
                }
                Ok(())
            })
            .await,
        );
        if result.is_err() {
            self.discard().await;
        }
        result
    }

    /// Drops everything written; nothing ever appeared at the target.
    pub(crate) async fn abort(mut self) {
        let created = !matches!(self.file, FileSlot::NotCreated);
        let _ = self.take_file().await;
        if created {
            self.discard().await;
        }
    }

    async fn discard(&self) {
        let temp = self.temp.clone();
        let _ = spawn_blocking(move || std::fs::remove_file(temp)).await;
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
