//! What the filesystem storage tests share: a scratch root, removed afterwards, and a store
//! on it.
#![allow(dead_code)] // each test file uses its own share of this

use std::path::PathBuf;

use stowage_storage::{FsSettings, InlineCalls, StoreSettings, Stores};

pub struct Root(pub PathBuf);

impl Root {
    pub fn new(test: &str) -> Self {
        let root = std::env::temp_dir().join(format!("stowage-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        Root(root)
    }

    pub fn stores(&self, sync_to_disk: bool) -> Stores {
        let settings = FsSettings {
            root_dir: self.0.to_string_lossy().into_owned(),
            sync_to_disk,
            inline_calls: InlineCalls::Auto,
        };
        Stores::open(&StoreSettings::Fs(settings), None).unwrap()
    }

    pub fn read(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.0.join(key)).ok()
    }

    /// Files left in the temporary folders (`.stowage-tmp/<shard>/<name>`).
    pub fn temp_files(&self) -> Vec<PathBuf> {
        let Ok(shards) = std::fs::read_dir(self.0.join(".stowage-tmp")) else {
            return Vec::new();
        };
        shards
            .flat_map(|shard| std::fs::read_dir(shard.unwrap().path()).unwrap())
            .map(|entry| entry.unwrap().path())
            .collect()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
