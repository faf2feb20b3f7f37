//! The S3 store: objects through OpenDAL's s3 service (with the retry and timeout layers of
//! `s3.rs`), server-side copies and compositions, and the multipart uploads housekeeping
//! aborts (`s3_multipart.rs`). Commits carry the write conditions the store enforces
//! (`s3_conditions.rs`).

use std::ops::Bound::{self, Excluded, Included, Unbounded};
use std::ops::RangeBounds;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use opendal::{ErrorKind, Operator};
use stowage_core::range::Span;
use stowage_core::step::{ObjectInfo, Outcome, Piece, Version, Versioned, WriteCondition};
use stowage_core::time::Millis;

use crate::StoreOpenError;
use crate::causes::WithCauses;
use crate::committed::Committed;
use crate::object_writer::{ObjectWriter, PartWriter};
use crate::s3;
use crate::s3_conditions::{Condition, Conditions, maybe_rejected_io, scratch_folder};
use crate::s3_multipart::MultipartUploads;
use crate::s3_streamed_writer::{StreamPlan, StreamedWriter};
use crate::settings::S3Settings;
use crate::shared::{StoredObject, committed, failed, write_whole};

#[derive(Clone, Debug)]
pub struct S3Store {
    op: Operator,
    /// Size of each multipart upload part.
    write_chunk: usize,
    /// Parts uploaded at once ([`upload_concurrency`]).
    write_concurrency: usize,
    copy: CopyPlan,
    /// Incomplete multipart uploads, for housekeeping.
    multipart: MultipartUploads,
    /// The write conditions this store is sent, shared by the clones of this store.
    conditions: Arc<Conditions>,
}

/// Server-side copies: whole below `threshold`, else in `chunk` pieces, `jobs` at a time.
#[derive(Clone, Copy, Debug)]
struct CopyPlan {
    threshold: u64,
    chunk: usize,
    jobs: usize,
}

/// Parts OpenDAL uploads at once for a body streamed to S3, so that at most `jobs` parts are
/// held besides the one being filled (`object_writer.rs`): OpenDAL keeps one part back
/// until the next arrives (the last one may finish a small object in one PutObject), so
/// `jobs - 1` upload while it waits. With one job there is no concurrency to give up.
fn upload_concurrency(jobs: usize) -> usize {
    jobs.saturating_sub(1).max(1)
}

/// S3's smallest part for a multipart upload or copy (all but the last part).
const S3_MIN_PART: u64 = 5 * 1024 * 1024;

/// S3's largest part copy.
const S3_MAX_COPY_PART: u64 = 5 * 1024 * 1024 * 1024;

/// An OpenDAL write or copy whose condition may not hold.
fn conditional<T>(result: opendal::Result<T>) -> opendal::Result<Committed> {
    match result {
        Ok(_) => Ok(Committed::Written),
        Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(Committed::ConditionFailed),
        Err(e) => Err(e),
    }
}

/// Whether S3's answer to a write says it will refuse every write: no such bucket, or
/// credentials that may not write there. Not a 5xx, a timeout or a refused connection.
fn refuses_writes(error: &opendal::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ConfigInvalid | ErrorKind::PermissionDenied | ErrorKind::NotFound
    )
}

/// The byte range of a piece of an object, for a ranged read.
fn bounds(span: Option<Span>) -> (Bound<u64>, Bound<u64>) {
    match span {
        Some(span) => (Included(span.start), Excluded(span.start + span.len)),
        None => (Unbounded, Unbounded),
    }
}

impl S3Store {
    pub(crate) fn open(settings: &S3Settings) -> Result<Self, StoreOpenError> {
        let location = format!("s3://{}/{}", settings.bucket, settings.key_prefix);
        let key = settings
            .access_key(|name| std::env::var(name).ok())
            .ok_or_else(|| StoreOpenError::NoAccessKey {
                location: location.clone(),
            })?;
        let op = s3::operator(settings, &key).map_err(|source| StoreOpenError::Open {
            location: location.clone(),
            source,
        })?;
        let multipart = MultipartUploads::new(settings, &key)
            .map_err(|source| StoreOpenError::Multipart { location, source })?;
        let jobs = settings.multipart_copy_jobs.max(1);
        Ok(S3Store {
            op,
            write_chunk: settings.multipart_part_size.as_u64() as usize,
            write_concurrency: upload_concurrency(jobs),
            copy: CopyPlan {
                threshold: settings.multipart_copy_threshold.as_u64(),
                chunk: settings.multipart_copy_chunk_size.as_u64() as usize,
                jobs,
            },
            multipart,
            conditions: Arc::new(Conditions::new(settings.conditional_writes)),
        })
    }

