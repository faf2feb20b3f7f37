//! One connection, on the worker that serves it: the TLS handshake if the server has TLS
//! (bounded by `request_header_timeout_secs`, so a client that stalls it only holds its own
//! connection), then HTTP/1.1 until the connection ends or shutdown closes it.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use rustls::ServerConfig;
use stowage_http::{Peer, Service};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// rustls reads at most 4 KiB from the socket at a time; buffered, one recv takes what
/// several records hold, so a TLS push makes far fewer system calls.
const READ_BUFFER: usize = 64 * 1024;

/// What serving a connection takes besides the socket.
pub struct Connection {
    pub service: Service,
    pub http: http1::Builder,
    pub watcher: Watcher,
    pub handshake_timeout: Duration,
}

impl Connection {
    /// Serves `stream` from `address`: over TLS with `tls` (the configuration current when
    /// it was accepted), else plain.
    pub async fn serve(self, stream: TcpStream, address: IpAddr, tls: Option<Arc<ServerConfig>>) {
        match tls {
            None => self.serve_http(stream, Peer::plain(address)).await,
            // Boxed: the handshake's state (rustls' connection inline) would otherwise size
            // every connection's task, plain ones included, at about 6 KiB instead of 1.5.
            Some(tls) => Box::pin(self.serve_tls(stream, address, tls)).await,
        }
    }

    /// The TLS handshake, bounded by `handshake_timeout`, then HTTP over it.
    async fn serve_tls(self, stream: TcpStream, address: IpAddr, tls: Arc<ServerConfig>) {
        let stream = tokio::io::BufReader::with_capacity(READ_BUFFER, stream);
        let handshake = TlsAcceptor::from(tls).accept(stream);
        match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(Ok(stream)) => {
                let peer = stowage_app::tls_peer(address, stream.get_ref().1);
                self.serve_http(stream, peer).await;
            }
            Ok(Err(e)) => tracing::debug!(%address, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(%address, "TLS handshake timed out"),
        }
    }

    async fn serve_http<I>(self, io: I, peer: Peer)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = self.service;
        let handler = service_fn(move |request| {
            let (service, peer) = (service.clone(), peer.clone());
            async move { Ok::<_, Infallible>(service.handle(request, &peer).await) }
        });
        let connection = self.http.serve_connection(TokioIo::new(io), handler);
        if let Err(e) = self.watcher.watch(connection).await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}
