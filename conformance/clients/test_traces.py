"""Traces: with `[observability.tracing] endpoint`, each registry request is a span sent over
OTLP/HTTP to a collector (a receiver in the test, decoding the protobuf exports), with its
storage, lock and cache steps as child spans naming what they touched. A client's W3C
`traceparent` is continued, an invalid one starts a new trace (the request is served all
the same), and `sampling_rate` decides for requests whose client did not. Only the push's
trace depends on the store; the rest runs in the suite's fs run."""

from __future__ import annotations

import secrets
import ssl
import time

import pytest

from harness.auth import push_config_image
from harness.oci import Client
from harness.otlp_receiver import OtlpReceiver, Span
from harness.pki import Ca
from harness.process import free_port
from test_observability import MANIFESTS

pytestmark = pytest.mark.stowage_only

# opentelemetry.proto.trace.v1.Span.SpanKind
SERVER, CLIENT = 2, 3
UPLOADS = "/v2/{name}/blobs/uploads/"


@pytest.fixture
def collector():
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def quick_export(monkeypatch):
    """The servers started after it send their spans every 50 ms, not every 5 s."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")


def start(registries, registry_kind, tmp_path, endpoint: str, rate: float | None = None,
          ca_bundle=None):
    toml = f'[observability.tracing]\nendpoint = "{endpoint}"\n'
    if rate is not None:
        toml += f"sampling_rate = {rate}\n"
    if ca_bundle is not None:
        toml += f'ca_bundle = "{ca_bundle}"\n'
    return registries.start(registry_kind, tmp_path / "storage", server_toml=toml)


def only(spans: list[Span], name: str) -> Span:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{len(found)} spans named {name!r}: {[s.name for s in spans]}"
    return found[0]


def children(spans: list[Span], parent: Span) -> list[Span]:
    found = [s for s in spans if s.parent_span_id == parent.span_id]
    assert all(s.trace_id == parent.trace_id for s in found)
    return found


def by_request_id(request_id: str):
    """Finds the request span of the request sent with this X-Request-Id."""
    def find(spans):
        return next((s for s in spans if s.attributes.get("stowage.request_id") == request_id),
                    None)
    return find


def test_a_push_is_a_trace_whose_spans_name_its_storage_writes(
        registries, registry_kind, tmp_path, collector, repo):
    reg = start(registries, registry_kind, tmp_path, collector.url)
    client = Client(reg.url)
    response, manifest_digest = push_config_image(client, repo, "v1", b"traced")
    assert response.status_code == 201, response.text
    config_digest = client.get_manifest(repo, "v1").json()["config"]["digest"]
    assert client.request("GET", "/healthz").status_code == 200
    # Spans go out in batches every few seconds; a graceful stop sends those still queued.
    reg.stop()
    spans = collector.received()
    assert collector.rejected == 0
    assert collector.content_types == {"application/x-protobuf"}
    assert {s.service for s in spans} == {"stowage"}

    # One span per registry request (the harness's start-up polls are GET /v2/); the
    # server's own endpoints are not traced.
    requests = [s for s in spans if s.kind == SERVER]
    assert sorted(s.name for s in requests if s.name != "GET /v2/") == [
        f"GET {MANIFESTS}", f"POST {UPLOADS}", f"PUT {MANIFESTS}"]
    assert all(s.parent_span_id == "" for s in requests)

    put = only(spans, f"PUT {MANIFESTS}")
    assert put.attributes["http.route"] == MANIFESTS
    assert put.attributes["http.response.status_code"] == 201
    assert put.attributes["stowage.repository"] == repo
    steps = children(spans, put)
    assert steps and all(s.kind == CLIENT and not s.error for s in steps)
    writes = [s.attributes["stowage.storage.key"] for s in steps if s.name == "storage.write"]
    assert any(manifest_digest.split(":")[1] in key for key in writes), writes
    assert any(key.endswith("/_manifests/tags/v1/current/link") for key in writes), writes
    names = {s.name for s in steps}
    assert {"lock.acquire", "lock.release", "cache.put"} <= names, names
    assert any(s.attributes.get("stowage.lock.key", "").endswith(f"{repo}/v1") for s in steps)

    upload = only(spans, f"POST {UPLOADS}")
    assert upload.attributes["http.response.status_code"] == 201
    blob_writes = [s.attributes["stowage.storage.key"] for s in children(spans, upload)
                   if s.name.startswith("storage.write")]
    assert any(config_digest.split(":")[1] in key for key in blob_writes), blob_writes

    get = only(spans, f"GET {MANIFESTS}")
    lookups = {(s.name, s.attributes["stowage.outcome"]) for s in children(spans, get)}
    assert ("cache.get", "hit") in lookups, lookups


@pytest.mark.fs_only
def test_a_clients_traceparent_is_continued_and_a_bad_one_starts_a_new_trace(
        registries, registry_kind, tmp_path, collector, quick_export, repo):
    reg = start(registries, registry_kind, tmp_path, collector.url)
    client = Client(reg.url)
    assert push_config_image(client, repo, "v1")[0].status_code == 201

    def get(request_id: str, traceparent: str):
        r = client.request(
            "GET", f"/v2/{repo}/manifests/v1",
            headers={"traceparent": traceparent, "X-Request-Id": request_id})
        assert r.status_code == 200, (traceparent, r.text)

    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    get("continued", f"00-{trace_id}-{parent_id}-01")
    span = collector.wait_for(by_request_id("continued"), "span of the continued request")
    assert (span.trace_id, span.parent_span_id) == (trace_id, parent_id)
    assert span.kind == SERVER
    assert children(collector.received(), span), "its steps are in the client's trace too"

    bad = {
        "zero-trace-id": f"00-{'0' * 32}-{parent_id}-01",
        "zero-parent": f"00-{trace_id}-{'0' * 16}-01",
        "short": f"00-{trace_id[:30]}-{parent_id}-01",
        "signed": f"00-+{trace_id[1:]}-{parent_id}-01",
        "uppercase": f"00-{trace_id.upper()}-{parent_id}-01",
        "not-hex": f"00-{'z' * 32}-{parent_id}-01",
        "version-ff": f"ff-{trace_id}-{parent_id}-01",
        "garbage": "yes please",
    }
    for name, traceparent in bad.items():
        get(name, traceparent)
    for name in bad:
        span = collector.wait_for(by_request_id(name), f"span of the {name} request")
        assert span.parent_span_id == "", name
        assert span.trace_id not in (trace_id, "0" * 32), name

    # The client's decision not to sample is followed.
    get("unsampled", f"00-{secrets.token_hex(16)}-{parent_id}-00")
    get("after", f"00-{secrets.token_hex(16)}-{parent_id}-01")
    collector.wait_for(by_request_id("after"), "span of the last request")
    assert by_request_id("unsampled")(collector.received()) is None


@pytest.mark.fs_only
def test_sampling_rate_zero_traces_only_what_clients_ask_for(
        registries, registry_kind, tmp_path, collector, quick_export):
    reg = start(registries, registry_kind, tmp_path, collector.url, rate=0.0)
    client = Client(reg.url)
    for i in range(20):
        assert client.request("GET", "/v2/", headers={"X-Request-Id": f"plain-{i}"}).ok
    traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    assert client.request("GET", "/v2/", headers={"X-Request-Id": "asked",
                                                  "traceparent": traceparent}).ok
    collector.wait_for(by_request_id("asked"), "span of the request whose client sampled it")
    requests = [s for s in collector.received() if s.kind == SERVER]
    assert [s.attributes["stowage.request_id"] for s in requests] == ["asked"]


@pytest.mark.fs_only
def test_an_unreachable_collector_costs_the_requests_nothing(
        registries, registry_kind, tmp_path, quick_export, repo):
    reg = start(registries, registry_kind, tmp_path, f"http://127.0.0.1:{free_port()}/v1/traces")
    client = Client(reg.url)
    assert push_config_image(client, repo, "v1")[0].status_code == 201
    assert client.get_manifest(repo, "v1").status_code == 200
    deadline = time.monotonic() + 10
    while "sending spans to the trace collector failed" not in reg.log_tail(200):
        assert time.monotonic() < deadline, f"no warning in the log:\n{reg.log_tail()}"
        time.sleep(0.05)
    assert reg.running()


@pytest.mark.fs_only
def test_an_https_collector_is_trusted_through_its_ca_bundle_and_not_without(
        registries, registry_kind, tmp_path, quick_export):
    ca = Ca("collector CA")
    cert, key = ca.server().write(tmp_path / "collector.crt", tmp_path / "collector.key")
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(ca.cert_pem)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    collector = OtlpReceiver(tls=tls).start()
    try:
        assert collector.url.startswith("https://")
        # Not trusted: nothing arrives, the requests are served all the same.
        untrusting = start(registries, registry_kind, tmp_path / "untrusting", collector.url)
        assert Client(untrusting.url).request("GET", "/v2/", headers={"X-Request-Id": "unseen"}).ok
        deadline = time.monotonic() + 10
        while "sending spans to the trace collector failed" not in untrusting.log_tail(200):
            assert time.monotonic() < deadline, f"no warning in the log:\n{untrusting.log_tail()}"
            time.sleep(0.05)
        assert by_request_id("unseen")(collector.received()) is None
        trusting = start(registries, registry_kind, tmp_path / "trusting", collector.url,
                         ca_bundle=bundle)
        assert Client(trusting.url).request("GET", "/v2/", headers={"X-Request-Id": "seen"}).ok
        collector.wait_for(by_request_id("seen"), "span sent over https")
    finally:
        collector.stop()
