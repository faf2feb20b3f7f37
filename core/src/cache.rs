//! The single-instance cache: plain data with expiry, time passed in, bounded in bytes; when
//! full, the least recently used entries make room.

use bytes::Bytes;
use lru::LruCache;

use crate::step::CacheRequest;
use crate::time::Millis;

/// What a cache key holds, as a bounded metrics label: the word the key starts with (see
/// the key functions in `handlers/ctx.rs`), never the repository or digest that follows.
pub fn key_kind(key: &str) -> &'static str {
    const KINDS: [&str; 4] = ["tag", "manifest", "blob", "blob-data"];
    let word = key.split(['/', ':']).next().unwrap_or_default();
    KINDS
        .into_iter()
        .find(|kind| *kind == word)
        .unwrap_or("other")
}

#[derive(Debug)]
pub struct MemoryCache {
    /// Each value with the time it expires.
    entries: LruCache<String, (Bytes, Millis)>,
    bytes: usize,
    max_bytes: usize,
}

impl MemoryCache {
    pub fn new(max_bytes: usize) -> Self {
        MemoryCache {
            entries: LruCache::unbounded(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Applies one request at `now`; a `Get` answers with the value, if fresh.
    pub fn apply(&mut self, request: CacheRequest, now: Millis) -> Option<Bytes> {
        match request {
            CacheRequest::Get { key } => match self.entries.get(&key) {
                Some((value, until)) if *until > now => Some(value.clone()),
                Some(_) => {
                    self.remove(&key);
                    None
                }
                None => None,
            },
            CacheRequest::Put {
                key,
                value,
                ttl_ms,
                only_if_absent,
            } => {
                let size = key.len() + value.len();
                let present = self
                    .entries
                    .peek(&key)
                    .is_some_and(|(_, until)| *until > now);
                if size > self.max_bytes || (only_if_absent && present) {
                    return None;
                }
                self.remove(&key);
                while self.bytes + size > self.max_bytes {
                    let Some((old_key, (old_value, _))) = self.entries.pop_lru() else {
                        break;
                    };
                    self.bytes -= old_key.len() + old_value.len();
                }
                self.bytes += size;
                self.entries.put(key, (value, now.plus(ttl_ms)));
                None
            }
            CacheRequest::Remove { key } => {
                self.remove(&key);
                None
            }
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some((value, _)) = self.entries.pop(key) {
            self.bytes -= key.len() + value.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &'static [u8]) -> CacheRequest {
        CacheRequest::Put {
            key: key.into(),
            value: Bytes::from_static(value),
            ttl_ms: 10,
            only_if_absent: false,
        }
    }

    fn get(key: &str) -> CacheRequest {
        CacheRequest::Get { key: key.into() }
    }

    #[test]
    fn expires_and_stays_bounded() {
        let mut cache = MemoryCache::new(16);
        cache.apply(put("a", b"12345"), Millis(0));
        assert_eq!(
            cache.apply(get("a"), Millis(5)).as_deref(),
            Some(&b"12345"[..])
        );
        assert_eq!(cache.apply(get("a"), Millis(10)), None);
        cache.apply(put("b", b"1234567"), Millis(10));
        cache.apply(put("c", b"1234567"), Millis(10));
        assert!(cache.bytes <= 16);
        let fill = CacheRequest::Put {
            key: "b".into(),
            value: Bytes::from_static(b"stale"),
            ttl_ms: 10,
            only_if_absent: true,
        };
        cache.apply(fill, Millis(10));
        assert_eq!(
            cache.apply(get("b"), Millis(10)).as_deref(),
            Some(&b"1234567"[..])
        );
    }

    #[test]
    fn a_full_cache_drops_the_least_recently_used() {
        let mut cache = MemoryCache::new(800);
        let value = Bytes::from(vec![0u8; 98]);
        let fill = |key: &str| CacheRequest::Put {
            key: key.into(),
            value: value.clone(),
            ttl_ms: 1_000,
            only_if_absent: true,
        };
        for n in 0..8 {
            cache.apply(fill(&format!("k{n}")), Millis(0));
        }
        assert_eq!(cache.bytes, 800);
        assert!(cache.apply(get("k0"), Millis(1)).is_some());
        cache.apply(fill("k8"), Millis(2));
        assert_eq!(cache.bytes, 800);
        assert!(
            cache.apply(get("k1"), Millis(3)).is_none(),
            "k1 was the least used"
        );
        for key in ["k0", "k2", "k8"] {
            assert!(
                cache.apply(get(key), Millis(3)).is_some(),
                "{key} was dropped"
            );
        }
    }
}
