//! The HTTP face of the registry, independent of any runtime: a request's head becomes a
//! core operation, its body a [`BodySource`], and the operation's answer a hyper response
//! whose stored bodies stream from storage.

mod peer;
mod request_body;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use ring::rand::{SecureRandom, SystemRandom};
use stowage_auth::Authenticator;
use stowage_core::access::{Authentication, Caller, Identity};
use stowage_core::error::{ErrorCode, RegistryError};
use stowage_core::step::{Body, Response as CoreResponse};
use stowage_core::{Entropy, Registry, RequestHead};
use stowage_driver::{Backends, drive};

pub use peer::Peer;
pub use request_body::{BodyPace, RequestBody};

pub type ResponseBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// The most a connection buffers from its socket (hyper's `max_buf_size`; its default is
/// about 400 KiB). Request bodies are written to storage as the slices of this buffer they
/// arrive in, so a smaller one keeps less memory held per upload, for a few more reads.
const READ_BUFFER_MAX: usize = 128 * 1024;

/// The HTTP/1 connection settings both servers use, on their runtime's timer.
pub fn http1_builder(
    timer: impl hyper::rt::Timer + Send + Sync + 'static,
    header_read_timeout: Duration,
) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(timer)
        .max_buf_size(READ_BUFFER_MAX)
        .header_read_timeout(header_read_timeout);
    builder
}

/// The registry as an HTTP service; clone it into every connection.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    backends: Backends,
    body_pace: BodyPace,
    /// `None`: nobody logs in; credentials are ignored (a client certificate still counts).
    authenticator: Option<Arc<Authenticator>>,
    random: SystemRandom,
}

impl Service {
    pub fn new(
        registry: Registry,
        backends: Backends,
        body_pace: BodyPace,
        authenticator: Option<Arc<Authenticator>>,
    ) -> Self {
        Service {
            inner: Arc::new(Inner {
                registry,
                backends,
                body_pace,
                authenticator,
                random: SystemRandom::new(),
            }),
        }
    }

    /// Who is calling, or the answer that ends the request first (a throttled login, the
    /// token endpoint).
    async fn caller(&self, head: &RequestHead, peer: &Peer) -> Result<Caller, CoreResponse> {
        let certificate = peer.certificate.as_deref().cloned();
        let Some(authenticator) = &self.inner.authenticator else {
            let authentication = match certificate {
                Some(names) => {
                    Authentication::Identified(Identity::anonymous().with_certificate(names))
                }
                None => Authentication::Anonymous,
            };
            return Ok(Caller {
                authentication,
                tls: peer.tls,
            });
        };
        if head.path == "/token" && authenticator.serves_tokens() {
            return Err(authenticator
                .token_endpoint(
                    &self.inner.registry,
                    head.query.as_deref(),
                    &head.headers,
                    peer.address,
                    certificate,
                )
                .await);
        }
        match authenticator
            .authenticate(&head.headers, peer.address, certificate)
            .await
        {
            Ok(authentication) => Ok(Caller {
                authentication,
                tls: peer.tls,
            }),
            Err(throttled) => Err(stowage_auth::throttled_response(throttled)),
        }
    }

    /// Fresh randomness for one request: its upload id straight from the operating system.
    fn entropy(&self) -> Option<Entropy> {
        let mut bytes = [0u8; 24];
        self.inner.random.fill(&mut bytes).ok()?;
        let (id, seed) = bytes.split_at(16);
        Some(Entropy {
            upload_id: u128::from_le_bytes(id.try_into().ok()?),
            seed: u64::from_le_bytes(seed.try_into().ok()?),
        })
    }

    pub async fn handle(
        &self,
        request: http::Request<Incoming>,
        peer: &Peer,
    ) -> http::Response<ResponseBody> {
        let inner = &self.inner;
        let (parts, incoming) = request.into_parts();
        let head = RequestHead {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers,
        };
        let (method, path) = (head.method.clone(), head.path.clone());
        let mut body = RequestBody::new(incoming, inner.backends.timer.clone(), inner.body_pace);
        let mut response = match (self.caller(&head, peer).await, self.entropy()) {
            (Ok(caller), Some(entropy)) => {
                let op = inner.registry.handle(head, caller, entropy);
                drive(op, &inner.backends, &mut body).await
            }
            (Err(answer), _) => answer,
            (Ok(_), None) => stowage_auth::error_response(
                RegistryError::new(ErrorCode::Unavailable, "the random source failed"),
                None,
            ),
        };
        if body.left_unread() {
            // hyper will not reuse a connection with an unread body; say so, so clients
            // do not send their next request into a closing socket.
            response.headers.insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        tracing::debug!(%method, path, status = response.status.as_u16(), "request");
        self.to_http(response).await
    }

    async fn to_http(&self, response: CoreResponse) -> http::Response<ResponseBody> {
        let CoreResponse {
            status,
            headers,
            body,
        } = response;
        let body = match body {
            Body::Empty => Empty::new().map_err(|never| match never {}).boxed_unsync(),
            Body::Bytes(bytes) => Full::new(bytes)
                .map_err(|never| match never {})
                .boxed_unsync(),
            Body::Stored { store, key, span } => {
                match self
                    .inner
                    .backends
                    .storage
                    .read_span(store, &key, span)
                    .await
                {
                    Ok(stream) => StreamBody::new(stream.map_ok(Frame::data)).boxed_unsync(),
                    Err(e) => {
                        tracing::error!(key, error = %e, "opening a blob for reading failed");
                        let mut failed = http::Response::new(
                            Empty::new().map_err(|never| match never {}).boxed_unsync(),
                        );
                        *failed.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                        return failed;
                    }
                }
            }
        };
        let mut http_response = http::Response::new(body);
        *http_response.status_mut() = status;
        *http_response.headers_mut() = headers;
        http_response
    }
}
