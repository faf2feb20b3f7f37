//! The accept loop: hyper serves each connection as a task on the executor; a shutdown
//! signal stops accepting and lets in-flight requests finish.

use std::net::{TcpListener, TcpStream};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use async_compat::Compat;
use async_executor::Executor;
use async_io::Async;
use futures_lite::future;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::server::graceful::GracefulShutdown;
use smol_hyper::rt::SmolTimer;
use stowage_app::{Config, StartError};
use stowage_http::Service;

use crate::connection::Connection;
use crate::signal::shutdown_signal;
use crate::sleep::SmolSleep;
use crate::workers::Workers;

/// Serves until a shutdown signal; `background` runs the housekeeping tasks.
pub async fn serve(
    config: Config,
    workers: &Workers,
    background: &Executor<'_>,
) -> Result<(), StartError> {
    // Inside tokio's context: the Redis client binds to the runtime it is created in.
    let (registry, backends) =
        Compat::new(async { stowage_app::build(&config, Arc::new(SmolSleep)) }).await?;
    background
        .spawn(Compat::new(stowage_app::purge_stale_uploads(
            &config, &backends,
        )))
        .detach();
    let server = &config.server;
    let (service, address) = stowage_app::http_service(&config, registry, backends)?;
    let listen_error = |source| StartError::Listen { address, source };
    let listener = Async::<TcpListener>::bind(address).map_err(listen_error)?;
    let bound = listener.get_ref().local_addr().map_err(listen_error)?;
    tracing::info!(address = %bound, "stowage listening");

    let header_timeout = Duration::from_secs(server.request_header_timeout_secs);
    let http = stowage_http::http1_builder(SmolTimer::new(), header_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown_signal());
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            shutdown.as_mut().await;
            None
        })
        .await;
        match accepted {
            Some(Ok((stream, remote))) => {
                let peer = stowage_http::Peer::plain(remote.ip());
                serve_connection(workers, &http, &graceful, &service, stream, peer);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "accept failed"),
            None => break,
        }
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
    Ok(())
}

fn serve_connection(
    workers: &Workers,
    http: &http1::Builder,
    graceful: &GracefulShutdown,
    service: &Service,
    stream: Async<TcpStream>,
    peer: stowage_http::Peer,
) {
    let _ = stream.get_ref().set_nodelay(true);
    let service = service.clone();
    let handler = service_fn(move |request| {
        let (service, peer) = (service.clone(), peer.clone());
        async move { Ok::<_, std::convert::Infallible>(service.handle(request, &peer).await) }
    });
    let connection = graceful.watch(http.serve_connection(Connection::new(stream), handler));
    // OpenDAL's fs service runs on tokio::fs and its S3 transport on reqwest, and hyper polls
    // response bodies streamed from storage outside the handler: the whole connection is
    // polled inside a tokio context (async-compat's background runtime).
    workers.serve(Compat::new(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }));
}
