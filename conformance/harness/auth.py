"""Stowage configured for access control: password hashes made by the binary under test,
the TOML tables, and a small image to push as a user."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import requests

from harness.jwt import new_ec_key_pem
from harness.oci import Blob, Client, Image, canonical_json
from harness.registry import server_binary, toml_str


def hash_password(password: str) -> str:
    """`stowage hash-password`, as an operator makes a hash for the configuration."""
    out = subprocess.run([server_binary(), "hash-password"], input=password.encode(),
                         capture_output=True, timeout=60, check=True)
    return out.stdout.decode().strip()


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


def push_config_image(client: Client, repo: str, tag: str,
                      content: bytes = b"") -> tuple[requests.Response, str]:
    """Pushes a one-config image (its config holds `content`, so images differ); the
    response that failed or the manifest PUT's, and the manifest's digest ("" if a blob push
    failed)."""
    config = Blob(canonical_json({"architecture": "amd64", "os": "linux",
                                  "stowage-test": content.decode() or "x"}))
    image = Image(config)
    r = client.push_blob(repo, config)
    if r.status_code != 201:
        return r, ""
    return client.push_manifest(repo, tag, image.manifest), image.digest
