"""Locks and cache on a Redis that takes only TLS (`rediss://`), as managed Redis services
require: replicas trust its certificate through the system's store, which `SSL_CERT_FILE`
points elsewhere for a private CA; a Redis whose certificate they do not trust is refused,
and writes fail with 503 rather than go ahead without locks."""

from __future__ import annotations

import requests

from harness.fixtures import replica_binaries
from harness.oci import TIMEOUT, Blob, Client, make_image
from harness.pki import Ca, trusting
from harness.registry import fs_toml, start_stowage
from harness.services import RedisServer

REPO = "tls/app"


def start_replicas(tmp_path, redis: RedisServer, ca_file: str | None) -> list:
    stores = fs_toml("blob_store", tmp_path / "store") + redis.lock_toml("blob_store.fs", "tls:")
    return [start_stowage(tmp_path / f"replica-{i}", stores, binary, redis.cache_toml("tls:"),
                          env=trusting(ca_file))
            for i, binary in enumerate(replica_binaries())]


def test_replicas_share_locks_and_cache_on_a_tls_redis(tmp_path):
    redis = RedisServer(tmp_path, tls_ca=Ca("redis test CA"))
    replicas = start_replicas(tmp_path, redis, str(tmp_path / "redis-ca.pem"))
    try:
        urls = [r.url for r in replicas]
        for url in urls:
            r = requests.get(f"{url}/readyz", timeout=TIMEOUT)
            assert r.status_code == 200 and r.json()["checks"]["redis"] == "ok", r.text
        image = make_image("over-tls", 3000, 70_000)
        client = Client(urls)
        client.push_image(REPO, "latest", image, chunk_size=32_000, expect=201)
        for replica in range(len(urls)):
            client.assert_pulls(REPO, "latest", image, at=replica)
        # The cache went through this Redis: the replicas wrote their entries there.
        assert redis.keys("tls:*"), "nothing in Redis under the replicas' prefix"
    finally:
        for replica in replicas:
            replica.stop()
        redis.stop()


def test_a_redis_whose_certificate_is_not_trusted_is_refused(tmp_path):
    redis = RedisServer(tmp_path, tls_ca=Ca("a CA nobody trusts"))
    [first, *others] = start_replicas(tmp_path, redis, None)
    try:
        r = requests.get(f"{first.url}/readyz", timeout=TIMEOUT)
        assert r.status_code == 503, r.text
        assert "certificate" in r.json()["checks"]["redis"], r.text
        blob = Blob(b"not without locks")
        response = Client(first.url).push_blob(REPO, blob)
        assert response.status_code == 503, response.text
        assert response.json()["errors"][0]["code"] == "UNAVAILABLE", response.text
        assert Client(first.url).get_blob(REPO, blob.digest).status_code == 404
    finally:
        for replica in [first, *others]:
            replica.stop()
        redis.stop()
