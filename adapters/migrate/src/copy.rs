//! Copies one object, unless the destination already holds it.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use stowage_core::digest::{Algorithm, Digest, Hasher};
use stowage_core::range::Span;
use stowage_core::step::{BodyError, BodyTap, Outcome, TapError, WriteCondition};
use stowage_storage::{BodySource, Store};

use crate::MigrateError;
use crate::plan::{Content, Job};
use crate::progress::Progress;

/// What became of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Copied {
    /// Copied now; `verified` when its bytes were checked against their digest.
    New { bytes: u64, verified: bool },
    /// The destination held it already (an earlier, interrupted run copied it).
    Present,
}

pub(crate) async fn copy(
    job: &Job,
    from: &Store,
    to: &Store,
    progress: &Progress,
) -> Result<Copied, MigrateError> {
    let copied = match &job.content {
        Content::Streamed(digest) => copy_streamed(job, digest.as_ref(), from, to, progress).await,
        Content::Small => copy_small(job, from, to).await,
    }?;
    if copied == Copied::Present || job.content == Content::Small {
        progress.advance(job.size);
    }
    Ok(copied)
}

/// Streams the object into the destination through a tap that counts and hashes it: a
/// digest-named object whose bytes do not hash to its name, or an object that changed size,
/// is aborted and never appears at the destination. A digest-named object already there with
/// its size is skipped: this migration wrote it only after verifying it.
async fn copy_streamed(
    job: &Job,
    digest: Option<&Digest>,
    from: &Store,
    to: &Store,
    progress: &Progress,
) -> Result<Copied, MigrateError> {
    let key = &job.key;
    if stat(to, key).await? == Some(job.size) {
        return Ok(Copied::Present);
    }
    let algorithm = digest.map_or(Algorithm::Sha256, Digest::algorithm);
    let tap = BodyTap::new(Hasher::new(algorithm), Some(job.size), digest.cloned());
    let outcome = if job.size == 0 {
        to.write_body(key, tap, &mut ()).await
    } else {
        let span = Span {
            start: 0,
            len: job.size,
        };
        let stream = from
            .read_span(key, span)
            .await
            .map_err(|e| storage_error(key, READING, e))?;
        let mut body = CountedBody {
            stream: Box::pin(stream),
            len: job.size,
            progress,
        };
        to.write_body(key, tap, &mut body).await
    };
    match outcome {
        Outcome::Body { error: None, .. } => Ok(Copied::New {
            bytes: job.size,
            verified: digest.is_some(),
        }),
        Outcome::Body {
            error: Some(error), ..
        } => Err(body_error(key, error)),
        other => Err(unexpected(key, WRITING, other)),
    }
}

/// Links and descriptors are a few bytes: compared whole, so a tag that moved at the
/// source since an interrupted run is copied again.
async fn copy_small(job: &Job, from: &Store, to: &Store) -> Result<Copied, MigrateError> {
    let key = &job.key;
    let bytes = read(from, key, READING)
        .await?
        .ok_or_else(|| MigrateError::Vanished { key: key.clone() })?;
    if read(to, key, CHECKING).await?.as_ref() == Some(&bytes) {
        return Ok(Copied::Present);
    }
    let len = bytes.len() as u64;
    // Offline, and what differs is meant to be replaced.
    match to.write(key, bytes, &WriteCondition::Overwrite).await {
        Outcome::Ok => Ok(Copied::New {
            bytes: len,
            verified: false,
        }),
        other => Err(unexpected(key, WRITING, other)),
    }
}

const READING: &str = "reading the source";
const CHECKING: &str = "checking the destination";
const WRITING: &str = "writing the destination";

async fn stat(backend: &Store, key: &str) -> Result<Option<u64>, MigrateError> {
    match backend.stat(key).await {
        Outcome::Stat(size) => Ok(size),
        other => Err(unexpected(key, CHECKING, other)),
    }
}

async fn read(
    backend: &Store,
    key: &str,
    action: &'static str,
) -> Result<Option<Bytes>, MigrateError> {
    match backend.read(key).await {
        Outcome::Read(bytes) => Ok(bytes),
        other => Err(unexpected(key, action, other)),
    }
}

fn storage_error(key: &str, action: &'static str, e: impl std::fmt::Display) -> MigrateError {
    MigrateError::Storage {
        key: key.to_owned(),
        action,
        message: e.to_string(),
    }
}

/// A failed storage call (`Outcome::Failed`), or an answer of the wrong kind.
fn unexpected(key: &str, action: &'static str, outcome: Outcome) -> MigrateError {
    match outcome {
        Outcome::Failed(e) => storage_error(key, action, e),
        other => storage_error(key, action, format!("unexpected answer {other:?}")),
    }
}

fn body_error(key: &str, error: BodyError) -> MigrateError {
    let key = key.to_owned();
    match error {
        BodyError::Refused(TapError::DigestMismatch { actual, .. }) => {
            MigrateError::Corrupt { key, actual }
        }
        BodyError::Refused(source) => MigrateError::Changed { key, source },
        BodyError::Client(message) => MigrateError::Storage {
            key,
            action: READING,
            message,
        },
        other => storage_error(&key, WRITING, other),
    }
}

/// The source object's stream as a body to write, moving the progress bar as it goes.
struct CountedBody<'a, S> {
    stream: Pin<Box<S>>,
    /// The source object's size.
    len: u64,
    progress: &'a Progress,
}

impl<S> BodySource for CountedBody<'_, S>
where
    S: Stream<Item = std::io::Result<Bytes>> + Send,
{
    async fn next_chunk(&mut self) -> Option<Result<Bytes, BodyError>> {
        let chunk = self.stream.next().await?;
        Some(match chunk {
            Ok(chunk) => {
                self.progress.advance(chunk.len() as u64);
                Ok(chunk)
            }
            Err(e) => Err(BodyError::Client(e.to_string())),
        })
    }

    fn declared_len(&self) -> Option<u64> {
        Some(self.len)
    }
}
