"""Runs the OCI conformance runner against every server binary on every storage layout:
both stores on the filesystem, both on S3, and each split. With `--auth`, a second pass runs
cells with authentication on, the runner logging in. Prints one line per cell and a closing
`N passed, N failed` over the cells."""

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness package

from harness.process import remove, scratch_dir  # noqa: E402
from harness.registry import STORE_LAYOUTS, start_stowage, stores_for  # noqa: E402
from harness.services import s3_server  # noqa: E402

LAYOUTS = list(STORE_LAYOUTS)

USERNAME = "alice"
PASSWORD = "matrix password, with a comma"


@dataclass
class Cell:
    binary: str
    layout: str
    # None: no authentication; "basic": credentials on every request; "token": the token
    # service's Bearer flow.
    auth: str | None = None

    @property
    def name(self) -> str:
        name = f"{self.binary.rsplit('/', 1)[-1]} x {self.layout}"
        return f"{name} x auth-{self.auth}" if self.auth else name


def cells(binaries: list[str], layouts: list[str], auth: bool) -> list[Cell]:
    plain = [Cell(binary, layout) for binary in binaries for layout in layouts]
    if not auth:
        return plain
    # Every cell again with the token service (what Docker clients meet), and Basic on every
    # request on fs for each binary: authentication sits in front of the stores, so Basic on
    # every store would repeat the token cells' proof.
    logged_in = [Cell(cell.binary, cell.layout, "token") for cell in plain]
    logged_in += [Cell(binary, "fs", "basic") for binary in binaries if "fs" in layouts]
    return plain + logged_in


class AuthSetup:
    """What the auth cells share: an EC P-256 signing key for the token service, and each
    binary's hash of the password (from its own `hash-password`, so the cells check it too)."""

    def __init__(self, work: Path):
        self.signing_key = work / "token-signing-key.pem"
        generate = subprocess.run(
            ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout"],
            capture_output=True,
            check=True,
        )
        subprocess.run(
            ["openssl", "pkcs8", "-topk8", "-nocrypt", "-out", str(self.signing_key)],
            input=generate.stdout,
            capture_output=True,
            check=True,
        )
        self.hashes: dict[str, str] = {}

    def password_hash(self, binary: str) -> str:
        if binary not in self.hashes:
            run = subprocess.run(
                [binary, "hash-password"], input=PASSWORD, capture_output=True, text=True
            )
            if run.returncode != 0 or not run.stdout.strip().startswith("$argon2"):
                raise RuntimeError(
                    f"{binary} hash-password gave no argon2 PHC string "
                    f"(status {run.returncode}): {run.stderr.strip() or run.stdout.strip()}"
                )
            self.hashes[binary] = run.stdout.strip()
        return self.hashes[binary]

    def toml(self, cell: Cell) -> str:
        # JSON strings are valid TOML basic strings: safe quoting for hashes and paths.
        toml = (
            f"[auth.identity.{USERNAME}]\n"
            f"username = {json.dumps(USERNAME)}\n"
            f"password = {json.dumps(self.password_hash(cell.binary))}\n"
        )
        if cell.auth == "token":
            toml += (
                "[auth.token_service]\n"
                'service = "stowage"\nissuer = "stowage"\n'
                f"signing_key = {json.dumps(str(self.signing_key))}\n"
                "ttl_secs = 300\n"
            )
        return toml + (
            '[global.access_policy]\ndefault = "deny"\nrules = ["!identity.anonymous"]\n'
        )


def run_cell(cell: Cell, cell_dir: Path, runner: str, s3, auth: AuthSetup | None):
    """Starts the cell's server, runs the runner on it; the run and the server's log tail."""
    extra = auth.toml(cell) if cell.auth else ""
    registry = start_stowage(cell_dir, stores_for(cell.layout, cell_dir, s3), cell.binary, extra)
    env = dict(os.environ)
    if cell.auth:
        # Through the environment, so the password stays off the command line.
        env.update(OCI_USERNAME=USERNAME, OCI_PASSWORD=PASSWORD)
    try:
        run = subprocess.run(
            [runner, "--url", registry.url], capture_output=True, text=True, env=env
        )
    finally:
        registry.stop()
    return run, registry.log_tail()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runner", required=True)
    parser.add_argument("--bin", action="append", required=True, help="server binary (repeat)")
    parser.add_argument("--layout", action="append", choices=LAYOUTS)
    parser.add_argument(
        "--auth",
        action="store_true",
        help="also run cells with authentication on (Basic, token service), logged in",
    )
    args = parser.parse_args()
    layouts = args.layout or LAYOUTS
    todo = cells(args.bin, layouts, args.auth)

    work = scratch_dir("stowage-matrix-")
    s3 = s3_server(work) if any("s3" in cell.layout for cell in todo) else None
    auth = AuthSetup(work) if args.auth else None
    passed = failed = 0
    try:
        for number, cell in enumerate(todo):
            try:
                run, log_tail = run_cell(cell, work / str(number), args.runner, s3, auth)
            except (RuntimeError, subprocess.CalledProcessError) as e:
                # A server that would not start (or no password hash) fails its cell only.
                failed += 1
                print(f"FAIL {cell.name}: {e}", flush=True)
                continue
            summary = run.stdout.strip().splitlines()[-1:] or ["no output"]
            if run.returncode == 0:
                passed += 1
                print(f"PASS {cell.name}: {summary[0]}", flush=True)
            else:
                failed += 1
                failures = [l for l in run.stdout.splitlines() if l.startswith("FAIL")]
                print(f"FAIL {cell.name}: {summary[0]}", flush=True)
                for line in failures:
                    print(f"    {line}")
                print(log_tail)
    finally:
        if s3:
            s3.stop()
        remove(work)
    on = f" (S3 cells on {s3.name})" if s3 else ""
    print(f"matrix: {passed} passed, {failed} failed{on}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
