//! `GET /token`: the Docker token protocol's token endpoint. The caller authenticates
//! (Basic, a client certificate, or nobody), asks for scopes, and gets a token granting
//! those the policies allow it (possibly none: a token for an anonymous caller of a private
//! registry grants nothing, and the registry then answers `401` for what it needed).

use std::net::IpAddr;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use stowage_core::Registry;
use stowage_core::access::{Access, Authentication, CertificateNames, Identity};
use stowage_core::error::{ErrorCode, RegistryError};
use stowage_core::step::{Body, Response};

use crate::{Authenticator, Throttled};

impl Authenticator {
    /// Whether this server answers `/token` (a token service is configured).
    pub fn serves_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    pub async fn token_endpoint(
        &self,
        registry: &Registry,
        query: Option<&str>,
        headers: &HeaderMap,
        address: IpAddr,
        certificate: Option<CertificateNames>,
    ) -> Response {
        let Some(keys) = &self.tokens else {
            return error(
                RegistryError::new(ErrorCode::NotFound, "no token service here"),
                None,
            );
        };
        let identity = match self.authenticate(headers, address, certificate, None).await {
            Err(throttled) => return throttled_response(throttled),
            Ok(Authentication::Anonymous) => Identity::anonymous(),
            Ok(Authentication::Identified(identity)) => identity,
            // A registry token is no credential for another one: it would outlive itself.
            Ok(Authentication::Token { .. }) | Ok(Authentication::Failed(_)) => {
                return error(
                    RegistryError::new(ErrorCode::Unauthorized, "wrong username or password"),
                    Some(format!("Basic realm=\"{}\"", keys.service())),
                );
            }
        };
        let requested: Vec<Access> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .filter(|(key, _)| key == "scope")
            .flat_map(|(_, value)| {
                value
                    .split(' ')
                    .filter_map(Access::parse)
                    .collect::<Vec<_>>()
            })
            .collect();
        let granted = registry
            .access()
            .grant(registry.repositories(), &identity, &requested);
        let now = SystemTime::now();
        match keys.issue(&identity.id, granted, now) {
            Ok(issued) => {
                let body = serde_json::json!({
                    "token": issued.token,
                    "access_token": issued.token,
                    "expires_in": issued.expires_in,
                    "issued_at": humantime::format_rfc3339_seconds(issued.issued_at).to_string(),
                });
                json(StatusCode::OK, body.to_string())
            }
            Err(e) => {
                tracing::error!("{e}");
                error(
                    RegistryError::new(ErrorCode::Unavailable, "cannot issue a token"),
                    None,
                )
            }
        }
    }
}

fn json(status: StatusCode, body: String) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response {
        status,
        headers,
        body: Body::Bytes(Bytes::from(body)),
    }
}

/// An OCI error response, with a challenge when there is one.
pub fn error(error: RegistryError, challenge: Option<String>) -> Response {
    let mut response = json(error.code.status(), error.body());
    if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response
            .headers
            .insert(http::header::WWW_AUTHENTICATE, value);
    }
    response
}

/// `429` with `Retry-After` in whole seconds (at least one).
pub fn throttled_response(throttled: Throttled) -> Response {
    let seconds = throttled.retry_after.as_secs().max(1);
    let mut response = error(
        RegistryError::new(
            ErrorCode::TooManyRequests,
            format!("too many failed logins from this address; retry in {seconds} s"),
        ),
        None,
    );
    response
        .headers
        .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}
