//! One connection, on the worker that serves it: the TLS handshake if the server has TLS
//! (bounded by `request_header_timeout_secs`, so a client that stalls it only holds its own
//! connection), then HTTP/1.1 until the connection ends or shutdown closes it.

use std::convert::Infallible;
use std::net::{IpAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use async_io::{Async, Timer};
use futures_lite::future;
use futures_lite::io::BufReader;
use futures_rustls::TlsAcceptor;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::server::graceful::Watcher;
use rustls::ServerConfig;
use stowage_http::{Peer, Service};

use crate::connection::Connection;
use crate::tls_connection::TlsConnection;

/// rustls reads at most 4 KiB from the socket at a time; buffered, one recv takes what
/// several records hold, so a TLS push makes far fewer system calls.
const READ_BUFFER: usize = 64 * 1024;

/// What serving a connection takes besides the socket.
pub struct ServeConnection {
    pub service: Service,
    pub http: http1::Builder,
    pub watcher: Watcher,
    pub handshake_timeout: Duration,
}

impl ServeConnection {
    /// Serves `stream` from `address`: over TLS with `tls` (the configuration current when
    /// it was accepted), else plain.
    pub async fn serve(
        self,
        stream: Async<TcpStream>,
        address: IpAddr,
        tls: Option<Arc<ServerConfig>>,
    ) {
        match tls {
            None => {
                self.serve_http(Connection::new(stream), Peer::plain(address))
                    .await
            }
            // Boxed: the handshake's state (rustls' connection inline) would otherwise size
            // every connection's task, plain ones included, at about 6 KiB instead of 1.5.
            Some(tls) => Box::pin(self.serve_tls(stream, address, tls)).await,
        }
    }

    /// The TLS handshake, bounded by `handshake_timeout`, then HTTP over it.
    async fn serve_tls(self, stream: Async<TcpStream>, address: IpAddr, tls: Arc<ServerConfig>) {
        let stream = BufReader::with_capacity(READ_BUFFER, stream);
        let handshake = async { Some(TlsAcceptor::from(tls).accept(stream).await) };
        let timeout = async {
            Timer::after(self.handshake_timeout).await;
            None
        };
        match future::or(handshake, timeout).await {
            Some(Ok(stream)) => {
                let peer = stowage_app::tls_peer(address, stream.get_ref().1);
                self.serve_http(TlsConnection::new(stream), peer).await;
            }
            Some(Err(e)) => tracing::debug!(%address, error = %e, "TLS handshake failed"),
            None => tracing::debug!(%address, "TLS handshake timed out"),
        }
    }

    async fn serve_http<I>(self, io: I, peer: Peer)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let service = self.service;
        let handler = service_fn(move |request| {
            let (service, peer) = (service.clone(), peer.clone());
            async move { Ok::<_, Infallible>(service.handle(request, &peer).await) }
        });
        let connection = self.http.serve_connection(io, handler);
        if let Err(e) = self.watcher.watch(connection).await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}
