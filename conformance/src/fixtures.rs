//! Test content (random blobs, configs, manifests of every supported media type), digests, URL
//! paths, and the push helpers that cases use to set up state.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256, Sha512};

use crate::client::Client;
use crate::error::Failure;
use crate::response::{Response, with_query};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Sent on every manifest GET/HEAD: registries may negotiate on `Accept`, and Distribution
/// otherwise down-converts Docker manifests to schema 1.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

pub const OCTET_STREAM: (&str, &str) = ("Content-Type", "application/octet-stream");

/// The digest of zero bytes, which the spec's empty-blob case relies on.
pub const EMPTY_SHA256: &str =
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

pub fn digest(algorithm: Algorithm, data: &[u8]) -> String {
    match algorithm {
        Algorithm::Sha256 => format!("sha256:{}", hex::encode(Sha256::digest(data))),
        Algorithm::Sha512 => format!("sha512:{}", hex::encode(Sha512::digest(data))),
    }
}

pub fn sha256(data: &[u8]) -> String {
    digest(Algorithm::Sha256, data)
}

// ---------------------------------------------------------------------------------------------
// Randomness: a splitmix64 stream seeded once per run. Content only needs to be unique across
// runs against the same registry, not cryptographically random, so no `rand` dependency.

static RNG_STATE: AtomicU64 = AtomicU64::new(0);

pub fn seed(seed: u64) {
    RNG_STATE.store(seed, Ordering::Relaxed);
}

pub fn next_u64() -> u64 {
    let mut z = RNG_STATE
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Lowercase hex, so it is valid inside repository names and tags.
pub fn random_hex(chars: usize) -> String {
    let mut s = hex::encode(random_bytes(chars.div_ceil(2)));
    s.truncate(chars);
    s
}

/// A well-formed sha256 digest of content nobody has pushed.
pub fn unknown_digest() -> String {
    sha256(&random_bytes(32))
}

// ---------------------------------------------------------------------------------------------
// Paths.

pub fn blob_path(repo: &str, digest: &str) -> String {
    format!("/v2/{repo}/blobs/{digest}")
}

pub fn manifest_path(repo: &str, reference: &str) -> String {
    format!("/v2/{repo}/manifests/{reference}")
}

pub fn uploads_path(repo: &str) -> String {
    format!("/v2/{repo}/blobs/uploads/")
}

pub fn tags_path(repo: &str) -> String {
    format!("/v2/{repo}/tags/list")
}

pub fn referrers_path(repo: &str, digest: &str) -> String {
    format!("/v2/{repo}/referrers/{digest}")
}

// ---------------------------------------------------------------------------------------------
// Content.

/// A blob plus the media type it will be referenced with from a manifest.
#[derive(Clone, Debug)]
pub struct Blob {
    pub media_type: String,
    pub data: Vec<u8>,
    pub digest: String,
}

impl Blob {
    pub fn new(media_type: &str, data: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_string(),
            digest: sha256(&data),
            data,
        }
    }

    pub fn random(media_type: &str, len: usize) -> Blob {
        Blob::new(media_type, random_bytes(len))
    }

    /// The OCI empty descriptor's content, `{}`.
    pub fn empty_config() -> Blob {
        Blob::new(OCI_EMPTY, b"{}".to_vec())
    }

    /// A minimal but valid image config; the random label keeps its digest unique per run.
    pub fn config(media_type: &str) -> Blob {
        let layer_diff = sha256(&random_bytes(16));
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Labels": { "org.stowage.conformance": random_hex(16) } },
            "rootfs": { "type": "layers", "diff_ids": [layer_diff] },
        });
        Blob::new(media_type, to_bytes(&config))
    }

    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.data.len(),
        })
    }
}

/// A manifest exactly as it will be pushed: the bytes are what the registry must store.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub digest: String,
}

impl Manifest {
    pub fn from_json(media_type: &str, value: &Value) -> Manifest {
        let bytes = to_bytes(value);
        Manifest {
            media_type: media_type.to_string(),
            digest: sha256(&bytes),
            bytes,
        }
    }

    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.bytes.len(),
        })
    }

    /// Descriptor for an index entry: indexes list per-platform manifests.
    pub fn platform_descriptor(&self, architecture: &str) -> Value {
        let mut d = self.descriptor();
        d["platform"] = json!({ "architecture": architecture, "os": "linux" });
        d
    }
}

fn to_bytes(value: &Value) -> Vec<u8> {
    // Serializing a Value cannot fail (all keys are strings).
    serde_json::to_vec(value).unwrap_or_default()
}

