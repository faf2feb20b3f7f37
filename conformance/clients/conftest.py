"""Fixtures for the real-client conformance suite.

The registry under test is chosen by ``REGISTRY_UNDER_TEST``:
``stowage`` (default; binary from ``STOWAGE_BIN`` or
``<repo>/target/release/stowage``) or ``distribution`` (Debian's
``docker-registry``, CNCF Distribution 2.8, for validating the suite itself).

Stowage's store layout is chosen by ``STOWAGE_STORE``: ``fs`` (default, a
filesystem blob store), ``s3``, ``s3-blobs+fs-meta`` or ``fs-blobs+s3-meta``.
The S3 layouts run one S3 server for the session (``STOWAGE_S3_SERVER``) and give each registry
a fresh bucket per S3 store (``conformance/harness/registry.py``).  Tests marked
``fs_only`` are deselected on the other layouts.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import pytest

from harness import registry as regmod
from harness.layout import OciLayout
from harness.process import StartError
from harness.registry import DISTRIBUTION, STOWAGE
from harness.services import S3Server, start_distribution

pytest_plugins = ["harness.fixtures"]

KINDS = (STOWAGE, DISTRIBUTION)


def kind_under_test() -> str:
    kind = os.environ.get("REGISTRY_UNDER_TEST", STOWAGE).strip().lower()
    if kind not in KINDS:
        raise StartError(f"REGISTRY_UNDER_TEST={kind!r} is not one of {', '.join(KINDS)}")
    return kind


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
        kind = kind_under_test()
    except StartError as e:
        return f"registry under test: INVALID ({e})"
    if kind == STOWAGE:
        try:
            layout = regmod.store_layout()
        except StartError as e:
            layout = f"INVALID ({e})"
        return f"registry under test: stowage, store layout: {layout}"
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
        kind = kind_under_test()
        layout = regmod.store_layout()
    except StartError:
        return
    if layout != regmod.FS_LAYOUT:
        _deselect(config, items, "fs_only")  # they run in the fs run of the suite
    if kind != DISTRIBUTION:
        return
    _deselect(config, items, "stowage_only")
    for item in items:
        if item.get_closest_marker("needs_referrers"):
            item.add_marker(pytest.mark.xfail(
                reason="Distribution 2.8 has no OCI 1.1 referrers API", strict=False))


class StoreLayout:
    """The STOWAGE_STORE layout: gives each new Stowage registry its store tables."""

    def __init__(self, layout: str, s3: S3Server | None):
        self.layout = layout
        self.s3 = s3

    def stores_toml(self, storage: Path) -> str:
        if self.layout == regmod.FS_LAYOUT:
            return regmod.fs_toml("blob_store", storage)
        # Fresh bucket(s); filesystem halves of a split live under `storage`.
        return regmod.stores_for(self.layout, Path(storage), self.s3)


class Registries:
    """Starts registries for a test and guarantees they are stopped after it."""

    def __init__(self, workdir: Path, stores: StoreLayout):
        self.workdir = workdir
        self.stores = stores
        self.started: list[regmod.Registry] = []

    def start(self, kind: str, storage: Path, stores_toml: str | None = None,
              server_toml: str = "", tls_client: dict | None = None) -> regmod.Registry:
        """Starts a registry whose data lives in `storage`; Stowage gets the STOWAGE_STORE
        layout (a restart passes the previous process's ``stores_toml`` to reuse its
        buckets), ``server_toml`` as the rest of its configuration (keys of ``[server]``,
        then later tables), and ``tls_client`` (``requests``' ``verify`` and ``cert``) to
        reach it over TLS."""
        error = None
        try:
            if kind == STOWAGE:
                storage = Path(storage)
                storage.mkdir(parents=True, exist_ok=True)
                if stores_toml is None:
                    stores_toml = self.stores.stores_toml(storage)
                reg = regmod.start_stowage(self.workdir, stores_toml, server_toml=server_toml,
                                           tls_client=tls_client, storage=storage)
            elif stores_toml is not None or server_toml or tls_client:
                raise ValueError(f"{kind} has no configurable stores or server settings")
            else:
                reg = start_distribution(self.workdir, storage)
        except StartError as e:
            error = str(e)
        if error:
            pytest.fail(error, pytrace=False)
        self.started.append(reg)
        return reg

    def restart(self, reg: regmod.Registry) -> regmod.Registry:
        return self.start(reg.kind, reg.storage, reg.stores_toml)

    def stop_all(self) -> None:
        for reg in self.started:
            reg.stop()


@pytest.fixture(scope="session")
def registry_kind() -> str:
    try:
        return kind_under_test()
    except StartError as e:
        error = str(e)
    pytest.fail(error, pytrace=False)


@pytest.fixture(scope="session")
def store_layout(request, registry_kind):
    """The STOWAGE_STORE layout, with the session's S3 server if it uses S3."""
    try:
        layout = regmod.store_layout()
    except StartError as e:
        pytest.fail(str(e), pytrace=False)
    if layout != regmod.FS_LAYOUT and registry_kind != STOWAGE:
        pytest.fail(f"STOWAGE_STORE={layout} only applies to REGISTRY_UNDER_TEST=stowage",
                    pytrace=False)
    return StoreLayout(layout, request.getfixturevalue("s3") if "s3" in layout else None)


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
