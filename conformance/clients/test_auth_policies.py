"""Access control over HTTP: the README's policy examples, the token protocol, immutable
tags, and every kind of bad credential, each refused with 401 (or 403) and an OCI error
body, never 500, and leaving the store as it was."""

from __future__ import annotations

import http.client
import base64
import time

import pytest

from harness import jwt
from harness.auth import identities_toml, policy_toml, push_config_image, token_service_toml
from harness.oci import Blob, Client, error_code

pytestmark = pytest.mark.stowage_only

USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "admin": "admin-pw",
         "robot-ci": "robot-pw"}

# The README's examples ("Securing Stowage"), word for word.
PUBLIC_PULL = policy_toml("global.access_policy", "deny", [
    "request.action in ['pull', 'list']",
    "!identity.anonymous",
])
PER_TEAM = policy_toml("global.access_policy", "deny", ["!identity.anonymous"]) + policy_toml(
    'repository."team-a/".access_policy', "deny", [
        "identity.username in ['alice', 'carol']",
        "request.action in ['pull', 'list']",
    ]) + policy_toml('repository."team-b/".access_policy', "deny", [
        "identity.username == 'bob'",
        "request.action in ['pull', 'list']",
    ])
READ_ONLY_ROBOTS = policy_toml("global.access_policy", "allow", [
    "identity.anonymous",
    "identity.username.startsWith('robot-') && !(request.action in ['pull', 'list'])",
])
ADMIN_DELETES = policy_toml("global.access_policy", "allow", [
    "identity.anonymous",
    "request.action == 'delete' && identity.username != 'admin'",
])


# For tests that fail many logins on purpose (the throttle has a test of its own).
NO_THROTTLE = "[auth]\nmax_failed_logins_per_minute = 0\n"


@pytest.fixture(scope="module")
def identities() -> str:
    return identities_toml(USERS)


@pytest.fixture
def start(registries, registry_kind, tmp_path, identities):
    """Starts a Stowage with the given tables after the identities."""
    def start(tables: str, with_identities: bool = True):
        extra = (identities if with_identities else "") + tables
        return registries.start(registry_kind, tmp_path / "storage", server_toml=extra)
    return start


def as_user(reg, name: str) -> Client:
    return Client(reg.url, basic=(name, USERS[name]))


def anonymous(reg) -> Client:
    return Client(reg.url)


def test_public_pull_authenticated_push(start):
    reg = start(PUBLIC_PULL)
    r = anonymous(reg).request("GET", "/v2/")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Basic realm="stowage"'
    assert as_user(reg, "alice").request("GET", "/v2/").status_code == 200
    r, digest = push_config_image(as_user(reg, "alice"), "public/app", "v1")
    assert r.status_code == 201, r.text
    assert anonymous(reg).get_manifest("public/app", "v1").status_code == 200
    assert anonymous(reg).request("GET", "/v2/public/app/tags/list").status_code == 200
    r, _ = push_config_image(anonymous(reg), "public/app", "v2")
    assert r.status_code == 401 and error_code(r) == "UNAUTHORIZED"
    assert "WWW-Authenticate" in r.headers
    r, _ = push_config_image(Client(reg.url, basic=("alice", "wrong")), "public/app", "v3")
    assert r.status_code == 401 and error_code(r) == "UNAUTHORIZED"
    for tag in ("v2", "v3"):
        assert as_user(reg, "alice").get_manifest("public/app", tag).status_code == 404


def test_per_team_prefixes(start):
    reg = start(PER_TEAM)
    assert push_config_image(as_user(reg, "alice"), "team-a/app", "v1")[0].status_code == 201
    assert push_config_image(as_user(reg, "carol"), "team-a/app", "v2")[0].status_code == 201
    assert push_config_image(as_user(reg, "bob"), "team-b/app", "v1")[0].status_code == 201
    r, _ = push_config_image(as_user(reg, "bob"), "team-a/app", "evil")
    assert r.status_code == 403 and error_code(r) == "DENIED", r.text
    r, _ = push_config_image(as_user(reg, "alice"), "team-b/app", "evil")
    assert r.status_code == 403 and error_code(r) == "DENIED"
    assert as_user(reg, "bob").get_manifest("team-a/app", "v1").status_code == 200
    assert anonymous(reg).get_manifest("team-a/app", "v1").status_code == 401
    # Outside the team prefixes the global rule alone decides: any logged-in user.
    assert push_config_image(as_user(reg, "bob"), "shared/app", "v1")[0].status_code == 201


