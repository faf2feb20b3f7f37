"""Fixtures for the federated identity suite: the replicas suite's (Redis, clusters of
stowage replicas sharing it), an OIDC provider of the tests' own, and the client harness's
image layouts and container tools."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CONFORMANCE = HERE.parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# The replicas suite's conftest puts conformance/live and conformance/replicas on the path;
# its fixtures are reused here under their own names.
replicas = _load("replicas_conftest", CONFORMANCE / "replicas" / "conftest.py")
redis = replicas.redis
start_cluster = replicas.start_cluster
replica_binaries = replicas.replica_binaries
pytest_report_header = replicas.pytest_report_header

sys.path[:0] = [str(HERE), str(CONFORMANCE / "clients")]

from clientharness.tools import ContainerTool  # noqa: E402
from oidc_provider import OidcProvider  # noqa: E402


@pytest.fixture
def provider():
    idp = OidcProvider()
    yield idp
    try:
        idp.stop()
    except OSError:
        pass


@pytest.fixture
def podman(tmp_path):
    """podman with private storage (as conformance/clients runs it). Fails, never skips."""
    # podman refuses a --runroot longer than 50 characters.
    runroot = Path(tempfile.mkdtemp(prefix="pod-run-", dir="/tmp"))
    tool = ContainerTool("podman", tmp_path / "podman-root", runroot)
    tool("info", timeout=60)
    yield tool
    shutil.rmtree(runroot, ignore_errors=True)
