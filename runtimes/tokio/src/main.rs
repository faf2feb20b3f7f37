//! `stowage`: the registry on tokio. Everything but the accept loop, executor, timer and
//! signal handling is shared with `stowage-smol`.
//!
//! The main thread runs the accept loop, signal handling and background tasks on a
//! single-threaded runtime; connections (TLS handshake included) are served by [`workers`],
//! one runtime per core.

mod connection;
mod workers;

use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioTimer;
use hyper_util::server::graceful::GracefulShutdown;
use stowage_app::{AcceptBackoff, Config, StartError, Tls, TokioSleep, TokioSpawn};
use tokio::net::TcpListener;

use crate::connection::Connection;
use crate::workers::Workers;

fn main() -> ExitCode {
    stowage_app::run(env!("CARGO_BIN_NAME"), |config| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let workers = Workers::start(cores).map_err(StartError::Runtime)?;
        let served = runtime.block_on(serve(config, &workers));
        workers.stop();
        served
    })
}

async fn serve(config: Config, workers: &Workers) -> Result<(), StartError> {
    let (registry, io) = stowage_app::build(&config, Arc::new(TokioSleep), Arc::new(TokioSpawn))?;
    io.stores.prepare().await?;
    tokio::spawn(stowage_app::purge_stale_uploads(&config, &registry, &io));
    tokio::spawn(stowage_app::deliver_queued_events(&io));
    tokio::spawn(stowage_app::collect_periodically(&config, &registry, &io));
    let server = &config.server;
    let (service, address) = stowage_app::http_service(&config, registry, io)?;
    let tls = stowage_app::tls(&config)?;
    let listen_error = |source| StartError::Listen { address, source };
    let listener = TcpListener::bind(address).await.map_err(listen_error)?;
    let bound = listener.local_addr().map_err(listen_error)?;
    tracing::info!(address = %bound, tls = tls.is_some(), "stowage listening");

    let header_timeout = Duration::from_secs(server.request_header_timeout_secs);
    let http = stowage_http::http1_builder(TokioTimer::new(), header_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, remote) = match accepted {
            Ok(conn) => {
                backoff.accepted();
                conn
            }
            Err(e) => {
                let pause = backoff.failed(&e);
                tokio::select! {
                    () = tokio::time::sleep(pause) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        // Registered again by the worker that serves it.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a connection over");
                continue;
            }
        };
        let connection = Connection {
            service: service.clone(),
            http: http.clone(),
            watcher: graceful.watcher(),
            handshake_timeout: header_timeout,
        };
        let tls = tls.as_ref().map(Tls::config);
        workers.serve(stream, move |stream| {
            connection.serve(stream, remote.ip(), tls)
        });
    }
    tracing::info!("shutting down: finishing in-flight requests");
    drop(listener);
    let timeout = Duration::from_secs(server.shutdown_timeout_secs);
    if tokio::time::timeout(timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests still running after {timeout:?}; stopping anyway");
    }
    service.shutdown();
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
