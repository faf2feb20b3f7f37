"""Fixtures for the federated identity suite: the shared ones (Redis, clusters of stowage
replicas sharing it, podman) and an OIDC provider of the tests' own."""

from __future__ import annotations

import pytest

from harness.oidc_provider import OidcProvider

pytest_plugins = ["harness.fixtures"]


@pytest.fixture
def provider():
    idp = OidcProvider()
    yield idp
    try:
        idp.stop()
    except OSError:
        pass
