//! The upload session record, saved after every accepted chunk so that any replica can
//! continue the upload.

use serde::{Deserialize, Serialize};

use crate::digest::{Algorithm, CorruptHashState, Hasher};
use crate::step::Millis;

/// One request's bytes, stored as their own object. Each request names its part afresh, so
/// a request that lost its turn (its lock expired while its body streamed) can never
/// overwrite the part of the request that took its place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub name: String,
    pub offset: u64,
    pub len: u64,
}

/// What is known of an upload between requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub started_at: u64,
    /// Bytes accepted so far; the next chunk must start here.
    pub offset: u64,
    pub parts: Vec<Part>,
    /// The sha256 state over every accepted byte (see [`Hasher::save`]).
    pub sha256_state: String,
}

impl UploadRecord {
    pub fn new(now: Millis) -> Self {
        UploadRecord {
            started_at: now.0,
            offset: 0,
            parts: Vec::new(),
            sha256_state: Hasher::new(Algorithm::Sha256).save(),
        }
    }

    pub fn hasher(&self) -> Result<Hasher, CorruptHashState> {
        Hasher::restore(Algorithm::Sha256, &self.sha256_state)
    }

    /// Records `part` (which starts at the current offset) and the hash state after it.
    pub fn append(&mut self, part: Part, hasher: &Hasher) {
        self.offset += part.len;
        self.parts.push(part);
        self.sha256_state = hasher.save();
    }

    /// The `Range` header value reporting what was received (`0-0` when nothing was, as
    /// Distribution answers).
    pub fn range_header(&self) -> String {
        format!("0-{}", self.offset.saturating_sub(1))
    }
}
