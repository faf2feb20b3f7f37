"""Garbage collection against CNCF Distribution's own.

A Stowage filesystem root is Distribution's layout, so Debian's ``docker-registry
garbage-collect`` (Distribution 2.8) can collect a copy of the same tree that ``stowage gc``
collects: both must delete the same blobs, except that with ``--delete-untagged``
Distribution deletes some of what only the child manifests of a multi-platform index hold
and Stowage keeps all of it, and still serves the index completely.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from harness import registry as regmod
from harness.layout import OciLayout, gzip_image, multi_arch_index, multi_layer_image
from harness.oci import Client, Image, describe, error_codes, make_image
from harness.tools import (
    assert_layout_images_identical,
    docker_ref,
    mounted_tmpfs,
    pull_image,
    push_image,
    run,
    skopeo_delete,
)


def stored_blobs(data_root: Path) -> set[str]:
    """The digests whose bytes a layout root (the folder holding ``v2/``) stores."""
    return {f"sha256:{p.parent.name}" for p in (data_root / "v2" / "blobs").glob("sha256/*/*/data")}


def distribution_collect(tree: Path, workdir: Path, delete_untagged: bool) -> Path:
    """``docker-registry garbage-collect`` over a copy of ``tree`` at ``workdir/root``."""
    data_root = workdir / "root" / "docker" / "registry"
    shutil.copytree(tree, data_root)
    config = workdir / "distribution.yml"
    config.write_text(
        "version: 0.1\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {json.dumps(str(workdir / 'root'))}\n"
        "  delete:\n    enabled: true\n"
    )
    flags = ["--delete-untagged"] if delete_untagged else []
    run(["docker-registry", "garbage-collect", *flags, str(config)])
    return data_root


def stowage_gc(data_root: Path, workdir: Path, *flags: str, grace_secs: int = 0) -> str:
    """``stowage gc`` over the filesystem root ``data_root``; what it printed."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "stowage.toml"
    config.write_text(
        f"[blob_store.fs]\nroot_dir = {json.dumps(str(data_root))}\n"
        f"[gc]\ngrace_period_secs = {grace_secs}\n"
    )
    return run([regmod.server_binary(), "gc", "--config", str(config), *flags]).stdout.decode()


def stowage_collect(tree: Path, workdir: Path, delete_untagged: bool) -> tuple[Path, str]:
    """``stowage gc`` (no grace period) over a copy of ``tree``; the copy and its output."""
    data_root = workdir / "root"
    shutil.copytree(tree, data_root)
    flags = ["--delete-untagged"] if delete_untagged else []
    return data_root, stowage_gc(data_root, workdir, *flags)


def index_children(image) -> set[str]:
    """The digests only the child manifests of an index hold: themselves and what they name."""
    index = json.loads(image.layout.blob(image.digest))
    children: set[str] = set()
    for child in index["manifests"]:
        children |= set(image.layout.graph(child))
    return children


@pytest.mark.fs_only  # both collectors run over the same filesystem tree
@pytest.mark.stowage_only
def test_stowage_gc_deletes_what_distribution_deletes_and_keeps_index_children(registries, tmp_path):
    src = OciLayout(tmp_path / "src")
    storage = tmp_path / "storage"
    reg = registries.start(regmod.STOWAGE, storage)
    app = multi_layer_image(src, tag="app", big_layer_mib=1)
    small = gzip_image(src, tag="small")
    multi = multi_arch_index(src, tag="multi")
    doomed = gzip_image(src, tag="doomed")
    push_image(app, reg, "gc/app", "v1")
    push_image(app, reg, "gc/shared", "v1")  # the same layers in a second repository
    push_image(small, reg, "gc/app", "v2")
    push_image(small, reg, "gc/app", "v3")
    push_image(multi, reg, "gc/multi", "v1")
    push_image(doomed, reg, "gc/app", "old")
    skopeo_delete(docker_ref(reg, "gc/app", "old"))
    reg.stop()
    before = stored_blobs(storage)
    doomed_only = set(doomed.layout.graph(doomed.desc)) - set(small.layout.graph(small.desc))
    assert doomed_only <= before

    # Every manifest kept: exactly the deleted image's own blobs go, on both.
    dist_root = distribution_collect(storage, tmp_path / "dist", delete_untagged=False)
    ours, out = stowage_collect(storage, tmp_path / "ours", delete_untagged=False)
    by_distribution = before - stored_blobs(dist_root)
    by_stowage = before - stored_blobs(ours)
    assert by_distribution == doomed_only, "Distribution deleted something else"
    assert by_stowage == by_distribution, out
    assert f"deleted {len(doomed_only)} blobs" in out, out

    # Untagged manifests too: Distribution deletes the index's children, Stowage keeps them.
    dist_root = distribution_collect(storage, tmp_path / "dist-untagged", delete_untagged=True)
    ours, out = stowage_collect(storage, tmp_path / "ours-untagged", delete_untagged=True)
    by_distribution = before - stored_blobs(dist_root)
    by_stowage = before - stored_blobs(ours)
    children = index_children(multi)
    assert by_stowage == doomed_only, out
    assert by_stowage <= by_distribution
    # Distribution 2.8 removes some of what only the index's children hold; Stowage none.
    only_distribution = by_distribution - by_stowage
    assert only_distribution and only_distribution <= children, only_distribution

    # And the index still pulls completely from what Stowage left.
    reg = registries.start(regmod.STOWAGE, ours)
    for repo, tag, image in (("gc/multi", "v1", multi), ("gc/app", "v1", app), ("gc/shared", "v1", app),
                             ("gc/app", "v3", small)):
        pulled = pull_image(reg, repo, tag, tmp_path / "pulled" / repo / tag, all_images=image.is_index)
        assert_layout_images_identical(image.layout, image.tag, pulled, tag)


