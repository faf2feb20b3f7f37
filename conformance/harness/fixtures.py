"""The pytest fixtures every suite shares, loaded by each root's conftest
(`pytest_plugins = ["harness.fixtures"]`): server binaries, the S3 server and Redis, clusters
of Stowage replicas, and podman or buildah with storage of their own."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from harness.process import StartError
from harness.registry import Registry, fs_toml, server_binary, start_stowage
from harness.services import RedisServer, S3Server, s3_server
from harness.tools import ContainerTool

# Lines the tests want in the run's summary (sizes, timings), printed after the results.
SUMMARY: list[str] = []


def binary(env: str = "STOWAGE_BIN", name: str = "stowage") -> str:
    """A server binary (see `registry.server_binary`); fails the test if it is missing."""
    try:
        return server_binary(env, name)
    except StartError as e:
        error = str(e)
    pytest.fail(error, pytrace=False)


def replica_binaries() -> list[str]:
    """`STOWAGE_BIN`, and `STOWAGE_SMOL_BIN` when it is set: replicas alternate between them."""
    binaries = [binary()]
    if os.environ.get("STOWAGE_SMOL_BIN"):
        binaries.append(binary("STOWAGE_SMOL_BIN", "stowage-smol"))
    return binaries


def pytest_report_header(config):
    names = ["STOWAGE_BIN", "STOWAGE_SMOL_BIN", "STOWAGE_STORE", "STOWAGE_S3_SERVER"]
    return "harness: " + ", ".join(f"{n}={os.environ.get(n, '')}" for n in names)


def pytest_terminal_summary(terminalreporter):
    if SUMMARY:
        terminalreporter.section("figures")
        for line in SUMMARY:
            terminalreporter.write_line(line)


@pytest.fixture
def summary() -> Callable[[str], None]:
    """Adds a line to the run's summary."""
    return SUMMARY.append


@pytest.fixture(scope="session")
def stowage_bin() -> str:
    return binary()


@pytest.fixture(scope="session")
def smol_bin() -> str:
    return binary("STOWAGE_SMOL_BIN", "stowage-smol")


@pytest.fixture(scope="session")
def s3(tmp_path_factory) -> S3Server:
    """The S3 server `STOWAGE_S3_SERVER` names, one for the session; tests take fresh
    buckets of it."""
    server = s3_server(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture
def redis(tmp_path) -> RedisServer:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def private_tool(name: str, tmp_path: Path):
    """podman or buildah with storage of its own (a fixture's body); its runroot under /tmp,
    since podman refuses one longer than 50 characters. Fails (never skips) with a clear
    message when the tool cannot run here."""
    runroot = Path(tempfile.mkdtemp(prefix=f"{name[:3]}-run-", dir="/tmp"))
    try:
        tool = ContainerTool(name, tmp_path / f"{name}-root", runroot)
        tool("info", timeout=60)
    except (AssertionError, OSError) as e:
        shutil.rmtree(runroot, ignore_errors=True)
        raise AssertionError(f"{name} cannot run in this environment (rootful, vfs storage): {e}")
    yield tool
    shutil.rmtree(runroot, ignore_errors=True)


@pytest.fixture
def podman(tmp_path):
    """podman with storage of its own."""
    yield from private_tool("podman", tmp_path)


@pytest.fixture
def buildah(tmp_path):
    """buildah with storage of its own."""
    yield from private_tool("buildah", tmp_path)


def shared_store(kind: str, workdir: Path, request) -> tuple[str, str, Callable[[], list[str]]]:
    """One store every replica of a cluster uses: (its TOML, the table its `.redis` lock
    settings go under, what lists every key it holds)."""
    if kind == "fs":
        root = workdir / "store"

        def file_keys() -> list[str]:
            # os.walk passes over folders that vanish as it walks (a collection deleting
            # beside it), where Path.rglob raised FileNotFoundError.
            return [str(Path(folder, name).relative_to(root))
                    for folder, _, names in os.walk(root) for name in names]

        return fs_toml("blob_store", root), "blob_store.fs", file_keys
    s3: S3Server = request.getfixturevalue("s3")
    bucket = s3.new_bucket()

    def bucket_keys() -> list[str]:
        pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    return s3.store_toml("blob_store", bucket), "blob_store.s3", bucket_keys


@dataclass
class Cluster:
    replicas: list[Registry]
    redis: RedisServer
    prefix: str
    # Every key the shared store holds (files below the root, or the bucket's objects).
    store_keys: Callable[[], list[str]]
    killed: set[int] = field(default_factory=set)

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.replicas]

    def kill(self, index: int) -> None:
        self.killed.add(index)
        self.replicas[index].kill()

    def lock_keys(self) -> list[str]:
        return self.redis.keys(f"{self.prefix}lock:*")

    def forget_cache(self) -> None:
        """Empties the replicas' shared cache, so their next reads go to the store."""
        keys = self.redis.keys(f"{self.prefix}cache:*")
        assert keys, "the shared cache was never used"
        self.redis.cli("DEL", *keys)
        assert self.redis.keys(f"{self.prefix}cache:*") == []


@pytest.fixture
def start_cluster(tmp_path, redis, request):
    """Starts `count` replicas on one `kind` ("fs" or "s3") store with locks and cache in
    Redis; stops them after the test and fails it if one died unasked."""
    clusters: list[Cluster] = []

    def start(kind: str, count: int = 3, registry_toml: str = "", **lock_settings) -> Cluster:
        # The test's name without glob characters, so SCAN patterns on it stay literal.
        prefix = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name) + ":"
        store, lock_table, store_keys = shared_store(kind, tmp_path, request)
        stores = store + redis.lock_toml(lock_table, prefix, **lock_settings)
        extra = registry_toml + redis.cache_toml(prefix)
        binaries = replica_binaries()
        replicas = []
        cluster = Cluster(replicas, redis, prefix, store_keys)
        clusters.append(cluster)
        for i in range(count):
            replicas.append(start_stowage(tmp_path / f"replica-{i}", stores,
                                          binaries[i % len(binaries)], extra))
        return cluster

    yield start
    died = []
    for cluster in clusters:
        for i, replica in enumerate(cluster.replicas):
            if i not in cluster.killed and not replica.running():
                died.append(f"replica {i} died:\n{replica.log_tail()}")
            replica.stop()
    assert not died, "\n".join(died)
