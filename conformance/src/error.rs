//! Why a case failed. Each variant names the request involved (`what`, e.g. `GET /v2/x/blobs/…`)
//! so a FAIL line can be acted on without rerunning with a debugger.

use thiserror::Error;

use crate::challenge::ChallengeError;

#[derive(Debug, Error)]
pub enum Failure {
    /// The request never produced a response (connection refused, timeout, malformed reply).
    #[error("{what}: request failed: {source}")]
    Transport {
        what: String,
        #[source]
        source: ureq::Error,
    },

    /// The status line and headers arrived but the body could not be read, e.g. because it
    /// was shorter than its `Content-Length`.
    #[error("{what}: got status {status}{length}, but reading the body failed: {source}")]
    Body {
        what: String,
        status: u16,
        /// ` (Content-Length: N)` or empty.
        length: String,
        #[source]
        source: ureq::Error,
    },

    /// The request could not even be built (e.g. the registry returned an unusable Location).
    #[error("{what}: cannot build request: {detail}")]
    Request { what: String, detail: String },

    #[error("{what}: expected status {expected}, got {got}{body}")]
    Status {
        what: String,
        expected: String,
        got: u16,
        /// A short excerpt of the response body, already formatted as ` (body: …)` or empty.
        body: String,
    },

    #[error("{what}: missing {header} header")]
    MissingHeader { what: String, header: String },

    #[error("{what}: body is not valid JSON: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// The status was right but the body was not the spec's `{"errors":[{"code":…}]}` with an
    /// acceptable code.
    #[error("{what}: expected error code {expected}, got {got}")]
    ErrorCode {
        what: String,
        expected: String,
        got: String,
    },

    /// A `401` could not be answered: its challenge or the token response was unusable.
    #[error("{what}: logging in failed: {source}")]
    Auth {
        what: String,
        #[source]
        source: AuthError,
    },

    /// Any other assertion about headers or content.
    #[error("{0}")]
    Check(String),

    /// A failure within a named step of a case that repeats similar requests.
    #[error("{step}: {source}")]
    Step {
        step: String,
        #[source]
        source: Box<Failure>,
    },
}

/// Names the step a failure happened in, for cases whose steps send look-alike requests.
pub trait StepExt<T> {
    fn step(self, step: &str) -> Result<T, Failure>;
}

impl<T> StepExt<T> for Result<T, Failure> {
    fn step(self, step: &str) -> Result<T, Failure> {
        self.map_err(|source| Failure::Step {
            step: step.to_string(),
            source: Box::new(source),
        })
    }
}

/// `ensure!(cond, "format", args…)` returns `Err(Failure::Check(..))` from the enclosing case
/// when `cond` is false.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::error::Failure::Check(format!($($fmt)+)));
        }
    };
}

/// `fail!("format", args…)` returns `Err(Failure::Check(..))` unconditionally.
#[macro_export]
macro_rules! fail {
    ($($fmt:tt)+) => {
        return Err($crate::error::Failure::Check(format!($($fmt)+)))
    };
}

/// Why a `401` could not be answered.
#[derive(Debug, Error)]
pub enum AuthError {
    #[error(transparent)]
    Challenge(#[from] ChallengeError),

    #[error("Bearer challenge without a realm")]
    NoRealm,

    #[error("token response has neither \"token\" nor \"access_token\"")]
    NoToken,
}
