"""Crash safety: SIGKILL the registry in the middle of concurrent pushes,
restart it on the same storage root, and check that

* every blob and manifest whose push was acknowledged (201) before the kill is
  served with exactly the pushed bytes;
* no digest is ever served with bytes that don't hash to it;
* on disk, every ``v2/blobs/<algo>/<xx>/<hex>/data`` hashes to its path
  (nothing half-written is visible);
* the restarted registry accepts new pushes, including of interrupted digests.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from dataclasses import dataclass, field

import pytest
import requests

from harness.oci import (
    CONFIG_TYPE,
    LAYER_TYPE,
    MANIFEST_TYPE,
    Blob,
    Client,
    canonical_json,
    sha256_digest,
)

MIB = 1024 * 1024
WORKERS = 4
MIN_SIZE, MAX_SIZE = 5 * MIB, 50 * MIB
CHUNK = 4 * MIB
KILL_AFTER_ACKS = 6  # acknowledged blobs before we pull the plug
KILL_DEADLINE = 90.0  # seconds; kill anyway by then


@dataclass
class Ledger:
    """What the clients attempted and what the registry acknowledged."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    attempted: dict = field(default_factory=dict)  # digest -> (repo, size, seed or None)
    acked_blobs: dict = field(default_factory=dict)  # digest -> (repo, size)
    acked_manifests: dict = field(default_factory=dict)  # (repo, tag) -> bytes
    attempted_manifests: dict = field(default_factory=dict)  # (repo, tag) -> bytes
    inflight: int = 0
    modes_acked: dict = field(default_factory=dict)

    def add(self, table: str, key, value) -> None:
        with self.lock:
            getattr(self, table)[key] = value


class Pusher:
    """The three ways of uploading a blob the test mixes, and the manifest PUT; each returns
    the status that ends it."""

    def __init__(self, base_url: str, repo: str):
        self.client = Client(base_url)
        self.repo = repo

    def monolithic_post(self, data: bytes, digest: str) -> int:
        """Single POST with ?digest= (falls back to PUT if the registry answers 202)."""
        r = self.client.push_blob(self.repo, Blob(data))
        if r.status_code == 202:
            r = self.client.finish_upload(r.headers["Location"], digest, data=data)
        return r.status_code

    def post_put(self, data: bytes, digest: str) -> int:
        location = self.client.start_upload(self.repo, expect=202).headers["Location"]
        return self.client.finish_upload(location, digest, data=data).status_code

    def chunked(self, data: bytes, digest: str) -> int:
        return self.client.push_chunked(self.repo, Blob(data), CHUNK).status_code

    def manifest(self, tag: str, body: bytes) -> int:
        return self.client.push_manifest(self.repo, tag, body).status_code


def blob_data(seed: int, size: int) -> bytes:
    """Random but reproducible, so interrupted blobs can be pushed again."""
    return random.Random(seed).randbytes(size)


def worker(idx: int, base_url: str, repo: str, ledger: Ledger, stop: threading.Event) -> None:
    rng = random.Random(os.urandom(8))
    pusher = Pusher(base_url, repo)
    modes = [pusher.monolithic_post, pusher.post_put, pusher.chunked]
    n = 0
    while not stop.is_set():
        n += 1
        mode = modes[(idx + n) % len(modes)]
        seed = rng.getrandbits(64)
        data = blob_data(seed, rng.randint(MIN_SIZE, MAX_SIZE))
        digest = sha256_digest(data)
        ledger.add("attempted", digest, (repo, len(data), seed))
        with ledger.lock:
            ledger.inflight += 1
        try:
            status = mode(data, digest)
            if status != 201:
                return  # registry refused or is going down; stop this worker
            ledger.add("acked_blobs", digest, (repo, len(data)))
            with ledger.lock:
                ledger.modes_acked[mode.__name__] = ledger.modes_acked.get(mode.__name__, 0) + 1

            # An image manifest over the new blob, with its own small config.
            config = canonical_json({"architecture": "amd64", "os": "linux",
                                     "rootfs": {"type": "layers", "diff_ids": [digest]},
                                     "stowage.crash.nonce": os.urandom(8).hex()})
            config_digest = sha256_digest(config)
            ledger.add("attempted", config_digest, (repo, len(config), None))
            if pusher.post_put(config, config_digest) != 201:
                return
            ledger.add("acked_blobs", config_digest, (repo, len(config)))
            body = canonical_json({
                "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": len(config)},
                "layers": [{"mediaType": LAYER_TYPE, "digest": digest, "size": len(data)}],
            })
            tag = f"w{idx}-{n}"
            ledger.add("attempted_manifests", (repo, tag), body)
            if pusher.manifest(tag, body) != 201:
                return
            ledger.add("acked_manifests", (repo, tag), body)
        except (requests.RequestException, AssertionError, KeyError):
            return  # connection reset / refused: the server was killed
        finally:
            with ledger.lock:
                ledger.inflight -= 1


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * MIB), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


