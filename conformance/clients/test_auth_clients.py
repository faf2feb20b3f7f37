"""The real clients log in to a Stowage secured as the README's complete example is (TLS with
a CA the test makes, two users, the token service, the policy), push and pull, and are
refused without credentials and with wrong ones: skopeo (`--creds`, `--registry-token`),
podman login, buildah push, the oras library, the docker engine, and curl with a client
certificate."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import oras.client
import pytest
import requests

from harness.auth import hash_password, token_service_toml
from harness.docker_engine import DockerEngine
from harness.layout import multi_layer_image
from harness.pki import Ca
from harness.registry import toml_str
from harness.tools import run

pytestmark = [pytest.mark.stowage_only, pytest.mark.fs_only]

USERS = {"alice": "alice-pw", "admin": "admin-pw"}

# The README's "Securing Stowage" example, but for the file paths and the port.
POLICY = """
[global.access_policy]
default = "allow"
rules = ["identity.anonymous && request.action != 'pull' && request.action != 'list'",
         "request.action == 'delete' && identity.username != 'admin'"]
"""


class Secured:
    """A Stowage over TLS with identities, the token service and the policy, and the
    certificate folder its clients trust it through."""

    def __init__(self, registries, registry_kind, workdir: Path, client_ca: bool = False,
                 extra_policy: str = ""):
        self.dir = Path(workdir) / "secured"
        self.certs = self.dir / "certs"
        self.certs.mkdir(parents=True)
        self.ca = Ca("stowage test CA")
        (self.certs / "ca.crt").write_bytes(self.ca.cert_pem)
        self.ca.server().write(self.dir / "server.crt", self.dir / "server.key")
        tokens, _ = token_service_toml(self.dir)
        identities = "".join(
            f"[auth.identity.{name}]\nusername = {toml_str(name)}\n"
            f"password = {toml_str(hash_password(pw))}\n" for name, pw in USERS.items())
        tls = (f"[server.tls]\nserver_certificate_bundle = {toml_str(str(self.dir / 'server.crt'))}\n"
               f"server_private_key = {toml_str(str(self.dir / 'server.key'))}\n")
        if client_ca:
            tls += (f"client_ca_bundle = {toml_str(str(self.certs / 'ca.crt'))}\n"
                    'client_auth = "optional"\n')
        self.reg = registries.start(registry_kind, self.dir / "storage",
                                    server_toml=tls + identities + tokens + POLICY + extra_policy,
                                    tls_client={"verify": str(self.certs / "ca.crt")})

    @property
    def host(self) -> str:
        return self.reg.host

    def ref(self, repo: str, tag: str) -> str:
        return f"docker://{self.host}/{repo}:{tag}"

    def token(self, scope: str, user: str = "alice") -> str:
        r = requests.get(f"{self.reg.url}/token", params={"service": "stowage", "scope": scope},
                         auth=(user, USERS[user]), verify=str(self.certs / "ca.crt"),
                         timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["token"]


@pytest.fixture
def secured(registries, registry_kind, tmp_path) -> Secured:
    return Secured(registries, registry_kind, tmp_path)


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["skopeo", "--insecure-policy", *args], check=check, timeout=180)


def refused(cp: subprocess.CompletedProcess) -> str:
    out = (cp.stdout + cp.stderr).decode(errors="replace")
    assert cp.returncode != 0, out
    return out


def test_skopeo_with_creds_and_with_a_registry_token(secured, layout):
    img = multi_layer_image(layout, big_layer_mib=1)
    certs = str(secured.certs)
    skopeo("copy", "--dest-cert-dir", certs, "--dest-creds", "alice:alice-pw",
           img.ref, secured.ref("team/app", "v1"))
    token = secured.token("repository:team/app:pull,push")
    skopeo("copy", "--dest-cert-dir", certs, "--dest-registry-token", token,
           img.ref, secured.ref("team/app", "v2"))
    # Anyone may pull; the bytes are what was pushed.
    out = skopeo("inspect", "--raw", "--cert-dir", certs, secured.ref("team/app", "v2")).stdout
    assert json.loads(out)["layers"], out
    denied = refused(skopeo("copy", "--dest-cert-dir", certs, img.ref,
                            secured.ref("team/app", "anonymous"), check=False))
    assert "401" in denied or "unauthorized" in denied.lower()
    refused(skopeo("copy", "--dest-cert-dir", certs, "--dest-creds", "alice:wrong",
                   img.ref, secured.ref("team/app", "wrong"), check=False))
    # Without trusting the CA, TLS itself refuses.
    refused(skopeo("inspect", "--raw", secured.ref("team/app", "v1"), check=False))


def test_podman_login_push_and_pull(secured, layout, podman, tmp_path):
    img = multi_layer_image(layout, big_layer_mib=1)
    auth_file = tmp_path / "podman-auth.json"
    certs = str(secured.certs)
    podman("pull", img.ref)
    target = f"{secured.host}/team/podman:v1"
    podman("tag", podman.out("images", "-q").splitlines()[0], target)
    failed = podman("login", "--cert-dir", certs, "--authfile", str(auth_file),
                         "-u", "alice", "-p", "wrong", secured.host, check=False)
    refused(failed)
    refused(podman("push", "--cert-dir", certs, "--authfile", str(auth_file), target,
                        check=False))
    podman("login", "--cert-dir", certs, "--authfile", str(auth_file),
                "-u", "alice", "-p", USERS["alice"], secured.host)
    podman("push", "--cert-dir", certs, "--authfile", str(auth_file), target)
    podman("rmi", "-a", "-f")
    podman("pull", "--cert-dir", certs, "--authfile", str(auth_file), target)
    assert target in podman.out("images", "--format", "{{.Repository}}:{{.Tag}}")


def test_buildah_push_with_creds(secured, layout, buildah):
    img = multi_layer_image(layout, big_layer_mib=1)
    certs = str(secured.certs)
    image_id = buildah.out("pull", "-q", img.ref).splitlines()[-1]
    target = f"docker://{secured.host}/team/buildah:v1"
    refused(buildah("push", "--cert-dir", certs, image_id, target, check=False))
    refused(buildah("push", "--cert-dir", certs, "--creds", "alice:wrong", image_id, target,
                         check=False))
    buildah("push", "--cert-dir", certs, "--creds", f"alice:{USERS['alice']}",
                 image_id, target)
    out = skopeo("inspect", "--raw", "--cert-dir", certs, target).stdout
    assert json.loads(out)["schemaVersion"] == 2


def test_the_oras_library_logs_in(secured, tmp_path):
    artifact = tmp_path / "artifact.txt"
    artifact.write_bytes(os.urandom(1024))
    ca = str(secured.certs / "ca.crt")
    target = f"{secured.host}/team/oras:v1"

    anonymous = oras.client.OrasClient(hostname=secured.host, tls_verify=ca)
    with pytest.raises(Exception) as failed:
        anonymous.push(files=[str(artifact)], target=target, disable_path_validation=True)
    assert "UNAUTHORIZED" in str(failed.value)

    # Logins are saved where the test says: oras saves them in ~/.docker/config.json
    # otherwise, where a later test's registry on the same port would find them (and
    # skopeo's anonymous push there would go through as alice).
    saved = str(tmp_path / "docker-config.json")
    wrong = oras.client.OrasClient(hostname=secured.host, tls_verify=ca)
    wrong.login(username="alice", password="wrong", hostname=secured.host, config_path=saved)
    with pytest.raises(Exception):
        wrong.push(files=[str(artifact)], target=target, disable_path_validation=True)

    client = oras.client.OrasClient(hostname=secured.host, tls_verify=ca)
    client.login(username="alice", password=USERS["alice"], hostname=secured.host,
                 config_path=saved)
    response = client.push(files=[str(artifact)], target=target, disable_path_validation=True)
    assert response.status_code == 201, response.text
    files = client.pull(target=target, outdir=str(tmp_path / "out"))
    assert Path(files[0]).read_bytes() == artifact.read_bytes()


def test_curl_with_a_client_certificate(registries, registry_kind, tmp_path):
    """A verified client certificate is an identity: its organization is what the policy of
    `robots/` trusts, so it pushes there without any password, and alice cannot."""
    robots_only = ('[repository."robots/".access_policy]\ndefault = "deny"\n'
                   "rules = [\"'robots' in identity.certificate.organizations\"]\n")
    secured = Secured(registries, registry_kind, tmp_path, client_ca=True,
                      extra_policy=robots_only)
    ca = secured.ca
    ca.client("builder", ("robots",)).write(tmp_path / "robot.crt", tmp_path / "robot.key")
    Ca("another CA").client("builder", ("robots",)).write(tmp_path / "stranger.crt",
                                                          tmp_path / "stranger.key")
    data = os.urandom(4096)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (tmp_path / "blob").write_bytes(data)
    url = f"{secured.reg.url}/v2/robots/app/blobs/uploads/?digest={digest}"

    def curl_push(*cert: str) -> tuple[int, str]:
        cp = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                             "--max-time", "20", "--cacert", str(secured.certs / "ca.crt"),
                             *cert, "-X", "POST", "--data-binary", f"@{tmp_path / 'blob'}",
                             "-H", "Content-Type: application/octet-stream", url],
                            capture_output=True, text=True, timeout=60)
        return cp.returncode, cp.stdout

    assert curl_push() == (0, "401")
    assert curl_push("-u", f"alice:{USERS['alice']}") == (0, "403")
    stranger = curl_push("--cert", str(tmp_path / "stranger.crt"),
                         "--key", str(tmp_path / "stranger.key"))
    assert stranger[0] != 0 or stranger[1] in ("000", "401"), stranger
    assert curl_push("--cert", str(tmp_path / "robot.crt"),
                     "--key", str(tmp_path / "robot.key")) == (0, "201")


def test_docker_engine_login_push_and_pull(secured, layout, tmp_path):
    img = multi_layer_image(layout, big_layer_mib=1)
    archive = tmp_path / "image.tar"
    skopeo("copy", img.ref, f"docker-archive:{archive}:local/app:v1")
    docker = DockerEngine(trust=(secured.host, secured.certs / "ca.crt"))
    try:
        docker("load", "-i", str(archive))
        target = f"{secured.host}/team/docker:v1"
        docker("tag", "local/app:v1", target)
        refused(docker("push", target, check=False))
        refused(docker("login", "-u", "alice", "--password-stdin", secured.host,
                       stdin=b"wrong", check=False))
        docker("login", "-u", "alice", "--password-stdin", secured.host,
               stdin=USERS["alice"].encode())
        docker("push", target)
        docker("rmi", target, "local/app:v1")
        docker("logout", secured.host)
        docker("pull", target)  # anyone may pull
        assert target in docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.decode()
    finally:
        docker.stop()
