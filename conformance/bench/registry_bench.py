"""Stowage against CNCF Distribution (Debian's `docker-registry`), side by side in one run on
this machine, each server on a fresh storage root. Prints every figure with the ratio
stowage / Distribution and the target it is held to, and writes them all as JSON for
`chart.py`.

    .venv/bin/python conformance/bench/registry_bench.py [--quick] [--s3 [moto,garage]] [--no-fs]
        [--sizes-mib 1,64,1024] [--phases transfers,load,small_blobs,clients,skopeo] [--out FILE]

Servers run on free loopback ports and are stopped by PID. Every phase is run for each server
in turn (rotating the order between runs), so drift in the machine's load hits all of them.
Before every timed push the page cache is flushed and, when run as root, dropped
(`settle_memory`), so each push starts from the same memory state.
"""

import argparse
import datetime
import http.client
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import client
import probes
import skopeo_copy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness package
from harness.process import REPO, free_port, remove, scratch_dir, start  # noqa: E402
from harness.registry import answers, fs_toml, start_stowage  # noqa: E402
from harness.services import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, S3_SERVERS, S3Server  # noqa: E402

MIB, GIB = 1 << 20, 1 << 30
CHUNK = 8 * MIB
DISTRIBUTION = "distribution"
# One run's settings; --quick trades precision for a smoke test of a minute or two.
# crowd: many clients at once (concurrent pushes and pulls of blobs of their own, manifest
# GETs on many connections, idle keep-alive connections beside busy ones); skopeo: the
# image `skopeo copy` moves in and out.
FULL = dict(sizes=[MIB, 64 * MIB, GIB], runs=3, load_seconds=5,
            crowd=dict(pushes=16, push_size=64 * MIB, pulls=64, pull_size=16 * MIB,
                       manifest_connections=256, idle=1000, busy=32),
            skopeo=dict(layers=8, layer_size=128 * MIB))
QUICK = dict(sizes=[MIB, 16 * MIB, 128 * MIB], runs=1, load_seconds=2,
             crowd=dict(pushes=4, push_size=16 * MIB, pulls=16, pull_size=4 * MIB,
                        manifest_connections=256, idle=1000, busy=32),
             skopeo=dict(layers=8, layer_size=8 * MIB))
SWARM = dict(count=200, size=4096, clients=16)
LOAD_CONNECTIONS = 32
# wrk's timeout on many connections: Distribution answered some of 256 connections' manifest
# GETs after more than wrk's default of 2 s, which would count as errors, not as its latency.
CROWD_TIMEOUT = 10
PHASES = ("transfers", "load", "small_blobs", "clients", "skopeo")
# Every way a client can push one blob: the push, and the row's label. Distribution 2.8 has
# no `POST ?digest=` with a body (it answers 202 and opens a session), so that row compares
# with its POST + PUT, what a client falls back to.
DISTRIBUTION_LACKS = {"single": "monolithic"}
PUSH_PATHS = {
    "single": (client.push_single, "push POST ?digest="),
    "monolithic": (client.push_monolithic, "push POST + PUT with body"),
    "streamed": (client.push_streamed, "push POST + streamed PATCH + PUT"),
    "chunked": (lambda http, repo, blob: client.push_chunked(http, repo, blob, CHUNK), "push chunked 8 MiB"),
}


def size_label(size: int) -> str:
    return f"{size // GIB} GiB" if size >= GIB else f"{size // MIB} MiB"


# --- servers -------------------------------------------------------------------------------

class Stowage:
    def __init__(self, binary: str, workdir: Path, stores_toml: str):
        self.name = Path(binary).name
        self.registry = start_stowage(workdir, stores_toml, binary)
        self.proc = self.registry.process.proc
        self.url, self.pid = self.registry.url, self.proc.pid

    def stop(self):
        self.registry.stop()

    def log_tail(self) -> str:
        return self.registry.log_tail(15)


class Distribution:
    """Debian's docker-registry with the settings a production deployment would use: the
    in-memory blob descriptor cache on, per-request logging off, no upload purging in the
    background; on S3 blobs are served through the registry (no redirect to the bucket),
    as Stowage serves them."""

    def __init__(self, workdir: Path, storage_yaml: str):
        self.name = DISTRIBUTION
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = workdir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n{storage_yaml}"
            "  cache:\n    blobdescriptor: inmemory\n"
            "  redirect:\n    disable: true\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
        )
        # aws-sdk-go panics when AWS_CA_BUNDLE is set (Distribution installs its own HTTP
        # transport); the S3 servers here are plain HTTP, so the bundle is never needed.
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        self.process = start(["docker-registry", "serve", config], workdir / "server.log",
                             lambda: answers(self.url), f"docker-registry on {self.url}", env)
        self.proc = self.process.proc
        self.pid = self.proc.pid

    def stop(self):
        self.process.stop()

    def log_tail(self) -> str:
        return self.process.tail(15)


