"""Registry tokens made by the tests themselves (ES256 with a key the test also gives the
registry, or deliberately wrong ones), to show what the registry refuses."""

from __future__ import annotations

import base64
import json
import time

from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_ec_key_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def claims(subject: str, access: list[dict], service: str = "stowage",
           issuer: str = "stowage", lifetime: int = 300, start: int | None = None) -> dict:
    now = int(time.time()) if start is None else start
    return {"iss": issuer, "sub": subject, "aud": service, "iat": now, "nbf": now,
            "exp": now + lifetime, "jti": "test", "access": access}


def repository_access(name: str, *actions: str) -> list[dict]:
    return [{"type": "repository", "name": name, "actions": list(actions)}]


def sign_es256(key_pem: bytes, body: dict) -> str:
    key = serialization.load_pem_private_key(key_pem, password=None)
    head = b64url(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(body).encode())
    der = key.sign(f"{head}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{head}.{payload}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def unsigned(body: dict) -> str:
    """``alg: none``."""
    head = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{head}.{b64url(json.dumps(body).encode())}."


def hs256_with_public_key(key_pem: bytes, body: dict) -> str:
    """The classic confusion attack: HMAC keyed with the verifier's public key."""
    public = serialization.load_pem_private_key(key_pem, password=None).public_key()
    secret = public.public_bytes(serialization.Encoding.PEM,
                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(body).encode())
    mac = hmac.HMAC(secret, hashes.SHA256())
    mac.update(f"{head}.{payload}".encode())
    return f"{head}.{payload}.{b64url(mac.finalize())}"
