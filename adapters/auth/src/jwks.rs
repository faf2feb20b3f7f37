//! Public keys that verify foreign tokens: a JWKS document (an OIDC provider's, an external
//! token server's) or a PEM certificate bundle (CNCF Distribution's `rootcertbundle`).
//!
//! Only asymmetric keys are ever built: a JWKS `oct` entry (a shared secret) is skipped, so
//! no published document can make an HMAC token verify.

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Keys considered from one document; a provider publishes a handful.
const MAX_KEYS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("not a JWKS document: {0}")]
    Document(String),
    #[error("the document holds no usable signing key")]
    Empty,
    #[error("certificate {index} of the bundle: {reason}")]
    Certificate { index: usize, reason: String },
}

/// One verification key.
pub struct Key {
    /// `None` for a certificate's key, which is tried for any `kid`.
    kid: Option<String>,
    /// The algorithm the document pins the key to, if it does.
    algorithm: Option<Algorithm>,
    decoding: DecodingKey,
}

/// The keys of one document.
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// The signing keys of a JWKS document (`{"keys": [...]}`). Entries this server cannot use
    /// (encryption keys, symmetric keys, unknown key types) are skipped rather than failing
    /// the whole document, since providers publish them next to their signing keys.
    pub fn from_jwks(document: &[u8]) -> Result<KeySet, KeysError> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document =
            serde_json::from_slice(document).map_err(|e| KeysError::Document(e.to_string()))?;
        let keys: Vec<Key> = document
            .keys
            .into_iter()
            .take(MAX_KEYS)
            .filter_map(|entry| serde_json::from_value::<Jwk>(entry).ok())
            .filter_map(|jwk| key_from_jwk(&jwk))
            .collect();
        if keys.is_empty() {
            return Err(KeysError::Empty);
        }
        Ok(KeySet { keys })
    }

    /// The public keys of a bundle of PEM certificates. The certificates' validity and
    /// chains are not looked at: the bundle is the configured list of trusted signers.
    pub fn from_certificates(pem: &[u8]) -> Result<KeySet, KeysError> {
        let mut keys = Vec::new();
        for (index, block) in pem::parse_many(pem)
            .map_err(|e| KeysError::Certificate {
                index: 0,
                reason: e.to_string(),
            })?
            .into_iter()
            .enumerate()
        {
            if block.tag() != "CERTIFICATE" {
                return Err(KeysError::Certificate {
                    index,
                    reason: format!("a {} block, not a CERTIFICATE", block.tag()),
                });
            }
            let decoding = certificate_key(block.contents())
                .map_err(|reason| KeysError::Certificate { index, reason })?;
            keys.push(Key {
                kid: None,
                algorithm: None,
                decoding,
            });
        }
        if keys.is_empty() {
            return Err(KeysError::Empty);
        }
        Ok(KeySet { keys })
    }

    /// The keys that may have signed a token with this `kid` and `alg`: the ones named by
    /// the `kid`, else the ones without a `kid` (certificates'). Empty: the key is unknown.
    pub fn candidates(&self, kid: Option<&str>, algorithm: Algorithm) -> Vec<&DecodingKey> {
        let fits = |key: &&Key| key.algorithm.is_none_or(|pinned| pinned == algorithm);
        let named: Vec<&DecodingKey> = self
            .keys
            .iter()
            .filter(|key| kid.is_some() && key.kid.as_deref() == kid)
            .filter(fits)
            .map(|key| &key.decoding)
            .collect();
        if !named.is_empty() {
            return named;
        }
        self.keys
            .iter()
            .filter(|key| key.kid.is_none() || kid.is_none())
            .filter(fits)
            .map(|key| &key.decoding)
            .collect()
    }

    /// Whether a token naming `kid` would find a key here (an unknown `kid` asks for a fresh
    /// document).
    pub fn knows(&self, kid: Option<&str>, algorithm: Algorithm) -> bool {
        !self.candidates(kid, algorithm).is_empty()
    }
}

/// The public key of a DER certificate, EC or RSA.
pub fn certificate_key(der: &[u8]) -> Result<DecodingKey, String> {
    let pem = pem::encode(&pem::Pem::new("CERTIFICATE", der));
    DecodingKey::from_ec_pem(pem.as_bytes())
        .or_else(|_| DecodingKey::from_rsa_pem(pem.as_bytes()))
        .map_err(|e| format!("neither an EC nor an RSA key: {e}"))
}

fn key_from_jwk(jwk: &Jwk) -> Option<Key> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
        return None;
    }
    let algorithm = match jwk.common.key_algorithm {
        None => None,
        Some(alg) => Some(alg.to_string().parse::<Algorithm>().ok()?),
    };
    Some(Key {
        kid: jwk.common.key_id.clone(),
        algorithm,
        decoding: DecodingKey::from_jwk(jwk).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_JWK: &str = r#"{"kty":"RSA","kid":"r1","use":"sig","alg":"RS256","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}"#;

    #[test]
    fn skips_what_cannot_sign_and_finds_keys_by_kid() {
        let document = format!(
            r#"{{"keys":[{RSA_JWK},{{"kty":"oct","kid":"h","k":"c2VjcmV0"}},{{"kty":"XYZ","kid":"x"}},
            {{"kty":"RSA","kid":"e1","use":"enc","n":"sXch","e":"AQAB"}}]}}"#
        );
        let set = KeySet::from_jwks(document.as_bytes()).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert!(set.knows(Some("r1"), Algorithm::RS256));
        assert!(!set.knows(Some("r1"), Algorithm::RS384), "pinned to RS256");
        assert!(!set.knows(Some("h"), Algorithm::HS256), "no symmetric keys");
        assert!(!set.knows(Some("unknown"), Algorithm::RS256));
        assert!(set.knows(None, Algorithm::RS256));
    }

    #[test]
    fn refuses_documents_without_signing_keys() {
        for bad in [
            &b"not json"[..],
            br#"{"keys":"x"}"#,
            br#"{"keys":[]}"#,
            br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#,
        ] {
            assert!(
                KeySet::from_jwks(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(KeySet::from_certificates(b"").is_err());
        assert!(
            KeySet::from_certificates(
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            )
            .is_err()
        );
    }
}
