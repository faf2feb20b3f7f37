//! Events: what the registry announces to webhooks, which webhook hears which event, and
//! the CloudEvents 1.0 body each receives.
//!
//! Who hears what is decided here, so an operation only yields delivery steps when some
//! webhook listens: a registry without webhooks pays nothing for them.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::time::Millis;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    ManifestPushed,
    ManifestDeleted,
    TagDeleted,
    BlobUploaded,
    RepositoryCreated,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::ManifestPushed,
        EventKind::ManifestDeleted,
        EventKind::TagDeleted,
        EventKind::BlobUploaded,
        EventKind::RepositoryCreated,
    ];

    /// The CloudEvents `type`.
    pub fn cloud_event_type(self) -> &'static str {
        match self {
            EventKind::ManifestPushed => "io.stowage.manifest.pushed",
            EventKind::ManifestDeleted => "io.stowage.manifest.deleted",
            EventKind::TagDeleted => "io.stowage.tag.deleted",
            EventKind::BlobUploaded => "io.stowage.blob.uploaded",
            EventKind::RepositoryCreated => "io.stowage.repository.created",
        }
    }
}

/// What a webhook's answer means for the change it announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Delivered before the change is committed; if the receiver does not take it, the
    /// change is not made and the client gets an error.
    Required,
    /// Delivered after the change, before the response; a failure is logged and counted.
    Optional,
    /// Queued in the metadata store before the response, delivered after it, retried.
    Async,
}

impl Policy {
    /// As a bounded metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Required => "required",
            Policy::Optional => "optional",
            Policy::Async => "async",
        }
    }
}

/// One webhook's interest.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The webhook's name (`[event_webhook.<name>]`).
    pub webhook: String,
    pub events: Vec<EventKind>,
    /// Only repositories whose whole name matches; `None`: every repository.
    pub repository_filter: Option<regex::Regex>,
    pub policy: Policy,
}

impl Subscription {
    fn hears(&self, kind: EventKind, repository: &str) -> bool {
        self.events.contains(&kind)
            && self
                .repository_filter
                .as_ref()
                .is_none_or(|filter| filter.is_match(repository))
    }
}

/// Every webhook's interest.
#[derive(Debug, Clone, Default)]
pub struct Subscriptions(Vec<Subscription>);

impl Subscriptions {
    pub fn new(subscriptions: Vec<Subscription>) -> Self {
        Subscriptions(subscriptions)
    }

    /// Whether any webhook hears `kind` in `repository`.
    pub fn any(&self, kind: EventKind, repository: &str) -> bool {
        self.0.iter().any(|s| s.hears(kind, repository))
    }

    /// The webhooks with `policy` that hear `kind` in `repository`.
    pub fn hearing(&self, kind: EventKind, repository: &str, policy: Policy) -> Vec<String> {
        self.0
            .iter()
            .filter(|s| s.policy == policy && s.hears(kind, repository))
            .map(|s| s.webhook.clone())
            .collect()
    }
}

/// What an event says, besides its kind.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventData {
    pub repository: String,
    /// The tag or digest the client named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The tags the change set or removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The authenticated identity's id; absent for anonymous requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// A CloudEvents 1.0 event in structured mode.
#[derive(Serialize)]
struct CloudEvent<'a> {
    specversion: &'static str,
    id: &'a str,
    source: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    subject: &'a str,
    datacontenttype: &'static str,
    data: &'a EventData,
}

/// The CloudEvents `source` of every event.
pub const SOURCE: &str = "/stowage";

/// `data` as the body of a CloudEvent with `id` at `time`.
pub fn cloud_event(kind: EventKind, id: &str, time: Millis, data: &EventData) -> Bytes {
    let time = UNIX_EPOCH + Duration::from_millis(time.0);
    let event = CloudEvent {
        specversion: "1.0",
        id,
        source: SOURCE,
        kind: kind.cloud_event_type(),
        time: humantime::format_rfc3339_millis(time).to_string(),
        subject: &data.repository,
        datacontenttype: "application/json",
        data,
    };
    // Strings and numbers only: serializing cannot fail.
    Bytes::from(serde_json::to_vec(&event).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(policy: Policy, filter: Option<&str>) -> Subscription {
        Subscription {
            webhook: format!("{policy:?}"),
            events: vec![EventKind::ManifestPushed],
            repository_filter: filter.map(|f| regex::Regex::new(&format!("^(?:{f})$")).unwrap()),
            policy,
        }
    }

    #[test]
    fn a_webhook_hears_its_events_in_the_repositories_its_filter_matches() {
        let subscriptions = Subscriptions::new(vec![
            subscription(Policy::Required, Some("team/.*")),
            subscription(Policy::Async, None),
        ]);
        let pushed = EventKind::ManifestPushed;
        assert_eq!(
            subscriptions.hearing(pushed, "team/app", Policy::Required),
            ["Required"]
        );
        assert!(
            subscriptions
                .hearing(pushed, "other/team/app", Policy::Required)
                .is_empty()
        );
        assert_eq!(
            subscriptions.hearing(pushed, "other", Policy::Async),
            ["Async"]
        );
        assert!(!subscriptions.any(EventKind::TagDeleted, "team/app"));
        assert!(!Subscriptions::default().any(pushed, "team/app"));
    }

    #[test]
    fn the_body_is_a_structured_cloud_event() {
        let data = EventData {
            repository: "team/app".into(),
            reference: Some("v1".into()),
            tags: vec!["v1".into()],
            digest: Some("sha256:ab".into()),
            media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
            size: Some(42),
            identity: None,
        };
        let body = cloud_event(EventKind::ManifestPushed, "e1", Millis(1_000), &data);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "io.stowage.manifest.pushed");
        assert_eq!(json["time"], "1970-01-01T00:00:01.000Z");
        assert_eq!(json["data"]["mediaType"], data.media_type.unwrap());
        assert_eq!(json["data"]["size"], 42);
        assert!(json["data"].get("identity").is_none());
    }
}