    pub(crate) fn multipart_uploads(&self) -> &MultipartUploads {
        &self.multipart
    }

    /// Writes and deletes a scratch object before serving. S3 refusing the write (a missing
    /// bucket, credentials that may not put objects) stops startup with its answer, where a
    /// server would otherwise start, pass its readiness probe and fail every push; S3 failing
    /// it otherwise (down, or 5xx after the retries) only warns, as the store may come back
    /// and `/readyz` reports it meanwhile. Whether the write went through.
    pub(crate) async fn check_writable(&self) -> Result<bool, StoreOpenError> {
        let location = self.multipart.location();
        let key = format!("{}/writable", scratch_folder());
        match self
            .op
            .write(&key, Bytes::from_static(b"stowage startup check"))
            .await
        {
            Ok(_) => {
                if let Err(e) = self.op.delete(&key).await {
                    tracing::warn!(key, error = %e, "could not delete the startup check's scratch object");
                }
                Ok(true)
            }
            Err(source) if refuses_writes(&source) => {
                Err(StoreOpenError::S3NotWritable { location, source })
            }
            Err(e) => {
                tracing::warn!(
                    location,
                    error = %WithCauses(&e),
                    "the S3 store failed the startup check's write: serving anyway, as it may \
                     come back; /readyz answers 503 while the store does not answer"
                );
                Ok(false)
            }
        }
    }

    /// Finds which write conditions this store enforces (`s3_conditions.rs`).
    pub(crate) async fn probe_conditions(&self) {
        self.conditions
            .probe(&self.op, &self.multipart.location())
            .await;
    }

    /// Whether `other` is this same store (one probe serves both).
    pub(crate) fn shares_conditions(&self, other: &S3Store) -> bool {
        Arc::ptr_eq(&self.conditions, &other.conditions)
    }

    /// The condition S3 is sent for `condition`, if any: one the store does not enforce is
    /// left out, and the lock alone guards the write, as on the filesystem for
    /// [`WriteCondition::IfVersion`].
    fn sent(&self, condition: &WriteCondition) -> Option<Condition> {
        let sent = match condition {
            WriteCondition::Overwrite => None,
            WriteCondition::CreateNew => Some(Condition::CreateNew),
            WriteCondition::IfVersion(_) => Some(Condition::IfMatch),
        };
        sent.filter(|&condition| self.conditions.sends(condition))
    }

    /// After a conditional request failed: whether it may have failed for its condition
    /// (S3 answered 400 or 501), so it is worth one attempt without it.
    fn worth_unconditioned_retry(
        &self,
        condition: Option<Condition>,
        result: &std::io::Result<Committed>,
        key: &str,
    ) -> bool {
        match (condition, result) {
            (Some(condition), Err(e)) if maybe_rejected_io(e) => {
                tracing::warn!(key, ?condition, error = %e, "S3 refused a conditional write: retrying once without its condition");
                true
            }
            _ => false,
        }
    }

    /// After the retry of [`S3Store::worth_unconditioned_retry`]: if it went through, the
    /// store rejects that condition, and it is sent no more.
    fn learn_from_retry(
        &self,
        condition: Option<Condition>,
        retried: &std::io::Result<Committed>,
        first_error: &std::io::Result<Committed>,
    ) {
        if let (Some(condition), Ok(_), Err(e)) = (condition, retried, first_error) {
            self.conditions.rejected_at_run_time(condition, e);
        }
    }

    /// Writes `data` at `key` if `condition` holds, where the store checks it
    /// ([`Outcome::ConditionFailed`] if not); once more without the condition if S3
    /// refused the request for it.
    pub(crate) async fn write(
        &self,
        key: &str,
        data: Bytes,
        condition: &WriteCondition,
    ) -> Outcome {
        let sent = self.sent(condition);
        let mut written = write_whole(self.writer(key, condition).await, key, data.clone()).await;
        if self.worth_unconditioned_retry(sent, &written, key) {
            let unconditioned = self.writer(key, &WriteCondition::Overwrite).await;
            let retried = write_whole(unconditioned, key, data).await;
            self.learn_from_retry(sent, &retried, &written);
            written = retried;
        }
        committed("write", key, written)
    }

