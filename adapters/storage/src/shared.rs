//! What both stores share: how a streamed body is fed through its tap into a writer, how a
//! whole object is written, and how results and failures become the core's outcomes.

use bytes::Bytes;
use stowage_core::step::{BodyError, BodyTap, IoError, Outcome};

use crate::body::BodySource;
use crate::causes::WithCauses;
use crate::committed::Committed;
use crate::hashing::Hashing;
use crate::object_writer::ObjectWriter;

/// One object found by [`crate::Store::list_objects`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub key: String,
    pub size: u64,
}

pub(crate) fn failed(what: &str, key: &str, e: impl std::error::Error) -> Outcome {
    let e = WithCauses(&e);
    tracing::warn!(key, error = %e, "storage {what} failed");
    Outcome::Failed(IoError {
        message: format!("{what} {key}: {e}"),
    })
}

pub(crate) fn committed(what: &str, key: &str, result: std::io::Result<Committed>) -> Outcome {
    match result {
        Ok(Committed::Written) => Outcome::Ok,
        Ok(Committed::ConditionFailed) => Outcome::ConditionFailed,
        Err(e) => failed(what, key, e),
    }
}

/// Writes `data` through `writer` and commits it, or aborts it when the write failed.
pub(crate) async fn write_whole(
    writer: std::io::Result<ObjectWriter>,
    key: &str,
    data: Bytes,
) -> std::io::Result<Committed> {
    let mut writer = writer?;
    match writer.write(data).await {
        Ok(()) => writer.commit().await,
        Err(e) => {
            writer.abort(key).await;
            Err(e)
        }
    }
}

/// A body the store could not take (a full disk, an S3 error): the client is told 503, and
/// the operator must see why.
fn stored_body_failed(what: &str, key: &str, e: std::io::Error) -> BodyError {
    let e = WithCauses(&e).to_string();
    tracing::warn!(key, error = %e, "storage body {what} failed");
    BodyError::Storage(e)
}

/// Feeds the request body through `tap` into `writer`, then commits it, or aborts it when
/// the body or the tap failed.
pub(crate) async fn stream_body(
    mut writer: ObjectWriter,
    key: &str,
    tap: BodyTap,
    body: &mut impl BodySource,
) -> Outcome {
    let mut hashing = Hashing::new(tap);
    let mut error = None;
    while let Some(chunk) = body.next_chunk().await {
        let written = match chunk {
            Ok(chunk) if hashing.feed(&chunk).await => writer
                .write(chunk)
                .await
                .map_err(|e| stored_body_failed("write", key, e)),
            // The tap refused the body: `finish` tells why.
            Ok(_) => break,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            error = Some(e);
            break;
        }
    }
    let tap = match hashing.finish().await {
        Ok((tap, refused)) => {
            error = error.or(refused.map(BodyError::Refused));
            tap
        }
        Err(e) => {
            writer.abort(key).await;
            return failed("hash", key, std::io::Error::other(e));
        }
    };
    if error.is_none() {
        error = tap.finish().err().map(BodyError::Refused);
    }
    match error {
        None => {
            if let Err(e) = writer.commit().await {
                error = Some(stored_body_failed("commit", key, e));
            }
        }
        Some(_) => writer.abort(key).await,
    }
    Outcome::Body {
        tap: Box::new(tap),
        error,
    }
}
