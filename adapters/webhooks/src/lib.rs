//! Delivering the core's events to webhooks (`[event_webhook.<name>]`): a CloudEvent POSTed
//! with its HMAC-SHA256 signature, retried with back-off; `required` and `optional`
//! deliveries while the request waits, `async` ones from the queue in the metadata store
//! ([`queue`]).

mod delivery;
mod measure;
mod queue;
mod settings;
mod signature;

use std::collections::BTreeMap;
use std::sync::{Arc, Once};
use std::time::Duration;

use bytes::Bytes;
use stowage_core::events::{Policy, Subscriptions};
use stowage_core::step::Undelivered;
use stowage_driver::{BoxFuture, Io, Timer};
use tokio::sync::Notify;

pub use measure::describe_metrics;
pub use settings::{InvalidWebhook, WebhookSettings};
pub use signature::{SIGNATURE_HEADER, signature};

use settings::Webhook;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Invalid(#[from] InvalidWebhook),
    #[error("cannot build the webhooks' HTTP client: {0}")]
    HttpClient(String),
}

/// The first wait between attempts of a delivery the request waits for; it doubles.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(200);
/// The longest wait between those attempts.
const LONGEST_RETRY_DELAY: Duration = Duration::from_secs(2);

/// The configured webhooks, shared by every request and the queue's deliverer.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    by_name: BTreeMap<String, Webhook>,
    timer: Arc<dyn Timer>,
    /// Set when events were queued, so the deliverer does not wait for its next look.
    queued: Notify,
}

/// Checks every `[event_webhook.<name>]` table, and answers who hears what.
pub fn subscriptions(
    settings: &BTreeMap<String, WebhookSettings>,
) -> Result<Subscriptions, InvalidWebhook> {
    let checked = settings
        .iter()
        .map(|(name, webhook)| webhook.check(name).map(|(subscription, _)| subscription));
    Ok(Subscriptions::new(checked.collect::<Result<_, _>>()?))
}

impl Webhooks {
    pub fn new(
        settings: &BTreeMap<String, WebhookSettings>,
        timer: Arc<dyn Timer>,
    ) -> Result<Self, WebhookError> {
        let mut by_name = BTreeMap::new();
        for (name, webhook) in settings {
            let (_, webhook) = webhook.check(name)?;
            by_name.insert(name.clone(), webhook);
        }
        // The process-wide TLS provider; whoever installs it first installs the same one.
        static PROVIDER: Once = Once::new();
        PROVIDER.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        // A receiver that moves is not followed: the event goes where it was configured to.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| WebhookError::HttpClient(e.to_string()))?;
        Ok(Webhooks {
            inner: Arc::new(Inner {
                client,
                by_name,
                timer,
                queued: Notify::new(),
            }),
        })
    }

    /// Delivers `body` to `webhook`, retrying failures (not refusals) up to its
    /// `max_retries`.
    async fn deliver_one(
        &self,
        webhook: &Webhook,
        body: &Bytes,
        policy: Policy,
    ) -> Result<(), Undelivered> {
        let mut delay = FIRST_RETRY_DELAY;
        let mut retries = 0;
        loop {
            let result = delivery::post(&self.inner.client, webhook, body).await;
            measure::attempt(&webhook.name, policy.name(), outcome(&result));
            match result {
                Ok(()) => return Ok(()),
                Err(undelivered) if undelivered.refused || retries >= webhook.max_retries => {
                    return Err(undelivered);
                }
                Err(_) => {
                    self.inner.timer.sleep(delay).await;
                    delay = (delay * 2).min(LONGEST_RETRY_DELAY);
                    retries += 1;
                }
            }
        }
    }

    async fn deliver_all(
        &self,
        body: &Bytes,
        webhooks: &[String],
        policy: Policy,
    ) -> Vec<Undelivered> {
        let mut undelivered = Vec::new();
        for name in webhooks {
            let result = match self.inner.by_name.get(name) {
                Some(webhook) => self.deliver_one(webhook, body, policy).await,
                None => Err(Undelivered {
                    webhook: name.clone(),
                    refused: false,
                    reason: "no such webhook is configured".into(),
                }),
            };
            if let Err(failure) = result {
                tracing::warn!(
                    webhook = failure.webhook,
                    policy = policy.name(),
                    reason = failure.reason,
                    "an event was not delivered"
                );
                undelivered.push(failure);
                // The change will not be made: the other required webhooks need not hear of it.
                if policy == Policy::Required {
                    break;
                }
            }
        }
        undelivered
    }
}

/// A delivery's outcome as a metrics label.
fn outcome(result: &Result<(), Undelivered>) -> &'static str {
    match result {
        Ok(()) => "delivered",
        Err(Undelivered { refused: true, .. }) => "refused",
        Err(_) => "failed",
    }
}

impl stowage_driver::Webhooks for Webhooks {
    fn deliver<'a>(
        &'a self,
        body: &'a Bytes,
        webhooks: &'a [String],
        policy: Policy,
    ) -> BoxFuture<'a, Vec<Undelivered>> {
        Box::pin(self.deliver_all(body, webhooks, policy))
    }

    fn queued(&self) {
        // A permit the deliverer takes when it next waits, if it is busy now.
        self.inner.queued.notify_one();
    }

    fn deliver_queued(&self, io: Io) -> BoxFuture<'static, ()> {
        Box::pin(queue::deliver_forever(self.clone(), io))
    }
}
