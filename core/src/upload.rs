//! The upload session record, saved after every accepted chunk so that any replica can
//! continue the upload.

use serde::{Deserialize, Serialize};

use crate::digest::{Algorithm, CorruptHashState, Hasher};
use crate::layout;
use crate::names::RepoName;
use crate::route::UploadId;
use crate::step::Piece;
use crate::time::Millis;

/// One request's bytes: in place in the upload's data file, or an object of their own.
///
/// A chunk streams with no lock held (a long body would outlive it), so two requests may
/// stream against the same offset, one of them stale. A request writes in place only after
/// it claimed its starting offset (a create-new write of `claims/<offset>`), and only while
/// every committed part is in place, so each stretch of the data file has one writer ever,
/// and a stretch a committed part covers is final. Every other request (the claim was taken:
/// a retry after a failed body, or a race) names a part object afresh, which no other
/// request can overwrite. Completion moves the data file itself to the content address only
/// after claiming its end offset, so nothing can write to the moved file any more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The part's own object (`parts/<name>`); `None` when in place in the data file.
    pub name: Option<String>,
    pub offset: u64,
    pub len: u64,
}

impl Part {
    pub fn in_place(&self) -> bool {
        self.name.is_none()
    }

    /// Where the part's bytes are stored.
    pub fn piece(&self, name: &RepoName, id: &UploadId) -> Piece {
        match &self.name {
            Some(part) => Piece::whole(layout::upload_part(name, id, part)),
            None => Piece::span(layout::upload_data(name, id), self.offset, self.len),
        }
    }

    /// Where the part's bytes are stored, as a span: a concatenation copies a span, where it
    /// may move a whole piece away.
    pub fn kept_piece(&self, name: &RepoName, id: &UploadId) -> Piece {
        match &self.name {
            Some(part) => Piece::span(layout::upload_part(name, id, part), 0, self.len),
            None => self.piece(name, id),
        }
    }
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

    /// Whether the upload's next chunk may go in place (claims permitting).
    pub fn all_in_place(&self) -> bool {
        self.parts.iter().all(Part::in_place)
    }

    /// Records `part` (which starts at the current offset) and the hash state after it. A
    /// part in place right after another extends it: the data file's stretch is one piece,
    /// so the record stays the same size however many chunks an upload takes (it is read
    /// and rewritten for every chunk).
    pub fn append(&mut self, part: Part, hasher: &Hasher) {
        self.offset += part.len;
        match self.parts.last_mut() {
            Some(last) if last.in_place() && part.in_place() => last.len += part.len,
            _ => self.parts.push(part),
        }
        self.sha256_state = hasher.save();
    }

    /// The `Range` header value reporting what was received (`0-0` when nothing was, as
    /// Distribution answers).
    pub fn range_header(&self) -> String {
        format!("0-{}", self.offset.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: Option<&str>, offset: u64, len: u64) -> Part {
        Part {
            name: name.map(str::to_owned),
            offset,
            len,
        }
    }

    #[test]
    fn parts_in_place_in_a_row_are_one_stretch() {
        let mut record = UploadRecord::new(Millis(0));
        let hasher = Hasher::new(Algorithm::Sha256);
        record.append(part(None, 0, 5), &hasher);
        record.append(part(None, 5, 3), &hasher);
        record.append(part(Some("p"), 8, 2), &hasher);
        record.append(part(None, 10, 4), &hasher);
        assert_eq!(record.offset, 14);
        assert_eq!(
            record.parts,
            [part(None, 0, 8), part(Some("p"), 8, 2), part(None, 10, 4)]
        );
    }
}
