//! The decisions a policy has made, kept by their inputs. A policy is a pure function of
//! the identity and the request, so the same caller asking the same thing again (a CI
//! job's pulls, a node's manifest GETs) is answered without evaluating CEL, which costs
//! more than the rest of serving a cached manifest.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::{Arc, Mutex};

use super::{AccessRequest, Decision, Identity};

/// At most this many inputs are kept; then the memory starts over. Clearing rather than
/// evicting one by one keeps a lookup a single hash probe, and a working set of callers
/// and repositories is relearned in one pass.
const CAPACITY: usize = 4096;

struct Remembered {
    identity: Identity,
    request: AccessRequest,
    decision: Decision,
}

#[derive(Default)]
pub(super) struct Decisions {
    hasher: RandomState,
    // By the inputs' hash; the inputs are kept and compared, so a collision is a miss.
    remembered: Mutex<HashMap<u64, Remembered>>,
}

impl Decisions {
    /// The decision for these inputs, made by `decide` unless it was made before.
    pub(super) fn recall_or(
        &self,
        identity: &Identity,
        request: &AccessRequest,
        decide: impl FnOnce() -> Decision,
    ) -> Decision {
        let key = self.key(identity, request);
        if let Some(seen) = self.lock().get(&key)
            && seen.identity == *identity
            && seen.request == *request
        {
            return seen.decision.clone();
        }
        let decision = decide();
        let mut remembered = self.lock();
        if remembered.len() >= CAPACITY {
            remembered.clear();
        }
        remembered.insert(
            key,
            Remembered {
                identity: identity.clone(),
                request: request.clone(),
                decision: decision.clone(),
            },
        );
        decision
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Remembered>> {
        // The map holds only finished decisions: one a panicking thread left is still sound.
        self.remembered.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(&self, identity: &Identity, request: &AccessRequest) -> u64 {
        let mut h = self.hasher.build_hasher();
        identity.id.hash(&mut h);
        identity.username.hash(&mut h);
        identity.certificate.common_names.hash(&mut h);
        identity.certificate.organizations.hash(&mut h);
        if let Some(oidc) = &identity.oidc {
            oidc.provider.hash(&mut h);
            // The claims by their address, not their text (hashing a CI token's dozen claims
            // cost as much as the rest of a lookup): each request's identity is a clone of
            // the verified token's, sharing its claims, and an entry holds them alive, so the
            // address cannot name other claims while it is remembered. Equal claims at two
            // addresses make two entries, never a wrong answer: the inputs are compared.
            std::ptr::hash(Arc::as_ptr(&oidc.claims), &mut h);
        }
        request.hash(&mut h);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Action, OidcIdentity};

    fn ci(claims: serde_json::Value) -> Identity {
        Identity {
            oidc: Some(OidcIdentity {
                provider: "ci".into(),
                claims: Arc::new(claims),
            }),
            ..Identity::anonymous()
        }
    }

    #[test]
    fn a_clone_of_an_identity_is_answered_from_memory_and_other_claims_are_not() {
        let decisions = Decisions::default();
        let request = AccessRequest::new(Action::Pull, "app");
        let asked = std::cell::Cell::new(0);
        let ask = |identity: &Identity| {
            decisions.recall_or(identity, &request, || {
                asked.set(asked.get() + 1);
                Decision::Allow
            })
        };
        let main = ci(serde_json::json!({ "ref": "main" }));
        ask(&main);
        ask(&main.clone());
        assert_eq!(asked.get(), 1, "a clone shares its claims: one decision");
        ask(&ci(serde_json::json!({ "ref": "dev" })));
        assert_eq!(asked.get(), 2, "other claims are decided anew");
    }
}
