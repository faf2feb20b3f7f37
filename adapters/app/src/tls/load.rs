//! Reading `[server.tls]`'s files into a rustls `ServerConfig` (ring only).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use super::TlsError;
use crate::config::{ClientAuth, TlsSettings};

/// The files one configuration is read from.
pub struct Files {
    certificate: PathBuf,
    key: PathBuf,
    client_ca: Option<(PathBuf, ClientAuth)>,
}

impl Files {
    pub fn new(settings: &TlsSettings) -> Files {
        Files {
            certificate: settings.server_certificate_bundle.clone(),
            key: settings.server_private_key.clone(),
            client_ca: settings
                .client_verification()
                .map(|(bundle, auth)| (bundle.to_owned(), auth)),
        }
    }

    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(&self.certificate), Some(&self.key)]
            .into_iter()
            .chain([self.client_ca.as_ref().map(|(bundle, _)| bundle)])
            .flatten()
            .map(PathBuf::as_path)
    }

    /// A configuration from the files as they are now.
    pub fn load(&self) -> Result<ServerConfig, TlsError> {
        // Explicit, not the process default: no other provider can be picked by accident.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = certificates(&self.certificate, "server_certificate_bundle")?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                file: self.certificate.clone(),
            });
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|source| TlsError::Pem {
            key: "server_private_key",
            file: self.key.clone(),
            source,
        })?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some((bundle, auth)) => {
                builder.with_client_cert_verifier(client_verifier(bundle, *auth, provider)?)
            }
        };
        // Checks that the key is the certificate's.
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|source| TlsError::Key {
                file: self.key.clone(),
                certificate: self.certificate.clone(),
                source,
            })?;
        // The servers speak HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

fn certificates(file: &Path, key: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem {
        key,
        file: file.to_owned(),
        source,
    };
    CertificateDer::pem_file_iter(file)
        .map_err(pem)?
        .collect::<Result<_, _>>()
        .map_err(pem)
}

fn client_verifier(
    bundle: &Path,
    auth: ClientAuth,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(bundle, "client_ca_bundle")? {
        roots
            .add(certificate)
            .map_err(|source| TlsError::ClientCa {
                file: bundle.to_owned(),
                source,
            })?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = match auth {
        ClientAuth::Optional => builder.allow_unauthenticated(),
        ClientAuth::Required => builder,
    };
    builder.build().map_err(|source| TlsError::ClientVerifier {
        file: bundle.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/tls/testdata")
            .join(name)
    }

    fn files(certificate: &str, key: &str, client_ca: Option<&str>) -> Files {
        Files::new(&TlsSettings {
            server_certificate_bundle: testdata(certificate),
            server_private_key: testdata(key),
            client_ca_bundle: client_ca.map(testdata),
            client_auth: None,
        })
    }

    #[test]
    fn loads_a_certificate_its_key_and_client_cas() {
        let config = files("server.crt", "server.key", Some("ca.crt"))
            .load()
            .unwrap();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
        assert_eq!(
            files("server.crt", "server.key", None).paths().count(),
            2,
            "no client CA bundle to watch"
        );
    }

    #[test]
    fn refuses_a_key_that_is_not_the_certificates() {
        let err = files("server.crt", "other.key", None).load().unwrap_err();
        assert!(matches!(err, TlsError::Key { .. }), "{err}");
        assert!(err.to_string().contains("other.key"), "{err}");
    }

    #[test]
    fn names_the_key_and_file_that_cannot_be_read() {
        let err = files("missing.crt", "server.key", None).load().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("server_certificate_bundle") && text.contains("missing.crt"));
        // A key file holds no certificate.
        let err = files("server.key", "server.key", None).load().unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        let err = files("server.crt", "server.key", Some("nothing.crt"))
            .load()
            .unwrap_err();
        assert!(err.to_string().contains("client_ca_bundle"), "{err}");
    }
}
