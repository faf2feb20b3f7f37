//! The metrics of the steps the driver performs: storage operations, lock requests, cache
//! lookups. Recorded through the `metrics` facade, so they cost next to nothing until the
//! app installs a recorder; every label value is one of a fixed few (never a key, which
//! would hold repository names and digests).

use std::time::Duration;

use bytes::Bytes;
use stowage_core::step::{IoError, LockRequest, Outcome, UpstreamAnswer};

use crate::series;

const STORAGE_OPERATIONS: &str = "stowage_storage_operations_total";
const STORAGE_DURATION: &str = "stowage_storage_operation_duration_seconds";
const UPLOADS_IN_FLIGHT: &str = "stowage_uploads_in_flight";
const LOCK_REQUESTS: &str = "stowage_lock_requests_total";
const LOCK_LOSSES: &str = "stowage_lock_losses_total";
const LOCK_WAITS: &str = "stowage_lock_wait_seconds";
const CACHE_LOOKUPS: &str = "stowage_cache_lookups_total";
const UPSTREAM_REQUESTS: &str = "stowage_upstream_requests_total";
const UPSTREAM_DURATION: &str = "stowage_upstream_request_duration_seconds";

/// Describes the metrics this crate records, once a recorder is installed.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        STORAGE_OPERATIONS,
        "Storage operations by backend (fs, s3), operation and outcome (ok, not_found, condition_failed, refused, error)"
    );
    describe_histogram!(
        STORAGE_DURATION,
        Unit::Seconds,
        "Storage operation latency by backend and operation (streamed writes last as long as the request body)"
    );
    describe_gauge!(
        UPLOADS_IN_FLIGHT,
        "Request bodies being streamed into storage right now"
    );
    describe_counter!(
        LOCK_REQUESTS,
        "Lock requests by request (acquire, refresh, release) and outcome (ok, refused, error); a refused acquire means the lock was held and the operation waits"
    );
    describe_counter!(
        LOCK_LOSSES,
        "Locks found lost: a refresh or release refused because the lock had expired"
    );
    describe_histogram!(
        LOCK_WAITS,
        Unit::Seconds,
        "Back-off waits for a held lock (the count is the waits, the sum the time waited)"
    );
    describe_counter!(
        CACHE_LOOKUPS,
        "Cache lookups by kind (tag, manifest, blob, blob-data) and result (hit, miss, error)"
    );
    describe_counter!(
        UPSTREAM_REQUESTS,
        "Requests a mirror made to its upstreams by request (head_manifest, get_manifest, head_blob, get_blob) and result (ok, not_found, broken, unavailable, refused)"
    );
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "Upstream request latency by request (a blob fetch lasts until the blob is stored)"
    );
}

/// Counts one storage operation of `kind` on a `backend`, with its latency; its outcome's
/// label.
pub(crate) fn stores(
    backend: &'static str,
    kind: &'static str,
    outcome: &Outcome,
    took: Duration,
) -> &'static str {
    let outcome = storage_outcome(outcome);
    series::increment(
        STORAGE_OPERATIONS,
        &[
            ("backend", backend),
            ("operation", kind),
            ("outcome", outcome),
        ],
        1,
    );
    series::record(
        STORAGE_DURATION,
        &[("backend", backend), ("operation", kind)],
        took.as_secs_f64(),
    );
    outcome
}

fn storage_outcome(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Stat(None)
        | Outcome::Inspected(None)
        | Outcome::Read(None)
        | Outcome::Versioned(None) => "not_found",
        Outcome::ConditionFailed => "condition_failed",
        Outcome::Body { error: Some(_), .. } => "refused",
        Outcome::Failed(_) => "error",
        _ => "ok",
    }
}

/// Counts a request body streaming into storage while it lives.
pub(crate) struct UploadInFlight;

impl UploadInFlight {
    pub(crate) fn start() -> Self {
        series::gauge_add(UPLOADS_IN_FLIGHT, &[], 1.0);
        UploadInFlight
    }
}

impl Drop for UploadInFlight {
    fn drop(&mut self) {
        series::gauge_add(UPLOADS_IN_FLIGHT, &[], -1.0);
    }
}

