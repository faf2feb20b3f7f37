"""The benchmark's end-to-end row: `skopeo copy` of a many-layer image from an OCI layout on
disk into a registry, and from the registry into a fresh OCI layout.

Layers are gzip streams of stored (level 0) blocks around a tar of random bytes: skopeo
compresses layers it finds uncompressed before pushing them to a registry, which would make
its own gzip the figure; a stored gzip stream it takes as compressed and sends as it is.
"""

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import client

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
TAG = "bench"


def _put_blob(layout: Path, data: bytes) -> dict:
    """`data` into the layout's blobs/sha256; its descriptor's digest and size."""
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _layer(payload: bytes) -> tuple[bytes, str]:
    """A gzip (stored blocks) of a tar holding `payload` as one file, and the tar's digest
    (the layer's diff id)."""
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("payload")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    tar_bytes = tar.getvalue()
    return gzip.compress(tar_bytes, compresslevel=0, mtime=0), "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def build_layout(layout: Path, layers: int, layer_size: int) -> int:
    """An OCI image layout at `layout` (tag `TAG`) of `layers` fresh random layers of
    `layer_size` bytes each; the bytes of its blobs."""
    shutil.rmtree(layout, ignore_errors=True)
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    descriptors, diff_ids = [], []
    for _ in range(layers):
        blob, diff_id = _layer(os.urandom(layer_size))
        descriptors.append({"mediaType": OCI_LAYER_GZIP, **_put_blob(layout, blob)})
        diff_ids.append(diff_id)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, **_put_blob(layout, config)},
                           "layers": descriptors}).encode()
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, **_put_blob(layout, manifest),
         "annotations": {"org.opencontainers.image.ref.name": TAG}}]}
    (layout / "index.json").write_text(json.dumps(index))
    return sum(d["size"] for d in descriptors) + len(config) + len(manifest)


def _skopeo(*args: str) -> None:
    argv = ["skopeo", "--insecure-policy", "copy", "--quiet", *args]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    if run.returncode != 0:
        raise client.HttpError(f"{' '.join(argv)}: exit {run.returncode}: {run.stderr.strip()[-800:]}")


def copy_in(layout: Path, registry_url: str, reference: str) -> None:
    """The layout's image into `registry_url` (plain HTTP) as `reference` (repo:tag)."""
    host = registry_url.removeprefix("http://")
    _skopeo("--dest-tls-verify=false", f"oci:{layout}:{TAG}", f"docker://{host}/{reference}")


def copy_out(registry_url: str, reference: str, layout: Path) -> None:
    """`reference` from `registry_url` into a new OCI layout at `layout`."""
    host = registry_url.removeprefix("http://")
    shutil.rmtree(layout, ignore_errors=True)
    _skopeo("--src-tls-verify=false", f"docker://{host}/{reference}", f"oci:{layout}:{TAG}")
