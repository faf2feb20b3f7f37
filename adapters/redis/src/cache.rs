//! The shared cache on Redis: `GET`, `SET PX` (with `NX` for readers' fills), `DEL`.

use bytes::Bytes;
use stowage_core::step::{CacheRequest, IoError, Millis};
use stowage_driver::{BoxFuture, Cache};

use crate::connection::{Redis, io_error};

pub struct RedisCache {
    redis: Redis,
}

impl RedisCache {
    pub fn new(redis: Redis) -> Self {
        RedisCache { redis }
    }

    async fn perform(&self, request: CacheRequest) -> Result<Option<Bytes>, IoError> {
        let mut connection = self.redis.connection();
        match request {
            CacheRequest::Get { key } => {
                let value: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(self.redis.key("cache", &key))
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| io_error("cache get", e))?;
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
                let _: Option<String> = set
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| io_error("cache set", e))?;
                Ok(None)
            }
            CacheRequest::Delete { keys } => {
                if keys.is_empty() {
                    return Ok(None);
                }
                let keys: Vec<String> = keys.iter().map(|k| self.redis.key("cache", k)).collect();
                let _: i64 = redis::cmd("DEL")
                    .arg(keys)
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| io_error("cache delete", e))?;
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
}
