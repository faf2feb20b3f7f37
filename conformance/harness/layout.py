"""Build and read OCI image layouts locally (no network, fresh random layers).

``OciLayout`` writes an image-spec v1 layout: ``oci-layout``, ``index.json``
and ``blobs/sha256/<hex>``.  Test images are built from random files so each
run pushes layers the registry has never seen.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import platform
import secrets
import tarfile
from dataclasses import dataclass
from pathlib import Path

from harness.oci import (
    CONFIG_TYPE,
    INDEX_TYPE,
    LAYER_GZIP_TYPE,
    LAYER_TYPE,
    MANIFEST_TYPE,
    MANIFEST_TYPES,
    canonical_json,
    sha256_digest,
)

REF_NAME = "org.opencontainers.image.ref.name"


def host_arch() -> str:
    m = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(m, m)


# --------------------------------------------------------------------------
# layer content

def random_tar(files: dict[str, int] | None = None, n_files: int = 3,
               max_size: int = 64 * 1024) -> tuple[bytes, dict[str, bytes]]:
    """A tar of random files.  ``files`` maps path -> size; otherwise
    ``n_files`` random names of random size up to ``max_size``.
    Returns (tar bytes, {path: content})."""
    if files is None:
        files = {
            f"data/{secrets.token_hex(6)}.bin": secrets.randbelow(max_size) + 1
            for _ in range(n_files)
        }
    contents = {path: os.urandom(size) for path, size in files.items()}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(p).parent) for p in contents if str(Path(p).parent) != "."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = 1700000000
            tar.addfile(info)
        for path, data in contents.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1700000000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue(), contents


def tar_members(tar_bytes: bytes) -> dict[str, bytes]:
    """Regular files of a (possibly gzip-compressed) tar: path -> content."""
    if tar_bytes[:2] == b"\x1f\x8b":
        tar_bytes = gzip.decompress(tar_bytes)
    out = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        for m in tar.getmembers():
            if m.isfile():
                out[m.name.lstrip("./")] = tar.extractfile(m).read()
    return out


@dataclass
class Layer:
    data: bytes  # the blob as stored (compressed or not)
    media_type: str
    diff_id: str  # digest of the uncompressed tar
    files: dict[str, bytes]


def make_layer(gzip_it: bool = False, **tar_kwargs) -> Layer:
    tar, files = random_tar(**tar_kwargs)
    diff_id = sha256_digest(tar)
    if gzip_it:
        return Layer(gzip.compress(tar, mtime=0), LAYER_GZIP_TYPE, diff_id, files)
    return Layer(tar, LAYER_TYPE, diff_id, files)


# --------------------------------------------------------------------------
# layout writer / reader

class OciLayout:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.blobs = self.path / "blobs" / "sha256"
        if not (self.path / "index.json").exists():
            self.blobs.mkdir(parents=True, exist_ok=True)
            (self.path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
            self._write_index({"schemaVersion": 2, "manifests": []})

    # -- writing ----------------------------------------------------------
    def add_blob(self, data: bytes, media_type: str, **extra) -> dict:
        digest = sha256_digest(data)
        p = self.blobs / digest.split(":", 1)[1]
        if not p.exists():
            p.write_bytes(data)
        desc = {"mediaType": media_type, "digest": digest, "size": len(data)}
        desc.update(extra)
        return desc

    def add_image(self, layers: list[Layer], arch: str | None = None, os_name: str = "linux",
                  annotations: dict | None = None) -> dict:
        """Write config + layers + manifest; return the manifest descriptor
        (with a ``platform`` field, handy for indexes)."""
        arch = arch or host_arch()
        config = {
            "architecture": arch,
            "os": os_name,
            "config": {"Env": ["PATH=/usr/bin:/bin"], "Labels": {"stowage.test": secrets.token_hex(8)}},
            "rootfs": {"type": "layers", "diff_ids": [l.diff_id for l in layers]},
            "history": [{"created_by": f"stowage conformance layer {i}"} for i in range(len(layers))],
        }
        config_desc = self.add_blob(canonical_json(config), CONFIG_TYPE)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": config_desc,
            "layers": [self.add_blob(l.data, l.media_type) for l in layers],
        }
        if annotations:
            manifest["annotations"] = annotations
        return self.add_blob(canonical_json(manifest), MANIFEST_TYPE,
                             platform={"architecture": arch, "os": os_name})

    def add_index(self, manifests: list[dict]) -> dict:
        index = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": manifests}
        return self.add_blob(canonical_json(index), INDEX_TYPE)

    def tag(self, name: str, desc: dict) -> None:
        index = self.index()
        index["manifests"] = [m for m in index["manifests"]
                              if m.get("annotations", {}).get(REF_NAME) != name]
        entry = {k: v for k, v in desc.items() if k != "platform"}
        entry["annotations"] = {REF_NAME: name}
        index["manifests"].append(entry)
        self._write_index(index)

    def _write_index(self, index: dict) -> None:
        (self.path / "index.json").write_text(json.dumps(index, indent=1))

    # -- reading ----------------------------------------------------------
    def index(self) -> dict:
        return json.loads((self.path / "index.json").read_text())

    def resolve(self, tag: str) -> dict:
        for m in self.index()["manifests"]:
            if m.get("annotations", {}).get(REF_NAME) == tag:
                return m
        raise KeyError(f"tag {tag!r} not in {self.path}/index.json")

    def blob(self, digest: str) -> bytes:
        algo, hexd = digest.split(":", 1)
        data = (self.path / "blobs" / algo / hexd).read_bytes()
        assert sha256_digest(data) == digest, f"layout blob {digest} is corrupt"
        return data

    def has_blob(self, digest: str) -> bool:
        algo, hexd = digest.split(":", 1)
        return (self.path / "blobs" / algo / hexd).is_file()

    def graph(self, desc: dict) -> dict[str, str]:
        """All descriptors reachable from ``desc``: digest -> mediaType."""
        out = {desc["digest"]: desc["mediaType"]}
        if desc["mediaType"] in MANIFEST_TYPES:
            doc = json.loads(self.blob(desc["digest"]))
            children = list(doc.get("manifests", []))
            if "config" in doc:
                children.append(doc["config"])
            children += doc.get("layers", [])
            for child in children:
                out.update(self.graph(child))
        return out


# --------------------------------------------------------------------------
# ready-made test images

@dataclass
class BuiltImage:
    layout: OciLayout
    tag: str
    desc: dict  # top-level descriptor (manifest or index)
    is_index: bool = False

    @property
    def ref(self) -> str:
        return f"oci:{self.layout.path}:{self.tag}"

    @property
    def digest(self) -> str:
        return self.desc["digest"]


def multi_layer_image(layout: OciLayout, tag: str = "multilayer", big_layer_mib: int = 6) -> BuiltImage:
    """Three uncompressed tar layers + one gzip layer, one of them a few MiB."""
    layers = [
        make_layer(n_files=4),
        make_layer(files={f"big/{secrets.token_hex(4)}.bin": big_layer_mib * 1024 * 1024}),
        make_layer(n_files=2, max_size=1024),
        make_layer(gzip_it=True, n_files=3),
    ]
    desc = layout.add_image(layers, annotations={"org.opencontainers.image.title": tag})
    layout.tag(tag, desc)
    return BuiltImage(layout, tag, desc)


def gzip_image(layout: OciLayout, tag: str = "gzip") -> BuiltImage:
    """A single gzip-compressed layer."""
    desc = layout.add_image([make_layer(gzip_it=True, n_files=5)])
    layout.tag(tag, desc)
    return BuiltImage(layout, tag, desc)


def multi_arch_index(layout: OciLayout, tag: str = "multiarch",
                     arches: tuple[str, ...] = ("amd64", "arm64")) -> BuiltImage:
    """An image index with one manifest per platform; the platform images
    share a base layer (so the registry sees the same blob twice)."""
    base = make_layer(gzip_it=True, n_files=2)
    manifests = [layout.add_image([base, make_layer(gzip_it=True, n_files=2)], arch=a)
                 for a in arches]
    desc = layout.add_index(manifests)
    layout.tag(tag, desc)
    return BuiltImage(layout, tag, desc, is_index=True)


def umoci_image(path: Path, tag: str = "umoci") -> BuiltImage:
    """An image built by umoci (two inserted layers of random files plus a
    config change), so one test image comes from a real OCI tool."""
    import shutil
    import subprocess
    import tempfile

    umoci = shutil.which("umoci")
    assert umoci, "`umoci` is not installed; run conformance/install-deps.sh"
    path = Path(path)

    def run(*args: str) -> None:
        cp = subprocess.run([umoci, *args], capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
        assert cp.returncode == 0, f"umoci {' '.join(args)}: {cp.stderr.decode(errors='replace')}"

    if not (path / "index.json").exists():
        run("init", "--layout", str(path))
    image = f"{path}:{tag}"
    run("new", "--image", image)
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(2):
            src = Path(tmp) / f"layer{n}"
            src.mkdir()
            for _ in range(3):
                (src / f"{secrets.token_hex(4)}.bin").write_bytes(os.urandom(secrets.randbelow(200_000) + 1))
            run("insert", "--image", image, str(src), f"/opt/layer{n}")
    run("config", "--image", image, "--config.label", f"stowage.test={secrets.token_hex(4)}",
        "--config.entrypoint", "/opt/layer0")
    layout = OciLayout(path)
    return BuiltImage(layout, tag, layout.resolve(tag))
