//! The cases, one function each, on a fresh target. Each answers `Err` with what the target
//! did instead of what the contract says.
//!
//! Keys are never both an object and a folder (the registry's layout never makes them so,
//! and a filesystem cannot), and live below a folder of their own, as the registry's do.

use bytes::Bytes;
use stowage_core::digest::{Algorithm, Digest, Hasher};
use stowage_core::range::Span;
use stowage_core::step::{
    BodyError, BodyTap, ObjectInfo, Outcome, Piece, StorageRequest, StoreRole, TapError,
    WriteCondition,
};

use crate::{Target, TestBody};

type Check = Result<(), String>;

/// The cases use one store: both go to the same backend in the contract.
const STORE: StoreRole = StoreRole::Blobs;

macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(format!($($why)+));
        }
    };
}

async fn perform<T: Target>(target: &mut T, request: StorageRequest) -> Outcome {
    target.perform(request, TestBody::none()).await
}

async fn write<T: Target>(
    target: &mut T,
    key: &str,
    data: &[u8],
    condition: WriteCondition,
) -> Outcome {
    let request = StorageRequest::Write {
        store: STORE,
        key: key.to_owned(),
        data: Bytes::copy_from_slice(data),
        condition,
    };
    perform(target, request).await
}

/// Stores `data` at `key`, replacing what is there.
async fn put<T: Target>(target: &mut T, key: &str, data: &[u8]) -> Check {
    let outcome = write(target, key, data, WriteCondition::Overwrite).await;
    ensure!(
        matches!(outcome, Outcome::Ok),
        "writing {key} answered {outcome:?}"
    );
    Ok(())
}

/// What `Read` and `Stat` say is at `key`; they must agree.
async fn content<T: Target>(target: &mut T, key: &str) -> Result<Option<Bytes>, String> {
    let read = perform(
        target,
        StorageRequest::Read {
            store: STORE,
            key: key.to_owned(),
        },
    )
    .await;
    let Outcome::Read(data) = read else {
        return Err(format!("reading {key} answered {read:?}"));
    };
    let stat = perform(
        target,
        StorageRequest::Stat {
            store: STORE,
            key: key.to_owned(),
        },
    )
    .await;
    let Outcome::Stat(size) = stat else {
        return Err(format!("stat of {key} answered {stat:?}"));
    };
    let read_size = data.as_ref().map(|d| d.len() as u64);
    ensure!(
        size == read_size,
        "stat of {key} says {size:?} bytes, a read found {read_size:?}"
    );
    let inspected = inspect(target, key).await?.map(|info| info.size);
    ensure!(
        inspected == read_size,
        "inspecting {key} says {inspected:?} bytes, a read found {read_size:?}"
    );
    Ok(data)
}

async fn inspect<T: Target>(target: &mut T, key: &str) -> Result<Option<ObjectInfo>, String> {
    let request = StorageRequest::Inspect {
        store: STORE,
        key: key.to_owned(),
    };
    match perform(target, request).await {
        Outcome::Inspected(info) => Ok(info),
        other => Err(format!("inspecting {key} answered {other:?}")),
    }
}

/// Milliseconds since the epoch on this machine's clock, the one every target stamps its
/// writes with here.
pub(crate) fn wall_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn expect_content<T: Target>(target: &mut T, key: &str, expected: Option<&[u8]>) -> Check {
    let found = content(target, key).await?;
    ensure!(
        found.as_deref() == expected,
        "{key} holds {:?}, expected {:?}",
        found.as_deref().map(String::from_utf8_lossy),
        expected.map(String::from_utf8_lossy)
    );
    Ok(())
}

async fn list<T: Target>(target: &mut T, prefix: &str) -> Result<Vec<String>, String> {
    let outcome = perform(
        target,
        StorageRequest::List {
            store: STORE,
            prefix: prefix.to_owned(),
        },
    )
    .await;
    let Outcome::List(mut names) = outcome else {
        return Err(format!("listing {prefix} answered {outcome:?}"));
    };
    // The order is not part of the contract (the core sorts what it shows); duplicates are.
    let listed = names.len();
    names.sort();
    names.dedup();
    ensure!(
        names.len() == listed,
        "listing {prefix} named some children twice"
    );
    Ok(names)
}

