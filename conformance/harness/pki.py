"""A throwaway PKI for TLS tests: CAs, server certificates for 127.0.0.1 and localhost, and
client certificates, written as PEM files (``cryptography``; EC P-256 keys)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.process import environment


@dataclass
class Issued:
    """A certificate and its key, in memory and as PEM bytes."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def write(self, cert_path: Path, key_path: Path) -> tuple[Path, Path]:
        """Writes the certificate and key over whatever the paths hold (in place)."""
        Path(cert_path).write_bytes(self.cert_pem)
        Path(key_path).write_bytes(self.key_pem)
        return Path(cert_path), Path(key_path)


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    return x509.Name(attributes + [x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return builder.not_valid_before(now - datetime.timedelta(hours=1)) \
        .not_valid_after(now + datetime.timedelta(days=2))


class Ca:
    """A CA that issues server and client certificates: self-signed, or an intermediate
    issued by `parent`."""

    def __init__(self, common_name: str, parent: "Ca | None" = None):
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = _name(common_name)
        issuer = parent.cert.subject if parent else name
        signer = parent.key if parent else self.key
        builder = _validity(x509.CertificateBuilder()) \
            .subject_name(name).issuer_name(issuer) \
            .public_key(self.key.public_key()) \
            .serial_number(x509.random_serial_number()) \
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True) \
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True) \
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                           critical=False)
        if parent:
            builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                parent.key.public_key()), critical=False)
        self.cert = builder.sign(signer, hashes.SHA256())

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def _issue(self, subject: x509.Name, usage, serial: int | None,
               sans: list[x509.GeneralName] | None) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = _validity(x509.CertificateBuilder()) \
            .subject_name(subject).issuer_name(self.cert.subject) \
            .public_key(key.public_key()) \
            .serial_number(serial or x509.random_serial_number()) \
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True) \
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False) \
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return Issued(builder.sign(self.key, hashes.SHA256()), key)

    def server(self, common_name: str = "stowage", serial: int | None = None) -> Issued:
        """A server certificate for 127.0.0.1 and localhost."""
        sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        return self._issue(_name(common_name), ExtendedKeyUsageOID.SERVER_AUTH, serial, sans)

    def client(self, common_name: str, organizations: tuple[str, ...] = ()) -> Issued:
        return self._issue(_name(common_name, organizations), ExtendedKeyUsageOID.CLIENT_AUTH,
                           None, None)


def trusting(ca_file: str | None) -> dict:
    """An environment for a server whose system CA bundle is `ca_file` (`SSL_CERT_FILE`,
    which rustls' native roots read), or, with None, the system's own."""
    return environment("SSL_CERT_", **({"SSL_CERT_FILE": ca_file} if ca_file else {}))
