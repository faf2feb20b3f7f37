"""Checks that the OCI conformance runner logs in, against CNCF Distribution as the reference
registry: the runner goes over Distribution without auth, with htpasswd (Basic challenges),
and with token auth from `token_server` (Bearer challenges), and must pass the same cases each
time, plus `management/anonymous-push-refused` when it has credentials; with tokens, no scope
set may cost more than one token request. Prints one line per check and a closing
`N passed, N failed`."""

import argparse
import subprocess
import sys
from collections import Counter
from pathlib import Path

import bcrypt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness package

from harness.process import remove, scratch_dir  # noqa: E402
from harness.services import start_distribution  # noqa: E402
from harness.token_server import TokenServer  # noqa: E402

USERNAME = "alice"
PASSWORD = "wonder land, with a comma"
# What Distribution 2.8 predates; see the runner's --help.
SKIPS = ["--skip-referrers", "--skip-sha512"]
AUTH_CASE = "management/anonymous-push-refused"


def run_runner(runner: str, url: str, credentials: bool) -> tuple[set[str], str]:
    """The names of the cases that passed, and the runner's output."""
    argv = [runner, "--url", url, *SKIPS]
    if credentials:
        argv += ["--username", USERNAME, "--password", PASSWORD]
    out = subprocess.run(argv, capture_output=True, text=True).stdout
    passed = {line.split()[1] for line in out.splitlines() if line.startswith("PASS ")}
    return passed, out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runner", required=True)
    args = parser.parse_args()

    work = scratch_dir("stowage-runner-auth-")
    results: list[tuple[str, str | None]] = []
    try:
        plain = start_distribution(work / "plain")
        try:
            expected, _ = run_runner(args.runner, plain.url, credentials=False)
        finally:
            plain.stop()
        expected.add(AUTH_CASE)

        htpasswd = work / "htpasswd"
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
        htpasswd.write_text(f"{USERNAME}:{hashed}\n")
        basic = start_distribution(
            work / "basic",
            auth_yaml=f"auth:\n  htpasswd:\n    realm: stowage-test\n    path: {htpasswd}\n",
        )
        try:
            passed, out = run_runner(args.runner, basic.url, credentials=True)
        finally:
            basic.stop()
        results.append(("basic", compare(expected, passed, out)))

        tokens = TokenServer(work, USERNAME, PASSWORD)
        try:
            bearer = start_distribution(work / "token", auth_yaml=tokens.distribution_yaml())
            try:
                passed, out = run_runner(args.runner, bearer.url, credentials=True)
            finally:
                bearer.stop()
        finally:
            tokens.stop()
        problem = compare(expected, passed, out)
        repeated = [scopes for scopes, n in Counter(tokens.requests).items() if n > 1]
        if not problem and repeated:
            problem = f"scope sets asked for more than once: {repeated[:3]}"
        results.append((f"token ({len(tokens.requests)} token requests)", problem))
    finally:
        remove(work)

    for name, problem in results:
        print(f"FAIL {name}: {problem}" if problem else f"PASS {name}")
    failed = sum(1 for _, problem in results if problem)
    print(f"runner-auth: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def compare(expected: set[str], passed: set[str], out: str) -> str | None:
    """What differs from the cases passed without auth, with the runner's FAIL lines."""
    if passed == expected:
        return None
    fails = "\n".join(f"    {l}" for l in out.splitlines() if l.startswith("FAIL"))
    return (
        f"newly failing {sorted(expected - passed)}, newly passing {sorted(passed - expected)}"
        f"\n{fails}"
    )


if __name__ == "__main__":
    sys.exit(main())
