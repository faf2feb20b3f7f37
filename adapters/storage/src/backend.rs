//! One store on one OpenDAL operator.

use std::ops::RangeBounds;

use bytes::Bytes;
use futures_util::future::Either;
use futures_util::{Stream, StreamExt, TryStreamExt};
use opendal::{ErrorKind, Operator};
use stowage_core::range::Span;
use stowage_core::step::{BodyError, BodyTap, IoError, Outcome};

use crate::StorageError;
use crate::body::BodySource;
use crate::object_writer::ObjectWriter;
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

    pub(crate) fn multipart_uploads(&self) -> Option<&MultipartUploads> {
        self.multipart.as_ref()
    }

    /// After a rename into place: fsync the folder, when configured.
    async fn renamed(&self, key: &str) -> opendal::Result<()> {
        match &self.fs {
            Some(target) if target.sync => target
                .sync_parent(key)
                .await
                .map_err(|e| opendal::Error::new(ErrorKind::Unexpected, e.to_string())),
            _ => Ok(()),
        }
    }

    /// A writer whose object appears only when it commits.
    async fn writer(&self, key: &str) -> std::io::Result<ObjectWriter> {
        match &self.fs {
            Some(target) => Ok(ObjectWriter::Fs(target.writer(key))),
            None => self
                .op
                .writer_with(key)
                .chunk(self.write_chunk)
                .concurrent(self.write_concurrency)
                .await
                .map(ObjectWriter::OpenDal)
                .map_err(std::io::Error::other),
        }
    }

    pub async fn stat(&self, key: &str) -> Outcome {
        match self.op.stat(key).await {
            Ok(meta) => Outcome::Stat(Some(meta.content_length())),
            Err(e) if e.kind() == ErrorKind::NotFound => Outcome::Stat(None),
            Err(e) => failed("stat", key, e),
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

    pub async fn write(&self, key: &str, data: Bytes) -> Outcome {
        let written = match self.writer(key).await {
            Ok(mut writer) => match writer.write(data).await {
                Ok(()) => writer.commit().await,
                Err(e) => {
                    writer.abort(key).await;
                    Err(e)
                }
            },
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => Outcome::Done,
            Err(e) => failed("write", key, e),
        }
    }

    pub async fn write_body(
        &self,
        key: &str,
        mut tap: BodyTap,
        body: &mut impl BodySource,
    ) -> Outcome {
        let mut writer = match self.writer(key).await {
            Ok(w) => w,
            Err(e) => return failed("open writer", key, e),
        };
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

    pub(crate) async fn hash_stored(&self, keys: &[String], mut tap: BodyTap) -> Outcome {
        for key in keys {
            let stream = match self.read_range(key, ..).await {
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

    /// Makes `parts` appear at `to` as one object: nothing, a move of the single part, a
    /// server-side composition (S3, parts large enough), or a streamed concatenation into
    /// an atomic write.
    pub(crate) async fn concat(&self, parts: &[String], to: &str) -> Outcome {
        let result = match parts {
            [] => return self.write(to, Bytes::new()).await,
            [single] => self
                .move_object(single, to)
                .await
                .map_err(std::io::Error::other),
            many => match self.composable_sizes(many).await {
                Some((sizes, jobs)) => self
                    .compose(many, &sizes, to, jobs)
                    .await
                    .map_err(std::io::Error::other),
                None => self.concat_streamed(many, to).await,
            },
        };
        match result {
            Ok(()) => Outcome::Done,
            Err(e) => failed("commit", to, e),
        }
    }

    /// The sizes of `parts` and the copies to run at once, when S3 can compose them
    /// itself: every part but the last must meet its minimum part size.
    async fn composable_sizes(&self, parts: &[String]) -> Option<(Vec<u64>, usize)> {
        let plan = self.copy?;
        let mut sizes = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let size = self.op.stat(part).await.ok()?.content_length();
            if size < S3_MIN_PART && i + 1 < parts.len() {
                return None;
            }
            sizes.push(size);
        }
        Some((sizes, plan.jobs))
    }

    /// S3 assembles the parts itself: one multipart upload whose parts are server-side
    /// copies (UploadPartCopy) of the upload's parts. (OpenDAL's `compose` is not offered by
    /// its s3 service; a writer's `copy_from` is.)
    async fn compose(
        &self,
        parts: &[String],
        sizes: &[u64],
        to: &str,
        jobs: usize,
    ) -> opendal::Result<()> {
        let mut writer = self.op.writer_with(to).concurrent(jobs).await?;
        for (part, &size) in parts.iter().zip(sizes) {
            // One UploadPartCopy copies at most 5 GiB: a larger part goes in equal pieces.
            let pieces = size.div_ceil(S3_MAX_COPY_PART).max(1);
            for piece in 0..pieces {
                let range = size * piece / pieces..size * (piece + 1) / pieces;
                if let Err(e) = writer.copy_from(part, range).await {
                    if let Err(abort) = writer.abort().await {
                        tracing::warn!(key = to, error = %abort, "aborting a composition failed");
                    }
                    return Err(e);
                }
            }
        }
        writer.close().await.map(|_| ())
    }

    async fn move_object(&self, from: &str, to: &str) -> opendal::Result<()> {
        let Some(plan) = self.copy else {
            self.op.rename(from, to).await?;
            return self.renamed(to).await;
        };
        let size = self.op.stat(from).await?.content_length();
        let copy = self.op.copy_with(from, to);
        if size > plan.threshold {
            copy.chunk(plan.chunk).concurrent(plan.jobs).await?;
        } else {
            copy.await?;
        }
        Ok(())
    }

    async fn concat_streamed(&self, parts: &[String], to: &str) -> std::io::Result<()> {
        let mut writer = self.writer(to).await?;
        for part in parts {
            let copied = self.copy_into(&mut writer, part).await;
            if let Err(e) = copied {
                writer.abort(to).await;
                return Err(e);
            }
        }
        writer.commit().await
    }

    async fn copy_into(&self, writer: &mut ObjectWriter, part: &str) -> std::io::Result<()> {
        if let (ObjectWriter::Fs(writer), Some(target)) = (&mut *writer, &self.fs) {
            return writer.append_file(target.path(part)).await;
        }
        let stream = self
            .read_range(part, ..)
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
