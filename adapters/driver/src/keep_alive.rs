//! Keeping an operation's locks alive while one of its steps runs long (assembling a
//! multi-GiB upload, an S3 multipart copy, waiting for its next lock): the core refreshes its
//! locks only between steps, before each commit write, so a step longer than the TTL would
//! otherwise lose them.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::{Either, select};
use stowage_core::step::LockRequest;
use stowage_core::time::Millis;

use crate::{Io, now};

/// The locks an operation holds, as the refresh requests that extend them.
#[derive(Default)]
pub(crate) struct HeldLocks(Vec<LockRequest>, AtomicU64);

impl HeldLocks {
    /// Follows a lock request and its answer: taken locks are kept, released ones dropped.
    pub(crate) fn track(&mut self, request: &LockRequest, taken: bool) {
        match request {
            LockRequest::Acquire { key, token, ttl_ms } if taken => {
                if self.0.is_empty() {
                    self.1.store(now().0, Ordering::Relaxed);
                }
                self.0.push(LockRequest::Refresh {
                    key: key.clone(),
                    token: token.clone(),
                    ttl_ms: *ttl_ms,
                });
            }
            LockRequest::Release { key, .. } => self.0.retain(|held| match held {
                LockRequest::Refresh { key: held, .. } => held != key,
                _ => true,
            }),
            _ => {}
        }
    }

    /// Runs `work`, refreshing every held lock each third of the shortest TTL until it
    /// ends. A failed refresh is left for the core to find: its own refresh before the
    /// commit write fails too, and the operation stops there.
    pub(crate) async fn during<T>(&self, io: &Io, work: impl Future<Output = T>) -> T {
        let Some(ttl_ms) = self.0.iter().filter_map(ttl).min() else {
            return work.await;
        };
        // Due a third of the TTL after the last refresh, counted across steps: an operation
        // taking many short steps (retry sleeps) must refresh as one taking a long one.
        let interval = (ttl_ms / 3).max(1);
        let mut work = pin!(work);
        loop {
            let due = interval.saturating_sub(now().since(Millis(self.1.load(Ordering::Relaxed))));
            if due == 0 {
                for refresh in &self.0 {
                    let result = io.locks.apply(refresh, now()).await;
                    crate::measure::lock(refresh, &result);
                }
                self.1.store(now().0, Ordering::Relaxed);
                continue;
            }
            let tick = io.timer.sleep(Duration::from_millis(due));
            if let Either::Left((done, _)) = select(work.as_mut(), tick).await {
                return done;
            }
        }
    }
}

fn ttl(request: &LockRequest) -> Option<u64> {
    match request {
        LockRequest::Refresh { ttl_ms, .. } => Some(*ttl_ms),
        _ => None,
    }
}
