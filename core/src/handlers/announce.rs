//! Announcing a change to webhooks around its commit.
//!
//! `required` webhooks hear of it before anything of it is visible, under the operation's
//! locks: if one does not take the event, nothing is committed and the client gets the
//! error (content-addressed bytes may already be stored, as for any failed push; they
//! belong to no repository). `async` webhooks' events are queued in the metadata store
//! after the commit and before the response, so an acknowledged change is delivered
//! whatever happens to the process; `optional` webhooks are told after the commit, and
//! whether they took it changes nothing.

use std::sync::Arc;

use bytes::Bytes;

use super::Ctx;
use super::listing::repository_exists;
use crate::error::{ErrorCode, RegistryError};
use crate::events::{EventData, EventKind, Policy, Subscriptions, cloud_event};
use crate::layout;
use crate::names::RepoName;
use crate::step::{Announcement, Outcome, Step, StoreRole, Undelivered};
use crate::time::Millis;

/// Who hears this request's events, and who is making it.
#[derive(Clone, Default)]
pub(crate) struct Audience {
    pub(crate) subscriptions: Arc<Subscriptions>,
    /// The caller's identity id; `None` when anonymous.
    pub(crate) identity: Option<String>,
}

/// An event some webhook hears, rendered once so every webhook gets the same body.
pub(crate) struct Event {
    kind: EventKind,
    repository: String,
    id: String,
    time: Millis,
    body: Bytes,
}

/// `data` as an event of `kind`, if any webhook hears it.
pub(crate) fn event(ctx: &Ctx, kind: EventKind, mut data: EventData) -> Option<Event> {
    let audience = &ctx.audience;
    if !audience.subscriptions.any(kind, &data.repository) {
        return None;
    }
    data.identity = audience.identity.clone();
    let (id, time) = (ctx.fresh_id(), ctx.channel.now());
    Some(Event {
        kind,
        body: cloud_event(kind, &id, time, &data),
        repository: data.repository,
        id,
        time,
    })
}

/// `repository_created`, when some webhook hears it and `name` holds nothing yet. Two
/// first pushes racing may both announce it.
pub(crate) async fn repository_created(
    ctx: &Ctx,
    name: &RepoName,
) -> Result<Option<Event>, RegistryError> {
    let kind = EventKind::RepositoryCreated;
    if !ctx.audience.subscriptions.any(kind, name.as_str()) || repository_exists(ctx, name).await? {
        return Ok(None);
    }
    let data = EventData {
        repository: name.to_string(),
        ..EventData::default()
    };
    Ok(event(ctx, kind, data))
}

/// Delivers `events` to the `required` webhooks hearing them, before the change: `Err` when
/// one did not take its event, and the change must not be made.
pub(crate) async fn before(ctx: &Ctx, events: &[Event]) -> Result<(), RegistryError> {
    for event in events {
        let undelivered = deliver(ctx, event, Policy::Required).await?;
        if let Some(first) = undelivered.first() {
            return Err(not_taken(first));
        }
    }
    Ok(())
}

/// After the change and before the response: queues `events` for the `async` webhooks
/// hearing them, then delivers them to the `optional` ones.
pub(crate) async fn after(ctx: &Ctx, events: Vec<Event>) -> Result<(), RegistryError> {
    let subscriptions = &ctx.audience.subscriptions;
    let mut queued = false;
    for event in &events {
        for webhook in subscriptions.hearing(event.kind, &event.repository, Policy::Async) {
            let key = layout::queued_event(event.time, &event.id, &webhook);
            ctx.create(StoreRole::Meta, key, event.body.clone()).await?;
            queued = true;
        }
    }
    if queued {
        ctx.channel
            .perform(Step::Announce(Announcement::Queued))
            .await;
    }
    for event in &events {
        // The driver logs and counts what was not taken; the change stands.
        deliver(ctx, event, Policy::Optional).await?;
    }
    Ok(())
}

async fn deliver(
    ctx: &Ctx,
    event: &Event,
    policy: Policy,
) -> Result<Vec<Undelivered>, RegistryError> {
    let subscriptions = &ctx.audience.subscriptions;
    let webhooks = subscriptions.hearing(event.kind, &event.repository, policy);
    if webhooks.is_empty() {
        return Ok(Vec::new());
    }
    let announcement = Announcement::Deliver {
        body: event.body.clone(),
        webhooks,
        policy,
    };
    match ctx.channel.perform(Step::Announce(announcement)).await {
        Outcome::Announced(undelivered) => Ok(undelivered),
        other => Err(RegistryError::new(
            ErrorCode::Unavailable,
            format!("delivering an event failed: {other:?}"),
        )),
    }
}

/// The client's error when a `required` webhook did not take the event: `403` when the
/// receiver refused it, `503` when it could not be reached or failed.
fn not_taken(undelivered: &Undelivered) -> RegistryError {
    let Undelivered {
        webhook,
        refused,
        reason,
    } = undelivered;
    let code = if *refused {
        ErrorCode::Denied
    } else {
        ErrorCode::Unavailable
    };
    RegistryError::new(
        code,
        format!("webhook {webhook} did not accept the event ({reason}); nothing was changed"),
    )
}
