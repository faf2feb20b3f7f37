//! Manifest and index parsing: total on any bytes; what it accepts names only valid digests
//! that the document really contains; a referrer descriptor survives JSON unchanged.

use serde_json::Value;
use stowage_core::digest::{Algorithm, Digest};
use stowage_core::manifest::{
    DOCKER_LIST, DOCKER_MANIFEST, Descriptor, Kind, Manifest, OCI_INDEX, OCI_MANIFEST,
    stored_media_type,
};

/// The `Content-Type`s a push may carry, none first.
const CONTENT_TYPES: [Option<&str>; 6] = [
    None,
    Some(OCI_MANIFEST),
    Some(OCI_INDEX),
    Some(DOCKER_MANIFEST),
    Some(DOCKER_LIST),
    Some("application/json; charset=utf-8"),
];

pub fn check(data: &[u8]) {
    for content_type in CONTENT_TYPES {
        if let Ok(manifest) = Manifest::parse(data, content_type) {
            check_accepted(&manifest, data);
        }
    }
    let _ = stored_media_type(data);
}

fn named_digests(manifest: &Manifest) -> impl Iterator<Item = &Digest> {
    manifest
        .blobs
        .iter()
        .chain(&manifest.manifests)
        .chain(&manifest.subject)
}

/// Every `"digest"` string anywhere in a JSON document.
fn digest_fields(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields {
                if let ("digest", Value::String(s)) = (key.as_str(), field) {
                    found.push(s.clone());
                }
                digest_fields(field, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| digest_fields(item, found)),
        _ => {}
    }
}

fn check_accepted(manifest: &Manifest, data: &[u8]) {
    let text = std::str::from_utf8(data).expect("an accepted manifest is UTF-8");
    // Lone surrogate escapes are valid JSON that `Value` cannot hold; skip those documents.
    let mut in_document = Vec::new();
    if let Ok(document) = serde_json::from_str::<Value>(text) {
        digest_fields(&document, &mut in_document);
    } else {
        in_document.extend(named_digests(manifest).map(Digest::to_string));
    }
    for digest in named_digests(manifest) {
        let shown = digest.to_string();
        assert_eq!(shown.parse::<Digest>().as_ref(), Ok(digest));
        assert!(
            in_document.contains(&shown),
            "{shown} is not in the document"
        );
    }
    match manifest.kind {
        Kind::Image => assert!(manifest.manifests.is_empty() && !manifest.blobs.is_empty()),
        Kind::Index => assert!(manifest.blobs.is_empty()),
    }
    let digest = Digest::of(Algorithm::Sha256, data);
    let descriptor = manifest.referrer_descriptor(&digest, data.len() as u64);
    let json = serde_json::to_vec(&descriptor).expect("a descriptor serializes");
    let back: Descriptor = serde_json::from_slice(&json).expect("a descriptor deserializes");
    assert_eq!(back, descriptor, "descriptor changed through JSON");
    let again = serde_json::to_vec(&back).expect("a descriptor serializes");
    assert_eq!(again, json, "descriptor JSON is not stable");
}