    /// A writer whose object appears only when it commits, and only if `condition` holds
    /// where the store enforces it: the condition goes with the PutObject (If-None-Match: *,
    /// If-Match: the ETag), or with CompleteMultipartUpload for a large object.
    pub(crate) async fn writer(
        &self,
        key: &str,
        condition: &WriteCondition,
    ) -> std::io::Result<ObjectWriter> {
        // No `chunk`: the parts come gathered (`PartWriter`), and with an exact chunk size
        // OpenDAL would hold each whole part back once more before handing it on.
        let writer = self.op.writer_with(key).concurrent(self.write_concurrency);
        let condition = match self.sent(condition) {
            Some(_) => condition,
            None => &WriteCondition::Overwrite,
        };
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

    /// A writer for a body of `declared_len` bytes, if it declared its length, which
    /// replaces what is at `key`: one that fits a part is written as [`S3Store::writer`]
    /// writes; a larger one, or one of unknown length, streams part by part as it arrives.
    pub(crate) async fn body_writer(
        &self,
        key: &str,
        declared_len: Option<u64>,
    ) -> std::io::Result<ObjectWriter> {
        if declared_len.is_some_and(|len| len <= self.write_chunk as u64) {
            return self.writer(key, &WriteCondition::Overwrite).await;
        }
        let plan = StreamPlan {
            part_size: self.write_chunk as u64,
            jobs: self.copy.jobs,
            wait: self.multipart.attempt_timeout(),
        };
        let multipart = self.multipart.clone();
        let writer = StreamedWriter::new(multipart, self.op.clone(), key, declared_len, plan);
        Ok(ObjectWriter::S3Streamed(Box::new(writer)))
    }

    pub(crate) async fn stat(&self, key: &str) -> Outcome {
        match self.op.stat(key).await {
            Ok(meta) => Outcome::Stat(Some(meta.content_length())),
            Err(e) if e.kind() == ErrorKind::NotFound => Outcome::Stat(None),
            Err(e) => failed("stat", key, e),
        }
    }

    pub(crate) async fn inspect(&self, key: &str) -> Outcome {
        match self.op.stat(key).await {
            Ok(meta) => {
                // A store that reports no time makes the object look new: the collector
                // then spares it rather than guess its age.
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

    pub(crate) async fn read(&self, key: &str) -> Outcome {
        match self.op.read(key).await {
            Ok(buffer) => Outcome::Read(Some(buffer.to_bytes())),
            Err(e) if e.kind() == ErrorKind::NotFound => Outcome::Read(None),
            Err(e) => failed("read", key, e),
        }
    }

    /// A small object's content with its ETag, from the same GET (so it is the version of
    /// these bytes).
    pub(crate) async fn read_versioned(&self, key: &str) -> Outcome {
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

    /// Makes `pieces` (at least one) appear at `to` as one object, unless an object is there
    /// already: a copy of a single whole piece, a server-side composition (pieces large
    /// enough), or a streamed concatenation into a write. Every way is create-new where the
    /// store checks it: If-None-Match on CompleteMultipartUpload and PutObject and, where the
    /// probe found it enforced, on CopyObject. Where it is not, the object is written again
    /// with the same bytes (its key is their digest).
    pub(crate) async fn concat(&self, pieces: &[Piece], to: &str) -> std::io::Result<Committed> {
        let condition = match pieces {
            [Piece { span: None, .. }] => Condition::CopyCreateNew,
            _ => Condition::CreateNew,
        };
        let sent = self.conditions.sends(condition).then_some(condition);
        let result = self.concat_once(pieces, to, sent.is_some()).await;
        if !self.worth_unconditioned_retry(sent, &result, to) {
            return result;
        }
        let retried = self.concat_once(pieces, to, false).await;
        self.learn_from_retry(sent, &retried, &result);
        retried
    }

    /// One attempt of [`S3Store::concat`]; `create_new` says whether S3 is sent the
    /// condition.
    async fn concat_once(
        &self,
        pieces: &[Piece],
        to: &str,
        create_new: bool,
    ) -> std::io::Result<Committed> {
        if let [Piece { key, span: None }] = pieces {
            return self
                .copy_new(key, to, create_new)
                .await
                .map_err(std::io::Error::other);
        }
        match self.composable_sizes(pieces).await {
            Some(sizes) => self
                .compose(pieces, &sizes, to, create_new)
                .await
                .map_err(std::io::Error::other),
            None => self.concat_streamed(pieces, to, create_new).await,
        }
    }

    /// The spans of `pieces` when S3 can compose them itself: every piece but the last must
    /// meet its minimum part size.
    async fn composable_sizes(&self, pieces: &[Piece]) -> Option<Vec<Span>> {
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
        Some(spans)
    }

    /// S3 assembles the parts itself: one multipart upload whose parts are server-side
    /// copies (UploadPartCopy) of the upload's parts. (OpenDAL's `compose` is not offered by
    /// its s3 service; a writer's `copy_from` is.)
    async fn compose(
        &self,
        pieces: &[Piece],
        spans: &[Span],
        to: &str,
        create_new: bool,
    ) -> opendal::Result<Committed> {
        let writer = self.op.writer_with(to).concurrent(self.copy.jobs);
        let mut writer = writer.if_not_exists(create_new).await?;
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

    /// Copies `from` to `to`, unless something is at `to` when `create_new`.
    async fn copy_new(&self, from: &str, to: &str, create_new: bool) -> opendal::Result<Committed> {
        let size = self.op.stat(from).await?.content_length();
        let copy = self.op.copy_with(from, to).if_not_exists(create_new);
        if size > self.copy.threshold {
            conditional(copy.chunk(self.copy.chunk).concurrent(self.copy.jobs).await)
        } else {
            conditional(copy.await)
        }
    }

    async fn concat_streamed(
        &self,
        pieces: &[Piece],
        to: &str,
        create_new: bool,
    ) -> std::io::Result<Committed> {
        let condition = match create_new {
            true => WriteCondition::CreateNew,
            false => WriteCondition::Overwrite,
        };
        let mut writer = self.writer(to, &condition).await?;
        for piece in pieces {
            if let Err(e) = self.copy_into(&mut writer, piece).await {
                writer.abort(to).await;
                return Err(e);
            }
        }
        writer.commit().await
    }

    async fn copy_into(&self, writer: &mut ObjectWriter, piece: &Piece) -> std::io::Result<()> {
        let stream = self.read_piece(piece).await?;
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.try_next().await? {
            writer.write(chunk).await?;
        }
        Ok(())
    }

    pub(crate) async fn delete(&self, key: &str) -> Outcome {
        match self.op.delete(key).await {
            Ok(()) => Outcome::Ok,
            Err(e) if e.kind() == ErrorKind::NotFound => Outcome::Ok,
            Err(e) => failed("delete", key, e),
        }
    }

    pub(crate) async fn delete_all(&self, prefix: &str) -> Outcome {
        match self.op.delete_with(prefix).recursive(true).await {
            Ok(()) => Outcome::Ok,
            Err(e) if e.kind() == ErrorKind::NotFound => Outcome::Ok,
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
    pub(crate) async fn list_objects(&self, prefix: &str) -> opendal::Result<Vec<StoredObject>> {
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

    /// The bytes of `key` in `range` (`..` for all of them), in one GET: ranged GETs per
    /// chunk cost a request each, and some servers copy the whole object for every one.
    /// The GET is sent before this returns, so a missing object fails here
    /// (`ErrorKind::NotFound`) rather than in the middle of an answer's body.
    async fn read_range<R: RangeBounds<u64> + Send>(
        &self,
        key: &str,
        range: R,
    ) -> std::io::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<R>> {
        let reader = self.op.reader_with(key).await?;
        let mut stream = reader.into_bytes_stream(range).await?;
        match stream.metadata().await {
            Ok(_) => Ok(stream),
            // Sent, with no metadata in its answer: nothing to look at.
            Err(e) if e.kind() == ErrorKind::Unsupported => Ok(stream),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn read_piece(
        &self,
        piece: &Piece,
    ) -> std::io::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>> {
        self.read_range(&piece.key, bounds(piece.span)).await
    }

    pub(crate) async fn read_span(
        &self,
        key: &str,
        span: Span,
    ) -> std::io::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>> {
        self.read_range(key, span.start..span.start + span.len)
            .await
    }
}
