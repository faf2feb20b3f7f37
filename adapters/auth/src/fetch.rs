//! Fetching key documents from identity providers: OIDC discovery documents and JWKS.
//!
//! A provider is a remote party, so every fetch is bounded: no redirects (a discovery or key
//! URL that moves elsewhere is refused, not followed), a time limit, and a size limit on the
//! body. Discovery only accepts a `jwks_uri` on the issuer's own origin, so whoever answers
//! for the issuer cannot point the registry at keys on a host of their choosing.

use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use stowage_driver::BoxFuture;
use url::Url;

use crate::AuthError;

/// The most a discovery or JWKS document may weigh.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
/// How long one fetch may take, connecting included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {reason}")]
    Request { url: String, reason: String },
    #[error("{url}: answered {status}, redirects are not followed")]
    Redirect { url: String, status: u16 },
    #[error("{url}: answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url}: not a discovery document: {reason}")]
    Discovery { url: String, reason: String },
}

/// GETs a document. A trait so tests can stand in for the network.
pub trait Fetch: Send + Sync {
    fn get<'a>(&'a self, url: &'a Url) -> BoxFuture<'a, Result<Bytes, FetchError>>;
}

/// The HTTP client: rustls with the platform's roots, no redirects, [`FETCH_TIMEOUT`].
pub struct HttpFetch {
    client: reqwest::Client,
}

impl HttpFetch {
    pub fn new() -> Result<Self, AuthError> {
        // The process-wide TLS provider; whoever installs it first (the S3 transport too)
        // installs the same one.
        static PROVIDER: Once = Once::new();
        PROVIDER.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| AuthError::HttpClient(e.to_string()))?;
        Ok(HttpFetch { client })
    }

    async fn fetch(&self, url: &Url) -> Result<Bytes, FetchError> {
        let request_error = |e: reqwest::Error| FetchError::Request {
            url: url.to_string(),
            reason: e.to_string(),
        };
        let mut response = self
            .client
            .get(url.clone())
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(request_error)?;
        let status = response.status();
        if status.is_redirection() {
            return Err(FetchError::Redirect {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        let too_large = || FetchError::TooLarge {
            url: url.to_string(),
        };
        if response
            .content_length()
            .is_some_and(|length| length > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }
}

impl Fetch for HttpFetch {
    fn get<'a>(&'a self, url: &'a Url) -> BoxFuture<'a, Result<Bytes, FetchError>> {
        Box::pin(self.fetch(url))
    }
}

/// Where a provider's keys are.
pub enum JwksLocation {
    /// Configured.
    Uri(Url),
    /// Named by the issuer's discovery document, remembered once read.
    Discovered {
        issuer: Url,
        jwks_uri: Mutex<Option<Url>>,
    },
}

impl JwksLocation {
    /// The JWKS document, discovering its address first when that is not known.
    pub async fn fetch(&self, fetch: &Arc<dyn Fetch>) -> Result<Bytes, FetchError> {
        match self {
            JwksLocation::Uri(uri) => fetch.get(uri).await,
            JwksLocation::Discovered { issuer, jwks_uri } => {
                let known = jwks_uri.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let uri = match known {
                    Some(uri) => uri,
                    None => discover(issuer, fetch.as_ref()).await?,
                };
                let document = fetch.get(&uri).await;
                // A failure may mean the keys moved: read the discovery document again next time.
                *jwks_uri.lock().unwrap_or_else(|p| p.into_inner()) =
                    document.is_ok().then_some(uri);
                document
            }
        }
    }
}

/// The `jwks_uri` of `issuer`'s discovery document, which must name the same issuer and
/// keep its keys on the issuer's origin.
async fn discover(issuer: &Url, fetch: &dyn Fetch) -> Result<Url, FetchError> {
    let address = discovery_url(issuer);
    let invalid = |reason: String| FetchError::Discovery {
        url: address.to_string(),
        reason,
    };
    #[derive(serde::Deserialize)]
    struct Discovery {
        issuer: String,
        jwks_uri: String,
    }
    let document = fetch.get(&address).await?;
    let discovery: Discovery =
        serde_json::from_slice(&document).map_err(|e| invalid(e.to_string()))?;
    if discovery.issuer.trim_end_matches('/') != issuer.as_str().trim_end_matches('/') {
        return Err(invalid(format!(
            "it names the issuer {:?}",
            discovery.issuer
        )));
    }
    let jwks_uri = Url::parse(&discovery.jwks_uri)
        .map_err(|e| invalid(format!("jwks_uri {:?}: {e}", discovery.jwks_uri)))?;
    if jwks_uri.origin() != issuer.origin() {
        return Err(invalid(format!(
            "jwks_uri {jwks_uri} is not on the issuer's host; configure jwks_uri to trust it"
        )));
    }
    Ok(jwks_uri)
}

/// `<issuer>/.well-known/openid-configuration` (OpenID Connect Discovery 1.0, section 4).
fn discovery_url(issuer: &Url) -> Url {
    let mut url = issuer.clone();
    let path = format!(
        "{}/.well-known/openid-configuration",
        issuer.path().trim_end_matches('/')
    );
    url.set_path(&path);
    url.set_query(None);
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Answers from a table; anything else fails as an unreachable host would.
    pub struct Table(pub HashMap<String, &'static str>);

    impl Fetch for Table {
        fn get<'a>(&'a self, url: &'a Url) -> BoxFuture<'a, Result<Bytes, FetchError>> {
            let answer = self
                .0
                .get(url.as_str())
                .map(|body| Bytes::from_static(body.as_bytes()))
                .ok_or(FetchError::Status {
                    url: url.to_string(),
                    status: 404,
                });
            Box::pin(async move { answer })
        }
    }

    fn discovered(issuer: &str, discovery: &'static str) -> Result<Url, FetchError> {
        let issuer = Url::parse(issuer).unwrap();
        let table = Table(HashMap::from([(
            discovery_url(&issuer).to_string(),
            discovery,
        )]));
        futures_lite::future::block_on(discover(&issuer, &table))
    }

    #[test]
    fn discovery_url_keeps_the_issuer_path() {
        let url = |s: &str| discovery_url(&Url::parse(s).unwrap()).to_string();
        assert_eq!(
            url("https://idp.example"),
            "https://idp.example/.well-known/openid-configuration"
        );
        assert_eq!(
            url("https://idp.example/realms/ci/"),
            "https://idp.example/realms/ci/.well-known/openid-configuration"
        );
    }

    #[test]
    fn discovery_accepts_only_the_issuers_own_keys() {
        let ok = discovered(
            "https://idp.example",
            r#"{"issuer":"https://idp.example","jwks_uri":"https://idp.example/keys"}"#,
        );
        assert_eq!(ok.unwrap().as_str(), "https://idp.example/keys");
        for (discovery, why) in [
            (
                r#"{"issuer":"https://idp.example","jwks_uri":"https://evil.example/keys"}"#,
                "other host",
            ),
            (
                r#"{"issuer":"https://idp.example","jwks_uri":"http://idp.example/keys"}"#,
                "other scheme",
            ),
            (
                r#"{"issuer":"https://idp.example:8443","jwks_uri":"https://idp.example:8443/k"}"#,
                "other issuer",
            ),
            (r#"{"issuer":"https://idp.example"}"#, "no jwks_uri"),
            ("<html>", "not json"),
        ] {
            assert!(
                discovered("https://idp.example", discovery).is_err(),
                "{why}"
            );
        }
    }
}
