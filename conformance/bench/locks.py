"""What locks and the cache cost per push: manifest PUT latency (p50/p99) over sequential
pushes of small manifests to one tag, with in-memory vs Redis locks and in-memory vs Redis
cache, in one run on one machine; and manifest GET-by-tag latency, which the cache serves.
The four servers run side by side and take turns in small blocks, so background load on the
machine weighs on all of them alike. Also counts the Redis commands each push costs (a PUT
to one tag takes two locks: SET NX PX for each, and a compare-and-delete script to release).

    cargo build --release -p stowage
    .venv/bin/python conformance/bench/locks.py [--bin target/release/stowage] [--pushes 500]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness package
from harness.process import REPO, remove, scratch_dir  # noqa: E402
from harness.registry import fs_toml, start_stowage  # noqa: E402
from harness.services import RedisServer  # noqa: E402

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG = b'{"bench":"locks"}'
CONFIG_DIGEST = "sha256:" + hashlib.sha256(CONFIG).hexdigest()
BLOCK = 50  # pushes (then as many GETs) per turn
WARMUP = 20
# (locks, cache); the first is the baseline the others are compared with.
SETUPS = [("memory", "memory"), ("redis", "memory"), ("memory", "redis"), ("redis", "redis")]


class Setup:
    """One server: its locks and cache either in memory or in the shared Redis."""

    def __init__(self, binary: str, work: Path, redis: RedisServer, locks: str, cache: str):
        self.name = f"{locks} locks, {cache} cache"
        prefix = f"{locks}-{cache}:"
        stores = fs_toml("blob_store", work / "store")
        if locks == "redis":
            stores += redis.lock_toml("blob_store.fs", prefix)
        extra = redis.cache_toml(prefix) if cache == "redis" else ""
        self.registry = start_stowage(work, stores, binary, extra)
        self.session = requests.Session()
        self.put_ms: list[float] = []
        self.get_ms: list[float] = []
        self.pushes = 0
        self.redis_calls = 0
        url = f"{self.registry.url}/v2/bench/locks/blobs/uploads/?digest={CONFIG_DIGEST}"
        self.session.post(url, data=CONFIG).raise_for_status()

    def push(self) -> float:
        """One manifest PUT to the tag; returns its latency in ms."""
        self.pushes += 1
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": CONFIG_DIGEST,
                    "size": len(CONFIG),
                },
                "layers": [],
                "annotations": {"push": str(self.pushes)},
            }
        ).encode()
        began = time.perf_counter()
        response = self.session.put(
            f"{self.registry.url}/v2/bench/locks/manifests/latest",
            data=body,
            headers={"Content-Type": MANIFEST_TYPE},
        )
        took = (time.perf_counter() - began) * 1000
        assert response.status_code == 201, response.text
        return took

    def get(self) -> float:
        began = time.perf_counter()
        response = self.session.get(
            f"{self.registry.url}/v2/bench/locks/manifests/latest",
            headers={"Accept": MANIFEST_TYPE},
        )
        took = (time.perf_counter() - began) * 1000
        assert response.status_code == 200, response.text
        return took

    def run_block(self, redis: RedisServer, n: int) -> None:
        calls = redis_calls(redis)
        self.put_ms += [self.push() for _ in range(n)]
        self.redis_calls += redis_calls(redis) - calls
        self.get_ms += [self.get() for _ in range(n)]


def redis_calls(redis: RedisServer) -> int:
    """Commands Redis has run so far (INFO stats), less the one asking."""
    for line in redis.cli("INFO", "stats").splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":")[1])
    raise RuntimeError("redis INFO stats has no total_commands_processed")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[round(q * (len(ordered) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default=str(REPO / "target/release/stowage"))
    parser.add_argument("--pushes", type=int, default=500, help="measured pushes per setup")
    args = parser.parse_args()

    work = scratch_dir("stowage-bench-locks-")
    redis = RedisServer(work)
    setups: list[Setup] = []
    try:
        for locks, cache in SETUPS:
            setups.append(Setup(args.bin, work / f"{locks}-{cache}", redis, locks, cache))
        for setup in setups:
            for _ in range(WARMUP):
                setup.push()
                setup.get()
        for start in range(0, args.pushes, BLOCK):
            for setup in setups:
                setup.run_block(redis, min(BLOCK, args.pushes - start))
        report(setups, args.pushes)
    finally:
        for setup in setups:
            setup.registry.stop()
        redis.stop()
        remove(work)
    return 0


def report(setups: list[Setup], pushes: int) -> None:
    base = setups[0]
    print(f"{pushes} sequential manifest PUTs to one tag (then as many GETs of it) per setup")
    print("(p50 x: against in-memory locks and cache; redis cmds: commands Redis ran per PUT,")
    print(" those inside the lock scripts included)")
    print(
        f"{'setup':<28}{'PUT p50':>9}{'PUT p99':>9}{'p50 x':>7}"
        f"{'GET p50':>9}{'GET p99':>9}{'p50 x':>7}{'redis cmds/PUT':>16}"
    )
    for s in setups:
        put50, get50 = percentile(s.put_ms, 0.5), percentile(s.get_ms, 0.5)
        print(
            f"{s.name:<28}{put50:>7.2f}ms{percentile(s.put_ms, 0.99):>7.2f}ms"
            f"{put50 / percentile(base.put_ms, 0.5):>7.2f}"
            f"{get50:>7.2f}ms{percentile(s.get_ms, 0.99):>7.2f}ms"
            f"{get50 / percentile(base.get_ms, 0.5):>7.2f}"
            f"{s.redis_calls / len(s.put_ms):>16.1f}"
        )


if __name__ == "__main__":
    sys.exit(main())