def temp_files(data_root: Path) -> list[Path]:
    """The temporary files of uncommitted writes below a filesystem root."""
    return [p for p in (data_root / ".stowage-tmp").glob("*/*") if p.is_file()]


@pytest.mark.fs_only  # the filesystem's temporary files; S3 multipart uploads: conformance/s3
@pytest.mark.stowage_only
def test_gc_reclaims_the_temporary_file_of_a_push_killed_midway(registries, tmp_path):
    storage = tmp_path / "storage"
    reg = registries.start(regmod.STOWAGE, storage)
    mib = 1 << 20
    stalled = threading.Event()

    def body():
        for i in range(64):
            yield b"\0" * mib
            if i == 15:
                stalled.set()
                time.sleep(60)  # the server dies first

    url = f"{reg.url}/v2/gc/crash/blobs/uploads/?digest=sha256:{'0' * 64}"
    pushing = threading.Thread(target=lambda: _ignore_errors(lambda: requests.post(url, data=body(), timeout=90)),
                               daemon=True)
    pushing.start()
    assert stalled.wait(30)
    deadline = time.monotonic() + 30
    while sum(p.stat().st_size for p in temp_files(storage)) < 8 * mib:
        assert time.monotonic() < deadline, "the push's temporary file never reached 8 MiB"
        time.sleep(0.05)
    reg.kill()
    left = temp_files(storage)
    assert len(left) == 1, left
    size = left[0].stat().st_size

    # Younger than the grace period: kept.
    out = stowage_gc(storage, tmp_path / "gc", grace_secs=3600)
    assert "deleted 0 temporary files (0 bytes)" in out, out
    assert temp_files(storage) == left
    # A dry run tells, and keeps it.
    out = stowage_gc(storage, tmp_path / "gc", "--dry-run")
    assert f"would delete 1 temporary files ({size} bytes)" in out, out
    assert temp_files(storage) == left
    # A real run removes it.
    out = stowage_gc(storage, tmp_path / "gc")
    assert f"deleted 1 temporary files ({size} bytes)" in out, out
    assert temp_files(storage) == []


def _ignore_errors(call) -> None:
    try:
        call()
    except requests.RequestException:
        pass


@pytest.mark.fs_only  # the command line over a filesystem root; the decisions: proofs/tests/gc.rs
@pytest.mark.stowage_only
def test_retention_untags_exactly_what_its_dry_run_named(registries, tmp_path):
    storage = tmp_path / "storage"
    reg = registries.start(regmod.STOWAGE, storage)
    src = OciLayout(tmp_path / "src")
    tags = ["v1", "release-1", "v2", "v3", "v4"]
    for tag in tags:
        push_image(gzip_image(src, tag=tag), reg, "gc/kept", tag)
        time.sleep(0.05)  # distinct push times
    reg.stop()
    workdir = tmp_path / "gc"
    retention = ('[repository."gc/"]\nretention = { keep_last = 2, keep_tags = ["^release-"] }\n')

    def collect(*flags: str) -> str:
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "stowage.toml"
        config.write_text(f"[blob_store.fs]\nroot_dir = {json.dumps(str(storage))}\n"
                          f"[gc]\ngrace_period_secs = 0\n{retention}")
        return run([regmod.server_binary(), "gc", "--config", str(config), *flags]).stdout.decode()

    dry = collect("--dry-run", "--delete-untagged")
    named = [line.removeprefix("would untag ") for line in dry.splitlines() if line.startswith("would untag ")]
    assert named == ["gc/kept:v1", "gc/kept:v2"], dry
    done = collect("--delete-untagged")
    untagged = [line.removeprefix("untagged ") for line in done.splitlines() if line.startswith("untagged ")]
    assert untagged == named, done
    assert sorted(p.name for p in (storage / "v2/repositories/gc/kept/_manifests/tags").iterdir()) == \
        ["release-1", "v3", "v4"]


