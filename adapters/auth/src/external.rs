//! An external token server (`[auth.token]`, CNCF Distribution's `auth.token`): clients are
//! sent to its realm for tokens, and this registry verifies them with its keys. The token's
//! `access` claim decides, as for this registry's own tokens.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use stowage_core::access::Access;

use crate::AuthError;
use crate::fetch::JwksLocation;
use crate::foreign::{ForeignTokens, Keys, signing_algorithms};
use crate::jwks::{KeySet, KeysError};
use crate::oidc::web_url;
use crate::remote_keys::{RemoteKeys, Shared};
use crate::x5c::Roots;

/// Clock skew tolerated on the token server's `exp` and `nbf`.
const CLOCK_SKEW_SECS: u64 = 30;

/// `[auth.token]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalTokenSettings {
    /// The token server's endpoint clients are sent to.
    pub realm: String,
    pub service: String,
    pub issuer: String,
    /// Exactly one of the three key sources.
    pub rootcertbundle: Option<PathBuf>,
    pub jwks: Option<PathBuf>,
    pub jwks_uri: Option<String>,
    pub signing_algorithms: Vec<String>,
    pub jwks_refresh_interval: Duration,
}

impl ExternalTokenSettings {
    fn invalid(field: &str, reason: String) -> AuthError {
        AuthError::Setting {
            key: format!("auth.token.{field}"),
            reason,
        }
    }

    /// What can be checked without reading files or the network.
    pub fn check(&self) -> Result<Vec<Algorithm>, AuthError> {
        web_url(&self.realm).map_err(|r| Self::invalid("realm", r))?;
        if self.service.is_empty() || self.issuer.is_empty() {
            return Err(Self::invalid(
                "service",
                "service and issuer must be set".into(),
            ));
        }
        let sources = [
            self.rootcertbundle.is_some(),
            self.jwks.is_some(),
            self.jwks_uri.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(Self::invalid(
                "rootcertbundle",
                "name exactly one of rootcertbundle, jwks and jwks_uri".into(),
            ));
        }
        if let Some(uri) = &self.jwks_uri {
            web_url(uri).map_err(|r| Self::invalid("jwks_uri", r))?;
        }
        if self.jwks_refresh_interval.is_zero() {
            return Err(Self::invalid(
                "jwks_refresh_interval_secs",
                "must be at least 1".into(),
            ));
        }
        signing_algorithms(&self.signing_algorithms)
            .map_err(|r| Self::invalid("signing_algorithms", r))
    }
}

/// What a verified token grants, and when it expires (Unix seconds).
#[derive(serde::Deserialize)]
pub struct Grant {
    #[serde(default)]
    pub sub: String,
    pub exp: u64,
    #[serde(default)]
    pub access: Vec<Access>,
}

pub struct ExternalTokens {
    tokens: ForeignTokens,
}

impl ExternalTokens {
    pub fn new(settings: &ExternalTokenSettings, shared: Shared) -> Result<Self, AuthError> {
        let algorithms = settings.check()?;
        let read = |field: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| Self::invalid_file(field, path, e.to_string()))
        };
        let keys = match (&settings.rootcertbundle, &settings.jwks, &settings.jwks_uri) {
            (Some(path), _, _) => {
                let pem = read("rootcertbundle", path)?;
                let invalid =
                    |e: KeysError| Self::invalid_file("rootcertbundle", path, e.to_string());
                let keys = KeySet::from_certificates(&pem).map_err(invalid)?;
                Keys::Certificates(Arc::new(keys), Roots::from_pem(&pem).map_err(invalid)?)
            }
            (_, Some(path), _) => {
                let keys = KeySet::from_jwks(&read("jwks", path)?)
                    .map_err(|e| Self::invalid_file("jwks", path, e.to_string()))?;
                Keys::Fixed(Arc::new(keys))
            }
            (_, _, uri) => {
                let uri = web_url(uri.as_deref().unwrap_or_default())
                    .map_err(|r| ExternalTokenSettings::invalid("jwks_uri", r))?;
                Keys::Remote(Box::new(RemoteKeys::new(
                    "token server".to_owned(),
                    &format!("token\n{}\n{uri}", settings.issuer),
                    JwksLocation::Uri(uri),
                    settings.jwks_refresh_interval,
                    shared,
                )))
            }
        };
        Ok(ExternalTokens {
            tokens: ForeignTokens {
                name: "token server".to_owned(),
                issuer: settings.issuer.clone(),
                audience: settings.service.clone(),
                algorithms,
                clock_skew_secs: CLOCK_SKEW_SECS,
                required: &[],
                keys,
            },
        })
    }

    fn invalid_file(field: &str, path: &std::path::Path, reason: String) -> AuthError {
        ExternalTokenSettings::invalid(field, format!("{}: {reason}", path.display()))
    }

    pub fn issuer(&self) -> &str {
        &self.tokens.issuer
    }

    pub async fn verify(&self, token: &str) -> Result<Grant, String> {
        self.tokens.verify(token).await
    }
}
