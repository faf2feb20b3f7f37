"""The one OCI distribution client of the live suites, over `requests`: blobs (monolithic and
chunked uploads), manifests, tags, referrers, the catalog and the token endpoint, with
Basic or Bearer credentials. It talks to one registry or to several replicas of one (`at`
is the replica's index); it checks what it reads (a served manifest's
Docker-Content-Digest against its bytes, an upload's Range after each PATCH), and
`expect` turns any other status into a failure that shows the request and response."""

from __future__ import annotations

import hashlib
import json
import random
import threading
from dataclasses import dataclass, field

import requests

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
MANIFEST_TYPES = (
    MANIFEST_TYPE,
    INDEX_TYPE,
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
ACCEPT_MANIFESTS = ", ".join(MANIFEST_TYPES)

TIMEOUT = 120
# For requests that may be refused before the server reads their body: the server then
# closes the connection without saying so (no `Connection: close`), and a client that sends
# its next request on it at that moment sees the connection aborted. Known; reported.
CLOSE_AFTER = {"Connection": "close"}


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Blob:
    data: bytes

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)

    def descriptor(self, media_type: str) -> dict:
        return {"mediaType": media_type, "digest": self.digest, "size": len(self.data)}


def random_blob(seed: str, size: int) -> Blob:
    return Blob(random.Random(seed).randbytes(size))


@dataclass(frozen=True)
class Image:
    """An image manifest and the blobs it names, as pushed (bytes are what we compare);
    `note`, if any, is an annotation that tells images of the same blobs apart."""

    config: Blob
    layers: tuple[Blob, ...] = ()
    note: str = ""

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (self.config, *self.layers)

    @property
    def manifest(self) -> bytes:
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": self.config.descriptor(CONFIG_TYPE),
            "layers": [layer.descriptor(LAYER_TYPE) for layer in self.layers],
        }
        if self.note:
            manifest["annotations"] = {"note": self.note}
        return json.dumps(manifest, separators=(",", ":")).encode()

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)


def make_image(seed: str, *layer_sizes: int) -> Image:
    """An image of random layers of these sizes, the same for the same seed."""
    layers = tuple(random_blob(f"{seed}/{i}", size) for i, size in enumerate(layer_sizes))
    return Image(Blob(json.dumps({"seed": seed}).encode()), layers)


def describe(response: requests.Response) -> str:
    request = response.request
    return f"{request.method} {request.url} -> {response.status_code} {response.text[:300]!r}"


class UnexpectedStatus(AssertionError):
    def __init__(self, response: requests.Response, expected):
        self.response = response
        super().__init__(f"{describe(response)}; expected {expected}")


def expect(response: requests.Response, *statuses: int) -> requests.Response:
    """`response`, if its status is one of `statuses`; raises UnexpectedStatus otherwise."""
    if response.status_code not in statuses:
        raise UnexpectedStatus(response, statuses)
    return response


def error_codes(response: requests.Response) -> list[str]:
    """The OCI error codes of a failed response; raises unless the body is a clear OCI error
    (JSON `errors`, each with a code and a message)."""
    errors = response.json()["errors"]
    assert errors and all(e["code"] and e["message"] for e in errors), response.text
    return [e["code"] for e in errors]


def error_code(response: requests.Response) -> str | None:
    """The first OCI error code of a response, or None if it has no OCI error body."""
    try:
        return response.json()["errors"][0]["code"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def checked(response: requests.Response, expect) -> requests.Response:
    """`response`, if `expect` (a status, a tuple of them, or None for any) allows it."""
    allowed = (expect,) if isinstance(expect, int) else expect
    if allowed is not None and response.status_code not in allowed:
        raise UnexpectedStatus(response, expect)
    return response


@dataclass
class ResponseLog:
    """Every response the clients sharing it got, kept across threads, so a test can assert
    that none was a 5xx."""

    requests: int = 0
    server_errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, response: requests.Response) -> None:
        with self._lock:
            self.requests += 1
            if response.status_code >= 500:
                self.server_errors.append(describe(response))


