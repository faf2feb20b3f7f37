//! The spec's grammars, written out independently of the core's parsers so each can check
//! the other.

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, as a DFA.
pub fn is_repository_name(s: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        /// A component must start here (start of name, after `.`, `__` or `/`).
        NeedAlnum,
        InAlnum,
        AfterUnderscore,
        InDashes,
    }
    let mut state = State::NeedAlnum;
    for c in s.chars() {
        let alnum = c.is_ascii_lowercase() || c.is_ascii_digit();
        state = match (state, c) {
            (_, _) if alnum => State::InAlnum,
            (State::InAlnum, '.' | '/') => State::NeedAlnum,
            (State::InAlnum, '_') => State::AfterUnderscore,
            (State::AfterUnderscore, '_') => State::NeedAlnum,
            (State::InAlnum | State::InDashes, '-') => State::InDashes,
            _ => return false,
        };
    }
    state == State::InAlnum
}

/// The longest repository name the registry accepts (clients limit host plus name to 255).
pub const MAX_REPOSITORY_NAME: usize = 255;

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn is_tag(s: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = s.chars();
    chars.next().is_some_and(word)
        && chars.all(|c| word(c) || c == '.' || c == '-')
        && s.len() <= 128
}

/// The image spec's general digest grammar:
/// `algorithm ":" encoded`, `algorithm ::= [a-z0-9]+ ([+._-] [a-z0-9]+)*`,
/// `encoded ::= [a-zA-Z0-9=_-]+`.
pub fn is_digest_syntax(s: &str) -> bool {
    let Some((algorithm, encoded)) = s.split_once(':') else {
        return false;
    };
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit())
    };
    let encoded_ok = !encoded.is_empty()
        && encoded
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '=' | '_' | '-'));
    algorithm.split(['+', '.', '_', '-']).all(component_ok) && encoded_ok
}

/// A digest under a registered algorithm the registry supports: `sha256` with 64 and
/// `sha512` with 128 lowercase hex characters.
pub fn is_supported_digest(s: &str) -> bool {
    let lower_hex = |e: &str, len: usize| {
        e.len() == len && e.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
    };
    match s.split_once(':') {
        Some(("sha256", encoded)) => lower_hex(encoded, 64),
        Some(("sha512", encoded)) => lower_hex(encoded, 128),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec() {
        for ok in ["a", "a.b", "a_b", "a__b", "a---b", "a/b/c", "0"] {
            assert!(is_repository_name(ok), "{ok}");
        }
        for bad in [
            "", "a/", "a._b", "a___b", "a-", "-a", "a//b", "A", "a_", "a.-b",
        ] {
            assert!(!is_repository_name(bad), "{bad}");
        }
    }

    #[test]
    fn digests_follow_the_spec() {
        assert!(is_digest_syntax(
            "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564"
        ));
        assert!(!is_digest_syntax("sha256:"));
        assert!(!is_digest_syntax("sha256..x:abc"));
        assert!(!is_supported_digest("sha256:abc"));
    }
}
