"""Stowage as a pull-through mirror (issue 21): cold pulls byte-identical to the upstream's,
a cold blob streamed to its client as it arrives, one upstream fetch for concurrent misses across replicas, nothing kept from a lying upstream,
stale tags served while the upstream is down or rate-limiting, tags re-checked after their
TTL, pushes refused, the token flow (a token server of the tests' own, and another Stowage's
token service), and an https upstream asking for a client certificate."""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from conftest import USER, mirror_toml
from harness import process
from harness.pki import Ca
from harness.services import start_distribution
from harness.token_server import TokenServer
from harness.docker_engine import DockerEngine
from harness.oci import MANIFEST_TYPE, Client
from harness.auth import hash_password
from harness.jwt import new_ec_key_pem
from harness.layout import OciLayout, gzip_image
from harness.registry import fs_toml, start_stowage
from harness.tools import docker_ref, skopeo_copy

def pull_dir(reference: str, out: Path, creds: str | None = None) -> dict[str, bytes]:
    """`skopeo copy` of `reference` to a `dir:`; its files by name."""
    argv = ["skopeo", "copy", "--quiet", "--src-tls-verify=false"]
    if creds:
        argv += ["--src-creds", creds]
    run = subprocess.run(argv + [f"docker://{reference}", f"dir:{out}"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return {p.name: p.read_bytes() for p in out.iterdir() if p.name != "version"}


def assert_refused_or_cut(url: str) -> None:
    """A GET of `url` is answered 502/503, or 200 with a body cut short."""
    try:
        r = requests.get(url, timeout=60)
    except requests.exceptions.ChunkedEncodingError:
        return
    assert r.status_code in (502, 503), f"{r.status_code}: {len(r.content)} bytes"


def stored_blobs(root: Path) -> set[str]:
    """Every blob file under a filesystem store, by hex digest."""
    return {p.parent.name for p in root.rglob("data") if len(p.parent.name) == 64}


@pytest.mark.parametrize("runtime,store", [("tokio", "fs"), ("smol", "fs"), ("tokio", "s3"), ("smol", "s3")])
def test_a_cold_pull_is_byte_identical_and_pushes_are_refused(upstream, start, tmp_path, runtime, store):
    image = upstream.push("team/app", "v1", [os.urandom(300_000), os.urandom(70_000)])
    mirror = start(mirror_toml(upstream), runtime=runtime, store=store)
    through_mirror = pull_dir(f"{mirror.host}/hub/team/app:v1", tmp_path / "mirror")
    direct = pull_dir(f"127.0.0.1:{upstream.registry.port}/team/app:v1", tmp_path / "direct",
                      creds="mirror-user:mirror-secret")
    assert through_mirror == direct
    assert hashlib.sha256(through_mirror["manifest.json"]).hexdigest() == image["digest"].split(":")[1]
    # Warm: served from the store, the upstream not asked for the blobs again.
    gets = upstream.proxy.blob_gets(image["layers"][0]["digest"])
    assert gets == 1
    assert pull_dir(f"{mirror.host}/hub/team/app@{image['digest']}", tmp_path / "warm") == direct
    assert upstream.proxy.blob_gets(image["layers"][0]["digest"]) == 1
    r = Client(mirror.url).push_manifest("hub/team/app", "v2", through_mirror["manifest.json"])
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED", r.text
    assert "allow_push" in r.text
    r = Client(mirror.url).start_upload("hub/team/app")
    assert r.status_code == 403, r.text


@pytest.mark.parametrize("runtime", ["tokio", "smol"])
def test_another_stowage_behind_its_token_service_is_an_upstream(start, tmp_path, runtime):
    """The upstream is a Stowage with `[auth.token_service]`: the mirror follows its Bearer
    challenge to its `/token` with the configured credentials."""
    key = tmp_path / "token-key.pem"
    key.write_bytes(new_ec_key_pem())
    up = start_stowage(tmp_path / "up", fs_toml("blob_store", tmp_path / "up-store"),
                       server_toml=f'[auth.identity.alice]\nusername = "alice"\n'
                       f'password = "{hash_password("s3cret")}"\n'
                       f'[auth.token_service]\nsigning_key = "{key}"\n'
                       f'service = "upstream.test"\nissuer = "upstream.test"\n')
    try:
        image = gzip_image(OciLayout(tmp_path / "layout"))
        skopeo_copy(image.ref, docker_ref(up, "team/app", "v1"), "--dest-creds", "alice:s3cret")
        mirror = start(f'[[repository."hub".upstream]]\nurl = "{up.url}"\n'
                       f'username = "alice"\npassword = "s3cret"\ntimeout_secs = 5\n',
                       runtime=runtime)
        through_mirror = pull_dir(f"{mirror.host}/hub/team/app:v1", tmp_path / "mirror")
        direct = pull_dir(f"{up.host}/team/app:v1", tmp_path / "direct", creds="alice:s3cret")
        assert through_mirror == direct
        assert hashlib.sha256(through_mirror["manifest.json"]).hexdigest() == image.digest.split(":")[1]
        # The upstream refuses the anonymous: the mirror's credentials did the pulling.
        assert requests.get(f"{up.url}/v2/team/app/manifests/v1", timeout=10).status_code == 401
    finally:
        up.stop()


def test_concurrent_cold_pulls_through_three_replicas_fetch_once(upstream, start, redis):
    # CI pulls 24 x 24 MiB; the 50 x 256 MiB is
    # MIRROR_PULLS=50 MIRROR_BLOB_MIB=256 pytest -k fetch_once.
    pulls = int(os.environ.get("MIRROR_PULLS", "24"))
    data = os.urandom(int(os.environ.get("MIRROR_BLOB_MIB", "24")) * 1024 * 1024)
    image = upstream.push("big/app", "v1", [data])
    digest = image["layers"][0]["digest"]
    replicas = start(mirror_toml(upstream), replicas=3, redis=redis)

    def pull_manifest(n: int) -> int:
        return Client(replicas[n % 3].url).get_manifest("hub/big/app", "v1").status_code

    with concurrent.futures.ThreadPoolExecutor(pulls) as pool:
        assert list(pool.map(pull_manifest, range(pulls))) == [200] * pulls
    # Tags are revalidated with HEADs; the manifest's GET counts against a pull limit.
    manifest_gets = Counter(upstream.proxy.requests)[("GET", f"/v2/big/app/manifests/{image['digest']}")]
    assert manifest_gets == 1, upstream.proxy.requests

    def pull(n: int) -> str:
        with requests.get(f"{replicas[n % 3].url}/v2/hub/big/app/blobs/{digest}", stream=True, timeout=600) as r:
            assert r.status_code == 200, r.text
            h = hashlib.sha256()
            for chunk in r.iter_content(1 << 20):
                h.update(chunk)
            return "sha256:" + h.hexdigest()

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(pulls) as pool:
        digests = list(pool.map(pull, range(pulls)))
    seconds = time.monotonic() - started
    print(f"{pulls} cold pulls of {len(data) >> 20} MiB through 3 replicas: {seconds:.1f} s, "
          f"{pulls * len(data) / seconds / (1 << 20):.0f} MiB/s served in all")
    assert digests == [digest] * pulls
    assert upstream.proxy.blob_gets(digest) == 1, upstream.proxy.requests


def cold_blob_behind_a_mirror(upstream, start, runtime: str):
    """A 64 MiB blob the upstream holds as team/app's layer, and a mirror that has none of it:
    (the blob, its digest, the mirror)."""
    data = os.urandom(64 * 1024 * 1024)
    image = upstream.push("team/app", "v1", [data])
    return data, image["layers"][0]["digest"], start(mirror_toml(upstream), runtime=runtime)


@pytest.mark.parametrize("runtime", ["tokio", "smol"])
def test_a_cold_blob_streams_to_its_client_as_it_arrives(upstream, start, runtime):
    data, digest, mirror = cold_blob_behind_a_mirror(upstream, start, runtime)
    upstream.proxy.mode = "stall"
    with requests.get(f"{mirror.url}/v2/hub/team/app/blobs/{digest}", stream=True, timeout=60) as r:
        assert r.status_code == 200, r.text
        assert int(r.headers["Content-Length"]) == len(data)
        assert r.headers["Docker-Content-Digest"] == digest
        # The upstream holds back all but its first quarter MiB until this has arrived.
        first = r.raw.read(64 * 1024)
        upstream.proxy.resume.set()
        rest = r.raw.read()
    assert not upstream.proxy.stall_timed_out, "nothing reached the client while the upstream stalled"
    assert first + rest == data
    # Stored, linked and its fetch lock released by the time the stream ended: the next pull
    # is served locally, and another repository's miss of the blob (one HEAD upstream) does
    # not wait for a lock left to lapse (10 s).
    assert Client(mirror.url).get_blob("hub/team/app", digest).content == data
    upstream.push("team/other", "v1", [data])
    started = time.monotonic()
    assert Client(mirror.url).get_blob("hub/team/other", digest).content == data
    assert time.monotonic() - started < 5, "the streamed fetch left its lock to lapse"
    assert upstream.proxy.blob_gets(digest) == 1


@pytest.mark.parametrize("runtime", ["tokio", "smol"])
def test_a_client_that_stops_reading_does_not_hold_up_the_fetch(upstream, start, runtime):
    data, digest, mirror = cold_blob_behind_a_mirror(upstream, start, runtime)
    target = urlsplit(mirror.url)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    stalled.settimeout(30)
    stalled.connect((target.hostname, target.port))
    try:
        stalled.sendall(f"GET /v2/hub/team/app/blobs/{digest} HTTP/1.1\r\nHost: mirror\r\n\r\n".encode())
        head = stalled.recv(64 * 1024)
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        # Its fetch is under way, and this client reads no more. Another pull of the blob waits
        # for that fetch, which goes on (its lock kept) once the stalled client is cut loose.
        started = time.monotonic()
        assert Client(mirror.url).get_blob("hub/team/app", digest).content == data
        print(f"the second pull waited {time.monotonic() - started:.1f} s")
        assert upstream.proxy.blob_gets(digest) == 1, mirror.log_tail(30)
        received = len(head)
        try:
            while chunk := stalled.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
        assert received < len(data), "the stalled client's stream was not cut"
    finally:
        stalled.close()


@pytest.mark.parametrize("mode", ["corrupt", "truncate"])
def test_a_broken_upstream_leaves_nothing_and_the_next_pull_refetches(upstream, start, tmp_path, mode):
    image = upstream.push("team/app", "v1", [os.urandom(600_000)])
    digest = image["layers"][0]["digest"]
    mirror = start(mirror_toml(upstream))
    root = tmp_path / "mirror-0" / "data"
    assert Client(mirror.url).get_manifest("hub/team/app", "v1").status_code == 200
    upstream.proxy.mode = mode
    # The pull that fetches streams the blob as it arrives: its client sees the stream cut
    # before the end (or an error, had the upstream failed before sending it).
    assert_refused_or_cut(f"{mirror.url}/v2/hub/team/app/blobs/{digest}")
    assert digest.split(":")[1] not in stored_blobs(root)
    assert_refused_or_cut(f"{mirror.url}/v2/hub/team/app/blobs/{digest}")
    upstream.proxy.mode = "pass"
    r = Client(mirror.url).get_blob("hub/team/app", digest)
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == digest.split(":")[1]
    assert upstream.proxy.blob_gets(digest) == 3
    assert digest.split(":")[1] in stored_blobs(root)


def test_upstream_down_serves_cached_tags_stale_and_fails_uncached_clearly(upstream, start, tmp_path):
    image = upstream.push("team/app", "v1", [os.urandom(1000)])
    upstream.push("team/other", "v1", [os.urandom(1000)])
    mirror = start(mirror_toml(upstream, ttl=1))
    assert pull_dir(f"{mirror.host}/hub/team/app:v1", tmp_path / "cold")
    upstream.proxy.mode = "down"
    time.sleep(1.2)
    r = Client(mirror.url).get_manifest("hub/team/app", "v1")
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == image["digest"]
    assert "Stale" in r.headers.get("Warning", "")
    assert pull_dir(f"{mirror.host}/hub/team/app:v1", tmp_path / "stale")
    r = Client(mirror.url).get_manifest("hub/team/other", "v1")
    assert r.status_code == 503, r.text
    assert "not cached and the upstream is unavailable" in r.json()["errors"][0]["message"]


def test_a_429_is_honoured_and_the_cached_copy_served_meanwhile(upstream, start):
    image = upstream.push("team/app", "v1", [os.urandom(1000)])
    mirror = start(mirror_toml(upstream, ttl=1))
    assert Client(mirror.url).get_manifest("hub/team/app", "v1").status_code == 200
    upstream.proxy.mode, upstream.proxy.retry_after = "429", 3
    time.sleep(1.2)
    asked = upstream.proxy.count()
    for _ in range(5):
        r = Client(mirror.url).get_manifest("hub/team/app", "v1")
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == image["digest"]
        assert "Stale" in r.headers.get("Warning", "")
    # One 429, then silence until Retry-After has passed.
    assert upstream.proxy.count() == asked + 1
    upstream.proxy.mode = "pass"
    time.sleep(3.1)
    r = Client(mirror.url).get_manifest("hub/team/app", "v1")
    assert r.status_code == 200 and "Warning" not in r.headers
    assert upstream.proxy.count() > asked + 1


def test_a_repointed_tag_is_seen_after_the_ttl_and_not_before(upstream, start):
    first = upstream.push("team/app", "v1", [os.urandom(1000)])
    mirror = Client(start(mirror_toml(upstream, ttl=3)).url)

    def served() -> str:
        return mirror.get_manifest("hub/team/app", "v1").headers["Docker-Content-Digest"]

    assert served() == first["digest"]
    second = upstream.push("team/app", "v1", [os.urandom(1000)])
    assert served() == first["digest"]
    time.sleep(3.2)
    assert served() == second["digest"]
    # The first manifest stays pullable by digest.
    assert mirror.get_manifest("hub/team/app", first["digest"]).status_code == 200


def test_the_token_flow_and_ns_selection(token_upstream, start, tmp_path):
    image = token_upstream.push("team/app", "v1", [os.urandom(1000)])
    host = "127.0.0.1"
    mirror = start(mirror_toml(token_upstream, extra='allow_push = false\n'))
    r = requests.get(f"{mirror.url}/v2/hub/team/app/manifests/v1?ns={host}", headers={"Accept": MANIFEST_TYPE}, timeout=30)
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == image["digest"]
    # A registry this mirror does not stand for is not asked.
    r = requests.get(f"{mirror.url}/v2/hub/team/app/manifests/{image['digest']}?ns=quay.io", timeout=30)
    assert r.status_code == 200  # stored already: served locally
    r = requests.get(f"{mirror.url}/v2/hub/team/nope/manifests/v1?ns=quay.io", timeout=30)
    assert r.status_code == 404
    assert pull_dir(f"{mirror.host}/hub/team/app:v1", tmp_path / "pulled")
    # One token per scope, reused from the cache for the blobs and later pulls.
    assert token_upstream.token_server.requests.count(("repository:team/app:pull",)) == 1


def test_an_https_upstream_with_a_client_certificate_and_a_token_file(upstream, start, tmp_path):
    """The upstream's TLS options and a token read from a file: Distribution over https on
    the `upstream` fixture's root, asking for a client certificate, behind token auth. The
    pull works with all three; without the CA bundle or the client certificate it fails; the
    token server is never asked (the file's token is sent as it is)."""
    image = upstream.push("team/app", "v1", [os.urandom(300_000)])
    work = tmp_path / "https-upstream"
    work.mkdir()
    ca = Ca("upstream CA")
    ca_pem = work / "ca.pem"
    ca_pem.write_bytes(ca.cert_pem)
    server_cert, server_key = ca.server("upstream").write(work / "server.pem", work / "server.key")
    client_cert, client_key = ca.client("mirror").write(work / "client.pem", work / "client.key")
    tokens = TokenServer(work, USER, "unused")
    token_file = work / "token"
    token_file.write_text(tokens.token(USER, ["repository:team/app:pull"]) + "\n")
    tls_yaml = (f"  tls:\n    certificate: {server_cert}\n    key: {server_key}\n"
                f"    clientcas:\n      - {ca_pem}\n")
    https = start_distribution(work, storage=upstream.registry.storage, auth_yaml=tokens.distribution_yaml(),
                               tls_yaml=tls_yaml, tls_client={"verify": str(ca_pem), "cert": (str(client_cert), str(client_key))})
    try:
        def mirror_of(options: str):
            return Client(start(
                f'[[repository."hub".upstream]]\nurl = "{https.url}"\ntoken_file = "{token_file}"\n'
                f"timeout_secs = 5\n{options}").url)

        certificate = f'client_certificate = "{client_cert}"\nclient_key = "{client_key}"\n'
        for options in (certificate, f'ca_bundle = "{ca_pem}"\n'):
            r = mirror_of(options).get_manifest("hub/team/app", "v1")
            assert r.status_code in (502, 503), r.text
        mirror = mirror_of(f'ca_bundle = "{ca_pem}"\n{certificate}')
        r = mirror.get_manifest("hub/team/app", "v1")
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == image["digest"], r.text
        layer = image["layers"][0]["digest"]
        r = mirror.get_blob("hub/team/app", layer)
        assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == layer.split(":")[1]
        assert tokens.requests == []
    finally:
        https.stop()
        tokens.stop()


def tar_layer(name: str, content: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def test_the_docker_engine_pulls_docker_hub_images_through_its_registry_mirror(upstream, start):
    # The engine asks its mirrors first for every Docker Hub image, as `library/<name>`, so
    # the mirror is at the root, as the README sets it up; with no way out to Docker Hub
    # here, only the mirror can serve it.
    layer = tar_layer("hello.txt", b"through the engine's mirror\n")
    image = upstream.push("library/app", "v1", [layer])
    mirror = start(mirror_toml(upstream, prefix=""))
    docker = DockerEngine(mirrors=(mirror.url,))
    try:
        docker("pull", "app:v1")
        digests = docker.out("image", "inspect", "--format", "{{json .RepoDigests}}", "app:v1")
        assert f"@{image['digest']}" in digests, digests
    finally:
        docker.stop()
    assert upstream.proxy.blob_gets(image["layers"][0]["digest"]) == 1


class Containerd:
    """A containerd of the test's own (its own root, state and socket; no CRI), driven by
    `ctr`."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="ctrd-", dir="/tmp"))
        self.socket = self.dir / "containerd.sock"
        config = self.dir / "config.toml"
        config.write_text(
            f'version = 2\nroot = "{self.dir / "root"}"\nstate = "{self.dir / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\naddress = "{self.socket}"\n'
        )
        try:
            self.process = process.start(
                ["containerd", "--config", config], self.dir / "containerd.log",
                lambda: self("version", check=False).returncode == 0, "containerd")
        except process.StartError as e:
            shutil.rmtree(self.dir, ignore_errors=True)
            pytest.fail(str(e))

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cp = subprocess.run(["ctr", "--address", str(self.socket), "--namespace", "stowage", *args],
                            capture_output=True, timeout=180)
        assert not check or cp.returncode == 0, f"ctr {' '.join(args)}: {cp.stderr.decode()}"
        return cp

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def test_containerd_pulls_docker_hub_images_through_a_hosts_toml_mirror(upstream, start, tmp_path):
    # As the README sets containerd up: the mirror's path under a prefix, and containerd's
    # `?ns=docker.io` picking the upstream that stands for Docker Hub (`ns`).
    layer = tar_layer("hello.txt", b"through containerd's mirror\n")
    image = upstream.push("library/app", "v1", [layer])
    # Appended to the upstream's table, the last one.
    mirror = start(mirror_toml(upstream, prefix="dockerhub") + 'ns = "docker.io"\n')
    hosts = tmp_path / "hosts" / "docker.io"
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(
        'server = "https://registry-1.docker.io"\n'
        f'[host."{mirror.url}/v2/dockerhub"]\n'
        '  capabilities = ["pull", "resolve"]\n  override_path = true\n'
    )
    containerd = Containerd()
    try:
        containerd("images", "pull", "--snapshotter", "native", "--hosts-dir",
                   str(tmp_path / "hosts"), "docker.io/library/app:v1")
        listed = containerd("images", "ls").stdout.decode()
        assert "docker.io/library/app:v1" in listed and image["digest"] in listed, listed
    finally:
        containerd.stop()
    assert upstream.proxy.blob_gets(image["layers"][0]["digest"]) == 1


def test_podman_pulls_through_a_registries_conf_mirror(upstream, start, tmp_path, podman):
    image = upstream.push("team/app", "v1", [tar_layer("hello.txt", b"through the mirror\n")])
    mirror = start(mirror_toml(upstream))
    # The location needs credentials podman is not given: only the mirror can serve it.
    conf = tmp_path / "registries.conf"
    conf.write_text(
        '[[registry]]\nprefix = "upstream.test"\n'
        f'location = "127.0.0.1:{upstream.registry.port}"\ninsecure = true\n'
        f'[[registry.mirror]]\nlocation = "{mirror.host}/hub"\ninsecure = true\n'
    )
    try:
        os.environ["CONTAINERS_REGISTRIES_CONF"] = str(conf)
        podman("pull", "-q", "upstream.test/team/app:v1")
        digest = podman.out("inspect", "--format", "{{.Digest}}", "upstream.test/team/app:v1")
        assert digest == image["digest"]
    finally:
        os.environ.pop("CONTAINERS_REGISTRIES_CONF", None)
    assert upstream.proxy.blob_gets(image["layers"][0]["digest"]) == 1
