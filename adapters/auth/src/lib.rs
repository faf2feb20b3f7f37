//! Authentication: turns what a request presents (Basic credentials, a registry token, an
//! OIDC provider's or an external token server's token, a client certificate) into the
//! core's [`Authentication`], and serves the token service. Deciding what the caller may
//! then do is the core's (`stowage_core::access`).

mod credentials;
mod external;
mod fetch;
mod foreign;
mod jwks;
mod last_token;
mod oidc;
mod passwords;
mod remote_keys;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
mod throttle;
mod token;
mod token_service;
mod x5c;

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use lru::LruCache;
use sha2::{Digest, Sha256};
use stowage_core::access::{Authentication, CertificateNames, Challenge, Identity};

use external::ExternalTokens;
use oidc::OidcProvider;

pub use credentials::Credentials;
pub use external::ExternalTokenSettings;
pub use fetch::{Fetch, FetchError, HttpFetch};
pub use jwks::{KeySet, KeysError};
pub use last_token::LastToken;
pub use oidc::OidcSettings;
pub use passwords::{Passwords, hash_password};
pub use remote_keys::Shared;
pub use throttle::LoginThrottle;
pub use token::{Claims, IssuedToken, TokenKeys};
pub use token_service::{error as error_response, throttled_response};

/// Verified tokens remembered at once.
const VERIFIED_TOKENS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("auth.identity: {0}")]
    Identity(String),
    #[error("auth.htpasswd: cannot read {path}: {source}")]
    Htpasswd {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("auth.token_service.signing_key {path}: {reason}")]
    SigningKey { path: PathBuf, reason: String },
    #[error("the operating system's random source failed")]
    Random,
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("cannot sign a token: {0}")]
    Sign(String),
    #[error("{key}: {reason}")]
    Setting { key: String, reason: String },
    #[error("cannot build the HTTP client for identity providers: {0}")]
    HttpClient(String),
}

/// `[auth.token_service]`.
#[derive(Debug, Clone)]
pub struct TokenServiceSettings {
    /// Empty: this server's own `/token`.
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub signing_key: PathBuf,
    pub ttl: Duration,
}

/// Every way callers can prove who they are.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// Username to argon2 PHC hash (`[auth.identity.<name>]`).
    pub identities: HashMap<String, String>,
    pub htpasswd: Option<PathBuf>,
    pub token_service: Option<TokenServiceSettings>,
    /// `[auth.oidc.<name>]`.
    pub oidc: Vec<OidcSettings>,
    /// `[auth.token]`: an external token server (never with `token_service`).
    pub external_token: Option<ExternalTokenSettings>,
    /// Failed logins per minute from one address before it gets `429`; 0 for no limit.
    pub max_failed_logins_per_minute: u32,
}

impl AuthSettings {
    /// How clients are told to log in: the token protocol when there is a token service
    /// (this registry's or an external one), Basic when there are only passwords and OIDC
    /// providers, not at all when nobody can log in.
    pub fn challenge(&self) -> Challenge {
        let bearer = |realm: &str, service: &str| Challenge::Bearer {
            realm: realm.to_owned(),
            service: service.to_owned(),
        };
        match (&self.token_service, &self.external_token) {
            (Some(tokens), _) => bearer(&tokens.realm, &tokens.service),
            (None, Some(external)) => bearer(&external.realm, &external.service),
            (None, None)
                if self.identities.is_empty()
                    && self.htpasswd.is_none()
                    && self.oidc.is_empty() =>
            {
                Challenge::None
            }
            (None, None) => Challenge::Basic {
                realm: "stowage".to_owned(),
            },
        }
    }

