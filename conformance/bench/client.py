"""The benchmark's client side: blob pushes and pulls over the OCI Distribution API, the
small-blob swarm, and wrk/hey runs.

The client must never be what limits a figure, so large bodies leave through sendfile(2)
from a tmpfs file (no copy through Python) and responses are drained with readinto() into
one reused buffer. `probes.client_ceilings` measures this same code against a null server.
"""

import hashlib
import http.client
import mmap
import multiprocessing
import os
import re
import socket
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

DRAIN = bytearray(4 << 20)  # response bodies land here and are dropped
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


class HttpError(RuntimeError):
    pass


@dataclass
class FileRange:
    """A request body sent with sendfile: `count` bytes of `file` from `offset`; with
    `frame`, of unannounced length (`Transfer-Encoding: chunked`, frames of `frame` bytes)."""

    file: object
    offset: int
    count: int
    frame: int | None = None


class Http:
    """One keep-alive HTTP/1.1 connection; `headers` go with every request (credentials)."""

    def __init__(self, base_url: str, timeout: float = 600.0, headers=None):
        parts = urllib.parse.urlsplit(base_url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        self.headers = headers or {}

    def request(self, method: str, path: str, headers=None, body=None, expect=(200,)):
        """Sends one request; returns (status, headers, body). With `body=None` no
        Content-Length is sent; a GET's body is drained and only its length returned."""
        conn = self.conn
        conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
        for name, value in {**self.headers, **(headers or {})}.items():
            conn.putheader(name, value)
        if isinstance(body, FileRange) and body.frame:
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            _send_framed(conn.sock, body, f"{method} {path}")
        elif isinstance(body, FileRange):
            conn.putheader("Content-Length", str(body.count))
            conn.endheaders()
            sent = conn.sock.sendfile(body.file, body.offset, body.count)
            if sent != body.count:
                raise HttpError(f"{method} {path}: sent {sent} of {body.count} bytes")
        elif body is not None:
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)  # head and a small body leave in one write
        else:
            conn.endheaders()
        response = conn.getresponse()
        if method == "GET" and response.status == 200:
            payload = 0
            while n := response.readinto(DRAIN):
                payload += n
        else:
            payload = response.read()
        if response.status not in expect:
            raise HttpError(f"{method} {path}: {response.status} {payload!r:.300}")
        return response.status, response.headers, payload

    def close(self):
        self.conn.close()


def _send_framed(sock, body: FileRange, what: str) -> None:
    """`body` as HTTP/1.1 chunks, each frame's bytes through sendfile."""
    end = body.offset + body.count
    for offset in range(body.offset, end, body.frame):
        count = min(body.frame, end - offset)
        sock.sendall(b"%x\r\n" % count)
        if (sent := sock.sendfile(body.file, offset, count)) != count:
            raise HttpError(f"{what}: sent {sent} of a {count}-byte frame")
        sock.sendall(b"\r\n")
    sock.sendall(b"0\r\n\r\n")


def location(headers) -> str:
    """The path and query of a Location header (Distribution sends absolute URLs)."""
    parts = urllib.parse.urlsplit(headers["Location"])
    return parts.path + (f"?{parts.query}" if parts.query else "")


def with_digest(url: str, digest: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}digest={digest}"


@dataclass
class Blob:
    """Bytes to push, in a file on tmpfs, and their digest."""

    path: Path
    size: int
    digest: str


class BlobSource:
    """Fresh random blobs of one size: one random file whose first bytes are rewritten for
    each new blob, so every run pushes content no registry has seen, without generating a
    GiB of randomness per run."""

    def __init__(self, directory: Path, size: int, name: str = ""):
        self.path = directory / (name or f"blob-{size}")
        self.size = size
        with open(self.path, "wb") as f:
            for offset in range(0, size, 64 << 20):
                f.write(os.urandom(min(64 << 20, size - offset)))

    def fresh(self) -> Blob:
        with open(self.path, "r+b") as f:
            f.write(os.urandom(32))
            f.flush()
            with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as view:
                digest = hashlib.sha256(view).hexdigest()
        return Blob(self.path, self.size, f"sha256:{digest}")


def start_upload(http: Http, repo: str) -> str:
    _, headers, _ = http.request("POST", f"/v2/{repo}/blobs/uploads/", body=b"", expect=(202,))
    return location(headers)


def push_single(http: Http, repo: str, blob: Blob) -> None:
    """One `POST ?digest=` carrying the whole blob."""
    with open(blob.path, "rb") as f:
        http.request(
            "POST",
            with_digest(f"/v2/{repo}/blobs/uploads/", blob.digest),
            {"Content-Type": "application/octet-stream"},
            FileRange(f, 0, blob.size),
            expect=(201,),
        )


