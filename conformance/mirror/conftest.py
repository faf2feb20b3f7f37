"""Fixtures for the mirror suite: an upstream CNCF Distribution (`docker-registry`) with
htpasswd or a token service, behind a counting proxy (upstream_proxy.py), images pushed to it
with skopeo, and Stowage mirrors of it on fs or S3 (moto), alone or as replicas sharing Redis.

Binaries: `STOWAGE_BIN` (default `<repo>/target/release/stowage`) and `STOWAGE_SMOL_BIN`
(default `<repo>/target/release/stowage-smol`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "live"))
sys.path.insert(0, str(HERE))

from oci_client import CONFIG_TYPE, LAYER_TYPE, MANIFEST_TYPE, Blob  # noqa: E402
from services import REPO, Distribution, RedisServer, Registry, fs_toml, s3_server  # noqa: E402
from token_server import TokenServer  # noqa: E402
from upstream_proxy import UpstreamProxy  # noqa: E402

USER, PASSWORD = "mirror-user", "mirror-secret"


def binary(name: str, env: str) -> str:
    path = os.environ.get(env) or str(REPO / "target/release" / name)
    if not os.access(path, os.X_OK):
        pytest.fail(f"server binary {path} is missing; cargo build --release", pytrace=False)
    return path


BINARIES = {"tokio": ("stowage", "STOWAGE_BIN"), "smol": ("stowage-smol", "STOWAGE_SMOL_BIN")}


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    server = s3_server(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


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
        self.registry = Distribution(workdir / "distribution", auth_yaml)
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
def start(tmp_path, s3):
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
            name, env = BINARIES[runtime if n % 2 == 0 else "smol"]
            registries.append(Registry(binary(name, env), work / f"replica-{n}", stores, toml))
        started.extend(registries)
        return registries if replicas > 1 else registries[0]

    yield launch
    for registry in started:
        registry.stop()
