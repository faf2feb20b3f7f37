//! Redis as the lock store and the cache that several replicas of one store share.

mod cache;
mod connection;
mod locks;

pub use cache::RedisCache;
pub use connection::{Redis, RedisError};
pub use locks::RedisLocks;
