//! Authentication: turns what a request presents (Basic credentials, a registry token, a
//! client certificate) into the core's [`Authentication`], and serves the token service.
//! Deciding what the caller may then do is the core's (`stowage_core::access`).

mod credentials;
mod passwords;
mod throttle;
mod token;
mod token_service;

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use lru::LruCache;
use sha2::{Digest, Sha256};
use stowage_core::access::{Authentication, CertificateNames, Challenge, Identity};

pub use credentials::Credentials;
pub use passwords::{Passwords, hash_password};
pub use throttle::LoginThrottle;
pub use token::{Claims, IssuedToken, TokenKeys};
pub use token_service::{error as error_response, throttled_response};

/// Verified registry tokens remembered at once.
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
    /// Failed logins per minute from one address before it gets `429`; 0 for no limit.
    pub max_failed_logins_per_minute: u32,
}

impl AuthSettings {
    /// How clients are told to log in: the token protocol when there is a token service,
    /// Basic when there are only passwords, not at all when nobody can log in.
    pub fn challenge(&self) -> Challenge {
        match &self.token_service {
            Some(tokens) => Challenge::Bearer {
                realm: tokens.realm.clone(),
                service: tokens.service.clone(),
            },
            None if self.identities.is_empty() && self.htpasswd.is_none() => Challenge::None,
            None => Challenge::Basic {
                realm: "stowage".to_owned(),
            },
        }
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
    verified_tokens: Mutex<LruCache<[u8; 32], (Authentication, u64)>>,
    throttle: LoginThrottle,
}

impl Authenticator {
    pub fn new(settings: &AuthSettings) -> Result<Self, AuthError> {
        let passwords = Passwords::new(settings.identities.clone(), settings.htpasswd.clone())?;
        let tokens = settings
            .token_service
            .as_ref()
            .map(|t| TokenKeys::open(&t.signing_key, &t.issuer, &t.service, t.ttl))
            .transpose()?;
        Ok(Authenticator {
            passwords: Arc::new(passwords),
            tokens,
            verified_tokens: Mutex::new(LruCache::new(
                NonZeroUsize::new(VERIFIED_TOKENS).unwrap_or(NonZeroUsize::MIN),
            )),
            throttle: LoginThrottle::new(settings.max_failed_logins_per_minute),
        })
    }

    /// Who the caller of a request is. Credentials that fail are [`Authentication::Failed`]
    /// (and counted against the address); a throttled address is refused before any check.
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        address: IpAddr,
        certificate: Option<CertificateNames>,
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
            Credentials::Basic { username, password } => {
                if self.passwords.verify(&username, &password).await {
                    Ok(Identity::user(&username))
                } else {
                    Err("wrong username or password".to_owned())
                }
            }
            Credentials::Bearer(token) => {
                return match self.verify_token(&token, SystemTime::now()) {
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

    /// A registry token's authentication, from the cache of verified tokens when it can be:
    /// a client that sends one token on every request costs one signature check.
    fn verify_token(&self, token: &str, now: SystemTime) -> Result<Authentication, String> {
        let Some(keys) = &self.tokens else {
            return Err("this registry has no token service".to_owned());
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now_secs = token::unix(now);
        {
            let mut cache = self
                .verified_tokens
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some((authentication, expires)) = cache.get(&key) {
                if *expires > now_secs {
                    return Ok(authentication.clone());
                }
                cache.pop(&key);
            }
        }
        let claims = keys
            .verify(token)
            .map_err(|e| format!("invalid token: {e}"))?;
        let authentication = Authentication::Token {
            identity: token_identity(&claims.sub),
            access: claims.access,
        };
        self.verified_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(key, (authentication.clone(), claims.exp));
        Ok(authentication)
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
