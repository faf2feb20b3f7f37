//! The spans of the steps the driver performs for a traced request, children of the
//! request's span: one per storage operation, lock request, cache request, lock wait,
//! upstream request and webhook delivery. A request that is not traced (tracing off, or not
//! sampled) has no [`Traced`], and its steps make no span and pay nothing.

use std::borrow::Cow;

use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, Span};
use stowage_core::cache::key_kind;
use stowage_core::step::{CacheRequest, LockRequest, StoreRole};

/// A traced request: the tracer, and the context holding the request's span.
pub struct Traced<'a> {
    pub tracer: &'a SdkTracer,
    pub request: &'a Context,
}

/// What a step's span is called and says.
pub(crate) struct Described {
    name: Cow<'static, str>,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
}

/// The span of a step of `trace`'s request, described by `describe` (called only when the
/// request is traced).
pub(crate) fn span(trace: Option<&Traced>, describe: impl FnOnce() -> Described) -> StepSpan {
    StepSpan(trace.map(|trace| {
        let Described {
            name,
            kind,
            attributes,
        } = describe();
        trace
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(trace.tracer, trace.request)
    }))
}

/// One step's span, if its request is traced; it ends when dropped.
pub(crate) struct StepSpan(Option<Span>);

impl StepSpan {
    /// Records what came of the step: `outcome` is one of the few words its metrics use;
    /// `error` marks the span failed with the backend's message.
    pub(crate) fn outcome(&mut self, outcome: &'static str, error: Option<&str>) {
        let Some(span) = &mut self.0 else { return };
        span.set_attribute(KeyValue::new("stowage.outcome", outcome));
        if let Some(message) = error {
            span.set_status(Status::error(message.to_owned()));
        }
    }
}

pub(crate) fn stores(
    backend: &'static str,
    kind: &'static str,
    store: StoreRole,
    subject: &str,
) -> Described {
    let store = match store {
        StoreRole::Blobs => "blobs",
        StoreRole::Meta => "metadata",
    };
    Described {
        name: format!("storage.{kind}").into(),
        kind: SpanKind::Client,
        attributes: vec![
            KeyValue::new("stowage.storage.backend", backend),
            KeyValue::new("stowage.storage.store", store),
            KeyValue::new("stowage.storage.key", subject.to_owned()),
        ],
    }
}

pub(crate) fn lock(request: &LockRequest) -> Described {
    let (name, key) = match request {
        LockRequest::Acquire { key, .. } => ("lock.acquire", key),
        LockRequest::Refresh { key, .. } => ("lock.refresh", key),
        LockRequest::Release { key, .. } => ("lock.release", key),
    };
    Described {
        name: name.into(),
        kind: SpanKind::Client,
        attributes: vec![KeyValue::new("stowage.lock.key", key.clone())],
    }
}

/// A back-off wait for a held lock.
pub(crate) fn lock_wait(ms: u64) -> Described {
    Described {
        name: "lock.wait".into(),
        kind: SpanKind::Internal,
        attributes: vec![KeyValue::new("stowage.wait_ms", ms as i64)],
    }
}

pub(crate) fn cache(request: &CacheRequest) -> Described {
    let (name, key) = match request {
        CacheRequest::Get { key } => ("cache.get", key),
        CacheRequest::Put { key, .. } => ("cache.put", key),
        CacheRequest::Remove { key } => ("cache.remove", key),
    };
    Described {
        name: name.into(),
        kind: SpanKind::Client,
        attributes: vec![
            KeyValue::new("stowage.cache.kind", key_kind(key)),
            KeyValue::new("stowage.cache.key", key.clone()),
        ],
    }
}

pub(crate) fn upstream(kind: &'static str) -> Described {
    Described {
        name: format!("upstream.{kind}").into(),
        kind: SpanKind::Client,
        attributes: Vec::new(),
    }
}

pub(crate) fn webhooks(webhooks: &[String]) -> Described {
    Described {
        name: "webhook.deliver".into(),
        kind: SpanKind::Client,
        attributes: vec![KeyValue::new("stowage.webhooks", webhooks.join(","))],
    }
}
