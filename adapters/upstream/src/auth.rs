//! What a request to an upstream carries: nothing, Basic credentials, a static token, or a
//! token from the upstream's token service (Distribution's token flow, Docker Hub's
//! included), cached in the cache replicas share per realm, service, scope and credential
//! until shortly before it expires.
//!
//! Credentials go only where they are configured for: to the upstream's own host, and to a
//! token realm on that host or a sibling of it (`auth.docker.io` for
//! `registry-1.docker.io`), never over plain HTTP when the upstream is HTTPS. Anyone else
//! naming a realm gets an anonymous token request.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::HeaderValue;
use sha2::{Digest, Sha256};
use stowage_core::step::{CacheRequest, UpstreamAnswer};
use stowage_driver::Cache;
use url::Url;

/// How long a token without `expires_in` lasts (the token spec's default).
const DEFAULT_TOKEN_SECS: u64 = 60;
/// The most a token service's answer may weigh.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

/// The credentials configured for one upstream.
#[derive(Clone)]
pub enum Credentials {
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// Sent as `Authorization: Bearer` as it is (a registry access token).
    Token(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

impl Credentials {
    fn basic(&self) -> Option<HeaderValue> {
        let Credentials::Basic { username, password } = self else {
            return None;
        };
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        sensitive(&format!("Basic {encoded}"))
    }

    /// Names the credential in a cache key without revealing it.
    fn fingerprint(&self) -> String {
        let secret = match self {
            Credentials::Anonymous => String::new(),
            Credentials::Basic { username, password } => format!("basic\0{username}\0{password}"),
            Credentials::Token(token) => format!("token\0{token}"),
        };
        hex::encode(Sha256::digest(secret.as_bytes()))
    }
}

fn sensitive(value: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(value).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The `Authorization` for a request to `upstream` given its last challenge, if any.
pub(crate) struct Authorizer<'a> {
    pub(crate) client: &'a reqwest::Client,
    pub(crate) cache: &'a Arc<dyn Cache>,
    pub(crate) upstream: &'a Url,
    pub(crate) credentials: &'a Credentials,
}

impl Authorizer<'_> {
    /// For `challenge` (`None`: not yet challenged) and `scope`; `renew` skips a cached
    /// token (the last one was refused).
    pub(crate) async fn authorization(
        &self,
        challenge: Option<&crate::challenge::Challenge>,
        scope: &str,
        renew: bool,
    ) -> Result<Option<HeaderValue>, UpstreamAnswer> {
        use crate::challenge::Challenge;
        if let Credentials::Token(token) = self.credentials {
            return Ok(sensitive(&format!("Bearer {token}")));
        }
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.credentials.basic()),
            Some(Challenge::Bearer { realm, service }) => {
                let token = self.token(realm, service, scope, renew).await?;
                Ok(sensitive(&format!("Bearer {token}")))
            }
        }
    }

    async fn token(
        &self,
        realm: &str,
        service: &str,
        scope: &str,
        renew: bool,
    ) -> Result<String, UpstreamAnswer> {
        let key = format!(
            "upstream-token/{}",
            hex::encode(Sha256::digest(
                format!(
                    "{realm}\0{service}\0{scope}\0{}",
                    self.credentials.fingerprint()
                )
                .as_bytes()
            ))
        );
        if !renew
            && let Ok(Some(token)) = self
                .cache
                .apply(
                    CacheRequest::Get { key: key.clone() },
                    stowage_driver::now(),
                )
                .await
            && let Ok(token) = String::from_utf8(token.to_vec())
        {
            return Ok(token);
        }
        let (token, expires_in) = self.fetch_token(realm, service, scope).await?;
        let lifetime_ms = expires_in.saturating_mul(1000);
        // Renewed a little before it expires, so no request carries a token about to lapse.
        let ttl_ms = lifetime_ms - (lifetime_ms / 5).min(30_000);
        let put = CacheRequest::Put {
            key,
            value: Bytes::from(token.clone()),
            ttl_ms,
            only_if_absent: false,
        };
        // Only a shortcut: a cache that fails costs a token request next time.
        let _ = self.cache.apply(put, stowage_driver::now()).await;
        Ok(token)
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: &str,
        scope: &str,
    ) -> Result<(String, u64), UpstreamAnswer> {
        let refused = |reason: String| UpstreamAnswer::Refused {
            reason: format!("token service {realm}: {reason}"),
        };
        let mut url = Url::parse(realm).map_err(|e| refused(format!("not a URL: {e}")))?;
        url.query_pairs_mut()
            .append_pair("service", service)
            .append_pair("scope", scope);
        let mut request = self.client.get(url.clone());
        if may_receive_credentials(&url, self.upstream)
            && let Some(basic) = self.credentials.basic()
        {
            request = request.header(http::header::AUTHORIZATION, basic);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| UpstreamAnswer::Unavailable {
                reason: format!("token service {realm}: {e}"),
                retry_after_ms: None,
            })?;
        let status = response.status();
        if let Some(answer) = crate::status::failure(status, response.headers(), realm) {
            return Err(answer);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| refused(e.to_string()))? {
            if body.len() + chunk.len() > MAX_TOKEN_RESPONSE_BYTES {
                return Err(refused("answer too large".to_owned()));
            }
            body.extend_from_slice(&chunk);
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let answer: TokenAnswer =
            serde_json::from_slice(&body).map_err(|e| refused(format!("not a token: {e}")))?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| refused("no token in the answer".to_owned()))?;
        Ok((
            token,
            answer.expires_in.unwrap_or(DEFAULT_TOKEN_SECS).max(1),
        ))
    }
}

