//! Keeping an operation's locks alive while one of its steps runs long (assembling a
//! multi-GiB upload, an S3 multipart copy, waiting for its next lock): the operation says
//! when its locks are due ([`Operation::poll_timeout`]) and which extensions to ask; this
//! only performs them on time.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures_util::future::{Either, select};
use stowage_core::op::Operation;

use crate::{Io, now};

/// Runs `work`, extending `op`'s locks whenever they come due until it ends. A refused
/// extension is the operation's to act on (it stops before its next commit write); one
/// the lock store did not answer is asked again when next due.
pub(crate) async fn during<T>(op: &mut Operation, io: &Io, work: impl Future<Output = T>) -> T {
    let mut work = pin!(work);
    loop {
        let Some(due) = op.poll_timeout() else {
            return work.await;
        };
        let now = now();
        if due <= now {
            for refresh in op.handle_timeout(now) {
                let result = io.locks.apply(&refresh, now).await;
                crate::measure::lock(&refresh, &result);
                if let Ok(taken) = result {
                    op.on_refreshed(now, &refresh, taken);
                }
            }
            continue;
        }
        let tick = io.timer.sleep(Duration::from_millis(due.since(now)));
        if let Either::Left((done, _)) = select(work.as_mut(), tick).await {
            return done;
        }
    }
}
