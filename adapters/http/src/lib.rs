//! The HTTP face of the registry, independent of any runtime: a request's head becomes a
//! core operation, its body a [`BodySource`], and the operation's answer a hyper response
//! whose stored bodies stream from storage. The server's own endpoints (`/healthz`,
//! `/readyz`, `/metrics`) are answered before authentication; every request is measured and,
//! unless turned off, written to the access log.

mod exchange;
mod health;
mod labels;
mod measure;
mod peer;
mod request_body;
mod request_id;
mod streamed;
mod trace;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::TryStreamExt;
use futures_util::future::{self, Either};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ring::rand::{SecureRandom, SystemRandom};
use stowage_auth::Authenticator;
use stowage_core::access::{Authentication, Caller, Identity};
use stowage_core::error::{ErrorCode, RegistryError};
use stowage_core::op::Operation;
use stowage_core::route::Route;
use stowage_core::step::{Body, Response as CoreResponse};
use stowage_core::{Entropy, Registry, RequestHead};
use stowage_driver::{Io, answer_early, drive, open_stored};

use exchange::Exchange;
use health::Probe;
use request_id::{RequestIds, X_REQUEST_ID};
use streamed::{OperationEnd, Streamed};
use trace::RequestSpan;

pub use exchange::{ACCESS_LOG_TARGET, AccessLog, AccessRecord};
pub use measure::describe_metrics;
pub use peer::Peer;
pub use request_body::{BodyPace, RequestBody};
pub use trace::Tracing;

thread_local! {
    /// Each thread's generator of request entropy (`Service::entropy`); ChaCha12.
    static GENERATOR: std::cell::RefCell<Option<StdRng>> = const { std::cell::RefCell::new(None) };
}

/// Renders the metrics in Prometheus' text format.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// What the service tells about itself.
#[derive(Clone)]
pub struct Observability {
    /// Serves `/metrics` on this listener; `None` when metrics are off or served on a
    /// listener of their own.
    pub metrics: Option<RenderMetrics>,
    /// Where a line per request goes; `None` when the access log is off.
    pub access_log: Option<Arc<dyn AccessLog>>,
    /// How long each `/readyz` check may take.
    pub readiness_timeout: Duration,
    /// A span for each registry request; `None` when tracing is off.
    pub tracing: Option<Tracing>,
}

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
    io: Io,
    body_pace: BodyPace,
    /// `None`: nobody logs in; credentials are ignored (a client certificate still counts).
    authenticator: Option<Arc<Authenticator>>,
    random: SystemRandom,
    metrics: Option<RenderMetrics>,
    access_log: Option<Arc<dyn AccessLog>>,
    readiness: Probe,
    request_ids: RequestIds,
    tracing: Option<Tracing>,
}

/// The server's own endpoints, outside the Distribution API and its authentication.
enum Own {
    Health,
    Readiness,
    Metrics(RenderMetrics),
}

impl Service {
    pub fn new(
        registry: Registry,
        io: Io,
        body_pace: BodyPace,
        authenticator: Option<Arc<Authenticator>>,
        observability: Observability,
    ) -> Self {
        let random = SystemRandom::new();
        let mut prefix = [0u8; 8];
        if random.fill(&mut prefix).is_err() {
            // Request ids only need to differ between processes; the clock does for that.
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            prefix = (nanos as u64).to_le_bytes();
        }
        Service {
            inner: Arc::new(Inner {
                registry,
                readiness: Probe::new(io.clone(), observability.readiness_timeout),
                io,
                body_pace,
                authenticator,
                random,
                metrics: observability.metrics,
                access_log: observability.access_log,
                request_ids: RequestIds::new(u64::from_le_bytes(prefix)),
                tracing: observability.tracing,
            }),
        }
    }

