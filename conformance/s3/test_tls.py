"""An S3 endpoint over https whose certificate a private CA issued (an in-house store): the
server trusts it through the system's CA bundle, which `SSL_CERT_FILE` points elsewhere.
Untrusted, every request fails, and the log and the client's 503 name the certificate (the
error OpenDAL reports says only "error sending request"; the cause lies beneath it)."""

from __future__ import annotations

import pytest

from harness.oci import Blob, Client, make_image
from harness.pki import Ca, trusting
from harness.registry import start_stowage
from harness.services import MotoServer, s3_toml

REPO = "tls/app"


@pytest.fixture
def moto_tls(tmp_path):
    server = MotoServer(tmp_path, tls_ca=Ca("S3 test CA"))
    yield server
    server.stop()


def test_an_https_endpoint_of_a_private_ca_serves_once_trusted(moto_tls, stowage_bin, tmp_path):
    store = s3_toml("blob_store", moto_tls.endpoint, moto_tls.new_bucket())
    registry = start_stowage(tmp_path / "work", store, stowage_bin,
                             env=trusting(moto_tls.ca_file))
    try:
        image = make_image("s3-over-tls", 3000, 40_000)
        Client(registry.url).push_image(REPO, "latest", image, chunk_size=16_000, expect=201)
        Client(registry.url).assert_pulls(REPO, "latest", image)
    finally:
        registry.stop()


def test_an_untrusted_certificate_is_named_in_the_log_and_the_503(moto_tls, stowage_bin,
                                                                 tmp_path):
    store = s3_toml("blob_store", moto_tls.endpoint, moto_tls.new_bucket(), max_attempts=1)
    registry = start_stowage(tmp_path / "work", store, stowage_bin, env=trusting(None))
    try:
        startup = [line for line in registry.log_text().splitlines()
                   if "failed the startup check's write" in line]
        assert startup and "invalid peer certificate" in startup[0], registry.log_tail()
        response = Client(registry.url).push_blob(REPO, Blob(b"refused over tls"))
        assert response.status_code == 503, response.text
        assert "invalid peer certificate" in response.json()["errors"][0]["message"]
    finally:
        registry.stop()
