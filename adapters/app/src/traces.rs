//! `[observability.tracing]`: the tracer provider the service's spans come from. Finished
//! spans are queued and sent in batches over OTLP/HTTP (protobuf) by the SDK's batch
//! processor, on a thread of its own, so neither server's runtime runs an export (the smol
//! server has no tokio runtime). The export's HTTP client is reqwest, as the webhooks', on
//! a small tokio runtime of that thread's.

use std::path::Path;
use std::sync::{Once, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use stowage_http::Tracing;

use crate::StartError;
use crate::config::TracingSettings;

/// How long one batch may take to send.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The name traces give the service unless `OTEL_SERVICE_NAME` gives another.
const SERVICE_NAME: &str = "stowage";

/// The service's tracing, or `None` when no endpoint is configured.
pub(crate) fn start(settings: &TracingSettings) -> Result<Option<Tracing>, StartError> {
    let Some(endpoint) = &settings.endpoint else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(ExportClient::new(endpoint, settings.ca_bundle.as_deref())?)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| StartError::Tracing(e.to_string()))?;
    // A client that decided in its `traceparent` is followed; `Tracing` applies the rate
    // to the rest before a span is made.
    let sampler = Sampler::ParentBased(Box::new(Sampler::AlwaysOn));
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(resource())
        .build();
    Ok(Some(Tracing::new(
        provider.tracer(SERVICE_NAME),
        provider,
        settings.sampling_rate(),
    )))
}

/// Who the spans come from: the SDK's defaults (and `OTEL_RESOURCE_ATTRIBUTES`), named
/// [`SERVICE_NAME`] unless `OTEL_SERVICE_NAME` is set.
fn resource() -> Resource {
    let builder = Resource::builder();
    match std::env::var_os("OTEL_SERVICE_NAME") {
        Some(_) => builder.build(),
        None => builder.with_service_name(SERVICE_NAME).build(),
    }
}

/// The exporter's HTTP client. The batch processor awaits each export with a plain
/// executor on its thread, so the client brings the tokio runtime reqwest needs: made on
/// that thread at the first export, and dropped there (a runtime must not be dropped inside
/// another, as the tokio server's startup is).
#[derive(Debug)]
struct ExportClient {
    client: reqwest::Client,
    runtime: OnceLock<tokio::runtime::Runtime>,
    endpoint: String,
}

impl ExportClient {
    /// A client for `endpoint` that also trusts the CAs of `ca_bundle` (PEM), if given.
    fn new(endpoint: &str, ca_bundle: Option<&Path>) -> Result<Self, StartError> {
        // The process-wide TLS provider; whoever installs it first installs the same one.
        static PROVIDER: Once = Once::new();
        PROVIDER.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let refused = |e: &dyn std::fmt::Display| StartError::Tracing(e.to_string());
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(EXPORT_TIMEOUT)
            .connect_timeout(EXPORT_TIMEOUT);
        if let Some(bundle) = ca_bundle {
            let pem = std::fs::read(bundle)
                .map_err(|e| refused(&format_args!("{}: {e}", bundle.display())))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| refused(&format_args!("{}: {e}", bundle.display())))?;
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let client = builder.build().map_err(|e| refused(&e))?;
        Ok(ExportClient {
            client,
            runtime: OnceLock::new(),
            endpoint: endpoint.to_owned(),
        })
    }

    fn runtime(&self) -> Result<&tokio::runtime::Runtime, HttpError> {
        if let Some(runtime) = self.runtime.get() {
            return Ok(runtime);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(self.runtime.get_or_init(|| runtime))
    }

    async fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let response = self
            .client
            .execute(reqwest::Request::try_from(request)?)
            .await?;
        let mut answer = Response::builder().status(response.status());
        if let Some(headers) = answer.headers_mut() {
            headers.extend(response.headers().clone());
        }
        Ok(answer.body(response.bytes().await?)?)
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let sent = self.runtime()?.block_on(self.send(request));
        match &sent {
            Ok(response) if !response.status().is_success() => tracing::warn!(
                endpoint = self.endpoint,
                status = response.status().as_u16(),
                "the trace collector refused spans"
            ),
            Err(e) => tracing::warn!(
                endpoint = self.endpoint,
                error = %e,
                "sending spans to the trace collector failed"
            ),
            Ok(_) => {}
        }
        sent
    }
}
