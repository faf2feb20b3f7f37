"""TLS (`[server.tls]`): https with a verified server certificate, client certificates
(optional and required) checked against `client_ca_bundle`, certificates and client CAs
reloaded from their files without a restart (open connections keep theirs, a broken file
keeps the old ones serving), a stalled handshake that holds up no one else, and skopeo
pushing and pulling over mutual TLS."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography import x509

from harness.layout import OciLayout, gzip_image
from harness.pki import Ca, Issued
from harness.tools import assert_layout_images_identical, docker_ref, skopeo

pytestmark = [pytest.mark.stowage_only, pytest.mark.fs_only]

TIMEOUT = 30
# The server polls its TLS files once a second.
RELOAD_WITHIN = 6.0


@dataclass
class Pki:
    dir: Path
    ca: Ca
    other_ca: Ca
    server: Issued
    client: Issued  # from `ca`
    stranger: Issued  # a client certificate from `other_ca`

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def ca_file(self) -> Path:
        return self.path("ca.crt")

    def write_client(self, issued: Issued, name: str) -> tuple[Path, Path]:
        return issued.write(self.path(f"{name}.crt"), self.path(f"{name}.key"))


@pytest.fixture
def pki(tmp_path) -> Pki:
    directory = tmp_path / "pki"
    directory.mkdir()
    ca, other_ca = Ca("stowage test CA"), Ca("another CA")
    pki = Pki(directory, ca, other_ca, ca.server(serial=1001),
              ca.client("alice", ("team-a",)), other_ca.client("mallory"))
    pki.ca_file.write_bytes(ca.cert_pem)
    pki.path("other-ca.crt").write_bytes(other_ca.cert_pem)
    pki.server.write(pki.path("server.crt"), pki.path("server.key"))
    pki.write_client(pki.client, "client")
    pki.write_client(pki.stranger, "stranger")
    return pki


def start_tls(registries, registry_kind, tmp_path, pki: Pki, client_auth: str | None = None,
              client_ca: Path | None = None, extra: str = ""):
    """A registry over TLS with `pki`'s server certificate; with `client_auth`, client
    certificates are checked against `client_ca` (default: `pki.ca`)."""
    tls = (f"{extra}\n[server.tls]\n"
           f"server_certificate_bundle = \"{pki.path('server.crt')}\"\n"
           f"server_private_key = \"{pki.path('server.key')}\"\n")
    client = {"verify": str(pki.ca_file)}
    if client_auth:
        tls += (f"client_ca_bundle = \"{client_ca or pki.ca_file}\"\n"
                f"client_auth = \"{client_auth}\"\n")
        client["cert"] = (str(pki.path("client.crt")), str(pki.path("client.key")))
    return registries.start(registry_kind, tmp_path / "storage", server_toml=tls,
                            tls_client=client)


def curl(reg, pki: Pki, client: str | None = None, ca: Path | None = None):
    """`curl` GET /v2/ over TLS, with `client`'s certificate if given; returns
    (exit code, HTTP status)."""
    argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
            "--cacert", str(ca or pki.ca_file)]
    if client:
        argv += ["--cert", str(pki.path(f"{client}.crt")),
                 "--key", str(pki.path(f"{client}.key"))]
    cp = subprocess.run(argv + [f"https://127.0.0.1:{reg.port}/v2/"], capture_output=True,
                        text=True, timeout=TIMEOUT)
    return cp.returncode, cp.stdout


def tls_context(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_file))


def served_serial(reg, pki: Pki) -> int:
    """The serial number of the certificate a new connection is served with."""
    with socket.create_connection(("127.0.0.1", reg.port), timeout=TIMEOUT) as raw:
        with tls_context(pki).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def wait_for_serial(reg, pki: Pki, serial: int) -> float:
    """Seconds until new connections get the certificate numbered `serial`."""
    started = time.monotonic()
    while time.monotonic() - started < RELOAD_WITHIN:
        if served_serial(reg, pki) == serial:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"new connections still get serial {served_serial(reg, pki)}, "
                         f"not {serial}, after {RELOAD_WITHIN}s\n{reg.log_tail()}")


def push_and_pull_blob(reg, repo: str) -> None:
    data = os.urandom(256 * 1024 + 17)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = requests.post(f"{reg.url}/v2/{repo}/blobs/uploads/", params={"digest": digest},
                      data=data, headers={"Content-Type": "application/octet-stream"},
                      timeout=TIMEOUT, **reg.tls_client)
    assert r.status_code == 201, r.text
    r = requests.get(f"{reg.url}/v2/{repo}/blobs/{digest}", timeout=TIMEOUT, **reg.tls_client)
    assert r.status_code == 200 and r.content == data


def test_https_with_a_verified_certificate_serves_and_plain_http_does_not(
        registries, registry_kind, tmp_path, pki, repo):
    reg = start_tls(registries, registry_kind, tmp_path, pki)
    assert reg.url.startswith("https://")
    r = requests.get(f"{reg.url}/v2/", timeout=TIMEOUT, **reg.tls_client)
    assert r.status_code == 200, r.text
    push_and_pull_blob(reg, repo)
    # The certificate is the one from the test CA: a client that does not trust it refuses.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{reg.url}/v2/", timeout=TIMEOUT, verify=str(pki.path("other-ca.crt")))
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://{reg.host}/v2/", timeout=TIMEOUT)
    assert reg.running()


def test_required_client_auth_refuses_clients_without_a_certificate_from_the_ca(
        registries, registry_kind, tmp_path, pki, repo):
    reg = start_tls(registries, registry_kind, tmp_path, pki, client_auth="required")
    assert curl(reg, pki, client="client") == (0, "200")
    code, status = curl(reg, pki)
    assert code != 0 and status != "200", "served a client without a certificate"
    code, status = curl(reg, pki, client="stranger")
    assert code != 0 and status != "200", "served a certificate from another CA"
    push_and_pull_blob(reg, repo)  # requests with the client certificate
    assert reg.running()


def test_optional_client_auth_serves_clients_with_and_without_a_certificate(
        registries, registry_kind, tmp_path, pki):
    reg = start_tls(registries, registry_kind, tmp_path, pki, client_auth="optional")
    assert curl(reg, pki) == (0, "200")
    assert curl(reg, pki, client="client") == (0, "200")
    # A certificate that is presented must still verify.
    code, status = curl(reg, pki, client="stranger")
    assert code != 0 and status != "200", "served a certificate from another CA"


def test_a_new_certificate_is_served_to_new_connections_while_open_ones_keep_theirs(
        registries, registry_kind, tmp_path, pki):
    reg = start_tls(registries, registry_kind, tmp_path, pki)
    old = http_connection(reg, pki)
    assert get_v2(old) == 200
    sock = old.sock
    assert peer_serial(old) == pki.server.cert.serial_number == 1001

    renewed = pki.ca.server(common_name="stowage renewed", serial=2002)
    renewed.write(pki.path("server.crt"), pki.path("server.key"))  # in place
    waited = wait_for_serial(reg, pki, 2002)
    assert waited < RELOAD_WITHIN

    # The connection opened before the change is still open, on its certificate.
    assert get_v2(old) == 200
    assert old.sock is sock and peer_serial(old) == 1001
    old.close()
    assert reg.running()


def test_a_broken_or_mismatched_new_file_keeps_the_old_certificate_serving(
        registries, registry_kind, tmp_path, pki):
    reg = start_tls(registries, registry_kind, tmp_path, pki)
    assert served_serial(reg, pki) == 1001
    renewed = pki.ca.server(serial=3003)

    # Half a PEM file, as a writer interrupted midway leaves it.
    pki.path("server.crt").write_bytes(renewed.cert_pem[: len(renewed.cert_pem) // 2])
    time.sleep(2.5)
    assert served_serial(reg, pki) == 1001
    assert curl(reg, pki) == (0, "200")

    # A whole certificate that is not the key's.
    pki.path("server.crt").write_bytes(renewed.cert_pem)
    time.sleep(2.5)
    assert served_serial(reg, pki) == 1001
    assert reg.running()
    assert "cannot be used" in reg.log_text()

    # Its key arrives: the pair is served.
    pki.path("server.key").write_bytes(renewed.key_pem)
    wait_for_serial(reg, pki, 3003)
    assert curl(reg, pki) == (0, "200")


def test_a_changed_client_ca_bundle_is_used_for_new_connections(
        registries, registry_kind, tmp_path, pki):
    bundle = pki.path("clients.crt")
    bundle.write_bytes(pki.ca.cert_pem)
    reg = start_tls(registries, registry_kind, tmp_path, pki, client_auth="required",
                    client_ca=bundle)
    assert curl(reg, pki, client="client") == (0, "200")
    assert curl(reg, pki, client="stranger")[0] != 0

    bundle.write_bytes(pki.other_ca.cert_pem)
    deadline = time.monotonic() + RELOAD_WITHIN
    while curl(reg, pki, client="stranger") != (0, "200"):
        assert time.monotonic() < deadline, f"new client CA not used\n{reg.log_tail()}"
        time.sleep(0.2)
    assert curl(reg, pki, client="client")[0] != 0


def test_a_stalled_handshake_holds_up_no_one_and_is_cut_off(
        registries, registry_kind, tmp_path, pki):
    reg = start_tls(registries, registry_kind, tmp_path, pki,
                    extra="request_header_timeout_secs = 2")
    with socket.create_connection(("127.0.0.1", reg.port), timeout=TIMEOUT) as silent:
        silent.send(b"\x16\x03\x01")  # the start of a ClientHello, and then nothing
        started = time.monotonic()
        assert curl(reg, pki) == (0, "200")
        assert silent.recv(1024) == b"", "the server did not close the stalled handshake"
        assert 1.5 < time.monotonic() - started < 10


def test_skopeo_pushes_and_pulls_over_mutual_tls(registries, registry_kind, tmp_path, pki,
                                                  repo, layout):
    reg = start_tls(registries, registry_kind, tmp_path, pki, client_auth="required")
    certs = tmp_path / "certs.d"
    certs.mkdir()
    (certs / "ca.crt").write_bytes(pki.ca.cert_pem)
    pki.client.write(certs / "client.cert", certs / "client.key")
    img = gzip_image(layout)
    ref = docker_ref(reg, repo, img.tag)
    skopeo("copy", "--retry-times", "0", "--preserve-digests", "--dest-cert-dir", str(certs),
           img.ref, ref)
    pulled_dir = tmp_path / "pulled"
    skopeo("copy", "--retry-times", "0", "--preserve-digests", "--src-cert-dir", str(certs),
           ref, f"oci:{pulled_dir}:{img.tag}")
    assert_layout_images_identical(layout, img.tag, OciLayout(pulled_dir), img.tag)

    # skopeo does verify the server: trusting only another CA, it refuses.
    (certs / "ca.crt").write_bytes(pki.other_ca.cert_pem)
    refused = skopeo("inspect", "--raw", "--cert-dir", str(certs), ref, check=False)
    assert refused.returncode != 0
    assert "certificate" in refused.stderr.decode(errors="replace")


def http_connection(reg, pki: Pki) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", reg.port, context=tls_context(pki),
                                       timeout=TIMEOUT)


def get_v2(conn) -> int:
    conn.request("GET", "/v2/")
    response = conn.getresponse()
    response.read()
    return response.status


def peer_serial(conn) -> int:
    return x509.load_der_x509_certificate(conn.sock.getpeercert(binary_form=True)).serial_number
