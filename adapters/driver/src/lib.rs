//! The one driver loop both servers share: it asks an operation for its next step, performs
//! it against its IO (and a mirror's upstreams), and feeds the outcome back until the operation answers.

mod early;
mod io;
mod keep_alive;
mod measure;
mod memory;
pub mod series;
mod stored;
mod trace;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, stream};
use stowage_core::cache::key_kind;
use stowage_core::op::Operation;
use stowage_core::step::{
    Announcement, BodyError, CacheRequest, IoError, Outcome, Response, Step, StorageRequest,
};
use stowage_core::time::Millis;
use stowage_storage::BodySource;

pub use early::{AnswerEarly, Chunks, EarlyAnswer, Piece, Tee, answer_early};
pub use io::{
    BoxFuture, Cache, Io, LockStore, NoProgress, NoUpstreams, NoWebhooks, ProgressDisplay, Spawn,
    Timer, Upstreams, Webhooks,
};
pub use measure::describe_metrics;
pub use memory::{MemoryCacheStore, MemoryLockStore};
pub use stored::open_stored;
pub use trace::Traced;

/// Wall-clock time as the core counts it.
pub fn now() -> Millis {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Millis(since_epoch.as_millis() as u64)
}

/// Runs `op` to completion. `body` is the request body; `trace`, when the request is traced,
/// gets a span for each step; `early`, when given, takes an answer the client gets before the
/// operation ends (a mirror's streamed fetch), and then the returned one is not for it.
pub async fn drive(
    mut op: Operation,
    io: &Io,
    body: &mut impl BodySource,
    trace: Option<&Traced<'_>>,
    early: Option<&AnswerEarly>,
) -> Response {
    loop {
        let now = now();
        let outcome = match op.poll(now) {
            Step::Respond(response) => return response,
            Step::Storage(request) => {
                keep_alive::during(&mut op, io, stores(io, request, body, trace)).await
            }
            Step::StorageBatch(requests) => {
                let each = stream::iter(requests)
                    .map(|request| async move {
                        if request.streams_body() {
                            return Outcome::Failed(IoError {
                                message: "a storage batch cannot stream the request body"
                                    .to_owned(),
                            });
                        }
                        stores(io, request, &mut (), trace).await
                    })
                    .buffered(BATCH_CONCURRENCY)
                    .collect();
                Outcome::Batch(keep_alive::during(&mut op, io, each).await)
            }
            Step::Lock(request) => {
                let mut span = trace::span(trace, || trace::lock(&request));
                let result = io.locks.apply(&request, now).await;
                let label = measure::lock(&request, &result);
                span.outcome(label, result.as_ref().err().map(|e| e.message.as_str()));
                match result {
                    Ok(taken) => Outcome::Lock(taken),
                    Err(e) => Outcome::Failed(e),
                }
            }
            Step::Cache(request) => {
                let lookup = match &request {
                    CacheRequest::Get { key } => Some(key_kind(key)),
                    CacheRequest::Put { .. } | CacheRequest::Remove { .. } => None,
                };
                let mut span = trace::span(trace, || trace::cache(&request));
                let result = io.cache.apply(request, now).await;
                let error = result.as_ref().err().map(|e| e.message.as_str());
                match lookup {
                    Some(kind) => span.outcome(measure::cache_lookup(kind, &result), error),
                    None => span.outcome(if error.is_some() { "error" } else { "ok" }, error),
                }
                match result {
                    Ok(value) => Outcome::Cache(value),
                    Err(e) => Outcome::Failed(e),
                }
            }
            // A fetch runs as long as the blob is large: the fetch lock must outlive it.
            Step::Upstream(request) => {
                let kind = request.kind();
                let mut span = trace::span(trace, || trace::upstream(kind));
                let started = Instant::now();
                let work = io.upstreams.perform(request, &io.stores, early);
                let answer = keep_alive::during(&mut op, io, work).await;
                span.outcome(measure::upstream(kind, &answer, started.elapsed()), None);
                Outcome::Upstream(answer)
            }
            Step::ReadBody { limit } => {
                Outcome::BodyBytes(keep_alive::during(&mut op, io, read_body(body, limit)).await)
            }
            // A required webhook is told under the operation's locks, which must not expire
            // while it answers.
            Step::Announce(Announcement::Deliver {
                body,
                webhooks,
                policy,
            }) => {
                let mut span = trace::span(trace, || trace::webhooks(&webhooks));
                let delivery = io.webhooks.deliver(&body, &webhooks, policy);
                let undelivered = keep_alive::during(&mut op, io, delivery).await;
                let outcome = if undelivered.is_empty() {
                    "ok"
                } else {
                    "undelivered"
                };
                span.outcome(outcome, undelivered.first().map(|u| u.reason.as_str()));
                Outcome::Announced(undelivered)
            }
            Step::Progress(progress) => {
                io.progress.show(&progress);
                Outcome::Ok
            }
            Step::Announce(Announcement::Queued) => {
                io.webhooks.queued();
                Outcome::Ok
            }
            // Waiting for one lock must not let the ones already taken expire.
            Step::Sleep { ms } => {
                let _span = trace::span(trace, || trace::lock_wait(ms));
                let waited = Duration::from_millis(ms);
                keep_alive::during(&mut op, io, io.timer.sleep(waited)).await;
                measure::lock_wait(waited);
                Outcome::Ok
            }
        };
        op.on_result(outcome);
    }
}

/// How many requests of one storage batch are in flight at once: enough that the layers of
/// an image of 30 are checked in one round trip, few enough not to flood the store.
const BATCH_CONCURRENCY: usize = 64;

/// Performs one storage request, measured and traced.
async fn stores(
    io: &Io,
    request: StorageRequest,
    body: &mut impl BodySource,
    trace: Option<&Traced<'_>>,
) -> Outcome {
    let backend = io.stores.store(request.store()).kind();
    let kind = request.kind();
    let mut span = trace::span(trace, || {
        trace::stores(backend, kind, request.store(), request.subject())
    });
    let _upload = request.streams_body().then(measure::UploadInFlight::start);
    let started = Instant::now();
    let outcome = io.stores.perform(request, body).await;
    let label = measure::stores(backend, kind, &outcome, started.elapsed());
    span.outcome(label, failure(&outcome));
    outcome
}

/// The backend's message when a storage operation failed (a refused body is the client's
/// doing, not a failure).
fn failure(outcome: &Outcome) -> Option<&str> {
    match outcome {
        Outcome::Failed(e) => Some(&e.message),
        _ => None,
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
