//! One store on one OpenDAL operator.

use std::ops::Bound::{self, Excluded, Included, Unbounded};
use std::ops::RangeBounds;

use bytes::Bytes;
use futures_util::future::Either;
use futures_util::{Stream, StreamExt, TryStreamExt};
use opendal::{ErrorKind, Operator};
use stowage_core::range::Span;
use stowage_core::step::{
    BodyError, BodyTap, IoError, Millis, ObjectInfo, Outcome, Piece, Version, Versioned,
    WriteCondition,
};

use crate::StorageError;
use crate::body::BodySource;
use crate::object_writer::{Committed, ObjectWriter, PartWriter};
use crate::s3_multipart::MultipartUploads;
use crate::settings::StoreSettings;
use crate::{fs, fs_reader, s3};

/// Stored objects read through OpenDAL on the filesystem (re-hashing, migration) are read
/// in ranges of this size, `IO_AHEAD` at once. (Writes and responses have their own
/// paths: fs_writer.rs, fs_reader.rs.)
const IO_CHUNK: usize = 1024 * 1024;
const IO_AHEAD: usize = 2;

#[derive(Clone, Debug)]
pub struct Backend {
    pub(crate) op: Operator,
    /// The filesystem root and whether commits fsync (`sync_to_disk`); `None` elsewhere.
    fs: Option<fs::FsTarget>,
    /// Size of each write (fs) or multipart upload part (S3).
    write_chunk: usize,
    /// Parts uploaded at once.
    write_concurrency: usize,
    /// How objects are copied server-side; `None` on the filesystem, which renames.
    copy: Option<CopyPlan>,
    /// S3's incomplete multipart uploads, for housekeeping; `None` on the filesystem.
    multipart: Option<MultipartUploads>,
}

/// One object found by [`Backend::list_objects`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub key: String,
    pub size: u64,
}

/// Server-side copies: whole below `threshold`, else in `chunk` pieces, `jobs` at a time.
#[derive(Clone, Copy, Debug)]
struct CopyPlan {
    threshold: u64,
    chunk: usize,
    jobs: usize,
}

/// S3's smallest part for a multipart upload or copy (all but the last part).
const S3_MIN_PART: u64 = 5 * 1024 * 1024;

/// S3's largest part copy.
const S3_MAX_COPY_PART: u64 = 5 * 1024 * 1024 * 1024;

fn failed(what: &str, key: &str, e: impl std::fmt::Display) -> Outcome {
    tracing::warn!(key, error = %e, "storage {what} failed");
    Outcome::Failed(IoError {
        message: format!("{what} {key}: {e}"),
    })
}

fn committed(what: &str, key: &str, result: std::io::Result<Committed>) -> Outcome {
    match result {
        Ok(Committed::Done) => Outcome::Done,
        Ok(Committed::ConditionFailed) => Outcome::ConditionFailed,
        Err(e) => failed(what, key, e),
    }
}

/// An OpenDAL write or copy whose condition may not hold.
fn conditional<T>(result: opendal::Result<T>) -> opendal::Result<Committed> {
    match result {
        Ok(_) => Ok(Committed::Done),
        Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(Committed::ConditionFailed),
        Err(e) => Err(e),
    }
}

/// The byte range of a piece of an object, for a ranged read.
fn bounds(span: Option<Span>) -> (Bound<u64>, Bound<u64>) {
    match span {
        Some(span) => (Included(span.start), Excluded(span.start + span.len)),
        None => (Unbounded, Unbounded),
    }
}

