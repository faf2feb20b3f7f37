"""Uploads on S3: chunked uploads spread over two processes, multipart copy above the
threshold, known-digest uploads that never leave wrong bytes at a content address, the
number of S3 requests one 64 MiB push costs, and bodies streamed part by part in bounded
memory."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest

from faultproxy import ActionCount
from harness.oci import Client, error_codes, expect, make_image, random_blob
from harness.process import wait_until
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


def peak_rss_mib(registry) -> float:
    for line in Path(f"/proc/{registry.process.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def in_pieces(data: bytes, size: int):
    """A body of unknown length: requests sends it chunked, without a Content-Length."""
    for offset in range(0, len(data), size):
        yield data[offset:offset + size]


@pytest.mark.parametrize("declared, bound_parts", [(True, 2), (False, 3)],
                         ids=["Content-Length", "no length"])
def test_a_body_streams_to_s3_in_a_bounded_number_of_parts(s3, registries, summary, declared,
                                                           bound_parts):
    bucket = s3.new_bucket()
    # The defaults: 50 MiB parts, 4 in flight. Gathering whole parts would hold five; a
    # body of declared length holds about one, one of unknown length about two.
    registry = registries.start(s3_toml("blob_store", s3.endpoint, bucket))
    client = Client(registry.url)
    idle = peak_rss_mib(registry)
    blob = random_blob("streamed", 192 * MiB)
    if declared:
        client.push_blob("streamed/app", blob, expect=201)
    else:
        location = client.start_upload("streamed/app", expect=202).headers["Location"]
        response = client.request("PATCH", location, 202, data=in_pieces(blob.data, MiB),
                                  headers={"Content-Type": "application/octet-stream"})
        client.finish_upload(response.headers["Location"], blob.digest, expect=201)
    grown = peak_rss_mib(registry) - idle
    way = "with a Content-Length" if declared else "without a length"
    summary(f"S3 push of 192 MiB {way}, 50 MiB parts: peak RSS {grown:.0f} MiB over the idle "
            f"server's {idle:.0f}")
    assert grown < bound_parts * 50, f"the push held {grown:.0f} MiB"
    assert client.get_blob("streamed/app", blob.digest, expect=200).content == blob.data
    assert BucketTree(s3.client(), bucket).pending_multipart_uploads() == []


def test_a_streamed_body_cut_off_leaves_no_parts_behind(s3, registries):
    bucket = s3.new_bucket()
    registry = registries.start(s3_toml("blob_store", s3.endpoint, bucket, **SMALL_PARTS))
    blob = random_blob("cut", 24 * MiB)
    host, port = registry.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port))
    connection.putrequest("POST", f"/v2/cut/app/blobs/uploads/?digest={blob.digest}")
    connection.putheader("Content-Length", str(len(blob.data)))
    connection.endheaders()
    connection.send(blob.data[: 13 * MiB])
    tree = BucketTree(s3.client(), bucket)
    wait_until(lambda: len(tree.pending_multipart_uploads()) == 1, "the streamed upload's start")
    connection.close()
    wait_until(lambda: tree.pending_multipart_uploads() == [], "the cut upload's abort")
    assert blob_key(blob.digest) not in tree.keys()
    Client(registry.url).push_blob("cut/app", blob, expect=201)
    assert tree.pending_multipart_uploads() == []
