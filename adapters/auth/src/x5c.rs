//! Tokens that carry their signer's certificate chain in an `x5c` header, as CNCF
//! Distribution's token servers may sign them. The chain's first certificate signs the token.
//! It is trusted when it is itself one of the `rootcertbundle`'s certificates, or when the
//! chain leads to one of them with every certificate valid now; webpki checks the chain as
//! it checks a TLS server's (an extended key usage, if present, must allow server auth, as
//! Go's verifier in Distribution requires).

use jsonwebtoken::DecodingKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::jwks::{KeysError, certificate_key};

/// A token server sends its certificate and an intermediate or two; longer chains are
/// refused without being looked at.
const MAX_CHAIN: usize = 8;

/// The certificates of a `rootcertbundle`, as roots of `x5c` chains.
pub struct Roots {
    certificates: Vec<CertificateDer<'static>>,
}

impl Roots {
    pub fn from_pem(pem: &[u8]) -> Result<Roots, KeysError> {
        let certificates = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| KeysError::Certificate {
                index: 0,
                reason: e.to_string(),
            })?;
        if certificates.is_empty() {
            return Err(KeysError::Empty);
        }
        Ok(Roots { certificates })
    }

    /// The key that signed a token whose header names `chain` (DER, the signer first), if
    /// the chain is trusted at `now`; why not otherwise.
    pub fn signer(&self, chain: &[Vec<u8>], now: UnixTime) -> Result<DecodingKey, String> {
        let Some((first, intermediates)) = chain.split_first() else {
            return Err("the x5c chain is empty".to_owned());
        };
        if chain.len() > MAX_CHAIN {
            return Err(format!(
                "the x5c chain holds {} certificates; at most {MAX_CHAIN} are read",
                chain.len()
            ));
        }
        let configured = self.certificates.iter().any(|c| c.as_ref() == first);
        if !configured {
            let anchors = self
                .certificates
                .iter()
                .map(|c| webpki::anchor_from_trusted_cert(c))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("a rootcertbundle certificate is unusable as a root: {e}"))?;
            let signer = CertificateDer::from(first.as_slice());
            let signer = webpki::EndEntityCert::try_from(&signer)
                .map_err(|e| format!("the x5c signer is not a certificate: {e}"))?;
            let intermediates: Vec<CertificateDer<'_>> = intermediates
                .iter()
                .map(|c| CertificateDer::from(c.as_slice()))
                .collect();
            signer
                .verify_for_usage(
                    webpki::ALL_VERIFICATION_ALGS,
                    &anchors,
                    &intermediates,
                    now,
                    webpki::KeyUsage::server_auth(),
                    None,
                    None,
                )
                .map_err(|e| format!("the x5c chain does not lead to the rootcertbundle: {e}"))?;
        }
        certificate_key(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_chains_it_cannot_read_before_looking_at_them() {
        let roots = Roots {
            certificates: vec![CertificateDer::from(vec![0x30, 0x00])],
        };
        let now = UnixTime::now();
        assert!(roots.signer(&[], now).is_err());
        assert!(roots.signer(&[b"not a certificate".to_vec()], now).is_err());
        let long = vec![vec![0x30, 0x00]; MAX_CHAIN + 1];
        let refused = roots.signer(&long, now).err().unwrap_or_default();
        assert!(refused.contains("at most"), "{refused}");
        assert!(Roots::from_pem(b"").is_err());
    }
}
