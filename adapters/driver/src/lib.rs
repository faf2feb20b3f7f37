//! The one driver loop both servers share: it asks an operation for its next step, performs
//! it against the backends, and feeds the outcome back until the operation answers.

mod backends;
mod keep_alive;
mod memory;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use stowage_core::op::Operation;
use stowage_core::step::{BodyError, Millis, Outcome, Response, Step};
use stowage_storage::BodySource;

use keep_alive::HeldLocks;

pub use backends::{Backends, BoxFuture, Cache, LockStore, Timer};
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
                let work = backends.storage.perform(request, body);
                held.during(backends, work).await
            }
            Step::Lock(request) => match backends.locks.apply(&request, now).await {
                Ok(taken) => {
                    held.track(&request, taken);
                    Outcome::Lock(taken)
                }
                Err(e) => Outcome::Failed(e),
            },
            Step::Cache(request) => match backends.cache.apply(request, now).await {
                Ok(value) => Outcome::Cache(value),
                Err(e) => Outcome::Failed(e),
            },
            Step::ReadBody { limit } => {
                Outcome::BodyBytes(held.during(backends, read_body(body, limit)).await)
            }
            // Waiting for one lock must not let the ones already taken expire.
            Step::Sleep { ms } => {
                let sleep = backends.timer.sleep(Duration::from_millis(ms));
                held.during(backends, sleep).await;
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
