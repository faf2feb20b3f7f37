//! The `Authorization` header, parsed: what a request claims, before anything is verified.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// What a request presents; a Bearer token is borrowed from the header (it is compared and
/// hashed, never kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials<'a> {
    None,
    Basic {
        username: String,
        password: String,
    },
    Bearer(&'a str),
    /// A header that is not one of the above, or not well formed: refused, never ignored.
    Malformed(&'static str),
}

impl<'a> Credentials<'a> {
    /// Longest `Authorization` value considered: a registry token is about 1 KiB, an OIDC
    /// token a few KiB.
    pub const MAX_LEN: usize = 16 * 1024;

    pub fn from_headers(headers: &'a http::HeaderMap) -> Self {
        let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return Credentials::None;
        };
        if values.next().is_some() {
            return Credentials::Malformed("more than one Authorization header");
        }
        match value.to_str() {
            Ok(value) => Credentials::parse(value),
            Err(_) => Credentials::Malformed("Authorization is not visible ASCII"),
        }
    }

    pub fn parse(value: &'a str) -> Self {
        if value.len() > Self::MAX_LEN {
            return Credentials::Malformed("Authorization is too long");
        }
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            basic(rest)
        } else if scheme.eq_ignore_ascii_case("bearer") {
            if rest.is_empty() || rest.contains(' ') {
                Credentials::Malformed("a Bearer token is one word")
            } else {
                Credentials::Bearer(rest)
            }
        } else {
            Credentials::Malformed("unknown authentication scheme")
        }
    }
}

fn basic(encoded: &str) -> Credentials<'static> {
    let Ok(decoded) = STANDARD.decode(encoded) else {
        return Credentials::Malformed("Basic credentials are not base64");
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return Credentials::Malformed("Basic credentials are not UTF-8");
    };
    match decoded.split_once(':') {
        Some((username, password)) if !username.is_empty() => Credentials::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        },
        _ => Credentials::Malformed("Basic credentials are not user:password"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(
            Credentials::parse("Basic YWxpY2U6czNjcjp0"),
            Credentials::Basic {
                username: "alice".into(),
                password: "s3cr:t".into()
            }
        );
        assert_eq!(
            Credentials::parse("bearer abc.def.ghi"),
            Credentials::Bearer("abc.def.ghi")
        );
        for bad in [
            "Basic !!!",
            "Basic Og==",
            "Digest x",
            "Bearer",
            "Bearer a b",
            "Basic",
        ] {
            assert!(
                matches!(Credentials::parse(bad), Credentials::Malformed(_)),
                "{bad}"
            );
        }
        assert!(matches!(
            Credentials::parse(&format!("Bearer {}", "a".repeat(Credentials::MAX_LEN))),
            Credentials::Malformed(_)
        ));
    }
}
