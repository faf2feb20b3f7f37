"""Fixtures for the real-client conformance suite.

The registry under test is chosen by ``REGISTRY_UNDER_TEST``:
``stowage`` (default; binary from ``STOWAGE_BIN`` or
``<repo>/target/release/stowage``) or ``distribution`` (Debian's
``docker-registry``, CNCF Distribution 2.8, for validating the suite itself).

Stowage's store layout is chosen by ``STOWAGE_STORE``: ``fs`` (default, a
filesystem blob store), ``s3``, ``s3-blobs+fs-meta`` or ``fs-blobs+s3-meta``.
The S3 layouts run one moto S3 server for the session and give each registry
a fresh bucket per S3 store (``conformance/live/services.py`` and
``matrix.py``).  Tests marked ``fs_only`` are deselected on the other layouts.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "live")]

from clientharness import registry as regmod  # noqa: E402
from clientharness.layout import OciLayout  # noqa: E402
from clientharness.tools import private_tool  # noqa: E402
from matrix import stores_for  # noqa: E402
from services import S3Server, s3_server  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "needs_referrers: uses the OCI 1.1 referrers API; expected to fail "
        "(xfail) on Distribution 2.8, which predates it",
    )
    config.addinivalue_line(
        "markers",
        "fs_only: reads or writes the registry's storage root on disk, or tests what "
        "sits in front of the stores (TLS, logins, the accept loop); deselected when "
        "STOWAGE_STORE is not fs (CI runs it in the fs run of the suite)",
    )
    config.addinivalue_line(
        "markers",
        "stowage_only: sets a Stowage configuration key; deselected when the registry "
        "under test is Distribution",
    )


def pytest_report_header(config):
    try:
        kind = regmod.kind_under_test()
    except regmod.RegistryStartError as e:
        return f"registry under test: INVALID ({e})"
    if kind == regmod.STOWAGE:
        try:
            layout = regmod.store_layout()
        except regmod.RegistryStartError as e:
            layout = f"INVALID ({e})"
        binary = os.environ.get('STOWAGE_BIN') or regmod.DEFAULT_STOWAGE_BIN
        return f"registry under test: stowage ({binary}), store layout: {layout}"
    return "registry under test: distribution (docker-registry)"


def _deselect(config, items, marker: str) -> None:
    """Drops the tests carrying `marker` from the run, so the report never shows them as
    skipped tests."""
    dropped = [item for item in items if item.get_closest_marker(marker)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not item.get_closest_marker(marker)]


def pytest_collection_modifyitems(config, items):
    try:
        kind = regmod.kind_under_test()
        layout = regmod.store_layout()
    except regmod.RegistryStartError:
        return
    if layout != regmod.FS_LAYOUT:
        _deselect(config, items, "fs_only")  # they run in the fs run of the suite
    if kind != regmod.DISTRIBUTION:
        return
    _deselect(config, items, "stowage_only")
    for item in items:
        if item.get_closest_marker("needs_referrers"):
            item.add_marker(pytest.mark.xfail(
                reason="Distribution 2.8 has no OCI 1.1 referrers API", strict=False))


class StoreLayout:
    """The STOWAGE_STORE layout: gives each new Stowage registry its store tables
    (None for ``fs``: today's ``[blob_store.fs]`` on the storage directory)."""

    def __init__(self, layout: str, s3: S3Server | None):
        self.layout = layout
        self.s3 = s3

    def stores_toml(self, storage: Path) -> str | None:
        if self.layout == regmod.FS_LAYOUT:
            return None
        # Fresh bucket(s); filesystem halves of a split live under `storage`.
        return stores_for(self.layout, Path(storage), self.s3)


class Registries:
    """Starts registries for a test and guarantees they are stopped after it."""

    def __init__(self, workdir: Path, stores: StoreLayout):
        self.workdir = workdir
        self.stores = stores
        self.started: list[regmod.Registry] = []

    def start(self, kind: str, storage: Path, stores_toml: str | None = None,
              server_toml: str = "", tls_client: dict | None = None,
              registry_toml: str = "") -> regmod.Registry:
        """Starts a registry; Stowage gets the STOWAGE_STORE layout (a restart passes
        the previous process's ``stores_toml`` to reuse its buckets), ``server_toml``
        in its ``[server]`` table, ``registry_toml`` in its ``[registry]`` table, and
        ``tls_client`` (``requests``' ``verify`` and ``cert``) to reach it over TLS."""
        error = None
        try:
            if kind == regmod.STOWAGE and stores_toml is None:
                stores_toml = self.stores.stores_toml(storage)
            reg = regmod.start_registry(kind, storage, self.workdir, stores_toml=stores_toml,
                                        server_toml=server_toml, tls_client=tls_client,
                                        registry_toml=registry_toml)
        except regmod.RegistryStartError as e:
            error = str(e)
        if error:
            pytest.fail(error, pytrace=False)
        self.started.append(reg)
        return reg

    def restart(self, reg: regmod.Registry) -> regmod.Registry:
        return self.start(reg.kind, reg.storage, reg.stores_toml)

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
def store_layout(tmp_path_factory, registry_kind):
    """The STOWAGE_STORE layout; starts one moto S3 server for the session if it
    uses S3, stopped by PID at the end."""
    try:
        layout = regmod.store_layout()
    except regmod.RegistryStartError as e:
        pytest.fail(str(e), pytrace=False)
    if layout != regmod.FS_LAYOUT and registry_kind != regmod.STOWAGE:
        pytest.fail(f"STOWAGE_STORE={layout} only applies to REGISTRY_UNDER_TEST=stowage",
                    pytrace=False)
    s3 = s3_server(tmp_path_factory.mktemp("s3")) if "s3" in layout else None
    yield StoreLayout(layout, s3)
    if s3:
        s3.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory, registry_kind, store_layout):
    """One registry under test shared by the suite (each test uses its own
    repository)."""
    base = tmp_path_factory.mktemp("shared-registry")
    regs = Registries(base, store_layout)
    reg = regs.start(registry_kind, base / "storage")
    yield reg
    still_running = reg.running()
    regs.stop_all()
    assert still_running, f"registry died during the session:\n{reg.log_tail()}"


@pytest.fixture
def registries(tmp_path, store_layout):
    """Factory for tests that need their own registry processes."""
    regs = Registries(tmp_path / "registries", store_layout)
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


@pytest.fixture
def podman(tmp_path):
    """podman with storage of its own."""
    yield from private_tool("podman", tmp_path)


@pytest.fixture
def buildah(tmp_path):
    """buildah with storage of its own."""
    yield from private_tool("buildah", tmp_path)