async fn expect_list<T: Target>(target: &mut T, prefix: &str, expected: &[&str]) -> Check {
    let names = list(target, prefix).await?;
    ensure!(
        names == expected,
        "listing {prefix} gave {names:?}, expected {expected:?}"
    );
    Ok(())
}

fn tap() -> BodyTap {
    BodyTap::new(Hasher::new(Algorithm::Sha256), None, None)
}

fn digest(data: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, data)
}

/// The tap and the error of a body request's outcome.
fn body_outcome(what: &str, outcome: Outcome) -> Result<(BodyTap, Option<BodyError>), String> {
    match outcome {
        Outcome::Body { tap, error } => Ok((*tap, error)),
        other => Err(format!("{what} answered {other:?}")),
    }
}

async fn stream_to<T: Target>(
    target: &mut T,
    key: &str,
    tap: BodyTap,
    body: TestBody,
) -> Result<(BodyTap, Option<BodyError>), String> {
    let request = StorageRequest::WriteBody {
        store: STORE,
        key: key.to_owned(),
        tap,
    };
    body_outcome(
        &format!("streaming to {key}"),
        target.perform(request, body).await,
    )
}

async fn stream_at<T: Target>(target: &mut T, key: &str, offset: u64, body: TestBody) -> Outcome {
    let request = StorageRequest::WriteBodyAt {
        store: STORE,
        key: key.to_owned(),
        offset,
        tap: tap(),
    };
    target.perform(request, body).await
}

async fn concat_to<T: Target>(target: &mut T, pieces: Vec<Piece>, to: &str) -> Outcome {
    let request = StorageRequest::Concat {
        store: STORE,
        pieces,
        to: to.to_owned(),
    };
    perform(target, request).await
}

fn whole(key: &str) -> Piece {
    Piece::whole(key.to_owned())
}

fn span(key: &str, start: u64, len: u64) -> Piece {
    Piece::span(key.to_owned(), start, len)
}

pub(crate) async fn missing_keys<T: Target>(target: &mut T) -> Check {
    expect_content(target, "m/absent", None).await?;
    let key = "m/absent".to_owned();
    let versioned = perform(target, StorageRequest::ReadVersioned { store: STORE, key }).await;
    ensure!(
        matches!(versioned, Outcome::Versioned(None)),
        "a versioned read of a missing key answered {versioned:?}"
    );
    let key = "m/absent".to_owned();
    let deleted = perform(target, StorageRequest::Delete { store: STORE, key }).await;
    ensure!(
        matches!(deleted, Outcome::Ok),
        "deleting a missing key answered {deleted:?}"
    );
    let prefix = "m/nothing/".to_owned();
    let deleted = perform(
        target,
        StorageRequest::DeleteAll {
            store: STORE,
            prefix,
        },
    )
    .await;
    ensure!(
        matches!(deleted, Outcome::Ok),
        "deleting a missing folder answered {deleted:?}"
    );
    expect_list(target, "m/nothing/", &[]).await?;
    let read = target
        .read_span("m/absent", Span { start: 0, len: 1 })
        .await;
    ensure!(
        read.is_err(),
        "a ranged read of a missing key gave {read:?}"
    );
    let request = StorageRequest::HashStored {
        store: STORE,
        pieces: vec![whole("m/absent")],
        tap: tap(),
    };
    let hashed = perform(target, request).await;
    ensure!(
        matches!(hashed, Outcome::Failed(_)),
        "hashing a missing key answered {hashed:?}"
    );
    Ok(())
}

