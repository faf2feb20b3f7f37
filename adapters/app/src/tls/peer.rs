//! The connection's [`Peer`] once its TLS handshake is done. rustls has verified the client
//! certificate (if one was sent) but does not parse its subject; x509-parser does.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::ServerConnection;
use rustls::pki_types::CertificateDer;
use stowage_core::access::CertificateNames;
use stowage_http::Peer;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::AttributeTypeAndValue;

/// The peer of a TLS connection whose handshake is complete.
pub fn tls_peer(address: IpAddr, connection: &ServerConnection) -> Peer {
    let certificate = connection
        .peer_certificates()
        .and_then(<[_]>::first)
        .and_then(subject_names)
        .map(Arc::new);
    Peer {
        address,
        tls: true,
        certificate,
        last_token: Arc::default(),
    }
}

/// The subject's common names and organizations. A certificate that webpki accepted but
/// x509-parser cannot read counts as none: the client is then anonymous, never more.
fn subject_names(certificate: &CertificateDer<'_>) -> Option<CertificateNames> {
    let (_, parsed) = match X509Certificate::from_der(certificate) {
        Ok(parsed) => parsed,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the subject of a verified client certificate");
            return None;
        }
    };
    let subject = parsed.subject();
    Some(CertificateNames {
        common_names: strings(subject.iter_common_name()),
        organizations: strings(subject.iter_organization()),
    })
}

/// The values that are text (UTF8String, PrintableString, IA5String, NumericString); other
/// encodings (BMPString, TeletexString) are left out.
fn strings<'a>(values: impl Iterator<Item = &'a AttributeTypeAndValue<'a>>) -> Vec<String> {
    values
        .filter_map(|value| value.as_str().ok())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;

    use super::*;

    #[test]
    fn reads_the_subjects_common_names_and_organizations() {
        let pem = include_bytes!("testdata/client.crt");
        let certificate = CertificateDer::from_pem_slice(pem).unwrap();
        assert_eq!(
            subject_names(&certificate),
            Some(CertificateNames {
                common_names: vec!["alice".into()],
                organizations: vec!["team-a".into(), "team-b".into()],
            })
        );
    }

    #[test]
    fn a_certificate_it_cannot_read_names_no_one() {
        assert_eq!(subject_names(&CertificateDer::from(vec![0x30, 0x03])), None);
    }
}
