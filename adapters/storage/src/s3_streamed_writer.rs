//! A body larger than one part, streamed to S3 as it arrives: each part's UploadPart starts
//! at the part's first byte and is fed as the body comes.
//!
//! Gathering whole parts first (`object_writer.rs`) holds every part in flight and the one
//! being filled: `(jobs + 1) x part size`. Here what has arrived but is not yet sent is
//! bounded by one part's size in all (the budget), however many parts upload at once, and the
//! client waits while it is spent. A streamed part is not retried: its bytes are gone once
//! sent. A failed part fails the write, and the client pushes again, where OpenDAL's retry
//! layer would have sent a gathered part once more.
//!
//! A part's request declares its length before its first byte. Where the body declared its
//! own, every part's length is known. Where it did not (docker's `PATCH`), the first part is
//! gathered whole (a body that ends inside it is one PutObject), and each later part is
//! streamed as a whole part while its blocks are also kept until it is whole: if the body
//! ends inside it, its request is cancelled and the kept blocks go as a shorter last part.
//! That holds at most about two parts.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use opendal::{Buffer, Operator};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{AbortHandle, Id, JoinSet};

use crate::s3_multipart::{MultipartError, MultipartUploads, Payload};

/// Bytes gathered before they go to a part's request: the body's own chunks are slices of
/// the connection's buffer, and many of them held at once fragment the allocator's arenas
/// (see `object_writer.rs`); a block this size is mapped on its own (`allocator.rs`).
const BLOCK: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamedWriteError {
    #[error(transparent)]
    Request(#[from] MultipartError),
    #[error("the single-part write failed: {0}")]
    Put(#[from] opendal::Error),
    #[error("the body is longer than the {declared} bytes it declared")]
    TooLong { declared: u64 },
    #[error("the body ended after {received} of the {declared} bytes it declared")]
    TooShort { received: u64, declared: u64 },
    #[error("S3 took no bytes of a part for {0:?}")]
    Stalled(Duration),
    #[error("a part's upload ended without an answer: {0}")]
    Lost(String),
}

/// How one streamed write is run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamPlan {
    pub(crate) part_size: u64,
    /// Parts uploading at once, at most.
    pub(crate) jobs: usize,
    /// How long the writer waits for S3 to take bytes or to answer for a part.
    pub(crate) wait: Duration,
}

pub(crate) struct StreamedWriter {
    uploads: MultipartUploads,
    /// For a body of unknown length that fits one part: one PutObject at `key`.
    op: Operator,
    key: String,
    bucket_key: String,
    /// Started at the first part's request.
    upload_id: Option<String>,
    plan: StreamPlan,
    /// The body's declared length, if it declared one.
    declared: Option<u64>,
    received: u64,
    /// Where the length is declared, the bytes given to parts so far.
    assigned: u64,
    /// The part being fed, if its bytes have not all arrived.
    feed: Option<PartFeed>,
    block: BytesMut,
    /// Where the length is unknown, the blocks of the part being filled, until it is whole.
    kept: Vec<Bytes>,
    kept_len: u64,
    /// Bytes arrived and not yet taken by a part's request.
    budget: Arc<Semaphore>,
    uploading: JoinSet<Result<(u32, String), MultipartError>>,
    /// A streamed part replaced by its kept blocks: its end is no failure.
    cancelled: Option<Id>,
    /// Uploaded parts: number and ETag.
    uploaded: Vec<(u32, String)>,
    parts_started: u32,
    /// Completed or aborted: nothing left to clean up.
    ended: bool,
}

struct PartFeed {
    number: u32,
    task: AbortHandle,
    blocks: mpsc::UnboundedSender<(Bytes, OwnedSemaphorePermit)>,
    /// Bytes of the part not yet arrived.
    left: u64,
}

impl StreamedWriter {
    /// A writer of a body of `declared` bytes, if it declared its length, to `key`.
    pub(crate) fn new(
        uploads: MultipartUploads,
        op: Operator,
        key: &str,
        declared: Option<u64>,
        plan: StreamPlan,
    ) -> Self {
        let budget = usize::try_from(plan.part_size)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        StreamedWriter {
            bucket_key: uploads.bucket_key(key),
            uploads,
            op,
            key: key.to_owned(),
            upload_id: None,
            plan,
            declared,
            received: 0,
            assigned: 0,
            feed: None,
            block: BytesMut::new(),
            kept: Vec::new(),
            kept_len: 0,
            budget: Arc::new(Semaphore::new(budget)),
            uploading: JoinSet::new(),
            cancelled: None,
            uploaded: Vec::new(),
            parts_started: 0,
            ended: false,
        }
    }

    /// Whether the first part of a body of unknown length is still being gathered.
    fn gathering(&self) -> bool {
        self.declared.is_none() && self.upload_id.is_none()
    }

    pub(crate) async fn write(&mut self, mut chunk: Bytes) -> Result<(), StreamedWriteError> {
        let len = chunk.len() as u64;
        if let Some(declared) = self.declared
            && len > declared - self.received
        {
            return Err(StreamedWriteError::TooLong { declared });
        }
        self.received += len;
        while !chunk.is_empty() {
            let left = match &self.feed {
                Some(feed) => feed.left,
                None if self.gathering() && self.kept_len < self.plan.part_size => {
                    self.plan.part_size - self.kept_len - self.block.len() as u64
                }
                None => self.start_part().await?,
            };
            if self.block.capacity() == 0 {
                self.block = BytesMut::with_capacity(BLOCK.min(as_usize(left)));
            }
            let room = (self.block.capacity() - self.block.len()).min(as_usize(left));
            let taken = chunk.split_to(room.min(chunk.len()));
            self.block.extend_from_slice(&taken);
            let left = left - taken.len() as u64;
            if self.block.len() == self.block.capacity() || left == 0 {
                self.pass_block().await?;
            }
            if let Some(feed) = &mut self.feed {
                feed.left = left;
                if left == 0 {
                    // The part is whole: dropping the sender ends its body.
                    self.feed = None;
                    self.kept.clear();
                    self.kept_len = 0;
                }
            }
        }
        Ok(())
    }

    /// Starts the next part, once fewer than `jobs` upload; its length. The first part of a
    /// body of unknown length, gathered, goes first.
    async fn start_part(&mut self) -> Result<u64, StreamedWriteError> {
        let upload_id = self.upload_id().await?;
        if !self.kept.is_empty() {
            self.upload_kept().await?;
        }
        while self.uploading.len() >= self.plan.jobs.max(1) {
            self.join_one().await?;
        }
        let len = match self.declared {
            Some(declared) => self.plan.part_size.min(declared - self.assigned),
            None => self.plan.part_size,
        };
        self.assigned += len;
        self.parts_started += 1;
        let number = self.parts_started;
        let (blocks, receiver) = mpsc::unbounded_channel();
        let body = reqwest::Body::wrap(PartBody {
            blocks: receiver,
            left: len,
        });
        let uploads = self.uploads.clone();
        let bucket_key = self.bucket_key.clone();
        let task = self.uploading.spawn(async move {
            let payload = Payload::Streamed(len, body);
            let etag = uploads
                .upload_part(&bucket_key, &upload_id, number, payload)
                .await?;
            Ok((number, etag))
        });
        self.feed = Some(PartFeed {
            number,
            task,
            blocks,
            left: len,
        });
        Ok(len)
    }

    async fn upload_id(&mut self) -> Result<String, StreamedWriteError> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let id = self.uploads.create(&self.bucket_key).await?;
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    /// Uploads the kept blocks as a part of their own (retried as a whole): the gathered
    /// first part, or the last, shorter than its streamed request declared.
    async fn upload_kept(&mut self) -> Result<(), StreamedWriteError> {
        let upload_id = self.upload_id().await?;
        let number = match self.feed.take() {
            Some(feed) => {
                feed.task.abort();
                self.cancelled = Some(feed.task.id());
                feed.number
            }
            None => {
                self.parts_started += 1;
                self.parts_started
            }
        };
        self.kept_len = 0;
        let kept = std::mem::take(&mut self.kept);
        let uploads = self.uploads.clone();
        let bucket_key = self.bucket_key.clone();
        self.uploading.spawn(async move {
            let etag = uploads
                .upload_part(&bucket_key, &upload_id, number, Payload::Whole(kept))
                .await?;
            Ok((number, etag))
        });
        Ok(())
    }

    /// Hands the gathered block on: kept, where the length is unknown, and to the part's
    /// request once the budget allows.
    async fn pass_block(&mut self) -> Result<(), StreamedWriteError> {
        let block = std::mem::take(&mut self.block).freeze();
        if self.declared.is_none() {
            self.kept_len += block.len() as u64;
            self.kept.push(block.clone());
        }
        let Some(feed) = &self.feed else {
            return Ok(());
        };
        let permits = u32::try_from(block.len()).unwrap_or(u32::MAX);
        let wait = self.plan.wait;
        // A timer only when the budget is spent: one per block would register with the
        // runtime's timer for every MiB.
        let permit = match Arc::clone(&self.budget).try_acquire_many_owned(permits) {
            Ok(permit) => permit,
            Err(_) => {
                let waited = Arc::clone(&self.budget).acquire_many_owned(permits);
                match tokio::time::timeout(wait, waited).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_closed)) => {
                        return Err(StreamedWriteError::Lost("budget closed".into()));
                    }
                    Err(_) => return Err(StreamedWriteError::Stalled(wait)),
                }
            }
        };
        if feed.blocks.send((block, permit)).is_ok() {
            return Ok(());
        }
        // The part's request ended before taking its body: its answer says why.
        Err(self.first_failure().await)
    }

    /// Waits for one uploading part.
    async fn join_one(&mut self) -> Result<(), StreamedWriteError> {
        let wait = self.plan.wait;
        let joined = match tokio::time::timeout(wait, self.uploading.join_next_with_id()).await {
            Err(_) => return Err(StreamedWriteError::Stalled(wait)),
            Ok(None) => return Ok(()),
            Ok(Some(joined)) => joined,
        };
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        if self.cancelled == Some(id) {
            return Ok(());
        }
        match joined {
            Ok((_, Ok(part))) => {
                self.uploaded.push(part);
                Ok(())
            }
            Ok((_, Err(e))) => Err(e.into()),
            Err(e) => Err(StreamedWriteError::Lost(e.to_string())),
        }
    }

    async fn first_failure(&mut self) -> StreamedWriteError {
        loop {
            match self.join_one().await {
                Err(e) => return e,
                Ok(()) if self.uploading.is_empty() => {
                    return StreamedWriteError::Lost("a part's request took no body".into());
                }
                Ok(()) => {}
            }
        }
    }

    /// Waits for every part and makes the object appear.
    pub(crate) async fn commit(mut self) -> Result<(), StreamedWriteError> {
        let result = self.finish().await;
        if result.is_err() {
            self.abort().await;
        }
        self.ended = true;
        result
    }

    async fn finish(&mut self) -> Result<(), StreamedWriteError> {
        if let Some(declared) = self.declared
            && self.received < declared
        {
            return Err(StreamedWriteError::TooShort {
                received: self.received,
                declared,
            });
        }
        if !self.block.is_empty() {
            // Only where the length is unknown: the block is kept, not streamed.
            let block = std::mem::take(&mut self.block).freeze();
            self.kept_len += block.len() as u64;
            self.kept.push(block);
        }
        if self.gathering() {
            let body = Buffer::from(std::mem::take(&mut self.kept));
            self.op.write(&self.key, body).await?;
            return Ok(());
        }
        if !self.kept.is_empty() {
            self.upload_kept().await?;
        }
        while !self.uploading.is_empty() {
            self.join_one().await?;
        }
        self.uploaded.sort_unstable_by_key(|(number, _)| *number);
        let upload_id = self.upload_id().await?;
        self.uploads
            .complete(&self.bucket_key, &upload_id, &self.uploaded)
            .await?;
        Ok(())
    }

    /// Stops the parts' requests and drops what S3 holds of them, once none is in flight
    /// (a part arriving after the abort would be kept).
    pub(crate) async fn abort(&mut self) {
        self.feed = None;
        self.uploading.shutdown().await;
        self.ended = true;
        let Some(upload_id) = &self.upload_id else {
            return;
        };
        if let Err(e) = self.uploads.abort_upload(&self.bucket_key, upload_id).await {
            tracing::warn!(key = self.bucket_key, error = %e, "aborting a streamed upload failed");
        }
    }
}

