//! What a stored key is, read back from the core's layout: every guess is checked by
//! rebuilding the key with `stowage_core::layout`, so this never disagrees with the writer.

use std::str::FromStr;

use stowage_core::digest::Digest;
use stowage_core::layout;
use stowage_core::names::RepoName;

const BLOBS: &str = "v2/blobs/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// Below `v2/blobs/`: the digest when the key is a blob's content address.
    Blob(Option<Digest>),
    /// A repository's link to a blob it holds.
    LayerLink(Digest),
    /// A repository's link to a manifest it holds.
    RevisionLink(Digest),
    /// Below a tag's folder: what it points at, and its history.
    Tag,
    /// An upload session: transient, not migrated.
    UploadSession,
    /// Anything else in a repository (referrers, ...).
    Other,
}

pub(crate) fn classify(key: &str) -> KeyKind {
    if key.starts_with(BLOBS) {
        return KeyKind::Blob(blob_digest(key));
    }
    let Some(name) = repository_of(key) else {
        return KeyKind::Other;
    };
    let uploads = format!("{}{name}/{}/", layout::REPOSITORIES, layout::UPLOADS);
    if key.starts_with(&uploads) {
        return KeyKind::UploadSession;
    }
    if key.starts_with(&layout::tags_dir(&name)) {
        return KeyKind::Tag;
    }
    match link_digest(key) {
        Some(d) if layout::layer_link(&name, &d) == key => KeyKind::LayerLink(d),
        Some(d) if layout::revision_link(&name, &d) == key => KeyKind::RevisionLink(d),
        _ => KeyKind::Other,
    }
}

/// `v2/blobs/<alg>/<2 hex>/<hex>/data` -> the digest.
fn blob_digest(key: &str) -> Option<Digest> {
    let mut parts = key.strip_prefix(BLOBS)?.split('/');
    let (alg, _, hex) = (parts.next()?, parts.next()?, parts.next()?);
    let digest = Digest::from_str(&format!("{alg}:{hex}")).ok()?;
    (layout::blob_data(&digest) == key).then_some(digest)
}

/// The repository a key below `v2/repositories/` belongs to: the path up to the first
/// component starting with `_`, which no repository name component does.
fn repository_of(key: &str) -> Option<RepoName> {
    let rest = key.strip_prefix(layout::REPOSITORIES)?;
    let end = rest.find("/_")?;
    RepoName::from_str(&rest[..end]).ok()
}

/// `.../<alg>/<hex>/link` -> the digest.
fn link_digest(key: &str) -> Option<Digest> {
    let mut parts = key.strip_suffix("/link")?.rsplit('/');
    let (hex, alg) = (parts.next()?, parts.next()?);
    Digest::from_str(&format!("{alg}:{hex}")).ok()
}

#[cfg(test)]
mod tests {
    use stowage_core::digest::Algorithm;
    use stowage_core::names::Tag;
    use stowage_core::route::UploadId;

    use super::*;

    fn digest() -> Digest {
        Digest::of(Algorithm::Sha256, b"x")
    }

    fn name() -> RepoName {
        "team/app".parse().unwrap()
    }

    #[test]
    fn reads_every_kind_back_from_the_layout() {
        let (d, name) = (digest(), name());
        let tag: Tag = "v1".parse().unwrap();
        let id = UploadId::parse("abc").unwrap();
        let sha512 = Digest::of(Algorithm::Sha512, b"x");
        assert_eq!(
            classify(&layout::blob_data(&d)),
            KeyKind::Blob(Some(d.clone()))
        );
        assert_eq!(
            classify(&layout::blob_data(&sha512)),
            KeyKind::Blob(Some(sha512))
        );
        assert_eq!(
            classify(&layout::layer_link(&name, &d)),
            KeyKind::LayerLink(d.clone())
        );
        assert_eq!(
            classify(&layout::revision_link(&name, &d)),
            KeyKind::RevisionLink(d.clone())
        );
        assert_eq!(classify(&layout::tag_current(&name, &tag)), KeyKind::Tag);
        assert_eq!(classify(&layout::tag_index(&name, &tag, &d)), KeyKind::Tag);
        assert_eq!(
            classify(&layout::upload_record(&name, &id)),
            KeyKind::UploadSession
        );
        assert_eq!(
            classify(&layout::upload_part(&name, &id, "part-1")),
            KeyKind::UploadSession
        );
        assert_eq!(
            classify(&layout::referrer_entry(&name, &d, &d)),
            KeyKind::Other
        );
    }

    #[test]
    fn keys_off_the_layout_are_not_guessed_at() {
        let d = digest();
        // The two-hex folder must be the digest's own.
        let misplaced = format!("v2/blobs/sha256/zz/{}/data", d.hex());
        assert_eq!(classify(&misplaced), KeyKind::Blob(None));
        assert_eq!(classify("v2/blobs/md5/ab/abcd/data"), KeyKind::Blob(None));
        assert_eq!(classify("v2/repositories/Bad/_layers/x"), KeyKind::Other);
        assert_eq!(classify("elsewhere/file"), KeyKind::Other);
    }
}
