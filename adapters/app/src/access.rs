//! The `[auth]` and `[global]` tables, and what they build: the authenticator (adapters) and
//! the access control (core); and an access policy as any table gives it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use stowage_auth::{AuthSettings, ExternalTokenSettings, OidcSettings, TokenServiceSettings};
use stowage_core::access::{Policy, PolicyDefault};

use crate::invalid::Invalid;

/// `[auth]`: every way callers can prove who they are. Absent: nobody logs in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// `[auth.identity.<name>]`.
    pub identity: BTreeMap<String, IdentityEntry>,
    pub htpasswd: Option<HtpasswdEntry>,
    pub token_service: Option<TokenServiceEntry>,
    /// `[auth.oidc.<name>]`: identity providers whose ID tokens log in.
    pub oidc: BTreeMap<String, OidcEntry>,
    /// `[auth.token]`: an external token server.
    pub token: Option<ExternalTokenEntry>,
    /// Failed logins per minute from one address before it is answered `429`; 0: no limit.
    pub max_failed_logins_per_minute: u32,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            identity: BTreeMap::new(),
            htpasswd: None,
            token_service: None,
            oidc: BTreeMap::new(),
            token: None,
            max_failed_logins_per_minute: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityEntry {
    pub username: String,
    /// An argon2 PHC string (`stowage hash-password`).
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HtpasswdEntry {
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenServiceEntry {
    /// Absent: this server's own `/token`, at the host and scheme the client used.
    #[serde(default)]
    pub realm: String,
    #[serde(default = "default_service")]
    pub service: String,
    #[serde(default = "default_service")]
    pub issuer: String,
    /// EC P-256 (PKCS#8) or RSA private key, PEM.
    pub signing_key: PathBuf,
    #[serde(default = "default_ttl")]
    pub ttl_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcEntry {
    pub issuer: String,
    /// Absent: discovered from `<issuer>/.well-known/openid-configuration`.
    pub jwks_uri: Option<String>,
    pub required_audience: String,
    /// Claim = value pairs every token must carry.
    #[serde(default)]
    pub required_claims: BTreeMap<String, serde_json::Value>,
    #[serde(default = "default_algorithms")]
    pub allowed_algorithms: Vec<String>,
    #[serde(default = "default_refresh")]
    pub jwks_refresh_interval_secs: u64,
    #[serde(default = "default_clock_skew")]
    pub clock_skew_secs: u64,
}

/// `[auth.token]`: CNCF Distribution's `auth.token`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalTokenEntry {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    /// PEM certificates whose keys sign tokens.
    pub rootcertbundle: Option<PathBuf>,
    /// A JWKS file.
    pub jwks: Option<PathBuf>,
    /// A JWKS URL, fetched and shared through the cache like an OIDC provider's.
    pub jwks_uri: Option<String>,
    #[serde(default = "default_algorithms")]
    pub signing_algorithms: Vec<String>,
    #[serde(default = "default_refresh")]
    pub jwks_refresh_interval_secs: u64,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".to_owned(), "ES256".to_owned()]
}

fn default_refresh() -> u64 {
    300
}

fn default_clock_skew() -> u64 {
    30
}

fn default_service() -> String {
    "stowage".to_owned()
}

fn default_ttl() -> u64 {
    300
}

/// `[global]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalSection {
    pub access_policy: Option<PolicyEntry>,
}

/// An `access_policy` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyEntry {
    pub default: PolicyDefaultEntry,
    #[serde(default)]
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyDefaultEntry {
    Allow,
    Deny,
}

pub(crate) fn compile(key: String, entry: &PolicyEntry) -> Result<Policy, Invalid> {
    let default = match entry.default {
        PolicyDefaultEntry::Allow => PolicyDefault::Allow,
        PolicyDefaultEntry::Deny => PolicyDefault::Deny,
    };
    Policy::new(default, &entry.rules).map_err(|e| Invalid {
        key: format!("{key}.rules[{}]", e.index),
        reason: e.to_string(),
    })
}

impl GlobalSection {
    pub fn policy(&self) -> Result<Option<Policy>, Invalid> {
        self.access_policy
            .as_ref()
            .map(|entry| compile("global.access_policy".to_owned(), entry))
            .transpose()
    }
}

impl AuthSection {
    /// Whether anyone can log in.
    pub fn any(&self) -> bool {
        !self.identity.is_empty()
            || self.htpasswd.is_some()
            || self.token_service.is_some()
            || !self.oidc.is_empty()
            || self.token.is_some()
    }

    pub fn settings(&self) -> AuthSettings {
        AuthSettings {
            identities: self
                .identity
                .values()
                .map(|i| (i.username.clone(), i.password.clone()))
                .collect::<HashMap<_, _>>(),
            htpasswd: self.htpasswd.as_ref().map(|h| h.path.clone()),
            token_service: self.token_service.as_ref().map(|t| TokenServiceSettings {
                realm: t.realm.clone(),
                service: t.service.clone(),
                issuer: t.issuer.clone(),
                signing_key: t.signing_key.clone(),
                ttl: Duration::from_secs(t.ttl_secs),
            }),
            oidc: self
                .oidc
                .iter()
                .map(|(name, p)| OidcSettings {
                    name: name.clone(),
                    issuer: p.issuer.clone(),
                    jwks_uri: p.jwks_uri.clone(),
                    required_audience: p.required_audience.clone(),
                    required_claims: p.required_claims.clone(),
                    allowed_algorithms: p.allowed_algorithms.clone(),
                    jwks_refresh_interval: Duration::from_secs(p.jwks_refresh_interval_secs),
                    clock_skew: Duration::from_secs(p.clock_skew_secs),
                })
                .collect(),
            external_token: self.token.as_ref().map(|t| ExternalTokenSettings {
                realm: t.realm.clone(),
                service: t.service.clone(),
                issuer: t.issuer.clone(),
                rootcertbundle: t.rootcertbundle.clone(),
                jwks: t.jwks.clone(),
                jwks_uri: t.jwks_uri.clone(),
                signing_algorithms: t.signing_algorithms.clone(),
                jwks_refresh_interval: Duration::from_secs(t.jwks_refresh_interval_secs),
            }),
            max_failed_logins_per_minute: self.max_failed_logins_per_minute,
        }
    }
}
