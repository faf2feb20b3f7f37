"""Pushes through a proxy that fails and delays S3 requests on purpose: each push succeeds
after retries or fails with a clear error, and the bucket never holds a half-visible blob,
manifest or tag."""

from __future__ import annotations

import time

from faultproxy import Faults, Scripted
from harness.oci import Client, UnexpectedStatus, error_codes, make_image, random_blob
from harness.process import wait_until
from harness.services import s3_toml
from trees import BucketTree, blob_key, layout_problems

MiB = 1024 * 1024
WRITES = frozenset(
    {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload",
     "CopyObject", "UploadPartCopy"}
)


def start(registries, proxy, bucket, **settings):
    settings = {"multipart_part_size": "5MiB", **settings}
    return registries.start(s3_toml("blob_store", proxy.endpoint, bucket, **settings))


def assert_consistent(s3, bucket):
    assert layout_problems(BucketTree(s3.client(), bucket)) == []


def test_pushes_under_random_faults_succeed_or_fail_clearly(s3, proxy, registries):
    bucket = s3.new_bucket()
    registry = start(
        registries, proxy, bucket,
        max_attempts=5, operation_attempt_timeout_secs=1, operation_timeout_secs=30,
    )
    # Each fault costs a second or more of backoff: few enough to keep the test short.
    proxy.set_faults(Faults(fail=0.06, delay=0.02, delay_secs=1.5, seed=3))
    pushed, failed = [], []
    for i in range(4):
        image = make_image(f"faults-{i}", 6 * MiB, 200 * 1024)
        try:
            Client(registry.url).push_image(f"faults/app{i % 2}", f"v{i}", image,
                                            chunk_size=2 * MiB if i % 2 else None, expect=201)
            pushed.append((i, image))
        except UnexpectedStatus as e:
            assert e.response.status_code >= 500, e
            error_codes(e.response)
            failed.append(i)
    log = proxy.log()
    proxy.clear()
    injected = [e for e in log if e.fault]
    assert len(injected) >= 5, "the proxy injected too few faults to test anything"
    # Retried: some request that was failed on purpose was later answered by S3.
    answered = {(e.method, e.key) for e in log if e.fault is None and e.status}
    assert any((e.method, e.key) in answered for e in injected if e.fault != "delayed")
    assert len(pushed) >= 3, f"only {len(pushed)} of 4 pushes survived retries"
    assert_consistent(s3, bucket)
    for i, image in pushed:
        Client(registry.url).assert_pulls(f"faults/app{i % 2}", f"v{i}", image)


def test_exhausted_retries_fail_with_a_clear_error_and_store_nothing(s3, proxy, registries):
    bucket = s3.new_bucket()
    registry = start(registries, proxy, bucket, max_attempts=2)
    blob = random_blob("exhausted", 64 * 1024)
    proxy.set_faults(Faults(fail=1.0, errors=("SlowDown",), actions=WRITES))
    response = Client(registry.url).push_blob("exhausted/app", blob)
    assert response.status_code == 503, response.text
    assert error_codes(response) == ["UNAVAILABLE"]
    attempts = [e for e in proxy.log() if e.key == blob_key(blob.digest) and e.action in WRITES]
    assert len(attempts) == 2, attempts
    proxy.clear()
    assert blob_key(blob.digest) not in BucketTree(s3.client(), bucket).keys()
    Client(registry.url).push_blob("exhausted/app", blob, expect=201)
    assert_consistent(s3, bucket)


def test_a_slow_attempt_is_cut_and_retried(s3, proxy, registries):
    bucket = s3.new_bucket()
    registry = start(registries, proxy, bucket, max_attempts=3, operation_attempt_timeout_secs=1)
    blob = random_blob("slow", 64 * 1024)
    proxy.inject(Scripted(action="PutObject", count=1, delay_secs=5))
    began = time.monotonic()
    Client(registry.url).push_blob("slow/app", blob, expect=201)
    elapsed = time.monotonic() - began
    assert elapsed < 4, f"the slow attempt was not cut at its timeout ({elapsed:.1f}s)"
    print(f"slow attempt: push took {elapsed:.2f}s")

    def attempts():
        return [e.fault for e in proxy.log() if e.key == blob_key(blob.digest)]

    # The held-back attempt is logged once the proxy notices its client has gone.
    wait_until(lambda: len(attempts()) == 2, "the abandoned attempt's log entry")
    assert attempts() == [None, "delayed, abandoned"], attempts()
    assert_consistent(s3, bucket)


def test_the_operation_timeout_bounds_every_attempt_together(s3, proxy, registries):
    bucket = s3.new_bucket()
    registry = start(
        registries, proxy, bucket,
        max_attempts=10, operation_attempt_timeout_secs=1, operation_timeout_secs=2,
    )
    blob = random_blob("bounded", 64 * 1024)
    proxy.set_faults(Faults(delay=1.0, delay_secs=1.5, actions=frozenset({"PutObject"})))
    began = time.monotonic()
    response = Client(registry.url).push_blob("bounded/app", blob)
    elapsed = time.monotonic() - began
    # Ten attempts of a second each, with backoff between them, would take far longer.
    assert elapsed < 6, f"the push took {elapsed:.1f}s"
    assert response.status_code == 503, response.text
    assert error_codes(response) == ["UNAVAILABLE"]
    # An attempt cut at its timeout may still be held in the proxy: nothing of it may land.
    proxy.wait_idle()
    proxy.clear()
    assert blob_key(blob.digest) not in BucketTree(s3.client(), bucket).keys()
