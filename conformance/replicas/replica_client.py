"""A small OCI distribution client over `requests` that talks to several replicas of one
registry, checks every status it gets, and records every response so a test can assert that
none was a 5xx."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from oci_client import CONFIG_TYPE, LAYER_TYPE, MANIFEST_TYPE, Blob, sha256

TIMEOUT = 60
# For requests that may be refused before the server reads their body: the server then
# closes the connection without saying so (no `Connection: close`), and a client that sends
# its next request on it at that moment sees the connection aborted. Known; reported.
CLOSE_AFTER = {"Connection": "close"}


@dataclass(frozen=True)
class Manifest:
    """An image manifest and the blobs it names, as pushed (bytes are what we compare)."""

    body: bytes
    blobs: tuple[Blob, ...]

    @staticmethod
    def image(config: Blob, layers: list[Blob], note: str) -> "Manifest":
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": config.descriptor(CONFIG_TYPE),
                "layers": [layer.descriptor(LAYER_TYPE) for layer in layers],
                "annotations": {"note": note},
            },
            separators=(",", ":"),
        ).encode()
        return Manifest(body, (config, *layers))

    @property
    def digest(self) -> str:
        return sha256(self.body)


class UnexpectedStatus(AssertionError):
    pass


@dataclass
class ResponseLog:
    """Every response any client got, shared between threads."""

    requests: int = 0
    server_errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, response: requests.Response) -> None:
        with self._lock:
            self.requests += 1
            if response.status_code >= 500:
                self.server_errors.append(describe(response))


def describe(response: requests.Response) -> str:
    request = response.request
    return f"{request.method} {request.url} -> {response.status_code} {response.text[:300]!r}"


class Client:
    """One client (one thread) of a set of replicas; `replica` arguments index `urls`."""

    def __init__(self, urls: list[str], repo: str, log: ResponseLog):
        self.urls = urls
        self.repo = repo
        self.log = log
        self.session = requests.Session()

    def request(self, replica: int, method: str, path: str, expect=None, **kwargs):
        """`path` is absolute (`/v2/...`); a status other than `expect` (an int or a tuple)
        raises with the request and response described."""
        response = self.session.request(
            method, self.urls[replica] + path, timeout=TIMEOUT, **kwargs
        )
        self.log.record(response)
        allowed = (expect,) if isinstance(expect, int) else expect
        if allowed is not None and response.status_code not in allowed:
            raise UnexpectedStatus(f"replica {replica}: {describe(response)}; expected {expect}")
        return response

    # Blobs.

    def push_blob(self, replica: int, blob: Blob) -> None:
        """Monolithic upload: `POST ?digest=` with the whole blob."""
        self.request(
            replica,
            "POST",
            f"/v2/{self.repo}/blobs/uploads/?digest={blob.digest}",
            expect=201,
            data=blob.data,
            headers={"Content-Type": "application/octet-stream"},
        )

    def start_upload(self, replica: int) -> str:
        response = self.request(replica, "POST", f"/v2/{self.repo}/blobs/uploads/", expect=202)
        return response.headers["Location"]

    def patch_chunk(self, replica: int, location: str, offset: int, chunk: bytes) -> str:
        response = self.request(
            replica,
            "PATCH",
            location,
            expect=202,
            data=chunk,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
            },
        )
        assert response.headers["Range"] == f"0-{offset + len(chunk) - 1}", describe(response)
        return response.headers["Location"]

    def finish_upload(self, replica: int, location: str, blob: Blob) -> None:
        separator = "&" if "?" in location else "?"
        response = self.request(
            replica, "PUT", f"{location}{separator}digest={blob.digest}", expect=201
        )
        assert response.headers["Docker-Content-Digest"] == blob.digest, describe(response)

    def chunked_upload(self, replicas: list[int], blob: Blob) -> None:
        """POST on replicas[0], one PATCH per chunk on the next ones, PUT on the last; the
        blob is cut into len(replicas) - 2 chunks."""
        chunks = split(blob.data, len(replicas) - 2)
        location = self.start_upload(replicas[0])
        offset = 0
        for replica, chunk in zip(replicas[1:-1], chunks):
            location = self.patch_chunk(replica, location, offset, chunk)
            offset += len(chunk)
        self.finish_upload(replicas[-1], location, blob)

    def get_blob(self, replica: int, digest: str) -> requests.Response:
        return self.request(replica, "GET", f"/v2/{self.repo}/blobs/{digest}")

    # Manifests.

    def push_manifest(self, replica: int, reference: str, manifest: Manifest) -> None:
        response = self.request(
            replica,
            "PUT",
            f"/v2/{self.repo}/manifests/{reference}",
            expect=201,
            data=manifest.body,
            headers={"Content-Type": MANIFEST_TYPE},
        )
        assert response.headers["Docker-Content-Digest"] == manifest.digest, describe(response)

    def get_manifest(self, replica: int, reference: str) -> requests.Response:
        return self.request(
            replica,
            "GET",
            f"/v2/{self.repo}/manifests/{reference}",
            expect=(200, 404),
            headers={"Accept": MANIFEST_TYPE},
        )

    def delete_manifest(self, replica: int, digest: str) -> None:
        self.request(replica, "DELETE", f"/v2/{self.repo}/manifests/{digest}", expect=202)


def split(data: bytes, parts: int) -> list[bytes]:
    """`data` in `parts` pieces of nearly equal size (non-empty if it is long enough)."""
    bounds = [len(data) * i // parts for i in range(parts + 1)]
    return [data[start:end] for start, end in zip(bounds, bounds[1:])]


def served_digest(response: requests.Response) -> str | None:
    """The digest a manifest GET served (checked against its bytes), or None for a 404."""
    if response.status_code == 404:
        return None
    digest = sha256(response.content)
    assert response.headers["Docker-Content-Digest"] == digest, describe(response)
    return digest


class TricklingPatch:
    """A PATCH sent by hand over a socket, its body held back: the server takes the upload's
    lock, then waits for the rest of the bytes."""

    def __init__(self, url: str, location: str, chunk: bytes, first: int = 1024):
        address = urlsplit(url)
        self.chunk = chunk
        self.sent = first
        self.socket = socket.create_connection((address.hostname, address.port), timeout=TIMEOUT)
        head = (
            f"PATCH {location} HTTP/1.1\r\nHost: {address.netloc}\r\n"
            "Content-Type: application/octet-stream\r\n"
            f"Content-Length: {len(chunk)}\r\nContent-Range: 0-{len(chunk) - 1}\r\n\r\n"
        )
        self.socket.sendall(head.encode() + chunk[:first])

    def send(self, n: int) -> None:
        self.socket.sendall(self.chunk[self.sent : self.sent + n])
        self.sent += n

    def finish(self) -> int:
        """Sends the rest of the body; returns the response's status."""
        self.send(len(self.chunk) - self.sent)
        status_line = self.socket.makefile("rb").readline()
        self.close()
        return int(status_line.split()[1])

    def close(self) -> None:
        self.socket.close()
