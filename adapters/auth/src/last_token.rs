//! The last token a connection presented and what it proved. A client sends one token on
//! every request of a keep-alive connection; comparing it with the last one costs less than
//! hashing it to look it up among the verified tokens. The comparison takes constant time:
//! behind a proxy that pools connections, the last token may be another client's.

use std::sync::{Mutex, MutexGuard};

use constant_time_eq::constant_time_eq;
use stowage_core::access::Authentication;

/// One per connection, shared by its requests.
#[derive(Default)]
pub struct LastToken(Mutex<Option<Remembered>>);

struct Remembered {
    token: Box<str>,
    /// The OIDC provider a Basic login named, with the token as its password.
    provider: Option<Box<str>>,
    authentication: Authentication,
    /// Unix seconds: when the verified tokens' cache would forget it too.
    expires: u64,
}

impl LastToken {
    /// What `token` proved when this connection last presented it (as the password of
    /// `provider`), unless it has expired by `now`.
    pub(crate) fn recall(
        &self,
        token: &str,
        provider: Option<&str>,
        now: u64,
    ) -> Option<Authentication> {
        let last = self.lock();
        let last = last.as_ref()?;
        let same = constant_time_eq(last.token.as_bytes(), token.as_bytes());
        (same && now < last.expires && last.provider.as_deref() == provider)
            .then(|| last.authentication.clone())
    }

    pub(crate) fn remember(
        &self,
        token: &str,
        provider: Option<&str>,
        authentication: &Authentication,
        expires: u64,
    ) {
        *self.lock() = Some(Remembered {
            token: token.into(),
            provider: provider.map(Into::into),
            authentication: authentication.clone(),
            expires,
        });
    }

    fn lock(&self) -> MutexGuard<'_, Option<Remembered>> {
        // Holds only a finished verification: one a panicking thread left is still sound.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for LastToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LastToken")
    }
}

#[cfg(test)]
mod tests {
    use stowage_core::access::Identity;

    use super::*;

    #[test]
    fn only_the_same_token_for_the_same_provider_before_it_expires_is_recalled() {
        let last = LastToken::default();
        let ci = Authentication::Identified(Identity::user("ci"));
        assert!(last.recall("t1", None, 100).is_none(), "nothing yet");
        last.remember("t1", None, &ci, 200);
        assert_eq!(last.recall("t1", None, 199), Some(ci.clone()));
        assert!(last.recall("t1", None, 200).is_none(), "expired");
        assert!(last.recall("t2", None, 100).is_none(), "another token");
        assert!(
            last.recall("t1", Some("github"), 100).is_none(),
            "another provider"
        );
        last.remember("t2", Some("github"), &ci, 300);
        assert!(
            last.recall("t1", None, 100).is_none(),
            "only the last is kept"
        );
        assert_eq!(last.recall("t2", Some("github"), 100), Some(ci));
    }
}
