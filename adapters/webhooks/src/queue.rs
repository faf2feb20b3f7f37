//! Delivering the events queued for `async` webhooks.
//!
//! A request queues an event (one object per event and webhook, below
//! [`layout::EVENT_QUEUE`] in the metadata store) before it answers, and the object is
//! deleted only once the webhook took the event: what was acknowledged is delivered at
//! least once, whatever happens to the process meanwhile. Every replica looks at the queue;
//! before delivering an event it takes a lease on it (a lock in the shared lock store), so
//! two replicas do not deliver the same event at once, and a lease outlives a crash by no
//! more than its TTL. A failed delivery keeps its lease for the back-off delay, so no
//! replica retries it sooner.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::select;
use stowage_core::events::Policy;
use stowage_core::layout;
use stowage_core::step::{LockRequest, Outcome, Piece, StorageRequest, StoreRole};
use stowage_driver::{Io, now};

use crate::{Webhooks, delivery, measure, outcome};

/// How often the queue is looked at when nothing wakes the deliverer (events queued by
/// other replicas, or left by a process that stopped).
const IDLE_LOOK: Duration = Duration::from_secs(5);
/// The first wait before a queued event is tried again; it doubles.
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
const LONGEST_RETRY_DELAY: Duration = Duration::from_secs(60);
/// How much longer than one attempt's timeout a lease lasts.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// A queued event this replica failed to deliver.
struct Retry {
    failures: u32,
    not_before: Instant,
}

pub(crate) async fn deliver_forever(webhooks: Webhooks, io: Io) {
    let mut deliverer = Deliverer {
        webhooks,
        io,
        token: lease_token(),
        retries: HashMap::new(),
    };
    loop {
        let wait = deliverer.look().await;
        let woken = deliverer.webhooks.inner.queued.notified();
        let slept = deliverer.io.timer.sleep(wait);
        // Whichever comes first: queued events, or the time to look again.
        select(std::pin::pin!(woken), slept).await;
    }
}

/// Tells this deliverer's leases from other replicas'.
fn lease_token() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("events-{}-{nanos:x}", std::process::id())
}

struct Deliverer {
    webhooks: Webhooks,
    io: Io,
    token: String,
    retries: HashMap<String, Retry>,
}

impl Deliverer {
    /// Tries every queued event that is due; how long to wait before looking again.
    async fn look(&mut self) -> Duration {
        let listing = StorageRequest::List {
            store: StoreRole::Meta,
            prefix: layout::EVENT_QUEUE.to_owned(),
        };
        let names = match self.io.stores.perform(listing, &mut ()).await {
            Outcome::List(names) => names,
            other => {
                tracing::warn!(outcome = ?other, "cannot list the queued events");
                return IDLE_LOOK;
            }
        };
        // Forget events that are gone (delivered, by this replica or another).
        self.retries.retain(|name, _| names.contains(name));
        for name in &names {
            let due = self
                .retries
                .get(name)
                .is_none_or(|retry| retry.not_before <= Instant::now());
            if due {
                self.try_deliver(name).await;
            }
        }
        let next_retry = self
            .retries
            .values()
            .map(|retry| retry.not_before.saturating_duration_since(Instant::now()))
            .min();
        next_retry.map_or(IDLE_LOOK, |wait| {
            wait.clamp(Duration::from_millis(50), IDLE_LOOK)
        })
    }