def start_servers(backend: str, binaries, work: Path, s3: S3Server | None) -> list:
    """Distribution and every Stowage binary, each on a root (directory or bucket) of its own."""
    if backend == "fs":
        dist_yaml = f'  filesystem:\n    rootdirectory: "{work / DISTRIBUTION}"\n'
        stowage_toml = lambda name: fs_toml("blob_store", work / name / "data")  # noqa: E731
    else:
        # With a regionendpoint, Distribution 2.8's S3 driver addresses buckets path-style.
        dist_yaml = (
            f"  s3:\n    accesskey: {S3_ACCESS_KEY}\n    secretkey: {S3_SECRET_KEY}\n"
            f"    region: {S3_REGION}\n"
            f"    regionendpoint: {s3.endpoint}\n    bucket: {s3.new_bucket()}\n"
            "    secure: false\n    v4auth: true\n"
        )
        stowage_toml = lambda name: s3.store_toml("blob_store", s3.new_bucket())  # noqa: E731
    servers = [Distribution(work / DISTRIBUTION, dist_yaml)]
    try:
        for binary in binaries:
            name = Path(binary).name
            servers.append(Stowage(binary, work / name, stowage_toml(name)))
    except BaseException:
        stop_all(servers)
        raise
    return servers


def stop_all(servers) -> None:
    for server in servers:
        server.stop()


def rotated(servers, run: int) -> list:
    k = run % len(servers)
    return servers[k:] + servers[:k]


# --- phases ---------------------------------------------------------------------------------

