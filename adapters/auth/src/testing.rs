//! What the unit tests share: signing keys and their JWKs, a provider that counts the
//! documents it serves and can go down, and replicas sharing one in-memory cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use stowage_driver::{BoxFuture, MemoryCacheStore, Timer};
use url::Url;

use crate::fetch::{Fetch, FetchError};
use crate::remote_keys::Shared;
use crate::token::unix;

pub struct Signer {
    pub kid: String,
    pub algorithm: Algorithm,
    encoding: EncodingKey,
    pub jwk: serde_json::Value,
}

impl Signer {
    /// A fresh P-256 key.
    pub fn ec(kid: &str) -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref();
        Signer {
            kid: kid.to_owned(),
            algorithm: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: serde_json::json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            }),
        }
    }

    /// A fresh 2048-bit RSA key, made by `openssl` (ring cannot generate RSA keys).
    pub fn rsa(kid: &str) -> Signer {
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl genpkey failed");
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(&out.stdout)
            .map(|key: rustls_pki_types::PrivatePkcs8KeyDer| key.secret_pkcs8_der().to_vec())
            .unwrap();
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
        let public: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
        let (modulus, exponent) = (&public.n, &public.e);
        Signer {
            kid: kid.to_owned(),
            algorithm: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_pem(&out.stdout).unwrap(),
            jwk: serde_json::json!({
                "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                "n": URL_SAFE_NO_PAD.encode(modulus),
                "e": URL_SAFE_NO_PAD.encode(exponent),
            }),
        }
    }

    /// `claims`, signed, with this key's `kid` (or `kid` instead).
    pub fn sign_as(&self, kid: Option<&str>, claims: &serde_json::Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(kid.unwrap_or(&self.kid).to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    pub fn sign(&self, claims: &serde_json::Value) -> String {
        self.sign_as(None, claims)
    }
}

/// A fresh P-256 private key in PEM, as a token service's signing key.
pub fn new_ec_pem() -> String {
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "openssl genpkey failed");
    String::from_utf8(out.stdout).unwrap()
}

pub fn jwks(signers: &[&Signer]) -> String {
    let keys: Vec<_> = signers.iter().map(|s| s.jwk.clone()).collect();
    serde_json::json!({ "keys": keys }).to_string()
}

pub const ISSUER: &str = "https://idp.example";
pub const JWKS_URI: &str = "https://idp.example/keys";

/// GitHub Actions-shaped claims, valid for five minutes from `now`, for `audience`.
pub fn claims(now: SystemTime, audience: &str) -> serde_json::Value {
    let iat = unix(now);
    serde_json::json!({
        "iss": ISSUER,
        "aud": audience,
        "sub": "repo:org/app:ref:refs/heads/main",
        "repository": "org/app",
        "ref": "refs/heads/main",
        "iat": iat,
        "nbf": iat,
        "exp": iat + 300,
    })
}

/// An identity provider: documents by URL, a count of what it served, and a switch.
#[derive(Default)]
pub struct Provider {
    documents: Mutex<HashMap<String, Bytes>>,
    pub requests: AtomicUsize,
    pub down: AtomicBool,
}

impl Provider {
    pub fn publish(&self, url: &str, body: String) {
        self.documents
            .lock()
            .unwrap()
            .insert(url.to_owned(), Bytes::from(body));
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Fetch for Provider {
    fn get<'a>(&'a self, url: &'a Url) -> BoxFuture<'a, Result<Bytes, FetchError>> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let answer = match self.down.load(Ordering::SeqCst) {
            true => None,
            false => self.documents.lock().unwrap().get(url.as_str()).cloned(),
        };
        Box::pin(async move {
            answer.ok_or(FetchError::Request {
                url: url.to_string(),
                reason: "unreachable".to_owned(),
            })
        })
    }
}

/// Sleeps the calling thread: the tests run one future at a time on it.
pub struct ThreadTimer;

impl Timer for ThreadTimer {
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        std::thread::sleep(duration);
        Box::pin(async {})
    }
}

/// What several replicas of one deployment share: one cache, one provider.
pub fn shared(provider: &Arc<Provider>) -> Shared {
    Shared {
        cache: Arc::new(MemoryCacheStore::new(1 << 20)),
        timer: Arc::new(ThreadTimer),
        fetch: provider.clone(),
    }
}
