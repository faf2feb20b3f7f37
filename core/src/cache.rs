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

    /// Drops expired entries, then as many others as needed to fit `room` more bytes.
    fn evict(&mut self, now: Millis, room: usize) {
        self.entries.retain(|_, (_, until)| *until > now);
        let mut bytes: usize = self
            .entries
            .iter()
            .map(|(k, (v, _))| k.len() + v.len())
            .sum();
        if bytes + room > self.max_bytes {
            let keys: Vec<String> = self.entries.keys().cloned().collect();
            for key in keys {
                if bytes + room <= self.max_bytes {
                    break;
                }
                if let Some((value, _)) = self.entries.remove(&key) {
                    bytes -= key.len() + value.len();
                }
            }
        }
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
}