class Phases:
    """Runs the phases against every server and keeps figures[server][key]. A measurement that
    fails (error status, refused connection, tool error) is recorded in errors[server][key]
    and that figure's remaining runs are skipped for that server; the others go on."""

    def __init__(self, servers):
        self.servers = servers
        self.figures = {s.name: {} for s in servers}
        self.errors = {s.name: {} for s in servers}
        self._cpu = {s.name: {} for s in servers}  # phase -> [cpu seconds, bytes moved]

    def measure(self, server, key: str, action):
        """`action()` under a probe of the server: (its value, the probe), or (None, None)
        if it failed now or before."""
        if key in self.errors[server.name]:
            return None, None
        try:
            with probes.ProcessProbe(server.pid) as probe:
                return action(), probe
        except (client.HttpError, http.client.HTTPException, OSError, subprocess.CalledProcessError) as e:
            alive = "running" if server.proc.poll() is None else f"EXITED {server.proc.returncode}"
            self.errors[server.name][key] = f"{str(e)[:1000]}\n(server {alive}; its log ends:)\n{server.log_tail()}"
            log(f"{server.name}: {key} failed: {str(e)[:300]}")
            return None, None

    def keep_peak_rss(self, server, phase: str, probe) -> None:
        key = f"rss.{phase}"
        figures = self.figures[server.name]
        figures[key] = max(figures.get(key, 0), probe.peak_rss / MIB)

    def account_cpu(self, server, phase: str, probe, moved: int) -> None:
        totals = self._cpu[server.name].setdefault(phase, [0.0, 0])
        totals[0] += probe.cpu
        totals[1] += moved
        self.figures[server.name][f"cpu.{phase}"] = totals[0] / (totals[1] / GIB)

    def drop_phase(self, server, phase: str) -> None:
        """A phase with a failed run has no CPU or RSS figure: the runs that passed would
        not stand for it."""
        self._cpu[server.name].pop(phase, None)
        self.figures[server.name].pop(f"cpu.{phase}", None)
        self.figures[server.name].pop(f"rss.{phase}", None)

    def set_median(self, key: str, samples: dict) -> None:
        for name, values in samples.items():
            if values and key not in self.errors[name]:
                self.figures[name][key] = statistics.median(values)

    def push_and_pull(self, sources, runs: int, warm_pulls: bool) -> None:
        """Push throughput on every path (PUSH_PATHS) and pull throughput per size, median of
        `runs`, each run a fresh blob; server CPU per GiB and peak RSS over the largest size.
        With `warm_pulls` each timed pull follows an untimed one, so every server reads from
        the page cache: the GiBs pushed since a blob was written can have evicted it."""
        largest = max(sources)
        pushed = {s.name: {} for s in self.servers}  # name -> size -> monolithic digests

        def transfer(server, key, size, action):
            """MiB/s of `action(http)` on a connection of its own: a kept-alive one could
            have been closed by the server while the other servers had their turn."""
            def run():
                http = client.Http(server.url)
                try:
                    return rate(lambda: action(http), size)
                finally:
                    http.close()
            return self.measure(server, key, run)

        for size, source in sources.items():
            for mode, (push_path, _) in PUSH_PATHS.items():
                key, rates = f"push.{mode}.{size_label(size)}", {s.name: [] for s in self.servers}
                repo = f"bench/{mode}-{size}"
                for run in range(runs):
                    blob = source.fresh()
                    push = lambda http: push_path(http, repo, blob)  # noqa: E731
                    for server in rotated(self.servers, run):
                        if server.name == DISTRIBUTION and mode in DISTRIBUTION_LACKS:
                            continue
                        settle_memory()
                        value, probe = transfer(server, key, size, push)
                        if value is None:
                            if size == largest:
                                self.drop_phase(server, f"push_{mode}")
                            continue
                        rates[server.name].append(value)
                        if mode == "monolithic":
                            pushed[server.name].setdefault(size, []).append(blob.digest)
                        if size == largest:
                            self.account_cpu(server, f"push_{mode}", probe, size)
                            self.keep_peak_rss(server, f"push_{mode}", probe)
                self.set_median(key, rates)
        for size in sources:
            key, rates = f"pull.{size_label(size)}", {s.name: [] for s in self.servers}
            for run in range(runs):
                for server in rotated(self.servers, run):
                    digests = pushed[server.name].get(size, [])
                    if run >= len(digests):
                        continue  # its push failed
                    pull = lambda http: client.pull(http, f"bench/monolithic-{size}", digests[run], size)  # noqa: E731
                    if warm_pulls:
                        transfer(server, key, size, pull)
                    value, probe = transfer(server, key, size, pull)
                    if value is None:
                        if size == largest:
                            self.drop_phase(server, "pull")
                        continue
                    rates[server.name].append(value)
                    if size == largest:
                        self.account_cpu(server, "pull", probe, size)
                        self.keep_peak_rss(server, "pull", probe)
            self.set_median(key, rates)

    def under_load(self, seconds: float) -> None:
        """32 connections: manifest GET (wrk) and HEAD (hey) by tag and a 1 KiB blob GET
        (wrk); peak RSS over all three."""
        paths = {}
        for server in self.servers:
            seeded, _ = self.measure(
                server, "seed", lambda: client.seed_image(server.url, "bench/image", "latest", os.urandom(1024))
            )
            if seeded:
                paths[server.name] = {
                    "manifest_get": ("GET", "/v2/bench/image/manifests/latest"),
                    "manifest_head": ("HEAD", "/v2/bench/image/manifests/latest"),
                    "blob_get": ("GET", f"/v2/bench/image/blobs/{seeded['layer']}"),
                }
        headers = {"Accept": client.OCI_MANIFEST}
        for kind in ("manifest_get", "manifest_head", "blob_get"):
            for server in self.servers:
                if server.name not in paths:
                    continue
                method, path = paths[server.name][kind]
                if method == "HEAD":
                    load = lambda: client.hey(server.url + path, method, headers, LOAD_CONNECTIONS, seconds)  # noqa: E731
                else:
                    load = lambda: client.wrk(server.url + path, headers, LOAD_CONNECTIONS, seconds)  # noqa: E731
                result, probe = self.measure(server, kind, load)
                if result is not None:
                    for field, value in result.items():
                        self.figures[server.name][f"{kind}.{field}"] = value
                    self.keep_peak_rss(server, "load", probe)

    def small_blobs(self, runs: int) -> None:
        """SWARM['count'] fresh small blobs pushed by SWARM['clients'] concurrent clients;
        medians over `runs` rounds."""
        rounds = {s.name: [] for s in self.servers}
        for run in range(runs):
            for server in rotated(self.servers, run):
                settle_memory()
                result, probe = self.measure(
                    server, "small_blobs", lambda: client.push_swarm(server.url, "bench/small", **SWARM)
                )
                if result is not None:
                    rounds[server.name].append(result)
                    self.keep_peak_rss(server, "small_blobs", probe)
        for field in ("blobs_s", "p50_ms", "p99_ms"):
            self.set_median(f"small_blobs.{field}", {n: [r[field] for r in rs] for n, rs in rounds.items()})


    def many_clients(self, crowd: dict, push_sources, pull_source, runs: int, seconds: float) -> None:
        """crowd['idle'] idle keep-alive connections beside crowd['busy'] busy ones (wrk on
        the manifest GET), crowd['manifest_connections'] connections of manifest GET (wrk),
        crowd['pushes'] pushes at once of a blob of their own and crowd['pulls'] pulls at once
        of different blobs; pushes and pulls are medians over `runs`, pulls from the page
        cache (each timed round follows an untimed one)."""
        headers = {"Accept": client.OCI_MANIFEST}
        manifest = "/v2/bench/crowd/manifests/latest"
        for server in self.servers:
            if self.measure(server, "crowd", lambda: client.seed_image(server.url, "bench/crowd", "latest", os.urandom(1024)))[0]:
                self.idle_beside_busy(server, manifest, headers, crowd, seconds)
        for server in self.servers:
            load = lambda: client.wrk(server.url + manifest, headers, crowd["manifest_connections"], seconds, CROWD_TIMEOUT)  # noqa: E731
            result, _ = self.measure(server, "crowd.manifest_get", load)
            for field, value in (result or {}).items():
                self.figures[server.name][f"crowd.manifest_get.{field}"] = value

        rates = {s.name: [] for s in self.servers}
        total = sum(source.size for source in push_sources)
        for run in range(runs):
            blobs = [source.fresh() for source in push_sources]
            for server in rotated(self.servers, run):
                settle_memory()
                push = lambda: client.push_concurrently(server.url, "bench/crowd-push", blobs)  # noqa: E731
                value, probe = self.measure(server, "crowd.push_mib_s", push)
                if value is None:
                    self.drop_phase(server, "crowd_push")
                    continue
                rates[server.name].append(value)
                self.account_cpu(server, "crowd_push", probe, total)
        self.set_median("crowd.push_mib_s", rates)

        repo, size = "bench/crowd-pull", pull_source.size
        rates = {s.name: [] for s in self.servers}
        for server in self.servers:
            def seed():
                http = client.Http(server.url)
                try:
                    digests = []
                    for _ in range(crowd["pulls"]):
                        blob = pull_source.fresh()
                        client.push_monolithic(http, repo, blob)
                        digests.append(blob.digest)
                    return digests
                finally:
                    http.close()
            digests, _ = self.measure(server, "crowd.pull_mib_s", seed)
            if digests is None:
                continue
            for run in range(runs + 1):  # the first round fills the page cache
                pull = lambda: client.pull_concurrently(server.url, repo, digests, size)  # noqa: E731
                value, probe = self.measure(server, "crowd.pull_mib_s", pull)
                if value is not None and run > 0:
                    rates[server.name].append(value)
                    self.account_cpu(server, "crowd_pull", probe, size * len(digests))
        self.set_median("crowd.pull_mib_s", rates)

    def idle_beside_busy(self, server, path: str, headers: dict, crowd: dict, seconds: float) -> None:
        """Opens crowd['idle'] keep-alive connections, each after one GET of `path`: the
        server's RSS growth per connection; then wrk on crowd['busy'] connections while they
        stay open. Every idle connection must still be open at the end."""
        def run():
            time.sleep(0.5)
            before = probes.rss_bytes(server.pid)
            idle = client.IdleConnections(server.url, path, headers, crowd["idle"])
            try:
                time.sleep(0.5)
                grown = probes.rss_bytes(server.pid) - before
                busy = client.wrk(server.url + path, headers, crowd["busy"], seconds, CROWD_TIMEOUT)
                if (still := idle.open_count()) != crowd["idle"]:
                    raise client.HttpError(f"the server closed {crowd['idle'] - still} of {crowd['idle']} idle connections")
                return {"rss_kib_per_idle": grown / 1024 / crowd["idle"], **busy}
            finally:
                idle.close()
        result, _ = self.measure(server, "crowd.idle", run)
        for field, value in (result or {}).items():
            self.figures[server.name][f"crowd.idle.{field}"] = value

    def skopeo(self, layout: Path, image: dict, runs: int, scratch: Path) -> None:
        """`skopeo copy` of a fresh image (image['layers'] layers of image['layer_size']
        bytes) from the OCI layout at `layout` into each server and back out to a new
        layout under `scratch`: wall seconds, medians over `runs`, and server CPU."""
        times = {direction: {s.name: [] for s in self.servers} for direction in ("in", "out")}
        for run in range(runs):
            moved = skopeo_copy.build_layout(layout, image["layers"], image["layer_size"])
            for server in rotated(self.servers, run):
                reference = f"bench/skopeo:run{run}"
                settle_memory()
                copy_in = lambda: seconds_of(lambda: skopeo_copy.copy_in(layout, server.url, reference))  # noqa: E731
                value, probe = self.measure(server, "skopeo.in_s", copy_in)
                if value is None:
                    continue
                times["in"][server.name].append(value)
                self.account_cpu(server, "skopeo_in", probe, moved)
                out = scratch / f"skopeo-out-{server.name}"
                copy_out = lambda: seconds_of(lambda: skopeo_copy.copy_out(server.url, reference, out))  # noqa: E731
                value, probe = self.measure(server, "skopeo.out_s", copy_out)
                remove(out)
                if value is not None:
                    times["out"][server.name].append(value)
                    self.account_cpu(server, "skopeo_out", probe, moved)
        for direction, samples in times.items():
            self.set_median(f"skopeo.{direction}_s", samples)


DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def settle_memory() -> bool:
    """Flushes dirty pages and, where allowed (root), drops the clean page cache; whether it
    could drop. Otherwise a push pays for reclaiming whatever the earlier phases left in the
    cache before it can write: on this kind of machine that added about 1-1.3 server CPU-s
    per GiB pushed to both registries (stowage 1.7 -> 2.95, Distribution 4.3 -> 5.3) and hit
    whichever push ran after the most data was written."""
    os.sync()
    try:
        DROP_CACHES.write_text("3\n")
        return True
    except OSError:
        return False


def rate(action, size: int) -> float:
    """MiB/s of one transfer of `size` bytes."""
    return size / MIB / seconds_of(action)


def seconds_of(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def measure_backend(backend, binaries, settings, sources, work: Path, s3) -> dict:
    servers = start_servers(backend, binaries, work / backend, s3)
    phases = Phases(servers)
    selected, runs = settings["phases"], settings["runs"]
    try:
        if "transfers" in selected:
            log(f"{backend}: pushes (every path) and pulls")
            phases.push_and_pull(sources["blobs"], runs, warm_pulls=backend == "fs")
        if "load" in selected:
            log(f"{backend}: GET/HEAD under load")
            phases.under_load(settings["load_seconds"])
        if "small_blobs" in selected:
            log(f"{backend}: small blobs")
            phases.small_blobs(runs)
        if "clients" in selected:
            log(f"{backend}: many clients at once")
            phases.many_clients(settings["crowd"], sources["crowd_push"], sources["crowd_pull"], runs, settings["load_seconds"])
        if "skopeo" in selected:
            log(f"{backend}: skopeo copy in and out")
            phases.skopeo(sources["dir"] / "skopeo-layout", settings["skopeo"], runs, sources["dir"])
    finally:
        stop_all(servers)
        # The roots go now: the fs run leaves about 20 GiB there, and moto keeps the S3 run's
        # objects on the same disk (it failed the last 1 GiB pushes when both did not fit).
        remove(work / backend)
    return {"figures": phases.figures, "errors": phases.errors}


# --- figures, targets and the table ------------------------------------------------------

@dataclass
class Target:
    """A bound on the ratio stowage / Distribution (`op` is >=, <= or <; no ratio: none),
    and optionally a bound on Stowage's own figure (`floor`, held by `floor_op`)."""

    op: str
    ratio: float | None
    floor: float | None = None
    floor_text: str = ""
    floor_op: str = ">="

    def text(self) -> str:
        texts = ([] if self.ratio is None else [f"{self.op} {self.ratio:.3g}x"]) + (
            [] if self.floor is None else [self.floor_text])
        return " and ".join(texts)

    def met(self, stowage: float, ratio: float) -> bool:
        ratio_ok = self.ratio is None or holds(self.op, ratio, self.ratio)
        return ratio_ok and (self.floor is None or holds(self.floor_op, stowage, self.floor))


def holds(op: str, value: float, bound: float) -> bool:
    # A value exactly at an inclusive bound (5.20 CPU-s against 15.60) must not miss it by
    # the last bit of a floating-point division.
    at_bound = math.isclose(value, bound, rel_tol=1e-9)
    return {">=": value >= bound or at_bound, "<=": value <= bound or at_bound,
            "<": value < bound and not at_bound}[op]


@dataclass
class Figure:
    key: str
    label: str
    unit: str
    target: Target | None = None
    # Distribution's figure to compare with, where it has none of this key's own
    reference: str | None = None


def figure_list(settings: dict, machine: dict, backend: str = "fs") -> list[Figure]:
    """The figures and their targets; on S3 (where the store bounds the speeds) pushes are
    held to 3x Distribution's on the same store, pulls to 1x, CPU to 0.3x, and a monolithic
    push's peak RSS to 1x (S3 parts are buffered by both registries). On fs a push's CPU is
    also held to 1.1x the verified-write floor."""
    sizes, crowd, image = settings["sizes"], settings["crowd"], settings["skopeo"]
    largest = size_label(max(sizes))
    sha_half = machine["sha256_one_core_mib_s"] / 2
    on_s3 = backend != "fs"
    push_target = (Target(">=", 3) if on_s3 else
                   Target(">=", 3, sha_half, f">= {sha_half:.0f} MiB/s (half a core's sha256)"))
    pull_target = Target(">=", 1) if on_s3 else Target(">=", 1.2)
    floor = 1.1 * machine["verified_write_cpu_s_gib"]
    cpu_target = Target("<=", 0.3) if on_s3 else Target(
        "<=", 1 / 3, floor, f"<= {floor:.2f} s/GiB (1.1x the verified-write floor)", "<=")
    rows = []
    for mode, (_, path) in PUSH_PATHS.items():
        theirs = DISTRIBUTION_LACKS.get(mode)
        for size in sizes:
            label = size_label(size)
            rows.append(Figure(f"push.{mode}.{label}", f"{path} {label}{their_path(mode)}", "MiB/s",
                               push_target if label == largest else None,
                               theirs and f"push.{theirs}.{label}"))
    for size in sizes:
        label = size_label(size)
        rows.append(Figure(f"pull.{label}", f"pull {label}", "MiB/s", pull_target if label == largest else None))
    for kind, label in (("manifest_get", "manifest GET"), ("manifest_head", "manifest HEAD (hey)"), ("blob_get", "1 KiB blob GET")):
        rows += [
            Figure(f"{kind}.rps", f"{label}, {LOAD_CONNECTIONS} conns", "req/s", Target(">=", 5)),
            Figure(f"{kind}.p50_ms", f"{label} p50", "ms"),
            Figure(f"{kind}.p99_ms", f"{label} p99", "ms", Target("<", 1)),
        ]
    swarm = f"{SWARM['count']} x {SWARM['size'] // 1024} KiB blobs, {SWARM['clients']} clients"
    rows += [
        Figure("small_blobs.blobs_s", swarm, "blobs/s", Target(">=", 3)),
        Figure("small_blobs.p50_ms", f"{swarm} p50", "ms"),
        Figure("small_blobs.p99_ms", f"{swarm} p99", "ms"),
    ]
    rows += [Figure(f"cpu.push_{mode}", f"server CPU, {path} {largest}{their_path(mode)}", "s/GiB", cpu_target,
                    DISTRIBUTION_LACKS.get(mode) and f"cpu.push_{DISTRIBUTION_LACKS[mode]}")
             for mode, (_, path) in PUSH_PATHS.items()]
    rows.append(Figure("cpu.pull", f"server CPU, pull {largest}", "s/GiB"))
    pushes = f"{crowd['pushes']} pushes of {size_label(crowd['push_size'])} at once"
    pulls = f"{crowd['pulls']} pulls of different {size_label(crowd['pull_size'])} blobs at once"
    manifests = f"manifest GET, {crowd['manifest_connections']} conns"
    busy = f"manifest GET, {crowd['busy']} busy conns beside {crowd['idle']:,} idle"
    image_label = f"{image['layers']} x {size_label(image['layer_size'])} image"
    rows += [
        Figure("crowd.push_mib_s", pushes, "MiB/s", Target(">=", 3)),
        Figure("cpu.crowd_push", f"server CPU, {pushes}", "s/GiB"),
        Figure("crowd.pull_mib_s", pulls, "MiB/s", Target(">=", 1.2)),
        Figure("cpu.crowd_pull", f"server CPU, {pulls}", "s/GiB"),
        Figure("crowd.manifest_get.rps", manifests, "req/s", Target(">=", 5)),
        Figure("crowd.manifest_get.p50_ms", f"{manifests} p50", "ms"),
        Figure("crowd.manifest_get.p99_ms", f"{manifests} p99", "ms", Target("<", 1)),
        Figure("crowd.idle.rss_kib_per_idle", f"RSS growth per idle keep-alive conn ({crowd['idle']:,})", "KiB",
               Target("<", None, 32, "< 32 KiB", "<")),
        Figure("crowd.idle.rps", busy, "req/s"),
        Figure("crowd.idle.p99_ms", f"{busy} p99", "ms", Target("<", 1)),
        Figure("skopeo.in_s", f"skopeo copy {image_label} oci: -> registry", "s"),
        Figure("skopeo.out_s", f"skopeo copy {image_label} registry -> oci:", "s"),
        Figure("cpu.skopeo_in", "server CPU, skopeo copy in", "s/GiB"),
        Figure("cpu.skopeo_out", "server CPU, skopeo copy out", "s/GiB"),
    ]
    for phase, label in (("push_monolithic", f"push POST + PUT with body {largest}"),
                         ("push_chunked", f"push chunked 8 MiB {largest}"),
                         ("pull", f"pull {largest}"), ("load", "GET/HEAD load"), ("small_blobs", "small blobs")):
        rss_target = Target("<=", 0.5)
        if on_s3:
            rss_target = Target("<=", 1) if phase == "push_monolithic" else None
        rows.append(Figure(f"rss.{phase}", f"peak RSS, {label}", "MiB", rss_target))
    return rows


def their_path(mode: str) -> str:
    """Which path Distribution's figure is of, where it lacks `mode`."""
    theirs = DISTRIBUTION_LACKS.get(mode)
    return f" (Distribution: {PUSH_PATHS[theirs][1].removeprefix('push ')})" if theirs else ""


def table_rows(measured: dict, stowage: str, figure_defs) -> list[dict]:
    """One row per figure either server produced; a figure Stowage failed to produce misses
    its target, with the error beside it."""
    figures, errors = measured["figures"], measured["errors"]
    rows = []
    for fig in figure_defs:
        ours, theirs = figures[stowage].get(fig.key), figures[DISTRIBUTION].get(fig.reference or fig.key)
        if ours is None and theirs is None:
            continue
        ratio = ours / theirs if ours is not None and theirs else None
        met = None
        if fig.target and theirs is not None:
            met = ratio is not None and fig.target.met(ours, ratio)
        rows.append({
            "key": fig.key,
            "figure": f"{fig.label} ({fig.unit})",
            "stowage": ours,
            "distribution": theirs,
            "ratio": ratio,
            "target": fig.target.text() if fig.target else "",
            "met": met,
            # chart.py plots "times better than Distribution" on one axis
            "lower_is_better": fig.unit in ("ms", "s", "s/GiB", "MiB", "KiB"),
            "target_ratio": fig.target.ratio if fig.target else None,
            "error": next((e for k, e in errors[stowage].items() if fig.key.startswith(k)), None),
        })
    return rows


def fmt(value: float | None) -> str:
    if value is None:
        return "failed"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value >= 1 else f"{value:.2g}"


def print_table(title: str, rows) -> None:
    print(f"\n{title}")
    header = ("figure", "stowage", "Distribution", "ratio", "target", "met?")
    lines = [header] + [
        (r["figure"], fmt(r["stowage"]), fmt(r["distribution"]),
         "-" if r["ratio"] is None else f"{r['ratio']:.2f}", r["target"],
         {True: "yes", False: "NO", None: ""}[r["met"]])
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) if i in (0, 4) else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))))


