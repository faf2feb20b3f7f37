//! What a request presents before anything is verified, and what a `401` answers: the
//! `Authorization` header, registry tokens, token scopes and the Bearer challenge; and the
//! JWKS documents providers publish.
//!
//! - Every parser is total, and what it accepts writes back to itself.
//! - No token verifies unless the key signed it: the only token the check's key ever signs
//!   is [`Fixture::token`], so anything that verifies must carry exactly its claims.
//! - A challenge is a valid header whose parameters are the ones the core meant to send,
//!   whatever `Host` the client gave.
//! - Reading a JWKS document is total; a shared secret (`oct`) never becomes a key; entries
//!   beside a genuine key cannot hide it.
//!
//! Input: any bytes. They are read as an `Authorization` value, as a token (alone, and in
//! place of each part of the genuine token, so the fuzzer can pair its own header with a
//! real signature), as a scope, as `METHOD path[?query]` followed by an optional
//! `\n<Host>` for the challenge, and as a JWKS document, a shared secret in one, and entries
//! beside a genuine key.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, Method};
use jsonwebtoken::Algorithm;
use stowage_auth::{Claims, Credentials, KeySet, KeysError, TokenKeys};
use stowage_core::access::{
    Access, AccessControl, Authentication, Caller, Challenge, Identity, Need, Resource, needs,
    scope_string,
};
use stowage_core::names::RepoName;
use stowage_core::repositories::Repositories;
use stowage_core::route::Route;

/// A P-256 key made for this check (`openssl genpkey -algorithm EC -pkeyopt
/// ec_paramgen_curve:P-256`); it signs nothing but [`Fixture::token`].
const SIGNING_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgv37sm3wg3aeMVFEu
UWgzYRbbWhoq5x0aub9vEWYfseahRANCAATCT4ap74jCXrda/wSCxeogDNwIb5Vr
AhdUl/+bnuLO3CtGSsYgjMnQRhHyYSQijhh8y2zuGMC1wB3OlEVd/mUg
-----END PRIVATE KEY-----
";

/// The service and issuer the key's tokens name.
const SERVICE: &str = "stowage";

struct Fixture {
    keys: TokenKeys,
    /// A token the key signed, valid for longer than any fuzzing run.
    token: String,
    claims: Claims,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let keys = TokenKeys::from_pem(
            SIGNING_KEY.as_bytes(),
            SERVICE,
            SERVICE,
            Duration::from_secs(24 * 3600),
        )
        .expect("the check's key is a P-256 key");
        let access = vec![Access::parse("repository:app:pull,push").expect("a scope")];
        let token = keys
            .issue("alice", access, SystemTime::now())
            .expect("the key signs")
            .token;
        let claims = keys.verify(&token).expect("a token just signed verifies");
        Fixture {
            keys,
            token,
            claims,
        }
    })
}