/// An image manifest together with the blobs it references.
#[derive(Clone, Debug)]
pub struct Image {
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub manifest: Manifest,
}

impl Image {
    /// An OCI image manifest with `layers` random layers.
    pub fn oci(layers: usize) -> Image {
        Image::build(OCI_MANIFEST, OCI_CONFIG, OCI_LAYER, layers, Map::new())
    }

    /// An OCI image manifest with extra top-level fields (`subject`, `annotations`, …).
    pub fn oci_with(layers: usize, extra: Map<String, Value>) -> Image {
        Image::build(OCI_MANIFEST, OCI_CONFIG, OCI_LAYER, layers, extra)
    }

    /// A Docker image manifest v2 schema 2.
    pub fn docker(layers: usize) -> Image {
        Image::build(
            DOCKER_MANIFEST,
            DOCKER_CONFIG,
            DOCKER_LAYER,
            layers,
            Map::new(),
        )
    }

    fn build(
        manifest_type: &str,
        config_type: &str,
        layer_type: &str,
        layers: usize,
        extra: Map<String, Value>,
    ) -> Image {
        let config = Blob::config(config_type);
        let layers: Vec<Blob> = (0..layers)
            .map(|_| Blob::random(layer_type, 64 + (next_u64() % 512) as usize))
            .collect();
        let mut doc = Map::new();
        doc.insert("schemaVersion".into(), json!(2));
        doc.insert("mediaType".into(), json!(manifest_type));
        doc.insert("config".into(), config.descriptor());
        doc.insert(
            "layers".into(),
            Value::Array(layers.iter().map(Blob::descriptor).collect()),
        );
        doc.extend(extra);
        let manifest = Manifest::from_json(manifest_type, &Value::Object(doc));
        Image {
            config,
            layers,
            manifest,
        }
    }

    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config).chain(self.layers.iter())
    }

    /// Pushes the config and layers, then the manifest under `reference` (a tag or digest).
    pub fn push(&self, c: &Client, repo: &str, reference: &str) -> Result<Response, Failure> {
        self.push_blobs(c, repo)?;
        push_manifest(c, repo, reference, &self.manifest)
    }

    pub fn push_blobs(&self, c: &Client, repo: &str) -> Result<(), Failure> {
        for blob in self.blobs() {
            push_blob(c, repo, blob)?;
        }
        Ok(())
    }
}

/// An index (OCI or Docker list) over the given manifests.
pub fn index(media_type: &str, manifests: &[&Manifest], extra: Map<String, Value>) -> Manifest {
    let arches = ["amd64", "arm64", "s390x", "ppc64le", "riscv64"];
    let mut doc = Map::new();
    doc.insert("schemaVersion".into(), json!(2));
    doc.insert("mediaType".into(), json!(media_type));
    doc.insert(
        "manifests".into(),
        Value::Array(
            manifests
                .iter()
                .enumerate()
                .map(|(i, m)| m.platform_descriptor(arches[i % arches.len()]))
                .collect(),
        ),
    );
    doc.extend(extra);
    Manifest::from_json(media_type, &Value::Object(doc))
}

/// Builds a JSON object map from `(key, value)` pairs, for `extra` fields.
pub fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

// ---------------------------------------------------------------------------------------------
// Push helpers used for setup. They use the most widely supported flow (POST then PUT) so a
// registry's shortcomings in optional flows don't cascade into unrelated failures.

/// POST an upload session and return its Location.
pub fn start_upload(c: &Client, repo: &str) -> Result<String, Failure> {
    start_upload_at(c, &uploads_path(repo))
}

/// POST to a specific uploads URL (which may carry query parameters) and return the Location.
pub fn start_upload_at(c: &Client, target: &str) -> Result<String, Failure> {
    let r = c.post(target, &[], &[])?;
    r.expect(202)?;
    Ok(r.require_header("location")?.to_string())
}

/// Monolithic POST + PUT upload of one blob; expects 201.
pub fn push_blob(c: &Client, repo: &str, blob: &Blob) -> Result<(), Failure> {
    push_bytes(c, repo, &blob.data, &blob.digest)
}

pub fn push_bytes(c: &Client, repo: &str, data: &[u8], digest: &str) -> Result<(), Failure> {
    let location = start_upload(c, repo)?;
    c.put(
        &with_query(&location, &[("digest", digest)]),
        &[OCTET_STREAM],
        data,
    )?
    .expect(201)?;
    Ok(())
}

/// PUT a manifest with its media type as Content-Type; expects 201.
pub fn push_manifest(
    c: &Client,
    repo: &str,
    reference: &str,
    manifest: &Manifest,
) -> Result<Response, Failure> {
    let r = put_manifest(c, repo, reference, manifest)?;
    r.expect(201)?;
    Ok(r)
}