def test_read_only_robot_accounts(start):
    reg = start(READ_ONLY_ROBOTS)
    r, digest = push_config_image(as_user(reg, "alice"), "app", "v1")
    assert r.status_code == 201
    robot = as_user(reg, "robot-ci")
    assert robot.get_manifest("app", "v1").status_code == 200
    assert robot.request("GET", "/v2/app/tags/list").json()["tags"] == ["v1"]
    r, _ = push_config_image(robot, "app", "v2")
    assert r.status_code == 403 and error_code(r) == "DENIED"
    assert robot.request("DELETE", f"/v2/app/manifests/{digest}").status_code == 403
    assert anonymous(reg).get_manifest("app", "v1").status_code == 401


def test_deny_delete_for_all_but_admins(start):
    reg = start(ADMIN_DELETES)
    r, digest = push_config_image(as_user(reg, "alice"), "app", "v1")
    assert r.status_code == 201
    r = as_user(reg, "alice").request("DELETE", f"/v2/app/manifests/{digest}")
    assert r.status_code == 403 and error_code(r) == "DENIED"
    assert as_user(reg, "alice").get_manifest("app", "v1").status_code == 200
    r = as_user(reg, "admin").request("DELETE", f"/v2/app/manifests/{digest}")
    assert r.status_code == 202, r.text
    assert as_user(reg, "alice").get_manifest("app", "v1").status_code == 404


def test_the_catalog_lists_only_what_the_caller_may_pull(start):
    reg = start(PER_TEAM.replace(
        "rules = [\"!identity.anonymous\"]",
        "rules = [\"!identity.anonymous\", \"request.action == 'catalog'\"]", 1)
        + policy_toml('repository."secret/".access_policy', "deny",
                      ["identity.username == 'admin'"]))
    assert push_config_image(as_user(reg, "admin"), "secret/app", "v1")[0].status_code == 201
    assert push_config_image(as_user(reg, "alice"), "team-a/app", "v1")[0].status_code == 201
    seen = as_user(reg, "bob").request("GET", "/v2/_catalog").json()["repositories"]
    assert seen == ["team-a/app"]
    seen = as_user(reg, "admin").request("GET", "/v2/_catalog").json()["repositories"]
    assert seen == ["secret/app", "team-a/app"]


def test_mounts_need_pull_on_their_source(start):
    reg = start(PER_TEAM + policy_toml('repository."secret/".access_policy', "deny",
                                       ["identity.username == 'admin'"]))
    blob = Blob(b"a secret layer")
    r = as_user(reg, "admin").push_blob("secret/app", blob)
    assert r.status_code == 201
    digest = r.headers["Docker-Content-Digest"]
    bob = as_user(reg, "bob")
    r = bob.request("POST", "/v2/team-b/app/blobs/uploads/",
                    params={"mount": digest, "from": "secret/app"})
    assert r.status_code == 403 and "pull secret/app" in r.text
    # Without `from`, a mount is never served from a repository the caller cannot read:
    # it becomes an ordinary upload.
    r = bob.request("POST", "/v2/team-b/app/blobs/uploads/", params={"mount": digest})
    assert r.status_code == 202, r.text
    assert bob.request("HEAD", f"/v2/team-b/app/blobs/{digest}").status_code == 404


