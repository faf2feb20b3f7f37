//! A provider's keys, fetched from its JWKS URL and kept in the cache store, so that every
//! replica sharing the cache (Redis) shares one copy and the provider is asked once per
//! refresh interval by the whole deployment, not once per replica or per request.
//!
//! Three cache entries per provider:
//! - the document (`jwks:<id>`): the JWKS as fetched and when, kept [`USABLE_INTERVALS`]
//!   refresh intervals. It is refreshed after one; when the provider cannot be reached, the
//!   keys already held keep working until the entry expires.
//! - the fetch lease (`jwks-lease:<id>:<generation>`): taken (`SET NX`) by the one replica
//!   that replaces the document of that generation (the time it was fetched; 0 for none);
//!   the others keep using what they hold, or wait for its result when they hold nothing.
//!   Once the new document is stored, leases are for its generation, so nothing needs
//!   releasing; a failed fetch leaves its lease until it expires, so an unreachable
//!   provider is tried at most once per [`LEASE_TTL`].
//! - the refetch slot (`jwks-refetch:<id>`): a token naming a `kid` the document lacks
//!   (a rotated key) asks for a new document, at most once per [`REFETCH_SPACING`] for the
//!   whole deployment, so a flood of made-up `kid`s is not a flood of fetches.
//!
//! When the cache store cannot be reached, nothing is fetched (fail closed): the keys this
//! replica holds keep working, tokens that need others are refused.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use jsonwebtoken::Algorithm;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stowage_core::step::CacheRequest;
use stowage_driver::{Cache, Timer, now};

use crate::fetch::{FETCH_TIMEOUT, Fetch, JwksLocation};
use crate::jwks::KeySet;

/// A fetch is discovery and the JWKS: two requests at most.
const LEASE_TTL: Duration = Duration::from_millis(2 * FETCH_TIMEOUT.as_millis() as u64 + 1000);
/// At most one refetch for an unknown `kid` per provider in this long.
pub const REFETCH_SPACING: Duration = Duration::from_secs(10);
/// A document stays usable this many refresh intervals after it was fetched.
pub const USABLE_INTERVALS: u64 = 4;
/// How often a replica without keys looks for the document another one is fetching.
const POLL: Duration = Duration::from_millis(50);

/// What replicas share through the cache.
#[derive(Clone)]
pub struct Shared {
    pub cache: Arc<dyn Cache>,
    pub timer: Arc<dyn Timer>,
    pub fetch: Arc<dyn Fetch>,
}

/// The document as stored in the cache.
#[derive(Serialize, Deserialize)]
struct Stored {
    fetched_at_ms: u64,
    document: String,
}

/// A parsed document.
#[derive(Clone)]
struct Held {
    fetched_at_ms: u64,
    keys: Arc<KeySet>,
}

/// A lease's value: who took it and when, and whether that fetch failed.
#[derive(Serialize, Deserialize, PartialEq)]
struct Lease {
    holder: String,
    taken_at_ms: u64,
    failed: bool,
}

pub struct RemoteKeys {
    /// For logs: `oidc provider "github-actions"`.
    name: String,
    location: JwksLocation,
    refresh_ms: u64,
    document_key: String,
    /// Followed by `:<generation>`.
    lease_prefix: String,
    refetch_key: String,
    shared: Shared,
    held: Mutex<Option<Held>>,
}

impl RemoteKeys {
    /// `identity` names the keys in the cache: the provider and where its keys are, so a
    /// provider whose configuration changes does not read another's document.
    pub fn new(
        name: String,
        identity: &str,
        location: JwksLocation,
        refresh: Duration,
        shared: Shared,
    ) -> Self {
        let id = hex::encode(&Sha256::digest(identity.as_bytes())[..12]);
        RemoteKeys {
            name,
            location,
            refresh_ms: refresh.as_millis().max(1) as u64,
            document_key: format!("jwks:{id}"),
            lease_prefix: format!("jwks-lease:{id}"),
            refetch_key: format!("jwks-refetch:{id}"),
            shared,
            held: Mutex::new(None),
        }
    }

