//! Taking, refreshing and releasing an operation's locks through lock steps.

use super::leases::Standing;
use crate::config::LockSettings;
use crate::error::{ErrorCode, RegistryError};
use crate::op::Channel;
use crate::rng::Rng;
use crate::step::{LockRequest, Outcome, Step};

/// Locks an operation holds, all under one token. When each was last extended is in the
/// operation's [`super::leases::Leases`], shared with the driver's timer.
#[derive(Debug)]
pub(crate) struct Held {
    keys: Vec<String>,
    token: String,
}

fn lock_failed(outcome: Outcome) -> RegistryError {
    let reason = match outcome {
        Outcome::Failed(e) => e.message,
        other => format!("unexpected lock outcome {other:?}"),
    };
    RegistryError::new(
        ErrorCode::Unavailable,
        format!("lock store unavailable: {reason}"),
    )
}

/// The answer to a commit that must not happen because its lock was lost: nothing was
/// written, and the client may retry.
fn lost(detail: String) -> RegistryError {
    RegistryError::new(ErrorCode::Unavailable, format!("{detail}; retry"))
}

/// A conditional commit write found `key` changed since it was read under the lock: the
/// lock was lost meanwhile and someone else committed.
pub(crate) fn changed_underneath(key: &str) -> RegistryError {
    lost(format!(
        "{key} changed while its lock was held (the lock was lost) before committing"
    ))
}

async fn lock_step(channel: &Channel, request: LockRequest) -> Result<bool, RegistryError> {
    let issued = channel.now();
    let answer = match channel.perform(Step::Lock(request.clone())).await {
        Outcome::Lock(taken) => Ok(taken),
        other => Err(lock_failed(other)),
    };
    let taken = answer.as_ref().is_ok_and(|taken| *taken);
    channel.leases(|leases| leases.record(&request, issued, taken));
    answer
}

impl Held {
    /// Takes every key (sorted, so two operations never wait on each other in a cycle),
    /// retrying a busy key every `retry_delay_ms` plus jitter up to `max_retries` times.
    pub(crate) async fn acquire(
        channel: &Channel,
        rng: &mut Rng,
        settings: &LockSettings,
        mut keys: Vec<String>,
    ) -> Result<Held, RegistryError> {
        keys.sort();
        keys.dedup();
        let mut held = Held {
            keys: Vec::with_capacity(keys.len()),
            token: rng.id(),
        };
        for key in keys {
            let mut retries = 0;
            loop {
                let request = LockRequest::Acquire {
                    key: key.clone(),
                    token: held.token.clone(),
                    ttl_ms: settings.ttl_ms,
                };
                match lock_step(channel, request).await {
                    Ok(true) => break,
                    Ok(false) if retries < settings.max_retries => {
                        retries += 1;
                        let jitter = rng.below(settings.retry_delay_ms + 1);
                        let ms = settings.retry_delay_ms + jitter;
                        channel.perform(Step::Sleep { ms }).await;
                        // The keys taken so far must outlive the wait for this one, which
                        // may be longer than their TTL.
                        if let Err(e) = held.ensure(channel).await {
                            held.release(channel).await;
                            return Err(e);
                        }
                    }
                    Ok(false) => {
                        held.release(channel).await;
                        return Err(RegistryError::new(
                            ErrorCode::Unavailable,
                            format!("{key} is busy; retry later"),
                        ));
                    }
                    Err(e) => {
                        held.release(channel).await;
                        return Err(e);
                    }
                }
            }
            held.keys.push(key);
        }
        Ok(held)
    }

    /// Takes `key` if it is free, without waiting: `None` when someone else holds it.
    pub(crate) async fn try_acquire(
        channel: &Channel,
        rng: &mut Rng,
        settings: &LockSettings,
        key: String,
    ) -> Result<Option<Held>, RegistryError> {
        let token = rng.id();
        let request = LockRequest::Acquire {
            key: key.clone(),
            token: token.clone(),
            ttl_ms: settings.ttl_ms,
        };
        Ok(lock_step(channel, request).await?.then(|| Held {
            keys: vec![key],
            token,
        }))
    }

    /// Makes sure every lock is still ours before a commit write, extending the ones due. A
    /// lock that was refused an extension was lost: the caller must stop.
    pub(crate) async fn ensure(&mut self, channel: &Channel) -> Result<(), RegistryError> {
        let now = channel.now();
        for key in &self.keys {
            let standing = channel.leases(|leases| leases.standing(key, &self.token, now));
            let extended = match standing {
                Standing::Fresh => true,
                Standing::Due(refresh) => lock_step(channel, refresh).await?,
                Standing::Lost => false,
            };
            if !extended {
                return Err(lost(format!("lost lock {key} before committing")));
            }
        }
        Ok(())
    }

    /// Releases every key; a failure here only delays others until the TTL runs out.
    pub(crate) async fn release(self, channel: &Channel) {
        for key in self.keys.into_iter().rev() {
            let request = LockRequest::Release {
                key,
                token: self.token.clone(),
            };
            let _ = lock_step(channel, request).await;
        }
    }
}
