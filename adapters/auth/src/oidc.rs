//! OIDC providers (`[auth.oidc.<name>]`): a CI job (GitHub Actions, GitLab, a cloud's
//! workload identity) presents the ID token its provider signed, and is identified as
//! `oidc:<provider>:<sub>` with the token's claims for policies to look at.

use std::collections::BTreeMap;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use stowage_core::access::{Identity, OidcIdentity};
use url::Url;

use crate::AuthError;
use crate::fetch::JwksLocation;
use crate::foreign::{ForeignTokens, Keys, signing_algorithms};
use crate::remote_keys::{RemoteKeys, Shared};

/// `[auth.oidc.<name>]`.
#[derive(Debug, Clone, PartialEq)]
pub struct OidcSettings {
    pub name: String,
    pub issuer: String,
    /// Absent: read from the issuer's discovery document.
    pub jwks_uri: Option<String>,
    pub required_audience: String,
    /// Claims that must hold exactly these values.
    pub required_claims: BTreeMap<String, serde_json::Value>,
    pub allowed_algorithms: Vec<String>,
    pub jwks_refresh_interval: Duration,
    pub clock_skew: Duration,
}

impl OidcSettings {
    /// What can be checked without the network, with the key each problem is under.
    pub fn check(&self) -> Result<(Url, Option<Url>, Vec<Algorithm>), AuthError> {
        let invalid = |field: &str, reason: String| AuthError::Setting {
            key: format!("auth.oidc.{}.{field}", self.name),
            reason,
        };
        if self.name.is_empty() || self.name.contains(':') {
            return Err(invalid(
                "",
                "a provider's name must be non-empty and hold no ':'".into(),
            ));
        }
        let issuer = web_url(&self.issuer).map_err(|r| invalid("issuer", r))?;
        let jwks_uri = self
            .jwks_uri
            .as_deref()
            .map(web_url)
            .transpose()
            .map_err(|r| invalid("jwks_uri", r))?;
        if self.required_audience.is_empty() {
            return Err(invalid(
                "required_audience",
                "must name the audience tokens are minted for".into(),
            ));
        }
        let algorithms = signing_algorithms(&self.allowed_algorithms)
            .map_err(|r| invalid("allowed_algorithms", r))?;
        if self.jwks_refresh_interval.is_zero() {
            return Err(invalid(
                "jwks_refresh_interval_secs",
                "must be at least 1".into(),
            ));
        }
        Ok((issuer, jwks_uri, algorithms))
    }
}

/// An `http` or `https` URL.
pub fn web_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?}: {e}"))?;
    match url.scheme() {
        "https" | "http" if url.host().is_some() => Ok(url),
        _ => Err(format!("{text:?}: not an http(s) URL")),
    }
}

pub struct OidcProvider {
    name: String,
    required_claims: BTreeMap<String, serde_json::Value>,
    tokens: ForeignTokens,
}

impl OidcProvider {
    pub fn new(settings: &OidcSettings, shared: Shared) -> Result<Self, AuthError> {
        let (issuer, jwks_uri, algorithms) = settings.check()?;
        let location = match jwks_uri {
            Some(uri) => JwksLocation::Uri(uri),
            None => JwksLocation::Discovered {
                issuer,
                jwks_uri: Default::default(),
            },
        };
        let name = format!("oidc provider {:?}", settings.name);
        let keys = RemoteKeys::new(
            name.clone(),
            &format!(
                "oidc\n{}\n{}\n{:?}",
                settings.name, settings.issuer, settings.jwks_uri
            ),
            location,
            settings.jwks_refresh_interval,
            shared,
        );
        Ok(OidcProvider {
            name: settings.name.clone(),
            required_claims: settings.required_claims.clone(),
            tokens: ForeignTokens {
                name,
                issuer: settings.issuer.clone(),
                audience: settings.required_audience.clone(),
                algorithms,
                clock_skew_secs: settings.clock_skew.as_secs(),
                required: &["sub"],
                keys: Keys::Remote(Box::new(keys)),
            },
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn issuer(&self) -> &str {
        &self.tokens.issuer
    }

    /// The identity an ID token proves, and when the token expires (Unix seconds).
    pub async fn verify(&self, token: &str) -> Result<(Identity, u64), String> {
        let claims: serde_json::Value = self.tokens.verify(token).await?;
        let refused = |reason: String| format!("{}: {reason}", self.tokens.name);
        for (claim, wanted) in &self.required_claims {
            if claims.get(claim) != Some(wanted) {
                return Err(refused(format!("claim {claim:?} is not {wanted}")));
            }
        }
        let subject = claims
            .get("sub")
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| refused("no subject".to_owned()))?;
        let expires = claims
            .get("exp")
            .and_then(|exp| exp.as_u64().or_else(|| exp.as_f64().map(|f| f as u64)))
            .ok_or_else(|| refused("no expiry".to_owned()))?;
        let identity = Identity {
            id: format!("oidc:{}:{subject}", self.name),
            username: String::new(),
            oidc: Some(OidcIdentity {
                provider: self.name.clone(),
                claims: std::sync::Arc::new(claims),
            }),
            ..Identity::anonymous()
        };
        Ok((identity, expires))
    }
}
