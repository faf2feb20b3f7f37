"""Issue 16's hardening, seen from a client: error codes that name what is wrong
(`TAG_INVALID` for a bad tag, 416 for a range that ends before it starts), and limits a
client could otherwise exhaust (open uploads per repository, tags per push, a minimum
body rate)."""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import time
import urllib.parse

import pytest
import requests

from harness.oci import Blob, Client, sha256_digest

TIMEOUT = 30

pytestmark = pytest.mark.stowage_only


def push_blob(base_url: str, repo: str, data: bytes) -> str:
    blob = Blob(data)
    Client(base_url).push_blob(repo, blob, expect=201)
    return blob.digest


def test_a_bad_tag_in_a_manifest_put_is_tag_invalid(registry, repo):
    manifest = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}'
    headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    for tag in (".starts-with-dot", "t" * 129):
        r = requests.put(f"{registry.url}/v2/{repo}/manifests/{tag}", data=manifest,
                         headers=headers, timeout=TIMEOUT)
        assert r.status_code == 400, r.text
        assert r.json()["errors"][0]["code"] == "TAG_INVALID", r.text


def test_a_range_ending_before_it_starts_is_416_with_the_size(registry, repo):
    data = os.urandom(100_000)  # larger than what is cached whole
    digest = push_blob(registry.url, repo, data)
    url = f"{registry.url}/v2/{repo}/blobs/{digest}"
    r = requests.get(url, headers={"Range": "bytes=500-0"}, timeout=TIMEOUT)
    assert r.status_code == 416, (r.status_code, r.headers)
    assert r.headers["Content-Range"] == f"bytes */{len(data)}"
    r = requests.get(url, headers={"Range": "bytes=500-599"}, timeout=TIMEOUT)
    assert r.status_code == 206 and r.content == data[500:600]


# Limits a client can exhaust.

OPEN_UPLOADS = 5
TAGS = 2
GRACE_SECS = 1
MIN_RATE = 1024


@pytest.fixture
def limited(registries, registry_kind, tmp_path):
    return registries.start(
        registry_kind, tmp_path / "storage",
        server_toml=(f"body_grace_secs = {GRACE_SECS}\nmin_body_rate_bytes_per_sec = {MIN_RATE}\n"
                     f"[registry]\nmax_open_uploads_per_repository = {OPEN_UPLOADS}\n"
                     f"max_tags_per_request = {TAGS}\n"))


def test_one_open_upload_too_many_is_429(limited, repo):
    client = Client(limited.url)
    sessions = []
    for _ in range(OPEN_UPLOADS):
        r = client.start_upload(repo, expect=202)
        sessions.append(r.headers["Location"])
    r = client.start_upload(repo, expect=429)
    error = r.json()["errors"][0]
    assert error["code"] == "TOOMANYREQUESTS"
    assert "max_open_uploads_per_repository" in error["message"]
    # Other repositories have their own sessions; a monolithic push opens none.
    client.start_upload(repo + "-other", expect=202)
    client.push_blob(repo, Blob(b"whole"), expect=201)
    # Cancelling one makes room for one.
    client.request("DELETE", sessions[0], expect=204)
    client.start_upload(repo, expect=202)
    client.start_upload(repo, expect=429)


def test_more_tags_than_allowed_are_tag_invalid(limited, repo):
    config = push_blob(limited.url, repo, b"{}")
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config, "size": 2},
        "layers": [],
    }).encode()
    client, digest = Client(limited.url), sha256_digest(manifest)
    too_many = [("tag", f"t{i}") for i in range(TAGS + 1)]
    r = client.push_manifest(repo, digest, manifest, expect=400, params=too_many)
    error = r.json()["errors"][0]
    assert error["code"] == "TAG_INVALID" and "max_tags_per_request" in error["message"]
    client.push_manifest(repo, digest, manifest, expect=201, params=too_many[:TAGS])