impl Drop for StreamedWriter {
    /// A write dropped midway (its client went away) leaves no parts behind: the requests
    /// stop with the `JoinSet`, and the upload is aborted in the background.
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take().filter(|_| !self.ended) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let uploads = self.uploads.clone();
            let bucket_key = self.bucket_key.clone();
            runtime.spawn(async move {
                if let Err(e) = uploads.abort_upload(&bucket_key, &upload_id).await {
                    tracing::warn!(key = bucket_key, error = %e, "aborting a dropped streamed upload failed");
                }
            });
        }
    }
}

fn as_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// One part's request body: the blocks handed over, each releasing its share of the budget
/// as the request takes it.
struct PartBody {
    blocks: mpsc::UnboundedReceiver<(Bytes, OwnedSemaphorePermit)>,
    left: u64,
}

impl http_body::Body for PartBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        match self.blocks.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some((block, _permit))) => {
                self.left = self.left.saturating_sub(block.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(block))))
            }
            // The writer stopped feeding the part before its end.
            Poll::Ready(None) => Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the part's bytes stopped coming",
            )))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use http_body::Body as _;

    use super::*;

    async fn next_frame(body: &mut PartBody) -> Option<Result<Frame<Bytes>, std::io::Error>> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
    }

    #[tokio::test]
    async fn a_part_body_gives_back_its_budget_as_each_block_is_taken() {
        let budget = Arc::new(Semaphore::new(6));
        let (blocks, receiver) = mpsc::unbounded_channel();
        let mut body = PartBody {
            blocks: receiver,
            left: 6,
        };
        assert_eq!(body.size_hint().exact(), Some(6));
        for block in ["abc", "def"] {
            let permit = Arc::clone(&budget).acquire_many_owned(3).await.unwrap();
            blocks.send((Bytes::from(block), permit)).unwrap();
        }
        assert_eq!(budget.available_permits(), 0);
        let first = next_frame(&mut body).await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "abc");
        assert_eq!(budget.available_permits(), 3);
        let second = next_frame(&mut body).await.unwrap().unwrap();
        assert_eq!(second.into_data().unwrap(), "def");
        assert!(body.is_end_stream());
        assert!(next_frame(&mut body).await.is_none());
        assert_eq!(budget.available_permits(), 6);
    }

    #[tokio::test]
    async fn a_part_body_whose_bytes_stop_coming_fails() {
        let budget = Arc::new(Semaphore::new(6));
        let (blocks, receiver) = mpsc::unbounded_channel();
        let mut body = PartBody {
            blocks: receiver,
            left: 6,
        };
        let permit = Arc::clone(&budget).acquire_many_owned(3).await.unwrap();
        blocks.send((Bytes::from("abc"), permit)).unwrap();
        drop(blocks);
        assert!(next_frame(&mut body).await.unwrap().is_ok());
        let error = next_frame(&mut body).await.unwrap().unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
