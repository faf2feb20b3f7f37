"""Out of file descriptors, the accept loop backs off instead of spinning: with more
connections waiting than the server may open, its CPU time and its log stay small, the
connections it already has are still served, and once descriptors are free again it
accepts new ones."""

from __future__ import annotations

import http.client
import os
import resource
import socket
import time

import pytest
import requests

pytestmark = [pytest.mark.stowage_only, pytest.mark.fs_only]

NOFILE = 64
SERVED = 8  # keep-alive connections accepted before the limit is reached
WAITING = 2 * NOFILE  # connections beyond it, left in the listen queue
WATCH_SECS = 3.0
TIMEOUT = 30


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of every thread of `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        # Past the command's closing parenthesis, utime and stime are the 12th and 13th.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get_v2(conn: http.client.HTTPConnection) -> int:
    conn.request("GET", "/v2/")
    response = conn.getresponse()
    response.read()
    return response.status


def test_out_of_descriptors_the_server_backs_off_and_recovers(registries, registry_kind,
                                                              tmp_path):
    reg = registries.start(registry_kind, tmp_path / "storage")
    pid = reg.process.proc.pid
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (NOFILE, NOFILE))

    served = [http.client.HTTPConnection("127.0.0.1", reg.port, timeout=TIMEOUT)
              for _ in range(SERVED)]
    for conn in served:
        assert get_v2(conn) == 200
    waiting = []
    try:
        for _ in range(WAITING):
            waiting.append(socket.create_connection(("127.0.0.1", reg.port), timeout=TIMEOUT))
        time.sleep(0.5)  # the server takes what it can and hits the limit
        log_before = reg.process.log_path.stat().st_size
        cpu_before = cpu_seconds(pid)
        time.sleep(WATCH_SECS)
        cpu = cpu_seconds(pid) - cpu_before
        logged = reg.process.log_path.stat().st_size - log_before
        assert reg.running(), reg.log_tail()
        assert cpu < 0.5, f"{cpu:.2f} CPU-s in {WATCH_SECS}s out of descriptors"
        assert logged < 16 * 1024, f"{logged} bytes logged in {WATCH_SECS}s\n{reg.log_tail()}"
        assert "cannot accept connections" in reg.log_tail(200)
        # The connections already open are still served.
        assert get_v2(served[0]) == 200
    finally:
        for sock in waiting:
            sock.close()
    for conn in served:
        conn.close()
    r = requests.get(f"{reg.url}/v2/", timeout=TIMEOUT)
    assert r.status_code == 200
    assert reg.running()
