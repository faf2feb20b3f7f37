"""Uploads on S3: chunked uploads spread over two processes, multipart copy above the
threshold, known-digest uploads that never leave wrong bytes at a content address, and the
number of S3 requests one 64 MiB push costs."""

from __future__ import annotations

from faultproxy import ActionCount
from harness.oci import Client, error_codes, expect, make_image, random_blob
from harness.services import s3_toml
from trees import BucketTree, blob_key, layout_problems

MiB = 1024 * 1024
SMALL_PARTS = {"multipart_part_size": "5MiB"}


def test_a_chunked_upload_hops_between_two_processes_on_one_bucket(s3, proxy, registries):
    bucket = s3.new_bucket()
    stores = s3_toml("blob_store", proxy.endpoint, bucket, **SMALL_PARTS)
    a, b = registries.start(stores), registries.start(stores)
    # Parts of 6 MiB are composed by S3 itself; parts of 100 KiB are concatenated by stowage.
    image = make_image("hop", 13 * MiB, 300 * 1024)
    for blob, chunk in zip(image.blobs, [64, 6 * MiB, 100 * 1024]):
        Client([a.url, b.url]).push_chunked("hop/app", blob, chunk, expect=201)
    Client(b.url).push_manifest("hop/app", "v1", image.manifest, expect=201)
    Client(a.url).assert_pulls("hop/app", "v1", image)
    Client(b.url).assert_pulls("hop/app", "v1", image)
    tree = BucketTree(s3.client(), bucket)
    assert layout_problems(tree) == []
    assert not [k for k in tree.keys() if "/_uploads/" in k], "finished sessions stay behind"
    assert proxy.counts().get("UploadPartCopy", 0) >= 2, "6 MiB parts were not composed"


def test_a_finished_upload_moves_by_multipart_copy_above_the_threshold(s3, proxy, registries):
    bucket = s3.new_bucket()
    settings = dict(
        SMALL_PARTS,
        multipart_copy_threshold="5MiB",
        multipart_copy_chunk_size="5MiB",
        multipart_copy_jobs=2,
    )
    registry = registries.start(s3_toml("blob_store", proxy.endpoint, bucket, **settings))
    large, small = random_blob("copy-large", 12 * MiB), random_blob("copy-small", MiB)
    for blob in (large, small):
        # One PATCH: the upload is a single part, moved to its content address by a copy.
        Client(registry.url).push_chunked("copy/app", blob, len(blob.data), expect=201)
    copies = {
        blob: [e.action for e in proxy.log() if e.key == blob_key(blob.digest)]
        for blob in (large, small)
    }
    assert copies[large].count("UploadPartCopy") == 3, copies[large]
    assert "CopyObject" not in copies[large]
    assert copies[small].count("CopyObject") == 1, copies[small]
    assert "UploadPartCopy" not in copies[small]
    for blob in (large, small):
        assert Client(registry.url).get_blob("copy/app", blob.digest, expect=200).content == blob.data
    assert layout_problems(BucketTree(s3.client(), bucket)) == []


def test_a_wrong_known_digest_leaves_nothing_at_any_content_address(s3, proxy, registries):
    bucket = s3.new_bucket()
    registry = registries.start(s3_toml("blob_store", proxy.endpoint, bucket, **SMALL_PARTS))
    claimed = random_blob("claimed", 10)
    tree = BucketTree(s3.client(), bucket)
    for size in (12 * MiB, 100 * 1024):
        sent = random_blob(f"sent-{size}", size)
        monolithic = Client(registry.url).push_blob("digest/app", sent, digest=claimed.digest)
        chunked = Client(registry.url).push_chunked("digest/app", sent, 4 * MiB, digest=claimed.digest)
        for response in (monolithic, chunked):
            assert response.status_code == 400, response.text
            assert error_codes(response) == ["DIGEST_INVALID"]
        keys = tree.keys()
        assert blob_key(claimed.digest) not in keys
        assert blob_key(sent.digest) not in keys
    writes = [e for e in proxy.log() if e.key == blob_key(claimed.digest)]
    assert {e.action for e in writes} <= {"HeadObject", "CreateMultipartUpload", "UploadPart",
                                          "AbortMultipartUpload"}, writes
    assert tree.pending_multipart_uploads() == []
    assert layout_problems(tree) == []


def test_s3_requests_of_one_64_mib_push(s3, proxy, registries, summary):
    bucket = s3.new_bucket()
    # The defaults: 50 MiB parts, 4 in flight.
    registry = registries.start(s3_toml("blob_store", proxy.endpoint, bucket))
    counts = {}
    for way, push in [
        ("monolithic (POST ?digest=)", lambda blob: Client(registry.url).push_blob("count/app", blob)),
        ("chunked (4 PATCH of 16 MiB)",
         lambda blob: Client(registry.url).push_chunked("count/app", blob, 16 * MiB)),
    ]:
        blob = random_blob(f"count-{way}", 64 * MiB)
        proxy.reset_log()
        expect(push(blob), 201)
        counts[way] = ActionCount(proxy.counts())
        summary(f"S3 requests of one 64 MiB blob push, {way}: {counts[way]}")
    monolithic, chunked = counts.values()
    assert monolithic.total <= 10, monolithic
    assert chunked.total <= 45, chunked
