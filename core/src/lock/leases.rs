//! The locks an operation holds and when each was last extended: the one refresh policy.
//!
//! The core extends its locks itself before each commit write ([`super::Held::ensure`]), and
//! the driver extends them while a step runs (a multi-GiB assembly, a wait for the next lock)
//! when [`crate::op::Operation::poll_timeout`] comes due, as quinn-proto hands its timers out.
//! Both read the same record, so the simulation, which performs the same deadlines, runs the
//! policy production runs.

use crate::step::LockRequest;
use crate::time::Millis;

#[derive(Debug)]
struct Lease {
    key: String,
    token: String,
    ttl_ms: u64,
    /// When the lock store last confirmed the lock ours (taken or extended at that time).
    confirmed: Millis,
    /// When the driver is next due to extend it.
    due: Millis,
    /// The lock store refused an extension: someone else may hold it now.
    lost: bool,
}

impl Lease {
    /// A lock is extended once a third of its TTL has passed, leaving two thirds for the
    /// extension to arrive.
    fn interval(&self) -> u64 {
        (self.ttl_ms / 3).max(1)
    }
}

/// Where one held lock stands for a commit about to be written.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Confirmed recently enough to write under it.
    Fresh,
    /// Must be extended first; the request does it.
    Due(LockRequest),
    /// Refused an extension, or not held at all.
    Lost,
}

#[derive(Debug, Default)]
pub(crate) struct Leases(Vec<Lease>);

impl Leases {
    /// Follows a lock step issued at `issued` and whether the lock store took it (`false`
    /// when it did not answer). A release is forgotten whatever the answer: nothing is
    /// written under it any more.
    pub(crate) fn record(&mut self, request: &LockRequest, issued: Millis, taken: bool) {
        match request {
            LockRequest::Acquire { key, token, ttl_ms } if taken => {
                let lease = Lease {
                    key: key.clone(),
                    token: token.clone(),
                    ttl_ms: *ttl_ms,
                    confirmed: issued,
                    due: issued,
                    lost: false,
                };
                let due = issued.plus(lease.interval());
                self.0.push(Lease { due, ..lease });
            }
            LockRequest::Refresh { key, token, .. } => {
                if let Some(lease) = self.find(key, token) {
                    if taken {
                        lease.confirmed = lease.confirmed.max(issued);
                    } else {
                        lease.lost = true;
                    }
                }
            }
            LockRequest::Release { key, token } => self
                .0
                .retain(|lease| lease.key != *key || lease.token != *token),
            LockRequest::Acquire { .. } => {}
        }
    }

    fn find(&mut self, key: &str, token: &str) -> Option<&mut Lease> {
        self.0
            .iter_mut()
            .find(|lease| lease.key == key && lease.token == token)
    }

    /// Whether the lock on `key` under `token` may be written under at `now`.
    pub(crate) fn standing(&self, key: &str, token: &str, now: Millis) -> Standing {
        let lease = self
            .0
            .iter()
            .find(|lease| lease.key == key && lease.token == token);
        match lease {
            None => Standing::Lost,
            Some(lease) if lease.lost => Standing::Lost,
            Some(lease) if now.since(lease.confirmed) < lease.interval() => Standing::Fresh,
            Some(lease) => Standing::Due(refresh(lease)),
        }
    }

    /// When the driver must next extend a lock, if any is held and not lost.
    pub(crate) fn next_due(&self) -> Option<Millis> {
        self.0
            .iter()
            .filter(|lease| !lease.lost)
            .map(|lease| lease.due)
            .min()
    }

    /// The extensions due at `now`; each is due again an interval later, so a lock store
    /// that does not answer is retried at that pace rather than at once.
    pub(crate) fn due_at(&mut self, now: Millis) -> Vec<LockRequest> {
        let due = self
            .0
            .iter_mut()
            .filter(|lease| !lease.lost && lease.due <= now);
        due.map(|lease| {
            lease.due = now.plus(lease.interval());
            refresh(lease)
        })
        .collect()
    }
}

fn refresh(lease: &Lease) -> LockRequest {
    LockRequest::Refresh {
        key: lease.key.clone(),
        token: lease.token.clone(),
        ttl_ms: lease.ttl_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquire(key: &str) -> LockRequest {
        LockRequest::Acquire {
            key: key.to_owned(),
            token: "t".to_owned(),
            ttl_ms: 300,
        }
    }

    fn refresh_of(key: &str) -> LockRequest {
        LockRequest::Refresh {
            key: key.to_owned(),
            token: "t".to_owned(),
            ttl_ms: 300,
        }
    }

    #[test]
    fn a_lock_is_due_a_third_of_its_ttl_after_it_was_taken() {
        let mut leases = Leases::default();
        assert_eq!(leases.next_due(), None);
        leases.record(&acquire("a"), Millis(1_000), true);
        leases.record(&acquire("b"), Millis(1_050), false);
        assert_eq!(leases.next_due(), Some(Millis(1_100)));
        assert_eq!(leases.standing("a", "t", Millis(1_099)), Standing::Fresh);
        assert_eq!(
            leases.standing("a", "t", Millis(1_100)),
            Standing::Due(refresh_of("a"))
        );
        assert_eq!(leases.standing("b", "t", Millis(1_000)), Standing::Lost);
    }

    #[test]
    fn the_driver_extends_due_locks_and_a_refused_extension_loses_the_lock() {
        let mut leases = Leases::default();
        leases.record(&acquire("a"), Millis(0), true);
        leases.record(&acquire("b"), Millis(50), true);
        assert_eq!(leases.due_at(Millis(99)), Vec::new());
        assert_eq!(leases.due_at(Millis(100)), vec![refresh_of("a")]);
        // Not answered yet: not confirmed, but not asked again before the next interval.
        assert_eq!(leases.next_due(), Some(Millis(150)));
        assert!(matches!(
            leases.standing("a", "t", Millis(120)),
            Standing::Due(_)
        ));
        leases.record(&refresh_of("a"), Millis(100), true);
        assert_eq!(leases.standing("a", "t", Millis(120)), Standing::Fresh);
        assert_eq!(leases.due_at(Millis(150)), vec![refresh_of("b")]);
        leases.record(&refresh_of("b"), Millis(150), false);
        assert_eq!(leases.standing("b", "t", Millis(151)), Standing::Lost);
        assert_eq!(leases.next_due(), Some(Millis(200)));
        leases.record(
            &LockRequest::Release {
                key: "a".to_owned(),
                token: "t".to_owned(),
            },
            Millis(160),
            true,
        );
        assert_eq!(leases.next_due(), None);
    }
}
