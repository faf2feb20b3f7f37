//! An answer given while its operation still runs: a mirror streams a cold blob to its
//! client as it fetches it (`UpstreamRequest::FetchBlob`'s `serve`). The upstream client
//! opens the answer once the upstream has sent the blob's head and feeds it through a
//! [`Tee`]; the HTTP layer answers with it and runs the rest of the operation as a task of
//! its own, so the fetch, and the lock other requests wait on, go on if the client leaves.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use async_channel::TrySendError;
use bytes::Bytes;
use futures_util::future::{Either, select};
use http::{HeaderMap, StatusCode};
use stowage_core::step::BodyError;
use stowage_storage::BodySource;

use crate::Timer;

/// Chunks waiting for a slow client before the fetch waits for it too.
const CHUNKS_IN_FLIGHT: usize = 32;

/// What an early answer's body is made of. A body that ends without [`Piece::End`] is cut.
pub enum Piece {
    Data(Bytes),
    End,
}

pub type Chunks = async_channel::Receiver<Piece>;

pub struct EarlyAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Chunks,
}

/// Where an operation's early answer goes. One answer is taken, the first.
#[derive(Clone)]
pub struct AnswerEarly {
    answers: async_channel::Sender<EarlyAnswer>,
    /// Bounds the wait for a stalled client ([`Tee::patience`]).
    timer: Arc<dyn Timer>,
}

/// A place for one early answer, and where it arrives.
pub fn answer_early(timer: Arc<dyn Timer>) -> (AnswerEarly, async_channel::Receiver<EarlyAnswer>) {
    let (answers, receiver) = async_channel::bounded(1);
    (AnswerEarly { answers, timer }, receiver)
}

impl AnswerEarly {
    /// Answers `200` with `headers` and a body `source` feeds as storage reads it, waiting
    /// up to `patience` for a client that takes nothing; `source` back when an answer was
    /// given already or nobody waits for one.
    pub fn open<S: BodySource>(
        &self,
        headers: HeaderMap,
        source: S,
        patience: Duration,
    ) -> Result<Tee<S>, S> {
        let (chunks, body) = async_channel::bounded(CHUNKS_IN_FLIGHT);
        let answer = EarlyAnswer {
            status: StatusCode::OK,
            headers,
            body,
        };
        if self.answers.try_send(answer).is_err() {
            return Err(source);
        }
        self.answers.close();
        Ok(Tee {
            source,
            chunks: Some(chunks),
            timer: self.timer.clone(),
            patience,
        })
    }
}

/// A body written to storage that streams to the client at the same time. The client's body
/// ends only with [`Tee::finish`]: one that ends otherwise is cut, and the HTTP layer holds
/// each chunk back until the next arrives, so a client never receives the whole of a body
/// storage refused.
pub struct Tee<S> {
    source: S,
    /// `None` once the client has left or was cut for stalling.
    chunks: Option<async_channel::Sender<Piece>>,
    timer: Arc<dyn Timer>,
    /// How long the fetch waits for a client that takes nothing. Then the client's stream
    /// is cut and the fetch goes on for the store and the requests waiting for it: a client
    /// that stopped reading must not hold up everyone else's pull of the blob.
    patience: Duration,
}

impl<S: BodySource> BodySource for Tee<S> {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, BodyError>> {
        let next = self.source.next_chunk().await;
        if let Some(Ok(chunk)) = &next {
            self.pass(Piece::Data(chunk.clone())).await;
        }
        next
    }

    fn declared_len(&self) -> Option<u64> {
        self.source.declared_len()
    }
}

impl<S> Tee<S> {
    /// Ends the client's body if storage accepted it; it is cut otherwise.
    pub async fn finish(mut self, stored: bool) {
        if stored {
            self.pass(Piece::End).await;
        }
    }

    /// Hands `piece` to the client, waiting up to `patience` for room; a client that has
    /// left or took nothing that long is sent no more (dropping the sender cuts its stream),
    /// and the fetch goes on for the others.
    async fn pass(&mut self, piece: Piece) {
        let Some(chunks) = &self.chunks else {
            return;
        };
        let piece = match chunks.try_send(piece) {
            Ok(()) => return,
            Err(TrySendError::Full(piece)) => piece,
            Err(TrySendError::Closed(_)) => {
                self.chunks = None;
                return;
            }
        };
        // `Some(taken)` when the client took it or left; `None` when it stalled.
        let answered = match select(pin!(chunks.send(piece)), self.timer.sleep(self.patience)).await
        {
            Either::Left((sent, _)) => Some(sent.is_ok()),
            Either::Right(_) => None,
        };
        match answered {
            Some(true) => {}
            Some(false) => self.chunks = None,
            None => {
                tracing::warn!(
                    waited = ?self.patience,
                    "a client stopped taking a blob streamed as it is fetched: \
                     its stream is cut, the fetch goes on"
                );
                self.chunks = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use futures_lite::future::block_on;

    use super::*;
    use crate::BoxFuture;

    /// Sleeps on a thread of its own: no runtime needed.
    struct ThreadSleep;

    impl Timer for ThreadSleep {
        fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
            let (done, woken) = async_channel::bounded(1);
            std::thread::spawn(move || {
                std::thread::sleep(duration);
                let _ = done.send_blocking(());
            });
            Box::pin(async move {
                let _ = woken.recv().await;
            })
        }
    }

    struct Chunks(VecDeque<Bytes>);

    impl BodySource for Chunks {
        async fn next_chunk(&mut self) -> Option<Result<Bytes, BodyError>> {
            self.0.pop_front().map(Ok)
        }
    }

    #[test]
    fn a_client_that_takes_nothing_is_cut_and_the_fetch_goes_on() {
        let (early, answered) = answer_early(Arc::new(ThreadSleep));
        let chunks = (0..100).map(|i| Bytes::from(vec![i as u8; 16])).collect();
        let patience = Duration::from_millis(50);
        let Ok(mut tee) = early.open(HeaderMap::new(), Chunks(chunks), patience) else {
            panic!("the answer was not opened");
        };
        // Storage reads every chunk although the client never takes one.
        let mut stored = 0;
        block_on(async {
            while let Some(chunk) = tee.next_chunk().await {
                stored += chunk.map_or(0, |c| c.len());
            }
            tee.finish(true).await;
        });
        assert_eq!(stored, 100 * 16);
        // The client finds what fitted before it stalled, and then no end: its stream is cut.
        let body = answered.try_recv().expect("an answer").body;
        let mut received = 0;
        while let Ok(piece) = body.try_recv() {
            match piece {
                Piece::Data(_) => received += 1,
                Piece::End => panic!("a stalled client's stream ended as if whole"),
            }
        }
        assert_eq!(received, CHUNKS_IN_FLIGHT);
        assert!(body.is_closed());
    }
}
