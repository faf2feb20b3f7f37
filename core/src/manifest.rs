//! Manifest and index parsing: just what the registry needs to link, validate and list
//! referrers. The pushed bytes are stored and served as they are, never re-serialized.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An image manifest: names a config and layers (blobs).
    Image,
    /// An index or manifest list: names other manifests.
    Index,
}

impl Kind {
    fn of_media_type(media_type: &str) -> Option<Kind> {
        match media_type {
            OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Image),
            OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
            _ => None,
        }
    }
}

/// A content descriptor as it appears in manifests and in the referrers index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Map<String, Value>>,
}

/// The raw shape shared by manifests and indexes; unknown fields are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<u32>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<Map<String, Value>>,
}

/// What the registry learns from a pushed manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub kind: Kind,
    /// The media type to answer with: the document's own, else the pushed `Content-Type`.
    pub media_type: String,
    /// Blobs this manifest names (config and layers of an image manifest).
    pub blobs: Vec<Digest>,
    /// Manifests this index names.
    pub manifests: Vec<Digest>,
    pub subject: Option<Digest>,
    /// `artifactType`, or for an image manifest without one its config's media type, as the
    /// referrers API reports it.
    pub artifact_type: Option<String>,
    pub annotations: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("schemaVersion must be 2")]
    SchemaVersion,
    #[error("unsupported manifest media type {0:?}")]
    MediaType(String),
    #[error("mediaType {document:?} differs from Content-Type {header:?}")]
    MediaTypeMismatch { document: String, header: String },
    #[error("descriptor digest {0:?} is invalid")]
    Digest(String),
    #[error("image manifest lacks config or layers")]
    MissingFields,
    #[error("annotations must map strings to strings")]
    Annotations,
}

fn digest_of(d: &Descriptor) -> Result<Digest, ManifestError> {
    d.digest
        .parse()
        .map_err(|_| ManifestError::Digest(d.digest.clone()))
}

/// The `Content-Type` media type without parameters, if it names a manifest type at all.
fn header_media_type(content_type: Option<&str>) -> Option<&str> {
    let mt = content_type?.split(';').next()?.trim();
    Kind::of_media_type(mt).map(|_| mt)
}

impl Manifest {
    /// Parses a pushed manifest. `content_type` is the request's `Content-Type`.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
        // JSON is UTF-8 throughout; serde only checks the strings it keeps, so a field it
        // skips could otherwise carry any bytes into a stored manifest.
        let text = std::str::from_utf8(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        let raw: RawManifest =
            serde_json::from_str(text).map_err(|e| ManifestError::Json(e.to_string()))?;
        if raw.schema_version != Some(2) {
            return Err(ManifestError::SchemaVersion);
        }
        let header = header_media_type(content_type);
        if let (Some(document), Some(header)) = (&raw.media_type, header)
            && document != header
        {
            return Err(ManifestError::MediaTypeMismatch {
                document: document.clone(),
                header: header.to_owned(),
            });
        }
        let media_type = match (&raw.media_type, header) {
            (Some(mt), _) => mt.clone(),
            (None, Some(h)) => h.to_owned(),
            (None, None) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
            (None, None) => OCI_MANIFEST.to_owned(),
        };
        let kind =
            Kind::of_media_type(&media_type).ok_or(ManifestError::MediaType(media_type.clone()))?;
        // The spec's string-to-string map; other values would not survive being copied into
        // the referrers index unchanged (JSON numbers are re-printed).
        if let Some(annotations) = &raw.annotations
            && annotations.values().any(|v| !v.is_string())
        {
            return Err(ManifestError::Annotations);
        }
        let subject = raw.subject.as_ref().map(digest_of).transpose()?;
        let (blobs, manifests, artifact_type) = match kind {
            Kind::Image => {
                let (Some(config), Some(layers)) = (&raw.config, &raw.layers) else {
                    return Err(ManifestError::MissingFields);
                };
                let blobs = std::iter::once(config)
                    .chain(layers)
                    .map(digest_of)
                    .collect::<Result<_, _>>()?;
                let artifact_type = raw
                    .artifact_type
                    .or_else(|| Some(config.media_type.clone()));
                (blobs, Vec::new(), artifact_type)
            }
            Kind::Index => {
                let manifests = raw
                    .manifests
                    .iter()
                    .flatten()
                    .map(digest_of)
                    .collect::<Result<_, _>>()?;
                (Vec::new(), manifests, raw.artifact_type)
            }
        };
        Ok(Manifest {
            kind,
            media_type,
            blobs,
            manifests,
            subject,
            artifact_type,
            annotations: raw.annotations,
        })
    }

    /// This manifest's entry in its subject's referrers index.
    pub fn referrer_descriptor(&self, digest: &Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: digest.to_string(),
            size,
            artifact_type: self.artifact_type.clone(),
            annotations: self.annotations.clone(),
        }
    }
}

/// The media type of stored manifest bytes, to answer `Content-Type` with.
pub fn stored_media_type(bytes: &[u8]) -> String {
    Manifest::parse(bytes, None)
        .map(|m| m.media_type)
        .unwrap_or_else(|_| OCI_MANIFEST.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_image_with_subject() {
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/x.cfg","digest":"{D}","size":0}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":1}}}}"#
        );
        let m = Manifest::parse(doc.as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(m.kind, Kind::Image);
        assert_eq!(m.blobs.len(), 1);
        assert_eq!(m.artifact_type.as_deref(), Some("application/x.cfg"));
        assert!(m.subject.is_some());
    }

    #[test]
    fn rejects_mismatch_and_garbage() {
        let doc = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        assert!(matches!(
            Manifest::parse(doc.as_bytes(), Some(OCI_MANIFEST)),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        assert_eq!(
            Manifest::parse(doc.as_bytes(), None).unwrap().kind,
            Kind::Index
        );
        assert!(Manifest::parse(b"{", None).is_err());
        let unknown_field = b"{\"schemaVersion\":2,\"manifests\":[],\"x\":\"\xa9\"}";
        assert!(Manifest::parse(unknown_field, None).is_err());
        let number = br#"{"schemaVersion":2,"manifests":[],"annotations":{"n":1.5e200}}"#;
        assert_eq!(
            Manifest::parse(number, None),
            Err(ManifestError::Annotations)
        );
        assert!(Manifest::parse(br#"{"schemaVersion":1}"#, None).is_err());
    }
}