pub(crate) async fn write_read_stat<T: Target>(target: &mut T) -> Check {
    put(target, "w/deep/folder/object", b"hello").await?;
    expect_content(target, "w/deep/folder/object", Some(b"hello")).await?;
    put(target, "w/deep/folder/object", b"hello again").await?;
    expect_content(target, "w/deep/folder/object", Some(b"hello again")).await?;
    put(target, "w/empty", b"").await?;
    expect_content(target, "w/empty", Some(b"")).await
}

/// The collector's grace period reads when an object was written: within the write's own
/// time (S3 keeps whole seconds, hence the slack).
pub(crate) async fn inspect_tells_when_written<T: Target>(target: &mut T) -> Check {
    const SLACK_MS: u64 = 2_000;
    let before = wall_clock();
    put(target, "i/object", b"hello").await?;
    let after = wall_clock();
    let Some(info) = inspect(target, "i/object").await? else {
        return Err("inspecting i/object found nothing".into());
    };
    let modified = info.modified.0;
    ensure!(
        info.size == 5,
        "inspecting i/object says {} bytes",
        info.size
    );
    ensure!(
        modified + SLACK_MS >= before && modified <= after + SLACK_MS,
        "i/object was written between {before} and {after}, inspecting says {modified}"
    );
    Ok(())
}

pub(crate) async fn create_new<T: Target>(target: &mut T) -> Check {
    let created = write(target, "c/link", b"first", WriteCondition::CreateNew).await;
    ensure!(
        matches!(created, Outcome::Ok),
        "create-new of an absent key answered {created:?}"
    );
    let refused = write(target, "c/link", b"second", WriteCondition::CreateNew).await;
    ensure!(
        matches!(refused, Outcome::ConditionFailed),
        "create-new over an object answered {refused:?}"
    );
    expect_content(target, "c/link", Some(b"first")).await?;
    expect_list(target, "c/", &["link"]).await?;
    put(target, "c/link", b"third").await?;
    expect_content(target, "c/link", Some(b"third")).await
}

pub(crate) async fn if_version<T: Target>(target: &mut T) -> Check {
    put(target, "v/tag", b"one").await?;
    let read = perform(
        target,
        StorageRequest::ReadVersioned {
            store: STORE,
            key: "v/tag".to_owned(),
        },
    )
    .await;
    let Outcome::Versioned(Some(found)) = read else {
        return Err(format!("a versioned read answered {read:?}"));
    };
    ensure!(
        found.data.as_ref() == b"one",
        "a versioned read gave {:?}",
        found.data
    );
    if !target.capabilities().versions {
        ensure!(
            found.version.is_none(),
            "a backend without versions reported {:?}",
            found.version
        );
        return Ok(());
    }
    let Some(first) = found.version else {
        return Err("a versioned backend reported no version".to_owned());
    };
    let replaced = write(
        target,
        "v/tag",
        b"two",
        WriteCondition::IfVersion(first.clone()),
    )
    .await;
    ensure!(
        matches!(replaced, Outcome::Ok),
        "a write at the version read answered {replaced:?}"
    );
    expect_content(target, "v/tag", Some(b"two")).await?;
    let stale = write(
        target,
        "v/tag",
        b"three",
        WriteCondition::IfVersion(first.clone()),
    )
    .await;
    ensure!(
        matches!(stale, Outcome::ConditionFailed),
        "a write at a replaced version answered {stale:?}"
    );
    expect_content(target, "v/tag", Some(b"two")).await?;
    let absent = write(target, "v/absent", b"x", WriteCondition::IfVersion(first)).await;
    ensure!(
        matches!(absent, Outcome::ConditionFailed),
        "a write at a version of a missing key answered {absent:?}"
    );
    expect_content(target, "v/absent", None).await
}

pub(crate) async fn write_body<T: Target>(target: &mut T) -> Check {
    put(target, "b/object", b"an older object").await?;
    let tap = BodyTap::new(
        Hasher::new(Algorithm::Sha256),
        Some(6),
        Some(digest(b"abcdef")),
    );
    let body = TestBody::chunks(["ab", "cd", "ef"]);
    let (tap, error) = stream_to(target, "b/object", tap, body).await?;
    ensure!(error.is_none(), "a whole body failed: {error:?}");
    ensure!(tap.received() == 6, "the tap saw {} bytes", tap.received());
    expect_content(target, "b/object", Some(b"abcdef")).await
}

