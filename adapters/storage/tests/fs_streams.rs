//! Streaming writes and reads on the filesystem: bodies arriving in many small chunks (and
//! empty ones) land whole, refused bodies leave nothing behind, and responses map exactly
//! the span asked for.

use bytes::Bytes;
use futures_util::TryStreamExt;
use stowage_core::digest::{Algorithm, Digest, Hasher};
use stowage_core::range::Span;
use stowage_core::step::{BodyError, BodyTap, Outcome, StoreRole, WriteCondition};
use stowage_storage::{BodySource, Stores};

mod support;
use support::Root;

/// A body delivered in the given chunks.
struct Chunks(std::vec::IntoIter<Bytes>);

impl BodySource for Chunks {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, BodyError>> {
        self.0.next().map(Ok)
    }
}

/// 3 MiB and a bit of patterned bytes, cut into uneven chunks with empty ones between.
fn content() -> (Vec<u8>, Vec<Bytes>) {
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 4321u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut chunks = Vec::new();
    let mut at = 0;
    for size in [1usize, 0, 8191, 300_000, 0, 17].into_iter().cycle() {
        if at == data.len() {
            break;
        }
        let end = (at + size).min(data.len());
        chunks.push(Bytes::copy_from_slice(&data[at..end]));
        at = end;
    }
    (data, chunks)
}

async fn read_all(stores: &Stores, key: &str, span: Span) -> std::io::Result<Vec<u8>> {
    let stream = stores.read_span(StoreRole::Blobs, key, span).await?;
    let chunks: Vec<Bytes> = stream.try_collect().await?;
    Ok(chunks.concat())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_body_lands_whole_and_reads_back_by_span() {
    let root = Root::new("streams-whole");
    let stores = root.stores(false);
    let (data, chunks) = content();
    let digest = Digest::of(Algorithm::Sha256, &data);
    let tap = BodyTap::new(
        Hasher::new(Algorithm::Sha256),
        Some(data.len() as u64),
        Some(digest),
    );
    let outcome = stores
        .store(StoreRole::Blobs)
        .write_body("a/b/data", tap, &mut Chunks(chunks.into_iter()))
        .await;
    assert!(
        matches!(outcome, Outcome::Body { error: None, .. }),
        "{outcome:?}"
    );
    assert_eq!(std::fs::read(root.0.join("a/b/data")).unwrap(), data);
    assert!(root.temp_files().is_empty());

    let whole = Span {
        start: 0,
        len: data.len() as u64,
    };
    assert_eq!(read_all(&stores, "a/b/data", whole).await.unwrap(), data);
    // A span crossing the 1 MiB mapping windows, starting off a page boundary.
    let span = Span {
        start: 1_048_000,
        len: 1_500_000,
    };
    assert_eq!(
        read_all(&stores, "a/b/data", span).await.unwrap(),
        data[1_048_000..2_548_000]
    );
    let empty = Span { start: 5, len: 0 };
    assert!(
        read_all(&stores, "a/b/data", empty)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_body_leaves_nothing() {
    let root = Root::new("streams-refused");
    let stores = root.stores(false);
    let (data, chunks) = content();
    let wrong = Digest::of(Algorithm::Sha256, b"something else");
    let tap = BodyTap::new(Hasher::new(Algorithm::Sha256), None, Some(wrong));
    let outcome = stores
        .store(StoreRole::Blobs)
        .write_body("a/refused", tap, &mut Chunks(chunks.into_iter()))
        .await;
    assert!(
        matches!(
            outcome,
            Outcome::Body {
                error: Some(BodyError::Refused(_)),
                ..
            }
        ),
        "{outcome:?}"
    );
    assert!(!root.0.join("a/refused").exists());
    assert!(
        root.temp_files().is_empty(),
        "{} bytes stayed behind",
        data.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_object_is_written_and_a_span_past_the_end_is_refused() {
    let root = Root::new("streams-empty");
    let stores = root.stores(false);
    let written = stores
        .store(StoreRole::Blobs)
        .write("e/data", Bytes::new(), &WriteCondition::Overwrite)
        .await;
    assert!(matches!(written, Outcome::Ok), "{written:?}");
    assert_eq!(std::fs::metadata(root.0.join("e/data")).unwrap().len(), 0);

    let small = stores
        .store(StoreRole::Blobs)
        .write(
            "s/data",
            Bytes::from_static(b"12345"),
            &WriteCondition::Overwrite,
        )
        .await;
    assert!(matches!(small, Outcome::Ok), "{small:?}");
    let past_end = Span { start: 2, len: 4 };
    let error = read_all(&stores, "s/data", past_end).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
}
