"""Locks with a short TTL: a replica killed while it holds one keeps it taken until the TTL
runs out, then another replica takes it, and nothing the dead replica acknowledged is lost.
And requests whose bodies stream longer than the TTL: they hold no lock while streaming and
commit by compare-and-swap, so they are neither refused nor able to overwrite newer data."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError

import requests

from oci_client import Blob, sha256
from replica_client import Client, Manifest, ResponseLog, TricklingPatch
from services import wait_until

TTL_SECS = 2
# Waiting for a lock may take up to 200 x (25..50) ms = 5..10 s, well above the TTL.
LOCK_SETTINGS = {"ttl": TTL_SECS, "max_retries": 200, "retry_delay_ms": 25}
SLACK_SECS = 0.25
# Large enough that re-hashing and joining it keeps A in its lock for a while.
BIG_UPLOAD = 768 * 1024 * 1024


def chunk(label: str) -> Blob:
    return Blob(label.encode() * (64 * 1024 // len(label)))


def push_image(client: Client, replica: int, name: str, tag: str | None) -> Manifest:
    config, layer = Blob(f'{{"image":"{name}"}}'.encode()), Blob(name.encode() * 4096)
    client.push_blob(replica, config)
    client.chunked_upload([replica] * 4, layer)
    manifest = Manifest.image(config, [layer], name)
    client.push_manifest(replica, tag or manifest.digest, manifest)
    return manifest


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def test_lock_of_a_killed_replica_expires_after_its_ttl(start_cluster, summary):
    cluster = start_cluster("fs", **LOCK_SETTINGS)
    a, b, c = range(3)
    log = ResponseLog()
    client = Client(cluster.urls, "killed/holder", log)
    acknowledged = {
        "tagged": push_image(client, a, "tagged", "v1"),
        "untagged": push_image(client, a, "untagged", None),
    }

    # A completes a large two-part upload under a sha512 digest: it holds the upload's lock
    # while it re-hashes the parts (they were hashed with sha256 on the way in) and joins them.
    upload = Blob(os.urandom(BIG_UPLOAD))
    location = client.start_upload(b)
    half = len(upload.data) // 2
    location = client.patch_chunk(b, location, 0, upload.data[:half])
    location = client.patch_chunk(c, location, half, upload.data[half:])
    finishing = threading.Thread(
        target=finish_quietly, args=(cluster.urls[a], location, sha512(upload.data))
    )
    finishing.start()
    lock_pattern = f"{cluster.prefix}lock:upload/*"
    wait_until(lambda: cluster.redis.keys(lock_pattern), "replica A taking the upload's lock", 10)
    [lock] = cluster.redis.keys(lock_pattern)
    looked = time.monotonic()
    remaining = int(cluster.redis.cli("PTTL", lock)) / 1000
    assert 0 < remaining <= TTL_SECS, f"{lock} has PTTL {remaining}s"
    cluster.kill(a)
    finishing.join()

    # Replica B completes the same upload: it must wait for the dead replica's lock.
    asked = time.monotonic()
    client.finish_upload(b, location, upload)
    answered = time.monotonic()
    waited = answered - asked
    expires = looked + remaining
    assert answered >= expires - SLACK_SECS, (
        f"B's PUT was answered {expires - answered:.2f}s before A's lock expired"
    )
    # B's own completion (joining 768 MiB) follows the wait, hence the generous bound.
    assert answered <= expires + 15, f"B waited {answered - expires:.2f}s past the lock's expiry"

    for replica in (b, c):
        assert client.get_blob(replica, upload.digest).content == upload.data
        for name, manifest in acknowledged.items():
            response = client.get_manifest(replica, manifest.digest)
            assert response.status_code == 200 and response.content == manifest.body, name
            for blob in manifest.blobs:
                assert client.get_blob(replica, blob.digest).content == blob.data, name
        assert client.get_manifest(replica, "v1").content == acknowledged["tagged"].body
    assert not log.server_errors, log.server_errors
    assert cluster.lock_keys() == []
    summary(
        f"killed lock holder: ttl {TTL_SECS}s, lock had {remaining:.2f}s left when A was "
        f"killed; B's PUT waited {waited:.2f}s, answered {answered - expires:+.2f}s "
        f"from the lock's expiry"
    )


def finish_quietly(url: str, location: str, digest: str) -> None:
    """A's completion: its replica is killed mid-request, so the connection just drops."""
    try:
        requests.put(f"{url}{location}?digest={digest}", timeout=60)
    except requests.RequestException:
        pass


def test_a_chunk_streaming_longer_than_the_lock_ttl_is_accepted(start_cluster):
    cluster = start_cluster("fs", count=1, **LOCK_SETTINGS)
    client = Client(cluster.urls, "slow/chunk", ResponseLog())
    upload = chunk("slow")
    location = client.start_upload(0)
    patch = TricklingPatch(cluster.urls[0], location, upload.data)
    for _ in range(6):  # 3 s, 1.5 x the TTL
        time.sleep(0.5)
        patch.send(1024)
    assert patch.finish() == 202
    client.finish_upload(0, location, upload)
    assert client.get_blob(0, upload.digest).content == upload.data


def test_a_slow_chunk_cannot_overwrite_a_newer_one_at_its_offset(start_cluster):
    cluster = start_cluster("fs", count=2, **LOCK_SETTINGS)
    a, b = range(2)
    client = Client(cluster.urls, "stale/holder", ResponseLog())
    location = client.start_upload(a)
    stale, fresh = chunk("sent to A, slowly"), chunk("sent to B, later")
    holder = TricklingPatch(cluster.urls[a], location, stale.data)
    time.sleep(TTL_SECS + 0.5)
    with ThreadPoolExecutor(1) as pool:
        # B's PATCH at the same offset; if A still holds the lock, B waits for it.
        contender = pool.submit(
            client.request, b, "PATCH", location, expect=(202, 416, 503), data=fresh.data,
            headers={"Content-Type": "application/octet-stream",
                     "Content-Range": f"0-{len(fresh.data) - 1}"},
        )
        try:
            contender.result(timeout=1)
        except TimeoutError:
            pass
        holder_status = holder.finish()
        contender_status = contender.result().status_code
    statuses = {stale: holder_status, fresh: contender_status}
    accepted = [blob for blob, status in statuses.items() if status == 202]
    assert len(accepted) == 1, f"A got {holder_status}, B got {contender_status}"
    client.finish_upload(b, location, accepted[0])
    served = client.get_blob(a, accepted[0].digest).content
    assert sha256(served) == accepted[0].digest, (
        f"{accepted[0].digest} is served with bytes that hash to {sha256(served)}"
    )
