"""`stowage gc` on S3, alone and split with the filesystem either way: the blob no manifest
references goes, what the tagged image needs stays and still pulls, and the multipart uploads
of writes that never committed are aborted; a dry run only tells."""

from __future__ import annotations

import subprocess

import pytest

from harness.oci import Blob, Client, Image
from harness.services import s3_toml
from trees import BucketTree

PREFIX = "collected"
REPO = "house/app"


LAYOUTS = ("s3", "s3-blobs+fs-meta", "fs-blobs+s3-meta")


def store_tables(layout: str, endpoint: str, bucket: str, fs_root) -> str:
    """The store tables of `layout`: S3 under PREFIX, the filesystem at `fs_root`."""
    s3_blobs = s3_toml("blob_store", endpoint, bucket, PREFIX)
    fs = f'root_dir = "{fs_root}"\n'
    return {
        "s3": s3_blobs,
        "s3-blobs+fs-meta": s3_blobs + f"[metadata_store.fs]\n{fs}",
        "fs-blobs+s3-meta": f"[blob_store.fs]\n{fs}" + s3_toml("metadata_store", endpoint, bucket, PREFIX),
    }[layout]


def blob_stored(layout: str, tree: BucketTree, fs_root, digest: str) -> bool:
    """Whether the blob store holds `digest`'s bytes."""
    hexdigest = digest.split(":", 1)[1]
    suffix = f"v2/blobs/sha256/{hexdigest[:2]}/{hexdigest}/data"
    if layout.startswith("fs-blobs"):
        return any(fs_root.glob(f"**/{suffix}"))
    return suffix in tree.keys()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gc_on_s3_deletes_the_unreferenced_and_aborts_crashed_multipart_uploads(
        s3, registries, stowage_bin, tmp_path, layout):
    bucket = s3.new_bucket()
    client = s3.client()
    fs_root = tmp_path / "fs-store"
    stores = store_tables(layout, s3.endpoint, bucket, fs_root)
    registry = registries.start(stores)
    kept = Image(Blob(b"{}"), (Blob(b"the kept layer"),))
    Client(registry.url).push_image(REPO, "v1", kept, expect=201)
    orphan = Blob(b"a layer no manifest names")
    Client(registry.url).push_blob(REPO, orphan, expect=201)
    registry.stop()
    # A write whose process died: moto reports every multipart upload as initiated in 2010.
    crashed = f"{PREFIX}/v2/blobs/sha256/00/{'0' * 64}/data"
    upload = client.create_multipart_upload(Bucket=bucket, Key=crashed)
    client.upload_part(Bucket=bucket, Key=crashed, UploadId=upload["UploadId"], PartNumber=1,
                       Body=b"x" * 1024)
    tree = BucketTree(client, bucket, PREFIX)
    config = tmp_path / "gc.toml"
    config.write_text(f"{stores}\n[gc]\ngrace_period_secs = 0\n")

    def collect(*flags: str) -> str:
        done = subprocess.run([stowage_bin, "gc", "--config", str(config), *flags],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    out = collect("--dry-run")
    assert "would delete 1 blobs" in out and "and 1 multipart uploads" in out, out
    assert blob_stored(layout, tree, fs_root, orphan.digest)
    assert tree.pending_multipart_uploads() == [crashed]

    out = collect()
    assert "deleted 1 blobs" in out and "and 1 multipart uploads" in out, out
    assert not blob_stored(layout, tree, fs_root, orphan.digest)
    assert tree.pending_multipart_uploads() == []

    registry = registries.start(stores)
    Client(registry.url).assert_pulls(REPO, "v1", kept)
    assert Client(registry.url).get_blob(REPO, orphan.digest, "HEAD").status_code == 404


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_blob_whose_bytes_went_under_its_cache_entry_answers_404_and_heals(
        s3, registries, tmp_path, layout):
    """The collector deletes only bytes nothing links to, but a link a refused write left
    can still be vouched for by the cache (`docs/gc.md`, "The cache"). A blob too large to be
    cached whole streams from storage after the answer's head: the bytes are opened first,
    so their absence answers 404 (not a 200 cut short on S3, or a 503 on the filesystem)
    and the cache forgets the entry, so the HEAD after asks storage."""
    bucket = s3.new_bucket()
    fs_root = tmp_path / "fs-store"
    registry = registries.start(store_tables(layout, s3.endpoint, bucket, fs_root))
    client = Client(registry.url)
    blob = Blob(bytes(range(256)) * 1024)
    client.push_blob(REPO, blob, expect=201)
    assert client.get_blob(REPO, blob.digest, expect=200).content == blob.data
    hexdigest = blob.digest.split(":", 1)[1]
    key = f"v2/blobs/sha256/{hexdigest[:2]}/{hexdigest}/data"
    if layout.startswith("fs-blobs"):
        for path in fs_root.glob(f"**/{key}"):
            path.unlink()
    else:
        s3.client().delete_object(Bucket=bucket, Key=f"{PREFIX}/{key}")
    assert not blob_stored(layout, BucketTree(s3.client(), bucket, PREFIX), fs_root, blob.digest)

    gone = client.get_blob(REPO, blob.digest)
    assert gone.status_code == 404, (gone.status_code, gone.text)
    assert gone.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert client.get_blob(REPO, blob.digest, "HEAD").status_code == 404
