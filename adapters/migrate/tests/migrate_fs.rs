//! `migrate` between filesystem stores: what is copied where, verification, and resuming.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use stowage_core::digest::{Algorithm, Digest};
use stowage_core::layout;
use stowage_core::names::{RepoName, Tag};
use stowage_core::route::UploadId;
use stowage_core::step::StoreRole;
use stowage_core::step::{Outcome, WriteCondition};
use stowage_migrate::{MigrateError, Progress, Summary, migrate};
use stowage_storage::{FsSettings, InlineCalls, Store, StoreSettings, Stores};

/// A folder removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("stowage-migrate-{}-{n}", std::process::id()));
        Scratch(dir)
    }

    fn store(&self, name: &str) -> Store {
        let settings = FsSettings {
            root_dir: self.0.join(name).to_string_lossy().into_owned(),
            sync_to_disk: false,
            inline_calls: InlineCalls::Auto,
        };
        Store::open(&StoreSettings::Fs(settings)).unwrap()
    }

    /// One store holding blobs and metadata alike.
    fn shared(&self, name: &str) -> Stores {
        Stores::new(self.store(name), None)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn put(store: &Store, key: &str, bytes: impl Into<Bytes>) {
    assert!(matches!(
        store
            .write(key, bytes.into(), &WriteCondition::Overwrite)
            .await,
        Outcome::Ok
    ));
}

async fn get(store: &Store, key: &str) -> Option<Bytes> {
    match store.read(key).await {
        Outcome::Read(bytes) => bytes,
        other => panic!("read {key}: {other:?}"),
    }
}

/// One repository `app` with a layer, a manifest, their links, a tag and an upload session.
struct Image {
    layer: Digest,
    manifest: Digest,
    tag_key: String,
    keys: Vec<String>,
    session_key: String,
}

async fn push(store: &Store, layer_bytes: &[u8]) -> Image {
    let name: RepoName = "app".parse().unwrap();
    let tag: Tag = "v1".parse().unwrap();
    let layer = Digest::of(Algorithm::Sha256, layer_bytes);
    let manifest_bytes = format!("{{\"layers\":[\"{layer}\"]}}");
    let manifest = Digest::of(Algorithm::Sha256, manifest_bytes.as_bytes());
    put(store, &layout::blob_data(&layer), layer_bytes.to_vec()).await;
    put(store, &layout::blob_data(&manifest), manifest_bytes).await;
    let links = [
        layout::layer_link(&name, &layer),
        layout::revision_link(&name, &manifest),
    ];
    for (key, digest) in links.iter().zip([&layer, &manifest]) {
        put(store, key, layout::link_content(digest)).await;
    }
    let tag_key = layout::tag_current(&name, &tag);
    put(store, &tag_key, layout::link_content(&manifest)).await;
    let session_key = layout::upload_record(&name, &UploadId::parse("u1").unwrap());
    put(store, &session_key, "{}").await;
    let keys = vec![
        layout::blob_data(&layer),
        layout::blob_data(&manifest),
        links[0].clone(),
        links[1].clone(),
        tag_key.clone(),
    ];
    Image {
        layer,
        manifest,
        tag_key,
        keys,
        session_key,
    }
}

fn big_layer() -> Vec<u8> {
    (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect()
}

async fn run(from: &Stores, to: &Stores) -> Result<Summary, MigrateError> {
    migrate(from, to, &Progress::default()).await
}

#[tokio::test]
async fn copies_everything_but_upload_sessions_and_verifies_blobs() {
    let scratch = Scratch::new();
    let from = scratch.shared("from");
    let to = scratch.shared("to");
    let image = push(from.store(StoreRole::Blobs), &big_layer()).await;
    let summary = run(&from, &to).await.unwrap();
    assert_eq!(summary.copied, 5);
    assert_eq!(summary.verified, 2);
    assert_eq!(summary.skipped, 0);
    for key in &image.keys {
        assert_eq!(
            get(to.store(StoreRole::Blobs), key).await,
            get(from.store(StoreRole::Blobs), key).await,
            "{key}"
        );
    }
    assert_eq!(
        get(to.store(StoreRole::Blobs), &image.session_key).await,
        None
    );
}

#[tokio::test]
async fn a_rerun_copies_only_what_changed() {
    let scratch = Scratch::new();
    let from = scratch.shared("from");
    let to = scratch.shared("to");
    let image = push(from.store(StoreRole::Blobs), b"layer").await;
    run(&from, &to).await.unwrap();
    let again = run(&from, &to).await.unwrap();
    assert_eq!((again.copied, again.skipped), (0, 5));
    // The tag moves to another manifest whose link has the same length: compared by bytes.
    let moved = layout::link_content(&Digest::of(Algorithm::Sha256, b"other"));
    put(from.store(StoreRole::Blobs), &image.tag_key, moved.clone()).await;
    let after_move = run(&from, &to).await.unwrap();
    assert_eq!((after_move.copied, after_move.skipped), (1, 4));
    assert_eq!(
        get(to.store(StoreRole::Blobs), &image.tag_key).await,
        Some(moved.into())
    );
}

#[tokio::test]
async fn a_corrupt_blob_stops_the_migration_before_any_tag() {
    let scratch = Scratch::new();
    let from = scratch.shared("from");
    let to = scratch.shared("to");
    let image = push(from.store(StoreRole::Blobs), b"layer").await;
    let layer_key = layout::blob_data(&image.layer);
    put(from.store(StoreRole::Blobs), &layer_key, "tampered").await;
    let error = run(&from, &to).await.unwrap_err();
    assert!(
        matches!(&error, MigrateError::Corrupt { key, .. } if *key == layer_key),
        "{error}"
    );
    assert_eq!(get(to.store(StoreRole::Blobs), &layer_key).await, None);
    assert_eq!(get(to.store(StoreRole::Blobs), &image.tag_key).await, None);
}

#[tokio::test]
async fn a_shared_store_splits_into_blobs_and_metadata() {
    let scratch = Scratch::new();
    let from = scratch.shared("from");
    let to = Stores::new(scratch.store("to-blobs"), Some(scratch.store("to-meta")));
    let image = push(from.store(StoreRole::Blobs), b"layer").await;
    run(&from, &to).await.unwrap();
    let to_meta = to.separate_meta().unwrap();
    let layer_key = layout::blob_data(&image.layer);
    let manifest_key = layout::blob_data(&image.manifest);
    assert!(get(to.store(StoreRole::Blobs), &layer_key).await.is_some());
    assert_eq!(get(to_meta, &layer_key).await, None);
    assert!(get(to_meta, &manifest_key).await.is_some());
    assert_eq!(get(to.store(StoreRole::Blobs), &manifest_key).await, None);
    assert!(get(to_meta, &image.tag_key).await.is_some());

    // And back into one store.
    let back = scratch.shared("back");
    let summary = run(&to, &back).await.unwrap();
    assert_eq!(summary.copied, 5);
    for key in &image.keys {
        assert_eq!(
            get(back.store(StoreRole::Blobs), key).await,
            get(from.store(StoreRole::Blobs), key).await,
            "{key}"
        );
    }
}
