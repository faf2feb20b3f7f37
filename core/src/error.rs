//! The spec's error codes, with the status each is answered with.

use http::StatusCode;

/// An OCI error code (distribution-spec, "Error Codes"), plus the few Stowage adds for
/// conditions the spec leaves to the registry (unavailable backends, unknown routes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    /// A tag that breaks the grammar, or more tags than one request may set (400).
    TagInvalid,
    Unsupported,
    /// The caller must authenticate, or its credentials or token do not suffice (401).
    Unauthorized,
    /// An authenticated caller the policy refuses (403).
    Denied,
    /// A tag the repository keeps immutable would be re-pointed or deleted (409).
    TagImmutable,
    /// Too many failed logins from one address (429).
    TooManyRequests,
    /// A `Range` or `Content-Range` the registry cannot satisfy (416).
    RangeInvalid,
    /// A manifest larger than the configured limit (413).
    ManifestTooLarge,
    /// Stores, lock or cache backend failed; the client may retry (503).
    Unavailable,
    /// A route this registry does not serve.
    NotFound,
    MethodNotAllowed,
}

impl ErrorCode {
    pub fn code(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid | ErrorCode::RangeInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestTooLarge => "SIZE_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::TagInvalid => "TAG_INVALID",
            ErrorCode::Unsupported | ErrorCode::NotFound | ErrorCode::MethodNotAllowed => {
                "UNSUPPORTED"
            }
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied | ErrorCode::TagImmutable => "DENIED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown
            | ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::BlobUploadInvalid
            | ErrorCode::DigestInvalid
            | ErrorCode::ManifestBlobUnknown
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::SizeInvalid
            | ErrorCode::TagInvalid => StatusCode::BAD_REQUEST,
            ErrorCode::Unsupported => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::ManifestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Denied => StatusCode::FORBIDDEN,
            ErrorCode::TagImmutable => StatusCode::CONFLICT,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// An error answered to the client: a code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.code())]
pub struct RegistryError {
    pub code: ErrorCode,
    pub message: String,
}

impl RegistryError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RegistryError {
            code,
            message: message.into(),
        }
    }

    /// The spec's JSON error body.
    pub fn body(&self) -> String {
        serde_json::json!({
            "errors": [{ "code": self.code.code(), "message": self.message, "detail": null }]
        })
        .to_string()
    }
}
