//! An answer given while its operation still runs: a mirror streams a cold blob to its
//! client as it fetches it (`UpstreamRequest::FetchBlob`'s `serve`). The upstream client
//! opens the answer once the upstream has sent the blob's head and feeds it through a
//! [`Tee`]; the HTTP layer answers with it and keeps driving the operation until it ends.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use stowage_core::step::BodyError;
use stowage_storage::BodySource;

/// Chunks waiting for a slow client before the fetch waits for it too. The fetch runs at
/// its client's pace: it is driven as the client's body is sent (see the HTTP layer).
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
pub struct AnswerEarly(async_channel::Sender<EarlyAnswer>);

/// A place for one early answer, and where it arrives.
pub fn answer_early() -> (AnswerEarly, async_channel::Receiver<EarlyAnswer>) {
    let (answers, receiver) = async_channel::bounded(1);
    (AnswerEarly(answers), receiver)
}

impl AnswerEarly {
    /// Answers `200` with `headers` and a body `source` feeds as storage reads it; `source`
    /// back when an answer was given already or nobody waits for one.
    pub fn open<S: BodySource>(&self, headers: HeaderMap, source: S) -> Result<Tee<S>, S> {
        let (chunks, body) = async_channel::bounded(CHUNKS_IN_FLIGHT);
        let answer = EarlyAnswer {
            status: StatusCode::OK,
            headers,
            body,
        };
        if self.0.try_send(answer).is_err() {
            return Err(source);
        }
        self.0.close();
        Ok(Tee {
            source,
            chunks: Some(chunks),
        })
    }
}

/// A body written to storage that streams to the client at the same time. The client's body
/// ends only with [`Tee::finish`]: one that ends otherwise is cut, and the HTTP layer holds
/// each chunk back until the next arrives, so a client never receives the whole of a body
/// storage refused.
pub struct Tee<S> {
    source: S,
    /// `None` once the client has left.
    chunks: Option<async_channel::Sender<Piece>>,
}

impl<S: BodySource> BodySource for Tee<S> {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, BodyError>> {
        let next = self.source.next_chunk().await;
        if let Some(Ok(chunk)) = &next {
            self.pass(Piece::Data(chunk.clone())).await;
        }
        next
    }
}

impl<S> Tee<S> {
    /// Ends the client's body if storage accepted it; it is cut otherwise.
    pub async fn finish(mut self, stored: bool) {
        if stored {
            self.pass(Piece::End).await;
        }
    }

    /// Hands `piece` to the client; one that has left is not sent more, and the fetch goes
    /// on for the others.
    async fn pass(&mut self, piece: Piece) {
        if let Some(chunks) = &self.chunks
            && chunks.send(piece).await.is_err()
        {
            self.chunks = None;
        }
    }
}
