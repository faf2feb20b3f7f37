//! Conditional writes on the filesystem: create-new never clobbers what is there and leaves
//! no temporary file behind; reads report no version (the filesystem has no compare-and-swap).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use stowage_core::step::{Outcome, Piece, StorageRequest, StoreRole, WriteCondition};
use stowage_storage::Stores;

mod support;
use support::Root;

async fn write(stores: &Stores, key: &str, data: &'static [u8], c: WriteCondition) -> Outcome {
    let request = StorageRequest::Write {
        store: StoreRole::Meta,
        key: key.to_owned(),
        data: Bytes::from_static(data),
        condition: c,
    };
    stores.perform(request, &mut ()).await
}

async fn concat(stores: &Stores, parts: &[&str], to: &str) -> Outcome {
    let request = StorageRequest::Concat {
        store: StoreRole::Blobs,
        pieces: parts.iter().map(|p| Piece::whole(p.to_string())).collect(),
        to: to.to_owned(),
    };
    stores.perform(request, &mut ()).await
}

const KEY: &str = "v2/repositories/app/_manifests/tags/latest/current/link";

#[tokio::test]
async fn create_new_leaves_an_existing_object_and_no_temp_file() {
    let root = Root::new("cond-create");
    let stores = root.stores(true);
    let created = write(&stores, KEY, b"first", WriteCondition::CreateNew).await;
    assert!(matches!(created, Outcome::Ok), "{created:?}");
    assert_eq!(root.read(KEY).as_deref(), Some(&b"first"[..]));

    let refused = write(&stores, KEY, b"second", WriteCondition::CreateNew).await;
    assert!(matches!(refused, Outcome::ConditionFailed), "{refused:?}");
    assert_eq!(root.read(KEY).as_deref(), Some(&b"first"[..]));
    assert_eq!(root.temp_files(), Vec::<PathBuf>::new());

    let replaced = write(&stores, KEY, b"third", WriteCondition::Overwrite).await;
    assert!(matches!(replaced, Outcome::Ok), "{replaced:?}");
    assert_eq!(root.read(KEY).as_deref(), Some(&b"third"[..]));
    assert_eq!(root.temp_files(), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn reads_report_no_version() {
    let root = Root::new("cond-version");
    let stores = root.stores(true);
    write(&stores, KEY, b"link", WriteCondition::CreateNew).await;
    let request = StorageRequest::ReadVersioned {
        store: StoreRole::Meta,
        key: KEY.to_owned(),
    };
    match stores.perform(request, &mut ()).await {
        Outcome::Versioned(Some(found)) => {
            assert_eq!(found.data, Bytes::from_static(b"link"));
            assert_eq!(found.version, None);
        }
        other => panic!("unexpected {other:?}"),
    }
    let absent = StorageRequest::ReadVersioned {
        store: StoreRole::Meta,
        key: "nothing/here".to_owned(),
    };
    assert!(matches!(
        stores.perform(absent, &mut ()).await,
        Outcome::Versioned(None)
    ));
}

fn put_file(root: &Path, key: &str, data: &[u8]) {
    let path = root.join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

#[tokio::test]
async fn concat_onto_an_existing_content_address_leaves_it() {
    let root = Root::new("cond-concat");
    let stores = root.stores(true);
    let to = "v2/blobs/sha256/ab/abcd/data";
    let (one, two) = ("_uploads/u/parts/1", "_uploads/u/parts/2");
    put_file(&root.0, one, b"new ");
    put_file(&root.0, two, b"bytes");

    // One part moves in by a link: absent, it appears and the part is gone.
    assert!(matches!(concat(&stores, &[one], to).await, Outcome::Ok));
    assert_eq!(root.read(to).as_deref(), Some(&b"new "[..]));
    assert_eq!(root.read(one), None);

    // Present, it stays as it was, and so does the part.
    put_file(&root.0, one, b"other");
    let refused = concat(&stores, &[one], to).await;
    assert!(matches!(refused, Outcome::ConditionFailed), "{refused:?}");
    assert_eq!(root.read(to).as_deref(), Some(&b"new "[..]));
    assert_eq!(root.read(one).as_deref(), Some(&b"other"[..]));

    // Several parts are streamed into a create-new write.
    let refused = concat(&stores, &[one, two], to).await;
    assert!(matches!(refused, Outcome::ConditionFailed), "{refused:?}");
    assert_eq!(root.read(to).as_deref(), Some(&b"new "[..]));
    let fresh = "v2/blobs/sha256/cd/cdef/data";
    assert!(matches!(
        concat(&stores, &[one, two], fresh).await,
        Outcome::Ok
    ));
    assert_eq!(root.read(fresh).as_deref(), Some(&b"otherbytes"[..]));
    assert_eq!(root.temp_files(), Vec::<PathBuf>::new());
}
