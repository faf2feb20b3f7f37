//! One store on one OpenDAL operator.

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use opendal::{ErrorKind, Operator};
use stowage_core::range::Span;
use stowage_core::step::{BodyError, BodyTap, IoError, Outcome};

use crate::StorageError;
use crate::body::BodySource;
use crate::settings::StoreSettings;
use crate::{fs, s3};

/// Request bodies are gathered into writes of this size (the fs service issues one
/// blocking call per write), and reads are issued in ranges of this size.
const IO_CHUNK: usize = 4 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct Backend {
    op: Operator,
    /// The fs root when every commit must also fsync its folder (`sync_to_disk`).
    sync_root: Option<String>,
    /// Size of each write (fs) or multipart upload part (S3).
    write_chunk: usize,
    /// Parts uploaded at once.
    write_concurrency: usize,
    /// How objects are copied server-side; `None` on the filesystem, which renames.
    copy: Option<CopyPlan>,
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
                let sync_root = fs_settings
                    .sync_to_disk
                    .then(|| fs_settings.root_dir.clone());
                Ok(Backend {
                    op,
                    sync_root,
                    write_chunk: IO_CHUNK,
                    write_concurrency: 1,
                    copy: None,
                })
            }
            StoreSettings::S3(s3_settings) => {
                let op = s3::operator(s3_settings).map_err(|source| StorageError::Open {
                    location: format!("s3://{}/{}", s3_settings.bucket, s3_settings.key_prefix),
                    source,
                })?;
                let jobs = s3_settings.multipart_copy_jobs.max(1);
                Ok(Backend {
                    op,
                    sync_root: None,
                    write_chunk: s3_settings.multipart_part_size.as_u64() as usize,
                    write_concurrency: jobs,
                    copy: Some(CopyPlan {
                        threshold: s3_settings.multipart_copy_threshold.as_u64(),
                        chunk: s3_settings.multipart_copy_chunk_size.as_u64() as usize,
                        jobs,
                    }),
                })
            }
        }
    }

    /// After a commit: fsync the folder, when configured.
    async fn committed(&self, key: &str) -> Outcome {
        if let Some(root) = &self.sync_root
            && let Err(e) = fs::sync_parent(root, key).await
        {
            return failed("sync", key, e);
        }
        Outcome::Done
    }

    pub(crate) async fn stat(&self, key: &str) -> Outcome {
        match self.op.stat(key).await {
            Ok(meta) => Outcome::Stat(Some(meta.content_length())),
            Err(e) if e.kind() == ErrorKind::NotFound => Outcome::Stat(None),
            Err(e) => failed("stat", key, e),
        }
    }

    pub(crate) async fn read(&self, key: &str) -> Outcome {
        match self.op.read(key).await {
            Ok(buffer) => Outcome::Read(Some(buffer.to_bytes())),
            Err(e) if e.kind() == ErrorKind::NotFound => Outcome::Read(None),
            Err(e) => failed("read", key, e),
        }
    }

    pub(crate) async fn write(&self, key: &str, data: Bytes) -> Outcome {
        match self.op.write(key, data).await {
            Ok(_) => self.committed(key).await,
            Err(e) => failed("write", key, e),
        }
    }

    pub(crate) async fn write_body(
        &self,
        key: &str,
        mut tap: BodyTap,
        body: &mut impl BodySource,
    ) -> Outcome {
        let writer = self
            .op
            .writer_with(key)
            .chunk(self.write_chunk)
            .concurrent(self.write_concurrency);
        let mut writer = match writer.await {
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
                if let Err(e) = writer.close().await {
                    error = Some(BodyError::Storage(e.to_string()));
                } else if let Outcome::Failed(e) = self.committed(key).await {
                    error = Some(BodyError::Storage(e.message));
                }
            }
            Some(_) => {
                if let Err(e) = writer.abort().await {
                    tracing::warn!(key, error = %e, "aborting a refused write failed");
                }
            }
        }
        Outcome::Body {
            tap: Box::new(tap),
            error,
        }
    }

    pub(crate) async fn hash_stored(&self, keys: &[String], mut tap: BodyTap) -> Outcome {
        for key in keys {
            let stream = match self.read_all(key).await {
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
            [] => self.op.write(to, Bytes::new()).await.map(|_| ()),
            [single] => self.move_object(single, to).await,
            many if self.composable(many).await => self
                .op
                .compose(many.iter().map(String::as_str), to)
                .await
                .map(|_| ()),
            many => self.concat_streamed(many, to).await,
        };
        match result {
            Ok(()) => self.committed(to).await,
            Err(e) => failed("commit", to, e),
        }
    }

    /// Whether S3 can compose `parts` itself: every part but the last must meet its
    /// minimum part size.
    async fn composable(&self, parts: &[String]) -> bool {
        if self.copy.is_none() {
            return false;
        }
        for part in &parts[..parts.len() - 1] {
            match self.op.stat(part).await {
                Ok(meta) if meta.content_length() >= S3_MIN_PART => {}
                _ => return false,
            }
        }
        true
    }

    async fn move_object(&self, from: &str, to: &str) -> opendal::Result<()> {
        let Some(plan) = self.copy else {
            return self.op.rename(from, to).await;
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

    async fn concat_streamed(&self, parts: &[String], to: &str) -> opendal::Result<()> {
        let mut writer = self.op.writer_with(to).chunk(IO_CHUNK).await?;
        for part in parts {
            let mut stream = std::pin::pin!(self.read_all(part).await?);
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(chunk) => writer.write(chunk).await?,
                    Err(e) => {
                        writer.abort().await?;
                        return Err(opendal::Error::new(ErrorKind::Unexpected, e.to_string()));
                    }
                }
            }
        }
        writer.close().await.map(|_| ())
    }

    pub(crate) async fn delete(&self, key: &str) -> Outcome {
        match self.op.delete(key).await {
            Ok(()) => Outcome::Done,
            Err(e) if e.kind() == ErrorKind::NotFound => Outcome::Done,
            Err(e) => failed("delete", key, e),
        }
    }

    pub(crate) async fn delete_all(&self, prefix: &str) -> Outcome {
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

    async fn read_all(
        &self,
        key: &str,
    ) -> opendal::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>> {
        let reader = self.op.reader_with(key).chunk(IO_CHUNK).await?;
        reader.into_bytes_stream(..).await
    }

    pub(crate) async fn read_span(
        &self,
        key: &str,
        span: Span,
    ) -> opendal::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>> {
        let reader = self.op.reader_with(key).chunk(IO_CHUNK).await?;
        let stream = reader
            .into_bytes_stream(span.start..span.start + span.len)
            .await?;
        Ok(stream.map_err(std::io::Error::other))
    }
}
