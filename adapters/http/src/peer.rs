//! Who is at the other end of a connection, as far as the transport can tell: the address it
//! connects from and, over TLS with client certificates, the certificate it proved it holds;
//! and the last token it presented.

use std::net::IpAddr;
use std::sync::Arc;

use stowage_auth::LastToken;
use stowage_core::access::CertificateNames;

/// One connection's peer; every request on the connection shares it.
#[derive(Debug, Clone)]
pub struct Peer {
    pub address: IpAddr,
    /// Whether the connection is TLS (the token service's default realm is then `https`).
    pub tls: bool,
    /// Present only when the client sent a certificate that verified against
    /// `client_ca_bundle`.
    pub certificate: Option<Arc<CertificateNames>>,
    /// The last token the connection presented, and what it proved.
    pub last_token: Arc<LastToken>,
}

impl Peer {
    /// A peer on a plain TCP connection.
    pub fn plain(address: IpAddr) -> Self {
        Peer {
            address,
            tls: false,
            certificate: None,
            last_token: Arc::default(),
        }
    }
}
