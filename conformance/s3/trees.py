"""Stores as the tests see them from outside: the objects of a bucket below a key prefix, or
the files below a filesystem root; the layout's invariants over them; and the object-by-
object copy between the two that `aws s3 sync` would make."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

BLOB = re.compile(r"v2/blobs/(sha256|sha512)/([0-9a-f]{2})/([0-9a-f]+)/data")
LINK = re.compile(
    r"v2/repositories/(.+?)/_(layers|manifests/revisions)/(sha256|sha512)/([0-9a-f]+)/link"
)
TAG = re.compile(r"v2/repositories/(.+?)/_manifests/tags/([^/]+)/current/link")
# Where stowage's fs service keeps temporary files; not part of the layout.
FS_TEMP = ".stowage-tmp"


def blob_key(digest: str) -> str:
    alg, hex_ = digest.split(":")
    return f"v2/blobs/{alg}/{hex_[:2]}/{hex_}/data"


def revision_key(repo: str, digest: str) -> str:
    alg, hex_ = digest.split(":")
    return f"v2/repositories/{repo}/_manifests/revisions/{alg}/{hex_}/link"


class BucketTree:
    """The objects of one bucket below `prefix`, keyed relative to it."""

    def __init__(self, client, bucket: str, prefix: str = ""):
        self.client = client
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""

    def keys(self) -> list[str]:
        keys = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        for page in pages:
            keys += [o["Key"][len(self.prefix) :] for o in page.get("Contents", [])]
        return sorted(keys)

    def read(self, key: str) -> bytes | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except self.client.exceptions.NoSuchKey:
            return None
        return response["Body"].read()

    def write(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)

    def pending_multipart_uploads(self) -> list[str]:
        response = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix)
        return [u["Key"] for u in response.get("Uploads", [])]


class FsTree:
    """The files below a filesystem store's root, keyed by their relative path."""

    def __init__(self, root: Path):
        self.root = root

    def keys(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(
            str(p.relative_to(self.root))
            for p in self.root.rglob("*")
            if p.is_file() and FS_TEMP not in p.relative_to(self.root).parts
        )

    def read(self, key: str) -> bytes | None:
        path = self.root / key
        return path.read_bytes() if path.is_file() else None

    def write(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def copy_tree(source, destination) -> int:
    """Every object of `source` into `destination` under the same key; returns how many."""
    keys = source.keys()
    for key in keys:
        destination.write(key, source.read(key))
    return len(keys)


def layout_problems(tree, blob_tree=None) -> list[str]:
    """What in `tree` breaks the layout's promises: a blob whose bytes do not hash to its
    key, a link to a blob that is not there, a tag whose manifest or whose manifest's
    blobs are missing. With split stores, `tree` is the metadata store and `blob_tree` the
    blob store. Empty when the store is consistent."""
    keys = set(tree.keys())
    blob_keys = set(blob_tree.keys()) if blob_tree else keys
    problems = []
    for key in sorted(keys):
        if match := BLOB.fullmatch(key):
            alg, folder, hex_ = match.groups()
            data = tree.read(key)
            if folder != hex_[:2] or hashlib.new(alg, data).hexdigest() != hex_:
                problems.append(f"{key}: bytes do not hash to the key")
        elif match := LINK.fullmatch(key):
            _, kind, alg, hex_ = match.groups()
            if tree.read(key) != f"{alg}:{hex_}".encode():
                problems.append(f"{key}: names another digest")
            if blob_key(f"{alg}:{hex_}") not in (blob_keys if kind == "layers" else keys):
                problems.append(f"{key}: links to a missing blob")
        elif match := TAG.fullmatch(key):
            repo = match.group(1)
            problems += tag_problems(tree, keys, blob_keys, key, repo)
    return problems


def tag_problems(tree, keys: set[str], blob_keys: set[str], key: str, repo: str) -> list[str]:
    digest = tree.read(key).decode()
    if blob_key(digest) not in keys or revision_key(repo, digest) not in keys:
        return [f"{key}: tags {digest}, which the repository does not hold"]
    manifest = json.loads(tree.read(blob_key(digest)))
    named = [manifest["config"], *manifest.get("layers", [])] if "config" in manifest else []
    return [
        f"{key}: tags a manifest naming the missing blob {d['digest']}"
        for d in named
        if blob_key(d["digest"]) not in blob_keys
    ]