pub fn check(data: &[u8]) {
    check_header(data);
    check_jwks(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_credentials(text);
    check_token(text);
    check_scope(text);
    check_challenge(text);
}

/// A provider's RSA signing key, as its JWKS publishes it (`kid` r1, pinned to RS256).
const GENUINE_JWK: &str = r#"{"kty":"RSA","kid":"r1","use":"sig","alg":"RS256","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}"#;

/// A JWKS document is untrusted input fetched from the network: reading one never panics,
/// the bytes as the secret of an `oct` entry never make a key (so no published document
/// can make an HMAC token verify), and the bytes as entries after a genuine key leave it
/// found (or the document refused whole).
fn check_jwks(data: &[u8]) {
    let _ = KeySet::from_jwks(data);
    let secret = URL_SAFE_NO_PAD.encode(data);
    let symmetric =
        format!(r#"{{"keys":[{{"kty":"oct","kid":"h","alg":"HS256","k":"{secret}"}}]}}"#);
    assert!(
        matches!(
            KeySet::from_jwks(symmetric.as_bytes()),
            Err(KeysError::Empty)
        ),
        "a shared secret became a key"
    );
    let mut beside = format!(r#"{{"keys":[{GENUINE_JWK},"#).into_bytes();
    beside.extend_from_slice(data);
    beside.extend_from_slice(b"]}");
    if let Ok(keys) = KeySet::from_jwks(&beside) {
        assert!(
            keys.knows(Some("r1"), Algorithm::RS256),
            "entries beside the genuine key hid it: {}",
            String::from_utf8_lossy(data)
        );
    }
}

/// `from_headers` reads one header as `parse` reads its text, refuses what is not visible
/// ASCII, and refuses two headers rather than picking one.
fn check_header(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, value.clone());
    let credentials = Credentials::from_headers(&headers);
    match value.to_str() {
        Ok(text) => assert_eq!(credentials, Credentials::parse(text)),
        Err(_) => assert!(
            matches!(credentials, Credentials::Malformed(_)),
            "{value:?} gave {credentials:?}"
        ),
    }
    headers.append(AUTHORIZATION, value);
    assert!(
        matches!(
            Credentials::from_headers(&headers),
            Credentials::Malformed(_)
        ),
        "two Authorization headers were accepted"
    );
}

fn check_credentials(text: &str) {
    let credentials = Credentials::parse(text);
    if text.len() > Credentials::MAX_LEN {
        assert!(
            matches!(credentials, Credentials::Malformed(_)),
            "an over-long header gave {credentials:?}"
        );
    }
    match &credentials {
        Credentials::None => panic!("{text:?}: a header is never the absence of credentials"),
        Credentials::Basic { username, password } => {
            assert!(
                !username.is_empty() && !username.contains(':'),
                "{text:?} gave username {username:?}"
            );
            let again = format!(
                "Basic {}",
                STANDARD.encode(format!("{username}:{password}"))
            );
            assert_eq!(Credentials::parse(&again), credentials, "{again:?}");
        }
        Credentials::Bearer(token) => {
            assert!(
                !token.is_empty() && !token.contains(' '),
                "{text:?} gave token {token:?}"
            );
            assert_eq!(Credentials::parse(&format!("Bearer {token}")), credentials);
            verifies_only_as_signed(token);
        }
        Credentials::Malformed(_) => {}
    }
}

/// The text as a token, and in place of each part of the genuine token and after it.
fn check_token(text: &str) {
    verifies_only_as_signed(text);
    let genuine = &fixture().token;
    let parts: Vec<&str> = genuine.split('.').collect();
    for replaced in 0..parts.len() {
        let mut spliced = parts.clone();
        spliced[replaced] = text;
        verifies_only_as_signed(&spliced.join("."));
    }
    verifies_only_as_signed(&format!("{genuine}{text}"));
}

fn verifies_only_as_signed(token: &str) {
    let fixture = fixture();
    if let Ok(claims) = fixture.keys.verify(token) {
        assert_eq!(
            claims, fixture.claims,
            "{token:?} verified with claims the key never signed"
        );
    }
}

fn check_scope(text: &str) {
    let Some(access) = Access::parse(text) else {
        return;
    };
    assert!(
        !access.kind.is_empty() && !access.kind.contains([':', '(']) && !access.name.is_empty(),
        "{text:?} gave {access:?}"
    );
    assert!(
        access
            .actions
            .iter()
            .all(|a| !a.is_empty() && !a.contains([',', ':'])),
        "{text:?} gave actions {:?}",
        access.actions
    );
    // Tokens carry scopes as JSON.
    let json = serde_json::to_string(&access).expect("a scope serializes");
    assert_eq!(
        serde_json::from_str::<Access>(&json).expect("a serialized scope reads back"),
        access
    );
    let Some(resource) = access.resource() else {
        return;
    };
    for action in &access.actions {
        assert!(access.grants(&resource, action), "{access:?} on {action}");
    }
    match &resource {
        Resource::Repository(name) if name.parse::<RepoName>().is_ok() => {
            let elsewhere = Resource::Repository(format!("{name}/elsewhere"));
            assert!(access.actions.iter().all(|a| !access.grants(&elsewhere, a)));
            let actions: Vec<&str> = access.actions.iter().map(String::as_str).collect();
            let written = scope_string(&resource, &actions);
            let again = Access::parse(&written).expect("a challenge's scope parses");
            assert_eq!(again.resource().as_ref(), Some(&resource), "{written:?}");
            assert_eq!(again.actions, access.actions, "{written:?}");
        }
        Resource::Repository(_) => {}
        Resource::Catalog => {
            let written = scope_string(&resource, &[]);
            let again = Access::parse(&written).expect("the catalog's scope parses");
            assert_eq!(again.resource(), Some(Resource::Catalog));
        }
    }
}

/// A `401` for a refused request names exactly the scopes its route needs, and `Host` (the
/// client's, in the default realm) cannot add or change parameters.
fn check_challenge(text: &str) {
    let (line, host) = match text.split_once('\n') {
        Some((line, host)) => (line, Some(host)),
        None => (text, None),
    };
    // What the core sees of `Host`: the value, when it is visible ASCII.
    let host = host.filter(|h| HeaderValue::from_str(h).is_ok_and(|v| v.to_str().is_ok()));
    let Some((method, target)) = line.split_once(' ') else {
        return;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let Ok(route) = Route::parse(&method, path, query) else {
        return;
    };
    let needed = needs(&route);
    let access = AccessControl {
        challenge: Challenge::Bearer {
            realm: String::new(),
            service: SERVICE.to_owned(),
        },
        global_policy: None,
    };
    let repositories = Repositories::default();
    let refused = |authentication: Authentication| {
        let caller = Caller {
            authentication,
            tls: false,
        };
        access
            .authorize(&repositories, &caller, &needed, host)
            .err()
            .map(|refusal| refusal.challenge.expect("a Bearer registry challenges"))
    };
    let failed = refused(Authentication::Failed("fuzzed".to_owned()))
        .expect("failed credentials are refused");
    check_challenge_header(&failed, &needed, false);
    let scopeless = refused(Authentication::Token {
        identity: Identity::user("alice"),
        access: Vec::new().into(),
    });
    match scopeless {
        Some(challenge) => check_challenge_header(&challenge, &needed, true),
        None => assert!(needed.is_empty(), "a token without scopes was let through"),
    }
}

fn check_challenge_header(challenge: &str, needed: &[Need], insufficient: bool) {
    assert!(
        HeaderValue::from_str(challenge).is_ok(),
        "{challenge:?} is not a header value"
    );
    let params = challenge
        .strip_prefix("Bearer ")
        .and_then(auth_params)
        .unwrap_or_else(|| panic!("{challenge:?} is not a Bearer challenge"));
    let names: Vec<&str> = params.iter().map(|(name, _)| *name).collect();
    let mut expected = vec!["realm", "service"];
    if !needed.is_empty() {
        expected.push("scope");
    }
    if insufficient {
        expected.push("error");
    }
    assert_eq!(names, expected, "{challenge:?}");
    let value = |name: &str| params.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let realm = value("realm").unwrap_or_default();
    assert!(
        realm.starts_with("http://") && realm.ends_with("/token"),
        "{challenge:?}"
    );
    assert_eq!(value("service"), Some(SERVICE), "{challenge:?}");
    if let Some(scope) = value("scope") {
        let scopes: Vec<Access> = scope
            .split(' ')
            .map(|s| Access::parse(s).unwrap_or_else(|| panic!("scope {s:?} does not parse")))
            .collect();
        assert_eq!(scopes.len(), needed.len(), "{challenge:?}");
        for (scope, need) in scopes.iter().zip(needed) {
            assert_eq!(scope.resource().as_ref(), Some(&need.resource));
            assert_eq!(scope.actions, need.challenge_actions, "{challenge:?}");
        }
    }
    if insufficient {
        assert_eq!(value("error"), Some("insufficient_scope"));
    }
}

/// `name="value"` pairs separated by commas (RFC 9110 11.2, with quoted values and no
/// escapes, as the core writes them); `None` when the text is not such a list.
fn auth_params(mut rest: &str) -> Option<Vec<(&str, &str)>> {
    let mut params = Vec::new();
    loop {
        let (name, after) = rest.split_once("=\"")?;
        let (value, after) = after.split_once('"')?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_') {
            return None;
        }
        params.push((name, value));
        match after.strip_prefix(',') {
            Some(next) => rest = next,
            None if after.is_empty() => return Some(params),
            None => return None,
        }
    }
}