def test_a_trickling_body_fails_and_leaves_the_upload_as_it_was(limited, repo):
    r = Client(limited.url).start_upload(repo, expect=202)
    upload = urllib.parse.urlsplit(urllib.parse.urljoin(limited.url + "/", r.headers["Location"]))
    length = 64 * 1024
    conn = http.client.HTTPConnection(upload.hostname, upload.port, timeout=TIMEOUT)
    conn.putrequest("PATCH", upload.path + (f"?{upload.query}" if upload.query else ""))
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Content-Range", f"0-{length - 1}")
    conn.putheader("Content-Length", str(length))
    conn.endheaders()
    # A quarter of the minimum rate, never silent long enough for the idle timeout; stop
    # sending once the server has answered.
    started = time.monotonic()
    while time.monotonic() - started < GRACE_SECS * 10:
        if select.select([conn.sock], [], [], 0)[0]:
            break
        conn.send(os.urandom(MIN_RATE // 4 // 10))
        time.sleep(0.1)
    response = conn.getresponse()
    waited = time.monotonic() - started
    body = response.read()
    assert response.status == 400, body[:300]
    assert b"BLOB_UPLOAD_INVALID" in body and b"bytes/s" in body, body[:300]
    assert GRACE_SECS < waited < GRACE_SECS * 5
    conn.close()

    # Nothing was added: a chunk from offset 0 is still what the upload expects.
    data = os.urandom(2048)
    url = urllib.parse.urlunsplit(upload)
    r = requests.patch(url, data=data, timeout=TIMEOUT,
                       headers={"Content-Type": "application/octet-stream",
                                "Content-Range": f"0-{len(data) - 1}"})
    assert r.status_code == 202, r.text
    r = requests.get(url, timeout=TIMEOUT)
    assert r.headers["Range"] == f"0-{len(data) - 1}"


# A blob file changed under a reader.

@pytest.mark.fs_only
def test_a_blob_truncated_during_a_slow_pull_fails_only_that_pull(registries, registry_kind,
                                                                   tmp_path, repo):
    reg = registries.start(registry_kind, tmp_path / "storage")
    data = os.urandom(64 * 1024 * 1024)
    digest = push_blob(reg.url, repo, data)
    algorithm, hex_digest = digest.split(":")
    path = reg.data_root / "v2" / "blobs" / algorithm / hex_digest[:2] / hex_digest / "data"
    assert path.stat().st_size == len(data)

    sock = socket.create_connection(("127.0.0.1", reg.port), timeout=TIMEOUT)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(f"GET /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: {reg.host}\r\n\r\n".encode())
    received = 0
    while received < 2 * 1024 * 1024:  # a slow reader: the server is windows ahead
        received += len(sock.recv(64 * 1024))
        time.sleep(0.01)
    # Past the windows already mapped: the reader finds the file shorter than the next one.
    kept = len(data) // 2
    os.truncate(path, kept)
    time.sleep(0.5)
    try:
        while chunk := sock.recv(1024 * 1024):
            received += len(chunk)
    except OSError:
        pass  # the server may cut the connection
    sock.close()
    assert received <= kept + 1024, "more came through than the file still holds"
    assert reg.running(), f"the server died:\n{reg.log_tail()}"
    # The log is written by a thread of its own, in batches: give it a moment.
    deadline = time.monotonic() + 5
    while "shrank while it was read" not in reg.log_text():
        assert time.monotonic() < deadline, f"no log line about the file:\n{reg.log_tail()}"
        time.sleep(0.1)
    assert requests.get(f"{reg.url}/v2/", timeout=TIMEOUT).status_code == 200
    other = os.urandom(100_000)
    other_digest = push_blob(reg.url, repo, other)
    r = requests.get(f"{reg.url}/v2/{repo}/blobs/{other_digest}", timeout=TIMEOUT)
    assert r.status_code == 200 and r.content == other
    # A pull begun after the change is answered the size the registry knows, which the file
    # no longer holds: it is refused as any failure is, with an OCI error body.
    r = requests.get(f"{reg.url}/v2/{repo}/blobs/{digest}", timeout=TIMEOUT)
    assert r.status_code == 503, (r.status_code, len(r.content))
    assert r.json()["errors"][0]["code"] == "UNAVAILABLE", r.text
