"""Pushes one large blob monolithically (`POST ?digest=`, 2 GiB by default) to stowage on S3
(moto and Garage, or those `--s3` names) and on the filesystem, and reports push throughput and the server's peak resident
memory (VmHWM in /proc/PID/status); then pushes and pulls back a smaller blob (256 MiB by
default) for pull throughput.

    .venv/bin/python conformance/bench/s3_memory.py [--size-mib 2048] [--pull-mib 256] [--s3 moto,garage]

Blobs are generated on the fly (never whole in memory here either), so the peak RSS is the
server's own: on S3, about one part (the body declares its length and streams part by part)
plus a constant, whatever the blob's size. Pulls use a smaller blob because moto copies the whole object for every ranged GET,
which makes a 2 GiB pull from moto quadratic; its pull figure is moto's speed, not S3's."""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.client
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness package

from harness.process import REPO, remove, scratch_dir  # noqa: E402
from harness.registry import fs_toml, start_stowage  # noqa: E402
from harness.services import S3_SERVERS  # noqa: E402

MiB = 1024 * 1024
CHUNK = MiB
REPOSITORY = "bench/large"


def chunks(size: int):
    """`size` bytes of noise, the same on every call for one size, one MiB at a time."""
    block = random.Random(size).randbytes(CHUNK)
    for i, offset in enumerate(range(0, size, CHUNK)):
        turn = (i * 7919) % CHUNK
        yield (block[turn:] + block[:turn])[: min(CHUNK, size - offset)]


@functools.cache
def digest_of(size: int) -> str:
    hasher = hashlib.sha256()
    for chunk in chunks(size):
        hasher.update(chunk)
    return f"sha256:{hasher.hexdigest()}"


def rss_mib(pid: int, field: str = "VmHWM") -> float:
    """The process's peak (VmHWM) or current (VmRSS) resident memory."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def connect(url: str) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=600)


def push(url: str, size: int, digest: str) -> float:
    """Seconds to push the blob in one `POST ?digest=` with a Content-Length."""
    connection = connect(url)
    began = time.monotonic()
    connection.putrequest("POST", f"/v2/{REPOSITORY}/blobs/uploads/?digest={digest}")
    connection.putheader("Content-Type", "application/octet-stream")
    connection.putheader("Content-Length", str(size))
    connection.endheaders()
    for chunk in chunks(size):
        connection.send(chunk)
    response = connection.getresponse()
    body = response.read()
    elapsed = time.monotonic() - began
    connection.close()
    if response.status != 201:
        raise RuntimeError(f"push answered {response.status}: {body[:300]!r}")
    return elapsed


def pull(url: str, size: int, digest: str) -> float:
    """Seconds to pull the blob back, checking its length and digest."""
    connection = connect(url)
    began = time.monotonic()
    connection.request("GET", f"/v2/{REPOSITORY}/blobs/{digest}")
    response = connection.getresponse()
    hasher, received = hashlib.sha256(), 0
    while chunk := response.read(CHUNK):
        hasher.update(chunk)
        received += len(chunk)
    elapsed = time.monotonic() - began
    connection.close()
    if response.status != 200 or received != size or f"sha256:{hasher.hexdigest()}" != digest:
        raise RuntimeError(f"pull answered {response.status} with {received} bytes")
    return elapsed


def measure(binary: str, workdir: Path, stores_toml: str, large: int, small: int) -> dict:
    registry = start_stowage(workdir, stores_toml, binary)
    pid = registry.process.proc.pid
    try:
        idle = rss_mib(pid)
        push_secs = push(registry.url, large, digest_of(large))
        after_push = rss_mib(pid)
        # What the server keeps once the push is over: freed parts must go back to the system.
        held_after_push = rss_mib(pid, "VmRSS")
        push(registry.url, small, digest_of(small))
        pull_secs = pull(registry.url, small, digest_of(small))
        after_pull = rss_mib(pid)
    finally:
        registry.stop()
    return {
        "push MiB/s": large / MiB / push_secs,
        "pull MiB/s": small / MiB / pull_secs,
        "peak RSS idle (MiB)": idle,
        "peak RSS after push (MiB)": after_push,
        "RSS held after push (MiB)": held_after_push,
        "peak RSS after pull (MiB)": after_pull,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=2048, help="the pushed blob")
    parser.add_argument("--pull-mib", type=int, default=256, help="the pulled blob")
    parser.add_argument("--part-mib", type=int, default=50, help="S3 multipart_part_size")
    parser.add_argument("--jobs", type=int, default=4, help="S3 multipart_copy_jobs")
    parser.add_argument("--s3", default="moto,garage", help="S3 servers, comma-separated")
    parser.add_argument("--bin", default=str(REPO / "target" / "release" / "stowage"))
    args = parser.parse_args()

    work = scratch_dir("stowage-s3-memory-")
    servers = []
    try:
        stores = {"fs": fs_toml("blob_store", work / "fs-root")}
        for name in filter(None, args.s3.split(",")):
            (work / name).mkdir()
            servers.append(s3 := S3_SERVERS[name](work / name))
            stores[f"s3 ({name})"] = s3.store_toml(
                "blob_store", s3.new_bucket(),
                multipart_part_size=f"{args.part_mib}MiB", multipart_copy_jobs=args.jobs,
            )
        results = {
            name: measure(
                args.bin, work / name.replace(" ", "").strip("()") / "registry", toml,
                args.size_mib * MiB, args.pull_mib * MiB,
            )
            for name, toml in stores.items()
        }
    finally:
        for s3 in servers:
            s3.stop()
        remove(work)

    print(f"push: one {args.size_mib} MiB blob, monolithic POST ?digest=; "
          f"pull: one {args.pull_mib} MiB blob, GET; S3 parts of {args.part_mib} MiB, "
          f"multipart_copy_jobs = {args.jobs}: at most one part received and not yet sent")
    columns = list(next(iter(results.values())))
    print(f"{'store':<14}" + "".join(f"{c:>28}" for c in columns))
    for name, row in results.items():
        print(f"{name:<14}" + "".join(f"{row[c]:>28.0f}" for c in columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
