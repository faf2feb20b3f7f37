"""`stowage gc` on S3, alone and split with the filesystem either way: the blob no manifest
references goes, what the tagged image needs stays and still pulls, and the multipart uploads
of writes that never committed are aborted; a dry run only tells."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest
import requests

from configs import s3_toml
from s3_client import TIMEOUT
from trees import BucketTree

PREFIX = "collected"
REPO = "house/app"


def push_blob(url: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    response = requests.post(
        f"{url}/v2/{REPO}/blobs/uploads/?digest={digest}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 201, response.text
    return digest


def push_image(url: str, tag: str, config: bytes, layer: bytes) -> bytes:
    """A one-layer image tagged `tag`: its manifest."""
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": push_blob(url, config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": push_blob(url, layer), "size": len(layer)}],
    }).encode()
    response = requests.put(
        f"{url}/v2/{REPO}/manifests/{tag}",
        data=manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 201, response.text
    return manifest


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
    manifest = push_image(registry.url, "v1", b"{}", b"the kept layer")
    orphan = push_blob(registry.url, b"a layer no manifest names")
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
    assert blob_stored(layout, tree, fs_root, orphan)
    assert tree.pending_multipart_uploads() == [crashed]

    out = collect()
    assert "deleted 1 blobs" in out and "and 1 multipart uploads" in out, out
    assert not blob_stored(layout, tree, fs_root, orphan)
    assert tree.pending_multipart_uploads() == []

    registry = registries.start(stores)
    pulled = requests.get(
        f"{registry.url}/v2/{REPO}/manifests/v1",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=TIMEOUT,
    )
    assert pulled.status_code == 200 and pulled.content == manifest
    for layer in json.loads(manifest)["layers"] + [json.loads(manifest)["config"]]:
        response = requests.get(f"{registry.url}/v2/{REPO}/blobs/{layer['digest']}", timeout=TIMEOUT)
        assert response.status_code == 200, layer
        assert "sha256:" + hashlib.sha256(response.content).hexdigest() == layer["digest"]
    assert requests.head(f"{registry.url}/v2/{REPO}/blobs/{orphan}", timeout=TIMEOUT).status_code == 404
