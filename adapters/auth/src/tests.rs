//! The authenticator's token paths end to end: OIDC bearer and Basic logins, keys shared
//! through the cache, rotation, floods of unknown keys, an unreachable provider, and an
//! external token server's tokens.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use futures_lite::future::block_on;
use stowage_core::access::{Access, Authentication};

use crate::testing::{ISSUER, JWKS_URI, Provider, Signer, claims, jwks, shared};
use crate::*;

const AUDIENCE: &str = "https://registry.example";

fn provider_settings(name: &str, refresh: Duration) -> OidcSettings {
    OidcSettings {
        name: name.to_owned(),
        issuer: ISSUER.to_owned(),
        jwks_uri: Some(JWKS_URI.to_owned()),
        required_audience: AUDIENCE.to_owned(),
        required_claims: BTreeMap::from([("ref".to_owned(), "refs/heads/main".into())]),
        allowed_algorithms: vec!["RS256".into(), "ES256".into()],
        jwks_refresh_interval: refresh,
        clock_skew: Duration::from_secs(30),
    }
}

fn settings(refresh: Duration) -> AuthSettings {
    AuthSettings {
        oidc: vec![provider_settings("gha", refresh)],
        ..AuthSettings::default()
    }
}

fn address() -> IpAddr {
    "10.0.0.1".parse().unwrap()
}

fn bearer(authenticator: &Authenticator, token: &str) -> Authentication {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    block_on(authenticator.authenticate(&headers, address(), None, None)).unwrap()
}

fn basic(authenticator: &Authenticator, username: &str, password: &str) -> Authentication {
    let mut headers = http::HeaderMap::new();
    let credentials = STANDARD.encode(format!("{username}:{password}"));
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Basic {credentials}").parse().unwrap(),
    );
    block_on(authenticator.authenticate(&headers, address(), None, None)).unwrap()
}

fn is_failed(authentication: &Authentication) -> bool {
    matches!(authentication, Authentication::Failed(_))
}

#[test]
fn oidc_tokens_identify_the_job_with_its_claims() {
    let (ec, rsa) = (Signer::ec("ec-1"), Signer::rsa("rsa-1"));
    let provider = Arc::new(Provider::default());
    provider.publish(JWKS_URI, jwks(&[&ec, &rsa]));
    let authenticator =
        Authenticator::new(&settings(Duration::from_secs(300)), shared(&provider)).unwrap();
    for signer in [&ec, &rsa] {
        let token = signer.sign(&claims(SystemTime::now(), AUDIENCE));
        let Authentication::Identified(identity) = bearer(&authenticator, &token) else {
            panic!("{:?} token refused", signer.algorithm);
        };
        assert_eq!(identity.id, "oidc:gha:repo:org/app:ref:refs/heads/main");
        assert_eq!(identity.username, "");
        let oidc = identity.oidc.unwrap();
        assert_eq!(
            (oidc.provider.as_str(), &oidc.claims["repository"]),
            ("gha", &"org/app".into())
        );
        // The same token as the password of a Basic login as the provider.
        assert!(matches!(
            basic(&authenticator, "gha", &token),
            Authentication::Identified(_)
        ));
        assert!(
            is_failed(&basic(&authenticator, "other", &token)),
            "not a provider"
        );
    }
    assert_eq!(provider.requests(), 1, "one JWKS fetch serves every token");
}

#[test]
fn bad_tokens_are_refused_without_asking_the_provider_again() {
    let signer = Signer::ec("ec-1");
    let provider = Arc::new(Provider::default());
    provider.publish(JWKS_URI, jwks(&[&signer]));
    let authenticator =
        Authenticator::new(&settings(Duration::from_secs(300)), shared(&provider)).unwrap();
    let now = SystemTime::now();
    let good = claims(now, AUDIENCE);
    assert!(matches!(
        bearer(&authenticator, &signer.sign(&good)),
        Authentication::Identified(_)
    ));
    let with = |key: &str, value: serde_json::Value| {
        let mut claims = good.clone();
        claims[key] = value;
        signer.sign(&claims)
    };
    let hour = 3600;
    let now_secs = crate::token::unix(now);
    let hmac = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &good,
        &jsonwebtoken::EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"ec-1"}"#),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    let mut no_sub = good.clone();
    no_sub.as_object_mut().unwrap().remove("sub");
    let cases = [
        ("expired", with("exp", (now_secs - hour).into())),
        ("not yet valid", with("nbf", (now_secs + hour).into())),
        (
            "wrong audience",
            with("aud", "https://elsewhere.example".into()),
        ),
        ("wrong issuer", with("iss", "https://evil.example".into())),
        (
            "required claim differs",
            with("ref", "refs/heads/feature".into()),
        ),
        ("no subject", signer.sign(&no_sub)),
        ("unknown key", signer.sign_as(Some("ec-404"), &good)),
        ("signed by another key", Signer::ec("ec-1").sign(&good)),
        ("HMAC", hmac),
        ("alg none", none),
        ("not a JWT", "abc".to_owned()),
    ];
    for (why, token) in cases {
        assert!(is_failed(&bearer(&authenticator, &token)), "{why}");
    }
    assert_eq!(
        provider.requests(),
        2,
        "the first fetch, then one rationed refetch for the unknown key"
    );
}

