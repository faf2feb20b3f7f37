"""A fault-injecting HTTP proxy in front of the S3 server.

It forwards every request, logs it (method, key, S3 action), and on purpose fails some with
S3's retryable answers (500 InternalError, 503 ServiceUnavailable, 503 SlowDown) or holds
them back longer than the client's attempt timeout. Faults are drawn from a seeded random
source (`Faults`), or scripted for the next requests of one S3 action (`inject`).

It can also play a store that does not do conditional writes (`conditions`): one that
ignores If-Match / If-None-Match on writes (the proxy strips them and signs the request
again, which moto takes; Garage answers 403 "Invalid signature", and ignores them itself), or one that rejects them with
`501 NotImplemented`."""

from __future__ import annotations

import http.client
import random
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

ERRORS = {
    "InternalError": 500,
    "ServiceUnavailable": 503,
    "SlowDown": 503,
}
# What the proxy does with a write's conditional headers.
FORWARD, STRIP, REJECT = "forward", "strip", "reject"
CONDITIONAL = ("if-match", "if-none-match")
# Headers a new signature replaces.
SIGNATURE = {"authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}
COPY_BUFFER = 1 << 20


@dataclass
class Faults:
    """Random faults: each request fails with probability `fail`, answering one of `errors`,
    else is delayed by `delay_secs` with probability `delay`. `actions` limits both to those
    S3 actions (None: every request)."""

    fail: float = 0.0
    delay: float = 0.0
    delay_secs: float = 0.0
    errors: tuple[str, ...] = tuple(ERRORS)
    actions: frozenset[str] | None = None
    seed: int = 1


@dataclass
class Scripted:
    """The next `count` requests of `action` fail with `error`, or wait `delay_secs`."""

    action: str
    count: int
    error: str | None = None
    delay_secs: float = 0.0


@dataclass(frozen=True)
class Logged:
    method: str
    bucket: str
    key: str
    query: dict
    action: str
    fault: str | None
    status: int | None
    # The request's conditional headers (If-Match, If-None-Match), by lower-case name.
    conditions: tuple[tuple[str, str], ...] = ()
    # When the request reached the proxy (time.monotonic()).
    arrived: float = 0.0


def s3_action(method: str, key: str, query: dict, headers) -> str:
    """The S3 API action a request is, from its shape (path-style addressing)."""
    copy = "x-amz-copy-source" in headers
    if method == "PUT":
        if "partNumber" in query:
            return "UploadPartCopy" if copy else "UploadPart"
        return "CopyObject" if copy else "PutObject"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        if "delete" in query:
            return "DeleteObjects"
        return "Post"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    if method == "HEAD":
        return "HeadObject" if key else "HeadBucket"
    if not key:
        return "ListMultipartUploads" if "uploads" in query else "ListObjects"
    return "ListParts" if "uploadId" in query else "GetObject"


class FaultProxy:
    """Listens on a free loopback port; `endpoint` goes into stowage's S3 settings."""

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.faults = Faults()
        self.conditions = FORWARD
        self._scripted: list[Scripted] = []
        self._log: list[Logged] = []
        self._lock = threading.Lock()
        # Signalled whenever a request finishes, for `wait_idle`.
        self._finished = threading.Condition(self._lock)
        self._in_flight = 0
        self._random = random.Random(self.faults.seed)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # Configuration.

    def set_faults(self, faults: Faults) -> None:
        with self._lock:
            self.faults = faults
            self._random = random.Random(faults.seed)

    def set_conditions(self, mode: str) -> None:
        """FORWARD, STRIP (a store that ignores them) or REJECT (one that answers 501)."""
        assert mode in (FORWARD, STRIP, REJECT), mode
        self.conditions = mode

    def inject(self, scripted: Scripted) -> None:
        with self._lock:
            self._scripted.append(scripted)

    def clear(self) -> None:
        """No faults, nothing scripted, an empty log."""
        with self._lock:
            self.faults = Faults()
            self.conditions = FORWARD
            self._scripted.clear()
            self._log.clear()

    # What happened.

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Returns once no request is being handled: after a client is killed, a request it
        sent may still be forwarded and logged, and a test must not count it as a later one's."""
        with self._finished:
            if not self._finished.wait_for(lambda: self._in_flight == 0, timeout):
                raise TimeoutError(f"{self._in_flight} requests still in flight")

    def log(self) -> list[Logged]:
        with self._lock:
            return list(self._log)

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.log():
            counts[entry.action] = counts.get(entry.action, 0) + 1
        return dict(sorted(counts.items()))

    # The proxy.

    def _decide(self, action: str) -> tuple[str | None, float]:
        """(error to answer, seconds to wait) for one request."""
        with self._lock:
            for script in self._scripted:
                if script.action == action and script.count > 0:
                    script.count -= 1
                    return script.error, script.delay_secs
            faults = self.faults
            if faults.actions is not None and action not in faults.actions:
                return None, 0.0
            draw = self._random.random()
            if draw < faults.fail:
                return self._random.choice(faults.errors), 0.0
            if draw < faults.fail + faults.delay:
                return None, faults.delay_secs
            return None, 0.0

    def _record(self, entry: Logged) -> None:
        with self._lock:
            self._log.append(entry)

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002 - the base class's name
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        chunk = self.rfile.read(size)
                        self.rfile.readline()
                        if size == 0:
                            return b"".join(chunks)
                        chunks.append(chunk)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _client_gone(self) -> bool:
                readable, _, _ = select.select([self.connection], [], [], 0)
                if not readable:
                    return False
                try:
                    return self.connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    return True

            def _handle(self):
                with proxy._finished:
                    proxy._in_flight += 1
                try:
                    self._proxy()
                except (ConnectionError, socket.timeout):
                    # The client or the S3 server hung up; the client sees a failed attempt.
                    self.close_connection = True
                finally:
                    with proxy._finished:
                        proxy._in_flight -= 1
                        proxy._finished.notify_all()

            def _proxy(self):
                arrived = time.monotonic()
                url = urlsplit(self.path)
                bucket, _, key = unquote(url.path).lstrip("/").partition("/")
                query = parse_qs(url.query, keep_blank_values=True)
                action = s3_action(self.command, key, query, self.headers)
                body = self._body()
                error, delay = proxy._decide(action)
                conditions = tuple(
                    (name.lower(), value) for name, value in self.headers.items()
                    if name.lower() in CONDITIONAL
                )
                entry = dict(method=self.command, bucket=bucket, key=key, query=query,
                             action=action, conditions=conditions, arrived=arrived)
                mode = proxy.conditions if conditions and self.command in ("PUT", "POST") else FORWARD
                if mode == REJECT:
                    proxy._record(Logged(**entry, fault="condition rejected", status=501))
                    self._answer_error("NotImplemented", 501)
                    return
                # Every entry is logged before the client hears the answer, so a test that
                # reads the log after its request finished sees every attempt.
                if error:
                    proxy._record(Logged(**entry, fault=error, status=ERRORS[error]))
                    self._answer_error(error)
                    return
                if delay:
                    time.sleep(delay)
                    if self._client_gone():
                        # The client gave up on this attempt: the request is lost, as on a
                        # network that dropped it.
                        proxy._record(Logged(**entry, fault="delayed, abandoned", status=None))
                        self.close_connection = True
                        return
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                try:
                    response = self._forward(upstream, body, strip=mode == STRIP)
                    fault = "delayed" if delay else ("condition stripped" if mode == STRIP else None)
                    proxy._record(Logged(**entry, fault=fault, status=response.status))
                    self._relay(response)
                finally:
                    upstream.close()

            def _answer_error(self, code: str, status: int | None = None) -> None:
                payload = (
                    '<?xml version="1.0" encoding="UTF-8"?>'
                    f"<Error><Code>{code}</Code><Message>injected by the test proxy</Message>"
                    "<RequestId>fault-proxy</RequestId></Error>"
                ).encode()
                self.send_response(status or ERRORS[code])
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _forward(self, upstream, body: bytes, strip: bool) -> http.client.HTTPResponse:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                if strip:
                    headers = resigned(self.command, self.path, headers, body)
                upstream.request(self.command, self.path, body=body, headers=headers)
                return upstream.getresponse()

            def _relay(self, response: http.client.HTTPResponse) -> None:
                self.send_response(response.status, response.reason)
                length = response.getheader("Content-Length")
                for name, value in response.getheaders():
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                payload = None
                if length is None and self.command != "HEAD":
                    payload = response.read()
                    length = str(len(payload))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if payload is not None:
                    self.wfile.write(payload)
                elif self.command != "HEAD":
                    while chunk := response.read(COPY_BUFFER):
                        self.wfile.write(chunk)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler


@dataclass
class ActionCount:
    """Requests by S3 action, for the figures a test prints."""

    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __str__(self) -> str:
        detail = ", ".join(f"{action} {n}" for action, n in self.counts.items())
        return f"{self.total} requests ({detail})"


def resigned(method: str, path: str, headers: dict, body: bytes) -> dict:
    """`headers` without the conditional ones, signed again (SigV4, the tests' key) so the S3
    server takes the request as the client's."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from harness.services import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY

    kept = {k: v for k, v in headers.items()
            if k.lower() not in CONDITIONAL and k.lower() not in SIGNATURE}
    host = next(v for k, v in headers.items() if k.lower() == "host")
    request = AWSRequest(method=method, url=f"http://{host}{path}", data=body, headers=kept)
    S3SigV4Auth(Credentials(S3_ACCESS_KEY, S3_SECRET_KEY), "s3", S3_REGION).add_auth(request)
    return dict(request.headers.items())
