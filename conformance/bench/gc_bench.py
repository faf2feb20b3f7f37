"""Garbage collection: `stowage gc` against Distribution's `docker-registry garbage-collect`
on copies of one filesystem tree, and push throughput while a collector runs.

    .venv/bin/python conformance/bench/gc_bench.py [--stowage-bin PATH] [--push-seconds 10]
        [--rounds 2] [--no-untagged] [--keep DIR]

1. Writes a registry tree in Distribution's layout directly (no pushes): 100 repositories of
   100 OCI image manifests each (10,000 manifests), each naming its own config and five
   layers: three of its own, one shared with a manifest of another repository, one shared
   with its neighbour in the same repository (50,000 config and layer blobs beside the
   10,000 manifest blobs). A fifth of the manifests are then deleted as a `DELETE` does (tag
   folder and revision link removed) and a tenth of the others lose their tag. Every file is
   dated a day back. The generator knows which blobs each mode must delete.
2. Collects copies of the tree with `stowage gc` (no grace period) and with Distribution's
   `garbage-collect` (registry stopped, as it requires), each after the page cache is
   dropped, by default and with `--delete-untagged`: wall time and peak RSS of each, and
   both must delete exactly the blobs the generator predicts.
3. Pushes 64 MiB images (blob, config, tagged manifest) to a stowage server on a copy of the
   tree for `--push-seconds`, with and without `[gc] interval_secs = 1` (the collector
   looping inside the server, the grace period at its default), alternating over
   `--rounds`: MiB/s both ways. Every acknowledged push must still pull afterwards.

Run as root (it drops the page cache). Not part of CI.
"""

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import client
from registry_bench import log, settle_memory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness package
from harness.process import REPO, remove  # noqa: E402
from harness.registry import Registry, fs_toml, start_stowage  # noqa: E402

MIB = 1 << 20
REPOSITORIES = 100
MANIFESTS_PER_REPOSITORY = 100
OWN_LAYERS = 3
DELETED_SHARE = 0.2
UNTAGGED_SHARE = 0.1
PUSH_SIZE = 64 * MIB
PUSH_REPO = "bench/pushed"


# --- the tree ------------------------------------------------------------------------------

def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Tree:
    """A generated layout root (the folder holding `v2/`) and what each collection of it
    must delete."""

    root: Path
    manifests: int = 0
    blobs: set[str] = field(default_factory=set)
    # Named by a manifest that still has its revision link / by a tagged one.
    live: set[str] = field(default_factory=set)
    live_tagged: set[str] = field(default_factory=set)
    files: int = 0

    def doomed(self, delete_untagged: bool) -> set[str]:
        return self.blobs - (self.live_tagged if delete_untagged else self.live)


class Writer:
    """Writes files of the tree, each dated `mtime`, counting them."""

    def __init__(self, tree: Tree, mtime: float):
        self.tree, self.mtime = tree, mtime

    def file(self, key: str, data: bytes) -> None:
        path = self.tree.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tree.files += not path.exists()
        path.write_bytes(data)
        os.utime(path, (self.mtime, self.mtime))

    def blob(self, data: bytes) -> str:
        digest = sha256(data)
        if digest not in self.tree.blobs:
            hexa = digest.split(":")[1]
            self.file(f"v2/blobs/sha256/{hexa[:2]}/{hexa}/data", data)
            self.tree.blobs.add(digest)
        return digest

    def link(self, key: str, digest: str) -> None:
        self.file(key, digest.encode())


def descriptor(media_type: str, data: bytes) -> dict:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data)}


def layer_bytes(kind: str, number: int) -> bytes:
    return f"{kind} layer {number}\n".encode()


