//! What the driver performs steps against.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use stowage_core::events::Policy;
use stowage_core::step::{
    CacheRequest, IoError, LockRequest, Progress, Undelivered, UpstreamAnswer, UpstreamRequest,
};
use stowage_core::time::Millis;
use stowage_storage::Stores;

use crate::early::AnswerEarly;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A lock table: in memory for one instance, Redis for several.
pub trait LockStore: Send + Sync {
    /// Applies a lock request at `now`; `true` when it took effect.
    fn apply<'a>(
        &'a self,
        request: &'a LockRequest,
        now: Millis,
    ) -> BoxFuture<'a, Result<bool, IoError>>;

    /// A cheap request proving the lock store answers (readiness), or `None` when it lives
    /// in the process and always does.
    fn ping(&self) -> Option<BoxFuture<'_, Result<(), IoError>>> {
        None
    }
}

/// A cache: in memory per instance, or Redis shared by replicas.
pub trait Cache: Send + Sync {
    /// Applies a cache request at `now`; a `Get` answers with the value.
    fn apply(
        &self,
        request: CacheRequest,
        now: Millis,
    ) -> BoxFuture<'_, Result<Option<Bytes>, IoError>>;

    /// A cheap request proving the cache answers (readiness), or `None` when it lives in
    /// the process and always does.
    fn ping(&self) -> Option<BoxFuture<'_, Result<(), IoError>>> {
        None
    }
}

/// The upstream registries mirrored repositories ask, by the index the core names them by.
pub trait Upstreams: Send + Sync {
    /// Performs one upstream request; a fetched blob is written through `storage` (and
    /// streamed to the client through `early`, when the request says to serve it).
    fn perform<'a>(
        &'a self,
        request: UpstreamRequest,
        stores: &'a Stores,
        early: Option<&'a AnswerEarly>,
    ) -> BoxFuture<'a, UpstreamAnswer>;
}

/// No upstreams: a registry that mirrors nothing (the core never asks it).
pub struct NoUpstreams;

impl Upstreams for NoUpstreams {
    fn perform<'a>(
        &'a self,
        _request: UpstreamRequest,
        _stores: &'a Stores,
        _early: Option<&'a AnswerEarly>,
    ) -> BoxFuture<'a, UpstreamAnswer> {
        Box::pin(async {
            UpstreamAnswer::Unavailable {
                reason: "no upstream is configured".to_owned(),
                retry_after_ms: None,
            }
        })
    }
}

/// The runtime's timer (tokio and smol each bring theirs).
pub trait Timer: Send + Sync {
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// The runtime's way to run a task beside the request that started it: the rest of an
/// operation that answered early (a mirror's fetch) goes on whether its client reads or not.
pub trait Spawn: Send + Sync {
    /// Runs `task` to its end, on the worker that asks where the runtime has several.
    fn spawn(&self, task: BoxFuture<'static, ()>);
}

/// Where events go: the configured webhooks.
pub trait Webhooks: Send + Sync {
    /// Delivers `body` to each of `webhooks` now; those that did not take it.
    fn deliver<'a>(
        &'a self,
        body: &'a Bytes,
        webhooks: &'a [String],
        policy: Policy,
    ) -> BoxFuture<'a, Vec<Undelivered>>;

    /// Events were just queued in the metadata store: deliver them soon.
    fn queued(&self);

    /// Delivers the events queued in `io`' metadata store, forever: spawn it beside
    /// the server.
    fn deliver_queued(&self, io: Io) -> BoxFuture<'static, ()>;
}

/// No webhooks: the core asks for no delivery when none is subscribed.
pub struct NoWebhooks;

impl Webhooks for NoWebhooks {
    fn deliver<'a>(
        &'a self,
        _body: &'a Bytes,
        _webhooks: &'a [String],
        _policy: Policy,
    ) -> BoxFuture<'a, Vec<Undelivered>> {
        Box::pin(std::future::ready(Vec::new()))
    }

    fn queued(&self) {}

    fn deliver_queued(&self, _io: Io) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// Where a long operation's progress is shown (`stowage gc` on a terminal).
pub trait ProgressDisplay: Send + Sync {
    fn show(&self, progress: &Progress);
}

/// Shows nothing: a server's collections log their outcome instead.
pub struct NoProgress;

impl ProgressDisplay for NoProgress {
    fn show(&self, _progress: &Progress) {}
}

/// Everything an operation's steps are performed against.
#[derive(Clone)]
pub struct Io {
    pub stores: Stores,
    pub locks: Arc<dyn LockStore>,
    pub cache: Arc<dyn Cache>,
    pub timer: Arc<dyn Timer>,
    pub spawner: Arc<dyn Spawn>,
    pub upstreams: Arc<dyn Upstreams>,
    pub webhooks: Arc<dyn Webhooks>,
    pub progress: Arc<dyn ProgressDisplay>,
}
