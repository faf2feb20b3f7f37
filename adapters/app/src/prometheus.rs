//! Prometheus metrics: the recorder every crate's `metrics` calls report to, and where
//! `/metrics` is served.
//!
//! On the main listener by default, through the same service as the registry (so on both
//! servers' runtimes with no code of theirs). With `[observability.metrics] port`, on a
//! listener of its own instead: a plain hyper server on one std thread with its own
//! current-thread tokio runtime. That keeps it out of both servers' accept loops and
//! executors (it is written once, here, not once per runtime), and a scrape never competes
//! with registry connections for a worker; it costs one thread that sleeps between scrapes.
//! (Tokio is in both binaries already: OpenDAL needs it.)

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use stowage_http::RenderMetrics;

use crate::StartError;
use crate::config::MetricsSettings;

/// Histogram buckets, in seconds: from a cached manifest GET (well under a millisecond) to
/// a multi-GiB push.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Histograms' samples are folded into their buckets at each scrape and by this upkeep, so
/// an unscraped process does not keep every sample.
const UPKEEP: Duration = Duration::from_secs(5);

/// Installs the process-wide recorder; what renders `/metrics`.
pub(crate) fn install() -> Result<RenderMetrics, StartError> {
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| StartError::Metrics(e.to_string()))?;
    stowage_driver::series::recording();
    stowage_http::describe_metrics();
    stowage_driver::describe_metrics();
    stowage_storage::describe_metrics();
    stowage_webhooks::describe_metrics();
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("stowage-metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP);
                upkeep.run_upkeep();
            }
        })
        .map_err(StartError::Runtime)?;
    Ok(render(handle))
}

fn render(handle: PrometheusHandle) -> RenderMetrics {
    Arc::new(move || handle.render())
}

/// Where the metrics listener listens, if it has one of its own.
pub(crate) fn own_address(
    settings: &MetricsSettings,
    server_bind_address: &str,
) -> Result<Option<SocketAddr>, StartError> {
    let Some(port) = settings.port else {
        return Ok(None);
    };
    let address = settings
        .bind_address
        .as_deref()
        .unwrap_or(server_bind_address);
    let ip: IpAddr = address.parse().map_err(|source| StartError::BindAddress {
        address: address.to_owned(),
        source,
    })?;
    Ok(Some(SocketAddr::new(ip, port)))
}

/// Serves `GET /metrics` on `address` (anything else: 404) from a thread of its own, for
/// the life of the process.
pub(crate) fn serve_alone(address: SocketAddr, render: RenderMetrics) -> Result<(), StartError> {
    let listen_error = |source| StartError::Listen { address, source };
    // Bound here, so a taken port stops startup instead of a thread's log line.
    let listener = std::net::TcpListener::bind(address).map_err(listen_error)?;
    listener.set_nonblocking(true).map_err(listen_error)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    std::thread::Builder::new()
        .name("stowage-metrics".into())
        .spawn(move || runtime.block_on(accept(listener, render)))
        .map_err(StartError::Runtime)?;
    tracing::info!(%address, "metrics listening");
    Ok(())
}

async fn accept(listener: std::net::TcpListener, render: RenderMetrics) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "the metrics listener failed");
            return;
        }
    };
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                continue;
            }
        };
        let render = render.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let render = render.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(request.uri().path(), &render)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

fn answer(path: &str, render: &RenderMetrics) -> http::Response<Full<Bytes>> {
    let (status, body) = match path {
        "/metrics" => (http::StatusCode::OK, Bytes::from(render())),
        _ => (
            http::StatusCode::NOT_FOUND,
            Bytes::from_static(b"not found\n"),
        ),
    };
    let mut response = http::Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
