"""Upload sessions older than `[registry] upload_max_age_secs` are purged, on the filesystem
and on S3, and so are abandoned S3 multipart uploads below the registry's key prefix."""

from __future__ import annotations

import time

import pytest
import requests

from harness.oci import TIMEOUT, Client
from harness.process import wait_until
from harness.registry import fs_toml
from harness.services import s3_toml
from trees import BucketTree, FsTree

MAX_AGE_SECS = 3
REGISTRY_TOML = f"[registry]\nupload_max_age_secs = {MAX_AGE_SECS}\n"
PREFIX = "purged"


def start_session(url: str) -> str:
    """An upload with one chunk received: its URL."""
    client = Client(url)
    location = client.start_upload("house/app", expect=202).headers["Location"]
    response = client.patch_chunk(location, 0, b"x" * 100_000, expect=202)
    return url + response.headers["Location"]


def alive(session: str) -> bool:
    status = requests.get(session, timeout=TIMEOUT).status_code
    assert status in (204, 404), status
    return status == 204


def session_keys(tree, session: str) -> list[str]:
    upload_id = session.rsplit("/", 1)[-1].split("?")[0]
    return [k for k in tree.keys() if f"/_uploads/{upload_id}/" in k]


@pytest.fixture(params=["fs", "s3"])
def store(request, s3, tmp_path):
    """(stores TOML, the blob store as seen from outside)."""
    if request.param == "fs":
        return fs_toml("blob_store", tmp_path / "root"), FsTree(tmp_path / "root")
    bucket = s3.new_bucket()
    return s3_toml("blob_store", s3.endpoint, bucket, PREFIX), BucketTree(s3.client(), bucket, PREFIX)


def test_stale_upload_sessions_are_purged_and_young_ones_kept(store, registries):
    stores, tree = store
    registry = registries.start(stores, REGISTRY_TOML)
    old = start_session(registry.url)
    assert session_keys(tree, old)
    time.sleep(MAX_AGE_SECS - 0.5)
    young = start_session(registry.url)
    wait_until(lambda: not alive(old), "the purge of the stale session", timeout=15)
    # `old` went once older than the max age; `young` is 2.5 s younger, so not yet.
    assert alive(young)
    assert session_keys(tree, old) == []
    wait_until(lambda: not alive(young), "the purge of the younger session", timeout=15)
    assert session_keys(tree, young) == []


def test_abandoned_multipart_uploads_below_the_prefix_are_aborted(s3, registries):
    bucket = s3.new_bucket()
    client = s3.client()
    abandoned = {}
    for prefix in (PREFIX, "someone-else"):
        key = f"{prefix}/v2/repositories/house/app/_uploads/gone/parts/00000000000000000000"
        upload = client.create_multipart_upload(Bucket=bucket, Key=key)
        client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 1024
        )
        abandoned[prefix] = key
    # moto reports every multipart upload as initiated in 2010: stale at once.
    registries.start(s3_toml("blob_store", s3.endpoint, bucket, PREFIX), REGISTRY_TOML)

    def pending(prefix):
        return BucketTree(client, bucket, prefix).pending_multipart_uploads()

    wait_until(lambda: pending(PREFIX) == [], "the abort of the abandoned upload", timeout=15)
    assert pending("someone-else") == [abandoned["someone-else"]]
