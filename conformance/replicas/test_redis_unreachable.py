"""Redis down: writes, which need its locks, fail fast with 503 and an OCI error body; reads
carry on from the store (a cache that fails is a miss). Redis back: writes work again."""

from __future__ import annotations

import time

from harness.oci import CLOSE_AFTER, Blob, Client, Image, ResponseLog

FAIL_FAST_SECS = 3.0
RECONNECT_SECS = 2.0
REPO = "redis/down"


def push_image(client: Client, replica: int, name: str) -> Image:
    config, layer = Blob(f'{{"image":"{name}"}}'.encode()), Blob(name.encode() * 1024)
    client.push_blob(REPO, config, expect=201, at=replica)
    client.push_chunked(REPO, layer, at=[replica] * 3, expect=201)
    image = Image(config, (layer,), name)
    client.push_manifest(REPO, name, image.manifest, expect=201, at=replica)
    return image


def assert_fails_fast(what: str, attempt) -> None:
    """`attempt()` returns the response of a write; it must be a quick 503 with an OCI
    error body."""
    began = time.monotonic()
    response = attempt()
    took = time.monotonic() - began
    assert response.status_code == 503, f"{what}: {response.status_code} {response.text[:200]}"
    assert response.headers["Content-Type"].startswith("application/json"), what
    assert response.json()["errors"][0]["code"] == "UNAVAILABLE", f"{what}: {response.text}"
    assert took < FAIL_FAST_SECS, f"{what} took {took:.1f}s to fail"


def assert_reads_work(client: Client, replica: int, image: Image, tag: str) -> None:
    for reference in (tag, image.digest):
        response = client.get_manifest(REPO, reference, expect=(200, 404), at=replica)
        assert response.status_code == 200 and response.content == image.manifest, (
            f"replica {replica}: manifest {reference}: {response.status_code}"
        )
    for blob in image.blobs:
        response = client.get_blob(REPO, blob.digest, at=replica)
        assert response.status_code == 200 and response.content == blob.data, (
            f"replica {replica}: blob {blob.digest}: {response.status_code}"
        )


def test_writes_fail_fast_and_reads_go_on_while_redis_is_down(start_cluster, redis, summary):
    cluster = start_cluster("fs")
    log = ResponseLog()
    client = Client(cluster.urls, log=log)
    replicas = range(len(cluster.urls))
    before = push_image(client, 0, "before")
    # Read once through every replica, so the cache holds what they will read again.
    for replica in replicas:
        assert_reads_work(client, replica, before, "before")

    logged_before = [len(replica.log_text()) for replica in cluster.replicas]
    redis.stop()
    slowest = 0.0
    for replica in replicas:
        blob = Blob(f"written while redis is down, through {replica}".encode())

        def post_then_put():
            # The POST takes no lock: 202.
            location = client.start_upload(REPO, expect=202, at=replica).headers["Location"]
            return client.finish_upload(location, blob.digest, data=blob.data,
                                        headers=CLOSE_AFTER, at=replica)

        began = time.monotonic()
        assert_fails_fast("upload POST+PUT", post_then_put)
        assert_fails_fast(
            "monolithic upload",
            lambda: client.push_blob(REPO, blob, headers=CLOSE_AFTER, at=replica),
        )
        image = Image(before.blobs[0], (), f"while down {replica}")
        assert_fails_fast(
            "manifest PUT",
            lambda: client.push_manifest(REPO, "down", image.manifest, headers=CLOSE_AFTER,
                                         at=replica),
        )
        slowest = max(slowest, time.monotonic() - began)
        assert_reads_work(client, replica, before, "before")
        # The refused writes left nothing visible.
        assert client.get_manifest(REPO, "down", expect=(200, 404), at=replica).status_code == 404
        assert client.get_blob(REPO, blob.digest, at=replica).status_code == 404
    for i, replica in enumerate(cluster.replicas):
        logged = replica.log_after(logged_before[i], "redis").lower()
        assert "redis" in logged, f"replica {i} did not log the failure: {logged!r}"

    redis.start()
    refused_after = {replica: writes_refused_on_reconnect(client, replica) for replica in replicas}
    for replica in replicas:
        after = push_image(client, replica, f"after-{replica}")
        for reader in replicas:
            assert_reads_work(client, reader, after, f"after-{replica}")
    assert cluster.lock_keys() == []
    summary(
        f"redis down: 3 refused writes per replica took {slowest:.2f}s at most; once it was "
        f"back, writes refused before the replicas reconnected: {refused_after}"
    )


def writes_refused_on_reconnect(client: Client, replica: int) -> int:
    """Monolithic uploads through `replica` until one is accepted; returns how many were
    refused first. Each of a replica's two Redis connections (locks, cache) finds out it
    was dropped on its first use, which fails, and reconnects: at most two refusals, all
    within a couple of seconds."""
    deadline = time.monotonic() + RECONNECT_SECS
    for refused in range(3):
        blob = Blob(f"written after redis came back, through {replica}, try {refused}".encode())
        response = client.push_blob(REPO, blob, expect=(201, 503), at=replica)
        if response.status_code == 201:
            return refused
        assert time.monotonic() < deadline, f"replica {replica} still refuses writes"
    raise AssertionError(f"replica {replica} refused 3 writes after redis came back")
