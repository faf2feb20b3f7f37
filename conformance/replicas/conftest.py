"""Fixtures for the multi-replica suite: Redis, moto S3, and clusters of stowage replicas on
one shared store with Redis locks and cache.

Binaries: `STOWAGE_BIN` (default `<repo>/target/release/stowage`); when `STOWAGE_SMOL_BIN`
is set, replicas alternate between the two."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "live"))
sys.path.insert(0, str(HERE))

from services import (  # noqa: E402
    REPO,
    RedisServer,
    Registry,
    S3Server,
    s3_server,
    fs_toml,
    remove,
    scratch_dir,
)

# Lines the tests want in the run's summary (sizes, timings), printed after the results.
SUMMARY: list[str] = []


def replica_binaries() -> list[str]:
    binaries = [os.environ.get("STOWAGE_BIN") or str(REPO / "target/release/stowage")]
    if os.environ.get("STOWAGE_SMOL_BIN"):
        binaries.append(os.environ["STOWAGE_SMOL_BIN"])
    for binary in binaries:
        if not os.access(binary, os.X_OK):
            pytest.fail(f"server binary {binary} is missing; cargo build --release", pytrace=False)
    return binaries


def pytest_report_header(config):
    names = ["STOWAGE_BIN", "STOWAGE_SMOL_BIN"]
    return "replica binaries: " + ", ".join(f"{n}={os.environ.get(n, '')}" for n in names)


def pytest_terminal_summary(terminalreporter):
    if SUMMARY:
        terminalreporter.section("replicas")
        for line in SUMMARY:
            terminalreporter.write_line(line)


@pytest.fixture
def summary():
    return SUMMARY.append


@pytest.fixture(scope="session")
def s3():
    workdir = scratch_dir("stowage-replicas-s3-")
    server = s3_server(workdir)
    yield server
    server.stop()
    remove(workdir)


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def shared_store(kind: str, workdir: Path, request) -> tuple[str, str, Callable[[], list[str]]]:
    """One store every replica of a cluster uses: (its TOML, the table its `.redis` lock
    settings go under, what lists every key it holds)."""
    if kind == "fs":
        root = workdir / "store"
        keys = lambda: [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]  # noqa: E731
        return fs_toml("blob_store", root), "blob_store.fs", keys
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
            binary = binaries[i % len(binaries)]
            replicas.append(Registry(binary, tmp_path / f"replica-{i}", stores, extra))
        return cluster

    yield start
    died = []
    for cluster in clusters:
        for i, replica in enumerate(cluster.replicas):
            if i not in cluster.killed and not replica.running():
                died.append(f"replica {i} died:\n{replica.process.tail()}")
            replica.stop()
    assert not died, "\n".join(died)