    /// What can be checked without files or the network: each provider's settings, one token
    /// authority at most, issuers that tell every token's verifier apart, and provider names
    /// no password user has (a Basic login with a provider's name is an OIDC login).
    pub fn check(&self) -> Result<(), AuthError> {
        let invalid = |key: &str, reason: String| AuthError::Setting {
            key: key.to_owned(),
            reason,
        };
        if self.token_service.is_some() && self.external_token.is_some() {
            return Err(invalid(
                "auth.token",
                "an external token server and [auth.token_service] exclude each other".into(),
            ));
        }
        let mut issuers: Vec<(&str, String)> = Vec::new();
        if let Some(tokens) = &self.token_service {
            issuers.push((&tokens.issuer, "auth.token_service.issuer".into()));
        }
        if let Some(external) = &self.external_token {
            external.check()?;
            issuers.push((&external.issuer, "auth.token.issuer".into()));
        }
        for provider in &self.oidc {
            provider.check()?;
            if self.identities.contains_key(&provider.name) {
                return Err(invalid(
                    &format!("auth.oidc.{}", provider.name),
                    "a password identity has this name".into(),
                ));
            }
            issuers.push((
                &provider.issuer,
                format!("auth.oidc.{}.issuer", provider.name),
            ));
        }
        for (i, (issuer, key)) in issuers.iter().enumerate() {
            if issuers[..i].iter().any(|(other, _)| other == issuer) {
                return Err(invalid(
                    key,
                    format!("{issuer:?} is another verifier's issuer"),
                ));
            }
        }
        Ok(())
    }
}

/// A login refused for now: too many failures from this address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: Duration,
}

pub struct Authenticator {
    passwords: Arc<Passwords>,
    tokens: Option<TokenKeys>,
    oidc: Vec<OidcProvider>,
    external: Option<ExternalTokens>,
    verified_tokens: Mutex<LruCache<[u8; 32], (Authentication, u64)>>,
    throttle: LoginThrottle,
}