    /// Keys that know a token's `kid` and `alg`, fetching a new document when the one held
    /// is due for a refresh or lacks the key (within the limits above). `None`: no usable
    /// document has it.
    pub async fn keys_for(&self, kid: Option<&str>, algorithm: Algorithm) -> Option<Arc<KeySet>> {
        let start = now().0;
        if let Some(held) = self
            .held()
            .filter(|h| !self.due(h, start) && h.keys.knows(kid, algorithm))
        {
            return Some(held.keys);
        }
        self.adopt(self.read_stored().await);
        let held = self.held();
        let known = self.usable(&held, kid, algorithm, start);
        let due = held.as_ref().is_none_or(|h| self.due(h, start));
        if known.is_some() && !due {
            return known;
        }
        // A document not yet due that lacks the key: only a refetch can find a rotated key,
        // and those are rationed.
        let may_fetch = due
            || self
                .take(&self.refetch_key, REFETCH_SPACING, 0)
                .await
                .is_some();
        let generation = held.as_ref().map_or(0, |h| h.fetched_at_ms);
        let lease_key = format!("{}:{generation}", self.lease_prefix);
        // The next document's generation must be newer than this one, even within its
        // millisecond.
        let lease = match may_fetch {
            true => self.take(&lease_key, LEASE_TTL, generation + 1).await,
            false => None,
        };
        match lease {
            Some(taken_at_ms) => self.fetch(&lease_key, taken_at_ms).await,
            // Another replica fetches; what is held serves meanwhile, if it can.
            None if known.is_some() => return known,
            None => self.wait_for_fetch(&lease_key).await,
        }
        self.usable(&self.held(), kid, algorithm, now().0)
    }

    /// Whether `held` should be refreshed at `at`.
    fn due(&self, held: &Held, at: u64) -> bool {
        at >= held.fetched_at_ms.saturating_add(self.refresh_ms)
    }

    /// The keys of `held` if it has not expired at `at` and knows the token's key.
    fn usable(
        &self,
        held: &Option<Held>,
        kid: Option<&str>,
        algorithm: Algorithm,
        at: u64,
    ) -> Option<Arc<KeySet>> {
        let expires = |h: &Held| {
            h.fetched_at_ms
                .saturating_add(USABLE_INTERVALS * self.refresh_ms)
        };
        held.as_ref()
            .filter(|h| at < expires(h) && h.keys.knows(kid, algorithm))
            .map(|h| h.keys.clone())
    }

    fn held(&self) -> Option<Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Keeps `candidate` if it is newer than what is held.
    fn adopt(&self, candidate: Option<Held>) {
        let Some(candidate) = candidate else { return };
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held
            .as_ref()
            .is_none_or(|h| h.fetched_at_ms < candidate.fetched_at_ms)
        {
            *held = Some(candidate);
        }
    }

    async fn cache(&self, request: CacheRequest) -> Option<Bytes> {
        match self.shared.cache.apply(request, now()).await {
            Ok(value) => value,
            Err(e) => {
                tracing::warn!(provider = %self.name, error = %e, "the cache store failed; keys are not refreshed");
                None
            }
        }
    }

    /// The document other replicas (or this one) stored, parsed.
    async fn read_stored(&self) -> Option<Held> {
        let value = self
            .cache(CacheRequest::Get {
                key: self.document_key.clone(),
            })
            .await?;
        let stored: Stored = serde_json::from_slice(&value).ok()?;
        if self
            .held()
            .is_some_and(|h| h.fetched_at_ms >= stored.fetched_at_ms)
        {
            return None;
        }
        match KeySet::from_jwks(stored.document.as_bytes()) {
            Ok(keys) => Some(Held {
                fetched_at_ms: stored.fetched_at_ms,
                keys: Arc::new(keys),
            }),
            Err(e) => {
                tracing::warn!(provider = %self.name, error = %e, "the cached JWKS does not parse");
                None
            }
        }
    }