pub(crate) async fn interrupted_body_leaves_nothing<T: Target>(target: &mut T) -> Check {
    let body = TestBody::chunks(["ab", "cd"]).disconnect_after(2);
    let (tap, error) = stream_to(target, "i/object", tap(), body).await?;
    ensure!(
        matches!(error, Some(BodyError::Client(_))),
        "a disconnected body answered {error:?}"
    );
    ensure!(tap.received() == 4, "the tap saw {} bytes", tap.received());
    expect_content(target, "i/object", None).await?;
    expect_list(target, "i/", &[]).await
}

pub(crate) async fn refused_body_leaves_nothing<T: Target>(target: &mut T) -> Check {
    let too_long = BodyTap::new(Hasher::new(Algorithm::Sha256), Some(3), None);
    let (_, error) = stream_to(target, "r/long", too_long, TestBody::chunks(["ab", "cd"])).await?;
    ensure!(
        matches!(
            error,
            Some(BodyError::Refused(TapError::TooLong { expected: 3 }))
        ),
        "a body past its length answered {error:?}"
    );
    let wrong = BodyTap::new(Hasher::new(Algorithm::Sha256), None, Some(digest(b"other")));
    let (_, error) = stream_to(target, "r/wrong", wrong, TestBody::chunks(["ab", "cd"])).await?;
    ensure!(
        matches!(
            error,
            Some(BodyError::Refused(TapError::DigestMismatch { .. }))
        ),
        "a body with the wrong digest answered {error:?}"
    );
    expect_content(target, "r/long", None).await?;
    expect_content(target, "r/wrong", None).await?;
    expect_list(target, "r/", &[]).await
}

/// A body longer than the S3 targets' 5 MiB parts, in uneven chunks (`sizes`), and its
/// bytes. S3 streams it part by part as it arrives, whether it declares its length or not.
fn large_body(sizes: &[usize]) -> (Vec<u8>, TestBody) {
    let total: usize = sizes.iter().sum();
    let bytes: Vec<u8> = (0..total).map(|i| (i % 239) as u8).collect();
    let mut rest = &bytes[..];
    let chunks: Vec<Bytes> = sizes
        .iter()
        .map(|&len| {
            let (chunk, after) = rest.split_at(len);
            rest = after;
            Bytes::copy_from_slice(chunk)
        })
        .collect();
    (bytes, TestBody::chunks(chunks))
}

/// Ends inside its third part.
const UNEVEN: [usize; 5] = [
    300 * 1024,
    3 * 1024 * 1024 + 1,
    7,
    5 * 1024 * 1024,
    4 * 1024 * 1024,
];

/// Exactly two parts.
const WHOLE_PARTS: [usize; 3] = [4 * 1024 * 1024, 5 * 1024 * 1024, 1024 * 1024];

async fn stores_large_body<T: Target>(target: &mut T, bytes: &[u8], body: TestBody) -> Check {
    put(target, "large/object", b"an older object").await?;
    let tap = BodyTap::new(
        Hasher::new(Algorithm::Sha256),
        Some(bytes.len() as u64),
        Some(digest(bytes)),
    );
    let (tap, error) = stream_to(target, "large/object", tap, body).await?;
    ensure!(error.is_none(), "a large body failed: {error:?}");
    ensure!(
        tap.received() == bytes.len() as u64,
        "the tap saw {} bytes",
        tap.received()
    );
    let span = Span {
        start: 0,
        len: bytes.len() as u64,
    };
    let found = target.read_span("large/object", span).await?;
    ensure!(
        found.len() == bytes.len() && digest(&found) == digest(bytes),
        "a large body was stored as {} other bytes",
        found.len()
    );
    expect_list(target, "large/", &["object"]).await
}

