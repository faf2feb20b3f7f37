//! Documents the checks push: small blobs and the image manifests naming them.

use bytes::Bytes;
use serde_json::json;
use stowage_core::digest::Digest;
use stowage_core::manifest::OCI_MANIFEST;

use crate::integrity::sha256;

/// A small blob whose content depends on `seed` (`seed % 5 == 0` gives an empty blob).
pub fn blob(seed: u64) -> Bytes {
    let len = (seed % 5) * (1 + seed % 97);
    Bytes::from(
        (0..len)
            .map(|i| (i.wrapping_mul(31) ^ seed) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// An OCI image manifest naming `config` and `layers` (each with its size), and `variant`
/// as an annotation, so manifests naming the same blobs can still differ.
pub fn image_manifest(config: &Bytes, layers: &[Bytes], variant: u64) -> Bytes {
    let descriptor = |media_type: &str, data: &Bytes| {
        json!({
            "mediaType": media_type,
            "digest": sha256(data).to_string(),
            "size": data.len(),
        })
    };
    let document = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": layers
            .iter()
            .map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", l))
            .collect::<Vec<_>>(),
        "annotations": { "variant": variant.to_string() },
    });
    Bytes::from(document.to_string())
}

/// The digests an image manifest from [`image_manifest`] names.
pub fn named_blobs(config: &Bytes, layers: &[Bytes]) -> Vec<Digest> {
    std::iter::once(config)
        .chain(layers)
        .map(|b| sha256(b))
        .collect()
}