/// PUT a manifest without judging the response.
pub fn put_manifest(
    c: &Client,
    repo: &str,
    reference: &str,
    manifest: &Manifest,
) -> Result<Response, Failure> {
    c.put(
        &manifest_path(repo, reference),
        &[("Content-Type", manifest.media_type.as_str())],
        &manifest.bytes,
    )
}

pub fn get_manifest(c: &Client, repo: &str, reference: &str) -> Result<Response, Failure> {
    c.get(
        &manifest_path(repo, reference),
        &[("Accept", ACCEPT_MANIFESTS)],
    )
}

pub fn head_manifest(c: &Client, repo: &str, reference: &str) -> Result<Response, Failure> {
    c.head(
        &manifest_path(repo, reference),
        &[("Accept", ACCEPT_MANIFESTS)],
    )
}

/// GET a manifest and check everything a pull must give back: 200, the exact bytes, the
/// pushed media type as Content-Type, and the right `Docker-Content-Digest`.
pub fn verify_manifest(
    c: &Client,
    repo: &str,
    reference: &str,
    manifest: &Manifest,
) -> Result<(), Failure> {
    verify_manifest_digest(c, repo, reference, manifest, &manifest.digest)
}

/// As [`verify_manifest`], for a manifest addressed by a digest other than its sha256 one.
pub fn verify_manifest_digest(
    c: &Client,
    repo: &str,
    reference: &str,
    manifest: &Manifest,
    digest: &str,
) -> Result<(), Failure> {
    let r = get_manifest(c, repo, reference)?;
    r.expect(200)?;
    crate::ensure!(
        r.body == manifest.bytes,
        "{}: body ({} bytes) is not byte-identical to the pushed manifest ({} bytes)",
        r.what,
        r.body.len(),
        manifest.bytes.len()
    );
    let content_type = r.content_type();
    crate::ensure!(
        content_type.as_deref() == Some(manifest.media_type.as_str()),
        "{}: Content-Type {:?}, expected pushed media type {}",
        r.what,
        content_type,
        manifest.media_type
    );
    expect_content_digest(&r, digest, &manifest.bytes)
}

/// `Docker-Content-Digest` must be present and be a digest of `content`: normally `digest`, but
/// the spec lets a registry answer with a digest of another algorithm (e.g. its canonical sha256
/// for content addressed by sha512), as long as it matches the content.
pub fn expect_content_digest(r: &Response, digest: &str, content: &[u8]) -> Result<(), Failure> {
    let got = r.require_header("docker-content-digest")?;
    let matches_content = [Algorithm::Sha256, Algorithm::Sha512]
        .into_iter()
        .any(|a| self::digest(a, content) == got);
    crate::ensure!(
        got == digest || matches_content,
        "{}: Docker-Content-Digest {got} is not a digest of the content (expected {digest})",
        r.what
    );
    Ok(())
}

/// `Docker-Content-Digest` must be present and equal `digest` exactly, as on a manifest PUT by
/// digest.
pub fn expect_digest_header(r: &Response, digest: &str) -> Result<(), Failure> {
    let got = r.require_header("docker-content-digest")?;
    crate::ensure!(
        got == digest,
        "{}: Docker-Content-Digest {got}, expected {digest}",
        r.what
    );
    Ok(())
}

/// `Content-Length` must be present and equal `len`.
pub fn expect_content_length(r: &Response, len: usize) -> Result<(), Failure> {
    let got = r.require_header("content-length")?;
    crate::ensure!(
        got.trim().parse::<usize>().ok() == Some(len),
        "{}: Content-Length {got}, expected {len}",
        r.what
    );
    Ok(())
}

/// GET a blob and check status, body and digest header.
pub fn verify_blob(c: &Client, repo: &str, digest: &str, data: &[u8]) -> Result<(), Failure> {
    let r = verify_blob_at(c, &blob_path(repo, digest), data)?;
    expect_content_digest(&r, digest, data)
}

/// GET a blob at an arbitrary URL (e.g. a Location header, which may point at other storage and
/// so need not carry registry headers) and check status and body.
pub fn verify_blob_at(c: &Client, target: &str, data: &[u8]) -> Result<Response, Failure> {
    let r = c.get(target, &[])?;
    r.expect(200)?;
    crate::ensure!(
        r.body == data,
        "{}: body ({} bytes) differs from the pushed blob ({} bytes)",
        r.what,
        r.body.len(),
        data.len()
    );
    Ok(r)
}
