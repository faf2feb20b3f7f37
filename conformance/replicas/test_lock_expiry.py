"""Locks with a short TTL: a replica killed while it holds one keeps it taken until the TTL
runs out, then another replica takes it, and nothing the dead replica acknowledged is lost.
And requests whose bodies stream longer than the TTL: they hold no lock while streaming and
commit by compare-and-swap, so they are neither refused nor able to overwrite newer data."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError
from urllib.parse import urlsplit

import requests

from harness.oci import TIMEOUT, Blob, Client, Image, ResponseLog, sha256_digest
from harness.process import wait_until

TTL_SECS = 2
# Waiting for a lock may take up to 200 x (25..50) ms = 5..10 s, well above the TTL.
LOCK_SETTINGS = {"ttl": TTL_SECS, "max_retries": 200, "retry_delay_ms": 25}
SLACK_SECS = 0.25
# Large enough that re-hashing and joining it keeps A in its lock for a while.
BIG_UPLOAD = 768 * 1024 * 1024


def chunk(label: str) -> Blob:
    return Blob(label.encode() * (64 * 1024 // len(label)))


def push_image(client: Client, repo: str, replica: int, name: str, tag: str | None) -> Image:
    config, layer = Blob(f'{{"image":"{name}"}}'.encode()), Blob(name.encode() * 4096)
    client.push_blob(repo, config, expect=201, at=replica)
    client.push_chunked(repo, layer, at=[replica] * 4, expect=201)
    image = Image(config, (layer,), name)
    client.push_manifest(repo, tag or image.digest, image.manifest, expect=201, at=replica)
    return image


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def test_lock_of_a_killed_replica_expires_after_its_ttl(start_cluster, summary):
    cluster = start_cluster("fs", **LOCK_SETTINGS)
    a, b, c = range(3)
    log = ResponseLog()
    repo = "killed/holder"
    client = Client(cluster.urls, log=log)
    acknowledged = {
        "tagged": push_image(client, repo, a, "tagged", "v1"),
        "untagged": push_image(client, repo, a, "untagged", None),
    }

    # A completes a large two-part upload under a sha512 digest: it holds the upload's lock
    # while it re-hashes the parts (they were hashed with sha256 on the way in) and joins them.
    upload = Blob(os.urandom(BIG_UPLOAD))
    location = client.start_upload(repo, expect=202, at=b).headers["Location"]
    half = len(upload.data) // 2
    location = client.patch_chunk(location, 0, upload.data[:half], expect=202,
                                  at=b).headers["Location"]
    location = client.patch_chunk(location, half, upload.data[half:], expect=202,
                                  at=c).headers["Location"]
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
    client.finish_upload(location, upload.digest, expect=201, at=b)
    answered = time.monotonic()
    waited = answered - asked
    expires = looked + remaining
    assert answered >= expires - SLACK_SECS, (
        f"B's PUT was answered {expires - answered:.2f}s before A's lock expired"
    )
    # B's own completion (joining 768 MiB) follows the wait, hence the generous bound.
    assert answered <= expires + 15, f"B waited {answered - expires:.2f}s past the lock's expiry"

    for replica in (b, c):
        assert client.get_blob(repo, upload.digest, at=replica).content == upload.data
        for name, image in acknowledged.items():
            response = client.get_manifest(repo, image.digest, expect=(200, 404), at=replica)
            assert response.status_code == 200 and response.content == image.manifest, name
            for blob in image.blobs:
                assert client.get_blob(repo, blob.digest, at=replica).content == blob.data, name
        tagged = client.get_manifest(repo, "v1", expect=200, at=replica)
        assert tagged.content == acknowledged["tagged"].manifest
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
    repo = "slow/chunk"
    client = Client(cluster.urls, log=ResponseLog())
    upload = chunk("slow")
    location = client.start_upload(repo, expect=202, at=0).headers["Location"]
    patch = TricklingPatch(cluster.urls[0], location, upload.data)
    for _ in range(6):  # 3 s, 1.5 x the TTL
        time.sleep(0.5)
        patch.send(1024)
    assert patch.finish() == 202
    client.finish_upload(location, upload.digest, expect=201, at=0)
    assert client.get_blob(repo, upload.digest, at=0).content == upload.data


def test_a_slow_chunk_cannot_overwrite_a_newer_one_at_its_offset(start_cluster):
    cluster = start_cluster("fs", count=2, **LOCK_SETTINGS)
    a, b = range(2)
    repo = "stale/holder"
    client = Client(cluster.urls, log=ResponseLog())
    location = client.start_upload(repo, expect=202, at=a).headers["Location"]
    stale, fresh = chunk("sent to A, slowly"), chunk("sent to B, later")
    holder = TricklingPatch(cluster.urls[a], location, stale.data)
    time.sleep(TTL_SECS + 0.5)
    with ThreadPoolExecutor(1) as pool:
        # B's PATCH at the same offset; if A still holds the lock, B waits for it.
        contender = pool.submit(
            lambda: client.patch_chunk(location, 0, fresh.data, expect=(202, 416, 503), at=b)
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
    client.finish_upload(location, accepted[0].digest, expect=201, at=b)
    served = client.get_blob(repo, accepted[0].digest, at=a).content
    assert sha256_digest(served) == accepted[0].digest, (
        f"{accepted[0].digest} is served with bytes that hash to {sha256_digest(served)}"
    )


class TricklingPatch:
    """A PATCH sent by hand over a socket, its body held back: the server takes the upload's
    lock, then waits for the rest of the bytes."""

    def __init__(self, url: str, location: str, chunk: bytes, first: int = 1024):
        address = urlsplit(url)
        self.chunk = chunk
        self.sent = first
        self.socket = socket.create_connection((address.hostname, address.port), timeout=TIMEOUT)
        head = (
            f"PATCH {location} HTTP/1.1\r\nHost: {address.netloc}\r\n"
            "Content-Type: application/octet-stream\r\n"
            f"Content-Length: {len(chunk)}\r\nContent-Range: 0-{len(chunk) - 1}\r\n\r\n"
        )
        self.socket.sendall(head.encode() + chunk[:first])

    def send(self, n: int) -> None:
        self.socket.sendall(self.chunk[self.sent : self.sent + n])
        self.sent += n

    def finish(self) -> int:
        """Sends the rest of the body; returns the response's status."""
        self.send(len(self.chunk) - self.sent)
        status_line = self.socket.makefile("rb").readline()
        self.close()
        return int(status_line.split()[1])

    def close(self) -> None:
        self.socket.close()