/// Feeds the request body through `tap` into `writer`, then commits it, or aborts it when
/// the body or the tap failed.
async fn stream_body(
    mut writer: ObjectWriter,
    key: &str,
    mut tap: BodyTap,
    body: &mut impl BodySource,
) -> Outcome {
    let mut error = None;
    while let Some(chunk) = body.next_chunk().await {
        let written = match chunk {
            Ok(chunk) => match tap.feed(&chunk) {
                Ok(()) => writer
                    .write(chunk)
                    .await
                    .map_err(|e| BodyError::Storage(e.to_string())),
                Err(refused) => Err(BodyError::Refused(refused)),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            error = Some(e);
            break;
        }
    }
    if error.is_none() {
        error = tap.finish().err().map(BodyError::Refused);
    }
    match error {
        None => {
            if let Err(e) = writer.commit().await {
                error = Some(BodyError::Storage(e.to_string()));
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
            StoreSettings::Fs(fs_settings) => {
                let op = fs::operator(fs_settings).map_err(|source| StorageError::Open {
                    location: fs_settings.root_dir.clone(),
                    source,
                })?;
                Ok(Backend {
                    op,
                    fs: Some(fs::FsTarget::new(fs_settings)),
                    write_chunk: IO_CHUNK,
                    write_concurrency: IO_AHEAD,
                    copy: None,
                    multipart: None,
                })
            }
            StoreSettings::S3(s3_settings) => {
                let location = format!("s3://{}/{}", s3_settings.bucket, s3_settings.key_prefix);
                let op = s3::operator(s3_settings).map_err(|source| StorageError::Open {
                    location: location.clone(),
                    source,
                })?;
                let multipart = MultipartUploads::new(s3_settings)
                    .map_err(|source| StorageError::Multipart { location, source })?;
                let jobs = s3_settings.multipart_copy_jobs.max(1);
                Ok(Backend {
                    op,
                    fs: None,
                    write_chunk: s3_settings.multipart_part_size.as_u64() as usize,
                    write_concurrency: jobs,
                    copy: Some(CopyPlan {
                        threshold: s3_settings.multipart_copy_threshold.as_u64(),
                        chunk: s3_settings.multipart_copy_chunk_size.as_u64() as usize,
                        jobs,
                    }),
                    multipart: Some(multipart),
                })
            }
        }
    }

    /// The backend's kind, as a bounded metrics label.
    pub fn kind(&self) -> &'static str {
        if self.fs.is_some() { "fs" } else { "s3" }
    }

    pub(crate) fn multipart_uploads(&self) -> Option<&MultipartUploads> {
        self.multipart.as_ref()
    }

    /// A writer whose object appears only when it commits, and only if `condition` holds.
    /// On S3 the condition goes with the PutObject (If-None-Match: *, If-Match: the ETag),
    /// or with CompleteMultipartUpload for a large object. The filesystem can only create
    /// new; it replaces whatever is there for [`WriteCondition::IfVersion`] (its reads
    /// report no versions, so the core never asks it to): there the lock alone protects a
    /// replacement.
    async fn writer(&self, key: &str, condition: &WriteCondition) -> std::io::Result<ObjectWriter> {
        if let Some(target) = &self.fs {
            let create_new = *condition == WriteCondition::CreateNew;
            return Ok(ObjectWriter::Fs(target.writer(key, create_new)));
        }
        let writer = self
            .op
            .writer_with(key)
            .chunk(self.write_chunk)
            .concurrent(self.write_concurrency);
        let writer = match condition {
            WriteCondition::Overwrite => writer,
            WriteCondition::CreateNew => writer.if_not_exists(true),
            WriteCondition::IfVersion(Version(etag)) => writer.if_match(etag),
        };
        writer
            .await
            .map(|writer| ObjectWriter::OpenDal(PartWriter::new(writer, self.write_chunk)))
            .map_err(std::io::Error::other)
    }

    pub async fn stat(&self, key: &str) -> Outcome {
        match self.op.stat(key).await {
            Ok(meta) => Outcome::Stat(Some(meta.content_length())),
            Err(e) if e.kind() == ErrorKind::NotFound => Outcome::Stat(None),
            Err(e) => failed("stat", key, e),
        }
    }

    pub async fn inspect(&self, key: &str) -> Outcome {
        match self.op.stat(key).await {
            Ok(meta) => {
                // Stores that report no time make the object look new: the collector then
                // spares it rather than guess its age.
                let modified = meta
                    .last_modified()
                    .and_then(|t| u64::try_from(t.into_inner().as_millisecond()).ok())
                    .unwrap_or(u64::MAX);
                Outcome::Inspected(Some(ObjectInfo {
                    size: meta.content_length(),
                    modified: Millis(modified),
                }))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Outcome::Inspected(None),
            Err(e) => failed("inspect", key, e),
        }
    }

    pub async fn read(&self, key: &str) -> Outcome {
        if let Some(target) = &self.fs {
            return match target.read(key).await {
                Ok(data) => Outcome::Read(data.map(Bytes::from)),
                Err(e) => failed("read", key, e),
            };
        }
        match self.op.read(key).await {
            Ok(buffer) => Outcome::Read(Some(buffer.to_bytes())),
            Err(e) if e.kind() == ErrorKind::NotFound => Outcome::Read(None),
            Err(e) => failed("read", key, e),
        }
    }

    /// A small object's content with its version: S3's ETag, from the same GET (so it is
    /// the version of these bytes). The filesystem has no versions.
    pub(crate) async fn read_versioned(&self, key: &str) -> Outcome {
        if self.fs.is_some() {
            return match self.read(key).await {
                Outcome::Read(found) => Outcome::Versioned(found.map(|data| Versioned {
                    data,
                    version: None,
                })),
                other => other,
            };
        }
        let read = async {
            let reader = self.op.reader(key).await?;
            let data = reader.read(..).await?.to_bytes();
            let version = reader
                .metadata()
                .and_then(|meta| meta.etag())
                .map(|etag| Version(etag.to_owned()));
            Ok::<_, opendal::Error>(Versioned { data, version })
        };
        match read.await {
            Ok(found) => Outcome::Versioned(Some(found)),
            Err(e) if e.kind() == ErrorKind::NotFound => Outcome::Versioned(None),
            Err(e) => failed("read", key, e),
        }
    }

    /// Writes `data` at `key` if `condition` holds ([`Outcome::ConditionFailed`] if not).
    pub async fn write(&self, key: &str, data: Bytes, condition: &WriteCondition) -> Outcome {
        let written = match self.writer(key, condition).await {
            Ok(mut writer) => match writer.write(data).await {
                Ok(()) => writer.commit().await,
                Err(e) => {
                    writer.abort(key).await;
                    Err(e)
                }
            },
            Err(e) => Err(e),
        };
        committed("write", key, written)
    }

    /// Streams a body to `key`, replacing what is there: a fresh part name, or a content
    /// address whose bytes are checked against it before they appear (a racing identical
    /// write is harmless, and a condition would only be checked after the whole upload).
    pub async fn write_body(&self, key: &str, tap: BodyTap, body: &mut impl BodySource) -> Outcome {
        match self.writer(key, &WriteCondition::Overwrite).await {
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
        match &self.fs {
            Some(target) => {
                let writer = ObjectWriter::Fs(target.writer_at(key, offset));
                stream_body(writer, key, tap, body).await
            }
            None => failed(
                "write in place",
                key,
                "object storage cannot write in place",
            ),
        }
    }

    /// Whether [`Backend::write_body_at`] works here.
    pub fn writes_in_place(&self) -> bool {
        self.fs.is_some()
    }

    pub(crate) async fn hash_stored(&self, pieces: &[Piece], mut tap: BodyTap) -> Outcome {
        for piece in pieces {
            let key = &piece.key;
            let stream = match self.read_range(key, bounds(piece.span)).await {
                Ok(s) => s,
                Err(e) => return failed("read", key, e),
            };
            let mut stream = std::pin::pin!(stream);
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(chunk) => {
                        if let Err(e) = tap.feed(&chunk) {
                            return Outcome::Body {
                                tap: Box::new(tap),
                                error: Some(BodyError::Refused(e)),
                            };
                        }
                    }
                    Err(e) => return failed("read", key, e),
                }
            }
        }
        Outcome::Body {
            tap: Box::new(tap),
            error: None,
        }
    }

    /// Makes `pieces` appear at `to` as one object, unless an object is there already
    /// ([`Outcome::ConditionFailed`]; `to` is a content address): nothing, a move of a
    /// single whole piece, a server-side composition (S3, pieces large enough), or a
    /// streamed concatenation into an atomic write. Every way is create-new: S3 checks
    /// If-None-Match on CopyObject and CompleteMultipartUpload, the filesystem links.
    pub(crate) async fn concat(&self, pieces: &[Piece], to: &str) -> Outcome {
        let result = match pieces {
            [] => {
                return self
                    .write(to, Bytes::new(), &WriteCondition::CreateNew)
                    .await;
            }
            [Piece { key, span: None }] => self.move_new(key, to).await,
            many => match self.composable_sizes(many).await {
                Some((sizes, jobs)) => self
                    .compose(many, &sizes, to, jobs)
                    .await
                    .map_err(std::io::Error::other),
                None => self.concat_streamed(many, to).await,
            },
        };
        committed("commit", to, result)
    }

    /// The spans of `pieces` and the copies to run at once, when S3 can compose them
    /// itself: every piece but the last must meet its minimum part size.
    async fn composable_sizes(&self, pieces: &[Piece]) -> Option<(Vec<Span>, usize)> {
        let plan = self.copy?;
        let mut spans = Vec::with_capacity(pieces.len());
        for (i, piece) in pieces.iter().enumerate() {
            let span = match piece.span {
                Some(span) => span,
                None => Span {
                    start: 0,
                    len: self.op.stat(&piece.key).await.ok()?.content_length(),
                },
            };
            if span.len < S3_MIN_PART && i + 1 < pieces.len() {
                return None;
            }
            spans.push(span);
        }
        Some((spans, plan.jobs))
    }

    /// S3 assembles the parts itself: one multipart upload whose parts are server-side
    /// copies (UploadPartCopy) of the upload's parts. (OpenDAL's `compose` is not offered by
    /// its s3 service; a writer's `copy_from` is.)
    async fn compose(
        &self,
        pieces: &[Piece],
        spans: &[Span],
        to: &str,
        jobs: usize,
    ) -> opendal::Result<Committed> {
        let writer = self.op.writer_with(to).concurrent(jobs);
        let mut writer = writer.if_not_exists(true).await?;
        for (piece, span) in pieces.iter().zip(spans) {
            // One UploadPartCopy copies at most 5 GiB: a larger span goes in equal parts.
            let (size, copies) = (span.len, span.len.div_ceil(S3_MAX_COPY_PART).max(1));
            for copy in 0..copies {
                let start = span.start + size * copy / copies;
                let range = start..span.start + size * (copy + 1) / copies;
                if let Err(e) = writer.copy_from(&piece.key, range).await {
                    if let Err(abort) = writer.abort().await {
                        tracing::warn!(key = to, error = %abort, "aborting a composition failed");
                    }
                    return Err(e);
                }
            }
        }
        conditional(writer.close().await)
    }

    /// Moves (fs) or copies (S3) `from` to `to` unless something is at `to`.
    async fn move_new(&self, from: &str, to: &str) -> std::io::Result<Committed> {
        if let Some(target) = &self.fs {
            return target.move_new(from, to).await;
        }
        self.copy_new(from, to).await.map_err(std::io::Error::other)
    }

    async fn copy_new(&self, from: &str, to: &str) -> opendal::Result<Committed> {
        let size = self.op.stat(from).await?.content_length();
        let copy = self.op.copy_with(from, to).if_not_exists(true);
        match self.copy {
            Some(plan) if size > plan.threshold => {
                conditional(copy.chunk(plan.chunk).concurrent(plan.jobs).await)
            }
            _ => conditional(copy.await),
        }
    }

    async fn concat_streamed(&self, pieces: &[Piece], to: &str) -> std::io::Result<Committed> {
        let mut writer = self.writer(to, &WriteCondition::CreateNew).await?;
        for piece in pieces {
            let copied = self.copy_into(&mut writer, piece).await;
            if let Err(e) = copied {
                writer.abort(to).await;
                return Err(e);
            }
        }
        writer.commit().await
    }

    async fn copy_into(&self, writer: &mut ObjectWriter, piece: &Piece) -> std::io::Result<()> {
        if let (ObjectWriter::Fs(writer), Some(target)) = (&mut *writer, &self.fs) {
            return writer
                .append_file(target.path(&piece.key), piece.span)
                .await;
        }
        let stream = self
            .read_range(&piece.key, bounds(piece.span))
            .await
            .map_err(std::io::Error::other)?;
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.next().await {
            writer.write(chunk?).await?;
        }
        Ok(())
    }

    pub(crate) async fn delete(&self, key: &str) -> Outcome {
        match self.op.delete(key).await {
            Ok(()) => Outcome::Done,
            Err(e) if e.kind() == ErrorKind::NotFound => Outcome::Done,
            Err(e) => failed("delete", key, e),
        }
    }

    pub(crate) async fn delete_all(&self, prefix: &str) -> Outcome {
        if let Some(target) = &self.fs {
            return match target.delete_all(prefix).await {
                Ok(()) => Outcome::Done,
                Err(e) => failed("delete", prefix, e),
            };
        }
        match self.op.delete_with(prefix).recursive(true).await {
            Ok(()) => Outcome::Done,
            Err(e) if e.kind() == ErrorKind::NotFound => Outcome::Done,
            Err(e) => failed("delete", prefix, e),
        }
    }

    pub(crate) async fn list(&self, prefix: &str) -> Outcome {
        match self.op.list(prefix).await {
            Ok(entries) => Outcome::List(
                entries
                    .into_iter()
                    .filter(|e| e.path() != prefix)
                    .map(|e| e.name().to_owned())
                    .collect(),
            ),
            Err(e) if e.kind() == ErrorKind::NotFound => Outcome::List(Vec::new()),
            Err(e) => failed("list", prefix, e),
        }
    }

    /// Every object below `prefix`, at any depth.
    pub async fn list_objects(&self, prefix: &str) -> opendal::Result<Vec<StoredObject>> {
        let entries = match self.op.list_with(prefix).recursive(true).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .map(|e| StoredObject {
                size: e.metadata().content_length(),
                key: e.path().to_owned(),
            })
            .collect())
    }

    /// The bytes of `key` in `range` (`..` for all of them).
    async fn read_range<R: RangeBounds<u64> + Send>(
        &self,
        key: &str,
        range: R,
    ) -> opendal::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<R>> {
        // The filesystem reads ahead in chunks; object storage streams one GET per range
        // (ranged GETs per chunk cost a request each, and some servers copy the whole
        // object for every one).
        let reader = match self.fs {
            Some(_) => self
                .op
                .reader_with(key)
                .chunk(IO_CHUNK)
                .concurrent(IO_AHEAD),
            None => self.op.reader_with(key),
        };
        reader.await?.into_bytes_stream(range).await
    }

    pub async fn read_span(
        &self,
        key: &str,
        span: Span,
    ) -> std::io::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>> {
        if let Some(target) = &self.fs {
            let stream = fs_reader::read_span(target.path(key), span.start, span.len).await?;
            return Ok(Either::Left(stream));
        }
        let stream = self
            .read_range(key, span.start..span.start + span.len)
            .await
            .map_err(std::io::Error::other)?;
        Ok(Either::Right(stream.map_err(std::io::Error::other)))
    }
}
