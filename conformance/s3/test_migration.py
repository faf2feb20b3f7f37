"""Migration between the filesystem and S3: the layout is the same on both, so a tree copied
object by object (as `aws s3 sync` would) serves the same images; and `stowage migrate`,
which verifies every blob as it copies and resumes after an interruption without copying
anything twice."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from dataclasses import dataclass

from faultproxy import Faults
from harness.oci import Client, make_image
from harness.process import wait_until
from harness.registry import fs_toml
from harness.services import s3_toml
from trees import BLOB, BucketTree, FsTree, copy_tree, layout_problems

MiB = 1024 * 1024
WRITES = ("PutObject", "CreateMultipartUpload")


def push_images(url: str, count: int = 2) -> dict[tuple[str, str], object]:
    """`count` images over two repositories, one blob of each pushed in chunks."""
    images = {}
    for i in range(count):
        image = make_image(f"migrate-{i}", 3 * MiB + i, 4096)
        repo, tag = f"migrate/app{i % 2}", f"v{i}"
        Client(url).push_image(repo, tag, image, chunk_size=MiB if i % 2 else None, expect=201)
        images[(repo, tag)] = image
    return images


def assert_serves(url: str, images: dict) -> None:
    assert Client(url).catalog() == sorted({repo for repo, _ in images})
    for (repo, tag), image in images.items():
        Client(url).assert_pulls(repo, tag, image)


def test_a_filesystem_tree_copied_into_a_bucket_serves_the_same_images(s3, registries, tmp_path):
    root = tmp_path / "fs-root"
    on_fs = registries.start(fs_toml("blob_store", root))
    images = push_images(on_fs.url)
    bucket = s3.new_bucket()
    assert copy_tree(FsTree(root), BucketTree(s3.client(), bucket)) > 0
    on_s3 = registries.start(s3_toml("blob_store", s3.endpoint, bucket))
    assert_serves(on_s3.url, images)


def test_a_bucket_copied_into_a_filesystem_tree_serves_the_same_images(s3, registries, tmp_path):
    bucket = s3.new_bucket()
    on_s3 = registries.start(s3_toml("blob_store", s3.endpoint, bucket))
    images = push_images(on_s3.url)
    root = tmp_path / "fs-root"
    assert copy_tree(BucketTree(s3.client(), bucket), FsTree(root)) > 0
    on_fs = registries.start(fs_toml("blob_store", root))
    assert_serves(on_fs.url, images)


@dataclass
class Summary:
    copied: int
    skipped: int
    verified: int


SUMMARY = re.compile(
    r"copied (\d+) objects \(\d+ bytes\), skipped (\d+) already present, verified (\d+) blob"
)


class Migrations:
    """`stowage migrate` between configuration files written into `workdir`."""

    def __init__(self, binary: str, workdir):
        self.binary = binary
        self.workdir = workdir

    def config(self, name: str, stores_toml: str):
        path = self.workdir / f"{name}.toml"
        path.write_text(stores_toml)
        return path

    def argv(self, source, destination) -> list[str]:
        return [self.binary, "migrate", "--from", str(source), "--to", str(destination)]

    def run(self, source, destination) -> Summary:
        done = subprocess.run(
            self.argv(source, destination), capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        match = SUMMARY.search(done.stdout)
        assert match, done.stdout
        return Summary(*map(int, match.groups()))


def test_stowage_migrate_moves_fs_to_s3_and_back_into_split_stores(
    s3, proxy, registries, stowage_bin, tmp_path
):
    migrations = Migrations(stowage_bin, tmp_path)
    root = tmp_path / "fs-root"
    on_fs = registries.start(fs_toml("blob_store", root))
    images = push_images(on_fs.url)
    bucket = s3.new_bucket()
    fs_config = migrations.config("fs", fs_toml("blob_store", root))
    s3_config = migrations.config("s3", s3_toml("blob_store", proxy.endpoint, bucket, "moved"))

    first = migrations.run(fs_config, s3_config)
    blobs = len([k for k in FsTree(root).keys() if BLOB.fullmatch(k)])
    assert first.verified == blobs and first.skipped == 0
    assert_serves(registries.start(s3_toml("blob_store", s3.endpoint, bucket, "moved")).url, images)

    split = fs_toml("blob_store", tmp_path / "blobs") + fs_toml("metadata_store", tmp_path / "meta")
    migrations.run(s3_config, migrations.config("split", split))
    assert_serves(registries.start(split).url, images)
    blob_store, meta_store = FsTree(tmp_path / "blobs"), FsTree(tmp_path / "meta")
    assert all(BLOB.fullmatch(k) for k in blob_store.keys()), "links went to the blob store"
    assert layout_problems(blob_store) == []
    assert layout_problems(meta_store, blob_store) == []


def test_an_interrupted_migration_resumes_without_copying_twice(
    s3, proxy, registries, stowage_bin, tmp_path
):
    migrations = Migrations(stowage_bin, tmp_path)
    root = tmp_path / "fs-root"
    images = push_images(registries.start(fs_toml("blob_store", root)).url, count=6)
    bucket = s3.new_bucket()
    fs_config = migrations.config("fs", fs_toml("blob_store", root))
    s3_config = migrations.config("s3", s3_toml("blob_store", proxy.endpoint, bucket))
    destination = BucketTree(s3.client(), bucket)

    # Slow every write down, so the migration can be killed once it copies tags.
    proxy.set_faults(Faults(delay=1.0, delay_secs=0.2, actions=frozenset(WRITES)))
    interrupted = subprocess.Popen(
        migrations.argv(fs_config, s3_config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(
            lambda: any("/_manifests/tags/" in k for k in destination.keys()),
            "the first copied tag",
            timeout=60,
        )
    finally:
        interrupted.send_signal(signal.SIGKILL)
        interrupted.wait()
    # A write the killed process sent may still land, even after the proxy looked idle (a
    # request it had not read yet): it belongs to the first run, so wait until none does.
    present = None
    while present != (present := set(destination.keys())):
        proxy.wait_idle()
        time.sleep(0.5)
    proxy.clear()
    total = len(FsTree(root).keys())
    assert 0 < len(present) < total, "the migration was not interrupted halfway"
    # However it stopped, no tag came before the blobs it names.
    assert layout_problems(destination) == []

    resumed = migrations.run(fs_config, s3_config)
    assert resumed.skipped == len(present)
    assert resumed.copied == total - len(present)
    rewritten = {e.key for e in proxy.log() if e.action in WRITES} & present
    assert not rewritten, f"copied twice: {sorted(rewritten)}"
    assert layout_problems(destination) == []
    assert_serves(registries.start(s3_toml("blob_store", s3.endpoint, bucket)).url, images)
