//! A fully read HTTP response, as every call of the client returns it, with the assertions
//! cases make on it; and the query strings requests carry.

use serde_json::Value;
use ureq::http::HeaderMap;

use crate::challenge::{self, Challenge};
use crate::error::Failure;

/// The largest char boundary of `s` at or below `max` (`str::floor_char_boundary` is newer
/// than the workspace's minimum Rust version).
pub(crate) fn char_boundary(s: &str, max: usize) -> usize {
    let mut i = max.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Appends `name=value` query parameters to a URL or Location that may already carry a query.
pub fn with_query(target: &str, params: &[(&str, &str)]) -> String {
    let mut out = target.to_string();
    for (name, value) in params {
        out.push(if out.contains('?') { '&' } else { '?' });
        out.push_str(name);
        out.push('=');
        out.push_str(&percent_encode(value));
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters; in particular `+` in media
/// types, which many servers would otherwise decode as a space.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A fully read HTTP response.
pub struct Response {
    /// `METHOD path`, for messages.
    pub what: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    /// First value of a header, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// All values of a header (it may be repeated, e.g. `OCI-Tag`).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// Every challenge in the `WWW-Authenticate` headers, in order.
    pub fn challenges(&self) -> Result<Vec<Challenge>, Failure> {
        let mut challenges = Vec::new();
        for header in self.header_all("www-authenticate") {
            challenges.extend(challenge::parse(header).map_err(|e| Failure::Auth {
                what: self.what.clone(),
                source: e.into(),
            })?);
        }
        Ok(challenges)
    }

    pub fn require_header(&self, name: &str) -> Result<&str, Failure> {
        self.header(name).ok_or_else(|| Failure::MissingHeader {
            what: self.what.clone(),
            header: name.to_string(),
        })
    }

    /// The media type of `Content-Type`, without parameters (clients must ignore them).
    pub fn content_type(&self) -> Option<String> {
        self.header("content-type").map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
    }

    pub fn expect(&self, status: u16) -> Result<&Self, Failure> {
        self.expect_any(&[status])
    }

    pub fn expect_any(&self, statuses: &[u16]) -> Result<&Self, Failure> {
        if statuses.contains(&self.status) {
            return Ok(self);
        }
        let expected = statuses
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(" or ");
        Err(Failure::Status {
            what: self.what.clone(),
            expected,
            got: self.status,
            body: self.body_excerpt(),
        })
    }

    pub fn json(&self) -> Result<Value, Failure> {
        serde_json::from_slice(&self.body).map_err(|source| Failure::Json {
            what: self.what.clone(),
            source,
        })
    }

    /// Checks the status and that the body is the spec's error document with one of `codes`.
    pub fn expect_error(&self, status: u16, codes: &[&str]) -> Result<&Self, Failure> {
        self.expect_any_error(&[status], codes)
    }

    pub fn expect_any_error(&self, statuses: &[u16], codes: &[&str]) -> Result<&Self, Failure> {
        self.expect_any(statuses)?;
        let found = self.error_codes()?;
        if found.iter().any(|c| codes.contains(&c.as_str())) {
            return Ok(self);
        }
        Err(Failure::ErrorCode {
            what: self.what.clone(),
            expected: codes.join(" or "),
            got: if found.is_empty() {
                "no codes".to_string()
            } else {
                found.join(", ")
            },
        })
    }

    /// The `code`s of a `{"errors":[{"code":…}]}` body, checking the shape the spec requires.
    pub fn error_codes(&self) -> Result<Vec<String>, Failure> {
        let bad_shape = |detail: &str| {
            let body = if self.body.is_empty() {
                " (empty body)".to_string()
            } else {
                self.body_excerpt()
            };
            Failure::Check(format!("{}: {detail}{body}", self.what))
        };
        let value: Value = serde_json::from_slice(&self.body)
            .map_err(|_| bad_shape("error body is not the spec's JSON error document"))?;
        let errors = value
            .get("errors")
            .and_then(Value::as_array)
            .ok_or_else(|| bad_shape("error body lacks an \"errors\" array"))?;
        let mut codes = Vec::new();
        for error in errors {
            let code = error
                .get("code")
                .and_then(Value::as_str)
                .ok_or_else(|| bad_shape("error entry lacks a string \"code\""))?;
            // The spec: uppercase alphabetic characters and underscores only.
            if code.is_empty() || !code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
                return Err(bad_shape(&format!("error code {code:?} is not [A-Z_]+")));
            }
            codes.push(code.to_string());
        }
        Ok(codes)
    }

    fn body_excerpt(&self) -> String {
        if self.body.is_empty() {
            return String::new();
        }
        // Blob bodies are binary; only quote bodies that read as text.
        let Ok(text) = std::str::from_utf8(&self.body) else {
            return format!(" ({} byte binary body)", self.body.len());
        };
        if text.chars().any(|c| c.is_control() && !c.is_whitespace()) {
            return format!(" ({} byte binary body)", self.body.len());
        }
        let text = text.trim();
        let cut = char_boundary(text, 200);
        let ellipsis = if cut < text.len() { "…" } else { "" };
        format!(" (body: {}{ellipsis})", text[..cut].replace('\n', " "))
    }
}
