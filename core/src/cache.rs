//! The single-instance cache: plain data with expiry, time passed in, bounded in bytes.

use std::collections::HashMap;

use bytes::Bytes;

use crate::step::{CacheRequest, Millis};

#[derive(Debug)]
pub struct MemoryCache {
    entries: HashMap<String, (Bytes, Millis)>,
    bytes: usize,
    max_bytes: usize,
}

impl MemoryCache {
    pub fn new(max_bytes: usize) -> Self {
        MemoryCache {
            entries: HashMap::new(),
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
                    .get(&key)
                    .is_some_and(|(_, until)| *until > now);
                if size > self.max_bytes || (only_if_absent && present) {
                    return None;
                }
                self.remove(&key);
                if self.bytes + size > self.max_bytes {
                    self.evict(now, size);
                }
                self.bytes += size;
                self.entries.insert(key, (value, now.plus(ttl_ms)));
                None
            }
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some((value, _)) = self.entries.remove(key) {
            self.bytes -= key.len() + value.len();
        }
    }

    /// Drops expired entries, then others (in no particular order) until `room` more bytes
    /// fit with an eighth of the bound to spare: a full cache then scans its entries once
    /// per eighth of its size filled, not on every fill.
    fn evict(&mut self, now: Millis, room: usize) {
        let goal = self.max_bytes - self.max_bytes / 8;
        let mut bytes = self.bytes;
        self.entries.retain(|key, (value, until)| {
            let fresh = *until > now;
            if !fresh {
                bytes -= key.len() + value.len();
            }
            fresh
        });
        self.entries.retain(|key, (value, _)| {
            if bytes + room <= goal {
                return true;
            }
            bytes -= key.len() + value.len();
            false
        });
        self.bytes = bytes;
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
    fn a_full_cache_makes_room_for_more_than_one_fill() {
        let mut cache = MemoryCache::new(800);
        let value = Bytes::from(vec![0u8; 98]);
        let fill = |key: String| CacheRequest::Put {
            key,
            value: value.clone(),
            ttl_ms: 1_000,
            only_if_absent: true,
        };
        for n in 0..8 {
            cache.apply(fill(format!("k{n}")), Millis(0));
        }
        assert_eq!(cache.bytes, 800);
        cache.apply(fill("k8".into()), Millis(0));
        // Evicted down to 7/8 of the bound, the new entry included: the next fill fits
        // without another scan.
        assert!(cache.bytes <= 700, "{} bytes", cache.bytes);
        assert_eq!(cache.bytes, cache.entries.len() * 100);
        assert!(cache.apply(get("k8"), Millis(0)).is_some());
    }
}
