"""A small OpenTelemetry collector for the tests: takes OTLP/HTTP trace exports (protobuf,
decoded with the `opentelemetry-proto` package) on a loopback port and keeps their spans.

Run as a program (`python -m harness.otlp_receiver PORT` in conformance/) it serves until
killed and takes every export without decoding it, costing the benchmarks' machine as
little as a collector can."""

from __future__ import annotations

import ssl
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse)

from harness.process import free_port

PATH = "/v1/traces"


@dataclass
class Span:
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root span
    name: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind
    attributes: dict
    service: str  # the resource's service.name
    error: bool  # status code ERROR


def _value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def decode(body: bytes) -> list[Span]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(Span(
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    name=span.name,
                    kind=span.kind,
                    attributes={a.key: _value(a.value) for a in span.attributes},
                    service=resource.get("service.name", ""),
                    error=span.status.code == span.status.STATUS_CODE_ERROR,
                ))
    return spans


class OtlpReceiver:
    """Takes exports at `url` and keeps their spans; with `keep=False`, answers without
    decoding them. A body that is not an export is answered 400 and counted in
    `rejected`."""

    def __init__(self, port: int | None = None, keep: bool = True,
                 tls: ssl.SSLContext | None = None):
        """`tls`: serve https with this context."""
        self.port = port or free_port()
        self.scheme = "https" if tls else "http"
        self.keep = keep
        self.spans: list[Span] = []
        self.rejected = 0
        self.content_types: set[str] = set()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    if self.path != PATH:
                        raise ValueError(f"posted to {self.path}")
                    spans = decode(body) if receiver.keep else []
                except Exception:  # a malformed body, whatever the decoder says
                    with receiver.lock:
                        receiver.rejected += 1
                    self.send_response(400)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.content_types.add(self.headers.get("Content-Type", ""))
                    receiver.spans.extend(spans)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if tls:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{PATH}"

    def start(self) -> "OtlpReceiver":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def received(self) -> list[Span]:
        with self.lock:
            return list(self.spans)

    def wait_for(self, found, what: str, timeout: float = 10.0):
        """Waits until `found(spans)` is truthy; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            result = found(self.received())
            if result or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert result, f"no {what} within {timeout}s; got {[s.name for s in self.received()]}"
        return result


if __name__ == "__main__":
    OtlpReceiver(port=int(sys.argv[1]), keep=False).server.serve_forever()