def on_a_terminal(argv: list[str]) -> tuple[int, str]:
    """Runs `argv` with its stderr on a pseudo-terminal: its exit status and what it drew."""
    control, terminal = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)
    drawn = b""
    while True:
        try:
            chunk = os.read(control, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        drawn += chunk
    os.close(control)
    return proc.wait(timeout=120), drawn.decode(errors="replace")


@pytest.mark.fs_only  # the command line over a filesystem root
@pytest.mark.stowage_only
def test_gc_draws_its_progress_on_a_terminal_and_nowhere_else(registries, tmp_path):
    storage = tmp_path / "storage"
    reg = registries.start(regmod.STOWAGE, storage)
    src = OciLayout(tmp_path / "src")
    for tag in ("a", "b"):
        push_image(gzip_image(src, tag=tag), reg, f"gc/progress-{tag}", tag)
    reg.stop()
    config = tmp_path / "gc.toml"
    config.write_text(f"[blob_store.fs]\nroot_dir = {json.dumps(str(storage))}\n[gc]\ngrace_period_secs = 0\n")
    argv = [regmod.server_binary(), "gc", "--config", str(config), "--dry-run"]
    status, drawn = on_a_terminal(argv)
    assert status == 0, drawn
    for phase in ("marking", "sweeping"):
        assert re.search(phase + r" \[[=> ]+\] \d+/\d+", drawn), drawn
    piped = subprocess.run(argv, capture_output=True, timeout=120)
    assert piped.returncode == 0
    assert b"marking" not in piped.stderr and b"sweeping" not in piped.stderr, piped.stderr


@pytest.mark.fs_only  # a disk that fills: a tmpfs of 12 MiB (mounting it needs root, as the test command has)
@pytest.mark.stowage_only
def test_a_full_disk_refuses_pushes_with_the_cause_and_gc_frees_it_after_deletes(registries, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    with mounted_tmpfs(disk, "size=12m"):
        reg = registries.start(regmod.STOWAGE, disk / "storage")
        try:
            client = Client(reg.url)
            # Images of four layers each: deleting one frees fewer blocks than the collector has
            # digests to fence, so it must fence in the room that deleting freed.
            pushed: list[Image] = []
            while True:
                last = make_image(f"full/{len(pushed)}", *[256 << 10] * 4)
                refused = client.push_image("full/app", f"v{len(pushed)}", last)
                if refused.status_code != 201:
                    break
                pushed.append(last)
                assert len(pushed) < 20, "12 MiB held 20 images of 1 MiB"
            assert len(pushed) >= 6, len(pushed)
            assert refused.status_code == 503, describe(refused)
            assert error_codes(refused) == ["UNAVAILABLE"], describe(refused)
            assert "No space left on device" in refused.text, describe(refused)
            landed = [b for b in last.blobs if client.get_blob("full/app", b.digest, "HEAD").status_code == 200]

            # Whatever room the refused pushes left, a file of the test's own takes.
            with open(disk / "filler", "wb", buffering=0) as filler:
                with pytest.raises(OSError):
                    while True:
                        filler.write(b"\0" * 4096)
            assert shutil.disk_usage(disk).free < 4096

            for i, image in enumerate(pushed):
                client.assert_pulls("full/app", f"v{i}", image)
            deleted, kept = pushed[: len(pushed) // 2], pushed[len(pushed) // 2:]
            for image in deleted:
                client.delete_manifest("full/app", image.digest, expect=202)

            out = stowage_gc(disk / "storage", tmp_path / "gc")
            # Each deleted image's four layers, its config and its manifest, and what the refused
            # push stored before the disk filled.
            assert f"deleted {6 * len(deleted) + len(landed)} blobs" in out, out
            assert shutil.disk_usage(disk).free >= len(deleted) << 20

            again = make_image("full/again", 256 << 10)
            client.push_image("full/app", "again", again, expect=201)
            client.assert_pulls("full/app", "again", again)
            for image in kept:
                client.assert_pulls("full/app", f"v{pushed.index(image)}", image)
        finally:
            reg.stop()  # before the unmount, which a running server would keep busy