# --- the run -------------------------------------------------------------------------------

def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def package_version(package: str) -> str:
    run = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    return run.stdout.strip() or "?"


def raise_open_files(needed: int) -> None:
    """The idle-connection row holds over a thousand sockets in this process and as many in
    each server (which inherit the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            sys.exit(f"open files are limited to {hard}; the benchmark needs {needed} (ulimit -n)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def describe_run(binaries, quick: bool, phases) -> dict:
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else ""),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB),
        "kernel": platform.release(),
        "distribution": "docker-registry " + package_version("docker-registry"),
        "wrk": package_version("wrk"),
        "hey": package_version("hey"),
        # the tree is rebuilt often: which build was measured
        "stowage_binaries": {
            str(b): datetime.datetime.fromtimestamp(Path(b).stat().st_mtime, datetime.timezone.utc).isoformat(timespec="seconds")
            for b in binaries
        },
        "quick": quick,
        "phases": phases,
        "load_average_start": os.getloadavg(),
        "page_cache_dropped_before_pushes": settle_memory(),
    }


def default_binaries() -> list[str]:
    release = REPO / "target" / "release"
    return [str(release / name) for name in ("stowage", "stowage-smol") if (release / name).exists()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stowage-bin", action="append", help="a Stowage server binary (repeatable); "
                        "default: target/release/stowage and, if built, target/release/stowage-smol")
    parser.add_argument("--quick", action="store_true", help="smaller blobs, 1 run, 2 s of load: a smoke test")
    parser.add_argument("--s3", nargs="?", const="moto,garage", default="",
                        help="also measure both registries on S3: on each of these servers "
                        "(comma-separated; default moto,garage), one at a time")
    parser.add_argument("--no-fs", action="store_true", help="skip the filesystem backend")
    parser.add_argument("--sizes-mib", help="blob sizes of the push and pull phases, comma-separated")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"the phases to run, comma-separated (default: all of {','.join(PHASES)})")
    parser.add_argument("--out", type=Path, help="write every figure as JSON here")
    args = parser.parse_args()
    binaries = args.stowage_bin or default_binaries()
    if not binaries:
        parser.error("no Stowage binary: cargo build --release, or pass --stowage-bin")
    settings = dict(QUICK if args.quick else FULL)
    if args.sizes_mib:
        settings["sizes"] = [int(size) * MIB for size in args.sizes_mib.split(",")]
    settings["phases"] = [phase for phase in args.phases.split(",") if phase]
    if unknown := set(settings["phases"]) - set(PHASES):
        parser.error(f"unknown phases {sorted(unknown)}: {', '.join(PHASES)}")
    s3_names = [name for name in args.s3.split(",") if name]
    if unknown := set(s3_names) - set(S3_SERVERS):
        parser.error(f"unknown S3 servers {sorted(unknown)}: {', '.join(S3_SERVERS)}")

    raise_open_files(settings["crowd"]["idle"] + 1024)
    result = {"meta": describe_run(binaries, args.quick, settings["phases"]), "backends": {}}
    work = scratch_dir("stowage-bench-")
    blobs_dir = Path(scratch_dir_on_tmpfs())
    s3 = None
    try:
        log("generating blobs on tmpfs")
        sources = {"dir": blobs_dir,
                   "blobs": {size: client.BlobSource(blobs_dir, size) for size in settings["sizes"]}}
        if "clients" in settings["phases"]:
            crowd = settings["crowd"]
            sources["crowd_push"] = [client.BlobSource(blobs_dir, crowd["push_size"], f"crowd-{i}")
                                     for i in range(crowd["pushes"])]
            sources["crowd_pull"] = client.BlobSource(blobs_dir, crowd["pull_size"], "crowd-pull")
        log("machine limits")
        largest = sources["blobs"][max(settings["sizes"])].path
        result["machine"] = {
            "sha256_one_core_mib_s": probes.sha256_one_core(largest),
            "loopback_copy_mib_s": probes.loopback_copy(largest),
            "verified_write_cpu_s_gib": probes.verified_write_cpu(largest, work / "floor.bin", settle_memory),
            "client_ceiling": probes.client_ceilings(largest, SWARM),
        }
        if "clients" in settings["phases"]:
            result["machine"]["client_ceiling"] |= probes.crowd_ceilings(
                sources["crowd_push"], sources["crowd_pull"], settings["crowd"]["pulls"])
        backends = ([] if args.no_fs else ["fs"]) + [f"s3-{name}" for name in s3_names]
        for backend in backends:
            if backend != "fs":
                (work / f"{backend}-server").mkdir()
                s3 = S3_SERVERS[backend.removeprefix("s3-")](work / f"{backend}-server")
            try:
                measured = measure_backend(backend, binaries, settings, sources, work, s3)
            finally:
                if s3:
                    s3.stop()
                    s3 = None
            defs = figure_list(settings, result["machine"], backend)
            measured["tables"] = {Path(b).name: table_rows(measured, Path(b).name, defs) for b in binaries}
            result["backends"][backend] = measured
        result["meta"]["load_average_end"] = os.getloadavg()
    finally:
        if s3:
            s3.stop()
        remove(work)
        remove(blobs_dir)

    print_report(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        log(f"wrote {args.out}")
    return 0


def scratch_dir_on_tmpfs() -> str:
    """Blob sources live in memory so reading them costs the client no disk IO."""
    return tempfile.mkdtemp(prefix="stowage-bench-blobs-", dir="/dev/shm")


def verified_write_text(result: dict) -> str:
    """The verified-write floor against Distribution's CPU for a monolithic push on fs: the
    least stowage's ratio could be in this run."""
    floor = result["machine"].get("verified_write_cpu_s_gib")
    if floor is None:
        return ""
    text = (f"Receiving, hashing (sha256) and writing to a file in one thread costs "
            f"{fmt(floor)} CPU-s per GiB")
    theirs = result["backends"].get("fs", {}).get("figures", {}).get(DISTRIBUTION, {}).get("cpu.push_monolithic")
    if theirs:
        text += (f": {floor / theirs:.2f}x Distribution's CPU for a monolithic push on fs in this run, "
                 "the least that ratio can be for a registry that verifies what it stores "
                 "and writes it through the page cache")
    return text + "."


