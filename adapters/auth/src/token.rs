//! Registry tokens: JWTs this registry's token service signs and every request's bearer
//! token is verified against (distribution's token specification: `iss`, `sub`, `aud`,
//! `exp`, `nbf`, `iat`, `jti` and `access`).
//!
//! The signing key is an EC P-256 (ES256) or RSA (RS256) private key in PEM; the key that
//! verifies is derived from it, and only its algorithm is accepted, so neither `alg: none`
//! nor an HMAC token made with the public key can pass.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stowage_core::access::Access;

use crate::AuthError;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<Access>,
}

/// A token as the token service answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
    pub issued_at: SystemTime,
}

pub struct TokenKeys {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    issuer: String,
    service: String,
    ttl: Duration,
}

impl TokenKeys {
    pub fn open(
        path: &Path,
        issuer: &str,
        service: &str,
        ttl: Duration,
    ) -> Result<Self, AuthError> {
        let pem = std::fs::read(path).map_err(|source| AuthError::SigningKey {
            path: path.to_owned(),
            reason: source.to_string(),
        })?;
        Self::from_pem(&pem, issuer, service, ttl).map_err(|reason| AuthError::SigningKey {
            path: path.to_owned(),
            reason,
        })
    }

    pub fn from_pem(
        pem: &[u8],
        issuer: &str,
        service: &str,
        ttl: Duration,
    ) -> Result<Self, String> {
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| format!("not a PEM private key: {e}"))?;
        let rng = SystemRandom::new();
        let ec = match &der {
            PrivateKeyDer::Pkcs8(pkcs8) => EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                pkcs8.secret_pkcs8_der(),
                &rng,
            )
            .ok(),
            _ => None,
        };
        let (algorithm, encoding, public) = if let Some(pair) = ec {
            let encoding = EncodingKey::from_ec_pem(pem).map_err(|e| e.to_string())?;
            (
                Algorithm::ES256,
                encoding,
                pair.public_key().as_ref().to_vec(),
            )
        } else {
            let pair = match &der {
                PrivateKeyDer::Pkcs8(pkcs8) => RsaKeyPair::from_pkcs8(pkcs8.secret_pkcs8_der()),
                PrivateKeyDer::Pkcs1(pkcs1) => RsaKeyPair::from_der(pkcs1.secret_pkcs1_der()),
                _ => {
                    return Err("an EC key must be P-256 in PKCS#8 (BEGIN PRIVATE KEY)".to_owned());
                }
            }
            .map_err(|e| format!("neither a P-256 nor a usable RSA key: {e}"))?;
            let encoding = EncodingKey::from_rsa_pem(pem).map_err(|e| e.to_string())?;
            (
                Algorithm::RS256,
                encoding,
                pair.public_key().as_ref().to_vec(),
            )
        };
        let decoding = match algorithm {
            Algorithm::ES256 => DecodingKey::from_ec_der(&public),
            _ => DecodingKey::from_rsa_der(&public),
        };
        Ok(TokenKeys {
            algorithm,
            encoding,
            decoding,
            kid: hex::encode(&Sha256::digest(&public)[..16]),
            issuer: issuer.to_owned(),
            service: service.to_owned(),
            ttl,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn issue(
        &self,
        subject: &str,
        access: Vec<Access>,
        now: SystemTime,
    ) -> Result<IssuedToken, AuthError> {
        let iat = unix(now);
        let mut jti = [0u8; 16];
        SystemRandom::new()
            .fill(&mut jti)
            .map_err(|_| AuthError::Random)?;
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: subject.to_owned(),
            aud: self.service.clone(),
            exp: iat + self.ttl.as_secs(),
            nbf: iat,
            iat,
            jti: hex::encode(jti),
            access,
        };
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| AuthError::Sign(e.to_string()))?;
        Ok(IssuedToken {
            token,
            expires_in: self.ttl.as_secs(),
            issued_at: now,
        })
    }

    /// The claims of a token this registry issued, if its signature, issuer, audience and
    /// validity period check out.
    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_audience(&[&self.service]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map(|data| data.claims)
    }
}

pub fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`
    const EC_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgaLoM2FaSrWzaaUht
VnwAx8V7cIRLzEFboChSWa3RWtWhRANCAARs8xacA9yXq3DbOFRvZ3N0wPvzpVJL
e5+eDfWRgDV4CCN533QoFTPsEPyJ/1h2XMQM/GCxKZ2PyjwZrURcp4pc
-----END PRIVATE KEY-----
";

    fn keys() -> TokenKeys {
        TokenKeys::from_pem(
            EC_KEY.as_bytes(),
            "stowage",
            "registry",
            Duration::from_secs(300),
        )
        .unwrap()
    }

    #[test]
    fn issued_tokens_verify_and_carry_their_access() {
        let keys = keys();
        let access = vec![Access::parse("repository:app:pull").unwrap()];
        let issued = keys
            .issue("alice", access.clone(), SystemTime::now())
            .unwrap();
        let claims = keys.verify(&issued.token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.access), ("alice", access));
    }

    #[test]
    fn tampered_expired_and_foreign_tokens_fail() {
        let keys = keys();
        let issued = keys.issue("alice", vec![], SystemTime::now()).unwrap();
        let mut parts: Vec<&str> = issued.token.split('.').collect();
        let forged_claims = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"iss":"stowage","sub":"root","aud":"registry","exp":9999999999,"nbf":0,"iat":0,"jti":"x","access":[{"type":"repository","name":"app","actions":["*"]}]}"#,
        );
        parts[1] = &forged_claims;
        assert!(keys.verify(&parts.join(".")).is_err(), "tampered");
        let old = SystemTime::now() - Duration::from_secs(3600);
        let expired = keys.issue("alice", vec![], old).unwrap();
        assert!(keys.verify(&expired.token).is_err(), "expired");
        let future = SystemTime::now() + Duration::from_secs(3600);
        let early = keys.issue("alice", vec![], future).unwrap();
        assert!(keys.verify(&early.token).is_err(), "not yet valid");
        let other_audience = TokenKeys::from_pem(
            EC_KEY.as_bytes(),
            "stowage",
            "elsewhere",
            Duration::from_secs(60),
        )
        .unwrap();
        let theirs = other_audience
            .issue("alice", vec![], SystemTime::now())
            .unwrap();
        assert!(keys.verify(&theirs.token).is_err(), "wrong audience");
        let none = format!(
            "{}.{}.",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                br#"{"alg":"none","typ":"JWT"}"#
            ),
            parts[1]
        );
        assert!(keys.verify(&none).is_err(), "alg none");
        assert!(keys.verify("not a token").is_err());
    }
}