def test_immutable_tags(start):
    reg = start(PUBLIC_PULL + '[repository."prod/"]\nimmutable_tags = true\n'
                'immutable_tags_exclusions = ["^latest$"]\n')
    alice = as_user(reg, "alice")
    r, first = push_config_image(alice, "prod/app", "v1", b"one")
    assert r.status_code == 201
    r, again = push_config_image(alice, "prod/app", "v1", b"one")
    assert r.status_code == 201 and again == first, "pushing the same manifest again succeeds"
    r, _ = push_config_image(alice, "prod/app", "v1", b"two")
    assert r.status_code == 409 and error_code(r) == "DENIED" and "immutable" in r.text
    assert alice.request("DELETE", "/v2/prod/app/manifests/v1").status_code == 409
    assert alice.request("DELETE", f"/v2/prod/app/manifests/{first}").status_code == 409
    assert alice.get_manifest("prod/app", "v1").headers["Docker-Content-Digest"] == first
    assert push_config_image(alice, "prod/app", "latest", b"one")[0].status_code == 201
    assert push_config_image(alice, "prod/app", "latest", b"two")[0].status_code == 201
    assert alice.request("DELETE", "/v2/prod/app/manifests/latest").status_code == 202
    # Elsewhere tags move freely.
    assert push_config_image(alice, "dev/app", "v1", b"one")[0].status_code == 201
    assert push_config_image(alice, "dev/app", "v1", b"two")[0].status_code == 201


