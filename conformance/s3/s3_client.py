"""The registry's HTTP API as these tests use it: push blobs (monolithic, or chunked with
each request sent to the next of several registries), manifests and tags, and pull images
back byte for byte."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import requests
from oci_client import CONFIG_TYPE, LAYER_TYPE, MANIFEST_TYPE, Blob, sha256

TIMEOUT = 120


@dataclass(frozen=True)
class Image:
    config: Blob
    layers: tuple[Blob, ...]

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (self.config, *self.layers)

    @property
    def manifest(self) -> bytes:
        return json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": self.config.descriptor(CONFIG_TYPE),
                "layers": [layer.descriptor(LAYER_TYPE) for layer in self.layers],
            },
            separators=(",", ":"),
        ).encode()

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


def random_blob(seed: str, size: int) -> Blob:
    return Blob(random.Random(seed).randbytes(size))


def make_image(seed: str, *layer_sizes: int) -> Image:
    layers = tuple(random_blob(f"{seed}/{i}", size) for i, size in enumerate(layer_sizes))
    return Image(Blob(json.dumps({"seed": seed}).encode()), layers)


class PushFailed(Exception):
    def __init__(self, response: requests.Response):
        self.response = response
        request = response.request
        super().__init__(
            f"{request.method} {request.url} -> {response.status_code} {response.text[:300]!r}"
        )


def expect(response: requests.Response, *statuses: int) -> requests.Response:
    if response.status_code not in statuses:
        raise PushFailed(response)
    return response


def error_codes(response: requests.Response) -> list[str]:
    """The OCI error codes of a failed response; raises unless the body is a clear OCI error
    (JSON `errors`, each with a code and a message)."""
    errors = response.json()["errors"]
    assert errors and all(e["code"] and e["message"] for e in errors), response.text
    return [e["code"] for e in errors]


def push_monolithic(url: str, repo: str, blob: Blob, digest: str | None = None):
    """`POST ?digest=` with the whole blob; `digest` overrides the true one."""
    return requests.post(
        f"{url}/v2/{repo}/blobs/uploads/?digest={digest or blob.digest}",
        data=blob.data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=TIMEOUT,
    )


def push_chunked(urls: list[str], repo: str, blob: Blob, chunk_size: int, digest=None):
    """POST, one PATCH per chunk and the closing PUT, each sent to the next of `urls` in
    turn. Returns the first response that failed, or the PUT's."""
    turn = iter(range(1 << 30))

    def url() -> str:
        return urls[next(turn) % len(urls)]

    response = requests.post(f"{url()}/v2/{repo}/blobs/uploads/", timeout=TIMEOUT)
    if response.status_code != 202:
        return response
    location = response.headers["Location"]
    for offset in range(0, len(blob.data), chunk_size):
        chunk = blob.data[offset : offset + chunk_size]
        response = requests.patch(
            url() + location,
            data=chunk,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
            },
            timeout=TIMEOUT,
        )
        if response.status_code != 202:
            return response
        location = response.headers["Location"]
    separator = "&" if "?" in location else "?"
    return requests.put(
        f"{url()}{location}{separator}digest={digest or blob.digest}", timeout=TIMEOUT
    )


def push_manifest(url: str, repo: str, reference: str, image: Image):
    return requests.put(
        f"{url}/v2/{repo}/manifests/{reference}",
        data=image.manifest,
        headers={"Content-Type": MANIFEST_TYPE},
        timeout=TIMEOUT,
    )


def push_image(url: str, repo: str, tag: str, image: Image, chunk_size: int | None = None):
    """Blobs (chunked when `chunk_size` is given), then the manifest under `tag`; raises
    PushFailed at the first request that fails."""
    for blob in image.blobs:
        if chunk_size:
            expect(push_chunked([url], repo, blob, chunk_size), 201)
        else:
            expect(push_monolithic(url, repo, blob), 201)
    expect(push_manifest(url, repo, tag, image), 201)


def get_blob(url: str, repo: str, digest: str) -> requests.Response:
    return requests.get(f"{url}/v2/{repo}/blobs/{digest}", timeout=TIMEOUT)


def pull_image(url: str, repo: str, tag: str) -> tuple[bytes, dict[str, bytes]]:
    """The manifest under `tag` and every blob it names, each checked against its digest."""
    response = expect(
        requests.get(
            f"{url}/v2/{repo}/manifests/{tag}",
            headers={"Accept": MANIFEST_TYPE},
            timeout=TIMEOUT,
        ),
        200,
    )
    manifest = response.content
    assert response.headers["Docker-Content-Digest"] == sha256(manifest)
    parsed = json.loads(manifest)
    blobs = {}
    for descriptor in [parsed["config"], *parsed["layers"]]:
        data = expect(get_blob(url, repo, descriptor["digest"]), 200).content
        assert sha256(data) == descriptor["digest"]
        blobs[descriptor["digest"]] = data
    return manifest, blobs


def assert_pulls(url: str, repo: str, tag: str, image: Image) -> None:
    """The registry serves `image` under `tag`, byte for byte."""
    manifest, blobs = pull_image(url, repo, tag)
    assert manifest == image.manifest
    assert blobs == {blob.digest: blob.data for blob in image.blobs}


def catalog(url: str) -> list[str]:
    response = expect(requests.get(f"{url}/v2/_catalog", timeout=TIMEOUT), 200)
    return response.json()["repositories"]
