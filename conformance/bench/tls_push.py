"""What TLS costs a push: one stowage binary serving plain HTTP and, beside it, HTTPS (each on
a fresh filesystem root), 1 GiB blobs pushed in one `POST /v2/<name>/blobs/uploads/?digest=`
to each in turn, alternating which goes first. The client is curl for both (the body streamed
from tmpfs with `--upload-file`, as `--data-binary @file` refuses files of 1 GiB and more),
so only the server side differs. Prints each push's MiB/s and server CPU, the
medians and the ratio TLS / plain (target: at least 0.8). Dirty pages are flushed before every
push; the page cache is not dropped (`--drop-caches` does, as registry_bench.py does): on a
virtual machine, memory given back when the cache is dropped is slow to fault in again, and
which push pays for it varies by more than TLS costs.

    .venv/bin/python conformance/bench/tls_push.py [--bin target/release/stowage-smol]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the harness package

import client  # noqa: E402
import probes  # noqa: E402
from harness.pki import Ca  # noqa: E402
from registry_bench import scratch_dir_on_tmpfs, settle_memory  # noqa: E402
from harness.process import REPO, remove, scratch_dir  # noqa: E402
from harness.registry import fs_toml, start_stowage  # noqa: E402

MIB = 1 << 20
TARGET_RATIO = 0.8


class Server:
    """A stowage process on a fresh root, over TLS if `tls` (a directory holding ca.crt,
    server.crt and server.key)."""

    def __init__(self, name: str, binary: str, workdir: Path, tls: Path | None):
        self.name = name
        self.curl_tls = ["--cacert", str(tls / "ca.crt")] if tls else []
        tls_table = (f'[server.tls]\nserver_certificate_bundle = "{tls / "server.crt"}"\n'
                     f'server_private_key = "{tls / "server.key"}"\n') if tls else ""
        self.registry = start_stowage(workdir, fs_toml("blob_store", workdir / "data"), binary,
                                      tls_table, {"verify": str(tls / "ca.crt")} if tls else None)
        self.url = self.registry.url

    def push(self, blob: client.Blob) -> tuple[float, float]:
        """One monolithic push with curl: (MiB/s as curl measured it, server CPU-s)."""
        # With --upload-file curl appends the file's name to a URL path ending in "/".
        target = f"/v2/bench/tls/blobs/uploads/?digest={blob.digest}"
        argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{speed_upload}",
                "-X", "POST", "-H", "Content-Type: application/octet-stream",
                "--upload-file", str(blob.path), "--request-target", target, *self.curl_tls,
                f"{self.url}/upload"]
        with probes.ProcessProbe(self.registry.process.proc.pid) as probe:
            out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        status, speed = out.split()
        if status != "201":
            raise RuntimeError(f"{self.name}: push answered {status}\n{self.registry.log_tail()}")
        return float(speed) / MIB, probe.cpu


def write_pki(directory: Path) -> Path:
    ca = Ca("tls bench CA")
    (directory / "ca.crt").write_bytes(ca.cert_pem)
    ca.server().write(directory / "server.crt", directory / "server.key")
    return directory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default=str(REPO / "target" / "release" / "stowage"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--drop-caches", action="store_true")
    args = parser.parse_args()

    work, blobs = scratch_dir("stowage-tls-bench-"), Path(scratch_dir_on_tmpfs())
    servers = []
    try:
        source = client.BlobSource(blobs, args.size_mib * MIB)
        pki = work / "pki"
        pki.mkdir()
        servers = [Server("plain", args.bin, work / "plain", None),
                   Server("tls", args.bin, work / "tls", write_pki(pki))]
        samples = {server.name: [] for server in servers}
        for round_ in range(args.rounds):
            for server in servers if round_ % 2 == 0 else reversed(servers):
                blob = source.fresh()
                if args.drop_caches:
                    settle_memory()
                else:
                    os.sync()
                mib_s, cpu = server.push(blob)
                samples[server.name].append((mib_s, cpu * 1024 / args.size_mib))
                print(f"round {round_ + 1} {server.name:<5} {mib_s:8.1f} MiB/s  "
                      f"server CPU {cpu * 1024 / args.size_mib:.2f} s/GiB", flush=True)
    finally:
        for server in servers:
            server.registry.stop()
        remove(work)
        remove(blobs)

    plain, tls = (statistics.median(m for m, _ in samples[name]) for name in ("plain", "tls"))
    cpu_plain, cpu_tls = (statistics.median(c for _, c in samples[name])
                          for name in ("plain", "tls"))
    ratio = tls / plain
    print(f"{Path(args.bin).name}, {args.size_mib} MiB monolithic pushes, curl, "
          f"{args.rounds} rounds alternated{', page cache dropped' if args.drop_caches else ''}")
    print(f"median plain {plain:.1f} MiB/s, TLS {tls:.1f} MiB/s, TLS/plain {ratio:.2f} "
          f"({'meets' if ratio >= TARGET_RATIO else 'misses'} the {TARGET_RATIO} target)")
    print(f"median server CPU plain {cpu_plain:.2f} s/GiB, TLS {cpu_tls:.2f} s/GiB "
          f"(plain/TLS {cpu_plain / cpu_tls:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