def image(m: int) -> tuple[bytes, list[bytes]]:
    """Manifest number `m`: its bytes and the bytes of every blob it names (config first)."""
    total = REPOSITORIES * MANIFESTS_PER_REPOSITORY
    config = json.dumps({"architecture": "amd64", "os": "linux", "created_by": f"manifest {m}",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layers = [layer_bytes("own", m * OWN_LAYERS + i) for i in range(OWN_LAYERS)]
    # Shared with manifest m +- total/2, half the repositories away.
    layers.append(layer_bytes("cross-repository", m % (total // 2)))
    # Shared with its neighbour in the same repository (m, m+1 for even m).
    layers.append(layer_bytes("neighbour", m // 2))
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": client.OCI_MANIFEST,
        "config": descriptor(client.OCI_CONFIG, config),
        "layers": [descriptor(client.OCI_LAYER + "+gzip", layer) for layer in layers],
    }).encode()
    return manifest, [config, *layers]


def build_tree(root: Path, seed: int) -> Tree:
    tree = Tree(root)
    writer = Writer(tree, time.time() - 86400)
    total = REPOSITORIES * MANIFESTS_PER_REPOSITORY
    rng = random.Random(seed)
    deleted = set(rng.sample(range(total), int(total * DELETED_SHARE)))
    kept = sorted(set(range(total)) - deleted)
    untagged = set(rng.sample(kept, int(len(kept) * UNTAGGED_SHARE)))
    for m in range(total):
        repo = f"v2/repositories/bench/repo{m // MANIFESTS_PER_REPOSITORY:03d}"
        manifest, named = image(m)
        digest = writer.blob(manifest)
        tree.manifests += 1
        hexa = digest.split(":")[1]
        for data in named:
            blob = writer.blob(data)
            writer.link(f"{repo}/_layers/sha256/{blob.split(':')[1]}/link", blob)
        revision = root / repo / "_manifests/revisions/sha256" / hexa
        if m in deleted:
            # What a DELETE leaves: the revision's folder without its link, no tag.
            revision.mkdir(parents=True, exist_ok=True)
            continue
        writer.link(f"{repo}/_manifests/revisions/sha256/{hexa}/link", digest)
        references = {digest, *map(sha256, named)}
        tree.live |= references
        if m not in untagged:
            tag = f"{repo}/_manifests/tags/v{m % MANIFESTS_PER_REPOSITORY}"
            writer.link(f"{tag}/current/link", digest)
            writer.link(f"{tag}/index/sha256/{hexa}/link", digest)
            tree.live_tagged |= references
    return tree


def stored_blobs(root: Path) -> set[str]:
    return {f"sha256:{p.parent.name}" for p in (root / "v2" / "blobs").glob("sha256/*/*/data")}


def copy_tree(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)


# --- one collection ------------------------------------------------------------------------

@dataclass
class Run:
    seconds: float
    peak_rss_mib: float
    output: str


def timed(argv: list[str], log_path: Path) -> Run:
    """Runs `argv` after dropping the page cache: wall time and peak RSS. The RSS comes from
    /usr/bin/time, which forks the command itself: a child forked from this Python process
    would start its peak at ours (the tree's digest sets)."""
    settle_memory()
    rss_path = log_path.with_suffix(".rss")
    with open(log_path, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss_path), *argv],
                              stdout=out, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - start
    output = log_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}:\n{output[-3000:]}")
    return Run(seconds, int(rss_path.read_text().split()[-1]) / 1024, output)


def stowage_collect(binary: str, data_root: Path, workdir: Path, delete_untagged: bool) -> Run:
    config = workdir / "stowage.toml"
    config.write_text(f"{fs_toml('blob_store', data_root)}[gc]\ngrace_period_secs = 0\n")
    flags = ["--delete-untagged"] if delete_untagged else []
    return timed([binary, "gc", "--config", str(config), *flags], workdir / "stowage-gc.log")


def distribution_collect(root: Path, workdir: Path, delete_untagged: bool) -> Run:
    """`root` holds `docker/registry/v2`, Distribution's own prefix."""
    config = workdir / "distribution.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {json.dumps(str(root))}\n"
        "  delete:\n    enabled: true\n"
    )
    flags = ["--delete-untagged"] if delete_untagged else []
    return timed(["docker-registry", "garbage-collect", *flags, str(config)], workdir / "distribution-gc.log")


def compare_collectors(binary: str, tree: Tree, work: Path, delete_untagged: bool) -> dict:
    mode = "delete-untagged" if delete_untagged else "default"
    ours = work / f"stowage-{mode}"
    theirs = work / f"distribution-{mode}"
    copy_tree(tree.root, ours / "root")
    copy_tree(tree.root, theirs / "root" / "docker" / "registry")
    log(f"{mode}: stowage gc")
    stowage = stowage_collect(binary, ours / "root", ours, delete_untagged)
    log(f"{mode}: stowage gc took {stowage.seconds:.1f} s: {stowage.output.strip()[-400:]}")
    log(f"{mode}: docker-registry garbage-collect")
    distribution = distribution_collect(theirs / "root", theirs, delete_untagged)
    log(f"{mode}: docker-registry garbage-collect took {distribution.seconds:.1f} s")
    expected = tree.doomed(delete_untagged)
    by_stowage = tree.blobs - stored_blobs(ours / "root")
    by_distribution = tree.blobs - stored_blobs(theirs / "root" / "docker" / "registry")
    problems = []
    if by_distribution != expected:
        problems.append(f"Distribution deleted {len(by_distribution)} blobs, "
                        f"{len(by_distribution - expected)} not expected, missed {len(expected - by_distribution)}")
    if by_stowage != by_distribution:
        problems.append(f"stowage deleted {len(by_stowage)} blobs, {len(by_stowage - by_distribution)} "
                        f"that Distribution kept, kept {len(by_distribution - by_stowage)} it deleted")
    for path in (ours, theirs):
        remove(path)
    return {"mode": mode, "stowage": stowage, "distribution": distribution,
            "deleted": len(by_stowage), "expected": len(expected), "problems": problems}


# --- pushes beside the collector -----------------------------------------------------------

class FreshBlobs:
    """64 MiB blobs of fresh content without hashing 64 MiB per push: the bytes but the last
    32 stay, so their hash state is kept and only the new tail is hashed (the client must not
    be what the loop measures)."""

    def __init__(self, directory: Path, size: int):
        self.path = directory / f"push-{size}"
        with open(self.path, "wb") as f:
            for offset in range(0, size, 16 * MIB):
                f.write(os.urandom(min(16 * MIB, size - offset)))
        self.size = size
        with open(self.path, "rb") as f:
            self.prefix = hashlib.sha256(f.read(size - 32))

    def fresh(self) -> client.Blob:
        tail = os.urandom(32)
        with open(self.path, "r+b") as f:
            f.seek(self.size - 32)
            f.write(tail)
        hasher = self.prefix.copy()
        hasher.update(tail)
        return client.Blob(self.path, self.size, f"sha256:{hasher.hexdigest()}")


def push_image(http: client.Http, blob: client.Blob, tag: str) -> None:
    client.push_monolithic(http, PUSH_REPO, blob)
    config = json.dumps({"architecture": "amd64", "os": "linux", "created_by": tag}).encode()
    config_digest = client.push_bytes(http, PUSH_REPO, config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": client.OCI_MANIFEST,
        "config": {"mediaType": client.OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": client.OCI_LAYER, "digest": blob.digest, "size": blob.size}],
    }).encode()
    http.request("PUT", f"/v2/{PUSH_REPO}/manifests/{tag}", {"Content-Type": client.OCI_MANIFEST},
                 manifest, expect=(201,))


def collections(server: Registry) -> list[dict]:
    """The collections the server logged as finished."""
    found = []
    for line in server.log_text().splitlines():
        if "garbage collection finished" in line:
            found.append(line)
    return found


def push_phase(binary: str, tree: Tree, work: Path, blobs: FreshBlobs, seconds: float,
               collector: bool) -> dict:
    root = work / "root"
    copy_tree(tree.root, root)
    extra = "[gc]\ninterval_secs = 1\n" if collector else ""
    settle_memory()
    server = start_stowage(work, fs_toml("blob_store", root), binary, extra)
    pushed, refused = [], 0
    try:
        http = client.Http(server.url)
        if collector:
            # The first collection starts a second after the server: push once it runs.
            time.sleep(1.5)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            blob = blobs.fresh()
            tag = f"p{len(pushed) + refused}"
            try:
                push_image(http, blob, tag)
                pushed.append((tag, blob.digest))
            except client.HttpError as e:
                if " 503 " not in str(e):
                    raise
                refused += 1  # the fence refused it: counted, not retried
                http.close()
                http = client.Http(server.url)
        elapsed = time.perf_counter() - start
        runs = collections(server)
        for tag, digest in pushed:
            http.request("HEAD", f"/v2/{PUSH_REPO}/manifests/{tag}")
            http.request("HEAD", f"/v2/{PUSH_REPO}/blobs/{digest}")
        http.close()
    finally:
        server.stop()
        tail = server.log_tail(5)
        remove(work)
    return {"mib_s": len(pushed) * blobs.size / MIB / elapsed, "pushes": len(pushed), "refused": refused,
            "collections": len(runs), "first_collection": runs[0] if runs else "", "log_tail": tail}


def push_figures(binary: str, tree: Tree, work: Path, seconds: float, rounds: int) -> dict:
    blobs = FreshBlobs(Path(tempfile.mkdtemp(prefix="gcbench-", dir="/dev/shm")), PUSH_SIZE)
    results = {False: [], True: []}
    try:
        for r in range(rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            for collector in order:
                label = "with the collector" if collector else "without"
                log(f"pushes {label}, round {r + 1}")
                phase = push_phase(binary, tree, work / f"push-{r}-{int(collector)}", blobs, seconds, collector)
                log(f"pushes {label}: {phase['mib_s']:.0f} MiB/s, {phase['pushes']} pushes, "
                    f"{phase['refused']} refused, {phase['collections']} collections finished")
                if collector and phase["collections"] == 0:
                    raise RuntimeError(f"no collection finished while pushing:\n{phase['log_tail']}")
                results[collector].append(phase)
    finally:
        remove(blobs.path.parent)
    return results


# --- report --------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stowage-bin", default=str(REPO / "target" / "release" / "stowage"))
    parser.add_argument("--push-seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="alternating push phases of each kind")
    parser.add_argument("--no-untagged", action="store_true", help="skip the --delete-untagged comparison")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--dir", type=Path, default=Path("/dev/shm"),
                        help="where the trees go (default tmpfs: the collectors' own work, not the disk's)")
    parser.add_argument("--keep", type=Path, help="work here and keep the generated tree")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: every timed run starts after the page cache is dropped", file=sys.stderr)
        return 2
    work = args.keep or Path(tempfile.mkdtemp(prefix="gcbench-", dir=args.dir))
    started = time.perf_counter()
    try:
        log(f"writing the tree in {work / 'tree'}")
        tree = build_tree(work / "tree", args.seed)
        log(f"tree: {tree.manifests} manifests, {len(tree.blobs) - tree.manifests} config and layer blobs, "
            f"{len(tree.blobs)} blob files, {tree.files} files; unreferenced after deletions: "
            f"{len(tree.doomed(False))} blobs, {len(tree.doomed(True))} with --delete-untagged")
        modes = [False] if args.no_untagged else [False, True]
        compared = [compare_collectors(args.stowage_bin, tree, work, mode) for mode in modes]
        pushes = push_figures(args.stowage_bin, tree, work, args.push_seconds, args.rounds)
    finally:
        if not args.keep:
            remove(work)

    print(f"\nGarbage collection, {tree.manifests:,} manifests and {len(tree.blobs) - tree.manifests:,} "
          f"config and layer blobs in {REPOSITORIES} repositories on fs; stowage / Distribution "
          f"(docker-registry garbage-collect, registry stopped); page cache dropped before each run\n")
    print("| figure | stowage | Distribution | ratio | target | met? |")
    print("|---|--:|--:|--:|---|:-:|")
    failed = []
    for c in compared:
        s, d = c["stowage"], c["distribution"]
        ratio = s.seconds / d.seconds
        print(f"| gc {c['mode']}, {c['deleted']:,} blobs deleted (s) | {s.seconds:.2f} | {d.seconds:.2f} | "
              f"{ratio:.2f} | ≤ 0.5x (2x faster) | {'yes' if ratio <= 0.5 else '**no**'} |")
        print(f"| gc {c['mode']}, peak RSS (MiB) | {s.peak_rss_mib:.1f} | {d.peak_rss_mib:.1f} | "
              f"{s.peak_rss_mib / d.peak_rss_mib:.2f} |  |  |")
        failed += [f"{c['mode']}: {p}" for p in c["problems"]]
    without = sum(p["mib_s"] for p in pushes[False]) / len(pushes[False])
    beside = sum(p["mib_s"] for p in pushes[True]) / len(pushes[True])
    ratio = beside / without
    runs = sum(p["collections"] for p in pushes[True])
    refused = sum(p["refused"] for p in pushes[True] + pushes[False])
    print("\n| figure | with the collector | without | ratio | target | met? |")
    print("|---|--:|--:|--:|---|:-:|")
    print(f"| push {PUSH_SIZE // MIB} MiB images, stowage (MiB/s) | {beside:.0f} | {without:.0f} | {ratio:.2f} | "
          f"≥ 0.8x | {'yes' if ratio >= 0.8 else '**no**'} |")
    print(f"\n{runs} collections finished during {len(pushes[True])} x {args.push_seconds:g} s of pushes "
          f"([gc] interval_secs = 1); {refused} pushes refused with 503. Total {time.perf_counter() - started:.0f} s.")
    for problem in failed:
        print(f"MISMATCH {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
