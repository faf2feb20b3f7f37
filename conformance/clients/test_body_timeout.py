"""The request body idle timeout (`body_idle_timeout_secs`): a body that keeps sending,
however slowly, is never cut off, however long it takes in all; a body that falls silent
for longer fails its request, and its upload stays where it was."""

from __future__ import annotations

import http.client
import os
import time
import urllib.parse

import pytest
import requests

from harness.oci import Client

IDLE_TIMEOUT_SECS = 1
TIMEOUT = 30
PIECE = 1024

pytestmark = pytest.mark.stowage_only


@pytest.fixture
def reg(registries, registry_kind, tmp_path):
    return registries.start(registry_kind, tmp_path / "storage",
                            server_toml=f"body_idle_timeout_secs = {IDLE_TIMEOUT_SECS}")


def start_upload(base_url: str, repo: str) -> urllib.parse.SplitResult:
    r = Client(base_url).start_upload(repo, expect=202)
    return urllib.parse.urlsplit(urllib.parse.urljoin(base_url + "/", r.headers["Location"]))


def begin_patch(upload: urllib.parse.SplitResult, length: int) -> http.client.HTTPConnection:
    """Sends a PATCH's head announcing `length` body bytes, and none of them yet."""
    conn = http.client.HTTPConnection(upload.hostname, upload.port, timeout=TIMEOUT)
    path = upload.path + (f"?{upload.query}" if upload.query else "")
    conn.putrequest("PATCH", path)
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Content-Range", f"0-{length - 1}")
    conn.putheader("Content-Length", str(length))
    conn.endheaders()
    return conn


def upload_range(upload: urllib.parse.SplitResult) -> str:
    r = requests.get(urllib.parse.urlunsplit(upload), timeout=TIMEOUT)
    assert r.status_code == 204, r.text
    return r.headers["Range"]


def test_a_slow_body_that_keeps_sending_is_not_cut_off(reg, repo):
    pieces = 6
    data = os.urandom(pieces * PIECE)
    upload = start_upload(reg.url, repo)
    conn = begin_patch(upload, len(data))
    started = time.monotonic()
    for i in range(pieces):
        time.sleep(IDLE_TIMEOUT_SECS * 0.4)
        conn.send(data[i * PIECE:(i + 1) * PIECE])
    response = conn.getresponse()
    assert time.monotonic() - started > 2 * IDLE_TIMEOUT_SECS
    assert response.status == 202, response.read()[:300]
    conn.close()
    assert upload_range(upload) == f"0-{len(data) - 1}"


def test_a_body_silent_past_the_timeout_fails_and_leaves_the_upload_as_it_was(reg, repo):
    upload = start_upload(reg.url, repo)
    conn = begin_patch(upload, 4 * PIECE)
    conn.send(os.urandom(PIECE))
    started = time.monotonic()
    response = conn.getresponse()  # the server gives up on the silent body
    waited = time.monotonic() - started
    assert response.status == 400, response.read()[:300]
    assert b"BLOB_UPLOAD_INVALID" in response.read()
    assert IDLE_TIMEOUT_SECS * 0.9 < waited < IDLE_TIMEOUT_SECS * 5
    conn.close()

    # Nothing was added: a chunk from offset 0 is still what the upload expects.
    data = os.urandom(2 * PIECE)
    r = requests.patch(urllib.parse.urlunsplit(upload), data=data, timeout=TIMEOUT,
                       headers={"Content-Type": "application/octet-stream",
                                "Content-Range": f"0-{len(data) - 1}"})
    assert r.status_code == 202, r.text
    assert upload_range(upload) == f"0-{len(data) - 1}"
