//! The lock protocol's requests on Redis: `SET NX PX` to take, and Lua scripts that compare
//! the token before they extend or delete.

use redis::Script;
use stowage_core::step::{IoError, LockRequest, Millis};
use stowage_driver::{BoxFuture, LockStore};

use crate::connection::{Redis, io_error};

const REFRESH: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0";

pub struct RedisLocks {
    redis: Redis,
    refresh: Script,
    release: Script,
}

impl RedisLocks {
    pub fn new(redis: Redis) -> Self {
        RedisLocks {
            redis,
            refresh: Script::new(REFRESH),
            release: Script::new(RELEASE),
        }
    }

    async fn perform(&self, request: &LockRequest) -> Result<bool, IoError> {
        let mut connection = self.redis.connection();
        match request {
            LockRequest::Acquire { key, token, ttl_ms } => {
                let reply: Option<String> = redis::cmd("SET")
                    .arg(self.redis.key("lock", key))
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(*ttl_ms)
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| io_error("lock acquire", e))?;
                Ok(reply.is_some())
            }
            LockRequest::Refresh { key, token, ttl_ms } => {
                let extended: i64 = self
                    .refresh
                    .key(self.redis.key("lock", key))
                    .arg(token)
                    .arg(*ttl_ms)
                    .invoke_async(&mut connection)
                    .await
                    .map_err(|e| io_error("lock refresh", e))?;
                Ok(extended == 1)
            }
            LockRequest::Release { key, token } => {
                let deleted: i64 = self
                    .release
                    .key(self.redis.key("lock", key))
                    .arg(token)
                    .invoke_async(&mut connection)
                    .await
                    .map_err(|e| io_error("lock release", e))?;
                Ok(deleted == 1)
            }
        }
    }
}

impl LockStore for RedisLocks {
    /// Redis keeps its own clock for expiry; `now` is the core's, unused here.
    fn apply<'a>(
        &'a self,
        request: &'a LockRequest,
        _now: Millis,
    ) -> BoxFuture<'a, Result<bool, IoError>> {
        Box::pin(self.perform(request))
    }
}
