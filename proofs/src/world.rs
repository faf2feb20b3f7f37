//! Everything an operation's steps act on, in memory: the object store, the lock table, the
//! cache and the clock. One world is one registry deployment; the simulated cluster runs
//! several replicas against one world (a shared lock table and cache, as with Redis).

use bytes::Bytes;
use http::StatusCode;
use stowage_core::access::Caller;
use stowage_core::cache::MemoryCache;
use stowage_core::digest::Digest;
use stowage_core::gc::{GcReport, GcSettings, GcState};
use stowage_core::layout;
use stowage_core::lock::MemoryLocks;
use stowage_core::op::Operation;
use stowage_core::purge::PurgeReport;
use stowage_core::step::{
    Body, CacheRequest, LockRequest, Outcome, Response, Step, UpstreamAnswer, UpstreamRequest,
};
use stowage_core::time::Millis;
use stowage_core::{Entropy, Registry, ReportError, read_report};

use crate::request::{BrokenBody, Reply, Request};
use crate::store::{ObjectStore, RequestBody};
use crate::upstream::{Streamed, UpstreamModel};

/// Room for every cached entry a test creates: eviction is not what we are testing.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// An operation that needs more steps than this is stuck.
pub const MAX_STEPS: usize = 100_000;

/// What performing a step gave.
#[derive(Debug)]
pub enum Performed {
    /// Feed this back with [`Operation::on_result`].
    Outcome(Outcome),
    /// The operation waits this long before it continues (the caller moves time).
    Sleep(u64),
    /// The operation answered.
    Responded(Response),
    /// Feed this back; the client has had its answer already (a blob streamed as it was
    /// fetched): the driver sends this rather than the operation's response.
    AnsweredEarly(Outcome, Reply),
}

#[derive(Debug)]
pub struct World {
    pub store: ObjectStore,
    pub locks: MemoryLocks,
    pub cache: MemoryCache,
    pub now: Millis,
    /// The registry every upstream request goes to, when the test set one.
    pub upstream: Option<UpstreamModel>,
}

impl Default for World {
    fn default() -> Self {
        World {
            store: ObjectStore::default(),
            locks: MemoryLocks::default(),
            cache: MemoryCache::new(CACHE_BYTES),
            now: Millis(1_000_000),
            upstream: None,
        }
    }
}

impl World {
    /// Performs one step at the current time, as the real driver would.
    pub fn perform(&mut self, step: Step, body: &mut RequestBody) -> Performed {
        let outcome = match step {
            Step::Respond(response) => return Performed::Responded(response),
            Step::Sleep { ms } => return Performed::Sleep(ms),
            Step::Storage(request) => self.store.perform(request, body, self.now),
            // Performed last to first, so that no answer lands by the order asked.
            Step::StorageBatch(requests) => {
                let mut outcomes: Vec<Outcome> = requests
                    .into_iter()
                    .rev()
                    .map(|request| self.store.perform(request, body, self.now))
                    .collect();
                outcomes.reverse();
                Outcome::Batch(outcomes)
            }
            Step::Lock(request) => Outcome::Lock(self.lock(&request)),
            Step::Cache(request) => Outcome::Cache(self.cache.apply(request, self.now)),
            Step::ReadBody { limit } => Outcome::BodyBytes(body.read_all(limit)),
            Step::Upstream(request) => {
                let early = match &request {
                    UpstreamRequest::FetchBlob {
                        serve: Some(headers),
                        ..
                    } => Some(headers.clone()),
                    _ => None,
                };
                let answer = match &mut self.upstream {
                    Some(upstream) => upstream.answer(request, &mut self.store, self.now),
                    // A registry that mirrors nothing finds nobody there.
                    None => UpstreamAnswer::Unavailable {
                        reason: "the model has no upstreams".to_owned(),
                        retry_after_ms: None,
                    },
                };
                let streamed = self.upstream.as_ref().and_then(|u| u.streamed.last());
                if let (Some(headers), UpstreamAnswer::Fetched { served: true, .. }) =
                    (early, &answer)
                {
                    let body = match streamed {
                        Some(Streamed::Whole(data)) => Ok(data.clone()),
                        _ => Err(BrokenBody::Cut),
                    };
                    let reply = Reply {
                        status: StatusCode::OK,
                        headers,
                        body,
                    };
                    return Performed::AnsweredEarly(Outcome::Upstream(answer), reply);
                }
                Outcome::Upstream(answer)
            }
            // No webhooks are subscribed in the model.
            Step::Announce(_) => Outcome::Announced(Vec::new()),
            Step::Progress(_) => Outcome::Ok,
        };
        Performed::Outcome(outcome)
    }