def crowd_ceiling_text(ceiling: dict) -> str:
    if "crowd_push_mib_s" not in ceiling:
        return ""
    return (f", concurrent pushes {fmt(ceiling['crowd_push_mib_s'])} MiB/s, "
            f"concurrent pulls {fmt(ceiling['crowd_pull_mib_s'])} MiB/s")


def print_report(result: dict) -> None:
    meta, machine = result["meta"], result["machine"]
    ceiling = machine["client_ceiling"]
    print(f"Stowage vs {meta['distribution']} on {meta['cpu']}, {meta['cores']} cores, commit {meta['commit']}, "
          f"load average {meta['load_average_start'][0]:.2f} at start")
    print(f"machine: sha256 one core {fmt(machine['sha256_one_core_mib_s'])} MiB/s, "
          f"loopback copy {fmt(machine['loopback_copy_mib_s'])} MiB/s; client against a null server: "
          f"push {fmt(ceiling['push_mib_s'])} MiB/s, pull {fmt(ceiling['pull_mib_s'])} MiB/s, "
          f"small blobs {fmt(ceiling['small_blobs_s'])}/s" + crowd_ceiling_text(ceiling))
    print(verified_write_text(result))
    for backend, data in result["backends"].items():
        for stowage, rows in data["tables"].items():
            print_table(f"{backend}: {stowage} / Distribution", rows)
            for name in (stowage, DISTRIBUTION):
                for key, error in data["errors"][name].items():
                    print(f"  {name} failed {key}: {error.splitlines()[0][:400]}")


if __name__ == "__main__":
    sys.exit(main())