    async fn try_deliver(&mut self, name: &str) {
        let Some(webhook) = layout::queued_event_webhook(name)
            .and_then(|webhook| self.webhooks.inner.by_name.get(webhook))
            .cloned()
        else {
            // Queued for a webhook the configuration no longer has: kept for an operator.
            return;
        };
        let lease = format!("event/{name}");
        let lease_ms = duration_ms(webhook.timeout + LEASE_MARGIN);
        if !self
            .lock(LockRequest::Acquire {
                key: lease.clone(),
                token: self.token.clone(),
                ttl_ms: lease_ms,
            })
            .await
        {
            return;
        }
        let key = format!("{}{name}", layout::EVENT_QUEUE);
        let read = StorageRequest::Read {
            store: StoreRole::Meta,
            key: key.clone(),
        };
        let body = match self.io.stores.perform(read, &mut ()).await {
            Outcome::Read(Some(body)) => body,
            // Delivered by another replica since the listing.
            Outcome::Read(None) => return self.release(lease).await,
            other => {
                tracing::warn!(event = name, outcome = ?other, "cannot read a queued event");
                return self.release(lease).await;
            }
        };
        let result = delivery::post(&self.webhooks.inner.client, &webhook, &body).await;
        measure::attempt(&webhook.name, Policy::Async.name(), outcome(&result));
        match result {
            Ok(()) => {
                self.remove(&key).await;
                self.retries.remove(name);
                self.release(lease).await;
            }
            Err(failure) => {
                let retry = self.retries.entry(name.to_owned()).or_insert(Retry {
                    failures: 0,
                    not_before: Instant::now(),
                });
                retry.failures += 1;
                if retry.failures > webhook.max_retries {
                    tracing::error!(
                        webhook = webhook.name,
                        event = name,
                        reason = failure.reason,
                        "a queued event failed too often: set aside as undeliverable"
                    );
                    measure::undeliverable(&webhook.name);
                    self.set_aside(name, &key).await;
                    self.retries.remove(name);
                    return self.release(lease).await;
                }
                let delay = retry_delay(retry.failures);
                retry.not_before = Instant::now() + delay;
                tracing::warn!(
                    webhook = webhook.name,
                    event = name,
                    reason = failure.reason,
                    retry_in = ?delay,
                    "a queued event was not delivered"
                );
                // Kept for the delay: no replica tries it again sooner.
                self.lock(LockRequest::Refresh {
                    key: lease,
                    token: self.token.clone(),
                    ttl_ms: duration_ms(delay),
                })
                .await;
            }
        }
    }

    async fn lock(&self, request: LockRequest) -> bool {
        match self.io.locks.apply(&request, now()).await {
            Ok(taken) => taken,
            Err(e) => {
                tracing::warn!(error = %e, "the queued events' lease failed");
                false
            }
        }
    }

    async fn release(&self, key: String) {
        self.lock(LockRequest::Release {
            key,
            token: self.token.clone(),
        })
        .await;
    }

    async fn remove(&self, key: &str) {
        let delete = StorageRequest::Delete {
            store: StoreRole::Meta,
            key: key.to_owned(),
        };
        if let other @ (Outcome::Failed(_) | Outcome::ConditionFailed) =
            self.io.stores.perform(delete, &mut ()).await
        {
            // It stays queued and is delivered again: at least once.
            tracing::warn!(key, outcome = ?other, "cannot remove a delivered event");
        }
    }

    /// Moves a queued event to [`layout::UNDELIVERABLE_EVENTS`].
    async fn set_aside(&self, name: &str, key: &str) {
        let to = format!("{}{name}", layout::UNDELIVERABLE_EVENTS);
        let copy = StorageRequest::Concat {
            store: StoreRole::Meta,
            pieces: vec![Piece::whole(key.to_owned())],
            to,
        };
        match self.io.stores.perform(copy, &mut ()).await {
            Outcome::Ok | Outcome::ConditionFailed => self.remove(key).await,
            other => tracing::warn!(key, outcome = ?other, "cannot set an event aside"),
        }
    }
}

fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_RETRY_DELAY * 2u32.pow(doublings)).min(LONGEST_RETRY_DELAY)
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_doubling_up_to_a_minute() {
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(2), Duration::from_secs(2));
        assert_eq!(retry_delay(4), Duration::from_secs(8));
        assert_eq!(retry_delay(30), LONGEST_RETRY_DELAY);
    }
}
