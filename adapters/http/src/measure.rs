//! The HTTP metrics: requests by route template, method and status class with their
//! latency, bytes in and out, requests in flight, and how callers authenticated. Recorded
//! through the `metrics` facade (free until the app installs a recorder), each series' handle
//! remembered ([`stowage_driver::series`]); label values come from [`crate::labels`].

use std::time::Duration;

use http::{Method, StatusCode};
use stowage_driver::series;

use crate::labels;

const REQUESTS: &str = "stowage_http_requests_total";
const DURATION: &str = "stowage_http_request_duration_seconds";
const IN_FLIGHT: &str = "stowage_http_requests_in_flight";
const RECEIVED: &str = "stowage_http_received_bytes_total";
const SENT: &str = "stowage_http_sent_bytes_total";
const AUTHENTICATIONS: &str = "stowage_authentications_total";

/// Describes the metrics this crate records, once a recorder is installed.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        REQUESTS,
        "Requests served, by route template, method and status class (aborted: the client left before the answer)"
    );
    describe_histogram!(
        DURATION,
        Unit::Seconds,
        "Time from a request's head to the end of its response body, by route template and method"
    );
    describe_gauge!(IN_FLIGHT, "Requests being served right now");
    describe_counter!(RECEIVED, Unit::Bytes, "Request body bytes received");
    describe_counter!(SENT, Unit::Bytes, "Response body bytes sent");
    describe_counter!(
        AUTHENTICATIONS,
        "Requests by how the caller authenticated: anonymous, identified, token, failed, throttled"
    );
}

pub(crate) fn request_started() {
    series::gauge_add(IN_FLIGHT, &[], 1.0);
}

/// One request over: its response body sent, or its client gone (with no status if it
/// went before the answer).
pub(crate) fn request_finished(
    route: &'static str,
    method: &Method,
    status: Option<StatusCode>,
    received: u64,
    sent: u64,
    took: Duration,
) {
    let method = labels::method(method);
    let status = status.map_or("aborted", labels::status_class);
    series::gauge_add(IN_FLIGHT, &[], -1.0);
    series::increment(
        REQUESTS,
        &[("route", route), ("method", method), ("status", status)],
        1,
    );
    series::record(
        DURATION,
        &[("route", route), ("method", method)],
        took.as_secs_f64(),
    );
    if received > 0 {
        series::increment(RECEIVED, &[], received);
    }
    if sent > 0 {
        series::increment(SENT, &[], sent);
    }
}

pub(crate) fn authenticated(outcome: &'static str) {
    series::increment(AUTHENTICATIONS, &[("outcome", outcome)], 1);
}
