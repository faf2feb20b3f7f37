//! TLS for both servers: `[server.tls]`'s files become a rustls `ServerConfig`, built again
//! whenever one of them changes, and a verified client certificate's names become the
//! connection's [`Peer`](stowage_http::Peer) ([`tls_peer`]).
//!
//! A reload swaps the whole `ServerConfig`, which the accept loop reads once per connection
//! ([`Tls::config`]), rather than only the certificate behind a `ResolvesServerCert`: the
//! client CA bundle lives in the config's verifier, which rustls fixes when the config is
//! built, so one swap covers the certificate, its key and the client CAs alike, and every
//! connection is served by one consistent set of them. A new config also comes with a new
//! session cache, so no session begun before a change (say, with a CA since removed) is
//! resumed after it. An open connection keeps the config it was accepted with until it ends.

mod load;
mod peer;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;

use crate::config::TlsSettings;
use load::Files;

pub use peer::tls_peer;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server.tls.{key} {}: {source}", file.display())]
    Pem {
        key: &'static str,
        file: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("server.tls.server_certificate_bundle {}: holds no certificate", file.display())]
    NoCertificate { file: PathBuf },
    #[error(
        "server.tls.server_private_key {}: does not go with the certificate in {}: {source}",
        file.display(),
        certificate.display()
    )]
    Key {
        file: PathBuf,
        certificate: PathBuf,
        source: rustls::Error,
    },
    #[error("server.tls.client_ca_bundle {}: {source}", file.display())]
    ClientCa {
        file: PathBuf,
        source: rustls::Error,
    },
    #[error("server.tls.client_ca_bundle {}: {source}", file.display())]
    ClientVerifier {
        file: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
    #[error("cannot set up TLS: {0}")]
    Rustls(rustls::Error),
    #[error("cannot start watching the TLS files: {0}")]
    Watch(std::io::Error),
}

/// The current TLS configuration, kept up to date with the files by a thread of its own
/// (which ends once every `Tls` handle is dropped).
#[derive(Clone)]
pub struct Tls {
    current: Arc<ArcSwap<ServerConfig>>,
}

impl Tls {
    /// Reads the files (any error stops startup) and starts watching them.
    pub fn start(settings: &TlsSettings) -> Result<Tls, TlsError> {
        let files = Files::new(settings);
        let stamps = watch::stamps(&files);
        let current = Arc::new(ArcSwap::from_pointee(files.load()?));
        watch::spawn(files, stamps, Arc::downgrade(&current)).map_err(TlsError::Watch)?;
        Ok(Tls { current })
    }

    /// The configuration a connection accepted now is served with.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_changed_file_is_reloaded_and_a_broken_one_is_not() {
        let dir = std::env::temp_dir().join(format!("stowage-tls-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tls/testdata");
        let (certificate, key) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::copy(testdata.join("server.crt"), &certificate).unwrap();
        std::fs::copy(testdata.join("server.key"), &key).unwrap();
        let tls = Tls::start(&TlsSettings {
            server_certificate_bundle: certificate.clone(),
            server_private_key: key,
            client_ca_bundle: None,
            client_auth: None,
        })
        .unwrap();
        let first = tls.config();

        std::fs::write(&certificate, "-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
        std::thread::sleep(Duration::from_millis(2500));
        assert!(Arc::ptr_eq(&first, &tls.config()), "a broken file was used");

        std::fs::copy(testdata.join("server.crt"), &certificate).unwrap();
        std::thread::sleep(Duration::from_millis(2500));
        assert!(
            !Arc::ptr_eq(&first, &tls.config()),
            "the fixed file was not read"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
