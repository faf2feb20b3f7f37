"""Operating Stowage: Prometheus metrics at /metrics (counters that move with the requests
made, no label holding a repository name, tag or digest), /healthz and /readyz (503 naming
the check that failed), JSON access log lines, and X-Request-Id."""

from __future__ import annotations

import json
import re
import time

import pytest
import requests

from harness.auth import identities_toml, push_config_image
from harness.oci import TIMEOUT, Blob, Client, sha256_digest
from harness.process import free_port

pytestmark = pytest.mark.stowage_only

JSON_LOGS = '[observability.log]\nformat = "json"\n'
MANIFESTS = "/v2/{name}/manifests/{reference}"
BLOBS = "/v2/{name}/blobs/{digest}"
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a /metrics page, by name and labels."""
    r = requests.get(f"{url}/metrics", timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for line in r.text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample: {line!r}"
        name, labels, value = match.groups()
        samples[(name, frozenset(LABEL.findall(labels or "")))] = float(value)
    return samples


def value(samples, name: str, **labels) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def access_lines(reg, request_id: str | None = None) -> list[dict]:
    """The JSON access log lines so far (those for `request_id`, waiting for one)."""
    return log_lines(reg, {"target": "stowage::access"}, request_id)


def log_lines(reg, fields: dict, request_id: str | None = None, timeout: float = 5.0) -> list[dict]:
    """The JSON log lines so far that carry `fields` (those for `request_id`, waiting for
    one: lines are written by a thread of their own)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = []
        for line in reg.log_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if fields.items() <= entry.items():
                lines.append(entry)
        if request_id is None:
            return lines
        found = [e for e in lines if e.get("request_id") == request_id]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.fixture
def reg(registries, registry_kind, tmp_path):
    return registries.start(registry_kind, tmp_path / "storage", server_toml=JSON_LOGS)


def test_counters_move_with_requests_and_no_label_names_a_repository(reg, repo):
    before = scrape(reg.url)
    client = Client(reg.url)
    response, manifest_digest = push_config_image(client, repo, "v1", b"observed")
    assert response.status_code == 201, response.text
    assert client.get_manifest(repo, "v1").status_code == 200
    assert client.get_manifest(repo, "v1").status_code == 200  # from the cache
    config = client.get_manifest(repo, "v1").json()["config"]
    assert client.request("GET", f"/v2/{repo}/blobs/{config['digest']}").status_code == 200
    assert client.get_manifest(repo, "missing").status_code == 404
    after = scrape(reg.url)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    requests_total = "stowage_http_requests_total"
    assert moved(requests_total, route=MANIFESTS, method="PUT", status="2xx") == 1
    assert moved(requests_total, route=MANIFESTS, method="GET", status="2xx") == 3
    assert moved(requests_total, route=MANIFESTS, method="GET", status="4xx") == 1
    assert moved(requests_total, route=BLOBS, method="GET", status="2xx") == 1
    assert moved(requests_total, route="/v2/{name}/blobs/uploads/", method="POST",
                 status="2xx") == 1
    assert moved("stowage_http_request_duration_seconds_count", route=MANIFESTS,
                 method="GET") == 4
    assert moved("stowage_http_received_bytes_total") >= config["size"]
    assert moved("stowage_http_sent_bytes_total") >= config["size"]
    assert moved("stowage_authentications_total", outcome="anonymous") >= 7
    assert moved("stowage_storage_operations_total", outcome="ok") > 0
    assert moved("stowage_storage_operation_duration_seconds_count") > 0
    assert moved("stowage_cache_lookups_total", kind="tag", result="hit") >= 1
    assert moved("stowage_cache_lookups_total", kind="tag", result="miss") >= 1
    assert moved("stowage_lock_requests_total", request="acquire", outcome="ok") >= 1
    assert value(after, "stowage_uploads_in_flight") == 0

    # Bounded labels: no repository name (nor a part of it), tag or digest anywhere.
    secrets = {repo, repo.split("/")[-1], "v1", "missing", manifest_digest,
               manifest_digest.split(":")[1][:12], config["digest"].split(":")[1][:12]}
    for (_, labels) in after:
        for label, text in labels:
            for secret in secrets:
                assert secret not in text, f"label {label}={text!r} holds {secret!r}"


