//! The purge of stale upload sessions, on the filesystem.

use stowage_core::digest::{Algorithm, Digest};
use stowage_core::layout;
use stowage_core::names::RepoName;
use stowage_core::route::UploadId;
use stowage_core::step::{Outcome, StoreRole, WriteCondition};
use stowage_core::time::Millis;
use stowage_core::upload::UploadRecord;
use stowage_storage::{PurgeReport, Stores};

mod support;
use support::Root;

async fn put(stores: &Stores, key: &str, bytes: Vec<u8>) {
    let written = stores
        .store(StoreRole::Blobs)
        .write(key, bytes.into(), &WriteCondition::Overwrite)
        .await;
    assert!(matches!(written, Outcome::Ok), "{written:?}");
}

async fn exists(stores: &Stores, key: &str) -> bool {
    matches!(
        stores.store(StoreRole::Blobs).stat(key).await,
        Outcome::Stat(Some(_))
    )
}

/// A session of `repo` started at `started_at`, with one part: its record and part keys.
async fn session(stores: &Stores, repo: &str, id: &str, started_at: u64) -> [String; 2] {
    let name: RepoName = repo.parse().unwrap();
    let id = UploadId::parse(id).unwrap();
    let record = layout::upload_record(&name, &id);
    let json = serde_json::to_vec(&UploadRecord::new(Millis(started_at))).unwrap();
    put(stores, &record, json).await;
    let part = layout::upload_part(&name, &id, "part-1");
    put(stores, &part, b"bytes".to_vec()).await;
    [record, part]
}

#[tokio::test]
async fn removes_sessions_started_before_the_cutoff_in_any_repository() {
    let root = Root::new("purge");
    let stores = root.stores(false);
    let old = session(&stores, "app", "old", 1_000).await;
    let nested_old = session(&stores, "team/deep/app", "nested", 1_500).await;
    let young = session(&stores, "app", "young", 5_000).await;
    // A folder whose record is gone: nothing can continue it.
    let orphan = session(&stores, "app", "orphan", 5_000).await;
    std::fs::remove_file(root.0.join(&orphan[0])).unwrap();
    let name: RepoName = "app".parse().unwrap();
    let layer = layout::layer_link(&name, &Digest::of(Algorithm::Sha256, b"x"));
    put(&stores, &layer, b"kept".to_vec()).await;

    let report = stores.purge_stale_uploads(Millis(2_000)).await;

    let expected = PurgeReport {
        sessions_removed: 3,
        multipart_uploads_aborted: 0,
        failures: 0,
    };
    assert_eq!(report, expected);
    for key in old.iter().chain(&nested_old).chain(&orphan) {
        assert!(!exists(&stores, key).await, "{key} outlived the purge");
    }
    for key in young.iter().chain([&layer]) {
        assert!(exists(&stores, key).await, "{key} was purged");
    }
}
