"""What the benchmark measures besides the registries: a server process's CPU time and peak
RSS during a phase, the machine's own limits (one core's sha256 rate, a loopback socket
copy, the CPU a verified write of a pushed blob costs at least), and the ceilings of our own
client against a server that does nothing."""

import hashlib
import mmap
import multiprocessing
import os
import socket
import threading
import time
from pathlib import Path

import client

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat (fields after the command name)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class ProcessProbe:
    """CPU seconds and peak RSS of one process over a `with` block. VmHWM cannot be reset
    between phases, so a thread samples VmRSS every `interval` seconds and keeps the max."""

    def __init__(self, pid: int, interval: float = 0.01):
        self.pid, self.interval = pid, interval
        self.cpu = 0.0
        self.peak_rss = 0

    def __enter__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._cpu0 = cpu_seconds(self.pid)
        self._thread.start()
        return self

    def _sample(self):
        while True:
            self.peak_rss = max(self.peak_rss, rss_bytes(self.pid))
            if self._stop.wait(self.interval):
                return

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, rss_bytes(self.pid))
        self.cpu = cpu_seconds(self.pid) - self._cpu0


def sha256_one_core(path: Path) -> float:
    """MiB/s of one sha256 over a file on tmpfs (OpenSSL through hashlib, on one thread):
    the rate a registry that hashes every pushed byte once can at best ingest per core."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as view:
        start = time.perf_counter()
        hashlib.sha256(view).digest()
        return len(view) / MIB / (time.perf_counter() - start)


def _sink(listener: socket.socket, expected: int, elapsed) -> None:
    conn, _ = listener.accept()
    buffer, got = bytearray(4 << 20), 0
    start = time.perf_counter()
    while got < expected and (n := conn.recv_into(buffer)):
        got += n
    elapsed.value = time.perf_counter() - start
    conn.close()


def loopback_copy(path: Path) -> float:
    """MiB/s of a file sent with sendfile over a loopback TCP socket to another process
    that reads it into a buffer: the most any server here can move over HTTP."""
    size = path.stat().st_size
    ctx = multiprocessing.get_context("fork")
    elapsed = ctx.Value("d", 0.0)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sink = ctx.Process(target=_sink, args=(listener, size, elapsed))
        sink.start()
        with socket.create_connection(listener.getsockname()) as conn, open(path, "rb") as f:
            conn.sendfile(f)
        sink.join()
    return size / MIB / elapsed.value


def _verifying_sink(listener: socket.socket, expected: int, target: Path, cpu) -> None:
    conn, _ = listener.accept()
    buffer, got, hasher = bytearray(128 << 10), 0, hashlib.sha256()
    view = memoryview(buffer)
    start = time.process_time()
    with conn, open(target, "wb", buffering=0) as out:
        while got < expected and (n := conn.recv_into(buffer)):
            hasher.update(view[:n])
            out.write(view[:n])
            got += n
    hasher.digest()
    cpu.value = time.process_time() - start


def verified_write_cpu(path: Path, target: Path, settle) -> float:
    """CPU seconds per GiB of the least a registry does with a pushed blob: receive it from
    a loopback socket, sha256 it and write it to a file (`target`, on the registries'
    filesystem), in one thread of another process. The median of three, each after
    `settle()` (the page cache state every timed push starts from)."""
    size = path.stat().st_size
    ctx = multiprocessing.get_context("fork")
    runs = []
    for _ in range(3):
        settle()
        cpu = ctx.Value("d", 0.0)
        with socket.create_server(("127.0.0.1", 0)) as listener:
            sink = ctx.Process(target=_verifying_sink, args=(listener, size, target, cpu))
            sink.start()
            with socket.create_connection(listener.getsockname()) as conn, open(path, "rb") as f:
                conn.sendfile(f)
            sink.join()
        if sink.exitcode != 0:
            raise RuntimeError(f"the verified-write probe exited with {sink.exitcode}")
        target.unlink()
        runs.append(cpu.value / (size / (1 << 30)))
    return sorted(runs)[1]


# --- a null registry, to show the client is not the bottleneck ---------------------------

def _null_connection(conn: socket.socket, blob: Path) -> None:
    """Answers every request without storing anything: POST 202 with a Location, PUT 201,
    GET the whole of `blob` through sendfile. Bodies are read into a reused buffer."""
    reader, buffer = conn.makefile("rb"), bytearray(4 << 20)
    size = blob.stat().st_size
    with conn, reader, open(blob, "rb") as source:
        while request_line := reader.readline():
            headers = {}
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            remaining = int(headers.get("content-length", 0))
            view = memoryview(buffer)
            while remaining:
                remaining -= reader.readinto(view[: min(remaining, len(buffer))])
            method = request_line.split()[0]
            if method == b"GET" and b"/blobs/" in request_line:
                conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
                conn.sendfile(source, 0, size)
            elif method == b"POST":
                conn.sendall(b"HTTP/1.1 202 Accepted\r\nLocation: /v2/null/blobs/uploads/1\r\nContent-Length: 0\r\n\r\n")
            elif method == b"PUT":
                conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


def _null_server(listener: socket.socket, blob: Path) -> None:
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_null_connection, args=(conn, blob), daemon=True).start()


class NullRegistry:
    """The null registry in a process of its own, serving `blob_path` to every blob GET."""

    def __init__(self, blob_path: Path):
        ctx = multiprocessing.get_context("fork")
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.server = ctx.Process(target=_null_server, args=(self.listener, blob_path), daemon=True)
        self.server.start()
        self.url = "http://127.0.0.1:%d" % self.listener.getsockname()[1]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.kill()  # our own child, by its handle
        self.server.join()
        self.listener.close()


def crowd_ceilings(push_sources, pull_source, pulls: int) -> dict:
    """Our many-clients code against the null registry: aggregate MiB/s of one push of each
    of `push_sources` at once, and of `pulls` pulls of `pull_source`'s size at once."""
    with NullRegistry(pull_source.path) as null:
        blobs = [client.Blob(source.path, source.size, "sha256:" + "0" * 64) for source in push_sources]
        push = client.push_concurrently(null.url, "null", blobs)
        pull = client.pull_concurrently(null.url, "null", ["sha256:" + "0" * 64] * pulls, pull_source.size)
    return {"crowd_push_mib_s": push, "crowd_pull_mib_s": pull}


def client_ceilings(blob_path: Path, swarm: dict) -> dict:
    """Our client's push and pull rates for `blob_path` and its small-blob rate (with the
    `swarm` parameters) against the null registry, in a process of its own."""
    with NullRegistry(blob_path) as null:
        url = null.url
        size = blob_path.stat().st_size
        blob = client.Blob(blob_path, size, "sha256:" + "0" * 64)
        http = client.Http(url)
        start = time.perf_counter()
        client.push_monolithic(http, "null", blob)
        push = size / MIB / (time.perf_counter() - start)
        start = time.perf_counter()
        client.pull(http, "null", blob.digest, size)
        pull = size / MIB / (time.perf_counter() - start)
        http.close()
        small = client.push_swarm(url, "null", **swarm)
        return {"push_mib_s": push, "pull_mib_s": pull, "small_blobs_s": small["blobs_s"]}