/// Whether a token realm may receive the upstream's credentials: on the upstream's host or
/// a sibling of it (same parent domain), and over HTTPS when the upstream is.
pub(crate) fn may_receive_credentials(realm: &Url, upstream: &Url) -> bool {
    if upstream.scheme() == "https" && realm.scheme() != "https" {
        return false;
    }
    let (Some(realm), Some(upstream)) = (realm.host_str(), upstream.host_str()) else {
        return false;
    };
    if realm.eq_ignore_ascii_case(upstream) {
        return true;
    }
    let parent = |host: &str| {
        host.split_once('.')
            .map(|(_, parent)| parent.to_ascii_lowercase())
            .filter(|parent| parent.contains('.'))
    };
    let is_ip = |host: &str| host.parse::<std::net::IpAddr>().is_ok();
    !is_ip(realm)
        && !is_ip(upstream)
        && parent(realm).is_some()
        && parent(realm) == parent(upstream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn credentials_go_to_the_upstream_and_its_siblings_only() {
        let hub = url("https://registry-1.docker.io");
        assert!(may_receive_credentials(
            &url("https://auth.docker.io/token"),
            &hub
        ));
        assert!(may_receive_credentials(
            &url("https://registry-1.docker.io/t"),
            &hub
        ));
        assert!(!may_receive_credentials(
            &url("http://auth.docker.io/token"),
            &hub
        ));
        assert!(!may_receive_credentials(
            &url("https://evil.example/token"),
            &hub
        ));
        assert!(!may_receive_credentials(
            &url("https://docker.io.evil.example/t"),
            &hub
        ));
        // A bare second-level domain has no sibling to trust.
        assert!(!may_receive_credentials(
            &url("https://evil.io/t"),
            &url("https://docker.io")
        ));
        let local = url("http://127.0.0.1:5000");
        assert!(may_receive_credentials(
            &url("http://127.0.0.1:6000/token"),
            &local
        ));
        assert!(!may_receive_credentials(
            &url("http://127.0.0.2/token"),
            &local
        ));
    }

    #[test]
    fn secrets_stay_out_of_debug_output_and_cache_keys() {
        let basic = Credentials::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{basic:?}").contains("hunter2"));
        assert!(!basic.fingerprint().contains("hunter2"));
        assert_ne!(basic.fingerprint(), Credentials::Anonymous.fingerprint());
    }
}
