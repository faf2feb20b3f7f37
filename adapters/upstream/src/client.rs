//! One upstream registry: requests with the authorization its challenge asks for, redirects
//! followed by hand (credentials dropped when one leads to another origin), and statuses
//! turned into the answers the core decides on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{ACCEPT, AUTHORIZATION, LOCATION, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, StatusCode};
use stowage_core::step::UpstreamAnswer;
use stowage_driver::Cache;
use url::Url;

use crate::auth::{Authorizer, Credentials};
use crate::challenge::Challenge;

/// Redirects followed for one request (blob downloads go to a CDN once).
const MAX_REDIRECTS: usize = 5;

pub(crate) struct Upstream {
    /// The registry's base URL, ending with `/`.
    pub(crate) base: Url,
    client: reqwest::Client,
    credentials: Credentials,
    /// What the upstream last asked for, so later requests authenticate up front.
    challenge: Mutex<Option<Challenge>>,
    /// Whether `GET /v2/` was asked what the upstream wants.
    pinged: AtomicBool,
    /// How long each wait for more of an answer may take (`timeout_secs`).
    pub(crate) read_timeout: Duration,
}

impl Upstream {
    pub(crate) fn new(
        base: Url,
        client: reqwest::Client,
        credentials: Credentials,
        read_timeout: Duration,
    ) -> Self {
        Upstream {
            base,
            client,
            credentials,
            challenge: Mutex::new(None),
            pinged: AtomicBool::new(false),
            read_timeout,
        }
    }

    fn last_challenge(&self) -> Option<Challenge> {
        self.challenge
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn learn(&self, challenge: Challenge) {
        *self.challenge.lock().unwrap_or_else(|p| p.into_inner()) = Some(challenge);
    }

    /// What the upstream asks for, learned once with `GET /v2/` as docker clients do, so that
    /// the first request for content already carries credentials: one fetch of a blob is one
    /// GET at the upstream, not a refused one and then the real one.
    async fn challenge(&self) -> Result<Option<Challenge>, UpstreamAnswer> {
        if matches!(self.credentials, Credentials::Token(_)) || self.pinged.load(Ordering::Relaxed)
        {
            return Ok(self.last_challenge());
        }
        let url = self.base.join("v2/").map_err(|e| UpstreamAnswer::Refused {
            reason: format!("{}v2/: {e}", self.base),
        })?;
        let response = self.follow(&Method::GET, url, &[], None).await?;
        if let Some(challenge) = parse_challenge(&response) {
            self.learn(challenge);
        }
        self.pinged.store(true, Ordering::Relaxed);
        Ok(self.last_challenge())
    }

    /// Sends `method` to `path` (below the base URL), authenticating for `scope` as the
    /// upstream asks: once up front with what it asked for last, and once more after a
    /// `401` names a challenge.
    pub(crate) async fn send(
        &self,
        cache: &Arc<dyn Cache>,
        method: Method,
        path: &str,
        accept: &[&str],
        scope: &str,
    ) -> Result<reqwest::Response, UpstreamAnswer> {
        let url = self.base.join(path).map_err(|e| UpstreamAnswer::Refused {
            reason: format!("{}{path}: {e}", self.base),
        })?;
        let authorizer = Authorizer {
            client: &self.client,
            cache,
            upstream: &self.base,
            credentials: &self.credentials,
        };
        let known = self.challenge().await?;
        let mut authorization = authorizer
            .authorization(known.as_ref(), scope, false)
            .await?;
        let mut challenged = false;
        loop {
            let response = self
                .follow(&method, url.clone(), accept, authorization.clone())
                .await?;
            if response.status() != StatusCode::UNAUTHORIZED || challenged {
                return Ok(response);
            }
            challenged = true;
            let Some(challenge) = parse_challenge(&response) else {
                return Ok(response);
            };
            self.learn(challenge.clone());
            authorization = authorizer
                .authorization(Some(&challenge), scope, true)
                .await?;
            if authorization.is_none() {
                return Ok(response);
            }
        }
    }

    /// One request, following redirects; `authorization` goes only to the base URL's
    /// origin, so a redirect elsewhere never carries it.
    async fn follow(
        &self,
        method: &Method,
        mut url: Url,
        accept: &[&str],
        authorization: Option<HeaderValue>,
    ) -> Result<reqwest::Response, UpstreamAnswer> {
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.client.request(method.clone(), url.clone());
            if !accept.is_empty() {
                request = request.header(ACCEPT, accept.join(", "));
            }
            if url.origin() == self.base.origin()
                && let Some(authorization) = &authorization
            {
                request = request.header(AUTHORIZATION, authorization.clone());
            }
            let response = request
                .send()
                .await
                .map_err(|e| UpstreamAnswer::Unavailable {
                    reason: format!("{}: {e}", self.base),
                    retry_after_ms: None,
                })?;
            if !response.status().is_redirection() {
                return Ok(response);
            }
            let next = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|location| url.join(location).ok())
                .ok_or_else(|| UpstreamAnswer::Refused {
                    reason: format!("{url}: a redirect without a usable Location"),
                })?;
            url = next;
        }
        Err(UpstreamAnswer::Refused {
            reason: format!("{}: more than {MAX_REDIRECTS} redirects", self.base),
        })
    }
}

fn parse_challenge(response: &reqwest::Response) -> Option<Challenge> {
    response
        .headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .and_then(Challenge::parse)
}
