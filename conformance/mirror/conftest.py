"""Fixtures for the mirror suite: an upstream CNCF Distribution (`docker-registry`) with
htpasswd or a token service, behind a counting proxy (upstream_proxy.py), images pushed to it
with skopeo, and Stowage mirrors of it on fs or S3 (moto), alone or as replicas sharing Redis.

Binaries: `STOWAGE_BIN` (default `<repo>/target/release/stowage`) and `STOWAGE_SMOL_BIN`
(default `<repo>/target/release/stowage-smol`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness.oci import CONFIG_TYPE, LAYER_TYPE, MANIFEST_TYPE, Blob
from harness.registry import fs_toml, start_stowage
from harness.services import start_distribution
from harness.token_server import TokenServer
from upstream_proxy import UpstreamProxy

pytest_plugins = ["harness.fixtures"]

USER, PASSWORD = "mirror-user", "mirror-secret"
# The fixture naming each runtime's server binary.
BINARIES = {"tokio": "stowage_bin", "smol": "smol_bin"}


class Upstream:
    """Distribution behind the counting proxy; `url` is the proxy's."""

    def __init__(self, workdir: Path, auth: str):
        self.token_server = None
        workdir.mkdir(parents=True, exist_ok=True)
        if auth == "htpasswd":
            import bcrypt

            htpasswd = workdir / "htpasswd"
            hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(5)).decode()
            htpasswd.write_text(f"{USER}:{hashed}\n")
            auth_yaml = (
                "auth:\n  htpasswd:\n    realm: upstream\n"
                f"    path: {json.dumps(str(htpasswd))}\n"
            )
        else:
            self.token_server = TokenServer(workdir, USER, PASSWORD)
            auth_yaml = self.token_server.distribution_yaml()
        self.registry = start_distribution(workdir, auth_yaml=auth_yaml)
        self.proxy = UpstreamProxy(self.registry.url)
        self.url = self.proxy.url
        self.workdir = workdir
        self.pushed = 0

    def push(self, repository: str, tag: str, layers: list[bytes]) -> dict:
        """Pushes an image with skopeo from an OCI layout; returns its manifest."""
        self.pushed += 1
        layout = self.workdir / f"layout-{self.pushed}"
        blobs = layout / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        layer_blobs = [Blob(data) for data in layers]
        # Uncompressed layers: their diff ids are their digests.
        rootfs = {"type": "layers", "diff_ids": [b.digest for b in layer_blobs]}
        config = Blob(json.dumps(
            {"architecture": "amd64", "os": "linux", "rootfs": rootfs, "n": self.pushed}).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": config.descriptor(CONFIG_TYPE),
            "layers": [b.descriptor(LAYER_TYPE) for b in layer_blobs],
        }
        manifest_blob = Blob(json.dumps(manifest).encode())
        for blob in [config, *layer_blobs, manifest_blob]:
            (blobs / blob.digest.split(":")[1]).write_bytes(blob.data)
        (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        descriptor = manifest_blob.descriptor(MANIFEST_TYPE)
        descriptor["annotations"] = {"org.opencontainers.image.ref.name": tag}
        (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [descriptor]}))
        target = f"docker://127.0.0.1:{self.registry.port}/{repository}:{tag}"
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests",
             "--dest-creds", f"{USER}:{PASSWORD}", f"oci:{layout}:{tag}", target],
            check=True, capture_output=True, timeout=120,
        )
        manifest["digest"] = manifest_blob.digest
        return manifest

    def stop(self) -> None:
        self.proxy.stop()
        self.registry.stop()
        if self.token_server:
            self.token_server.stop()


@pytest.fixture
def upstream(tmp_path):
    up = Upstream(tmp_path / "upstream", "htpasswd")
    yield up
    up.stop()


@pytest.fixture
def token_upstream(tmp_path):
    up = Upstream(tmp_path / "token-upstream", "token")
    yield up
    up.stop()


def mirror_toml(upstream: Upstream, prefix: str = "hub", ttl: int = 300, extra: str = "") -> str:
    return (
        f'[repository."{prefix}"]\ntag_ttl_secs = {ttl}\n{extra}'
        f'[[repository."{prefix}".upstream]]\nurl = "{upstream.url}"\n'
        f'username = "{USER}"\npassword = "{PASSWORD}"\ntimeout_secs = 5\n'
    )


@pytest.fixture
def start(tmp_path, s3, request):
    """Starts mirrors: `start(toml, runtime=..., store=..., replicas=..., redis=...)`."""
    started = []

    def launch(toml: str, runtime: str = "tokio", store: str = "fs", replicas: int = 1, redis=None):
        work = tmp_path / f"mirror-{len(started)}"
        if store == "fs":
            stores = fs_toml("blob_store", work / "data")
        else:
            stores = s3.store_toml("blob_store", s3.new_bucket())
        if redis is not None:
            table = "blob_store.fs" if store == "fs" else "blob_store.s3"
            stores += redis.lock_toml(table, prefix=work.name) + redis.cache_toml(prefix=work.name)
        registries = []
        for n in range(replicas):
            binary = request.getfixturevalue(BINARIES[runtime if n % 2 == 0 else "smol"])
            registries.append(start_stowage(work / f"replica-{n}", stores, binary, toml))
        started.extend(registries)
        return registries if replicas > 1 else registries[0]

    yield launch
    for registry in started:
        registry.stop()
