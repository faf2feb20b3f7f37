//! The single-instance lock table and cache: the core's plain data structures behind a mutex.

use std::sync::Mutex;

use bytes::Bytes;
use stowage_core::cache::MemoryCache;
use stowage_core::lock::MemoryLocks;
use stowage_core::step::{CacheRequest, IoError, LockRequest};
use stowage_core::time::Millis;

use crate::io::{BoxFuture, Cache, LockStore};

#[derive(Default)]
pub struct MemoryLockStore(Mutex<MemoryLocks>);

impl LockStore for MemoryLockStore {
    fn apply<'a>(
        &'a self,
        request: &'a LockRequest,
        now: Millis,
    ) -> BoxFuture<'a, Result<bool, IoError>> {
        let mut locks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(request, LockRequest::Acquire { .. }) {
            locks.purge_expired(now);
        }
        let taken = locks.apply(request, now);
        Box::pin(std::future::ready(Ok(taken)))
    }
}

pub struct MemoryCacheStore(Mutex<MemoryCache>);

impl MemoryCacheStore {
    pub fn new(max_bytes: usize) -> Self {
        MemoryCacheStore(Mutex::new(MemoryCache::new(max_bytes)))
    }
}

impl Cache for MemoryCacheStore {
    fn apply(
        &self,
        request: CacheRequest,
        now: Millis,
    ) -> BoxFuture<'_, Result<Option<Bytes>, IoError>> {
        let value = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .apply(request, now);
        Box::pin(std::future::ready(Ok(value)))
    }
}
