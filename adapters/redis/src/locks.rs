//! The lock protocol's requests on Redis: `SET NX PX` to take, and Lua scripts that compare
//! the token before they extend or delete.

use redis::Script;
use stowage_core::step::{IoError, LockRequest};
use stowage_core::time::Millis;
use stowage_driver::{BoxFuture, LockStore};

use crate::connection::{Redis, retry_once};

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

    /// Runs `script` on `key` with `args`; `true` when it changed the key.
    async fn compare_and(
        &self,
        what: &str,
        script: &Script,
        key: &str,
        args: &[String],
    ) -> Result<bool, IoError> {
        let key = self.redis.key("lock", key);
        let changed: i64 = retry_once(what, || {
            let mut connection = self.redis.connection();
            let mut invocation = script.key(&key);
            for arg in args {
                invocation.arg(arg);
            }
            async move { invocation.invoke_async(&mut connection).await }
        })
        .await?;
        Ok(changed == 1)
    }

    async fn perform(&self, request: &LockRequest) -> Result<bool, IoError> {
        match request {
            LockRequest::Acquire { key, token, ttl_ms } => {
                let mut set = redis::cmd("SET");
                set.arg(self.redis.key("lock", key))
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(*ttl_ms);
                let reply: Option<String> = retry_once("lock acquire", || {
                    let mut connection = self.redis.connection();
                    let set = set.clone();
                    async move { set.query_async(&mut connection).await }
                })
                .await?;
                Ok(reply.is_some())
            }
            LockRequest::Refresh { key, token, ttl_ms } => {
                let args = [token.clone(), ttl_ms.to_string()];
                self.compare_and("lock refresh", &self.refresh, key, &args)
                    .await
            }
            LockRequest::Release { key, token } => {
                self.compare_and(
                    "lock release",
                    &self.release,
                    key,
                    std::slice::from_ref(token),
                )
                .await
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

    fn ping(&self) -> Option<BoxFuture<'_, Result<(), IoError>>> {
        Some(Box::pin(self.redis.ping()))
    }
}