    /// Called once the server has stopped serving: sends the spans not exported yet.
    pub fn shutdown(&self) {
        if let Some(tracing) = &self.inner.tracing {
            tracing.shutdown();
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
            measure::authenticated(labels::authentication(&authentication));
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
            .authenticate(
                &head.headers,
                peer.address,
                certificate,
                Some(&peer.last_token),
            )
            .await
        {
            Ok(authentication) => {
                measure::authenticated(labels::authentication(&authentication));
                Ok(Caller {
                    authentication,
                    tls: peer.tls,
                })
            }
            Err(throttled) => {
                measure::authenticated("throttled");
                Err(stowage_auth::throttled_response(throttled))
            }
        }
    }

    /// Fresh randomness for one request (its upload id, which must be unguessable, and its
    /// seed) from this thread's cryptographically secure generator, seeded from the
    /// operating system on the thread's first request: a system call per request was
    /// about 3.5 % of a small GET's CPU. `None` if the system gave no seed.
    fn entropy(&self) -> Option<Entropy> {
        self.generator(|generator| Entropy {
            upload_id: generator.random(),
            seed: generator.random(),
        })
    }

    /// `f` with this thread's generator, seeded on first use; `None` if the system gave no
    /// seed.
    fn generator<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> Option<T> {
        GENERATOR.with(|generator| {
            let mut generator = generator.borrow_mut();
            if generator.is_none() {
                let mut seed = [0u8; 32];
                self.inner.random.fill(&mut seed).ok()?;
                *generator = Some(StdRng::from_seed(seed));
            }
            generator.as_mut().map(f)
        })
    }

    pub async fn handle(
        &self,
        request: http::Request<Incoming>,
        peer: &Peer,
    ) -> http::Response<ResponseBody> {
        let inner = &self.inner;
        let (parts, incoming) = request.into_parts();
        let request_id = inner
            .request_ids
            .for_request(parts.headers.get(X_REQUEST_ID));
        let path = parts.uri.path();
        let own = self.own_endpoint(path);
        // The server's own endpoints (probes, scrapes) are not traced.
        let trace = match (&own, &inner.tracing) {
            (None, Some(tracing)) => tracing.start(
                &parts.method,
                &parts.headers,
                peer.address,
                &request_id,
                || self.generator(|generator| generator.random::<f64>()),
            ),
            _ => None,
        };
        let mut exchange = Exchange::start(
            parts.method.clone(),
            peer.address,
            request_id.clone(),
            inner.access_log.clone(),
            trace,
        );
        let answer = match own {
            Some(own) => {
                exchange.route(labels::unrouted(path), None);
                Answer::Finished(self.serve_own(own).await)
            }
            None => {
                let head = RequestHead {
                    method: parts.method,
                    path: path.to_owned(),
                    query: parts.uri.query().map(str::to_owned),
                    headers: parts.headers,
                };
                self.registry_request(head, incoming, peer, &mut exchange)
                    .await
            }
        };
        let mut response = match answer {
            Answer::Finished(response) => self.to_http(response).await,
            Answer::Early(response) => response,
        };
        response.headers_mut().insert(X_REQUEST_ID, request_id);
        exchange.finish(response)
    }

    fn own_endpoint(&self, path: &str) -> Option<Own> {
        match path {
            "/healthz" => Some(Own::Health),
            "/readyz" => Some(Own::Readiness),
            "/metrics" => self.inner.metrics.clone().map(Own::Metrics),
            _ => None,
        }
    }

    async fn serve_own(&self, own: Own) -> CoreResponse {
        let (status, content_type, body) = match own {
            Own::Health => (
                http::StatusCode::OK,
                "text/plain",
                Bytes::from_static(b"ok"),
            ),
            Own::Readiness => {
                let readiness = self.inner.readiness.readiness().await;
                let status = if readiness.ready {
                    http::StatusCode::OK
                } else {
                    http::StatusCode::SERVICE_UNAVAILABLE
                };
                (status, "application/json", readiness.body)
            }
            Own::Metrics(render) => (
                http::StatusCode::OK,
                "text/plain; version=0.0.4",
                Bytes::from(render()),
            ),
        };
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        CoreResponse {
            status,
            headers,
            body: Body::Bytes(body),
        }
    }

    /// A Distribution API request (or the token endpoint): routed, authenticated, driven.
    async fn registry_request(
        &self,
        head: RequestHead,
        incoming: Incoming,
        peer: &Peer,
        exchange: &mut Exchange,
    ) -> Answer {
        let inner = &self.inner;
        let route = Route::parse(&head.method, &head.path, head.query.as_deref());
        match &route {
            Ok(route) => exchange.route(route.template(), route.repository()),
            Err(_) => exchange.route(labels::unrouted(&head.path), None),
        }
        let mut body = RequestBody::new(incoming, inner.io.timer.clone(), inner.body_pace);
        let mut response = match (self.caller(&head, peer).await, self.entropy()) {
            (Ok(caller), Some(entropy)) => {
                exchange.identity(caller.identity_id());
                let early = inner.registry.may_answer_early(&route);
                let op = inner.registry.handle_route(route, head, caller, entropy);
                let trace = exchange.trace();
                if early {
                    match self.drive_answering_early(op, body, trace).await {
                        Driven::Finished(response, returned) => {
                            body = returned;
                            response
                        }
                        Driven::Early(response) => return Answer::Early(response),
                    }
                } else {
                    let traced = trace.map(|trace| trace.traced());
                    drive(op, &inner.io, &mut body, traced.as_ref(), None).await
                }
            }
            (Err(answer), _) => answer,
            (Ok(_), None) => stowage_auth::error_response(
                RegistryError::new(ErrorCode::Unavailable, "the random source failed"),
                None,
            ),
        };
        exchange.received(body.received());
        if let (true, Body::Bytes(answer)) = (response.status.is_server_error(), &response.body) {
            exchange.server_failed(response.status, answer);
        }
        if body.left_unread() {
            // hyper will not reuse a connection with an unread body; say so, so clients
            // do not send their next request into a closing socket.
            response.headers.insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        Answer::Finished(response)
    }

    /// Drives `op` to its end, or until it answers early (a mirror streaming a blob as it
    /// fetches it); then the rest of the operation runs as a task of its own, and the
    /// answer's body ends when it does. The operation is boxed to outlive this call, which
    /// costs a copy of its state: only operations that may answer early come here.
    async fn drive_answering_early(
        &self,
        op: Operation,
        mut body: RequestBody,
        trace: Option<&RequestSpan>,
    ) -> Driven {
        let inner = self.inner.clone();
        let trace = trace.cloned();
        let (early, answered) = answer_early(self.inner.io.timer.clone());
        let mut driving = Box::pin(async move {
            let traced = trace.as_ref().map(RequestSpan::traced);
            let response = drive(op, &inner.io, &mut body, traced.as_ref(), Some(&early)).await;
            (response, body)
        });
        let answer = std::pin::pin!(answered.recv());
        let (answer, rest) = match future::select(driving.as_mut(), answer).await {
            // Finished, perhaps having answered early within one poll (a small blob).
            Either::Left(((response, body), _)) => match answered.try_recv() {
                Ok(answer) => (answer, None),
                Err(_) => return Driven::Finished(response, body),
            },
            Either::Right((Ok(answer), _)) => {
                let (ended, end) = async_channel::bounded(1);
                self.inner.io.spawner.spawn(Box::pin(async move {
                    let _ = ended.try_send(driving.await.0);
                }));
                let rest: OperationEnd = Box::pin(async move {
                    end.recv().await.unwrap_or_else(|_| {
                        stowage_core::unavailable("the operation stopped before it ended")
                    })
                });
                (answer, Some(rest))
            }
            Either::Right((Err(_), _)) => {
                let (response, body) = driving.await;
                return Driven::Finished(response, body);
            }
        };
        let body = Streamed::new(rest, answer.body).map_ok(Frame::data);
        let mut response = http::Response::new(StreamBody::new(body).boxed_unsync());
        *response.status_mut() = answer.status;
        *response.headers_mut() = answer.headers;
        Driven::Early(response)
    }

    async fn to_http(&self, response: CoreResponse) -> http::Response<ResponseBody> {
        let CoreResponse {
            status,
            headers,
            body,
        } = response;
        let body = match body {
            Body::Empty => Empty::new().map_err(|never| match never {}).boxed_unsync(),
            Body::Bytes(bytes) => whole(bytes),
            Body::Stored {
                store,
                key,
                span,
                cached_as,
            } => match open_stored(&self.inner.io, store, &key, span, cached_as).await {
                Ok(stream) => StreamBody::new(stream.map_ok(Frame::data)).boxed_unsync(),
                Err(instead) => return Box::pin(self.to_http(instead)).await,
            },
        };
        let mut http_response = http::Response::new(body);
        *http_response.status_mut() = status;
        *http_response.headers_mut() = headers;
        http_response
    }
}

/// A registry request's answer: the one its operation ended with, or one it gave earlier.
enum Answer {
    Finished(CoreResponse),
    Early(http::Response<ResponseBody>),
}

/// How driving an operation ended: with its answer (and the request body back), or with an
/// answer given early whose body finishes the operation.
enum Driven {
    Finished(CoreResponse, RequestBody),
    Early(http::Response<ResponseBody>),
}

fn whole(bytes: Bytes) -> ResponseBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}
