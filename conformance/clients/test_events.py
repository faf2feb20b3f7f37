"""Events: `[event_webhook.<name>]` webhooks hear pushes and deletes as signed CloudEvents.
A receiver in the test records, refuses (403), fails (500), is slow, or is down; each policy
keeps its promise: `required` (nothing changes unless the receiver takes the event),
`optional` (the push stands; the failure is counted), `async` (queued before the response,
delivered after it, retried, and delivered even when the server is SIGKILLed right after
acknowledging)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness.auth import identities_toml, push_config_image
from harness.oci import Client, error_code, sha256_digest
from harness.process import free_port
from test_observability import scrape, value

pytestmark = pytest.mark.stowage_only

TOKEN = "receiver-secret"


class Receiver:
    """A webhook receiver on a loopback port: `mode` is what it answers (record: 200,
    refuse: 403, fail: 500); `delay` seconds before answering; `fail_first` requests fail
    (500) before it records."""

    def __init__(self, port: int | None = None, mode: str = "record", delay: float = 0.0,
                 fail_first: int = 0):
        self.port = port or free_port()
        self.mode, self.delay, self.fail_first = mode, delay, fail_first
        self.events: list[dict] = []
        self.requests = 0
        self.lock = threading.Lock()
        self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(receiver.delay)
                with receiver.lock:
                    receiver.requests += 1
                    failing = receiver.requests <= receiver.fail_first
                    status = {"record": 200, "refuse": 403, "fail": 500}[receiver.mode]
                    if failing:
                        status = 500
                    if status == 200:
                        receiver.events.append({
                            "body": body,
                            "json": json.loads(body),
                            "content_type": self.headers.get("Content-Type"),
                            "signature": self.headers.get("Stowage-Signature"),
                        })
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def of_type(self, kind: str, repository: str | None = None) -> list[dict]:
        with self.lock:
            return [e["json"] for e in self.events if e["json"]["type"] == kind
                    and (repository is None or e["json"]["data"]["repository"] == repository)]

    def wait_for(self, kind: str, repository: str, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.of_type(kind, repository)
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no {kind} event for {repository} within {timeout}s "
                             f"({self.requests} requests received)")


@pytest.fixture
def receivers():
    started: list[Receiver] = []

    def start(**kw) -> Receiver:
        receiver = Receiver(**kw).start()
        started.append(receiver)
        return receiver

    start.started = started
    yield start
    for receiver in started:
        receiver.stop()


def webhook_toml(name: str, url: str, policy: str, events: list[str] | None = None,
                 repository_filter: str | None = None, token: str | None = TOKEN,
                 timeout_secs: int = 2, max_retries: int = 0) -> str:
    lines = [f"[event_webhook.{name}]", f'url = "{url}"', f'policy = "{policy}"',
             f"timeout_secs = {timeout_secs}", f"max_retries = {max_retries}"]
    if events is not None:
        lines.append("events = [" + ", ".join(f'"{e}"' for e in events) + "]")
    if repository_filter is not None:
        lines.append(f"repository_filter = '{repository_filter}'")
    if token is not None:
        lines.append(f'token = "{token}"')
    return "\n" + "\n".join(lines) + "\n"


def start(registries, registry_kind, tmp_path, *webhooks: str):
    return registries.start(registry_kind, tmp_path / "storage", server_toml="".join(webhooks))


def verify(event: dict) -> None:
    expected = "sha256=" + hmac.new(TOKEN.encode(), event["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(event["signature"] or "", expected), event["signature"]


def test_required_webhook_gates_the_push(registries, registry_kind, tmp_path, repo, receivers):
    refusing = receivers(mode="refuse")
    down = free_port()  # nothing listens here
    reg = start(registries, registry_kind, tmp_path,
                webhook_toml("gate", refusing.url, "required", ["manifest_pushed"],
                             repository_filter="conformance/refused-.*"),
                webhook_toml("down", f"http://127.0.0.1:{down}/hook", "required",
                             ["manifest_pushed"], repository_filter="conformance/down-.*"),
                identities_toml({"alice": "alice-pw"}))
    client = Client(reg.url, basic=("alice", "alice-pw"))
    refused_repo, down_repo = f"conformance/refused-{repo[-6:]}", f"conformance/down-{repo[-6:]}"
    r, _ = push_config_image(client, refused_repo, "v1", b"gated")
    assert r.status_code == 403 and error_code(r) == "DENIED", r.text
    r, _ = push_config_image(client, down_repo, "v1", b"gated")
    assert r.status_code == 503 and error_code(r) == "UNAVAILABLE", r.text
    for name in (refused_repo, down_repo):
        assert client.get_manifest(name, "v1").status_code == 404
        tags = client.request("GET", f"/v2/{name}/tags/list")
        assert tags.status_code == 404 or tags.json().get("tags") in (None, []), tags.text
    assert refusing.requests == 1

    refusing.mode = "record"
    r, digest = push_config_image(client, refused_repo, "v1", b"gated")
    assert r.status_code == 201, r.text
    assert client.get_manifest(refused_repo, "v1").status_code == 200
    # Told before the response.
    event = refusing.wait_for("io.stowage.manifest.pushed", refused_repo, timeout=0.1)
    assert event["data"]["digest"] == digest and event["data"]["tags"] == ["v1"]
    assert event["data"]["identity"] == "alice"


def test_optional_failure_keeps_the_push_and_is_counted(registries, registry_kind, tmp_path,
                                                        repo, receivers):
    failing = receivers(mode="fail")
    reg = start(registries, registry_kind, tmp_path,
                webhook_toml("best_effort", failing.url, "optional", ["manifest_pushed"],
                             max_retries=1))
    before = scrape(reg.url)
    r, _ = push_config_image(Client(reg.url), repo, "v1", b"optional")
    assert r.status_code == 201, r.text
    assert failing.requests == 2  # the attempt and its one retry, before the response
    after = scrape(reg.url)
    labels = {"webhook": "best_effort", "policy": "optional", "outcome": "failed"}
    name = "stowage_event_deliveries_total"
    assert value(after, name, **labels) - value(before, name, **labels) == 2


def test_async_delivers_after_a_quick_response_and_retries(registries, registry_kind, tmp_path,
                                                           repo, receivers):
    slow = receivers(delay=2.0)
    flaky = receivers(fail_first=2)
    reg = start(registries, registry_kind, tmp_path,
                webhook_toml("slow", slow.url, "async", ["manifest_pushed"], timeout_secs=10),
                webhook_toml("flaky", flaky.url, "async", ["manifest_pushed"], max_retries=5))
    started = time.monotonic()
    r, digest = push_config_image(Client(reg.url), repo, "v1", b"async")
    assert r.status_code == 201, r.text
    assert time.monotonic() - started < 1.5, "the response waited for a slow async receiver"
    for receiver in (slow, flaky):
        event = receiver.wait_for("io.stowage.manifest.pushed", repo)
        assert event["data"]["digest"] == digest
    assert flaky.requests >= 3


def test_body_signature_filter_and_event_selection(registries, registry_kind, tmp_path, repo,
                                                   receivers):
    everything = receivers()
    tags_only = receivers()
    reg = start(registries, registry_kind, tmp_path,
                webhook_toml("everything", everything.url, "optional"),
                webhook_toml("tags_only", tags_only.url, "optional", ["tag_deleted"],
                             repository_filter="conformance/kept-.*"))
    client = Client(reg.url)
    kept, other = f"conformance/kept-{repo[-6:]}", f"conformance/other-{repo[-6:]}"
    pushed = {}
    for name in (kept, other):
        r, pushed[name] = push_config_image(client, name, "v1", name.encode())
        assert r.status_code == 201, r.text
        r = client.request("DELETE", f"/v2/{name}/manifests/v1")
        assert r.status_code == 202, r.text

    # The filter and the event list: one tag_deleted, for the matching repository.
    assert [e["data"]["repository"] for e in tags_only.of_type("io.stowage.tag.deleted")] \
        == [kept]
    assert not [e for e in tags_only.events if e["json"]["type"] != "io.stowage.tag.deleted"]

    created = everything.of_type("io.stowage.repository.created", kept)
    assert len(created) == 1, created
    blob = everything.of_type("io.stowage.blob.uploaded", kept)
    assert len(blob) == 1 and blob[0]["data"]["size"] > 0
    assert blob[0]["data"]["digest"].startswith("sha256:")
    manifest = everything.of_type("io.stowage.manifest.pushed", kept)[0]
    assert manifest["specversion"] == "1.0" and manifest["source"] == "/stowage"
    assert manifest["id"] and manifest["time"].endswith("Z")
    assert manifest["datacontenttype"] == "application/json"
    data = manifest["data"]
    assert data["repository"] == kept and data["reference"] == "v1"
    assert data["digest"] == pushed[kept]
    assert data["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    manifest_bytes = client.get_manifest(kept, pushed[kept]).content
    assert data["size"] == len(manifest_bytes) and sha256_digest(manifest_bytes) == data["digest"]
    assert "identity" not in data  # anonymous push
    deleted = everything.of_type("io.stowage.tag.deleted", kept)[0]["data"]
    assert deleted["tags"] == ["v1"] and deleted["digest"] == pushed[kept]
    r = client.request("DELETE", f"/v2/{kept}/manifests/{pushed[kept]}")
    assert r.status_code == 202, r.text
    assert everything.of_type("io.stowage.manifest.deleted", kept)[0]["data"]["digest"] \
        == pushed[kept]

    for event in everything.events + tags_only.events:
        assert event["content_type"].startswith("application/cloudevents+json")
        verify(event)
    tampered = dict(everything.events[0], body=everything.events[0]["body"] + b" ")
    with pytest.raises(AssertionError):
        verify(tampered)


def test_async_event_survives_sigkill_right_after_the_acknowledgement(
        registries, registry_kind, tmp_path, repo, receivers):
    receiver = Receiver()  # not started: the receiver is down
    hook = webhook_toml("durable", receiver.url, "async", ["manifest_pushed"], max_retries=20)
    reg = start(registries, registry_kind, tmp_path, hook)
    r, digest = push_config_image(Client(reg.url), repo, "v1", b"durable")
    assert r.status_code == 201, r.text
    reg.kill()
    restarted = registries.start(reg.kind, reg.storage, reg.stores_toml, server_toml=hook)
    receivers.started.append(receiver.start())
    event = receiver.wait_for("io.stowage.manifest.pushed", repo, timeout=30.0)
    assert event["data"]["digest"] == digest
    # Delivered once it was taken: the queue is empty, nothing arrives twice.
    time.sleep(1.0)
    assert len(receiver.of_type("io.stowage.manifest.pushed", repo)) == 1
    assert restarted.running()
