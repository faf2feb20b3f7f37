//! The body of an answer given while its operation still runs (a mirror streaming a blob as
//! it fetches it): the chunks the operation sends, the operation itself running as a task of
//! its own. The last chunk is held until the operation has ended (the blob linked, the fetch
//! lock released), so a client that has the whole blob finds it stored when it asks again.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use stowage_core::step::Response as CoreResponse;
use stowage_driver::{Chunks, Piece};

/// The end of an operation that answered early: its final response.
pub(crate) type OperationEnd = Pin<Box<dyn Future<Output = CoreResponse> + Send>>;

pub(crate) struct Streamed {
    /// `None` once the operation has ended.
    end: Option<OperationEnd>,
    chunks: Pin<Box<Chunks>>,
    /// No more chunks come: [`Piece::End`] arrived, or the channel closed without it.
    ended: bool,
    /// The body ended without [`Piece::End`]: it is cut, once the operation has ended.
    cut: bool,
    /// The latest chunk, sent when the next arrives or, the last, when the operation ends.
    held: Option<Bytes>,
}

impl Streamed {
    /// `end` is `None` when the operation ended as it answered.
    pub(crate) fn new(end: Option<OperationEnd>, chunks: Chunks) -> Self {
        Streamed {
            end,
            chunks: Box::pin(chunks),
            ended: false,
            cut: false,
            held: None,
        }
    }
}

impl Stream for Streamed {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(end) = &mut this.end
            && let Poll::Ready(response) = end.as_mut().poll(cx)
        {
            this.end = None;
            if !response.status.is_success() {
                // Its client has the answer it was given; this one only tells the log.
                tracing::warn!(
                    status = %response.status,
                    "an operation failed after it had answered early"
                );
            }
        }
        while !this.ended {
            match this.chunks.as_mut().poll_next(cx) {
                Poll::Ready(Some(Piece::Data(chunk))) => {
                    if let Some(previous) = this.held.replace(chunk) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Poll::Ready(Some(Piece::End)) => this.ended = true,
                Poll::Ready(None) => (this.ended, this.cut) = (true, true),
                Poll::Pending => return Poll::Pending,
            }
        }
        // The body ends once the operation has (its waker is registered above).
        if this.end.is_some() {
            return Poll::Pending;
        }
        if std::mem::take(&mut this.cut) {
            this.held = None;
            return Poll::Ready(Some(Err(std::io::Error::other(
                "the blob's stream was cut: it broke off or did not match its digest",
            ))));
        }
        if let Some(last) = this.held.take() {
            return Poll::Ready(Some(Ok(last)));
        }
        Poll::Ready(None)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use futures_lite::StreamExt;
    use futures_lite::future::block_on;
    use http::StatusCode;
    use stowage_core::step::Body;

    use super::*;

    /// An operation that is done once `release` is set (it is polled again by the body).
    fn operation(release: Arc<AtomicBool>) -> OperationEnd {
        Box::pin(futures_lite::future::poll_fn(move |cx| {
            if release.load(Ordering::SeqCst) {
                Poll::Ready(CoreResponse {
                    status: StatusCode::OK,
                    headers: http::HeaderMap::new(),
                    body: Body::Empty,
                })
            } else {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }))
    }

    fn data(text: &'static str) -> Piece {
        Piece::Data(Bytes::from_static(text.as_bytes()))
    }

    #[test]
    fn the_last_chunk_waits_for_the_operation_and_a_body_without_its_end_is_cut() {
        let (sender, chunks) = async_channel::unbounded();
        let release = Arc::new(AtomicBool::new(false));
        let mut body = Streamed::new(Some(operation(release.clone())), chunks);
        for piece in [data("a"), data("b"), Piece::End] {
            block_on(sender.send(piece)).unwrap();
        }
        assert_eq!(block_on(body.next()).unwrap().unwrap(), "a");
        let mut last = std::pin::pin!(body.next());
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(
            last.as_mut().poll(&mut cx).is_pending(),
            "sent before the end"
        );
        release.store(true, Ordering::SeqCst);
        assert_eq!(block_on(last).unwrap().unwrap(), "b");
        assert!(block_on(body.next()).is_none());

        // Every chunk came but not the end: the client never gets the last one.
        let (sender, chunks) = async_channel::unbounded();
        let mut body = Streamed::new(None, chunks);
        for piece in [data("a"), data("b")] {
            block_on(sender.send(piece)).unwrap();
        }
        drop(sender);
        assert_eq!(block_on(body.next()).unwrap().unwrap(), "a");
        assert!(block_on(body.next()).unwrap().is_err(), "not cut");
        assert!(block_on(body.next()).is_none());
    }
}
