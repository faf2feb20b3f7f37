"""A/B of stowage builds on the filesystem: each build serves its own root, and 1 GiB pushes
(or pulls) alternate between them, so every build meets the machine in the same state.
Prints each build's server CPU per GiB and MiB/s (medians), the client's CPU per GiB and peak
RSS, beside the machine's limits measured in the same run (sha256 on one core, the
verified-write floor). Run as root: the page cache is flushed and dropped before every
push, as in registry_bench.py.

    .venv/bin/python conformance/bench/ab.py NAME=BINARY [NAME=BINARY ...] [--phase chunked]

A BINARY may be a script that sets the environment and `exec`s a server: the PID stays the
server's. For a change too small to see in one benchmark run (a few per cent of CPU), where
the machine's own drift between runs is larger."""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness package

import client  # noqa: E402
import probes  # noqa: E402
from registry_bench import CHUNK, GIB, rate, scratch_dir_on_tmpfs, settle_memory  # noqa: E402
from harness.process import remove, scratch_dir  # noqa: E402
from harness.registry import fs_toml, start_stowage  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("builds", nargs="+", metavar="NAME=BINARY")
    parser.add_argument("--phase", choices=("monolithic", "chunked", "pull"), default="monolithic")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    builds = [b.split("=", 1) for b in args.builds]
    if any(len(b) != 2 for b in builds):
        parser.error("each build is NAME=BINARY")

    work, blobs = scratch_dir("stowage-ab-"), Path(scratch_dir_on_tmpfs())
    servers = {}
    try:
        source = client.BlobSource(blobs, GIB)
        sha256 = probes.sha256_one_core(source.path)
        floor = probes.verified_write_cpu(source.path, work / "floor.bin", settle_memory)
        for name, binary in builds:
            servers[name] = start_stowage(work / name, fs_toml("blob_store", work / name / "data"), binary)
        pulled = {}
        if args.phase == "pull":
            for name, server in servers.items():
                blob = source.fresh()
                http = client.Http(server.url)
                client.push_monolithic(http, "ab/blob", blob)
                http.close()
                pulled[name] = blob.digest
        samples = {name: [] for name in servers}
        for round_ in range(args.rounds):
            order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
            for name in order:
                server = servers[name]
                http = client.Http(server.url)
                if args.phase == "pull":
                    action = lambda: client.pull(http, "ab/blob", pulled[name], GIB)  # noqa: E731
                else:
                    blob = source.fresh()
                    settle_memory()
                    if args.phase == "monolithic":
                        action = lambda: client.push_monolithic(http, "ab/blob", blob)  # noqa: E731
                    else:
                        action = lambda: client.push_chunked(http, "ab/blob", blob, CHUNK)  # noqa: E731
                before = own_cpu()
                with probes.ProcessProbe(server.process.proc.pid) as probe:
                    mib_s = rate(action, GIB)
                client_cpu = own_cpu() - before
                http.close()
                samples[name].append((probe.cpu, mib_s, probe.peak_rss / (1 << 20), client_cpu))
    finally:
        for server in servers.values():
            server.stop()
        remove(work)
        remove(blobs)

    print(f"{args.phase}, 1 GiB, {args.rounds} rounds alternated; sha256 on one core "
          f"{sha256:,.0f} MiB/s, verified-write floor {floor:.2f} CPU-s per GiB")
    for name, runs in samples.items():
        cpu = statistics.median(c for c, _, _, _ in runs)
        mib_s = statistics.median(m for _, m, _, _ in runs)
        client_cpu = statistics.median(c for _, _, _, c in runs)
        print(f"{name:<16} CPU {cpu:.2f} s/GiB (min {min(c for c, _, _, _ in runs):.2f}, "
              f"max {max(c for c, _, _, _ in runs):.2f}; {cpu / floor:.2f}x the floor)  "
              f"{mib_s:,.0f} MiB/s ({mib_s / sha256:.2f}x sha256)  "
              f"client CPU {client_cpu:.2f} s/GiB  peak RSS {max(r for _, _, r, _ in runs):.1f} MiB")
    return 0


def own_cpu() -> float:
    """CPU seconds this process (the client) has used, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    sys.exit(main())