@pytest.mark.fs_only  # walks v2/blobs under the storage root after the crash
def test_sigkill_during_concurrent_pushes_loses_nothing_acknowledged(registries, registry_kind, repo, tmp_path):
    reg = registries.start(registry_kind, tmp_path / "storage")
    ledger, stop = Ledger(), threading.Event()
    threads = [threading.Thread(target=worker, args=(i, reg.url, f"{repo}/w{i}", ledger, stop), daemon=True)
               for i in range(WORKERS)]
    for t in threads:
        t.start()

    # Let pushes get acknowledged, then kill while uploads are in flight.
    deadline = time.monotonic() + KILL_DEADLINE
    while time.monotonic() < deadline:
        with ledger.lock:
            enough = len(ledger.acked_blobs) >= 2 * KILL_AFTER_ACKS  # blobs + configs
            busy = ledger.inflight >= 2
        if enough and busy:
            break
        if not any(t.is_alive() for t in threads):
            break
        time.sleep(0.02)
    with ledger.lock:
        inflight_at_kill = ledger.inflight
    reg.kill()
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "push workers hung after the kill"
    assert ledger.acked_blobs, f"no push was acknowledged before the kill:\n{reg.log_tail()}"
    assert inflight_at_kill >= 1, "kill did not interrupt any upload; test is vacuous"

    reg2 = registries.restart(reg)

    # 1. Everything acknowledged is served with the exact bytes.
    for digest, (r_repo, size) in ledger.acked_blobs.items():
        head = Client(reg2.url).get_blob(r_repo, digest, method="HEAD")
        assert head.status_code == 200, f"acknowledged blob {digest} lost (HEAD {head.status_code})"
        assert int(head.headers["Content-Length"]) == size
        r = Client(reg2.url).get_blob(r_repo, digest)
        assert r.status_code == 200, f"acknowledged blob {digest} lost (GET {r.status_code})"
        assert len(r.content) == size and sha256_digest(r.content) == digest, \
            f"acknowledged blob {digest} served with wrong bytes"
    for (r_repo, tag), body in ledger.acked_manifests.items():
        for ref in (tag, sha256_digest(body)):
            r = Client(reg2.url).get_manifest(r_repo, ref)
            assert r.status_code == 200, f"acknowledged manifest {r_repo}:{ref} lost ({r.status_code})"
            assert r.content == body, f"acknowledged manifest {r_repo}:{ref} changed"

    # 2. Nothing is ever served with bytes that don't match its digest.
    for digest, (r_repo, size, _) in ledger.attempted.items():
        if digest in ledger.acked_blobs:
            continue
        r = Client(reg2.url).get_blob(r_repo, digest)
        assert r.status_code in (200, 404), f"unacknowledged blob {digest}: HTTP {r.status_code}"
        if r.status_code == 200:
            assert sha256_digest(r.content) == digest and len(r.content) == size, \
                f"unacknowledged blob {digest} served with torn bytes"
    for (r_repo, tag), body in ledger.attempted_manifests.items():
        r = Client(reg2.url).get_manifest(r_repo, tag)
        assert r.status_code in (200, 404), f"manifest {r_repo}:{tag}: HTTP {r.status_code}"
        if r.status_code == 200:
            assert r.content == body, f"unacknowledged manifest {r_repo}:{tag} served torn"

    # 3. On disk, every committed blob file hashes to its path.
    blobs_dir = reg2.data_root / "v2" / "blobs"
    data_files = sorted(blobs_dir.glob("*/*/*/data"))
    on_disk = set()
    for path in data_files:
        algo, hexd = path.parent.parent.parent.name, path.parent.name
        assert path.parent.parent.name == hexd[:2], f"misplaced blob dir {path}"
        expected = f"{algo}:{hexd}"
        assert sha256_file(path) == expected, f"{path} does not hash to its digest (half-written?)"
        on_disk.add(expected)
    missing = set(ledger.acked_blobs) - on_disk
    assert not missing, f"acknowledged blobs not in {blobs_dir}: {sorted(missing)[:5]}"

    # 4. The restarted registry takes writes, also for interrupted digests.
    interrupted = [(d, v) for d, v in ledger.attempted.items()
                   if d not in ledger.acked_blobs and v[2] is not None]
    for digest, (r_repo, size, seed) in interrupted:
        data = blob_data(seed, size)
        assert Pusher(reg2.url, r_repo).chunked(data, digest) == 201, f"re-push of {digest} failed"
        r = Client(reg2.url).get_blob(r_repo, digest)
        assert r.status_code == 200 and r.content == data, f"re-pushed {digest} not served back"
    fresh = os.urandom(6 * MIB)
    assert Pusher(reg2.url, f"{repo}/after").monolithic_post(fresh, sha256_digest(fresh)) == 201
    r = Client(reg2.url).get_blob(f"{repo}/after", sha256_digest(fresh))
    assert r.status_code == 200 and r.content == fresh

    print(f"acked blobs={len(ledger.acked_blobs)} manifests={len(ledger.acked_manifests)} "
          f"attempted={len(ledger.attempted)} re-pushed={len(interrupted)} inflight_at_kill={inflight_at_kill} "
          f"modes={ledger.modes_acked} data_files={len(data_files)}")
