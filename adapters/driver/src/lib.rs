//! The one driver loop both servers share: it asks an operation for its next step, performs
//! it against the backends (and a mirror's upstreams), and feeds the outcome back until the operation answers.

mod backends;
mod keep_alive;
mod measure;
mod memory;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use stowage_core::cache::key_kind;
use stowage_core::op::Operation;
use stowage_core::step::{Announcement, BodyError, CacheRequest, Millis, Outcome, Response, Step};
use stowage_storage::BodySource;

use keep_alive::HeldLocks;

pub use backends::{
    Backends, BoxFuture, Cache, LockStore, NoUpstreams, NoWebhooks, Timer, Upstreams, Webhooks,
};
pub use measure::describe_metrics;
pub use memory::{MemoryCacheStore, MemoryLockStore};

/// Wall-clock time as the core counts it.
pub fn now() -> Millis {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Millis(since_epoch.as_millis() as u64)
}

/// Runs `op` to completion. `body` is the request body.
pub async fn drive(mut op: Operation, backends: &Backends, body: &mut impl BodySource) -> Response {
    let mut held = HeldLocks::default();
    loop {
        let now = now();
        let outcome = match op.poll(now) {
            Step::Done(response) => return response,
            Step::Storage(request) => {
                let backend = backends.storage.backend(request.store()).kind();
                let kind = request.kind();
                let _upload = request.streams_body().then(measure::UploadInFlight::start);
                let started = Instant::now();
                let work = backends.storage.perform(request, body);
                let outcome = held.during(backends, work).await;
                measure::storage(backend, kind, &outcome, started.elapsed());
                outcome
            }
            Step::Lock(request) => {
                let result = backends.locks.apply(&request, now).await;
                measure::lock(&request, &result);
                match result {
                    Ok(taken) => {
                        held.track(&request, taken);
                        Outcome::Lock(taken)
                    }
                    Err(e) => Outcome::Failed(e),
                }
            }
            Step::Cache(request) => {
                let lookup = match &request {
                    CacheRequest::Get { key } => Some(key_kind(key)),
                    CacheRequest::Put { .. } | CacheRequest::Remove { .. } => None,
                };
                let result = backends.cache.apply(request, now).await;
                if let Some(kind) = lookup {
                    measure::cache_lookup(kind, &result);
                }
                match result {
                    Ok(value) => Outcome::Cache(value),
                    Err(e) => Outcome::Failed(e),
                }
            }
            // A fetch runs as long as the blob is large: the fetch lock must outlive it.
            Step::Upstream(request) => {
                let kind = request.kind();
                let started = Instant::now();
                let work = backends.upstreams.perform(request, &backends.storage);
                let answer = held.during(backends, work).await;
                measure::upstream(kind, &answer, started.elapsed());
                Outcome::Upstream(answer)
            }
            Step::ReadBody { limit } => {
                Outcome::BodyBytes(held.during(backends, read_body(body, limit)).await)
            }
            // A required webhook is told under the operation's locks, which must not expire
            // while it answers.
            Step::Announce(Announcement::Deliver {
                body,
                webhooks,
                policy,
            }) => {
                let delivery = backends.webhooks.deliver(&body, &webhooks, policy);
                Outcome::Announced(held.during(backends, delivery).await)
            }
            Step::Announce(Announcement::Queued) => {
                backends.webhooks.queued();
                Outcome::Done
            }
            // Waiting for one lock must not let the ones already taken expire.
            Step::Sleep { ms } => {
                let waited = Duration::from_millis(ms);
                held.during(backends, backends.timer.sleep(waited)).await;
                measure::lock_wait(waited);
                Outcome::Done
            }
        };
        op.on_result(outcome);
    }
}

/// Reads a whole (small) body, refusing it once it passes `limit` bytes.
async fn read_body(body: &mut impl BodySource, limit: u64) -> Result<Bytes, BodyError> {
    let mut buffer = BytesMut::new();
    while let Some(chunk) = body.next_chunk().await {
        let chunk = chunk?;
        if (buffer.len() + chunk.len()) as u64 > limit {
            return Err(BodyError::TooLarge { limit });
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}
