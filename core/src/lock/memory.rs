//! The lock table for one instance: plain data, time passed in.

use std::collections::HashMap;

use crate::step::LockRequest;
use crate::time::Millis;

#[derive(Debug, Default)]
pub struct MemoryLocks {
    held: HashMap<String, (String, Millis)>,
}

impl MemoryLocks {
    /// Applies one request at `now`; `true` when it took effect.
    pub fn apply(&mut self, request: &LockRequest, now: Millis) -> bool {
        match request {
            LockRequest::Acquire { key, token, ttl_ms } => {
                let free = self.held.get(key).is_none_or(|(_, until)| *until <= now);
                if free {
                    self.held
                        .insert(key.clone(), (token.clone(), now.plus(*ttl_ms)));
                }
                free
            }
            LockRequest::Refresh { key, token, ttl_ms } => match self.held.get_mut(key) {
                Some((holder, until)) if holder == token && *until > now => {
                    *until = now.plus(*ttl_ms);
                    true
                }
                _ => false,
            },
            LockRequest::Release { key, token } => {
                let ours = self
                    .held
                    .get(key)
                    .is_some_and(|(holder, _)| holder == token);
                if ours {
                    self.held.remove(key);
                }
                ours
            }
        }
    }

    /// The token holding `key` at `now`, if any.
    pub fn holder(&self, key: &str, now: Millis) -> Option<&str> {
        self.held
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(token, _)| token.as_str())
    }

    /// Forgets expired entries so the table does not grow without bound.
    pub fn purge_expired(&mut self, now: Millis) {
        self.held.retain(|_, (_, until)| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquire(key: &str, token: &str) -> LockRequest {
        LockRequest::Acquire {
            key: key.into(),
            token: token.into(),
            ttl_ms: 100,
        }
    }

    #[test]
    fn exclusive_until_expiry() {
        let mut locks = MemoryLocks::default();
        assert!(locks.apply(&acquire("k", "a"), Millis(0)));
        assert!(!locks.apply(&acquire("k", "b"), Millis(50)));
        assert!(locks.apply(&acquire("k", "b"), Millis(100)));
        let refresh_a = LockRequest::Refresh {
            key: "k".into(),
            token: "a".into(),
            ttl_ms: 100,
        };
        assert!(!locks.apply(&refresh_a, Millis(120)));
        let release_a = LockRequest::Release {
            key: "k".into(),
            token: "a".into(),
        };
        assert!(!locks.apply(&release_a, Millis(120)));
        assert_eq!(locks.holder("k", Millis(120)), Some("b"));
    }
}
