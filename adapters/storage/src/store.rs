//! One store's backend: the filesystem ([`FsStore`]) or S3 ([`S3Store`]).
//!
//! An enum of the two, not a trait: the set is closed (a new backend is a new variant and a
//! new file, and every `match` then shows what it must do), the methods are async and some
//! return streams, which a trait object could only offer boxed, and a generic parameter
//! would spread into `Stores`, the driver and both servers for no gain. Each variant holds
//! everything it needs and nothing of the other's: the filesystem store does its own IO
//! through one stack (`fs_calls.rs`, `fs_writer.rs`, `fs_reader.rs`), the S3 store goes
//! through OpenDAL with its retry and timeout layers (`s3.rs`). What both share is in
//! `shared.rs`.

use bytes::Bytes;
use futures_util::future::Either;
use futures_util::{Stream, StreamExt};
use stowage_core::range::Span;
use stowage_core::step::{BodyError, BodyTap, Outcome, Piece, WriteCondition};

use crate::StoreOpenError;
use crate::body::BodySource;
use crate::fs::FsStore;
use crate::s3_multipart::MultipartUploads;
use crate::s3_store::S3Store;
use crate::settings::StoreSettings;
use crate::shared::{StoredObject, committed, failed, stream_body, write_whole};

#[derive(Clone, Debug)]
pub enum Store {
    Fs(FsStore),
    /// Boxed: its client, settings and housekeeping are many times the filesystem's size.
    S3(Box<S3Store>),
}

impl Store {
    pub fn open(settings: &StoreSettings) -> Result<Self, StoreOpenError> {
        match settings {
            StoreSettings::Fs(fs_settings) => Ok(Store::Fs(FsStore::new(fs_settings))),
            StoreSettings::S3(s3_settings) => {
                S3Store::open(s3_settings).map(|s3| Store::S3(Box::new(s3)))
            }
        }
    }

    /// The backend's kind, as a bounded metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Fs(_) => "fs",
            Store::S3(_) => "s3",
        }
    }

    pub(crate) fn multipart_uploads(&self) -> Option<&MultipartUploads> {
        match self {
            Store::Fs(_) => None,
            Store::S3(s3) => Some(s3.multipart_uploads()),
        }
    }

    /// Each store checks that it can be written (a server that cannot write its store would
    /// start, pass its readiness probe and refuse every push); an S3 store that took the
    /// write then finds which write conditions it enforces (`s3_conditions.rs`).
    pub async fn prepare(&self) -> Result<(), StoreOpenError> {
        match self {
            Store::Fs(fs) => fs.check_writable(),
            Store::S3(s3) => {
                if s3.check_writable().await? {
                    s3.probe_conditions().await;
                }
                Ok(())
            }
        }
    }

    /// Whether `other` is this same S3 store (one probe serves both).
    pub(crate) fn shares_conditions(&self, other: &Store) -> bool {
        match (self, other) {
            (Store::S3(a), Store::S3(b)) => a.shares_conditions(b),
            _ => false,
        }
    }

    /// Whether [`Store::write_body_at`] works here.
    pub fn writes_in_place(&self) -> bool {
        matches!(self, Store::Fs(_))
    }

    pub async fn stat(&self, key: &str) -> Outcome {
        match self {
            Store::Fs(fs) => fs.stat(key).await,
            Store::S3(s3) => s3.stat(key).await,
        }
    }

    /// An object's size and time of writing (what the collector's grace period reads).
    pub async fn inspect(&self, key: &str) -> Outcome {
        match self {
            Store::Fs(fs) => fs.inspect(key).await,
            Store::S3(s3) => s3.inspect(key).await,
        }
    }

    pub async fn read(&self, key: &str) -> Outcome {
        match self {
            Store::Fs(fs) => fs.read_outcome(key).await,
            Store::S3(s3) => s3.read(key).await,
        }
    }

    pub(crate) async fn read_versioned(&self, key: &str) -> Outcome {
        match self {
            Store::Fs(fs) => fs.read_versioned(key).await,
            Store::S3(s3) => s3.read_versioned(key).await,
        }
    }

    /// Writes `data` at `key` if `condition` holds ([`Outcome::ConditionFailed`] if not).
    pub async fn write(&self, key: &str, data: Bytes, condition: &WriteCondition) -> Outcome {
        match self {
            Store::Fs(fs) => {
                let written = write_whole(Ok(fs.writer(key, condition)), key, data).await;
                committed("write", key, written)
            }
            Store::S3(s3) => s3.write(key, data, condition).await,
        }
    }

    /// Streams a body to `key`, replacing what is there: a fresh part name, or a content
    /// address whose bytes are checked against it before they appear (a racing identical
    /// write is harmless, and a condition would only be checked after the whole upload).
    pub async fn write_body(&self, key: &str, tap: BodyTap, body: &mut impl BodySource) -> Outcome {
        let writer = match self {
            Store::Fs(fs) => Ok(fs.writer(key, &WriteCondition::Overwrite)),
            Store::S3(s3) => s3.body_writer(key, body.declared_len()).await,
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
            Store::Fs(fs) => stream_body(fs.writer_at(key, offset), key, tap, body).await,
            Store::S3(_) => failed(
                "write in place",
                key,
                std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "object storage cannot write in place",
                ),
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
            Store::Fs(fs) => Either::Left(fs.read_piece(piece).await?),
            Store::S3(s3) => Either::Right(s3.read_piece(piece).await?),
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
            Store::Fs(fs) => fs.concat(pieces, to).await,
            Store::S3(s3) => s3.concat(pieces, to).await,
        };
        committed("commit", to, result)
    }

    pub(crate) async fn delete(&self, key: &str) -> Outcome {
        match self {
            Store::Fs(fs) => fs.delete(key).await,
            Store::S3(s3) => s3.delete(key).await,
        }
    }

    pub(crate) async fn delete_all(&self, prefix: &str) -> Outcome {
        match self {
            Store::Fs(fs) => fs.delete_all_outcome(prefix).await,
            Store::S3(s3) => s3.delete_all(prefix).await,
        }
    }

    pub(crate) async fn list(&self, prefix: &str) -> Outcome {
        match self {
            Store::Fs(fs) => fs.list(prefix).await,
            Store::S3(s3) => s3.list(prefix).await,
        }
    }

    /// Every object below `prefix`, at any depth.
    pub async fn list_objects(&self, prefix: &str) -> std::io::Result<Vec<StoredObject>> {
        match self {
            Store::Fs(fs) => fs.list_objects(prefix).await,
            Store::S3(s3) => s3.list_objects(prefix).await.map_err(std::io::Error::other),
        }
    }

    pub async fn read_span(
        &self,
        key: &str,
        span: Span,
    ) -> std::io::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>> {
        Ok(match self {
            Store::Fs(fs) => Either::Left(fs.read_span(key, span).await?),
            Store::S3(s3) => Either::Right(s3.read_span(key, span).await?),
        })
    }
}
