"""Federated identity against live servers: OIDC ID tokens (bearer, Basic with the provider's
name, and at /token) with the provider's keys shared by three replicas through Redis, key
rotation, floods of made-up key ids, an unreachable provider, policies over claims, real
clients (skopeo, podman), and external token servers (one stowage issuing tokens for
another; one naming its signer by an `x5c` certificate chain)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from pathlib import Path

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from harness.auth import hash_password
from harness.layout import OciLayout, gzip_image
from harness.oci import Blob, Client, Image, ResponseLog, UnexpectedStatus
from harness.oidc_provider import Key, b64url
from harness.pki import Ca
from harness.process import wait_for_log
from harness.registry import fs_toml, start_stowage
from harness.token_server import ISSUER as TOKEN_ISSUER
from harness.token_server import SERVICE as TOKEN_SERVICE
from harness.token_server import TokenServer
from harness.tools import docker_ref, skopeo_copy, skopeo_inspect_raw

PROVIDER = "github-actions"
POLICY = """
[global.access_policy]
default = "deny"
rules = ['identity.oidc.claims.repository == "org/app" && request.repository.startsWith("org/")']
"""


def oidc_toml(provider, refresh: int = 300, extra: str = "") -> str:
    """The provider as `[auth.oidc.github-actions]`, the claims policy, no login throttling
    (the floods below come from one address)."""
    return (
        f"[auth]\nmax_failed_logins_per_minute = 0\n{extra}\n"
        f'[auth.oidc.{PROVIDER}]\nissuer = "{provider.issuer}"\n'
        f'required_audience = "{provider.audience}"\njwks_refresh_interval_secs = {refresh}\n'
        f"{POLICY}"
    )


def push_and_pull(c: Client, repo: str, push_to: int, pull_from: int, tag: str) -> None:
    config, layer = Blob(b"{}"), Blob(os.urandom(256))
    image = Image(config, (layer,), tag)
    c.push_blob(repo, config, expect=201, at=push_to)
    c.push_blob(repo, layer, expect=201, at=push_to)
    c.push_manifest(repo, tag, image.manifest, expect=201, at=push_to)
    got = c.get_manifest(repo, tag, expect=(200, 404), at=pull_from)
    assert got.status_code == 200 and got.content == image.manifest
    assert c.get_blob(repo, layer.digest, at=pull_from).content == layer.data


def assert_unauthorized(response: requests.Response) -> None:
    """401 with an OCI error body."""
    assert response.status_code == 401, f"{response.status_code} {response.text[:200]}"
    assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"


def get_tags(url: str, repo: str, token: str) -> requests.Response:
    return requests.get(f"{url}/v2/{repo}/tags/list", headers={"Authorization": f"Bearer {token}"},
                        timeout=30)


def no_server_errors(log: ResponseLog) -> None:
    assert log.server_errors == [], log.server_errors


def test_the_cluster_fetches_the_keys_once_per_refresh_interval(provider, start_cluster):
    refresh = 5
    cluster = start_cluster("fs", registry_toml=oidc_toml(provider, refresh))
    log = ResponseLog()
    started = time.monotonic()
    for i in range(9):
        # A fresh token each time, so each is verified (not served from the verified cache).
        token = provider.token(key=provider.keys[i % 2])
        push_and_pull(Client(cluster.urls, token=token, log=log), f"org/app-{i}", i % 3,
                      (i + 1) % 3, "v1")
    elapsed = time.monotonic() - started
    assert elapsed < refresh, f"the first round took {elapsed:.1f}s, past the interval"
    assert provider.jwks_fetches() == 1, provider.requests
    time.sleep(refresh + 0.5 - elapsed)
    for i in range(6):
        token = provider.token(key=provider.keys[i % 2])
        push_and_pull(Client(cluster.urls, token=token, log=log), f"org/again-{i}", i % 3,
                      (i + 2) % 3, "v1")
    assert provider.jwks_fetches() == 2, provider.requests
    discoveries = provider.requests["/.well-known/openid-configuration"]
    assert 1 <= discoveries <= 2, provider.requests
    no_server_errors(log)


def test_a_rotated_key_is_picked_up_by_one_refetch(provider, start_cluster):
    cluster = start_cluster("fs", registry_toml=oidc_toml(provider))
    log = ResponseLog()
    push_and_pull(Client(cluster.urls, token=provider.token(), log=log), "org/app", 0, 1, "old")
    assert provider.jwks_fetches() == 1
    new = provider.rotate("ES256")
    for i in range(3):
        push_and_pull(Client(cluster.urls, token=provider.token(key=new), log=log), "org/app", i,
                      (i + 1) % 3, f"new-{i}")
    assert provider.jwks_fetches() == 2, provider.requests
    no_server_errors(log)


def test_a_flood_of_made_up_key_ids_costs_at_most_one_refetch(provider, start_cluster):
    cluster = start_cluster("fs", registry_toml=oidc_toml(provider))
    assert get_tags(cluster.urls[0], "org/app", provider.token()).status_code in (200, 404)
    before = provider.jwks_fetches()
    started = time.monotonic()
    for i in range(90):
        token = provider.token(kid=f"random-{secrets.token_hex(6)}")
        assert_unauthorized(get_tags(cluster.urls[i % 3], "org/app", token))
    # One refetch per 10 s spacing for the whole cluster, however many kids were made up.
    allowed = 1 + int((time.monotonic() - started) // 10)
    assert provider.jwks_fetches() - before <= allowed, provider.requests
    # Known keys still work on every replica.
    for url in cluster.urls:
        assert get_tags(url, "org/app", provider.token()).status_code in (200, 404)


def test_an_unreachable_provider_keeps_known_keys_and_refuses_new_ones(provider, start_cluster):
    cluster = start_cluster("fs", registry_toml=oidc_toml(provider))
    log = ResponseLog()
    push_and_pull(Client(cluster.urls, token=provider.token(), log=log), "org/app", 0, 1, "before")
    provider.stop()
    for i in range(3):
        token = provider.token(key=provider.keys[i % 2])
        push_and_pull(Client(cluster.urls, token=token, log=log), "org/app", i, (i + 1) % 3,
                      f"down-{i}")
    unpublished = Key.new("ES256")
    for url in cluster.urls:
        response = get_tags(url, "org/app", provider.token(key=unpublished))
        assert_unauthorized(response)
    logs = wait_for_log(lambda: "".join(replica.log_text() for replica in cluster.replicas),
                        PROVIDER, "cannot fetch the provider's keys")
    assert PROVIDER in logs and "cannot fetch the provider's keys" in logs
    no_server_errors(log)


def test_policies_decide_on_the_tokens_claims(provider, start_cluster):
    cluster = start_cluster("fs", count=1, registry_toml=oidc_toml(provider))
    log = ResponseLog()
    app = provider.token()
    push_and_pull(Client(cluster.urls, token=app, log=log), "org/tools", 0, 0, "v1")
    with pytest.raises(UnexpectedStatus, match="403"):
        Client(cluster.urls, token=app, log=log).push_blob("other/app", Blob(b"x"), expect=201)
    other = provider.token(repository="org/other", sub="repo:org/other:ref:refs/heads/main")
    with pytest.raises(UnexpectedStatus, match="403"):
        Client(cluster.urls, token=other, log=log).push_blob("org/app", Blob(b"y"), expect=201)
    no_server_errors(log)


@pytest.mark.parametrize(
    "mode", ["redirect", "other-host", "huge"],
)
def test_bad_discovery_and_key_documents_are_refused(provider, tmp_path, mode):
    provider.mode = mode
    server = start_stowage(tmp_path / "registry", fs_toml("blob_store", tmp_path / "store"),
                           server_toml=oidc_toml(provider))
    try:
        for _ in range(5):
            assert_unauthorized(get_tags(server.url, "org/app", provider.token()))
        # One attempt, then the failed fetch's lease holds further ones off.
        assert provider.requests["/.well-known/openid-configuration"] == 1, provider.requests
        assert provider.jwks_fetches() == (1 if mode == "huge" else 0), provider.requests
        logged = server.log_after(0, PROVIDER, "cannot fetch the provider's keys")
        assert PROVIDER in logged and "cannot fetch the provider's keys" in logged
    finally:
        server.stop()


def test_bad_tokens_get_401_with_an_oci_error(provider, tmp_path):
    server = start_stowage(tmp_path / "registry", fs_toml("blob_store", tmp_path / "store"),
                           server_toml=oidc_toml(provider))
    try:
        now = int(time.time())
        bad = {
            "expired": provider.token(exp=now - 3600, iat=now - 7200, nbf=now - 7200),
            "not yet valid": provider.token(nbf=now + 3600, exp=now + 7200),
            "wrong audience": provider.token(aud="someone-else"),
            "wrong issuer": provider.token(iss="https://token.actions.githubusercontent.com"),
            "HS256": jwt.encode(
                {"iss": provider.issuer, "aud": provider.audience, "sub": "x", "exp": now + 300},
                b"the provider's public key, as a secret", algorithm="HS256", headers={"kid": provider.keys[0].kid}),
            "garbage": "not.a.jwt",
        }
        for why, token in bad.items():
            response = get_tags(server.url, "org/app", token)
            assert response.status_code == 401, why
            assert_unauthorized(response)
        assert get_tags(server.url, "org/app", provider.token()).status_code in (200, 404)
        assert provider.jwks_fetches() == 1, provider.requests
    finally:
        server.stop()


def ec_key_pem(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return key


@pytest.mark.parametrize("login", ["token_service", "basic"])
def test_skopeo_pushes_with_the_providers_name_and_token(provider, tmp_path, login):
    extra = ""
    if login == "token_service":
        ec_key_pem(tmp_path / "signing.pem")
        extra = f'[auth.token_service]\nsigning_key = "{tmp_path / "signing.pem"}"\n'
    server = start_stowage(tmp_path / "registry", fs_toml("blob_store", tmp_path / "store"),
                           server_toml=oidc_toml(provider, extra=extra))
    try:
        challenge = requests.get(f"{server.url}/v2/", timeout=10).headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer" if login == "token_service" else "Basic"), challenge
        image = gzip_image(OciLayout(tmp_path / "layout"))
        creds = f"{PROVIDER}:{provider.token()}"
        target = docker_ref(server, "org/app", "v1")
        skopeo_copy(image.ref, target, "--dest-creds", creds)
        assert skopeo_inspect_raw(f"{target}", check=False).returncode != 0, "anonymous pull worked"
        pulled = tmp_path / "pulled"
        skopeo_copy(target, f"oci:{pulled}:v1", "--src-creds", creds)
        assert OciLayout(pulled).resolve("v1")["digest"] == image.digest
        refused = skopeo_copy(image.ref, docker_ref(server, "elsewhere/app", "v1"), "--dest-creds", creds,
                              check=False)
        assert refused.returncode != 0, "the policy let the job push outside org/"
        wrong = skopeo_copy(image.ref, target, "--dest-creds", f"{PROVIDER}:{provider.token(aud='x')}",
                            check=False)
        assert wrong.returncode != 0
    finally:
        server.stop()


def jwks_of(key: ec.EllipticCurvePrivateKey) -> dict:
    """The token service's public key as a JWKS, with the `kid` stowage gives it (the first
    16 bytes of the SHA-256 of the uncompressed point, in hex)."""
    point = key.public_key().public_bytes(serialization.Encoding.X962,
                                          serialization.PublicFormat.UncompressedPoint)
    return {"keys": [{"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
                      "kid": hashlib.sha256(point).hexdigest()[:32],
                      "x": b64url(point[1:33]), "y": b64url(point[33:65])}]}


@pytest.fixture
def hub_and_registry(tmp_path):
    """A stowage that is only a token server (`[auth.token_service]`, user alice) and a
    stowage that trusts it (`[auth.token]` with its key as a JWKS file)."""
    key = ec_key_pem(tmp_path / "hub.pem")
    (tmp_path / "hub-jwks.json").write_text(json.dumps(jwks_of(key)))
    hub = start_stowage(tmp_path / "hub", fs_toml("blob_store", tmp_path / "hub-store"),
                        server_toml=f'[auth.identity.alice]\nusername = "alice"\npassword = "{hash_password("s3cret")}"\n'
                        f'[auth.token_service]\nsigning_key = "{tmp_path / "hub.pem"}"\n'
                        f'service = "registry.test"\nissuer = "hub.test"\n')
    registry = start_stowage(tmp_path / "registry", fs_toml("blob_store", tmp_path / "store"),
                             server_toml=f'[auth.token]\nrealm = "{hub.url}/token"\n'
                             f'service = "registry.test"\nissuer = "hub.test"\n'
                             f'jwks = "{tmp_path / "hub-jwks.json"}"\nsigning_algorithms = ["ES256"]\n')
    yield hub, registry
    registry.stop()
    hub.stop()


def test_an_external_token_servers_tokens_admit_skopeo(hub_and_registry, tmp_path):
    hub, registry = hub_and_registry
    challenge = requests.get(f"{registry.url}/v2/", timeout=10).headers["WWW-Authenticate"]
    assert challenge == f'Bearer realm="{hub.url}/token",service="registry.test"', challenge
    image = gzip_image(OciLayout(tmp_path / "layout"))
    target = docker_ref(registry, "team/app", "v1")
    skopeo_copy(image.ref, target, "--dest-creds", "alice:s3cret")
    pulled = tmp_path / "pulled"
    skopeo_copy(target, f"oci:{pulled}:v1", "--src-creds", "alice:s3cret")
    assert OciLayout(pulled).resolve("v1")["digest"] == image.digest
    wrong = skopeo_copy(image.ref, target, "--dest-creds", "alice:wrong", check=False)
    assert wrong.returncode != 0
    # The registry's own repositories hold the image; the hub's hold nothing.
    assert requests.get(f"{hub.url}/v2/team/app/tags/list", timeout=10).status_code == 401


def test_an_external_token_servers_tokens_admit_podman(hub_and_registry, tmp_path, podman):
    hub, registry = hub_and_registry
    image = gzip_image(OciLayout(tmp_path / "layout"))
    image_id = podman.out("pull", "-q", image.ref).splitlines()[-1]
    target = f"{registry.host}/team/podman:v1"
    podman("push", "--tls-verify=false", "--creds", "alice:s3cret", image_id, f"docker://{target}")
    podman("rmi", "-f", image_id)
    podman("pull", "-q", "--tls-verify=false", "--creds", "alice:s3cret", target)
    assert podman.out("inspect", "--format", "{{.Id}}", target) == image_id
    refused = podman("pull", "-q", "--tls-verify=false", "--creds", "alice:nope", target, check=False)
    assert refused.returncode != 0


def chain_signed_token_server(tmp_path: Path) -> TokenServer:
    """A token server whose tokens name their signer by an `x5c` chain: its certificate, issued
    by an intermediate CA, issued by a root CA (the root is the bundle a registry trusts)."""
    root = Ca("token root")
    intermediate = Ca("token intermediate", parent=root)
    signer = intermediate.server("token signer")
    return TokenServer(tmp_path, "alice", "s3cret",
                       signer=(signer.key, [signer.cert, intermediate.cert, root.cert]))


@pytest.mark.parametrize("bundle", ["the chain's root", "another root"])
def test_an_external_token_servers_certificate_chain_is_checked_against_the_bundle(tmp_path, bundle):
    tokens = chain_signed_token_server(tmp_path)
    roots = tokens.cert_bundle
    if bundle == "another root":
        roots = tmp_path / "other-root.pem"
        roots.write_bytes(Ca("another root").cert_pem)
    registry = start_stowage(tmp_path / "registry", fs_toml("blob_store", tmp_path / "store"),
                             server_toml=f'[auth.token]\nrealm = "{tokens.realm}"\n'
                             f'service = "{TOKEN_SERVICE}"\nissuer = "{TOKEN_ISSUER}"\n'
                             f'rootcertbundle = "{roots}"\nsigning_algorithms = ["ES256"]\n')
    try:
        image = gzip_image(OciLayout(tmp_path / "layout"))
        target = docker_ref(registry, "team/app", "v1")
        pushed = skopeo_copy(image.ref, target, "--dest-creds", "alice:s3cret", check=False)
        scope = ["repository:team/app:pull"]
        if bundle == "another root":
            assert pushed.returncode != 0, "a chain to an untrusted root was accepted"
            assert_unauthorized(get_tags(registry.url, "team/app", tokens.token("alice", scope)))
            return
        assert pushed.returncode == 0, pushed.stderr
        pulled = tmp_path / "pulled"
        skopeo_copy(target, f"oci:{pulled}:v1", "--src-creds", "alice:s3cret")
        assert OciLayout(pulled).resolve("v1")["digest"] == image.digest
        assert get_tags(registry.url, "team/app", tokens.token("alice", scope)).status_code == 200
        # The same chain in the header of a token another key signed proves nothing.
        tokens.key = ec.generate_private_key(ec.SECP256R1())
        assert_unauthorized(get_tags(registry.url, "team/app", tokens.token("alice", scope)))
    finally:
        registry.stop()
        tokens.stop()
