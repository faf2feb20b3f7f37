//! The decisions a policy has made, kept by their inputs. A policy is a pure function of
//! the identity and the request, so the same caller asking the same thing again (a CI
//! job's pulls, a node's manifest GETs) is answered without evaluating CEL, which costs
//! more than the rest of serving a cached manifest.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Mutex;

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
            hash_json(&oidc.claims, &mut h);
        }
        request.hash(&mut h);
        h.finish()
    }
}

/// Hashes a JSON value as it is, without printing it first.
fn hash_json(value: &serde_json::Value, h: &mut impl Hasher) {
    use serde_json::Value;
    std::mem::discriminant(value).hash(h);
    match value {
        Value::Null => {}
        Value::Bool(b) => b.hash(h),
        Value::Number(n) => (n.as_i64(), n.as_u64(), n.as_f64().map(f64::to_bits)).hash(h),
        Value::String(s) => s.hash(h),
        Value::Array(items) => items.iter().for_each(|item| hash_json(item, h)),
        Value::Object(map) => map.iter().for_each(|(key, item)| {
            key.hash(h);
            hash_json(item, h);
        }),
    }
}
