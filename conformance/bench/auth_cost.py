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

Prints req/s and p99 (medians over the rounds, which alternate between the servers) and
each configuration's req/s against none's, held to the targets: bearer and oidc >= 0.85,
Basic >= 0.7. A configuration with a round that had errors or timeouts shows "failed".

    .venv/bin/python conformance/bench/auth_cost.py [--stowage-bin PATH ...] [--rounds N]
"""

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import client
from registry_bench import LOAD_CONNECTIONS, default_binaries, fmt, log, rotated

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness package
from harness.oidc_provider import OidcProvider  # noqa: E402
from harness.process import remove, scratch_dir  # noqa: E402
from harness.registry import fs_toml, start_stowage  # noqa: E402

USERNAME, PASSWORD = "alice", "bench-password"
SERVICE = "stowage"
REPO_NAME = "bench/image"
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
KINDS = (("manifest_get", "manifest GET"), ("blob_get", "1 KiB blob GET"))
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


class Configuration:
    """One server on a fresh root, seeded with a small image; `headers` is what every
    benchmarked request carries."""

    def __init__(self, name: str, binary: str, work: Path, provider: OidcProvider):
        self.name = name
        workdir = work / name.replace("+", "-")
        workdir.mkdir(parents=True)
        auth = ""
        if name == "oidc":
            auth = (f'[auth.oidc.bench]\nissuer = "{provider.issuer}"\n'
                    f'required_audience = "{provider.audience}"\n{OIDC_POLICY}')
        elif name != "none":
            auth = identity_toml(binary)
        if name == "bearer":
            auth += token_service_toml(workdir)
        if name in ("bearer", "basic+policy"):
            auth += POLICY
        self.registry = start_stowage(workdir, fs_toml("blob_store", workdir / "data"), binary, auth)
        self.url = self.registry.url
        try:
            if name == "bearer":
                push = {"Authorization": f"Bearer {token(self.url, 'pull,push')}"}
                self.headers = {"Authorization": f"Bearer {token(self.url, 'pull')}"}
            elif name == "oidc":
                # Valid for the whole run, as a CI job's token is for its job.
                id_token = provider.token(lifetime=3600, repository=REPO_NAME)
                self.headers = push = {"Authorization": f"Bearer {id_token}"}
            else:
                self.headers = {"Authorization": BASIC} if name != "none" else {}
                push = self.headers
            seeded = client.seed_image(self.url, REPO_NAME, "latest", os.urandom(1024), push)
        except BaseException:
            self.registry.stop()
            raise
        self.paths = {
            "manifest_get": f"/v2/{REPO_NAME}/manifests/latest",
            "blob_get": f"/v2/{REPO_NAME}/blobs/{seeded['layer']}",
        }

    def load(self, kind: str, seconds: int) -> dict:
        headers = {"Accept": client.OCI_MANIFEST, **self.headers}
        return client.wrk(self.url + self.paths[kind], headers, LOAD_CONNECTIONS, seconds)


def measure(binary: str, rounds: int, seconds: int) -> dict:
    """figures[configuration][kind] = {"rps": median, "p99_ms": median} for one binary; None
    for a figure with a failed round."""
    work = scratch_dir("stowage-auth-cost-")
    configurations = []
    provider = OidcProvider()
    try:
        for name in ("none", *TARGETS):
            configurations.append(Configuration(name, binary, work, provider))
        samples = {c.name: {kind: [] for kind, _ in KINDS} for c in configurations}
        for run in range(rounds):
            for kind, _ in KINDS:
                for configuration in rotated(configurations, run):
                    log(f"{Path(binary).name} round {run + 1}/{rounds}: {kind}, {configuration.name}")
                    try:
                        result = configuration.load(kind, seconds)
                    except client.HttpError as e:
                        # A round with errors or timeouts has no req/s worth comparing; the
                        # configuration fails its target, and the others go on.
                        log(f"{configuration.name} {kind} failed: {str(e)[:600]}")
                        result = None
                    samples[configuration.name][kind].append(result)
    finally:
        for configuration in configurations:
            configuration.registry.stop()
        provider.stop()
        remove(work)
    return {
        name: {
            kind: {
                field: None if None in runs else statistics.median(r[field] for r in runs)
                for field in ("rps", "p99_ms")
            }
            for kind, runs in by_kind.items()
        }
        for name, by_kind in samples.items()
    }


def print_table(binary: str, figures: dict) -> bool:
    """The table for one binary; whether every target was met."""
    print(f"\n{Path(binary).name}: {LOAD_CONNECTIONS} connections, medians")
    header = ("request", "auth", "req/s", "p99 ms", "vs none", "target", "met")
    lines, all_met = [header], True
    for kind, label in KINDS:
        baseline = figures["none"][kind]["rps"]
        for name, by_kind in figures.items():
            rps, p99 = by_kind[kind]["rps"], by_kind[kind]["p99_ms"]
            ratio = rps / baseline if rps is not None and baseline is not None else None
            target = TARGETS.get(name)
            met = target is None or (ratio is not None and ratio >= target)
            all_met &= met
            lines.append((
                label, name, fmt(rps), fmt(p99), "-" if ratio is None else f"{ratio:.2f}",
                f">= {target}" if target else "", "" if target is None else ("✓" if met else "✗"),
            ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))))
    return all_met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stowage-bin", action="append", help="a Stowage server binary (repeatable); "
                        "default: target/release/stowage and, if built, target/release/stowage-smol")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    binaries = args.stowage_bin or default_binaries()
    if not binaries:
        parser.error("no Stowage binary: cargo build --release, or pass --stowage-bin")
    print(f"load average {os.getloadavg()[0]:.2f} at start")
    results = {binary: measure(binary, args.rounds, args.seconds) for binary in binaries}
    met = [print_table(binary, figures) for binary, figures in results.items()]
    return 0 if all(met) else 1


if __name__ == "__main__":
    sys.exit(main())
