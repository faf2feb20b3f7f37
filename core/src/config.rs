//! The settings the registry logic needs (the rest of the configuration belongs to adapters).

/// Lock protocol settings (`[metadata_store.<fs|s3>.redis]` ttl, max_retries, retry_delay_ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockSettings {
    pub ttl_ms: u64,
    pub max_retries: u32,
    pub retry_delay_ms: u64,
}

impl Default for LockSettings {
    fn default() -> Self {
        LockSettings {
            ttl_ms: 10_000,
            max_retries: 100,
            retry_delay_ms: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: u64,
    /// Whether a manifest may name blobs or manifests that were not pushed (sparse images).
    pub allow_missing_manifest_references: bool,
    pub locks: LockSettings,
    /// How long cache entries (tags, manifests, blob sizes, small blobs) last, in milliseconds.
    pub cache_ttl_ms: u64,
    /// Whether the blob store can write a chunk into an upload's data file at its offset
    /// (the filesystem): a chunked upload then completes by a rename, not a copy of its
    /// bytes.
    pub chunks_in_place: bool,
    /// Upload sessions one repository may have open at once: a client that starts more and
    /// never finishes them would otherwise fill the store until they are purged.
    pub max_open_uploads_per_repository: u64,
    /// Tags one manifest push may set with `?tag=` (each takes a lock and two writes).
    pub max_tags_per_request: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 4 * 1024 * 1024,
            allow_missing_manifest_references: true,
            locks: LockSettings::default(),
            cache_ttl_ms: 60_000,
            chunks_in_place: false,
            max_open_uploads_per_repository: 1000,
            max_tags_per_request: 32,
        }
    }
}
