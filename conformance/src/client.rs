//! A thin blocking HTTP layer over ureq. Every call returns a fully read `Response`, so cases
//! can assert on status, headers and body in any order, and transport errors become
//! [`Failure`]s instead of panics. A request refused with `401` is answered by [`Auth`] and
//! sent once more.

use std::io::Cursor;
use std::time::Duration;

use ureq::http::{Method, Request};
use ureq::{Agent, AsSendBody, SendBody};

use crate::auth::{Auth, Credentials};
use crate::error::Failure;
use crate::response::{Response, char_boundary};

/// Largest body the runner will read; far above anything the cases push.
const MAX_BODY: u64 = 1 << 30;

/// What to send as the request body. Every variant borrows bytes the caller holds, so a
/// request refused with `401` can be sent again whole, streamed ones included.
#[derive(Clone, Copy)]
pub enum Body<'a> {
    /// No body at all (GET, HEAD, DELETE).
    None,
    /// A body with a `Content-Length`.
    Bytes(&'a [u8]),
    /// A body sent with `Transfer-Encoding: chunked`, as a streaming client would.
    Streamed(&'a [u8]),
}

pub struct Client {
    agent: Agent,
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:5000`.
    base: String,
    /// `scheme://host[:port]` of `base`, used to resolve absolute-path Locations.
    origin: String,
    /// `None` sends every request as given and hands back any `401`.
    auth: Option<Auth>,
}

impl Client {
    /// A client that logs in when challenged: with `credentials`, or anonymously for tokens.
    pub fn new(base: &str, timeout: Duration, credentials: Option<Credentials>) -> Client {
        let base = base.trim_end_matches('/').to_string();
        let origin = match base.find("://") {
            Some(i) => match base[i + 3..].find('/') {
                Some(j) => base[..i + 3 + j].to_string(),
                None => base.clone(),
            },
            None => base.clone(),
        };
        let agent: Agent = Agent::config_builder()
            // Statuses are what is under test, so they must come back as responses.
            .http_status_as_error(false)
            // A hung registry should fail a case, not hang the run.
            .timeout_global(Some(timeout))
            .user_agent("stowage-oci-conformance/0.1")
            .build()
            .into();
        Client {
            agent,
            base,
            origin,
            auth: Some(Auth::new(credentials)),
        }
    }

    /// A client on the same registry that never logs in, to see what anonymous requests get.
    pub fn bare(&self) -> Client {
        Client {
            agent: self.agent.clone(),
            base: self.base.clone(),
            origin: self.origin.clone(),
            auth: None,
        }
    }

    /// Turns a path (`/v2/...`) or a Location header (absolute URL, absolute path, or relative)
    /// into a full URL.
    pub fn resolve(&self, target: &str) -> String {
        if target.starts_with("http://") || target.starts_with("https://") {
            target.to_string()
        } else if target.starts_with('/') {
            format!("{}{}", self.origin, target)
        } else {
            format!("{}/{}", self.base, target)
        }
    }

    pub fn send(
        &self,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<Response, Failure> {
        let url = self.resolve(target);
        let Some(auth) = &self.auth else {
            return self.attempt(&method, &url, headers, None, body);
        };
        let sent = auth.authorization(&url);
        let response = self.attempt(&method, &url, headers, sent.as_deref(), body)?;
        if response.status != 401 {
            return Ok(response);
        }
        let fetch = |token_url: &str, authorization: Option<&str>| {
            self.attempt(&Method::GET, token_url, &[], authorization, Body::None)
        };
        match auth.answer(&response, &url, sent.as_deref(), fetch)? {
            Some(authorization) => self.attempt(&method, &url, headers, Some(&authorization), body),
            None => Ok(response),
        }
    }

    /// One request to a full URL, with `authorization` added to `headers` if given.
    fn attempt(
        &self,
        method: &Method,
        url: &str,
        headers: &[(&str, &str)],
        authorization: Option<&str>,
        body: Body<'_>,
    ) -> Result<Response, Failure> {
        let what = format!("{method} {}", display_target(url, &self.origin));
        let mut builder = Request::builder().method(method.clone()).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        if let Some(authorization) = authorization {
            builder = builder.header("authorization", authorization);
        }
        match body {
            Body::None => self.run(builder, SendBody::none(), what),
            Body::Bytes(bytes) => self.run(builder, bytes, what),
            Body::Streamed(bytes) => {
                let mut reader = Cursor::new(bytes);
                self.run(builder, SendBody::from_reader(&mut reader), what)
            }
        }
    }

    fn run(
        &self,
        builder: ureq::http::request::Builder,
        body: impl AsSendBody,
        what: String,
    ) -> Result<Response, Failure> {
        let request = builder.body(body).map_err(|e| Failure::Request {
            what: what.clone(),
            detail: e.to_string(),
        })?;
        let response = self
            .agent
            .run(request)
            .map_err(|source| Failure::Transport {
                what: what.clone(),
                source,
            })?;
        let (parts, mut body) = response.into_parts();
        let body = body
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|source| Failure::Body {
                what: what.clone(),
                status: parts.status.as_u16(),
                length: parts
                    .headers
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .map(|v| format!(" (Content-Length: {v})"))
                    .unwrap_or_default(),
                source,
            })?;
        Ok(Response {
            what,
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    pub fn get(&self, target: &str, headers: &[(&str, &str)]) -> Result<Response, Failure> {
        self.send(Method::GET, target, headers, Body::None)
    }

    pub fn head(&self, target: &str, headers: &[(&str, &str)]) -> Result<Response, Failure> {
        self.send(Method::HEAD, target, headers, Body::None)
    }

    pub fn delete(&self, target: &str) -> Result<Response, Failure> {
        self.send(Method::DELETE, target, &[], Body::None)
    }

    pub fn post(
        &self,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, Failure> {
        self.send(Method::POST, target, headers, Body::Bytes(body))
    }

    pub fn put(
        &self,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, Failure> {
        self.send(Method::PUT, target, headers, Body::Bytes(body))
    }

    pub fn patch(
        &self,
        target: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<Response, Failure> {
        self.send(Method::PATCH, target, headers, body)
    }
}

/// Shortens a URL on our own registry to its path for messages.
fn display_target(url: &str, origin: &str) -> String {
    let shown = url.strip_prefix(origin).unwrap_or(url);
    // Blob-upload Locations can carry long opaque state; keep messages to one readable line.
    if shown.len() > 160 {
        format!("{}…", &shown[..char_boundary(shown, 160)])
    } else {
        shown.to_string()
    }
}
