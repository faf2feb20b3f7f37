//! Writing an object on the filesystem: bytes go to a temporary file beside the tree, one
//! write in flight on a blocking thread while the next chunk is received and hashed, and the
//! file is renamed into place only when the caller commits. OpenDAL's fs writer always
//! fsyncs on close; this one fsyncs (file and folder) only with `sync_to_disk`, so a push
//! runs at page-cache speed by default, as Distribution's does.
//!
//! A create-new commit hard-links the file into place instead, which fails when the target
//! exists (a rename would replace it), then unlinks the temporary name. The filesystem has
//! no compare-and-swap for replacing an object, so every other commit is a rename.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use tokio::task::{JoinHandle, spawn_blocking};

use crate::object_writer::Committed;

/// Bytes gathered before one blocking write.
const WRITE_SIZE: usize = 4 * 1024 * 1024;

pub(crate) struct FsWriter {
    temp: PathBuf,
    target: PathBuf,
    sync: bool,
    /// Commit only if nothing is at `target`.
    create_new: bool,
    buffer: BytesMut,
    /// The file, or the write in flight that will hand it back.
    file: FileSlot,
}

enum FileSlot {
    Idle(File),
    Writing(JoinHandle<std::io::Result<File>>),
    Gone,
}

fn joined(result: Result<std::io::Result<File>, tokio::task::JoinError>) -> std::io::Result<File> {
    result.map_err(std::io::Error::other)?
}

impl FsWriter {
    /// Starts writing `target` through a fresh temporary file in `temp_dir`.
    pub(crate) async fn create(
        temp_dir: &Path,
        target: PathBuf,
        sync: bool,
        create_new: bool,
    ) -> std::io::Result<Self> {
        let temp = temp_dir.join(format!("{:016x}{:016x}", rand_u64(), rand_u64()));
        let dir = temp_dir.to_owned();
        let path = temp.clone();
        let file = joined(
            spawn_blocking(move || {
                std::fs::create_dir_all(&dir)?;
                File::create_new(&path)
            })
            .await,
        )?;
        Ok(FsWriter {
            temp,
            target,
            sync,
            create_new,
            buffer: BytesMut::with_capacity(WRITE_SIZE),
            file: FileSlot::Idle(file),
        })
    }

    pub(crate) async fn write(&mut self, chunk: &Bytes) -> std::io::Result<()> {
        self.buffer.extend_from_slice(chunk);
        if self.buffer.len() >= WRITE_SIZE {
            self.flush().await?;
        }
        Ok(())
    }

    /// Waits for the write in flight and hands the file back.
    async fn take_file(&mut self) -> std::io::Result<File> {
        match std::mem::replace(&mut self.file, FileSlot::Gone) {
            FileSlot::Idle(file) => Ok(file),
            FileSlot::Writing(handle) => joined(handle.await),
            FileSlot::Gone => Err(std::io::Error::other("file lost after a failed write")),
        }
    }

    /// Starts writing what is buffered; returns once the previous write has finished.
    async fn flush(&mut self) -> std::io::Result<()> {
        let mut file = self.take_file().await?;
        let data = self.buffer.split().freeze();
        self.file = FileSlot::Writing(spawn_blocking(move || {
            file.write_all(&data)?;
            Ok(file)
        }));
        Ok(())
    }

    /// Writes the rest and moves the file into place (creating its folders): renamed, or
    /// for a create-new commit linked, leaving an existing target as it was.
    pub(crate) async fn commit(mut self) -> std::io::Result<Committed> {
        if !self.buffer.is_empty() {
            self.flush().await?;
        }
        let file = self.take_file().await?;
        let (temp, target) = (self.temp.clone(), self.target.clone());
        let (sync, create_new) = (self.sync, self.create_new);
        let result = spawn_blocking(move || {
            if sync {
                file.sync_all()?;
            }
            drop(file);
            let dir = target.parent().unwrap_or(Path::new("/"));
            std::fs::create_dir_all(dir)?;
            if create_new {
                match std::fs::hard_link(&temp, &target) {
                    Ok(()) => std::fs::remove_file(&temp)?,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return Ok(Committed::ConditionFailed);
                    }
                    Err(e) => return Err(e),
                }
            } else {
                std::fs::rename(&temp, &target)?;
            }
            if sync {
                File::open(dir)?.sync_all()?;
            }
            Ok(Committed::Done)
        })
        .await
        .map_err(std::io::Error::other)?;
        if !matches!(result, Ok(Committed::Done)) {
            self.discard().await;
        }
        result
    }

    /// Drops everything written; nothing ever appeared at the target.
    pub(crate) async fn abort(mut self) {
        let _ = self.take_file().await;
        self.discard().await;
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
