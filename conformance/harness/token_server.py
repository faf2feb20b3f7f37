"""A Docker token service for tests, as CNCF Distribution's `auth: token:` expects one: `GET
/token?service=…&scope=…` with Basic credentials answers `{"token": …}`, a JWT signed with ES256
whose `x5c` header carries a self-signed certificate that Distribution is given as its root
bundle (or, given a `signer` and its chain, that certificate and its intermediates, the root
bundle then being the chain's root). Authenticated users get every action they ask for, anonymous ones none. Each request's
scope set is recorded, so a test can see how many tokens a client asked for."""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

ISSUER = "stowage-test-token-issuer"
SERVICE = "stowage-test-registry"
TTL_SECS = 300


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def self_signed(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def parse_scope(scope: str) -> tuple[str, str, list[str]] | None:
    """`type:name:actions`; the name may itself hold colons (a registry host with a port)."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if not kind or not name:
        return None
    return kind, name, [a for a in actions.split(",") if a]


class TokenServer:
    """Serves `/token` on a free loopback port from a thread of this process."""

    def __init__(self, workdir: Path, username: str, password: str,
                 signer: tuple[ec.EllipticCurvePrivateKey, list[x509.Certificate]] | None = None):
        if signer:
            self.key, self.chain = signer[0], signer[1][:-1]
            root = signer[1][-1]
        else:
            self.key = ec.generate_private_key(ec.SECP256R1())
            self.chain = [self_signed(self.key)]
            root = self.chain[0]
        self.cert_bundle = workdir / "token-root.pem"
        self.cert_bundle.write_bytes(root.public_bytes(serialization.Encoding.PEM))
        self.username = username
        self.credentials = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        # Scope sets asked for, one entry per token request.
        self.requests: list[tuple[str, ...]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def token(self, subject: str, scopes: list[str]) -> str:
        now = int(time.time())
        access = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed and subject:
                kind, name, actions = parsed
                access.append({"type": kind, "name": name, "actions": actions})
        x5c = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
               for c in self.chain]
        header = {"typ": "JWT", "alg": "ES256", "x5c": x5c}
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + TTL_SECS,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = ".".join(
            b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        # JWS wants ES256 signatures as the raw 32-byte r and s, not DER.
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _handler(self):
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                if url.path != "/token" or query.get("service") != [SERVICE]:
                    return self._reply(404, {"error": "unknown service"})
                authorization = self.headers.get("Authorization")
                if authorization is not None and authorization != service.credentials:
                    return self._reply(401, {"error": "bad credentials"})
                scopes = query.get("scope", [])
                service.requests.append(tuple(sorted(scopes)))
                subject = service.username if authorization else ""
                token = service.token(subject, scopes)
                self._reply(200, {"token": token, "expires_in": TTL_SECS})

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        return Handler

    def distribution_yaml(self) -> str:
        """The `auth:` section that makes Distribution trust this service's tokens."""
        return (
            "auth:\n"
            "  token:\n"
            f"    realm: {json.dumps(self.realm)}\n"
            f"    service: {SERVICE}\n"
            f"    issuer: {ISSUER}\n"
            f"    rootcertbundle: {json.dumps(str(self.cert_bundle))}\n"
        )