#[test]
fn replicas_share_keys_pick_up_a_rotation_and_ration_unknown_kids() {
    let (old, new) = (Signer::ec("old"), Signer::ec("new"));
    let provider = Arc::new(Provider::default());
    provider.publish(JWKS_URI, jwks(&[&old]));
    let shared = shared(&provider);
    let replicas: Vec<Authenticator> = (0..3)
        .map(|_| Authenticator::new(&settings(Duration::from_secs(300)), shared.clone()).unwrap())
        .collect();
    let now = SystemTime::now;
    for replica in &replicas {
        let token = old.sign(&claims(now(), AUDIENCE));
        assert!(matches!(
            bearer(replica, &token),
            Authentication::Identified(_)
        ));
    }
    assert_eq!(provider.requests(), 1, "one fetch for the three replicas");
    provider.publish(JWKS_URI, jwks(&[&old, &new]));
    for replica in &replicas {
        let token = new.sign(&claims(now(), AUDIENCE));
        assert!(matches!(
            bearer(replica, &token),
            Authentication::Identified(_)
        ));
    }
    assert_eq!(provider.requests(), 2, "the new key, by one refetch");
    for i in 0..60 {
        let token = new.sign_as(Some(&format!("random-{i}")), &claims(now(), AUDIENCE));
        assert!(is_failed(&bearer(&replicas[i % 3], &token)));
    }
    assert_eq!(
        provider.requests(),
        2,
        "made-up kids within the spacing fetch nothing"
    );
}

#[test]
fn known_keys_outlive_an_unreachable_provider_until_they_expire() {
    let signer = Signer::ec("k");
    let provider = Arc::new(Provider::default());
    provider.publish(JWKS_URI, jwks(&[&signer]));
    let authenticator =
        Authenticator::new(&settings(Duration::from_secs(1)), shared(&provider)).unwrap();
    let token = || signer.sign(&claims(SystemTime::now(), AUDIENCE));
    assert!(matches!(
        bearer(&authenticator, &token()),
        Authentication::Identified(_)
    ));
    provider.down.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1100));
    // Due for a refresh that fails: the keys held still verify.
    assert!(matches!(
        bearer(&authenticator, &token()),
        Authentication::Identified(_)
    ));
    assert_eq!(provider.requests(), 2);
    // Tokens needing other keys are refused, and the down provider is not asked again
    // while the failed fetch's lease lasts.
    let unknown = signer.sign_as(Some("other"), &claims(SystemTime::now(), AUDIENCE));
    assert!(is_failed(&bearer(&authenticator, &unknown)));
    assert!(matches!(
        bearer(&authenticator, &token()),
        Authentication::Identified(_)
    ));
    assert_eq!(provider.requests(), 2);
}

#[test]
fn an_unreachable_provider_at_startup_is_a_refusal() {
    let provider = Arc::new(Provider::default());
    provider.down.store(true, Ordering::SeqCst);
    let authenticator =
        Authenticator::new(&settings(Duration::from_secs(300)), shared(&provider)).unwrap();
    let token = Signer::ec("k").sign(&claims(SystemTime::now(), AUDIENCE));
    for _ in 0..5 {
        assert!(is_failed(&bearer(&authenticator, &token)));
    }
    assert_eq!(provider.requests(), 1, "asked once per lease");
}

