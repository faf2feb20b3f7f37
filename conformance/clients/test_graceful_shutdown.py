"""Graceful shutdown: on SIGTERM the registry stops accepting connections, finishes the
requests already under way on every connection it serves, and exits with status 0; what
those requests stored is there after a restart."""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import time
import urllib.parse

import pytest
import requests

MIB = 1024 * 1024
UPLOADS = 4  # more connections than the server has cores, so every worker serves some
SIZE = 2 * MIB
TIMEOUT = 30


def start_put(base_url: str, repo: str, data: bytes) -> http.client.HTTPConnection:
    """POSTs for a session, then sends a monolithic PUT's headers and the first half of its
    body on a connection of its own, and leaves the request unfinished. The PUT asks for
    `100 Continue` and waits for it: the server is reading its body, so it is under way."""
    r = requests.post(f"{base_url}/v2/{repo}/blobs/uploads/", timeout=TIMEOUT)
    assert r.status_code == 202, r.text
    location = urllib.parse.urljoin(base_url + "/", r.headers["Location"])
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    target = urllib.parse.urlsplit(location)
    query = (target.query + "&" if target.query else "") + urllib.parse.urlencode({"digest": digest})
    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=TIMEOUT)
    conn.putrequest("PUT", f"{target.path}?{query}")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Content-Length", str(len(data)))
    conn.putheader("Expect", "100-continue")
    conn.endheaders()
    interim = conn.sock.recv(64)
    assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
    conn.send(data[: len(data) // 2])
    return conn


def test_sigterm_finishes_requests_in_flight(registries, registry_kind, repo, tmp_path):
    reg = registries.start(registry_kind, tmp_path / "storage")
    blobs = [os.urandom(SIZE) for _ in range(UPLOADS)]
    conns = [start_put(reg.url, f"{repo}/u{i}", data) for i, data in enumerate(blobs)]

    reg.process.proc.send_signal(signal.SIGTERM)
    time.sleep(1)
    assert reg.running(), f"exited with uploads under way:\n{reg.log_tail()}"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{reg.url}/v2/", timeout=5)

    for conn, data in zip(conns, blobs):
        conn.send(data[len(data) // 2 :])
        response = conn.getresponse()
        assert response.status == 201, response.read()[:300]
        conn.close()
    assert reg.process.proc.wait(timeout=TIMEOUT) == 0, reg.log_tail()

    restarted = registries.restart(reg)
    for i, data in enumerate(blobs):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = requests.get(f"{restarted.url}/v2/{repo}/u{i}/blobs/{digest}", timeout=TIMEOUT)
        assert r.status_code == 200 and r.content == data, f"blob {i}: HTTP {r.status_code}"
