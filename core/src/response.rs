//! Building responses: the builder every handler answers through, and the OCI error body.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, LOCATION};
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::digest::Digest;
use crate::error::{ErrorCode, RegistryError};
use crate::step::{Body, Response};

pub(crate) const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
pub(crate) const DOCKER_UPLOAD_UUID: &str = "docker-upload-uuid";

/// A response under construction.
pub(crate) struct Reply(Response);

impl Reply {
    pub(crate) fn new(status: StatusCode) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        Reply(Response {
            status,
            headers,
            body: Body::Empty,
        })
    }

    pub(crate) fn status(mut self, status: StatusCode) -> Self {
        self.0.status = status;
        self
    }

    /// Adds a header; values we build are always valid header text, others are dropped.
    pub(crate) fn header(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_ref().as_bytes()),
            HeaderValue::from_str(value.as_ref()),
        ) {
            self.0.headers.append(name, value);
        }
        self
    }

    pub(crate) fn digest(self, digest: &Digest) -> Self {
        self.header(DOCKER_CONTENT_DIGEST, digest.to_string())
    }

    pub(crate) fn location(self, location: impl AsRef<str>) -> Self {
        self.header(LOCATION.as_str(), location)
    }

    pub(crate) fn content_type(mut self, content_type: &str) -> Self {
        if let Ok(value) = HeaderValue::from_str(content_type) {
            self.0.headers.insert(CONTENT_TYPE, value);
        }
        self
    }

    /// Announces a length without sending a body (HEAD).
    pub(crate) fn length(mut self, len: u64) -> Self {
        self.0
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(len));
        self
    }

    pub(crate) fn body(self, body: Body, len: u64) -> Self {
        let mut reply = self.length(len);
        reply.0.body = body;
        reply
    }

    pub(crate) fn bytes(self, bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        let len = bytes.len() as u64;
        self.body(Body::Bytes(bytes), len)
    }

    pub(crate) fn json(self, value: &serde_json::Value) -> Self {
        self.content_type("application/json")
            .bytes(value.to_string())
    }

    pub(crate) fn done(self) -> Response {
        self.0
    }
}

/// Seconds a client is asked to wait before retrying a 503: every one is transient (a
/// backend failed, a lock was busy or lost, the collector is deleting what it names).
const RETRY_AFTER_SECS: &str = "1";

/// The `200` of an operation of the registry's own (a collection, a purge): its report as
/// JSON.
pub(crate) fn report_response(report: &impl serde::Serialize) -> Response {
    Reply::new(StatusCode::OK)
        .content_type("application/json")
        .bytes(Bytes::from(serde_json::to_vec(report).unwrap_or_default()))
        .done()
}

/// Why an operation of the registry's own did not give its report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("the operation failed ({status}): {message}")]
    Failed { status: StatusCode, message: String },
    #[error("the operation answered an unreadable report: {0}")]
    Report(String),
}

/// The report an operation of the registry's own answered with ([`report_response`]).
pub fn read_report<T: serde::de::DeserializeOwned>(
    status: StatusCode,
    body: &[u8],
) -> Result<T, ReportError> {
    if status != StatusCode::OK {
        return Err(ReportError::Failed {
            status,
            message: String::from_utf8_lossy(body).into_owned(),
        });
    }
    serde_json::from_slice(body).map_err(|e| ReportError::Report(e.to_string()))
}

/// The `503` a failure outside the core answers (a stored body that cannot be opened), with
/// the OCI error body every other failure has.
pub fn unavailable(message: &str) -> Response {
    error_response(&RegistryError::new(ErrorCode::Unavailable, message))
}

/// The `404` a driver answers when a stored body's object is gone (the collector took bytes
/// a cache entry still vouched for), as the core answers a blob it does not hold.
pub fn stored_object_gone() -> Response {
    error_response(&RegistryError::new(
        ErrorCode::BlobUnknown,
        "the blob's bytes are gone",
    ))
}

pub(crate) fn error_response(error: &RegistryError) -> Response {
    let mut reply = Reply::new(error.code.status());
    if error.code == ErrorCode::Unavailable {
        reply = reply.header("retry-after", RETRY_AFTER_SECS);
    }
    reply
        .content_type("application/json")
        .bytes(error.body())
        .done()
}
