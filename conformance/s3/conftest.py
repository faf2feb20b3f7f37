"""Fixtures for the S3 suite: the shared ones (one S3 server for the session), a
fault-injecting proxy in front of it per test, and stowage servers stopped after each test."""

from __future__ import annotations

from pathlib import Path

import pytest

from faultproxy import FaultProxy
from harness.registry import Registry, start_stowage

pytest_plugins = ["harness.fixtures"]


@pytest.fixture
def proxy(s3):
    fault_proxy = FaultProxy(s3.endpoint)
    yield fault_proxy
    fault_proxy.stop()


class Registries:
    """Starts stowage servers for one test and stops them all after it."""

    def __init__(self, binary: str, workdir: Path):
        self.binary = binary
        self.workdir = workdir
        self.started: list[Registry] = []

    def start(self, stores_toml: str, extra_toml: str = "") -> Registry:
        workdir = self.workdir / f"registry-{len(self.started)}"
        registry = start_stowage(workdir, stores_toml, self.binary, extra_toml)
        self.started.append(registry)
        return registry

    def stop_all(self) -> None:
        for registry in self.started:
            registry.stop()


@pytest.fixture
def registries(stowage_bin, tmp_path):
    started = Registries(stowage_bin, tmp_path)
    yield started
    started.stop_all()
