//! One store's backend: the filesystem ([`FsStore`]) or S3 ([`S3Store`]).
//!
//! An enum of the two, not a trait: the set is closed (a new backend is a new variant and a
//! new file, and every `match` then shows what it must do), the methods are async and some
//! return streams, which a trait object could only offer boxed, and a generic parameter
//! would spread into `Storage`, the driver and both servers for no gain. Each variant holds
//! everything it needs and nothing of the other's: the filesystem store does its own IO
//! through one stack (`fs_calls.rs`, `fs_writer.rs`, `fs_reader.rs`), the S3 store goes
//! through OpenDAL with its retry and timeout layers (`s3.rs`). What both share is here:
//! how a streamed body is fed through its tap into a writer, and how failures become
//! outcomes.

use bytes::Bytes;
use futures_util::future::Either;
use futures_util::{Stream, StreamExt};
use stowage_core::range::Span;
use stowage_core::step::{BodyError, BodyTap, IoError, Outcome, Piece, WriteCondition};

use crate::StorageError;
use crate::body::BodySource;
use crate::fs::FsStore;
use crate::hashing::Hashing;
use crate::object_writer::{Committed, ObjectWriter};
use crate::s3_multipart::MultipartUploads;
use crate::s3_store::S3Store;
use crate::settings::StoreSettings;

#[derive(Clone, Debug)]
pub enum Backend {
    Fs(FsStore),
    /// Boxed: its client, settings and housekeeping are many times the filesystem's size.
    S3(Box<S3Store>),
}

/// One object found by [`Backend::list_objects`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub key: String,
    pub size: u64,
}

pub(crate) fn failed(what: &str, key: &str, e: impl std::fmt::Display) -> Outcome {
    tracing::warn!(key, error = %e, "storage {what} failed");
    Outcome::Failed(IoError {
        message: format!("{what} {key}: {e}"),
    })
}

