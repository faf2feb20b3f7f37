//! Request bodies for the cases: chunks, then possibly a failure mid-way (a client that
//! disconnects), in the form each kind of target reads them.

use bytes::Bytes;
use stowage_core::step::BodyError;
use stowage_proofs::store::RequestBody;
use stowage_storage::BodySource;

#[derive(Debug, Clone, Default)]
pub struct TestBody {
    chunks: Vec<Bytes>,
    /// Fail after this many chunks.
    fails_after: Option<usize>,
    read: usize,
    /// The length it declares, as a `Content-Length` does.
    declared: Option<u64>,
}

impl TestBody {
    /// No body: for requests that take none.
    pub fn none() -> Self {
        TestBody::default()
    }

    pub fn chunks<I, C>(chunks: I) -> Self
    where
        I: IntoIterator<Item = C>,
        C: Into<Bytes>,
    {
        TestBody {
            chunks: chunks.into_iter().map(Into::into).collect(),
            ..TestBody::default()
        }
    }

    /// The body declaring its length, as a client sending `Content-Length` does (before
    /// [`TestBody::disconnect_after`], which keeps what it declared).
    pub fn declaring_len(mut self) -> Self {
        self.declared = Some(self.chunks.iter().map(|c| c.len() as u64).sum());
        self
    }

    /// The body as a client that disconnects after `chunks` chunks sends it.
    pub fn disconnect_after(mut self, chunks: usize) -> Self {
        self.chunks.truncate(chunks);
        self.fails_after = Some(chunks);
        self
    }

    /// The same body as the model reads it.
    pub fn for_model(self) -> RequestBody {
        let body = RequestBody::new(self.chunks);
        match self.fails_after {
            Some(chunks) => body.disconnect_after(chunks),
            None => body,
        }
    }
}

impl BodySource for TestBody {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, BodyError>> {
        let chunk = self.chunks.get(self.read).cloned();
        self.read += 1;
        match chunk {
            Some(chunk) => Some(Ok(chunk)),
            None if self.fails_after.take().is_some() => {
                Some(Err(BodyError::Client("client disconnected".to_owned())))
            }
            None => None,
        }
    }

    fn declared_len(&self) -> Option<u64> {
        self.declared
    }
}
