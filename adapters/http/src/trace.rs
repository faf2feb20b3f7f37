//! Each registry request's span (`[observability.tracing]`). It continues the client's trace
//! when the request carries a valid W3C `traceparent` (anything else starts a new trace),
//! takes the route template as its name once the request is routed, and ends with the
//! exchange, when the response body has been sent. Only a sampled request gets one; the
//! others pay for the sampling decision alone, and their steps for nothing.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use stowage_core::names::RepoName;
use stowage_driver::Traced;

use crate::labels;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Where the service's spans go: a tracer of the app's exporting tracer provider.
#[derive(Clone)]
pub struct Tracing {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    propagator: TraceContextPropagator,
    /// The share of requests traced when their client did not decide.
    sampling_rate: f64,
}

impl Tracing {
    /// `provider` samples every span whose parent does not decide otherwise: the rate is
    /// applied by [`Tracing::start`].
    pub fn new(tracer: SdkTracer, provider: SdkTracerProvider, sampling_rate: f64) -> Self {
        Tracing {
            tracer,
            provider,
            propagator: TraceContextPropagator::new(),
            sampling_rate,
        }
    }

    /// Sends the spans not sent yet and stops exporting; spans ending later are dropped.
    /// Blocks until the collector answers or the export times out.
    pub(crate) fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "the last spans were not exported");
        }
    }

    /// The span of a request with these `headers`, or `None` when it is not sampled.
    /// `draw` gives a number in `[0, 1)` (`None`: none to be had, and no trace).
    pub(crate) fn start(
        &self,
        method: &Method,
        headers: &HeaderMap,
        client: IpAddr,
        request_id: &HeaderValue,
        draw: impl FnOnce() -> Option<f64>,
    ) -> Option<RequestSpan> {
        let parent = match headers.get(&TRACEPARENT) {
            Some(sent) if well_formed(sent.as_bytes()) => {
                self.propagator.extract(&HeaderExtractor(headers))
            }
            _ => Context::new(),
        };
        // A client's `traceparent` carries its decision, which the SDK's sampler follows.
        // The rate decides the rest here, before the SDK makes ids and a span for a request
        // it would drop (that was most of what an unsampled request paid).
        if !parent.span().span_context().is_valid()
            && self.sampling_rate < 1.0
            && !draw().is_some_and(|d| d < self.sampling_rate)
        {
            return None;
        }
        let method = labels::method(method);
        let mut span = self
            .tracer
            .span_builder(method)
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        if !span.is_recording() {
            return None;
        }
        span.set_attributes([
            KeyValue::new("http.request.method", method),
            KeyValue::new("client.address", client.to_string()),
            KeyValue::new(
                "stowage.request_id",
                request_id.to_str().unwrap_or_default().to_owned(),
            ),
        ]);
        Some(RequestSpan {
            tracer: self.tracer.clone(),
            context: parent.with_span(span),
        })
    }
}

/// A sampled request's span, in the context its steps' spans are made under.
#[derive(Clone)]
pub(crate) struct RequestSpan {
    tracer: SdkTracer,
    context: Context,
}

impl RequestSpan {
    /// What the driver needs to make the steps' spans.
    pub(crate) fn traced(&self) -> Traced<'_> {
        Traced {
            tracer: &self.tracer,
            request: &self.context,
        }
    }

    /// Names the span by its route, as `GET /v2/{name}/manifests/{reference}`.
    pub(crate) fn route(
        &self,
        method: &Method,
        template: &'static str,
        repository: Option<&RepoName>,
    ) {
        let span = self.context.span();
        span.update_name(format!("{} {template}", labels::method(method)));
        span.set_attribute(KeyValue::new("http.route", template));
        if let Some(repository) = repository {
            span.set_attribute(KeyValue::new(
                "stowage.repository",
                repository.as_str().to_owned(),
            ));
        }
    }

    /// Ends the span: the exchange is over, answered with `status` (`None`: the client left
    /// first).
    pub(crate) fn finish(&self, status: Option<StatusCode>, received: u64, sent: u64) {
        let span = self.context.span();
        span.set_attributes([
            KeyValue::new("http.request.body.size", received as i64),
            KeyValue::new("http.response.body.size", sent as i64),
        ]);
        match status {
            Some(status) => {
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status.as_u16()),
                ));
                if status.is_server_error() {
                    span.set_status(Status::error(status.to_string()));
                }
            }
            None => span.set_status(Status::error("the client left before the answer")),
        }
        span.end();
    }
}

