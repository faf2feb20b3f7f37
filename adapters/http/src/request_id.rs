//! `X-Request-Id`: a client's id is kept when it is sane, so its logs and ours meet;
//! otherwise the server makes one. Either way the response echoes it and the access log
//! carries it.

use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;

pub const X_REQUEST_ID: &str = "x-request-id";

/// The longest client id kept.
const MAX_LEN: usize = 128;

/// Makes request ids: a random prefix per process and a counter. Unique across replicas
/// (64 random bits) without a system call per request, and unrelated to upload ids, which
/// must stay unguessable.
pub(crate) struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl RequestIds {
    pub(crate) fn new(prefix: u64) -> Self {
        RequestIds {
            prefix,
            next: AtomicU64::new(1),
        }
    }

    /// The client's id if it sent a sane one, else a new one.
    pub(crate) fn for_request(&self, sent: Option<&HeaderValue>) -> HeaderValue {
        match sent {
            Some(value) if is_sane(value.as_bytes()) => value.clone(),
            _ => self.generate(),
        }
    }

    fn generate(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:016x}-{n:x}", self.prefix);
        // Hex digits and a dash are always a valid header value.
        HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

/// One to [`MAX_LEN`] visible ASCII characters: safe in a header, a log line and JSON.
fn is_sane(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_the_rest() {
        let ids = RequestIds::new(0xabc);
        let sent = HeaderValue::from_static("client-1/a.b:c");
        assert_eq!(ids.for_request(Some(&sent)), sent);
        let long = HeaderValue::from_str(&"x".repeat(MAX_LEN)).unwrap();
        assert_eq!(ids.for_request(Some(&long)), long);
        for bad in [
            HeaderValue::from_str(&"x".repeat(MAX_LEN + 1)).unwrap(),
            HeaderValue::from_static(""),
            HeaderValue::from_static("has space"),
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
            HeaderValue::from_static("tab\there"),
        ] {
            let id = ids.for_request(Some(&bad));
            assert_ne!(id, bad);
            assert!(
                id.to_str().unwrap().starts_with("0000000000000abc-"),
                "{id:?}"
            );
        }
    }

    #[test]
    fn generated_ids_differ() {
        let ids = RequestIds::new(7);
        let (a, b) = (ids.for_request(None), ids.for_request(None));
        assert_ne!(a, b);
        assert!(is_sane(a.as_bytes()) && is_sane(b.as_bytes()));
    }
}
