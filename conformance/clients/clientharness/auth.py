"""Stowage configured for access control: password hashes made by the binary under test,
the TOML tables, and an HTTP client that logs in."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import requests

from clientharness.jwt import new_ec_key_pem
from clientharness.layout import MT_CONFIG, MT_MANIFEST, canonical_json, sha256_digest
from clientharness.registry import stowage_bin
from clientharness.tools import HTTP_TIMEOUT


def hash_password(password: str) -> str:
    """`stowage hash-password`, as an operator makes a hash for the configuration."""
    out = subprocess.run([str(stowage_bin()), "hash-password"], input=password.encode(),
                         capture_output=True, timeout=60, check=True)
    return out.stdout.decode().strip()


def toml_str(value: str) -> str:
    return json.dumps(value)


def identities_toml(users: dict[str, str]) -> str:
    return "".join(
        f"[auth.identity.{name}]\nusername = {toml_str(name)}\n"
        f"password = {toml_str(hash_password(password))}\n"
        for name, password in users.items()
    )


def token_service_toml(workdir: Path, ttl_secs: int = 300) -> tuple[str, bytes]:
    """`[auth.token_service]` with a fresh EC key; the TOML and the key's PEM."""
    key = new_ec_key_pem()
    path = Path(workdir) / f"token-key-{os.getpid()}-{id(key)}.pem"
    path.write_bytes(key)
    return (f"[auth.token_service]\nsigning_key = {toml_str(str(path))}\n"
            f"ttl_secs = {ttl_secs}\n", key)


def policy_toml(table: str, default: str, rules: list[str]) -> str:
    return f"[{table}]\ndefault = {toml_str(default)}\nrules = {json.dumps(rules)}\n"


class Client:
    """A registry client with fixed credentials (Basic, a bearer token, or none)."""

    def __init__(self, base_url: str, basic: tuple[str, str] | None = None,
                 token: str | None = None, verify=True, source_address: str | None = None):
        self.base_url = base_url
        self.session = requests.Session()
        self.session.verify = verify
        if basic:
            self.session.auth = basic
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return self.session.request(method, self.base_url + path, **kw)

    def push_blob(self, repo: str, data: bytes) -> requests.Response:
        digest = sha256_digest(data)
        return self.request("POST", f"/v2/{repo}/blobs/uploads/", params={"digest": digest},
                            data=data, headers={"Content-Type": "application/octet-stream"})

    def push_image(self, repo: str, tag: str, content: bytes = b"") -> tuple[requests.Response, str]:
        """A one-config image (its config holds `content`, so images differ); the manifest
        PUT's response and the manifest's digest."""
        config = canonical_json({"architecture": "amd64", "os": "linux",
                                 "stowage-test": content.decode() or "x"})
        r = self.push_blob(repo, config)
        if r.status_code != 201:
            return r, ""
        manifest = canonical_json({
            "schemaVersion": 2, "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": sha256_digest(config),
                       "size": len(config)},
            "layers": [],
        })
        r = self.request("PUT", f"/v2/{repo}/manifests/{tag}", data=manifest,
                         headers={"Content-Type": MT_MANIFEST})
        return r, sha256_digest(manifest)

    def get_manifest(self, repo: str, ref: str) -> requests.Response:
        return self.request("GET", f"/v2/{repo}/manifests/{ref}",
                            headers={"Accept": MT_MANIFEST})

    def token(self, scopes: list[str], service: str = "stowage") -> requests.Response:
        return self.request("GET", "/token", params=[("service", service)]
                            + [("scope", s) for s in scopes])


def error_code(response: requests.Response) -> str | None:
    try:
        return response.json()["errors"][0]["code"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