pub(crate) async fn large_declared_body<T: Target>(target: &mut T) -> Check {
    let (bytes, body) = large_body(&UNEVEN);
    stores_large_body(target, &bytes, body.declaring_len()).await
}

pub(crate) async fn large_undeclared_body<T: Target>(target: &mut T) -> Check {
    let (bytes, body) = large_body(&UNEVEN);
    stores_large_body(target, &bytes, body).await
}

pub(crate) async fn undeclared_body_of_whole_parts<T: Target>(target: &mut T) -> Check {
    let (bytes, body) = large_body(&WHOLE_PARTS);
    stores_large_body(target, &bytes, body).await
}

pub(crate) async fn large_bodies_interrupted<T: Target>(target: &mut T) -> Check {
    put(target, "m/object", b"old").await?;
    for declared in [true, false] {
        let (_, body) = large_body(&UNEVEN);
        let body = if declared { body.declaring_len() } else { body };
        let (_, error) = stream_to(target, "m/object", tap(), body.disconnect_after(4)).await?;
        ensure!(
            matches!(error, Some(BodyError::Client(_))),
            "a disconnected large body (declared: {declared}) answered {error:?}"
        );
        expect_content(target, "m/object", Some(b"old")).await?;
    }
    Ok(())
}

pub(crate) async fn large_declared_body_refused<T: Target>(target: &mut T) -> Check {
    let (_, body) = large_body(&UNEVEN);
    let wrong = BodyTap::new(Hasher::new(Algorithm::Sha256), None, Some(digest(b"other")));
    let (_, error) = stream_to(target, "n/object", wrong, body.declaring_len()).await?;
    ensure!(
        matches!(
            error,
            Some(BodyError::Refused(TapError::DigestMismatch { .. }))
        ),
        "a large body with the wrong digest answered {error:?}"
    );
    expect_content(target, "n/object", None).await?;
    expect_list(target, "n/", &[]).await
}

pub(crate) async fn interrupted_body_keeps_the_old_object<T: Target>(target: &mut T) -> Check {
    put(target, "k/object", b"old").await?;
    let body = TestBody::chunks(["new"]).disconnect_after(1);
    let (_, error) = stream_to(target, "k/object", tap(), body).await?;
    ensure!(error.is_some(), "a disconnected body succeeded");
    expect_content(target, "k/object", Some(b"old")).await
}

pub(crate) async fn write_body_at<T: Target>(target: &mut T) -> Check {
    if !target.capabilities().in_place {
        let refused = stream_at(target, "p/data", 0, TestBody::chunks(["abc"])).await;
        ensure!(
            matches!(refused, Outcome::Failed(_)),
            "a backend that cannot write in place answered {refused:?}"
        );
        return expect_content(target, "p/data", None).await;
    }
    // Creates, appends, overwrites in the middle (the rest stays), and leaves a gap of
    // zeros before an offset past the end.
    let steps: [(u64, &str, &[u8]); 4] = [
        (0, "abc", b"abc"),
        (3, "def", b"abcdef"),
        (2, "XY", b"abXYef"),
        (8, "gh", b"abXYef\0\0gh"),
    ];
    for (offset, chunk, expected) in steps {
        let outcome = stream_at(target, "p/data", offset, TestBody::chunks([chunk])).await;
        let (tap, error) = body_outcome("a write in place", outcome)?;
        ensure!(error.is_none(), "a write in place failed: {error:?}");
        ensure!(
            tap.received() == chunk.len() as u64,
            "the tap saw {} bytes",
            tap.received()
        );
        expect_content(target, "p/data", Some(expected)).await?;
    }
    Ok(())
}

