//! Digests, repository names, tags and references: what the parsers accept is exactly the
//! spec's grammar, and parse -> Display -> parse gives the same value and the same text.

use std::fmt::Display;
use std::str::FromStr;

use stowage_core::digest::{Digest, Hasher};
use stowage_core::names::{Reference, RepoName, Tag};

use crate::grammar;

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for candidate in [text, text.trim()] {
        check_text(candidate);
    }
}

fn check_text(text: &str) {
    let digest = round_trip::<Digest>(text);
    assert_eq!(
        digest.is_some(),
        grammar::is_supported_digest(text),
        "digest acceptance of {text:?} differs from the spec"
    );
    if let Some(digest) = &digest {
        assert!(
            grammar::is_digest_syntax(text),
            "{text:?} breaks the grammar"
        );
        // The hasher of the digest's algorithm produces digests of the same shape.
        let empty = Hasher::new(digest.algorithm()).finish();
        assert_eq!(empty.hex().len(), digest.hex().len());
    }

    let name = round_trip::<RepoName>(text);
    let name_expected =
        grammar::is_repository_name(text) && text.len() <= grammar::MAX_REPOSITORY_NAME;
    assert_eq!(
        name.is_some(),
        name_expected,
        "repository name acceptance of {text:?} differs from the spec"
    );

    let tag = round_trip::<Tag>(text);
    assert_eq!(
        tag.is_some(),
        grammar::is_tag(text),
        "tag acceptance of {text:?} differs from the spec"
    );

    let reference = round_trip::<Reference>(text);
    match &reference {
        Some(Reference::Tag(t)) => assert_eq!(Some(t), tag.as_ref()),
        Some(Reference::Digest(d)) => assert_eq!(Some(d), digest.as_ref()),
        None => assert!(tag.is_none() && digest.is_none(), "{text:?} refused"),
    }
}

/// Parses `text`; when accepted, its display must be `text` itself and parse to the same
/// value.
fn round_trip<T>(text: &str) -> Option<T>
where
    T: FromStr + Display + PartialEq + std::fmt::Debug,
    T::Err: std::fmt::Debug,
{
    let value = text.parse::<T>().ok()?;
    let shown = value.to_string();
    assert_eq!(shown, text, "accepted text is not displayed as given");
    let again = shown.parse::<T>().expect("displayed value parses");
    assert_eq!(again, value);
    Some(value)
}
