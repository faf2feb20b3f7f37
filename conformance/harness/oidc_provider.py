"""A small OpenID Connect provider of the tests' own: a discovery document, a JWKS whose
keys can rotate, and GitHub Actions-shaped ID tokens signed RS256 or ES256. It counts every
request by path, can be taken down and brought back on its port, and can misbehave the ways
a registry must refuse (a redirecting discovery document, keys on another host, a huge
JWKS)."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from harness.process import free_port


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def int_bytes(n: int, length: int | None = None) -> bytes:
    return n.to_bytes(length or (n.bit_length() + 7) // 8, "big")


@dataclass
class Key:
    kid: str
    algorithm: str
    private: object

    @staticmethod
    def new(algorithm: str) -> "Key":
        if algorithm == "RS256":
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            private = ec.generate_private_key(ec.SECP256R1())
        return Key(f"{algorithm.lower()}-{secrets.token_hex(4)}", algorithm, private)

    def jwk(self) -> dict:
        numbers = self.private.public_key().public_numbers()
        common = {"kid": self.kid, "use": "sig", "alg": self.algorithm}
        if self.algorithm == "RS256":
            return {"kty": "RSA", "n": b64url(int_bytes(numbers.n)), "e": b64url(int_bytes(numbers.e)), **common}
        return {"kty": "EC", "crv": "P-256", "x": b64url(int_bytes(numbers.x, 32)),
                "y": b64url(int_bytes(numbers.y, 32)), **common}


class OidcProvider:
    """Serves on 127.0.0.1; its issuer is its own URL."""

    # What the discovery document does: "normal", "redirect" (answers 302 elsewhere),
    # "other-host" (names a jwks_uri on localhost instead of 127.0.0.1), "huge" (a JWKS
    # past the registry's size limit).
    mode = "normal"

    def __init__(self, audience: str = "stowage-test"):
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.audience = audience
        self.keys = [Key.new("RS256"), Key.new("ES256")]
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.server = None
        self.start()

    # --- the server -------------------------------------------------------------------
    def start(self) -> None:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                with provider._lock:
                    provider.requests[self.path] += 1
                status, headers, body = provider.answer(self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Down: the port refuses connections."""
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str) -> tuple[int, dict, bytes]:
        as_json = {"Content-Type": "application/json"}
        if path == "/.well-known/openid-configuration":
            if self.mode == "redirect":
                return 302, {"Location": f"{self.issuer}/moved/openid-configuration"}, b""
            host = f"http://localhost:{self.port}" if self.mode == "other-host" else self.issuer
            document = {"issuer": self.issuer, "jwks_uri": f"{host}/jwks"}
            return 200, as_json, json.dumps(document).encode()
        if path == "/jwks":
            document = {"keys": [key.jwk() for key in self.keys]}
            if self.mode == "huge":
                document["padding"] = "x" * (100 * 1024)
            return 200, as_json, json.dumps(document).encode()
        return 404, {}, b""

    # --- keys and tokens --------------------------------------------------------------
    def rotate(self, algorithm: str = "ES256") -> Key:
        """Publishes a new key next to the old ones (as providers do before signing with it)."""
        key = Key.new(algorithm)
        self.keys.append(key)
        return key

    def jwks_fetches(self) -> int:
        with self._lock:
            return self.requests["/jwks"]

    def token(self, key: Key | None = None, kid: str | None = None, lifetime: int = 300,
              **claims) -> str:
        """A GitHub Actions-shaped ID token for `org/app` on main; `claims` override."""
        key = key or self.keys[0]
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": "repo:org/app:ref:refs/heads/main",
            "repository": "org/app",
            "repository_owner": "org",
            "ref": "refs/heads/main",
            "actor": "octocat",
            "jti": secrets.token_hex(8),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            **claims,
        }
        return jwt.encode(payload, key.private, algorithm=key.algorithm,
                          headers={"kid": kid or key.kid})