pub(crate) async fn interrupted_write_body_at<T: Target>(target: &mut T) -> Check {
    if !target.capabilities().in_place {
        return Ok(());
    }
    let outcome = stream_at(target, "p/data", 0, TestBody::chunks(["abc"])).await;
    body_outcome("a write in place", outcome)?;
    let body = TestBody::chunks(["de", "fg"]).disconnect_after(2);
    let outcome = stream_at(target, "p/data", 3, body).await;
    let (_, error) = body_outcome("a write in place", outcome)?;
    ensure!(error.is_some(), "a disconnected body succeeded");
    // Nothing is atomic in place: what landed may stay, but only what was sent, where it
    // was sent, and nothing before the offset changes.
    let found = content(target, "p/data")
        .await?
        .ok_or("the data file is gone")?;
    ensure!(
        found.starts_with(b"abc") && b"defg".starts_with(&found[3..]),
        "an interrupted write in place left {found:?}"
    );
    Ok(())
}

pub(crate) async fn concat<T: Target>(target: &mut T) -> Check {
    put(target, "u/1", b"hello ").await?;
    put(target, "u/2", b"..world..").await?;
    put(target, "u/3", b"!").await?;
    let pieces = vec![whole("u/1"), span("u/2", 2, 5), whole("u/3")];
    let outcome = concat_to(target, pieces, "blobs/joined").await;
    ensure!(
        matches!(outcome, Outcome::Ok),
        "a concatenation answered {outcome:?}"
    );
    expect_content(target, "blobs/joined", Some(b"hello world!")).await?;
    // Only a single whole piece may be moved: these were copied.
    expect_content(target, "u/1", Some(b"hello ")).await?;
    expect_content(target, "u/2", Some(b"..world..")).await
}

pub(crate) async fn concat_refuses_an_existing_target<T: Target>(target: &mut T) -> Check {
    put(target, "u/1", b"new ").await?;
    put(target, "u/2", b"bytes").await?;
    put(target, "blobs/joined", b"already here").await?;
    let outcome = concat_to(target, vec![whole("u/1"), whole("u/2")], "blobs/joined").await;
    ensure!(
        matches!(outcome, Outcome::ConditionFailed),
        "a concatenation onto an object answered {outcome:?}"
    );
    expect_content(target, "blobs/joined", Some(b"already here")).await?;
    expect_content(target, "u/1", Some(b"new ")).await
}

pub(crate) async fn concat_of_one_whole_piece<T: Target>(target: &mut T) -> Check {
    put(target, "u/only", b"the data").await?;
    put(target, "blobs/taken", b"other data").await?;
    let onto = concat_to(target, vec![whole("u/only")], "blobs/taken").await;
    if target.capabilities().create_new_moves {
        ensure!(
            matches!(onto, Outcome::ConditionFailed),
            "moving onto an object answered {onto:?}"
        );
        expect_content(target, "blobs/taken", Some(b"other data")).await?;
        expect_content(target, "u/only", Some(b"the data")).await?;
    } else {
        // The server ignores the condition: the move replaces the object. Said here so that
        // a server (or a backend working around it) that starts refusing shows up.
        ensure!(
            matches!(onto, Outcome::Ok),
            "a server said to ignore create-new on copies answered {onto:?}"
        );
        expect_content(target, "blobs/taken", Some(b"the data")).await?;
    }
    let moved = concat_to(target, vec![whole("u/only")], "blobs/moved").await;
    ensure!(
        matches!(moved, Outcome::Ok),
        "moving a piece answered {moved:?}"
    );
    expect_content(target, "blobs/moved", Some(b"the data")).await
}

pub(crate) async fn concat_of_nothing<T: Target>(target: &mut T) -> Check {
    let outcome = concat_to(target, Vec::new(), "blobs/empty").await;
    ensure!(
        matches!(outcome, Outcome::Ok),
        "concatenating nothing answered {outcome:?}"
    );
    expect_content(target, "blobs/empty", Some(b"")).await?;
    let again = concat_to(target, Vec::new(), "blobs/empty").await;
    ensure!(
        matches!(again, Outcome::ConditionFailed),
        "concatenating nothing onto an object answered {again:?}"
    );
    Ok(())
}