    /// Takes a lease-like entry for `ttl`: `SET NX` with a value of this call's own, read
    /// back to learn whose value won; the time it was taken (at least `not_before`) when this
    /// call won. Any cache failure is a refusal.
    async fn take(&self, key: &str, ttl: Duration, not_before: u64) -> Option<u64> {
        let mut nonce = [0u8; 16];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let lease = Lease {
            holder: hex::encode(nonce),
            taken_at_ms: now().0.max(not_before),
            failed: false,
        };
        let value = Bytes::from(serde_json::to_vec(&lease).ok()?);
        self.cache(CacheRequest::Put {
            key: key.to_owned(),
            value: value.clone(),
            ttl_ms: ttl.as_millis() as u64,
            only_if_absent: true,
        })
        .await;
        self.cache(CacheRequest::Get {
            key: key.to_owned(),
        })
        .await
        .filter(|stored| *stored == value)
        .map(|_| lease.taken_at_ms)
    }

    /// Fetches the document under the lease taken at `taken_at_ms` and stores it for every
    /// replica; a failure is logged and marked on the lease.
    async fn fetch(&self, lease_key: &str, taken_at_ms: u64) {
        let outcome = match self.location.fetch(&self.shared.fetch).await {
            Ok(document) => match KeySet::from_jwks(&document) {
                Ok(keys) => Ok((document, keys)),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        let (document, keys) = match outcome {
            Ok(fetched) => fetched,
            Err(error) => {
                tracing::warn!(provider = %self.name, error, "cannot fetch the provider's keys");
                self.mark_failed(lease_key, taken_at_ms).await;
                return;
            }
        };
        tracing::info!(provider = %self.name, "fetched the provider's keys");
        let stored = Stored {
            fetched_at_ms: taken_at_ms,
            document: String::from_utf8_lossy(&document).into_owned(),
        };
        if let Ok(value) = serde_json::to_vec(&stored) {
            self.cache(CacheRequest::Put {
                key: self.document_key.clone(),
                value: Bytes::from(value),
                ttl_ms: USABLE_INTERVALS * self.refresh_ms,
                only_if_absent: false,
            })
            .await;
        }
        self.adopt(Some(Held {
            fetched_at_ms: taken_at_ms,
            keys: Arc::new(keys),
        }));
    }

    /// Tells replicas waiting for this fetch that it failed, keeping the lease until it
    /// expires.
    async fn mark_failed(&self, lease_key: &str, taken_at_ms: u64) {
        let Some(mut lease) = self.lease(lease_key).await else {
            return;
        };
        lease.failed = true;
        let left = (taken_at_ms + LEASE_TTL.as_millis() as u64).saturating_sub(now().0);
        if let (Ok(value), true) = (serde_json::to_vec(&lease), left > 0) {
            self.cache(CacheRequest::Put {
                key: lease_key.to_owned(),
                value: Bytes::from(value),
                ttl_ms: left,
                only_if_absent: false,
            })
            .await;
        }
    }

    async fn lease(&self, lease_key: &str) -> Option<Lease> {
        let value = self
            .cache(CacheRequest::Get {
                key: lease_key.to_owned(),
            })
            .await?;
        serde_json::from_slice(&value).ok()
    }

    /// When another replica holds the lease and is still fetching, waits (at most the
    /// fetch's time limit) for the document it stores.
    async fn wait_for_fetch(&self, lease_key: &str) {
        let Some(lease) = self.lease(lease_key).await else {
            return;
        };
        let deadline = lease.taken_at_ms + LEASE_TTL.as_millis() as u64;
        let mut current = Some(lease);
        while let Some(lease) = current.filter(|l| !l.failed && now().0 < deadline) {
            self.adopt(self.read_stored().await);
            if self
                .held()
                .is_some_and(|h| h.fetched_at_ms >= lease.taken_at_ms)
            {
                return;
            }
            self.shared.timer.sleep(POLL).await;
            current = self
                .lease(lease_key)
                .await
                .filter(|l| l.holder == lease.holder);
        }
        self.adopt(self.read_stored().await);
    }
}