def test_the_page_has_help_and_types(reg):
    Client(reg.url).request("GET", "/v2/")
    page = requests.get(f"{reg.url}/metrics", timeout=TIMEOUT).text
    assert "# TYPE stowage_http_requests_total counter" in page
    assert "# TYPE stowage_http_request_duration_seconds histogram" in page
    assert "# HELP stowage_http_requests_total " in page


def test_healthz_and_readyz(reg):
    r = requests.get(f"{reg.url}/healthz", timeout=TIMEOUT)
    assert (r.status_code, r.text) == (200, "ok")
    r = requests.get(f"{reg.url}/readyz", timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    # The blob store is checked too where the layout keeps it apart from the metadata store.
    apart = "[metadata_store." in (reg.stores_toml or "")
    expected = {"metadata_store": "ok", **({"blob_store": "ok"} if apart else {})}
    assert r.json() == {"checks": expected}


def test_readyz_names_an_unreachable_redis(registries, registry_kind, tmp_path):
    closed = free_port()
    reg = registries.start(
        registry_kind, tmp_path / "storage",
        server_toml=f'[observability]\nreadiness_timeout_ms = 1500\n'
                    f'[cache.redis]\nurl = "redis://127.0.0.1:{closed}"\n')
    started = time.monotonic()
    r = requests.get(f"{reg.url}/readyz", timeout=TIMEOUT)
    assert time.monotonic() - started < 10
    assert r.status_code == 503, r.text
    checks = r.json()["checks"]
    assert checks["metadata_store"] == "ok"
    assert checks["redis"].startswith("error: "), checks
    # Alive all the same: the process serves.
    assert requests.get(f"{reg.url}/healthz", timeout=TIMEOUT).status_code == 200


@pytest.mark.parametrize("dead, alive", [("metadata_store", "blob_store"),
                                         ("blob_store", "metadata_store")])
def test_readyz_names_an_unreachable_store(registries, registry_kind, tmp_path, dead, alive):
    stores = (
        f'[{alive}.fs]\nroot_dir = {json.dumps(str(tmp_path / "alive"))}\n'
        f"[{dead}.s3]\n"
        'access_key_id = "test"\nsecret_key = "test"\n'
        f'endpoint = "http://127.0.0.1:{free_port()}"\nbucket = "nowhere"\n'
        'region = "us-east-1"\nmax_attempts = 1\n'
    )
    reg = registries.start(registry_kind, tmp_path / "storage", stores_toml=stores,
                           server_toml="[observability]\nreadiness_timeout_ms = 1000\n")
    r = requests.get(f"{reg.url}/readyz", timeout=TIMEOUT)
    assert r.status_code == 503, r.text
    checks = r.json()["checks"]
    assert checks[dead].startswith("error: "), checks
    assert checks[alive] == "ok", checks
    assert "redis" not in checks


def test_json_access_log_lines_carry_the_request(registries, registry_kind, tmp_path, repo):
    users = {"alice": "alice-pw"}
    reg = registries.start(registry_kind, tmp_path / "storage",
                           server_toml=JSON_LOGS + identities_toml(users))
    alice = Client(reg.url, basic=("alice", "alice-pw"))
    alice.session.headers["X-Request-Id"] = "push-blob-1"
    data = b"logged blob"
    assert alice.push_blob(repo, Blob(data)).status_code == 201
    [line] = access_lines(reg, "push-blob-1")
    assert line["level"] == "INFO"
    assert line["method"] == "POST"
    assert line["route"] == "/v2/{name}/blobs/uploads/"
    assert line["repository"] == repo
    assert line["status"] == 201
    assert line["bytes_in"] == len(data)
    assert line["bytes_out"] == 0
    assert line["duration_ms"] >= 0
    assert line["client"] == "127.0.0.1"
    assert line["identity"] == "alice"

    anonymous = Client(reg.url)
    anonymous.session.headers["X-Request-Id"] = "pull-blob-1"
    r = anonymous.request("GET", f"/v2/{repo}/blobs/{sha256_digest(data)}")
    [line] = access_lines(reg, "pull-blob-1")
    assert line["status"] == r.status_code and "identity" not in line
    assert line["route"] == BLOBS


@pytest.mark.fs_only  # writes a corrupt link file into the storage root
def test_a_request_the_server_fails_is_logged_with_its_cause(registries, registry_kind, tmp_path, repo):
    storage = tmp_path / "storage"
    reg = registries.start(registry_kind, storage, server_toml=JSON_LOGS)
    link = storage / "v2" / "repositories" / repo / "_manifests" / "tags" / "broken" / "current" / "link"
    link.parent.mkdir(parents=True)
    link.write_text("not a digest")
    r = requests.get(f"{reg.url}/v2/{repo}/manifests/broken", headers={"X-Request-Id": "corrupt-1"},
                     timeout=TIMEOUT)
    assert r.status_code == 503, r.text
    [line] = log_lines(reg, {"message": "request failed"}, "corrupt-1")
    assert line["level"] == "WARN"
    assert line["status"] == 503 and line["method"] == "GET" and line["route"] == MANIFESTS
    assert "corrupt link file in storage" in line["answer"], line
    # A client's mistake is not the server's failure.
    r = requests.get(f"{reg.url}/v2/{repo}/manifests/absent", headers={"X-Request-Id": "absent-1"},
                     timeout=TIMEOUT)
    assert r.status_code == 404
    assert access_lines(reg, "absent-1")
    assert log_lines(reg, {"message": "request failed"}, "absent-1", timeout=0) == []


def test_request_ids_are_echoed_or_made(reg):
    sent = "client-id-42"
    r = requests.get(f"{reg.url}/v2/", headers={"X-Request-Id": sent}, timeout=TIMEOUT)
    assert r.headers["X-Request-Id"] == sent
    made = [requests.get(f"{reg.url}/v2/", timeout=TIMEOUT).headers["X-Request-Id"]
            for _ in range(2)]
    assert made[0] and made[1] and made[0] != made[1]
    for insane in ["x" * 129, "two words"]:
        r = requests.get(f"{reg.url}/v2/", headers={"X-Request-Id": insane},
                         timeout=TIMEOUT)
        assert r.headers["X-Request-Id"] not in (insane, ""), insane
    [line] = access_lines(reg, made[1])
    assert line["route"] == "/v2/"


def test_metrics_on_a_port_of_their_own(registries, registry_kind, tmp_path):
    port = free_port()
    reg = registries.start(registry_kind, tmp_path / "storage",
                           server_toml=f"[observability.metrics]\nport = {port}\n")
    requests.get(f"{reg.url}/v2/", timeout=TIMEOUT)
    assert requests.get(f"{reg.url}/metrics", timeout=TIMEOUT).status_code == 404
    samples = scrape(f"http://127.0.0.1:{port}")
    assert value(samples, "stowage_http_requests_total", route="/v2/", method="GET") >= 1


def test_metrics_and_access_log_can_be_turned_off(registries, registry_kind, tmp_path):
    reg = registries.start(
        registry_kind, tmp_path / "storage",
        server_toml=JSON_LOGS + "access_log = false\n[observability.metrics]\nenabled = false\n")
    r = requests.get(f"{reg.url}/v2/", headers={"X-Request-Id": "quiet"}, timeout=TIMEOUT)
    assert r.headers["X-Request-Id"] == "quiet"
    assert requests.get(f"{reg.url}/metrics", timeout=TIMEOUT).status_code == 404
    time.sleep(0.5)
    assert access_lines(reg) == []
