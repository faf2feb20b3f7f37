"""Fixtures for the S3 suite: one S3 server (moto) for the session, a fault-injecting proxy
in front of it per test, and stowage servers that are stopped after each test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "live")]

from faultproxy import FaultProxy  # noqa: E402
from services import REPO, Registry, s3_server  # noqa: E402

# Figures the tests measured, printed after the summary.
FIGURES: list[str] = []


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("S3 figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def stowage_bin() -> str:
    binary = os.environ.get("STOWAGE_BIN") or str(REPO / "target" / "release" / "stowage")
    assert Path(binary).is_file(), f"no stowage binary at {binary}: build it first"
    return binary


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    server = s3_server(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


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
        registry = Registry(self.binary, workdir, stores_toml, extra_toml)
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


@pytest.fixture
def figures() -> list[str]:
    return FIGURES
