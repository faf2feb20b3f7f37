"""What authentication costs a pull: manifest GET and 1 KiB blob GET under 32 connections,
on servers that differ only in their `[auth]`, in one run on this machine.

- none: no logins, every request allowed.
- bearer: an identity, the token service and a policy (public pull, authenticated
  everything); wrk sends one pull token, fetched once.
- basic: the identity only (no token service, no policy), Basic on every request.
- basic+policy: the identity and the same policy, Basic on every request: a policy decided
  per request (a token's scopes were decided when it was issued).
- oidc: an OIDC provider (the test one of conformance/auth/, on a loopback port) and a
  policy on the token's claims; wrk sends one provider-signed ID token as its Bearer, so the
  signature check and the policy both run per request.

Prints req/s, p99 and the server's CPU per request (medians over the rounds, which alternate
between the servers; config_cost.py) and each configuration's req/s against none's, held to
the targets: bearer and oidc >= 0.85, Basic >= 0.7. A configuration with a round that had
errors or timeouts shows "failed".

    .venv/bin/python conformance/bench/auth_cost.py [--stowage-bin PATH ...] [--rounds N]
"""

import base64
import json
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

from config_cost import REPO_NAME, Configuration, measure, run

from harness.oidc_provider import OidcProvider

USERNAME, PASSWORD = "alice", "bench-password"
SERVICE = "stowage"
POLICY = """[global.access_policy]
default = "deny"
rules = ["request.action == 'pull'", "!identity.anonymous"]
"""
OIDC_POLICY = f"""[global.access_policy]
default = "deny"
rules = ['identity.oidc.claims.repository == "{REPO_NAME}"']
"""
# Least share of none's req/s each configuration keeps.
TARGETS = {"bearer": 0.85, "basic": 0.7, "basic+policy": 0.7, "oidc": 0.85}
BASIC = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()


def identity_toml(binary: str) -> str:
    hashed = subprocess.run(
        [binary, "hash-password"], input=PASSWORD, capture_output=True, text=True, check=True
    ).stdout.strip()
    return f'[auth.identity.{USERNAME}]\nusername = "{USERNAME}"\npassword = "{hashed}"\n'


def token_service_toml(workdir: Path) -> str:
    key = workdir / "signing-key.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key)],
        check=True,
        capture_output=True,
    )
    return f'[auth.token_service]\nsigning_key = "{key}"\nservice = "{SERVICE}"\n'


def token(url: str, actions: str) -> str:
    """A registry token for `actions` on the benchmark's repository, asked with Basic."""
    query = urllib.parse.urlencode({"service": SERVICE, "scope": f"repository:{REPO_NAME}:{actions}"})
    request = urllib.request.Request(f"{url}/token?{query}", headers={"Authorization": BASIC})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["token"]


def configuration(name: str, binary: str, work: Path, provider: OidcProvider) -> Configuration:
    auth = ""
    if name == "oidc":
        auth = (f'[auth.oidc.bench]\nissuer = "{provider.issuer}"\n'
                f'required_audience = "{provider.audience}"\n{OIDC_POLICY}')
    elif name != "none":
        auth = identity_toml(binary)
    if name == "bearer":
        key_dir = work / "keys"
        key_dir.mkdir(exist_ok=True)
        auth += token_service_toml(key_dir)
    if name in ("bearer", "basic+policy"):
        auth += POLICY

    def credentials(url: str) -> tuple[dict, dict]:
        if name == "bearer":
            return ({"Authorization": f"Bearer {token(url, 'pull,push')}"},
                    {"Authorization": f"Bearer {token(url, 'pull')}"})
        if name == "oidc":
            # Valid for the whole run, as a CI job's token is for its job.
            id_token = provider.token(lifetime=3600, repository=REPO_NAME)
            return ({"Authorization": f"Bearer {id_token}"},) * 2
        headers = {"Authorization": BASIC} if name != "none" else {}
        return headers, headers

    return Configuration(name, binary, work, auth, credentials)


def measure_binary(binary: str, rounds: int, seconds: int) -> dict:
    provider = OidcProvider()
    try:
        return measure(binary, rounds, seconds, lambda work: (
            configuration(name, binary, work, provider) for name in ("none", *TARGETS)))
    finally:
        provider.stop()


if __name__ == "__main__":
    sys.exit(run(__doc__, measure_binary, "none", TARGETS))