def push_monolithic(http: Http, repo: str, blob: Blob) -> None:
    """POST for a session, then one PUT carrying the whole blob and its digest (what
    containerd sends)."""
    url = start_upload(http, repo)
    with open(blob.path, "rb") as f:
        http.request(
            "PUT",
            with_digest(url, blob.digest),
            {"Content-Type": "application/octet-stream"},
            FileRange(f, 0, blob.size),
            expect=(201,),
        )


def push_chunked(http: Http, repo: str, blob: Blob, chunk: int) -> None:
    """POST, one PATCH per `chunk` bytes (each to the Location the last answer gave), and a
    closing PUT with the digest and no body."""
    url = start_upload(http, repo)
    with open(blob.path, "rb") as f:
        for offset in range(0, blob.size, chunk):
            count = min(chunk, blob.size - offset)
            _, headers, _ = http.request(
                "PATCH",
                url,
                {
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{offset + count - 1}",
                },
                FileRange(f, offset, count),
                expect=(202,),
            )
            url = location(headers)
    http.request("PUT", with_digest(url, blob.digest), body=b"", expect=(201,))


# Go's HTTP client frames a body of unknown length as it reads it, 32 KiB at a time from
# io.Copy. Frames of 1 MiB keep this client's own CPU near a sendfile of the whole body
# (64 KiB frames cost it three times that, on the cores the server runs on).
STREAM_FRAME = 1 << 20


def push_streamed(http: Http, repo: str, blob: Blob) -> None:
    """POST, one PATCH streaming the whole blob without `Content-Range` or `Content-Length`
    (chunked transfer encoding), and an empty closing PUT with the digest: what docker and
    skopeo send."""
    url = start_upload(http, repo)
    with open(blob.path, "rb") as f:
        _, headers, _ = http.request(
            "PATCH",
            url,
            {"Content-Type": "application/octet-stream"},
            FileRange(f, 0, blob.size, STREAM_FRAME),
            expect=(202,),
        )
    http.request("PUT", with_digest(location(headers), blob.digest), body=b"", expect=(201,))


def pull(http: Http, repo: str, digest: str, size: int) -> None:
    _, _, received = http.request("GET", f"/v2/{repo}/blobs/{digest}")
    if received != size:
        raise HttpError(f"GET {digest}: {received} bytes, expected {size}")


