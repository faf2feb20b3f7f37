"""Issue 16's hardening, seen from a client: error codes that name what is wrong
(`TAG_INVALID` for a bad tag, 416 for a range that ends before it starts)."""

from __future__ import annotations

import hashlib
import os

import pytest
import requests

TIMEOUT = 30

pytestmark = pytest.mark.stowage_only


def push_blob(base_url: str, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = requests.post(f"{base_url}/v2/{repo}/blobs/uploads/", params={"digest": digest},
                      data=data, timeout=TIMEOUT,
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return digest


def test_a_bad_tag_in_a_manifest_put_is_tag_invalid(registry, repo):
    manifest = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}'
    headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    for tag in (".starts-with-dot", "t" * 129):
        r = requests.put(f"{registry.url}/v2/{repo}/manifests/{tag}", data=manifest,
                         headers=headers, timeout=TIMEOUT)
        assert r.status_code == 400, r.text
        assert r.json()["errors"][0]["code"] == "TAG_INVALID", r.text


def test_a_range_ending_before_it_starts_is_416_with_the_size(registry, repo):
    data = os.urandom(100_000)  # larger than what is cached whole
    digest = push_blob(registry.url, repo, data)
    url = f"{registry.url}/v2/{repo}/blobs/{digest}"
    r = requests.get(url, headers={"Range": "bytes=500-0"}, timeout=TIMEOUT)
    assert r.status_code == 416, (r.status_code, r.headers)
    assert r.headers["Content-Range"] == f"bytes */{len(data)}"
    r = requests.get(url, headers={"Range": "bytes=500-599"}, timeout=TIMEOUT)
    assert r.status_code == 206 and r.content == data[500:600]