#[test]
fn settings_refuse_unsafe_algorithms_and_ambiguous_verifiers() {
    let check = |settings: AuthSettings| settings.check().map_err(|e| e.to_string());
    let mut hmac = settings(Duration::from_secs(300));
    hmac.oidc[0].allowed_algorithms = vec!["HS256".into()];
    assert!(check(hmac).unwrap_err().contains("allowed_algorithms"));
    let mut none = settings(Duration::from_secs(300));
    none.oidc[0].allowed_algorithms = vec!["none".into()];
    assert!(check(none).is_err());
    let mut twice = settings(Duration::from_secs(300));
    twice
        .oidc
        .push(provider_settings("again", Duration::from_secs(300)));
    assert!(check(twice).unwrap_err().contains("issuer"));
    let mut no_audience = settings(Duration::from_secs(300));
    no_audience.oidc[0].required_audience.clear();
    assert!(check(no_audience).is_err());
    let mut not_web = settings(Duration::from_secs(300));
    not_web.oidc[0].issuer = "file:///etc/passwd".into();
    assert!(check(not_web).is_err());
    let both = AuthSettings {
        token_service: Some(TokenServiceSettings {
            realm: String::new(),
            service: "registry".into(),
            issuer: "hub".into(),
            signing_key: "key.pem".into(),
            ttl: Duration::from_secs(60),
        }),
        external_token: Some(external_settings(None, None)),
        ..AuthSettings::default()
    };
    assert!(check(both).unwrap_err().contains("exclude"));
}

fn external_settings(
    jwks: Option<std::path::PathBuf>,
    bundle: Option<std::path::PathBuf>,
) -> ExternalTokenSettings {
    ExternalTokenSettings {
        realm: "https://hub.example/token".into(),
        service: "registry".into(),
        issuer: "hub".into(),
        rootcertbundle: bundle,
        jwks_uri: None,
        jwks,
        signing_algorithms: vec!["ES256".into()],
        jwks_refresh_interval: Duration::from_secs(300),
    }
}

/// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`
const HUB_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgaLoM2FaSrWzaaUht
VnwAx8V7cIRLzEFboChSWa3RWtWhRANCAARs8xacA9yXq3DbOFRvZ3N0wPvzpVJL
e5+eDfWRgDV4CCN533QoFTPsEPyJ/1h2XMQM/GCxKZ2PyjwZrURcp4pc
-----END PRIVATE KEY-----
";

#[test]
fn an_external_token_servers_tokens_grant_their_access() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("hub.pem");
    std::fs::write(&key, HUB_KEY).unwrap();
    // Its certificate, for a Distribution-style rootcertbundle.
    let bundle = dir.path().join("bundle.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-new", "-x509", "-days", "1", "-subj", "/CN=hub", "-key",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&bundle)
        .status()
        .unwrap();
    assert!(made.success());
    let hub = TokenKeys::open(&key, "hub", "registry", Duration::from_secs(300)).unwrap();
    let point = hex_point(HUB_KEY);
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(
        &jwks_file,
        serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])}]})
        .to_string(),
    )
    .unwrap();
    let access = vec![Access::parse("repository:app:pull,push").unwrap()];
    let provider = Arc::new(Provider::default());
    for external in [
        external_settings(Some(jwks_file.clone()), None),
        external_settings(None, Some(bundle.clone())),
    ] {
        let settings = AuthSettings {
            external_token: Some(external),
            ..AuthSettings::default()
        };
        assert!(
            matches!(settings.challenge(), stowage_core::access::Challenge::Bearer { ref realm, .. } if realm == "https://hub.example/token")
        );
        let authenticator = Authenticator::new(&settings, shared(&provider)).unwrap();
        let issued = hub
            .issue("alice", access.clone(), SystemTime::now())
            .unwrap();
        let Authentication::Token {
            identity,
            access: granted,
        } = bearer(&authenticator, &issued.token)
        else {
            panic!("the hub's token was refused");
        };
        assert_eq!(
            (identity.username.as_str(), granted.to_vec()),
            ("alice", access.clone())
        );
        let elsewhere =
            TokenKeys::open(&key, "hub", "other-service", Duration::from_secs(60)).unwrap();
        let wrong_audience = elsewhere
            .issue("alice", access.clone(), SystemTime::now())
            .unwrap();
        assert!(is_failed(&bearer(&authenticator, &wrong_audience.token)));
        let stranger = TokenKeys::from_pem(
            crate::testing::new_ec_pem().as_bytes(),
            "hub",
            "registry",
            Duration::from_secs(60),
        )
        .unwrap();
        let forged = stranger
            .issue("alice", access.clone(), SystemTime::now())
            .unwrap();
        assert!(
            is_failed(&bearer(&authenticator, &forged.token)),
            "another key"
        );
    }
    assert_eq!(provider.requests(), 0, "file keys are never fetched");
}

/// The public point of a PEM P-256 key.
fn hex_point(pem: &str) -> Vec<u8> {
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map(|key: rustls_pki_types::PrivatePkcs8KeyDer| key.secret_pkcs8_der().to_vec())
        .unwrap();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &der,
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    ring::signature::KeyPair::public_key(&pair)
        .as_ref()
        .to_vec()
}
