//! Logging in the way a Docker client does: a request refused with `401` is answered according
//! to its `WWW-Authenticate` challenge, then sent again.
//!
//! - `Basic`: the request is retried with the credentials, and from then on every request
//!   carries them.
//! - `Bearer realm=…,service=…,scope=…`: a token is fetched from the realm (with the
//!   credentials as Basic, or anonymously without any) and the request retried with it. Tokens
//!   are cached by challenge, so each scope set costs one token request; and each repository
//!   remembers the challenge it last needed, so its later requests carry that token up front
//!   instead of first drawing a 401.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use crate::challenge::Challenge;
use crate::error::{AuthError, Failure, StepExt};
use crate::response::{Response, with_query};

pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    fn basic(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!("Basic {}", STANDARD.encode(pair))
    }
}

/// The realm, service and scopes of a Bearer challenge: what one token is good for.
#[derive(Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    realm: String,
    service: Option<String>,
    /// Sorted, so the same scopes listed in another order share a token.
    scopes: Vec<String>,
}

impl TokenKey {
    fn of(challenge: &Challenge) -> Result<TokenKey, AuthError> {
        let realm = challenge.param("realm").ok_or(AuthError::NoRealm)?;
        // The token protocol separates several scopes in one challenge with spaces.
        let mut scopes: Vec<String> = challenge
            .param("scope")
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        scopes.sort();
        scopes.dedup();
        Ok(TokenKey {
            realm: realm.to_string(),
            service: challenge.param("service").map(str::to_string),
            scopes,
        })
    }

    /// The token request's URL: one `scope` parameter per scope.
    fn url(&self) -> String {
        let mut params: Vec<(&str, &str)> = Vec::new();
        if let Some(service) = &self.service {
            params.push(("service", service));
        }
        params.extend(self.scopes.iter().map(|s| ("scope", s.as_str())));
        with_query(&self.realm, &params)
    }
}

#[derive(Default)]
struct State {
    /// A registry asked for Basic: credentials now go with every request.
    basic: bool,
    /// `Authorization` values (`Bearer …`) by the challenge they answer.
    tokens: HashMap<TokenKey, String>,
    /// The challenge each resource (repository) was last refused with.
    hints: HashMap<String, TokenKey>,
}

pub struct Auth {
    credentials: Option<Credentials>,
    // The runner is single-threaded; the lock only gives `&Client` its interior mutability.
    state: Mutex<State>,
}

impl Auth {
    pub fn new(credentials: Option<Credentials>) -> Auth {
        Auth {
            credentials,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panicking case cannot leave the maps half-updated; keep using them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What to send as `Authorization` up front on a request to `url`, if anything is known.
    pub fn authorization(&self, url: &str) -> Option<String> {
        let state = self.state();
        if state.basic {
            return self.credentials.as_ref().map(Credentials::basic);
        }
        let key = state.hints.get(resource(url))?;
        state.tokens.get(key).cloned()
    }

    /// Answers the 401 `refused` that a request to `url` sent with `sent` as `Authorization`
    /// got: the `Authorization` to send it again with, or `None` when there is no answer (no
    /// or unknown challenge, no credentials for Basic, or the same answer was already refused).
    /// `fetch` GETs a token URL with the given `Authorization`.
    pub fn answer(
        &self,
        refused: &Response,
        url: &str,
        sent: Option<&str>,
        fetch: impl FnOnce(&str, Option<&str>) -> Result<Response, Failure>,
    ) -> Result<Option<String>, Failure> {
        let auth_failure = |source: AuthError| Failure::Auth {
            what: refused.what.clone(),
            source,
        };
        let challenges = refused.challenges()?;
        // Prefer tokens, as Docker does, when a registry offers both.
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let key = TokenKey::of(bearer).map_err(auth_failure)?;
            let cached = self.state().tokens.get(&key).cloned();
            let token = match cached {
                // A cached token not yet tried on this request: the hint pointed elsewhere.
                Some(token) if sent != Some(token.as_str()) => token,
                // None yet, or the registry refused it (expired): ask for a fresh one.
                _ => {
                    let basic = self.credentials.as_ref().map(Credentials::basic);
                    let token = fetch(&key.url(), basic.as_deref())
                        .and_then(|response| token_of(&response))
                        .step(&format!("fetching a token for {}", refused.what))?;
                    format!("Bearer {token}")
                }
            };
            let mut state = self.state();
            state.tokens.insert(key.clone(), token.clone());
            state.hints.insert(resource(url).to_string(), key);
            return Ok(Some(token));
        }
        let offers_basic = challenges.iter().any(|c| c.scheme == "basic");
        match &self.credentials {
            Some(credentials) if offers_basic => {
                let basic = credentials.basic();
                if sent == Some(basic.as_str()) {
                    return Ok(None);
                }
                self.state().basic = true;
                Ok(Some(basic))
            }
            _ => Ok(None),
        }
    }
}

/// The token in a token response (`token`, or OAuth2's `access_token`).
fn token_of(response: &Response) -> Result<String, Failure> {
    let body = response.expect(200)?.json()?;
    ["token", "access_token"]
        .iter()
        .filter_map(|name| body.get(name).and_then(Value::as_str))
        .find(|token| !token.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Failure::Auth {
            what: response.what.clone(),
            source: AuthError::NoToken,
        })
}

/// What a request's token hint is keyed by: the repository of `/v2/<name>/{blobs,manifests,
/// tags,referrers}/…`, else the whole path. A wrong guess only costs a 401 and a retry.
fn resource(url: &str) -> &str {
    let path = match url.find("://") {
        Some(i) => url[i + 3..].find('/').map_or("/", |j| &url[i + 3 + j..]),
        None => url,
    };
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let name = path.strip_prefix("/v2/").unwrap_or(path);
    ["/blobs/", "/manifests/", "/tags/", "/referrers/"]
        .iter()
        .filter_map(|route| name.rfind(route))
        .max()
        .map_or(path, |end| &name[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::challenge;

    #[test]
    fn resources_are_repositories() {
        assert_eq!(
            resource("http://h:1/v2/a/blobs/b/blobs/uploads/x?_state=y"),
            "a/blobs/b"
        );
        assert_eq!(resource("http://h:1/v2/a/b/manifests/latest"), "a/b");
        assert_eq!(resource("http://h:1/v2/a/tags/list?n=1"), "a");
        assert_eq!(resource("http://h:1/v2/_catalog?n=5"), "/v2/_catalog");
        assert_eq!(resource("http://h:1"), "/");
    }

    #[test]
    fn token_url_has_one_scope_parameter_per_scope() {
        let challenge = &challenge::parse(
            r#"Bearer realm="http://t/token?x=1",service="my reg",scope="repository:b:pull repository:a/b:pull,push""#,
        )
        .unwrap()[0];
        assert_eq!(
            TokenKey::of(challenge).unwrap().url(),
            "http://t/token?x=1&service=my%20reg&scope=repository%3Aa%2Fb%3Apull%2Cpush&scope=repository%3Ab%3Apull"
        );
    }

    #[test]
    fn basic_credentials_are_base64() {
        let credentials = Credentials {
            username: "alice".into(),
            password: "open sesame".into(),
        };
        assert_eq!(credentials.basic(), "Basic YWxpY2U6b3BlbiBzZXNhbWU=");
    }
}
