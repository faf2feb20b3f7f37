//! One delivery: a signed CloudEvent POSTed to a webhook, and what its answer means.

use bytes::Bytes;
use stowage_core::step::Undelivered;

use crate::settings::Webhook;
use crate::signature::{SIGNATURE_HEADER, signature};

/// The media type of a CloudEvent in structured mode, JSON.
const CLOUDEVENTS_JSON: &str = "application/cloudevents+json; charset=utf-8";

/// POSTs `body` to `webhook` once: `Ok` on a 2xx answer.
pub(crate) async fn post(
    client: &reqwest::Client,
    webhook: &Webhook,
    body: &Bytes,
) -> Result<(), Undelivered> {
    let mut request = client
        .post(webhook.url.clone())
        .timeout(webhook.timeout)
        .header(reqwest::header::CONTENT_TYPE, CLOUDEVENTS_JSON)
        .body(body.clone());
    if let Some(token) = &webhook.token {
        request = request.header(SIGNATURE_HEADER, signature(token, body));
    }
    let undelivered = |refused, reason| Undelivered {
        webhook: webhook.name.clone(),
        refused,
        reason,
    };
    let response = request
        .send()
        .await
        .map_err(|e| undelivered(false, error_chain(&e)))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(undelivered(
            status.is_client_error(),
            format!("the receiver answered {status}"),
        ))
    }
}

/// reqwest's error with its causes ("error sending request" alone says little).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