/// Whether a `traceparent` has the shape W3C Trace Context gives it, which the SDK's parser
/// checks only in part (it takes a short or signed id): a version, trace id, parent id and
/// flags of 2, 32, 16 and 2 lowercase hex digits, then whatever a later version adds. The
/// parser checks the rest (no all-zero id, no version `ff`, nothing added by version `00`).
fn well_formed(traceparent: &[u8]) -> bool {
    let mut fields = traceparent.split(|&b| b == b'-');
    [2, 32, 16, 2].into_iter().all(|length| {
        fields.next().is_some_and(|field| {
            field.len() == length && field.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
    })
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;

    use super::*;

    const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    const PARENT: &str = "b7ad6b7169203331";

    #[test]
    fn a_traceparent_has_four_fields_of_lowercase_hex_digits() {
        assert!(well_formed(format!("00-{TRACE}-{PARENT}-01").as_bytes()));
        assert!(well_formed(
            format!("01-{TRACE}-{PARENT}-00-later").as_bytes()
        ));
        for bad in [
            format!("00-{}-{PARENT}-01", &TRACE[1..]),
            format!("00-+{}-{PARENT}-01", &TRACE[1..]),
            format!("00-{TRACE}-{}-01", &PARENT[2..]),
            format!("00-{}-{PARENT}-01", TRACE.to_uppercase()),
            format!("0-{TRACE}-{PARENT}-01"),
            format!("00-{TRACE}-{PARENT}-1"),
            format!("00-{TRACE}-{PARENT}"),
            format!("00 {TRACE} {PARENT} 01"),
            String::new(),
        ] {
            assert!(!well_formed(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn requests_continue_a_valid_traceparent_and_start_a_trace_otherwise() {
        let provider = SdkTracerProvider::builder().build();
        let tracing = Tracing::new(provider.tracer("test"), provider, 1.0);
        let id = HeaderValue::from_static("r");
        let client = IpAddr::from([127, 0, 0, 1]);
        let trace_of = |traceparent: Option<String>| {
            let headers =
                traceparent.map_or_else(HeaderMap::new, |value| headers_with_traceparent(&value));
            let span = tracing
                .start(&Method::GET, &headers, client, &id, || Some(0.0))
                .unwrap();
            let context = span.context.span().span_context().clone();
            (context.trace_id().to_string(), context.is_valid())
        };
        let (continued, _) = trace_of(Some(format!("00-{TRACE}-{PARENT}-01")));
        assert_eq!(continued, TRACE);
        for bad in [
            Some(format!("00-{}-{PARENT}-01", &TRACE[2..])),
            Some(format!("00-{}-{PARENT}-01", "0".repeat(32))),
            Some(format!("ff-{TRACE}-{PARENT}-01")),
            Some("nonsense".to_owned()),
            None,
        ] {
            let (trace, valid) = trace_of(bad.clone());
            assert!(
                valid && trace != TRACE && !trace.contains(&TRACE[2..]),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_rate_decides_for_requests_whose_client_did_not() {
        let provider = SdkTracerProvider::builder().build();
        let tracing = Tracing::new(provider.tracer("test"), provider, 0.25);
        let id = HeaderValue::from_static("r");
        let client = IpAddr::from([127, 0, 0, 1]);
        let none = HeaderMap::new();
        let traced = (0..100)
            .filter(|i| {
                let draw = f64::from(*i) / 100.0;
                tracing
                    .start(&Method::GET, &none, client, &id, || Some(draw))
                    .is_some()
            })
            .count();
        assert_eq!(traced, 25);
        let never = || -> Option<f64> { panic!("a client's decision is not drawn for") };
        let sampled = headers_with_traceparent(&format!("00-{TRACE}-{PARENT}-01"));
        assert!(
            tracing
                .start(&Method::GET, &sampled, client, &id, never)
                .is_some()
        );
        let unsampled = headers_with_traceparent(&format!("00-{TRACE}-{PARENT}-00"));
        assert!(
            tracing
                .start(&Method::GET, &unsampled, client, &id, never)
                .is_none()
        );
        assert!(
            tracing
                .start(&Method::GET, &none, client, &id, || None)
                .is_none()
        );
    }

    fn headers_with_traceparent(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_str(value).unwrap());
        headers
    }
}
