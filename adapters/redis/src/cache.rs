//! The shared cache on Redis: `GET`, and `SET PX` (with `NX` for readers' fills).

use bytes::Bytes;
use redis::{Cmd, FromRedisValue};
use stowage_core::step::{CacheRequest, IoError};
use stowage_core::time::Millis;
use stowage_driver::{BoxFuture, Cache};

use crate::connection::{Redis, retry_once};

pub struct RedisCache {
    redis: Redis,
}

impl RedisCache {
    pub fn new(redis: Redis) -> Self {
        RedisCache { redis }
    }

    async fn query<T: FromRedisValue>(&self, what: &str, command: Cmd) -> Result<T, IoError> {
        retry_once(what, || {
            let mut connection = self.redis.connection();
            let command = command.clone();
            async move { command.query_async(&mut connection).await }
        })
        .await
    }

    async fn perform(&self, request: CacheRequest) -> Result<Option<Bytes>, IoError> {
        match request {
            CacheRequest::Get { key } => {
                let mut get = redis::cmd("GET");
                get.arg(self.redis.key("cache", &key));
                let value: Option<Vec<u8>> = self.query("cache get", get).await?;
                Ok(value.map(Bytes::from))
            }
            CacheRequest::Put {
                key,
                value,
                ttl_ms,
                only_if_absent,
            } => {
                let mut set = redis::cmd("SET");
                set.arg(self.redis.key("cache", &key))
                    .arg(value.as_ref())
                    .arg("PX")
                    .arg(ttl_ms.max(1));
                if only_if_absent {
                    set.arg("NX");
                }
                let _: Option<String> = self.query("cache set", set).await?;
                Ok(None)
            }
            CacheRequest::Remove { key } => {
                let mut del = redis::cmd("DEL");
                del.arg(self.redis.key("cache", &key));
                let _: u64 = self.query("cache remove", del).await?;
                Ok(None)
            }
        }
    }
}

impl Cache for RedisCache {
    /// Redis keeps its own clock for expiry; `now` is the core's, unused here.
    fn apply(
        &self,
        request: CacheRequest,
        _now: Millis,
    ) -> BoxFuture<'_, Result<Option<Bytes>, IoError>> {
        Box::pin(self.perform(request))
    }

    fn ping(&self) -> Option<BoxFuture<'_, Result<(), IoError>>> {
        Some(Box::pin(self.redis.ping()))
    }
}