def push_bytes(http: Http, repo: str, data: bytes) -> str:
    """Monolithic push of a small in-memory blob; returns its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    url = start_upload(http, repo)
    http.request("PUT", with_digest(url, digest), {"Content-Type": "application/octet-stream"}, data, expect=(201,))
    return digest


def seed_image(base_url: str, repo: str, tag: str, layer: bytes, headers=None) -> dict:
    """Pushes a config, `layer` and a manifest tagged `tag`, with `headers` on every request;
    returns their digests."""
    http = Http(base_url, headers=headers)
    try:
        config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
        config_digest = push_bytes(http, repo, config)
        layer_digest = push_bytes(http, repo, layer)
        manifest = (
            '{"schemaVersion":2,"mediaType":"%s",'
            '"config":{"mediaType":"%s","digest":"%s","size":%d},'
            '"layers":[{"mediaType":"%s","digest":"%s","size":%d}]}'
            % (OCI_MANIFEST, OCI_CONFIG, config_digest, len(config), OCI_LAYER, layer_digest, len(layer))
        ).encode()
        http.request("PUT", f"/v2/{repo}/manifests/{tag}", {"Content-Type": OCI_MANIFEST}, manifest, expect=(201,))
        return {"layer": layer_digest, "manifest": "sha256:" + hashlib.sha256(manifest).hexdigest()}
    finally:
        http.close()


# --- concurrent clients -------------------------------------------------------------------

def _client_worker(base_url, steps, ready, go, results):
    """One client process: connects, waits for the start signal, runs its steps in turn on
    its connection and reports (start, end) of every step on the shared monotonic clock."""
    http, connected = Http(base_url, timeout=600), False
    try:
        http.request("GET", "/v2/")  # connect before the clock starts
        connected = True
        ready.release()
        go.wait()
        spans = []
        for step in steps:
            start = time.monotonic()
            step(http)
            spans.append((start, time.monotonic()))
        results.put(("ok", spans))
    except Exception as e:  # reported to the parent, which raises
        results.put(("error", repr(e)))
        if not connected:
            ready.release()
    finally:
        http.close()


def run_clients(base_url: str, work: list[list]) -> list[tuple[float, float]]:
    """One process per list of steps in `work` (processes, not threads, so the GIL does not
    serialise the clients), each step `step(http)` on that process's connection; all start
    at once once every one is connected. The (start, end) of every step."""
    ctx = multiprocessing.get_context("fork")
    ready, go, results = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_client_worker, args=(base_url, steps, ready, go, results)) for steps in work]
    for w in workers:
        w.start()
    try:
        for _ in workers:
            if not ready.acquire(timeout=120):
                raise HttpError("a client did not connect within 120 s")
        go.set()
        spans = []
        for _ in workers:
            status, value = results.get(timeout=900)
            if status != "ok":
                raise HttpError(f"a client failed: {value}")
            spans += value
        return spans
    finally:
        go.set()
        for w in workers:
            w.join(timeout=60)
            if w.is_alive():
                w.kill()  # our own child, by its handle
                w.join()


def wall(spans) -> float:
    """From the first step's start to the last one's end."""
    return max(end for _, end in spans) - min(start for start, _ in spans)


def push_swarm(base_url: str, repo: str, count: int, size: int, clients: int) -> dict:
    """`count` fresh blobs of `size` bytes pushed by `clients` processes at once. Returns
    blobs/s over the wall time from the first push's start to the last one's end, and
    per-blob latencies."""
    blobs = [os.urandom(size) for _ in range(count)]
    work = [[lambda http, data=data: push_bytes(http, repo, data) for data in blobs[i::clients]] for i in range(clients)]
    spans = run_clients(base_url, work)
    latencies = sorted(end - start for start, end in spans)
    return {"blobs_s": count / wall(spans), "p50_ms": percentile(latencies, 50) * 1e3, "p99_ms": percentile(latencies, 99) * 1e3}


def push_concurrently(base_url: str, repo: str, blobs: list[Blob]) -> float:
    """Every blob pushed at once (POST, then PUT with the body), one client each; the
    aggregate MiB/s."""
    spans = run_clients(base_url, [[lambda http, blob=blob: push_monolithic(http, repo, blob)] for blob in blobs])
    return sum(blob.size for blob in blobs) / (1 << 20) / wall(spans)


def pull_concurrently(base_url: str, repo: str, digests: list[str], size: int) -> float:
    """Every blob (of `size` bytes) pulled at once, one client each; the aggregate MiB/s."""
    spans = run_clients(base_url, [[lambda http, d=d: pull(http, repo, d, size)] for d in digests])
    return len(digests) * size / (1 << 20) / wall(spans)


class IdleConnections:
    """`count` keep-alive connections that each made one GET of `path` and then stay open,
    sending nothing."""

    def __init__(self, base_url: str, path: str, headers: dict, count: int):
        parts = urllib.parse.urlsplit(base_url)
        self.connections = []
        try:
            for _ in range(count):
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                self.connections.append(conn)
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise HttpError(f"GET {path} on an idle connection: {response.status}")
        except BaseException:
            self.close()
            raise

    def open_count(self) -> int:
        """How many the server has not closed (a closed one reads end of file at once)."""
        count = 0
        for conn in self.connections:
            try:
                conn.sock.settimeout(0)  # with a timeout, recv would wait for data first
                if conn.sock.recv(1, socket.MSG_PEEK) == b"":
                    continue
            except BlockingIOError:
                pass
            except OSError:
                continue
            count += 1
        return count

    def close(self):
        for conn in self.connections:
            conn.close()


def percentile(sorted_values, p: float) -> float:
    """Nearest-rank percentile."""
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]


# --- wrk ---------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * _UNITS[unit]


def wrk(url: str, headers=None, connections: int = 32, seconds: float = 5, timeout: float = 2) -> dict:
    """Requests/s and p50/p99 latency of GETs from `wrk`. Any non-2xx answer or socket error
    (an answer slower than `timeout` seconds among them) fails the run: a fast error is not
    a fast registry."""
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout}s", "--latency"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    report = subprocess.run(argv + [url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in report or "Socket errors" in report:
        raise HttpError(f"wrk {url}:\n{report}")
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", report, re.M))
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", report, re.M)
    if len(latency) != 2 or not rps:
        raise HttpError(f"unexpected wrk report for {url}:\n{report}")
    return _checked(url, report, {
        "rps": float(rps.group(1)),
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
    })


def hey(url: str, method: str, headers=None, connections: int = 32, seconds: float = 5) -> dict:
    """The same figures from `hey`, for HEAD: wrk 4.1 waits for a body after a HEAD answer
    that carries a Content-Length, and never completes a request. hey spends more CPU per
    request than wrk, so on a shared machine it caps a fast server lower."""
    argv = ["hey", "-z", f"{seconds}s", "-c", str(connections), "-m", method]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    report = subprocess.run(argv + [url], capture_output=True, text=True, check=True).stdout
    statuses = re.findall(r"^\s+\[(\d+)\]\s+\d+ responses", report, re.M)
    if not statuses or any(not s.startswith("2") for s in statuses) or "Error distribution" in report:
        raise HttpError(f"hey {method} {url}:\n{report}")
    latency = dict(re.findall(r"^\s+(50|99)% in ([\d.]+) secs", report, re.M))
    return _checked(url, report, {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", report).group(1)),
        "p50_ms": float(latency["50"]) * 1e3,
        "p99_ms": float(latency["99"]) * 1e3,
    })


def _checked(url: str, report: str, figures: dict) -> dict:
    if not figures["rps"] > 0:
        raise HttpError(f"no request completed against {url}:\n{report}")
    return figures