    /// Loses every cached entry (the process holding the cache restarted).
    pub fn forget_cache(&mut self) {
        self.cache = MemoryCache::new(CACHE_BYTES);
    }

    /// Applies a lock request at the current time, as the in-memory lock store does.
    pub fn lock(&mut self, request: &LockRequest) -> bool {
        if matches!(request, LockRequest::Acquire { .. }) {
            self.locks.purge_expired(self.now);
        }
        self.locks.apply(request, self.now)
    }

    /// Runs one anonymous request to its answer with no faults; sleeps move the clock.
    pub fn run(&mut self, registry: &Registry, request: Request, seed: u64) -> Reply {
        self.run_as(
            registry,
            request,
            Caller::anonymous(),
            Entropy::from_seed(seed),
        )
    }

    /// [`World::run`] for a given caller, with given randomness.
    pub fn run_as(
        &mut self,
        registry: &Registry,
        request: Request,
        caller: Caller,
        entropy: Entropy,
    ) -> Reply {
        let Request { head, body } = request;
        let op = registry.handle(head, caller, entropy);
        self.drive(op, body)
    }

    /// Runs an operation to what its client received, with no faults; sleeps move the
    /// clock.
    fn drive(&mut self, mut op: Operation, mut body: RequestBody) -> Reply {
        let mut early = None;
        for _ in 0..MAX_STEPS {
            let step = op.poll(self.now);
            match self.perform(step, &mut body) {
                Performed::Outcome(outcome) => op.on_result(outcome),
                Performed::Sleep(ms) => {
                    self.now = self.now.plus(ms);
                    op.on_result(Outcome::Ok);
                }
                Performed::AnsweredEarly(outcome, reply) => {
                    op.on_result(outcome);
                    early = Some(reply);
                }
                Performed::Responded(response) => return self.reply_to(early, response),
            }
        }
        panic!("an operation did not finish within {MAX_STEPS} steps");
    }

    /// Runs one garbage collection to its end with no faults; its report.
    pub fn collect(
        &mut self,
        registry: &Registry,
        settings: GcSettings,
        seed: u64,
    ) -> Result<GcReport, ReportError> {
        self.report(registry.collect(settings, Entropy::from_seed(seed)))
    }

    /// Writes the state a collector publishes while it deletes, with `digest` doomed, as if
    /// a collection stood between its marks.
    pub fn doom(&mut self, digest: &Digest) {
        let state = GcState {
            epoch: 1,
            deleting: true,
        };
        let json = serde_json::to_vec(&state).expect("state serializes");
        self.store.meta.put(layout::GC_STATE, json.into());
        self.store
            .meta
            .put(&layout::gc_doomed(digest), Bytes::new());
    }

    /// Runs one purge of the upload sessions started before `cutoff`; its report.
    pub fn purge_uploads(
        &mut self,
        registry: &Registry,
        cutoff: Millis,
        seed: u64,
    ) -> Result<PurgeReport, ReportError> {
        self.report(registry.purge_uploads(cutoff, Entropy::from_seed(seed)))
    }

    /// Runs an operation of the registry's own to its report.
    fn report<T: serde::de::DeserializeOwned>(&mut self, op: Operation) -> Result<T, ReportError> {
        let reply = self.drive(op, RequestBody::default());
        read_report(reply.status, reply.bytes())
    }

    /// What the client received: the answer given `early`, if any (its stream cut unless
    /// the operation then succeeded, as the driver cuts it), or else `response`.
    pub fn reply_to(&mut self, early: Option<Reply>, response: Response) -> Reply {
        let Some(mut early) = early else {
            return self.reply(response);
        };
        if !response.status.is_success() {
            early.body = Err(BrokenBody::Cut);
        }
        early
    }

    /// The response with its body as a client would receive it. A stored body whose object
    /// is gone is answered as the driver answers it: its cache entry forgotten, a 404.
    pub fn reply(&mut self, response: Response) -> Reply {
        let body = match response.body {
            Body::Empty => Ok(Bytes::new()),
            Body::Bytes(bytes) => Ok(bytes),
            Body::Stored {
                store,
                key,
                cached_as,
                ..
            } if self.store.objects(store).get(&key).is_none() => {
                let forget = CacheRequest::Remove { key: cached_as };
                self.cache.apply(forget, self.now);
                return self.reply(stowage_core::stored_object_gone());
            }
            Body::Stored {
                store, key, span, ..
            } => self
                .store
                .read_span(store, &key, span)
                .ok_or(BrokenBody::NotStored { key, span }),
        };
        Reply {
            status: response.status,
            headers: response.headers,
            body,
        }
    }
}