class Client:
    """One client (one session, one thread) of a registry at `urls` (one URL, or those of
    several replicas of one registry), with Basic credentials, a bearer token, or none."""

    def __init__(self, urls: str | list[str], basic: tuple[str, str] | None = None,
                 token: str | None = None, verify=True, log: ResponseLog | None = None):
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.log = log
        self.session = requests.Session()
        self.session.verify = verify
        if basic:
            self.session.auth = basic
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, expect=None, at: int = 0,
                **kwargs) -> requests.Response:
        """`path` is absolute (`/v2/...`) or a whole URL (a Location may be either); a status
        other than `expect` (an int or a tuple), if given, raises UnexpectedStatus."""
        url = path if path.startswith("http") else self.urls[at] + path
        kwargs.setdefault("timeout", TIMEOUT)
        response = self.session.request(method, url, **kwargs)
        if self.log is not None:
            self.log.record(response)
        return checked(response, expect)

    # Blobs.

    def push_blob(self, repo: str, blob: Blob, digest: str | None = None, expect=None,
                  at: int = 0, **kwargs) -> requests.Response:
        """Monolithic upload, `POST ?digest=` with the whole blob; `digest` overrides the
        true one."""
        headers = {"Content-Type": "application/octet-stream", **kwargs.pop("headers", {})}
        return self.request("POST", f"/v2/{repo}/blobs/uploads/?digest={digest or blob.digest}",
                            expect, at, data=blob.data, headers=headers, **kwargs)

    def start_upload(self, repo: str, expect=None, at: int = 0) -> requests.Response:
        return self.request("POST", f"/v2/{repo}/blobs/uploads/", expect, at)

    def patch_chunk(self, location: str, offset: int, chunk: bytes, expect=None,
                    at: int = 0) -> requests.Response:
        """One PATCH of `chunk` at `offset`; once accepted, the upload's Range must end with
        it."""
        response = self.request(
            "PATCH", location, expect, at, data=chunk,
            headers={"Content-Type": "application/octet-stream",
                     "Content-Range": f"{offset}-{offset + len(chunk) - 1}"},
        )
        if response.status_code == 202:
            assert response.headers["Range"] == f"0-{offset + len(chunk) - 1}", describe(response)
        return response

    def finish_upload(self, location: str, digest: str, expect=None, at: int = 0,
                      **kwargs) -> requests.Response:
        """The closing PUT (with any last bytes in `data`); a created blob must be served
        under `digest`."""
        separator = "&" if "?" in location else "?"
        if "data" in kwargs:
            kwargs["headers"] = {"Content-Type": "application/octet-stream",
                                 **kwargs.get("headers", {})}
        response = self.request("PUT", f"{location}{separator}digest={digest}", expect, at,
                                **kwargs)
        if response.status_code == 201:
            assert response.headers["Docker-Content-Digest"] == digest, describe(response)
        return response

    def push_chunked(self, repo: str, blob: Blob, chunk_size: int | None = None,
                     at: list[int] | None = None, digest: str | None = None,
                     expect=None) -> requests.Response:
        """POST, one PATCH per chunk and the closing PUT, each sent to the next replica of
        `at` in turn (default: every replica). Without `chunk_size`, the blob is cut so that
        each replica of `at` gets one request. Returns the first response that failed, or
        the PUT's."""
        turns = list(at if at is not None else range(len(self.urls)))
        if chunk_size is None:
            chunk_size = -(-len(blob.data) // max(len(turns) - 2, 1))
        turn = iter(range(1 << 30))

        def replica() -> int:
            return turns[next(turn) % len(turns)]

        response = self.start_upload(repo, at=replica())
        if response.status_code != 202:
            return checked(response, expect)
        location = response.headers["Location"]
        for offset in range(0, len(blob.data), chunk_size):
            chunk = blob.data[offset:offset + chunk_size]
            response = self.patch_chunk(location, offset, chunk, at=replica())
            if response.status_code != 202:
                return checked(response, expect)
            location = response.headers["Location"]
        return self.finish_upload(location, digest or blob.digest, expect, replica())

    def get_blob(self, repo: str, digest: str, method: str = "GET", expect=None,
                 at: int = 0, **kwargs) -> requests.Response:
        return self.request(method, f"/v2/{repo}/blobs/{digest}", expect, at, **kwargs)

    # Manifests and tags.

    def push_manifest(self, repo: str, reference: str, body: bytes,
                      media_type: str = MANIFEST_TYPE, expect=None, at: int = 0,
                      **kwargs) -> requests.Response:
        """A created manifest must be stored under the digest of `body`."""
        headers = {"Content-Type": media_type, **kwargs.pop("headers", {})}
        response = self.request("PUT", f"/v2/{repo}/manifests/{reference}", expect, at,
                                data=body, headers=headers, **kwargs)
        if response.status_code == 201:
            assert response.headers["Docker-Content-Digest"] == sha256_digest(body), \
                describe(response)
        return response

    def get_manifest(self, repo: str, reference: str, method: str = "GET", expect=None,
                     at: int = 0, accept: str = ACCEPT_MANIFESTS) -> requests.Response:
        """A manifest served with a body must carry that body's Docker-Content-Digest."""
        response = self.request(method, f"/v2/{repo}/manifests/{reference}", expect, at,
                                headers={"Accept": accept})
        if response.status_code == 200 and method == "GET":
            assert response.headers["Docker-Content-Digest"] == sha256_digest(
                response.content), describe(response)
        return response

    def delete_manifest(self, repo: str, digest: str, expect=None,
                        at: int = 0) -> requests.Response:
        return self.request("DELETE", f"/v2/{repo}/manifests/{digest}", expect, at)

    def tags(self, repo: str, at: int = 0) -> list[str]:
        return self.request("GET", f"/v2/{repo}/tags/list", 200, at).json()["tags"]

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None,
                  at: int = 0) -> requests.Response:
        """The referrers listing of `digest`, filtered by `artifact_type` if given."""
        params = {"artifactType": artifact_type} if artifact_type else None
        return self.request("GET", f"/v2/{repo}/referrers/{digest}", at=at, params=params)

    def catalog(self, at: int = 0) -> list[str]:
        return self.request("GET", "/v2/_catalog", 200, at).json()["repositories"]

    def token(self, scopes: list[str], service: str = "stowage") -> requests.Response:
        return self.request("GET", "/token",
                            params=[("service", service)] + [("scope", s) for s in scopes])

    # Images.

    def push_image(self, repo: str, tag: str, image: Image, chunk_size: int | None = None,
                   expect=None, at: int = 0) -> requests.Response:
        """The blobs (chunked when `chunk_size` is given), then the manifest under `tag`;
        returns the first response that failed, or the manifest PUT's."""
        for blob in image.blobs:
            if chunk_size:
                response = self.push_chunked(repo, blob, chunk_size, at=[at])
            else:
                response = self.push_blob(repo, blob, at=at)
            if response.status_code != 201:
                return checked(response, expect)
        return self.push_manifest(repo, tag, image.manifest, expect=expect, at=at)

    def pull_image(self, repo: str, tag: str, at: int = 0) -> tuple[bytes, dict[str, bytes]]:
        """The manifest under `tag` and every blob it names, each checked against its
        digest."""
        manifest = self.get_manifest(repo, tag, expect=200, at=at).content
        parsed = json.loads(manifest)
        blobs = {}
        for descriptor in [parsed["config"], *parsed["layers"]]:
            data = self.get_blob(repo, descriptor["digest"], expect=200, at=at).content
            assert sha256_digest(data) == descriptor["digest"]
            blobs[descriptor["digest"]] = data
        return manifest, blobs

    def assert_pulls(self, repo: str, tag: str, image: Image, at: int = 0) -> None:
        """The registry serves `image` under `tag`, byte for byte."""
        manifest, blobs = self.pull_image(repo, tag, at)
        assert manifest == image.manifest
        assert blobs == {blob.digest: blob.data for blob in image.blobs}
