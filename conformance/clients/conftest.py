"""Fixtures for the real-client conformance suite.

The registry under test is chosen by ``REGISTRY_UNDER_TEST``:
``stowage`` (default; binary from ``STOWAGE_BIN`` or
``<repo>/target/release/stowage``) or ``distribution`` (Debian's
``docker-registry``, CNCF Distribution 2.8, for validating the suite itself).
"""

from __future__ import annotations

import re
import secrets
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clientharness import registry as regmod  # noqa: E402
from clientharness.layout import OciLayout  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "needs_referrers: uses the OCI 1.1 referrers API; expected to fail "
        "(xfail) on Distribution 2.8, which predates it",
    )


def pytest_report_header(config):
    try:
        kind = regmod.kind_under_test()
    except regmod.RegistryStartError as e:
        return f"registry under test: INVALID ({e})"
    if kind == regmod.STOWAGE:
        import os
        return f"registry under test: stowage ({os.environ.get('STOWAGE_BIN') or regmod.DEFAULT_STOWAGE_BIN})"
    return "registry under test: distribution (docker-registry)"


def pytest_collection_modifyitems(config, items):
    try:
        kind = regmod.kind_under_test()
    except regmod.RegistryStartError:
        return
    if kind != regmod.DISTRIBUTION:
        return
    for item in items:
        if item.get_closest_marker("needs_referrers"):
            item.add_marker(pytest.mark.xfail(
                reason="Distribution 2.8 has no OCI 1.1 referrers API", strict=False))


class Registries:
    """Starts registries for a test and guarantees they are stopped after it."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.started: list[regmod.Registry] = []

    def start(self, kind: str, storage: Path) -> regmod.Registry:
        error = None
        try:
            reg = regmod.start_registry(kind, storage, self.workdir)
        except regmod.RegistryStartError as e:
            error = str(e)
        if error:
            pytest.fail(error, pytrace=False)
        self.started.append(reg)
        return reg

    def restart(self, reg: regmod.Registry) -> regmod.Registry:
        return self.start(reg.kind, reg.storage)

    def stop_all(self) -> None:
        for reg in self.started:
            reg.stop(timeout=10)


@pytest.fixture(scope="session")
def registry_kind() -> str:
    try:
        return regmod.kind_under_test()
    except regmod.RegistryStartError as e:
        error = str(e)
    pytest.fail(error, pytrace=False)


@pytest.fixture(scope="session")
def registry(tmp_path_factory, registry_kind):
    """One registry under test shared by the suite (each test uses its own
    repository)."""
    base = tmp_path_factory.mktemp("shared-registry")
    regs = Registries(base)
    reg = regs.start(registry_kind, base / "storage")
    yield reg
    still_running = reg.running()
    regs.stop_all()
    assert still_running, f"registry died during the session:\n{reg.log_tail()}"


@pytest.fixture
def registries(tmp_path):
    """Factory for tests that need their own registry processes."""
    regs = Registries(tmp_path / "registries")
    regs.workdir.mkdir()
    yield regs
    regs.stop_all()


@pytest.fixture
def repo(request) -> str:
    """A repository name unique to this test (and run)."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60].strip("-")
    return f"conformance/{name}-{secrets.token_hex(3)}"


@pytest.fixture
def layout(tmp_path) -> OciLayout:
    """An empty OCI layout to build test images in."""
    return OciLayout(tmp_path / "src-layout")