def test_the_token_protocol(start, tmp_path):
    toml, _ = token_service_toml(tmp_path)
    reg = start(toml + PER_TEAM)
    r = anonymous(reg).request("PUT", "/v2/team-a/app/manifests/v1", data=b"{}")
    challenge = r.headers["WWW-Authenticate"]
    assert r.status_code == 401
    assert challenge == (f'Bearer realm="{reg.url}/token",service="stowage",'
                         'scope="repository:team-a/app:pull,push"')
    r = as_user(reg, "bob").token(["repository:team-a/app:pull,push"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == 300
    assert "issued_at" in body
    bob = Client(reg.url, token=body["token"])
    # Granted: what the policy allows of what was asked (bob may pull team-a, not push).
    r, _ = push_config_image(bob, "team-a/app", "v1")
    assert r.status_code == 401 and 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    alice_token = as_user(reg, "alice").token(["repository:team-a/app:pull,push"]).json()["token"]
    alice = Client(reg.url, token=alice_token)
    r, _ = push_config_image(alice, "team-a/app", "v1")
    assert r.status_code == 201, r.text
    assert bob.get_manifest("team-a/app", "v1").status_code == 200
    # A token for one repository opens no other.
    assert alice.get_manifest("team-b/app", "v1").status_code == 401
    r = Client(reg.url, basic=("alice", "wrong")).token(["repository:team-a/app:pull"])
    assert r.status_code == 401 and error_code(r) == "UNAUTHORIZED"


def test_bad_tokens_are_refused(start, tmp_path):
    toml, key = token_service_toml(tmp_path)
    reg = start(NO_THROTTLE + toml + PUBLIC_PULL)
    grant = jwt.repository_access("app", "pull", "push")
    good = jwt.claims("alice", grant)
    now = int(time.time())
    other_key = jwt.new_ec_key_pem()
    real = as_user(reg, "alice").token(["repository:app:pull"]).json()["token"]
    head, payload, signature = real.split(".")
    forged_payload = jwt.b64url(base64.urlsafe_b64decode(payload + "==").replace(
        b'"pull"', b'"pull","push"'))
    bad = {
        "signed by the right key": jwt.sign_es256(key, good),  # the control: must work
        "tampered": f"{head}.{forged_payload}.{signature}",
        "alg none": jwt.unsigned(good),
        "HS256 keyed with the public key": jwt.hs256_with_public_key(key, good),
        "another key": jwt.sign_es256(other_key, good),
        "expired": jwt.sign_es256(key, jwt.claims("alice", grant, start=now - 3600)),
        "not yet valid": jwt.sign_es256(key, jwt.claims("alice", grant, start=now + 3600)),
        "wrong audience": jwt.sign_es256(key, jwt.claims("alice", grant, service="other")),
        "wrong issuer": jwt.sign_es256(key, jwt.claims("alice", grant, issuer="other")),
        "another repository": jwt.sign_es256(key, jwt.claims(
            "alice", jwt.repository_access("elsewhere", "pull", "push"))),
        "another action": jwt.sign_es256(key, jwt.claims("alice", jwt.repository_access(
            "app", "pull"))),
        "truncated": real[: len(real) // 2],
        "garbage": "not-a-jwt",
    }
    results = {}
    for name, token in bad.items():
        r, _ = push_config_image(Client(reg.url, token=token), "app", name.replace(" ", "-"))
        results[name] = (r.status_code, error_code(r), "WWW-Authenticate" in r.headers)
    assert results.pop("signed by the right key")[0] == 201
    assert results == {name: (401, "UNAUTHORIZED", True) for name in results}
    tags = Client(reg.url, token=real).request("GET", "/v2/app/tags/list").json()["tags"]
    assert tags == ["signed-by-the-right-key"], "no refused request left anything behind"


def test_malformed_authorization_headers(start):
    reg = start(NO_THROTTLE + PUBLIC_PULL)
    assert push_config_image(as_user(reg, "alice"), "app", "v1")[0].status_code == 201
    for value in ["Basic", "Basic !!!notbase64", "Basic " + base64.b64encode(b"nocolon").decode(),
                  "Digest username=alice", "Bearer", "Bearer a b", "Negotiate abc",
                  "Basic " + "A" * 20000]:
        r = anonymous(reg).request("GET", "/v2/app/manifests/v1",
                                   headers={"Authorization": value})
        assert (r.status_code, error_code(r)) == (401, "UNAUTHORIZED"), value
        assert r.headers["WWW-Authenticate"] == 'Basic realm="stowage"'
    assert anonymous(reg).get_manifest("app", "v1").status_code == 200


def test_a_user_removed_from_htpasswd_is_refused_after_the_reload(start, tmp_path):
    import bcrypt
    path = tmp_path / "htpasswd"
    entry = lambda user, pw: f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(5)).decode()}\n"
    path.write_text(entry("dave", "dave-pw") + entry("erin", "erin-pw"))
    reg = start(f'[auth.htpasswd]\npath = "{path}"\n' + PUBLIC_PULL, with_identities=False)
    dave = Client(reg.url, basic=("dave", "dave-pw"))
    assert push_config_image(dave, "app", "v1")[0].status_code == 201
    path.write_text(entry("erin", "erin-pw"))
    time.sleep(2.5)
    r, _ = push_config_image(dave, "app", "v2")
    assert r.status_code == 401, "dave was removed"
    assert push_config_image(Client(reg.url, basic=("erin", "erin-pw")), "app", "v2")[0].status_code == 201


def test_failed_logins_are_throttled_per_address(start):
    reg = start("[auth]\nmax_failed_logins_per_minute = 3\n" + PUBLIC_PULL)

    def get_from(source: str, password: str) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", reg.port, timeout=30,
                                          source_address=(source, 0))
        creds = base64.b64encode(f"alice:{password}".encode()).decode()
        conn.request("GET", "/v2/", headers={"Authorization": f"Basic {creds}"})
        response = conn.getresponse()
        response.read()
        conn.close()
        return response

    statuses = [get_from("127.0.0.2", "wrong").status for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    throttled = get_from("127.0.0.2", USERS["alice"])
    assert throttled.status == 429 and int(throttled.getheader("Retry-After")) > 0
    assert get_from("127.0.0.1", USERS["alice"]).status == 200, "other addresses are not slowed"


def test_an_invalid_policy_stops_startup_naming_the_key(registries, registry_kind, tmp_path):
    from harness.process import StartError
    from harness.registry import fs_toml, start_stowage
    with pytest.raises(StartError) as failed:
        start_stowage(tmp_path / "work", fs_toml("blob_store", tmp_path / "storage"),
                      server_toml=policy_toml("global.access_policy", "deny",
                                              ["true", "request.action =="]))
    assert "global.access_policy.rules[1]" in str(failed.value)
