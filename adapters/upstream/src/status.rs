//! What an upstream's status means for the core: the one mapping the registry's requests and
//! the token requests of its logins share.

use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{HeaderMap, StatusCode};
use stowage_core::step::UpstreamAnswer;

/// The answer a status stands for, unless it is a success: `404` not found; `429` (with its
/// `Retry-After`), `408` and `5xx` unavailable; anything else refused.
pub(crate) fn failure(
    status: StatusCode,
    headers: &HeaderMap,
    who: &str,
) -> Option<UpstreamAnswer> {
    if status.is_success() {
        return None;
    }
    let reason = format!("{who} answered {status}");
    Some(match status {
        StatusCode::NOT_FOUND => UpstreamAnswer::NotFound,
        StatusCode::TOO_MANY_REQUESTS => UpstreamAnswer::Unavailable {
            reason,
            retry_after_ms: retry_after(headers).map(|d| d.as_millis() as u64),
        },
        StatusCode::REQUEST_TIMEOUT => UpstreamAnswer::Unavailable {
            reason,
            retry_after_ms: None,
        },
        s if s.is_server_error() => UpstreamAnswer::Unavailable {
            reason,
            retry_after_ms: None,
        },
        _ => UpstreamAnswer::Refused { reason },
    })
}

/// `Retry-After` in seconds (RFC 9110 10.2.3); a date is taken as a minute, as it cannot
/// be compared with a clock the upstream does not share.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    match value.parse::<u64>() {
        Ok(seconds) => Some(Duration::from_secs(seconds)),
        Err(_) => Some(Duration::from_secs(60)),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn with_retry_after(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn statuses_become_answers() {
        let none = HeaderMap::new();
        assert!(failure(StatusCode::OK, &none, "u").is_none());
        assert!(matches!(
            failure(StatusCode::NOT_FOUND, &none, "u"),
            Some(UpstreamAnswer::NotFound)
        ));
        assert!(matches!(
            failure(StatusCode::TOO_MANY_REQUESTS, &with_retry_after("7"), "u"),
            Some(UpstreamAnswer::Unavailable {
                retry_after_ms: Some(7000),
                ..
            })
        ));
        assert!(matches!(
            failure(StatusCode::BAD_GATEWAY, &none, "u"),
            Some(UpstreamAnswer::Unavailable {
                retry_after_ms: None,
                ..
            })
        ));
        assert!(matches!(
            failure(StatusCode::FORBIDDEN, &none, "u"),
            Some(UpstreamAnswer::Refused { .. })
        ));
    }
}
