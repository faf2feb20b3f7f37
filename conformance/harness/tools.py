"""Run real registry clients and compare what comes back, byte for byte."""

from __future__ import annotations

import json
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

from harness.layout import BuiltImage, OciLayout
from harness.oci import MANIFEST_TYPES, Client
from harness.registry import Registry


class CommandFailed(AssertionError):
    pass


def run(argv: list[str], timeout: float = 180, check: bool = True,
        input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run a command; on failure raise an AssertionError showing its output."""
    try:
        cp = subprocess.run(argv, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                            capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise CommandFailed(f"timed out after {timeout}s: {' '.join(argv)}\n"
                            f"stderr: {_text(e.stderr)}") from None
    if check and cp.returncode != 0:
        raise CommandFailed(
            f"exit {cp.returncode}: {' '.join(argv)}\n"
            f"--- stdout ---\n{_text(cp.stdout)[-4000:]}\n--- stderr ---\n{_text(cp.stderr)[-4000:]}"
        )
    return cp


def _text(b) -> str:
    if b is None:
        return ""
    return b.decode(errors="replace") if isinstance(b, bytes) else str(b)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"`{name}` is not installed; run conformance/install-deps.sh"
    return path


# --------------------------------------------------------------------------
# skopeo

def docker_ref(reg: Registry, repo: str, ref: str) -> str:
    sep = "@" if ref.startswith("sha256:") else ":"
    return f"docker://{reg.host}/{repo}{sep}{ref}"


def skopeo(*args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
    require_tool("skopeo")
    return run(["skopeo", "--insecure-policy", *args], timeout=timeout, check=check)


def skopeo_copy(src: str, dst: str, *extra: str, all_images: bool = False,
                preserve_digests: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    """``skopeo copy`` with TLS off for registry ends; by default refuses to
    change any digest (``--preserve-digests``)."""
    args = ["copy", "--retry-times", "0"]
    if src.startswith("docker://"):
        args.append("--src-tls-verify=false")
    if dst.startswith("docker://"):
        args.append("--dest-tls-verify=false")
    if all_images:
        args.append("--all")
    if preserve_digests:
        args.append("--preserve-digests")
    return skopeo(*args, *extra, src, dst, check=check)


def skopeo_inspect_raw(ref: str, check: bool = True) -> subprocess.CompletedProcess:
    return skopeo("inspect", "--raw", "--tls-verify=false", ref, check=check)


def skopeo_delete(ref: str) -> None:
    skopeo("delete", "--tls-verify=false", ref)


def skopeo_list_tags(reg: Registry, repo: str) -> list[str]:
    out = skopeo("list-tags", "--tls-verify=false", f"docker://{reg.host}/{repo}").stdout
    return json.loads(out)["Tags"]


def push_image(img: BuiltImage, reg: Registry, repo: str, tag: str | None = None) -> str:
    """skopeo copy an OCI-layout image (all platforms of an index) to the
    registry; return the docker:// reference."""
    dst = docker_ref(reg, repo, tag or img.tag)
    skopeo_copy(img.ref, dst, all_images=img.is_index)
    return dst


def pull_image(reg: Registry, repo: str, tag: str, out_dir: Path, all_images: bool = True) -> OciLayout:
    """skopeo copy from the registry into an OCI layout at ``out_dir``."""
    Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
    skopeo_copy(docker_ref(reg, repo, tag), f"oci:{out_dir}:{tag}", all_images=all_images)
    return OciLayout(out_dir)


def assert_layout_images_identical(src: OciLayout, src_tag: str, dst: OciLayout, dst_tag: str) -> None:
    """The image behind ``dst_tag`` is byte-identical to the one behind
    ``src_tag``: same top digest, and every manifest/config/layer reachable
    from it is present with identical bytes."""
    a, b = src.resolve(src_tag), dst.resolve(dst_tag)
    assert b["digest"] == a["digest"], (
        f"top-level digest changed: pushed {a['digest']}, pulled {b['digest']}")
    assert b["mediaType"] == a["mediaType"], (a["mediaType"], b["mediaType"])
    assert b["size"] == a["size"], (a["size"], b["size"])
    graph = src.graph(a)
    assert dst.graph(b) == graph, "pulled image references a different set of blobs"
    for digest in graph:
        assert dst.has_blob(digest), f"{digest} missing from pulled layout"
        assert dst.blob(digest) == src.blob(digest), f"{digest} differs byte-wise"


def assert_registry_serves_image(reg: Registry, repo: str, layout: OciLayout, desc: dict) -> None:
    """Over plain HTTP, every manifest of the image is served by digest with
    identical bytes and media type, and every blob with identical bytes."""
    client = Client(reg.url)
    for digest, media_type in layout.graph(desc).items():
        expected = layout.blob(digest)
        if media_type in MANIFEST_TYPES:
            r = client.get_manifest(repo, digest)
            assert r.status_code == 200, f"GET manifest {digest}: {r.status_code} {r.text[:300]}"
            assert r.headers.get("Content-Type", "").split(";")[0] == media_type
        else:
            r = client.get_blob(repo, digest)
            assert r.status_code == 200, f"GET blob {digest}: {r.status_code} {r.text[:300]}"
        assert r.content == expected, f"{digest} served with different bytes"
        dcd = r.headers.get("Docker-Content-Digest")
        assert dcd in (None, digest), f"Docker-Content-Digest {dcd} != {digest}"


def roundtrip_with_skopeo(img: BuiltImage, reg: Registry, repo: str, out_dir: Path) -> OciLayout:
    """Push ``img`` with skopeo, check ``inspect --raw`` returns the pushed
    top-level manifest, pull it back into ``out_dir`` and compare everything
    byte for byte.  Returns the pulled layout."""
    ref = push_image(img, reg, repo)
    raw = skopeo_inspect_raw(ref).stdout
    assert raw == img.layout.blob(img.digest), "skopeo inspect --raw differs from pushed manifest"
    pulled = pull_image(reg, repo, img.tag, out_dir, all_images=img.is_index)
    assert_layout_images_identical(img.layout, img.tag, pulled, img.tag)
    assert_registry_serves_image(reg, repo, img.layout, img.desc)
    return pulled


# --------------------------------------------------------------------------
# podman / buildah with a private storage root

class ContainerTool:
    """podman or buildah confined to its own storage (vfs driver, rootful)."""

    def __init__(self, binary: str, root: Path, runroot: Path):
        self.binary = require_tool(binary)
        self.name = binary
        self.root, self.runroot = Path(root), Path(runroot)
        self.root.mkdir(parents=True, exist_ok=True)
        self.runroot.mkdir(parents=True, exist_ok=True)

    def global_flags(self) -> list[str]:
        flags = ["--root", str(self.root), "--runroot", str(self.runroot), "--storage-driver", "vfs"]
        if self.name == "podman":
            # runc: crun refuses to run containers on a hybrid cgroup v1/v2 layout.
            flags += ["--events-backend", "file", "--cgroup-manager", "cgroupfs", "--runtime", "runc"]
        return flags

    def __call__(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
        return run([self.binary, *self.global_flags(), *args], timeout=timeout, check=check)

    def out(self, *args: str, **kw) -> str:
        return self(*args, **kw).stdout.decode().strip()


@contextmanager
def mounted_tmpfs(folder: Path, options: str):
    """A tmpfs mounted on `folder` with `options` (`size=12m`, `ro,size=1m`) for the block's
    duration: a disk that fills or refuses writes. Mounting needs root, as the test command
    has."""
    run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)])
    try:
        yield folder
    finally:
        run(["umount", str(folder)])
