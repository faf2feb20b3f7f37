//! Keeping an operation's locks alive while one of its steps runs long (assembling a
//! multi-GiB upload, an S3 multipart copy, waiting for its next lock): the core refreshes its
//! locks only between steps, before each commit write, so a step longer than the TTL would
//! otherwise lose them.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures_util::future::{Either, select};
use stowage_core::step::LockRequest;

use crate::{Backends, now};

/// The locks an operation holds, as the refresh requests that extend them.
#[derive(Default)]
pub(crate) struct HeldLocks(Vec<LockRequest>);

impl HeldLocks {
    /// Follows a lock request and its answer: taken locks are kept, released ones dropped.
    pub(crate) fn track(&mut self, request: &LockRequest, taken: bool) {
        match request {
            LockRequest::Acquire { key, token, ttl_ms } if taken => {
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
    pub(crate) async fn during<T>(&self, backends: &Backends, work: impl Future<Output = T>) -> T {
        let Some(ttl_ms) = self.0.iter().filter_map(ttl).min() else {
            return work.await;
        };
        let interval = Duration::from_millis((ttl_ms / 3).max(1));
        let mut work = pin!(work);
        loop {
            let tick = backends.timer.sleep(interval);
            match select(work.as_mut(), tick).await {
                Either::Left((done, _)) => return done,
                Either::Right(((), _)) => {
                    for refresh in &self.0 {
                        let _ = backends.locks.apply(refresh, now()).await;
                    }
                }
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
