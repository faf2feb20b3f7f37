"""What a part of the configuration costs a pull, measured the same way for each part
(auth_cost.py, observability_cost.py): Stowage servers that differ only in their
configuration, each on a fresh root seeded with a small image, take turns under wrk (manifest
GET and 1 KiB blob GET, 32 connections), started anew for every round. A table per binary: req/s, p99 and the server's CPU
per request (medians over the rounds), and each configuration's req/s against the
baseline's, held to its target."""

import argparse
import os
import statistics
from pathlib import Path
from typing import Callable, Iterable

import client
from probes import cpu_seconds
from registry_bench import LOAD_CONNECTIONS, default_binaries, fmt, log, rotated

from harness.process import remove, scratch_dir
from harness.registry import fs_toml, start_stowage

REPO_NAME = "bench/image"
KINDS = (("manifest_get", "manifest GET"), ("blob_get", "1 KiB blob GET"))
FIELDS = ("rps", "p99_ms", "cpu_us")


class Configuration:
    """One server on a fresh root with `server_toml` (keys of `[server]`, then later tables),
    seeded with a small image. `credentials(url)` gives the headers of the seeding pushes
    and of every benchmarked request, once the server is up."""

    def __init__(self, name: str, binary: str, work: Path, server_toml: str,
                 credentials: Callable[[str], tuple[dict, dict]] = lambda url: ({}, {})):
        self.name = name
        workdir = work / name.replace("+", "-")
        workdir.mkdir(parents=True)
        self.registry = start_stowage(workdir, fs_toml("blob_store", workdir / "data"), binary, server_toml)
        self.url = self.registry.url
        try:
            push, self.headers = credentials(self.url)
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
        pid = self.registry.process.proc.pid
        before = cpu_seconds(pid)
        result = client.wrk(self.url + self.paths[kind], headers, LOAD_CONNECTIONS, seconds)
        result["cpu_us"] = (cpu_seconds(pid) - before) * 1e6 / (result["rps"] * seconds)
        return result


def measure(binary: str, rounds: int, seconds: int,
            configurations: Callable[[Path], Iterable[Configuration]]) -> dict:
    """figures[configuration][kind][field] (FIELDS): medians over `rounds`, None for a figure
    with a failed round. Each round starts the servers `configurations(work)` gives anew,
    under a scratch directory `work` removed afterwards, and they take turns: where a start
    happens to place a server's threads and allocator arenas moves its rate by about 10 %,
    so one start weighs one round rather than every round."""
    label = Path(binary).name
    samples: dict = {}
    for run in range(rounds):
        work = scratch_dir("stowage-config-cost-")
        started = []
        try:
            started.extend(configurations(work))
            for kind, _ in KINDS:
                for configuration in rotated(started, run):
                    log(f"{label} round {run + 1}/{rounds}: {kind}, {configuration.name}")
                    try:
                        result = configuration.load(kind, seconds)
                    except client.HttpError as e:
                        # A round with errors or timeouts has no req/s worth comparing; the
                        # configuration fails its target, and the others go on.
                        log(f"{configuration.name} {kind} failed: {str(e)[:600]}")
                        result = None
                    samples.setdefault(configuration.name, {k: [] for k, _ in KINDS})[kind].append(result)
        finally:
            for configuration in started:
                configuration.registry.stop()
            remove(work)
    return {
        name: {
            kind: {
                field: None if None in runs else statistics.median(r[field] for r in runs)
                for field in FIELDS
            }
            for kind, runs in by_kind.items()
        }
        for name, by_kind in samples.items()
    }


def print_table(label: str, figures: dict, baseline: str, targets: dict) -> bool:
    """The table for one binary, ratios against `baseline`'s req/s, `targets` the least
    ratio of some configurations; whether every target was met."""
    print(f"\n{label}: {LOAD_CONNECTIONS} connections, medians")
    header = ("request", "configuration", "req/s", "p99 ms", "CPU us/req", f"vs {baseline}", "target", "met")
    lines, all_met = [header], True
    for kind, kind_label in KINDS:
        baseline_rps = figures[baseline][kind]["rps"]
        for name, by_kind in figures.items():
            rps, p99, cpu = (by_kind[kind][field] for field in FIELDS)
            ratio = rps / baseline_rps if rps is not None and baseline_rps is not None else None
            target = targets.get(name)
            met = target is None or (ratio is not None and ratio >= target)
            all_met &= met
            lines.append((
                kind_label, name, fmt(rps), fmt(p99), fmt(cpu), "-" if ratio is None else f"{ratio:.2f}",
                f">= {target}" if target else "", "" if target is None else ("✓" if met else "✗"),
            ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))))
    return all_met


def run(description: str, measure_binary: Callable[[str, int, int], dict], baseline: str,
        targets: dict) -> int:
    """The command line of a cost benchmark: `measure_binary(binary, rounds, seconds)` gives
    one binary's figures; exits 0 only if every target was met."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stowage-bin", action="append", help="a Stowage server binary (repeatable); "
                        "default: target/release/stowage and, if built, target/release/stowage-smol")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    binaries = args.stowage_bin or default_binaries()
    if not binaries:
        parser.error("no Stowage binary: cargo build --release, or pass --stowage-bin")
    print(f"load average {os.getloadavg()[0]:.2f} at start")
    results = {binary: measure_binary(binary, args.rounds, args.seconds) for binary in binaries}
    met = [print_table(Path(binary).name, figures, baseline, targets) for binary, figures in results.items()]
    return 0 if all(met) else 1
