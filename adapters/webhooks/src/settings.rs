//! `[event_webhook.<name>]`: where a webhook is, what it hears, and what its answer means.

use std::time::Duration;

use serde::Deserialize;
use stowage_core::events::{EventKind, Policy, Subscription};
use url::Url;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// `http://` or `https://`; redirects are not followed.
    pub url: String,
    /// The events it hears; default: all of them.
    #[serde(default = "all_events")]
    pub events: Vec<EventKind>,
    /// A regular expression the whole repository name must match; default: every
    /// repository.
    pub repository_filter: Option<String>,
    /// Signs each body with HMAC-SHA256 in the `Stowage-Signature` header.
    pub token: Option<String>,
    /// How long one delivery attempt may take, connecting included.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Attempts after the first: then a `required` or `optional` event counts as not
    /// taken, and a queued (`async`) one is set aside as undeliverable.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    #[serde(default = "default_policy")]
    pub policy: Policy,
}

fn all_events() -> Vec<EventKind> {
    EventKind::ALL.to_vec()
}

fn default_timeout_secs() -> u64 {
    5
}

fn default_max_retries() -> u32 {
    5
}

fn default_policy() -> Policy {
    Policy::Async
}

/// A setting that cannot work, by key (below `event_webhook.<name>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event_webhook.{webhook}.{key}: {reason}")]
pub struct InvalidWebhook {
    pub webhook: String,
    pub key: &'static str,
    pub reason: String,
}

/// A webhook checked and ready to deliver to.
#[derive(Debug, Clone)]
pub(crate) struct Webhook {
    pub(crate) name: String,
    pub(crate) url: Url,
    pub(crate) token: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) max_retries: u32,
}

impl WebhookSettings {
    /// Who hears what, for the core, and the webhook, for delivery.
    pub(crate) fn check(&self, name: &str) -> Result<(Subscription, Webhook), InvalidWebhook> {
        let invalid = |key, reason: String| InvalidWebhook {
            webhook: name.to_owned(),
            key,
            reason,
        };
        // Queued events are named after their webhook (`stowage_core::layout::queued_event`).
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(
                "name",
                "a webhook's name may hold only ASCII letters, digits, '_' and '-'".into(),
            ));
        }
        let url = Url::parse(&self.url).map_err(|e| invalid("url", e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("url", "must be http:// or https://".into()));
        }
        if self.events.is_empty() {
            return Err(invalid("events", "names no event".into()));
        }
        if self.timeout_secs == 0 {
            return Err(invalid("timeout_secs", "must be at least 1".into()));
        }
        let repository_filter = self
            .repository_filter
            .as_deref()
            .map(|filter| regex::Regex::new(&format!("^(?:{filter})$")))
            .transpose()
            .map_err(|e| invalid("repository_filter", e.to_string()))?;
        let subscription = Subscription {
            webhook: name.to_owned(),
            events: self.events.clone(),
            repository_filter,
            policy: self.policy,
        };
        let webhook = Webhook {
            name: name.to_owned(),
            url,
            token: self.token.clone(),
            timeout: Duration::from_secs(self.timeout_secs),
            max_retries: self.max_retries,
        };
        Ok((subscription, webhook))
    }
}
