//! The local filesystem through OpenDAL's fs service.

use std::path::{Path, PathBuf};

use opendal::Operator;
use opendal::services::Fs;

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

/// Fsyncs the folder holding `key`, so a rename into it is durable.
pub(crate) async fn sync_parent(root: &str, key: &str) -> std::io::Result<()> {
    let mut path = PathBuf::from(root);
    path.push(key);
    let Some(dir) = path.parent().map(Path::to_path_buf) else {
        return Ok(());
    };
    tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
        .await
        .map_err(std::io::Error::other)?
}
