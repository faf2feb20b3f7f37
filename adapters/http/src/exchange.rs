//! One request from its head to the end of its response body: what the access log line and
//! the request metrics need, gathered as the request goes, and written once the response
//! body has been sent, so the duration and the bytes sent are the whole exchange's, a
//! streamed blob's included. A request whose client went away before the end is written
//! when it is dropped: with the status it was answering, or none if it had none yet.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use stowage_core::names::RepoName;

use crate::trace::RequestSpan;
use crate::{ResponseBody, measure};

/// The target of access log lines, so they can be filtered (`RUST_LOG=stowage::access=off`).
pub const ACCESS_LOG_TARGET: &str = "stowage::access";

/// Where access log lines go: one call per request, once its exchange is over.
pub trait AccessLog: Send + Sync {
    fn write(&self, request: &AccessRecord<'_>);
}

/// One request, as its access log line tells it.
pub struct AccessRecord<'a> {
    pub method: &'a Method,
    /// The route template (`/v2/{name}/manifests/{reference}`), or `other`.
    pub route: &'static str,
    pub repository: Option<&'a str>,
    /// `None`: the client left before the answer.
    pub status: Option<u16>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// From the request's head to the end of its response body.
    pub duration: Duration,
    pub client: IpAddr,
    /// The caller's identity id; `None` for an anonymous caller.
    pub identity: Option<&'a str>,
    /// Visible ASCII only (a client's id is kept only if it is).
    pub request_id: &'a str,
}

pub(crate) struct Exchange {
    started: Instant,
    method: Method,
    route: &'static str,
    /// Only kept when the access log is on (it is never a metrics label).
    repository: Option<RepoName>,
    client: IpAddr,
    /// The caller's identity id; empty for an anonymous caller.
    identity: String,
    request_id: HeaderValue,
    received: u64,
    access_log: Option<Arc<dyn AccessLog>>,
    /// The answer's status, once there is one.
    status: Option<StatusCode>,
    sent: u64,
    /// The request's span, when it is traced.
    trace: Option<RequestSpan>,
}

impl Exchange {
    pub(crate) fn start(
        method: Method,
        client: IpAddr,
        request_id: HeaderValue,
        access_log: Option<Arc<dyn AccessLog>>,
        trace: Option<RequestSpan>,
    ) -> Self {
        measure::request_started();
        Exchange {
            started: Instant::now(),
            method,
            route: "other",
            repository: None,
            client,
            identity: String::new(),
            request_id,
            received: 0,
            access_log,
            status: None,
            sent: 0,
            trace,
        }
    }

    pub(crate) fn route(&mut self, template: &'static str, repository: Option<&RepoName>) {
        self.route = template;
        if let Some(trace) = &self.trace {
            trace.route(&self.method, template, repository);
        }
        if self.access_log.is_some() {
            self.repository = repository.cloned();
        }
    }

    pub(crate) fn identity(&mut self, id: &str) {
        if self.access_log.is_some() {
            id.clone_into(&mut self.identity);
        }
    }

    pub(crate) fn received(&mut self, bytes: u64) {
        self.received = bytes;
    }

    /// The request's span, when it is traced.
    pub(crate) fn trace(&self) -> Option<&RequestSpan> {
        self.trace.as_ref()
    }

    /// Logs an answer of the server's own failure with its error, which names the cause (a
    /// full disk, a corrupt link file, a lock lost, the collector's fence): the access line
    /// carries only the status.
    pub(crate) fn server_failed(&self, status: StatusCode, answer: &[u8]) {
        tracing::warn!(
            method = %self.method,
            route = self.route,
            status = status.as_u16(),
            request_id = self.request_id.to_str().unwrap_or_default(),
            answer = %String::from_utf8_lossy(answer),
            "request failed"
        );
    }

    /// Hands the response on with a body that completes the exchange when it ends.
    pub(crate) fn finish(
        mut self,
        response: http::Response<ResponseBody>,
    ) -> http::Response<ResponseBody> {
        self.status = Some(response.status());
        response.map(|body| {
            Metered {
                body,
                exchange: Some(self),
            }
            .boxed_unsync()
        })
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        measure::request_finished(
            self.route,
            &self.method,
            self.status,
            self.received,
            self.sent,
            took,
        );
        if let Some(trace) = &self.trace {
            trace.finish(self.status, self.received, self.sent);
        }
        if let Some(access_log) = &self.access_log {
            access_log.write(&AccessRecord {
                method: &self.method,
                route: self.route,
                repository: self.repository.as_ref().map(RepoName::as_str),
                status: self.status.map(|status| status.as_u16()),
                bytes_in: self.received,
                bytes_out: self.sent,
                duration: took,
                client: self.client,
                identity: (!self.identity.is_empty()).then_some(self.identity.as_str()),
                request_id: self.request_id.to_str().unwrap_or_default(),
            });
        }
    }
}

/// A response body that counts the bytes it yields and completes its exchange (drops it)
/// when it ends or fails; dropped unfinished, it drops the exchange with it.
struct Metered {
    body: ResponseBody,
    exchange: Option<Exchange>,
}

impl Body for Metered {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(exchange)) = (frame.data_ref(), &mut self.exchange) {
                    exchange.sent += data.len() as u64;
                }
                if self.body.is_end_stream() {
                    self.exchange = None;
                }
            }
            Poll::Ready(_) => self.exchange = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
