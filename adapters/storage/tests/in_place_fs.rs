//! An upload's data file on the filesystem: chunks land in place at their offsets, a failed
//! body may leave what it wrote (the claims keep it out of every committed part), and spans of
//! the file are copied, never moved, into a blob.

use bytes::Bytes;
use stowage_core::digest::{Algorithm, Hasher};
use stowage_core::step::{BodyError, BodyTap, Outcome, Piece, StorageRequest, StoreRole};
use stowage_storage::{BodySource, Stores};

mod support;
use support::Root;

const DATA: &str = "v2/repositories/app/_uploads/u/data";

/// A body of the given chunks, then possibly the client going away.
struct Body {
    chunks: std::vec::IntoIter<Bytes>,
    then_fail: bool,
}

impl BodySource for Body {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, BodyError>> {
        match self.chunks.next() {
            Some(chunk) => Some(Ok(chunk)),
            None if std::mem::take(&mut self.then_fail) => {
                Some(Err(BodyError::Client("client went away".to_owned())))
            }
            None => None,
        }
    }
}

fn body(chunks: &[&'static [u8]], then_fail: bool) -> Body {
    let chunks: Vec<Bytes> = chunks.iter().map(|c| Bytes::from_static(c)).collect();
    Body {
        chunks: chunks.into_iter(),
        then_fail,
    }
}

async fn write_at(stores: &Stores, offset: u64, mut body: Body) -> Outcome {
    let request = StorageRequest::WriteBodyAt {
        store: StoreRole::Blobs,
        key: DATA.to_owned(),
        offset,
        tap: BodyTap::new(Hasher::new(Algorithm::Sha256), None, None),
    };
    stores.perform(request, &mut body).await
}

fn accepted(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Body { error: None, .. })
}

#[tokio::test(flavor = "multi_thread")]
async fn chunks_land_at_their_offsets_and_a_failed_one_leaves_its_bytes() {
    let root = Root::new("in-place-write");
    let stores = root.stores(true);
    assert!(accepted(
        &write_at(&stores, 0, body(&[b"abc", b"", b"de"], false)).await
    ));
    assert!(accepted(
        &write_at(&stores, 5, body(&[b"fgh"], false)).await
    ));
    assert_eq!(root.read(DATA).as_deref(), Some(&b"abcdefgh"[..]));

    let failed = write_at(&stores, 8, body(&[b"XY"], true)).await;
    assert!(
        matches!(
            failed,
            Outcome::Body {
                error: Some(BodyError::Client(_)),
                ..
            }
        ),
        "{failed:?}"
    );
    // Some or all of its bytes may be there; what came before is untouched, and the next
    // write at that offset replaces them.
    let after_failure = root.read(DATA).unwrap();
    assert!(after_failure.len() <= 10 && after_failure.starts_with(b"abcdefgh"));
    assert!(accepted(&write_at(&stores, 8, body(&[b"ij"], false)).await));
    assert_eq!(root.read(DATA).as_deref(), Some(&b"abcdefghij"[..]));
    assert!(root.temp_files().is_empty());
}

async fn concat(stores: &Stores, pieces: Vec<Piece>, to: &str) -> Outcome {
    let request = StorageRequest::Concat {
        store: StoreRole::Blobs,
        pieces,
        to: to.to_owned(),
    };
    stores.perform(request, &mut ()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_are_copied_and_only_a_whole_file_is_moved() {
    let root = Root::new("in-place-concat");
    let stores = root.stores(false);
    write_at(&stores, 0, body(&[b"0123456789"], false)).await;
    let part = "v2/repositories/app/_uploads/u/parts/p";
    std::fs::create_dir_all(root.0.join(part).parent().unwrap()).unwrap();
    std::fs::write(root.0.join(part), b"PART").unwrap();

    let single = "v2/blobs/sha256/aa/aa/data";
    let span = vec![Piece::span(DATA.to_owned(), 2, 5)];
    assert!(matches!(concat(&stores, span, single).await, Outcome::Ok));
    assert_eq!(root.read(single).as_deref(), Some(&b"23456"[..]));
    assert_eq!(root.read(DATA).as_deref(), Some(&b"0123456789"[..]));

    let mixed = "v2/blobs/sha256/bb/bb/data";
    let pieces = vec![
        Piece::span(DATA.to_owned(), 0, 4),
        Piece::whole(part.to_owned()),
    ];
    assert!(matches!(concat(&stores, pieces, mixed).await, Outcome::Ok));
    assert_eq!(root.read(mixed).as_deref(), Some(&b"0123PART"[..]));

    // A span past the end of the file is an error, and nothing appears.
    let short = "v2/blobs/sha256/cc/cc/data";
    let past_end = vec![Piece::span(DATA.to_owned(), 8, 5)];
    let outcome = concat(&stores, past_end, short).await;
    assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    assert_eq!(root.read(short), None);
    assert!(root.temp_files().is_empty());

    let whole = "v2/blobs/sha256/dd/dd/data";
    let file = vec![Piece::whole(DATA.to_owned())];
    assert!(matches!(concat(&stores, file, whole).await, Outcome::Ok));
    assert_eq!(root.read(whole).as_deref(), Some(&b"0123456789"[..]));
    assert_eq!(root.read(DATA), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_are_hashed_as_stored() {
    let root = Root::new("in-place-hash");
    let stores = root.stores(false);
    write_at(&stores, 0, body(&[b"0123456789"], false)).await;
    let request = StorageRequest::HashStored {
        store: StoreRole::Blobs,
        pieces: vec![
            Piece::span(DATA.to_owned(), 7, 3),
            Piece::span(DATA.to_owned(), 0, 2),
        ],
        tap: BodyTap::new(Hasher::new(Algorithm::Sha512), None, None),
    };
    match stores.perform(request, &mut ()).await {
        Outcome::Body { tap, error: None } => {
            let expected = stowage_core::digest::Digest::of(Algorithm::Sha512, b"78901");
            assert_eq!(tap.hasher().finish(), expected);
            assert_eq!(tap.received(), 5);
        }
        other => panic!("unexpected {other:?}"),
    }
}