pub(crate) async fn concat_of_a_missing_piece<T: Target>(target: &mut T) -> Check {
    put(target, "u/1", b"short").await?;
    let outcome = concat_to(target, vec![whole("u/1"), whole("u/absent")], "blobs/a").await;
    ensure!(
        matches!(outcome, Outcome::Failed(_)),
        "a concatenation with a missing piece answered {outcome:?}"
    );
    expect_content(target, "blobs/a", None).await?;
    let outcome = concat_to(
        target,
        vec![span("u/1", 0, 3), span("u/1", 3, 9)],
        "blobs/b",
    )
    .await;
    ensure!(
        matches!(outcome, Outcome::Failed(_)),
        "a concatenation with a span past the end answered {outcome:?}"
    );
    expect_content(target, "blobs/b", None).await
}

/// Pieces large enough for S3 to compose them itself (every piece but the last at least
/// 5 MiB): the server-side path, with its own create-new check.
pub(crate) async fn concat_of_large_pieces<T: Target>(target: &mut T) -> Check {
    const PART: usize = 5 * 1024 * 1024 + 7;
    let first: Vec<u8> = (0..PART).map(|i| (i % 251) as u8).collect();
    let second: Vec<u8> = (0..PART).map(|i| (i % 241) as u8).collect();
    put(target, "u/1", &first).await?;
    put(target, "u/2", &second).await?;
    let pieces = vec![whole("u/1"), span("u/2", 0, PART as u64 - 10), whole("u/1")];
    let expected: Vec<u8> = [&first[..], &second[..PART - 10], &first[..]].concat();
    let outcome = concat_to(target, pieces.clone(), "blobs/large").await;
    ensure!(
        matches!(outcome, Outcome::Ok),
        "a large concatenation answered {outcome:?}"
    );
    let found = target
        .read_span(
            "blobs/large",
            Span {
                start: 0,
                len: expected.len() as u64,
            },
        )
        .await?;
    ensure!(
        found.len() == expected.len() && digest(&found) == digest(&expected),
        "a large concatenation holds {} other bytes",
        found.len()
    );
    let again = concat_to(target, pieces, "blobs/large").await;
    ensure!(
        matches!(again, Outcome::ConditionFailed),
        "a large concatenation onto an object answered {again:?}"
    );
    Ok(())
}

pub(crate) async fn hash_stored<T: Target>(target: &mut T) -> Check {
    put(target, "h/1", b"hello ").await?;
    put(target, "h/2", b"..world..").await?;
    let request = StorageRequest::HashStored {
        store: STORE,
        pieces: vec![whole("h/1"), span("h/2", 2, 5)],
        tap: tap(),
    };
    let (tap, error) = body_outcome("hashing", perform(target, request).await)?;
    ensure!(error.is_none(), "hashing failed: {error:?}");
    ensure!(
        tap.hasher().finish() == digest(b"hello world"),
        "hashing fed other bytes ({} of them)",
        tap.received()
    );
    let short = BodyTap::new(Hasher::new(Algorithm::Sha256), Some(4), None);
    let request = StorageRequest::HashStored {
        store: STORE,
        pieces: vec![whole("h/1")],
        tap: short,
    };
    let (_, error) = body_outcome("hashing", perform(target, request).await)?;
    ensure!(
        matches!(error, Some(BodyError::Refused(TapError::TooLong { .. }))),
        "hashing past the tap's length answered {error:?}"
    );
    Ok(())
}

pub(crate) async fn ranged_reads<T: Target>(target: &mut T) -> Check {
    put(target, "g/digits", b"0123456789").await?;
    put(target, "g/empty", b"").await?;
    let cases: [(&str, u64, u64, &[u8]); 5] = [
        ("g/digits", 0, 10, b"0123456789"),
        ("g/digits", 3, 4, b"3456"),
        ("g/digits", 9, 1, b"9"),
        ("g/digits", 4, 0, b""),
        ("g/empty", 0, 0, b""),
    ];
    for (key, start, len, expected) in cases {
        let found = target.read_span(key, Span { start, len }).await?;
        ensure!(
            found.as_ref() == expected,
            "bytes {start}+{len} of {key} read as {found:?}"
        );
    }
    let past = target
        .read_span("g/digits", Span { start: 5, len: 10 })
        .await;
    ensure!(
        past.is_err(),
        "a read past the end gave {past:?} instead of failing"
    );
    Ok(())
}

