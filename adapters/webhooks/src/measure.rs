//! Delivery metrics; the webhook's name (from the configuration) is a bounded label.

const DELIVERIES: &str = "stowage_event_deliveries_total";
const UNDELIVERABLE: &str = "stowage_events_undeliverable_total";

/// Describes the metrics this crate records, once a recorder is installed.
pub fn describe_metrics() {
    metrics::describe_counter!(
        DELIVERIES,
        "Event delivery attempts by webhook, policy (required, optional, async) and outcome (delivered, refused: a 4xx answer, failed: an error, a timeout or a 5xx answer)"
    );
    metrics::describe_counter!(
        UNDELIVERABLE,
        "Queued (async) events set aside after their webhook failed them max_retries + 1 times"
    );
}

pub(crate) fn attempt(webhook: &str, policy: &'static str, outcome: &'static str) {
    metrics::counter!(
        DELIVERIES,
        "webhook" => webhook.to_owned(),
        "policy" => policy,
        "outcome" => outcome,
    )
    .increment(1);
}

pub(crate) fn undeliverable(webhook: &str) {
    metrics::counter!(UNDELIVERABLE, "webhook" => webhook.to_owned()).increment(1);
}
