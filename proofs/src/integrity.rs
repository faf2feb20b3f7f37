//! Checks on what is stored, shared by the property checks and the simulation.

use stowage_core::digest::{Algorithm, Digest};

use crate::store::{ObjectStore, Objects};

/// A content-addressed object whose bytes do not hash to its address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} holds {len} bytes hashing to {actual}")]
pub struct CorruptBlob {
    pub key: String,
    pub len: usize,
    pub actual: Digest,
}

/// The digest a `v2/blobs/<alg>/<2 hex>/<hex>/data` key addresses.
pub fn addressed_digest(key: &str) -> Option<Digest> {
    let rest = key.strip_prefix("v2/blobs/")?.strip_suffix("/data")?;
    let mut parts = rest.split('/');
    let (algorithm, prefix, hex) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !hex.starts_with(prefix) || prefix.len() != 2 {
        return None;
    }
    format!("{algorithm}:{hex}").parse().ok()
}

fn corrupt_in(objects: &Objects) -> impl Iterator<Item = CorruptBlob> + '_ {
    objects.iter().filter_map(|(key, data)| {
        let expected = addressed_digest(key)?;
        let actual = Digest::of(expected.algorithm(), data);
        (actual != expected).then(|| CorruptBlob {
            key: key.clone(),
            len: data.len(),
            actual,
        })
    })
}

/// Every blob or manifest, in either store, whose bytes differ from its digest.
pub fn corrupt_blobs(store: &ObjectStore) -> Vec<CorruptBlob> {
    corrupt_in(&store.blobs)
        .chain(corrupt_in(&store.meta))
        .collect()
}

/// Panics on the first corrupt blob: for property checks.
pub fn assert_blobs_intact(store: &ObjectStore) {
    if let Some(corrupt) = corrupt_blobs(store).first() {
        panic!("{corrupt}");
    }
}

/// The sha256 digest of `data`.
pub fn sha256(data: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_keys_name_their_digest() {
        let digest = sha256(b"x");
        let key = stowage_core::layout::blob_data(&digest);
        assert_eq!(addressed_digest(&key), Some(digest));
    }
}