/// Counts one lock request and what came of it; its outcome's label.
pub(crate) fn lock(request: &LockRequest, result: &Result<bool, IoError>) -> &'static str {
    let (request, outcome, lost) = lock_labels(request, result);
    series::increment(
        LOCK_REQUESTS,
        &[("request", request), ("outcome", outcome)],
        1,
    );
    if lost {
        series::increment(LOCK_LOSSES, &[], 1);
    }
    outcome
}

/// The request's label, its outcome's, and whether it found the lock lost.
fn lock_labels(
    request: &LockRequest,
    result: &Result<bool, IoError>,
) -> (&'static str, &'static str, bool) {
    let request = match request {
        LockRequest::Acquire { .. } => "acquire",
        LockRequest::Refresh { .. } => "refresh",
        LockRequest::Release { .. } => "release",
    };
    match result {
        Ok(true) => (request, "ok", false),
        Ok(false) => (request, "refused", request != "acquire"),
        Err(_) => (request, "error", false),
    }
}

/// Counts one back-off wait for a held lock.
pub(crate) fn lock_wait(waited: Duration) {
    series::record(LOCK_WAITS, &[], waited.as_secs_f64());
}

/// Counts one upstream request of `kind` and what came of it; its result's label.
pub(crate) fn upstream(
    kind: &'static str,
    answer: &UpstreamAnswer,
    took: Duration,
) -> &'static str {
    let result = match answer {
        UpstreamAnswer::Manifest { .. }
        | UpstreamAnswer::Found
        | UpstreamAnswer::Fetched { error: None, .. } => "ok",
        UpstreamAnswer::Fetched { .. } => "broken",
        UpstreamAnswer::NotFound => "not_found",
        UpstreamAnswer::Unavailable { .. } => "unavailable",
        UpstreamAnswer::Refused { .. } => "refused",
    };
    series::increment(
        UPSTREAM_REQUESTS,
        &[("request", kind), ("result", result)],
        1,
    );
    series::record(UPSTREAM_DURATION, &[("request", kind)], took.as_secs_f64());
    result
}

/// Counts one cache lookup of a key of `kind`; its result's label.
pub(crate) fn cache_lookup(
    kind: &'static str,
    result: &Result<Option<Bytes>, IoError>,
) -> &'static str {
    let result = match result {
        Ok(Some(_)) => "hit",
        Ok(None) => "miss",
        Err(_) => "error",
    };
    series::increment(CACHE_LOOKUPS, &[("kind", kind), ("result", result)], 1);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_outcomes_are_a_few_words() {
        assert_eq!(storage_outcome(&Outcome::Stat(None)), "not_found");
        assert_eq!(storage_outcome(&Outcome::Stat(Some(3))), "ok");
        assert_eq!(
            storage_outcome(&Outcome::ConditionFailed),
            "condition_failed"
        );
        let failed = Outcome::Failed(IoError {
            message: "read v2/repositories/secret/x: boom".into(),
        });
        assert_eq!(storage_outcome(&failed), "error");
    }

    #[test]
    fn a_refused_refresh_or_release_is_a_lost_lock_and_a_refused_acquire_a_wait() {
        let (key, token) = ("tag/secret/latest".to_owned(), "t".to_owned());
        let acquire = LockRequest::Acquire {
            key: key.clone(),
            token: token.clone(),
            ttl_ms: 10,
        };
        let refresh = LockRequest::Refresh {
            key: key.clone(),
            token: token.clone(),
            ttl_ms: 10,
        };
        let release = LockRequest::Release { key, token };
        assert_eq!(
            lock_labels(&acquire, &Ok(false)),
            ("acquire", "refused", false)
        );
        assert_eq!(lock_labels(&acquire, &Ok(true)), ("acquire", "ok", false));
        assert_eq!(
            lock_labels(&refresh, &Ok(false)),
            ("refresh", "refused", true)
        );
        assert_eq!(
            lock_labels(&release, &Ok(false)),
            ("release", "refused", true)
        );
        let down = Err(IoError {
            message: "redis down".into(),
        });
        assert_eq!(lock_labels(&refresh, &down), ("refresh", "error", false));
    }
}
