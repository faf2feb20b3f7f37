//! Requests as a client builds them, and replies as a client reads them.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use stowage_core::RequestHead;
use stowage_core::range::Span;

use crate::store::RequestBody;

#[derive(Debug, Clone)]
pub struct Request {
    pub head: RequestHead,
    pub body: RequestBody,
}

impl Request {
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Request {
            head: RequestHead {
                method,
                path: path.into(),
                query: None,
                headers: HeaderMap::new(),
            },
            body: RequestBody::default(),
        }
    }

    pub fn get(path: impl Into<String>) -> Self {
        Request::new(Method::GET, path)
    }

    pub fn query(mut self, query: impl Into<String>) -> Self {
        self.head.query = Some(query.into());
        self
    }

    /// Adds a header; a value that is not valid header text is a bug in the caller.
    pub fn header(mut self, name: &'static str, value: impl AsRef<str>) -> Self {
        let value = HeaderValue::from_str(value.as_ref()).expect("header value is valid text");
        self.head
            .headers
            .insert(HeaderName::from_static(name), value);
        self
    }

    /// A body sent as `chunks`, announced with its `Content-Length`.
    pub fn body(self, chunks: Vec<Bytes>) -> Self {
        let len: usize = chunks.iter().map(Bytes::len).sum();
        let mut request = self.header("content-length", len.to_string());
        request.body = RequestBody::new(chunks);
        request
    }
}

/// Splits `data` into chunks of `size` bytes (at least one byte each), as a client's writes
/// might arrive.
pub fn chunks_of(data: &[u8], size: usize) -> Vec<Bytes> {
    data.chunks(size.max(1))
        .map(Bytes::copy_from_slice)
        .collect()
}

/// A body the client did not receive whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokenBody {
    /// A stored body that could not be served: the object is gone or shorter than the span.
    #[error("response body {key} {span:?} is not in the store")]
    NotStored { key: String, span: Span },
    /// A blob streamed as it was fetched, cut before its end.
    #[error("the stream was cut before its end")]
    Cut,
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Result<Bytes, BrokenBody>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body; a broken one is a violated property.
    pub fn bytes(&self) -> &Bytes {
        match &self.body {
            Ok(bytes) => bytes,
            Err(broken) => panic!("{broken}"),
        }
    }
}
