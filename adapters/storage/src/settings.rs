//! Store settings as they appear in the configuration file (`[blob_store.fs]`, ...).

use serde::Deserialize;

/// `[blob_store.fs]` / `[metadata_store.fs]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsSettings {
    pub root_dir: String,
    /// Also fsync the folder after every commit, so a rename survives a power loss.
    #[serde(default)]
    pub sync_to_disk: bool,
}

/// One store's backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    Fs(FsSettings),
}