impl Authenticator {
    /// `shared` is where fetched keys are kept and how they are fetched.
    pub fn new(settings: &AuthSettings, shared: Shared) -> Result<Self, AuthError> {
        settings.check()?;
        let oidc = settings
            .oidc
            .iter()
            .map(|provider| OidcProvider::new(provider, shared.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let external = settings
            .external_token
            .as_ref()
            .map(|external| ExternalTokens::new(external, shared.clone()))
            .transpose()?;
        let passwords = Passwords::new(settings.identities.clone(), settings.htpasswd.clone())?;
        let tokens = settings
            .token_service
            .as_ref()
            .map(|t| TokenKeys::open(&t.signing_key, &t.issuer, &t.service, t.ttl))
            .transpose()?;
        Ok(Authenticator {
            passwords: Arc::new(passwords),
            tokens,
            oidc,
            external,
            verified_tokens: Mutex::new(LruCache::new(
                NonZeroUsize::new(VERIFIED_TOKENS).unwrap_or(NonZeroUsize::MIN),
            )),
            throttle: LoginThrottle::new(settings.max_failed_logins_per_minute),
        })
    }

    /// Who the caller of a request is. Credentials that fail are [`Authentication::Failed`]
    /// (and counted against the address); a throttled address is refused before any check.
    /// `last_token`: the connection's, when the request came on one.
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        address: IpAddr,
        certificate: Option<CertificateNames>,
        last_token: Option<&LastToken>,
    ) -> Result<Authentication, Throttled> {
        let with_certificate = |identity: Identity| match &certificate {
            Some(names) => identity.with_certificate(names.clone()),
            None => identity,
        };
        let credentials = Credentials::from_headers(headers);
        if credentials == Credentials::None {
            return Ok(match certificate.clone() {
                Some(names) => {
                    Authentication::Identified(Identity::anonymous().with_certificate(names))
                }
                None => Authentication::Anonymous,
            });
        }
        let now = Instant::now();
        if let Some(retry_after) = self.throttle.retry_after(address, now) {
            return Err(Throttled { retry_after });
        }
        let outcome = match credentials {
            Credentials::None => Ok(Identity::anonymous()),
            Credentials::Malformed(reason) => Err(reason.to_owned()),
            Credentials::Basic { username, password }
                if self.oidc.iter().any(|p| p.name() == username) =>
            {
                self.verify_token(&password, Some(&username), SystemTime::now(), last_token)
                    .await
                    .and_then(|authentication| match authentication {
                        Authentication::Identified(identity) => Ok(identity),
                        _ => Err(format!("not a token of oidc provider {username:?}")),
                    })
            }
            Credentials::Basic { username, password } => {
                if self.passwords.verify(&username, &password).await {
                    Ok(Identity::user(&username))
                } else {
                    Err("wrong username or password".to_owned())
                }
            }
            Credentials::Bearer(token) => {
                return match self
                    .verify_token(token, None, SystemTime::now(), last_token)
                    .await
                {
                    Ok(Authentication::Token { identity, access }) => Ok(Authentication::Token {
                        identity: with_certificate(identity),
                        access,
                    }),
                    Ok(other) => Ok(other),
                    Err(reason) => {
                        self.throttle.record_failure(address, now);
                        tracing::info!(%address, reason, "bearer token refused");
                        Ok(Authentication::Failed(reason))
                    }
                };
            }
        };
        Ok(match outcome {
            Ok(identity) => Authentication::Identified(with_certificate(identity)),
            Err(reason) => {
                self.throttle.record_failure(address, now);
                tracing::info!(%address, reason, "login refused");
                Authentication::Failed(reason)
            }
        })
    }

    /// A token's authentication, from the connection's last token or the cache of verified
    /// tokens when it can be: a client that sends one token on every request costs one
    /// signature check. `provider`: the token is the password of a Basic login as that OIDC
    /// provider, and must be its.
    async fn verify_token(
        &self,
        token: &str,
        provider: Option<&str>,
        now: SystemTime,
        last_token: Option<&LastToken>,
    ) -> Result<Authentication, String> {
        let now_secs = token::unix(now);
        if let Some(authentication) = last_token.and_then(|l| l.recall(token, provider, now_secs)) {
            return Ok(authentication);
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let remembered = {
            let mut cache = self
                .verified_tokens
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match cache.get(&key) {
                Some((authentication, expires)) if *expires > now_secs => {
                    Some((authentication.clone(), *expires))
                }
                Some(_) => {
                    cache.pop(&key);
                    None
                }
                None => None,
            }
        };
        let (authentication, expires, verified_now) = match remembered {
            Some((authentication, expires)) => (authentication, expires, false),
            None => self
                .verify_uncached(token, provider)
                .await
                .map(|(authentication, expires)| (authentication, expires, true))?,
        };
        let proven_by = match &authentication {
            Authentication::Identified(identity) => {
                identity.oidc.as_ref().map(|o| o.provider.as_str())
            }
            _ => None,
        };
        if provider.is_some() && proven_by != provider {
            return Err(format!("not a token of oidc provider {provider:?}"));
        }
        if verified_now {
            self.verified_tokens
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .put(key, (authentication.clone(), expires));
        }
        if let Some(last_token) = last_token {
            last_token.remember(token, provider, &authentication, expires);
        }
        Ok(authentication)
    }

    /// Verifies a token with whoever its issuer is: this registry's token service, the
    /// external token server, or an OIDC provider (the one named, for a Basic login).
    async fn verify_uncached(
        &self,
        token: &str,
        provider: Option<&str>,
    ) -> Result<(Authentication, u64), String> {
        let issuer = foreign::unverified_issuer(token).ok_or("not a JWT with an issuer")?;
        if provider.is_none() {
            if let Some(keys) = self.tokens.as_ref().filter(|k| k.issuer() == issuer) {
                let claims = keys
                    .verify(token)
                    .map_err(|e| format!("invalid token: {e}"))?;
                let authentication = Authentication::Token {
                    identity: token_identity(&claims.sub),
                    access: claims.access.into(),
                };
                return Ok((authentication, claims.exp));
            }
            if let Some(external) = self.external.as_ref().filter(|e| e.issuer() == issuer) {
                let grant = external.verify(token).await?;
                let authentication = Authentication::Token {
                    identity: token_identity(&grant.sub),
                    access: grant.access.into(),
                };
                return Ok((authentication, grant.exp));
            }
        }
        let chosen = self.oidc.iter().find(|p| match provider {
            Some(name) => p.name() == name,
            None => p.issuer() == issuer,
        });
        let Some(provider) = chosen else {
            return Err(format!("no verifier trusts the issuer {issuer:?}"));
        };
        let (identity, expires) = provider.verify(token).await?;
        Ok((Authentication::Identified(identity), expires))
    }
}

/// The identity a token was issued to. Usernames never hold `:` (configured ones are
/// refused, htpasswd cannot), so a subject with one names a certificate or provider
/// identity, which has no username.
fn token_identity(subject: &str) -> Identity {
    if subject.contains(':') {
        Identity {
            id: subject.to_owned(),
            ..Identity::anonymous()
        }
    } else if subject.is_empty() {
        Identity::anonymous()
    } else {
        Identity::user(subject)
    }
}
