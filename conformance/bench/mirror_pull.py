"""The mirror's rows: one blob pulled from a CNCF Distribution upstream directly, cold through
a Stowage mirror of it (missed, fetched from the upstream, stored, then served), warm through
the mirror (served from its store), and from a Stowage it was pushed to (a local pull), in
alternated rounds with a fresh blob each round and the page cache dropped before each pull.
Prints each pull's median MiB/s and the two ratios of issue 21: cold through the mirror
against the upstream directly (target at least 0.8x), warm against local (target 1x); and the
CPU each pull cost the upstream, the Stowage serving it and the client, with the speed that
CPU allows on this machine's cores. Run as root, so the page cache can be dropped.

    .venv/bin/python conformance/bench/mirror_pull.py [--bin STOWAGE] [--rounds 5] [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness package

import client  # noqa: E402
from probes import cpu_seconds  # noqa: E402
from registry_bench import MIB, rate, scratch_dir_on_tmpfs, settle_memory  # noqa: E402
from harness.process import remove, scratch_dir  # noqa: E402
from harness.registry import fs_toml, server_binary, start_stowage  # noqa: E402
from harness.services import start_distribution  # noqa: E402

REPO = "bench/blob"
PULLS = ("upstream, direct", "mirror, cold", "mirror, warm", "stowage, local")
CPU_OF = ("upstream", "stowage", "client")


def client_cpu() -> float:
    times = os.times()
    return times.user + times.system


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default=None, help="the Stowage binary (default: the release build)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    size = args.size_mib * MIB
    binary = args.bin or server_binary()

    work, blobs = scratch_dir("stowage-mirror-bench-"), Path(scratch_dir_on_tmpfs())
    servers = []
    try:
        upstream = start_distribution(work / "upstream")
        servers.append(upstream)
        mirror_toml = (f'[[repository."hub".upstream]]\nurl = "{upstream.url}"\n'
                       "timeout_secs = 60\n")
        mirror = start_stowage(work / "mirror", fs_toml("blob_store", work / "mirror" / "data"),
                               binary, mirror_toml)
        servers.append(mirror)
        local = start_stowage(work / "local", fs_toml("blob_store", work / "local" / "data"), binary)
        servers.append(local)
        source = client.BlobSource(blobs, size)
        to = {name: client.Http(server.url) for name, server in
              (("upstream", upstream), ("mirror", mirror), ("local", local))}
        samples = {pull: [] for pull in PULLS}
        # CPU-s per GiB of each pull, by whom: the upstream, the Stowage serving it, the client.
        cpu = {pull: {who: [] for who in CPU_OF} for pull in PULLS}
        for _ in range(args.rounds):
            blob = source.fresh()
            client.push_monolithic(to["upstream"], REPO, blob)
            client.push_monolithic(to["local"], REPO, blob)
            pulls = {
                "upstream, direct": (to["upstream"], REPO, None),
                "mirror, cold": (to["mirror"], f"hub/{REPO}", mirror),
                "mirror, warm": (to["mirror"], f"hub/{REPO}", mirror),
                "stowage, local": (to["local"], REPO, local),
            }
            for pull, (http, repo, stowage) in pulls.items():
                settle_memory()
                pids = {"upstream": upstream.process.proc.pid,
                        "stowage": stowage.process.proc.pid if stowage else None}
                before = {who: cpu_seconds(pid) if pid else 0.0 for who, pid in pids.items()}
                before["client"] = client_cpu()
                samples[pull].append(rate(lambda: client.pull(http, repo, blob.digest, size), size))
                after = {who: cpu_seconds(pid) if pid else 0.0 for who, pid in pids.items()}
                after["client"] = client_cpu()
                for who in CPU_OF:
                    cpu[pull][who].append((after[who] - before[who]) * MIB * 1024 / size)
        for http in to.values():
            http.close()
    finally:
        for server in servers:
            server.stop()
        remove(work)
        remove(blobs)

    median = {pull: statistics.median(runs) for pull, runs in samples.items()}
    print(f"pulls of one {args.size_mib} MiB blob, {args.rounds} rounds, page cache dropped before each")
    for pull, runs in samples.items():
        print(f"{pull:<18} {median[pull]:7,.0f} MiB/s (min {min(runs):,.0f}, max {max(runs):,.0f})")
    print(f"mirror cold / upstream direct: {median['mirror, cold'] / median['upstream, direct']:.2f}x "
          "(target >= 0.8)")
    print(f"mirror warm / stowage local:   {median['mirror, warm'] / median['stowage, local']:.2f}x "
          "(target 1)")
    cores = os.cpu_count() or 1
    print(f"CPU-s per GiB (medians) | {' | '.join(CPU_OF)} | all | MiB/s that CPU allows on {cores} cores")
    for pull in PULLS:
        each = {who: statistics.median(cpu[pull][who]) for who in CPU_OF}
        total = sum(each.values())
        allowed = cores * 1024 / total if total else float("inf")
        print(f"{pull:<18} | {' | '.join(f'{each[who]:.2f}' for who in CPU_OF)} | {total:.2f} | {allowed:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