pub(crate) fn committed(what: &str, key: &str, result: std::io::Result<Committed>) -> Outcome {
    match result {
        Ok(Committed::Done) => Outcome::Done,
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
    tracing::warn!(key, error = %e, "storage body {what} failed");
    BodyError::Storage(e.to_string())
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
            return failed("hash", key, e);
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

impl Backend {
    pub fn open(settings: &StoreSettings) -> Result<Self, StorageError> {
        match settings {
            StoreSettings::Fs(fs_settings) => Ok(Backend::Fs(FsStore::new(fs_settings))),
            StoreSettings::S3(s3_settings) => {
                S3Store::open(s3_settings).map(|s3| Backend::S3(Box::new(s3)))
            }
        }
    }

    /// The backend's kind, as a bounded metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Fs(_) => "fs",
            Backend::S3(_) => "s3",
        }
    }

    pub(crate) fn multipart_uploads(&self) -> Option<&MultipartUploads> {
        match self {
            Backend::Fs(_) => None,
            Backend::S3(s3) => Some(s3.multipart_uploads()),
        }
    }

    /// Finds which write conditions an S3 store enforces (`s3_conditions.rs`); the
    /// filesystem checks create-new itself.
    pub async fn probe_conditions(&self) {
        if let Backend::S3(s3) = self {
            s3.probe_conditions().await;
        }
    }

    /// Whether `other` is this same S3 store (one probe serves both).
    pub(crate) fn shares_conditions(&self, other: &Backend) -> bool {
        match (self, other) {
            (Backend::S3(a), Backend::S3(b)) => a.shares_conditions(b),
            _ => false,
        }
    }

    /// Whether [`Backend::write_body_at`] works here.
    pub fn writes_in_place(&self) -> bool {
        matches!(self, Backend::Fs(_))
    }

    pub async fn stat(&self, key: &str) -> Outcome {
        match self {
            Backend::Fs(fs) => fs.stat(key).await,
            Backend::S3(s3) => s3.stat(key).await,
        }
    }

    /// An object's size and time of writing (what the collector's grace period reads).
    pub async fn inspect(&self, key: &str) -> Outcome {
        match self {
            Backend::Fs(fs) => fs.inspect(key).await,
            Backend::S3(s3) => s3.inspect(key).await,
        }
    }

    pub async fn read(&self, key: &str) -> Outcome {
        match self {
            Backend::Fs(fs) => fs.read_outcome(key).await,
            Backend::S3(s3) => s3.read(key).await,
        }
    }

    pub(crate) async fn read_versioned(&self, key: &str) -> Outcome {
        match self {
            Backend::Fs(fs) => fs.read_versioned(key).await,
            Backend::S3(s3) => s3.read_versioned(key).await,
        }
    }

    /// Writes `data` at `key` if `condition` holds ([`Outcome::ConditionFailed`] if not).
    pub async fn write(&self, key: &str, data: Bytes, condition: &WriteCondition) -> Outcome {
        match self {
            Backend::Fs(fs) => {
                let written = write_whole(Ok(fs.writer(key, condition)), key, data).await;
                committed("write", key, written)
            }
            Backend::S3(s3) => s3.write(key, data, condition).await,
        }
    }

    /// Streams a body to `key`, replacing what is there: a fresh part name, or a content
    /// address whose bytes are checked against it before they appear (a racing identical
    /// write is harmless, and a condition would only be checked after the whole upload).
    pub async fn write_body(&self, key: &str, tap: BodyTap, body: &mut impl BodySource) -> Outcome {
        let writer = match self {
            Backend::Fs(fs) => Ok(fs.writer(key, &WriteCondition::Overwrite)),
            Backend::S3(s3) => s3.writer(key, &WriteCondition::Overwrite).await,
        };
        match writer {
            Ok(writer) => stream_body(writer, key, tap, body).await,
            Err(e) => failed("open writer", key, e),
        }
    }

    /// Streams a body into `key` from `offset` on, in place (the filesystem only).
    pub async fn write_body_at(
        &self,
        key: &str,
        offset: u64,
        tap: BodyTap,
        body: &mut impl BodySource,
    ) -> Outcome {
        match self {
            Backend::Fs(fs) => stream_body(fs.writer_at(key, offset), key, tap, body).await,
            Backend::S3(_) => failed(
                "write in place",
                key,
                "object storage cannot write in place",
            ),
        }
    }

    /// Feeds the stored bytes of `pieces`, in order, through `tap`.
    pub(crate) async fn hash_stored(&self, pieces: &[Piece], mut tap: BodyTap) -> Outcome {
        for piece in pieces {
            let stream = match self.read_piece(piece).await {
                Ok(stream) => stream,
                Err(e) => return failed("read", &piece.key, e),
            };
            let mut stream = std::pin::pin!(stream);
            while let Some(chunk) = stream.next().await {
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    Err(e) => return failed("read", &piece.key, e),
                };
                if let Err(e) = tap.feed(&chunk) {
                    return Outcome::Body {
                        tap: Box::new(tap),
                        error: Some(BodyError::Refused(e)),
                    };
                }
            }
        }
        Outcome::Body {
            tap: Box::new(tap),
            error: None,
        }
    }

    /// The bytes of a piece; all of them, or an error.
    async fn read_piece(
        &self,
        piece: &Piece,
    ) -> std::io::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>> {
        Ok(match self {
            Backend::Fs(fs) => Either::Left(fs.read_piece(piece).await?),
            Backend::S3(s3) => Either::Right(s3.read_piece(piece).await?),
        })
    }

    /// Makes `pieces` appear at `to` as one object, unless an object is there already
    /// ([`Outcome::ConditionFailed`]; `to` is a content address).
    pub(crate) async fn concat(&self, pieces: &[Piece], to: &str) -> Outcome {
        if pieces.is_empty() {
            return self
                .write(to, Bytes::new(), &WriteCondition::CreateNew)
                .await;
        }
        let result = match self {
            Backend::Fs(fs) => fs.concat(pieces, to).await,
            Backend::S3(s3) => s3.concat(pieces, to).await,
        };
        committed("commit", to, result)
    }

    pub(crate) async fn delete(&self, key: &str) -> Outcome {
        match self {
            Backend::Fs(fs) => fs.delete(key).await,
            Backend::S3(s3) => s3.delete(key).await,
        }
    }

    pub(crate) async fn delete_all(&self, prefix: &str) -> Outcome {
        match self {
            Backend::Fs(fs) => fs.delete_all_outcome(prefix).await,
            Backend::S3(s3) => s3.delete_all(prefix).await,
        }
    }

    pub(crate) async fn list(&self, prefix: &str) -> Outcome {
        match self {
            Backend::Fs(fs) => fs.list(prefix).await,
            Backend::S3(s3) => s3.list(prefix).await,
        }
    }

    /// Every object below `prefix`, at any depth.
    pub async fn list_objects(&self, prefix: &str) -> std::io::Result<Vec<StoredObject>> {
        match self {
            Backend::Fs(fs) => fs.list_objects(prefix).await,
            Backend::S3(s3) => s3.list_objects(prefix).await.map_err(std::io::Error::other),
        }
    }

    pub async fn read_span(
        &self,
        key: &str,
        span: Span,
    ) -> std::io::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>> {
        Ok(match self {
            Backend::Fs(fs) => Either::Left(fs.read_span(key, span).await?),
            Backend::S3(s3) => Either::Right(s3.read_span(key, span).await?),
        })
    }
}
