//! Who is at the other end of a connection, as far as the transport can tell: the address it
//! connects from and, over TLS with client certificates, the certificate it proved it holds.

use std::net::IpAddr;
use std::sync::Arc;

/// The names a verified client certificate carries, visible to access policies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject's common names (CN).
    pub common_names: Vec<String>,
    /// The subject's organizations (O).
    pub organizations: Vec<String>,
}

/// One connection's peer; every request on the connection shares it.
#[derive(Debug, Clone)]
pub struct Peer {
    pub address: IpAddr,
    /// Whether the connection is TLS (the token service's default realm is then `https`).
    pub tls: bool,
    /// Present only when the client sent a certificate that verified against
    /// `client_ca_bundle`.
    pub certificate: Option<Arc<ClientCertificate>>,
}

impl Peer {
    /// A peer on a plain TCP connection.
    pub fn plain(address: IpAddr) -> Self {
        Peer {
            address,
            tls: false,
            certificate: None,
        }
    }
}
