//! Verifying tokens signed by keys that are not this registry's: an OIDC provider's or an
//! external token server's. The signature, issuer, audience, validity period and algorithm
//! are checked here; what the claims then prove is the caller's concern.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use serde::de::DeserializeOwned;

use crate::jwks::KeySet;
use crate::remote_keys::RemoteKeys;
use crate::x5c::Roots;

/// Where the keys come from.
pub enum Keys {
    /// Read from a file at startup (a JWKS document).
    Fixed(Arc<KeySet>),
    /// A certificate bundle read at startup: its certificates' keys, and the roots an `x5c`
    /// chain must lead to.
    Certificates(Arc<KeySet>, Roots),
    /// Fetched, and shared through the cache (boxed: it is much the larger).
    Remote(Box<RemoteKeys>),
}

pub struct ForeignTokens {
    /// For messages: `oidc provider "github-actions"`, `token server`.
    pub name: String,
    pub issuer: String,
    pub audience: String,
    pub algorithms: Vec<Algorithm>,
    pub clock_skew_secs: u64,
    /// Registered claims that must be present besides `exp`, `iss` and `aud`.
    pub required: &'static [&'static str],
    pub keys: Keys,
}

impl ForeignTokens {
    /// The claims of `token` if one of the keys signed it and its registered claims check
    /// out; the reason otherwise (for logs, never for the client).
    pub async fn verify<T: DeserializeOwned>(&self, token: &str) -> Result<T, String> {
        let refused = |reason: String| format!("{}: {reason}", self.name);
        let header = jsonwebtoken::decode_header(token).map_err(|e| refused(e.to_string()))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(refused(format!(
                "algorithm {:?} is not allowed",
                header.alg
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.clock_skew_secs;
        validation.validate_nbf = true;
        validation.set_audience(&[&self.audience]);
        validation.set_issuer(&[&self.issuer]);
        let mut required = vec!["exp", "iss", "aud"];
        required.extend_from_slice(self.required);
        validation.set_required_spec_claims(&required);
        // Distribution's rule for a bundle: a token naming its signer by a chain is judged
        // by the chain alone. Other keys ignore the header: the `kid` must name one of them.
        if let Keys::Certificates(_, roots) = &self.keys
            && let Some(chain) = header.x5c_der().map_err(|e| refused(format!("x5c: {e}")))?
        {
            let key = roots
                .signer(&chain, rustls_pki_types::UnixTime::now())
                .map_err(refused)?;
            return jsonwebtoken::decode::<T>(token, &key, &validation)
                .map(|data| data.claims)
                .map_err(|e| refused(e.to_string()));
        }
        let kid = header.kid.as_deref();
        let keys = match &self.keys {
            Keys::Fixed(keys) | Keys::Certificates(keys, _) => Some(keys.clone()),
            Keys::Remote(remote) => remote.keys_for(kid, header.alg).await,
        };
        let Some(keys) = keys.filter(|k| k.knows(kid, header.alg)) else {
            return Err(refused(format!(
                "no key {kid:?} for {:?} is available",
                header.alg
            )));
        };
        let mut last = String::new();
        for key in keys.candidates(kid, header.alg) {
            match jsonwebtoken::decode::<T>(token, key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = e.to_string(),
            }
        }
        Err(refused(last))
    }
}

/// The `iss` claim of a token, read without verifying anything, to pick who verifies it.
pub fn unverified_issuer(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Issuer {
        iss: String,
    }
    let payload = token.split('.').nth(1)?;
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Issuer>(&json).ok().map(|i| i.iss)
}

/// The algorithms a configuration may allow: asymmetric ones only. `none` and HMAC would let
/// anyone who knows the public key (or nothing) sign tokens.
pub fn signing_algorithms(names: &[String]) -> Result<Vec<Algorithm>, String> {
    if names.is_empty() {
        return Err("allow at least one algorithm".to_owned());
    }
    names
        .iter()
        .map(|name| {
            if name.eq_ignore_ascii_case("none") || name.to_ascii_uppercase().starts_with("HS") {
                return Err(format!(
                    "{name}: only asymmetric algorithms (RS*, PS*, ES*, EdDSA) are allowed"
                ));
            }
            name.parse::<Algorithm>()
                .map_err(|_| format!("{name}: not a JWS algorithm"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_asymmetric_algorithms_are_allowed() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            signing_algorithms(&names(&["RS256", "ES256"])).unwrap(),
            vec![Algorithm::RS256, Algorithm::ES256]
        );
        for bad in [
            &["none"][..],
            &["HS256"],
            &["hs512"],
            &["RS256", "NONE"],
            &["XY1"],
            &[],
        ] {
            assert!(signing_algorithms(&names(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reads_the_issuer_without_trusting_it() {
        let token = format!(
            "e30.{}.sig",
            URL_SAFE_NO_PAD.encode(br#"{"iss":"https://idp.example","sub":"x"}"#)
        );
        assert_eq!(
            unverified_issuer(&token).as_deref(),
            Some("https://idp.example")
        );
        assert_eq!(unverified_issuer("garbage"), None);
        assert_eq!(unverified_issuer("a.!!!.c"), None);
    }
}
