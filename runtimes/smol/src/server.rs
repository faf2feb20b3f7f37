//! The accept loop: each connection is handed to a worker, which does its TLS handshake (if
//! any) and serves it with hyper; a shutdown signal stops accepting and lets in-flight
//! requests finish.

use std::net::TcpListener;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use async_compat::Compat;
use async_executor::Executor;
use async_io::Async;
use futures_lite::future;
use hyper_util::server::graceful::GracefulShutdown;
use smol_hyper::rt::SmolTimer;
use stowage_app::{AcceptBackoff, Config, StartError, Tls};

use crate::serve_connection::ServeConnection;
use crate::signal::shutdown_signal;
use crate::sleep::SmolSleep;
use crate::workers::{WorkerSpawn, Workers};

/// Serves until a shutdown signal; `background` runs the housekeeping tasks.
pub async fn serve(
    config: Config,
    workers: &Workers,
    background: &Executor<'_>,
) -> Result<(), StartError> {
    // Inside tokio's context: the Redis client binds to the runtime it is created in.
    let (registry, io) = Compat::new(async {
        stowage_app::build(&config, Arc::new(SmolSleep), Arc::new(WorkerSpawn))
    })
    .await?;
    Compat::new(io.stores.prepare()).await?;
    background
        .spawn(Compat::new(stowage_app::purge_stale_uploads(
            &config, &registry, &io,
        )))
        .detach();
    background
        .spawn(Compat::new(stowage_app::deliver_queued_events(&io)))
        .detach();
    background
        .spawn(Compat::new(stowage_app::collect_periodically(
            &config, &registry, &io,
        )))
        .detach();
    let server = &config.server;
    let (service, address) = stowage_app::http_service(&config, registry, io)?;
    let tls = stowage_app::tls(&config)?;
    let listen_error = |source| StartError::Listen { address, source };
    let listener = Async::<TcpListener>::bind(address).map_err(listen_error)?;
    let bound = listener.get_ref().local_addr().map_err(listen_error)?;
    tracing::info!(address = %bound, tls = tls.is_some(), "stowage listening");

    let header_timeout = Duration::from_secs(server.request_header_timeout_secs);
    let http = stowage_http::http1_builder(SmolTimer::new(), header_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown_signal());
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            shutdown.as_mut().await;
            None
        })
        .await;
        let (stream, remote) = match accepted {
            Some(Ok(conn)) => {
                backoff.accepted();
                conn
            }
            Some(Err(e)) => {
                let pause = backoff.failed(&e);
                let paused = future::or(
                    async {
                        async_io::Timer::after(pause).await;
                        true
                    },
                    async {
                        shutdown.as_mut().await;
                        false
                    },
                );
                if paused.await {
                    continue;
                }
                break;
            }
            None => break,
        };
        let _ = stream.get_ref().set_nodelay(true);
        let connection = ServeConnection {
            service: service.clone(),
            http: http.clone(),
            watcher: graceful.watcher(),
            handshake_timeout: header_timeout,
        };
        let tls = tls.as_ref().map(Tls::config);
        // The filesystem store's blocking calls run on tokio's pool, OpenDAL's S3 transport on
        // reqwest, and hyper polls response bodies streamed from storage outside the handler:
        // the whole connection is polled inside a tokio context (async-compat's background
        // runtime).
        workers.serve(Compat::new(connection.serve(stream, remote.ip(), tls)));
    }
    tracing::info!("shutting down: finishing in-flight requests");
    drop(listener);
    let timeout = Duration::from_secs(server.shutdown_timeout_secs);
    let finished = future::or(
        async {
            graceful.shutdown().await;
            true
        },
        async {
            async_io::Timer::after(timeout).await;
            false
        },
    )
    .await;
    if !finished {
        tracing::warn!("in-flight requests still running after {timeout:?}; stopping anyway");
    }
    service.shutdown();
    Ok(())
}