pub(crate) async fn list_children<T: Target>(target: &mut T) -> Check {
    for key in ["l/a", "l/b/c", "l/b/d", "l/e/f/g", "lx/h"] {
        put(target, key, b"x").await?;
    }
    expect_list(target, "l/", &["a", "b/", "e/"]).await?;
    expect_list(target, "l/b/", &["c", "d"]).await?;
    expect_list(target, "l/e/", &["f/"]).await?;
    expect_list(target, "l/a/", &[]).await
}

/// More children than one page of an S3 listing (1,000): every one is listed, once.
pub(crate) async fn list_many<T: Target>(target: &mut T) -> Check {
    let mut expected: Vec<String> = (0..1003).map(|i| format!("f{i:04}")).collect();
    for name in &expected {
        put(target, &format!("n/{name}"), b"").await?;
    }
    for folder in ["d0/", "e0/", "z9/"] {
        put(target, &format!("n/{folder}object"), b"").await?;
        expected.push(folder.to_owned());
    }
    expected.sort();
    let names = list(target, "n/").await?;
    ensure!(
        names == expected,
        "listing {} children gave {} names; first difference: {:?}",
        expected.len(),
        names.len(),
        names.iter().zip(&expected).find(|(a, b)| a != b)
    );
    Ok(())
}

/// A folder whose objects were deleted one by one: gone on object storage, still listed
/// (empty) on the filesystem; a folder deleted with its contents is gone everywhere.
pub(crate) async fn emptied_folders<T: Target>(target: &mut T) -> Check {
    put(target, "e/a/x", b"x").await?;
    put(target, "e/b/y", b"y").await?;
    let request = StorageRequest::Delete {
        store: STORE,
        key: "e/a/x".to_owned(),
    };
    perform(target, request).await;
    let left: &[&str] = match target.capabilities().lists_emptied_folders {
        true => &["a/", "b/"],
        false => &["b/"],
    };
    expect_list(target, "e/", left).await?;
    let request = StorageRequest::DeleteAll {
        store: STORE,
        prefix: "e/a/".to_owned(),
    };
    perform(target, request).await;
    expect_list(target, "e/", &["b/"]).await
}

pub(crate) async fn delete<T: Target>(target: &mut T) -> Check {
    put(target, "x/a", b"a").await?;
    put(target, "x/b", b"b").await?;
    for _ in 0..2 {
        let request = StorageRequest::Delete {
            store: STORE,
            key: "x/a".to_owned(),
        };
        let deleted = perform(target, request).await;
        ensure!(
            matches!(deleted, Outcome::Ok),
            "deleting answered {deleted:?}"
        );
        expect_content(target, "x/a", None).await?;
    }
    expect_content(target, "x/b", Some(b"b")).await
}

pub(crate) async fn delete_all<T: Target>(target: &mut T) -> Check {
    for key in ["d/x/1", "d/x/y/2", "d/xz/3"] {
        put(target, key, b"x").await?;
    }
    let request = StorageRequest::DeleteAll {
        store: STORE,
        prefix: "d/x/".to_owned(),
    };
    let deleted = perform(target, request).await;
    ensure!(
        matches!(deleted, Outcome::Ok),
        "deleting a folder answered {deleted:?}"
    );
    expect_content(target, "d/x/1", None).await?;
    expect_content(target, "d/x/y/2", None).await?;
    expect_content(target, "d/xz/3", Some(b"x")).await?;
    expect_list(target, "d/", &["xz/"]).await
}
