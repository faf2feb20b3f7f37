//! The local filesystem through OpenDAL's fs service.

use std::path::{Path, PathBuf};

use opendal::Operator;
use opendal::services::Fs;

use crate::fs_writer::FsWriter;
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

/// Where a filesystem store writes, and whether its commits are fsynced.
#[derive(Clone, Debug)]
pub(crate) struct FsTarget {
    root: PathBuf,
    pub(crate) sync: bool,
}

impl FsTarget {
    pub(crate) fn new(settings: &FsSettings) -> Self {
        FsTarget {
            root: PathBuf::from(&settings.root_dir),
            sync: settings.sync_to_disk,
        }
    }

    /// A writer of `key`; with `create_new`, its commit leaves an existing `key` alone.
    pub(crate) async fn writer(&self, key: &str, create_new: bool) -> std::io::Result<FsWriter> {
        let (temp_dir, target) = (self.root.join(TEMP_DIR), self.root.join(key));
        FsWriter::create(&temp_dir, target, self.sync, create_new).await
    }

    /// Moves `from` to `to` unless something is at `to` (then `from` stays): a hard link,
    /// which fails where a rename would replace, then the old name's removal.
    pub(crate) async fn move_new(&self, from: &str, to: &str) -> std::io::Result<Committed> {
        let (from, to) = (self.root.join(from), self.root.join(to));
        let sync = self.sync;
        tokio::task::spawn_blocking(move || {
            let dir = to.parent().unwrap_or(Path::new("/"));
            std::fs::create_dir_all(dir)?;
            match std::fs::hard_link(&from, &to) {
                Ok(()) => std::fs::remove_file(&from)?,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Ok(Committed::ConditionFailed);
                }
                Err(e) => return Err(e),
            }
            if sync {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(Committed::Done)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}
