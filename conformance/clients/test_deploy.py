"""What deploy/ ships for operators holds: the Containerfile builds an image of both servers
from the release binaries with buildah (no base image pulled) and the containerized registry
takes a push and serves it back; the Grafana dashboard and the alert rules are valid PromQL
naming only metrics Stowage exports; the Kubernetes manifests agree with the configuration
they carry (ports, probes, the metrics port announced for scraping, Redis for the replicas)."""

from __future__ import annotations

import json
import re
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from harness.layout import multi_layer_image
from harness.oci import TIMEOUT
from harness.process import free_port
from harness.registry import server_binary
from harness.tools import roundtrip_with_skopeo, run

pytestmark = [pytest.mark.stowage_only, pytest.mark.fs_only]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
METRIC = re.compile(r"\bstowage_[a-z_]+\b")
HISTOGRAM_SERIES = re.compile(r"_(bucket|sum|count)$")


@dataclass
class Endpoint:
    """Where the containerized registry listens, as the client helpers address a registry."""
    port: int

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"


def test_the_image_serves_a_push(tmp_path, layout, buildah, podman, repo):
    context = tmp_path / "context"
    binary = Path(server_binary())
    # The image holds both servers under these names, staged from the binary's folder.
    assert binary.name in ("stowage", "stowage-smol"), f"STOWAGE_BIN={binary} is named otherwise"
    run([str(DEPLOY / "stage-image"), str(context), str(binary.parent)])
    image = "localhost/stowage:under-test"
    buildah("build", "-q", "-f", str(context / "Containerfile"), "-t", image, str(context))
    # podman reads buildah's images from the same storage.
    podman.root, podman.runroot = buildah.root, buildah.runroot
    size = sum(int(line) for line in
               podman.out("image", "inspect", "--format", "{{.Size}}", image).split())
    assert size < 64 * 1024 * 1024, f"image of {size} bytes"
    assert podman.out("image", "inspect", "--format", "{{.Config.User}}", image) == "65532:65532"

    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text((DEPLOY / "config.toml").read_text().replace("port = 5000", f"port = {port}")
                      .replace('"0.0.0.0"', '"127.0.0.1"'))
    name = f"stowage-{port}"
    # Host networking and explicit rlimits: this machine's container runtime may neither
    # raise rlimits nor set up bridges; neither matters to what is tested.
    podman("run", "-d", "--name", name, "--network", "host",
                "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
                "--entrypoint", f"/usr/local/bin/{binary.name}",
                "-v", f"{config}:/etc/stowage/config.toml:ro", image,
                "serve", "--config", "/etc/stowage/config.toml")
    try:
        endpoint = Endpoint(port)
        wait_serving(endpoint, podman, name)
        img = multi_layer_image(layout, big_layer_mib=2)
        roundtrip_with_skopeo(img, endpoint, repo, tmp_path / "pulled")
    finally:
        logs = podman("logs", name, check=False)
        podman("rm", "-f", name, check=False)
    assert b"stowage listening" in logs.stdout + logs.stderr


def wait_serving(endpoint: Endpoint, podman, name: str) -> None:
    for _ in range(100):
        try:
            if requests.get(f"{endpoint.url}/v2/", timeout=TIMEOUT).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if "running" not in podman.out("inspect", "--format", "{{.State.Status}}", name):
            break
        time.sleep(0.1)
    logs = podman("logs", name, check=False)
    pytest.fail(f"the container does not serve: {logs.stdout!r} {logs.stderr!r}")


def exported_metrics() -> set[str]:
    """Every metric name Stowage's sources declare (each is a `const` string beside the code
    that records it)."""
    names = set()
    for source in (REPO_ROOT / "adapters").rglob("*.rs"):
        names |= set(re.findall(r'const [A-Z_]+: &str = "(stowage_[a-z_]+)"', source.read_text()))
    assert len(names) >= 10, names
    return names


def named_metrics(expr: str) -> set[str]:
    return {HISTOGRAM_SERIES.sub("", name) if name.endswith(("_bucket", "_sum", "_count"))
            and not name.endswith("_total") else name for name in METRIC.findall(expr)}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "stowage.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 12, exprs
    return exprs


def test_dashboard_and_alert_rules_are_valid_promql_on_exported_metrics(tmp_path):
    exported = exported_metrics()
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    alert_exprs = [r["expr"] for g in alerts["groups"] for r in g["rules"]]
    for expr in dashboard_exprs() + alert_exprs:
        unknown = named_metrics(expr) - exported
        assert not unknown, f"{expr!r} names metrics Stowage does not export: {unknown}"
    run(["promtool", "check", "rules", str(DEPLOY / "prometheus" / "alerts.yaml")])
    # promtool parses the dashboard's queries as recording rules, Grafana's variables filled in.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}",
         "expr": expr.replace("$__rate_interval", "5m").replace("$job", ".*")}
        for i, expr in enumerate(dashboard_exprs())]}]}
    recorded = tmp_path / "dashboard-rules.yaml"
    recorded.write_text(yaml.safe_dump(rules))
    run(["promtool", "check", "rules", str(recorded)])


def test_kubernetes_manifests_agree_with_their_configuration():
    documents = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "stowage.yaml").read_text()) if d]
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in documents}
    config = tomllib.loads(by_name[("Secret", "stowage-config")]["stringData"]["config.toml"])
    deployment = by_name[("Deployment", "stowage")]
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["registry"] == config["server"]["port"]
    assert config["server"]["bind_address"] == "0.0.0.0"
    assert ports["metrics"] == config["observability"]["metrics"]["port"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["metrics"])
    assert annotations["prometheus.io/path"] == "/metrics"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert container["args"][-1] == f"{mount['mountPath']}/config.toml"
    # Replicas share locks and the cache on the Redis the manifests deploy.
    redis_service = by_name[("Service", "stowage-redis")]
    redis_port = redis_service["spec"]["ports"][0]["port"]
    expected = f"redis://{redis_service['metadata']['name']}:{redis_port}"
    assert config["blob_store"]["s3"]["redis"]["url"] == expected
    assert config["cache"]["redis"]["url"] == expected
    assert by_name[("Service", "stowage")]["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
