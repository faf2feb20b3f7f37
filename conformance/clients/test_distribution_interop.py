"""Interop with CNCF Distribution's on-disk layout.

Distribution (Debian ``docker-registry``) writes a storage root R; Stowage,
started with ``root_dir = R/docker/registry``, must serve every image
byte-identically, and what Stowage then writes there must be served
byte-identically by Distribution again.  Always needs the Stowage binary.
"""

from __future__ import annotations

import pytest

from harness import registry as regmod
from harness.layout import OciLayout, gzip_image, multi_arch_index, multi_layer_image
from harness.oci import Client
from harness.process import StartError
from harness.tools import (
    assert_layout_images_identical,
    docker_ref,
    pull_image,
    push_image,
    skopeo_delete,
    skopeo_inspect_raw,
    skopeo_list_tags,
)


def assert_served_identically(reg, images, out_dir, label: str) -> None:
    """Pull every (repo, tag, image) back from ``reg`` with skopeo and compare
    with the source layout byte for byte."""
    for n, (repo, tag, img) in enumerate(images):
        raw = skopeo_inspect_raw(docker_ref(reg, repo, tag)).stdout
        assert raw == img.layout.blob(img.digest), f"{label}: {repo}:{tag} manifest differs"
        pulled = pull_image(reg, repo, tag, out_dir / f"{n}", all_images=img.is_index)
        assert_layout_images_identical(img.layout, img.tag, pulled, tag)


@pytest.mark.fs_only  # Stowage serves Distribution's filesystem root
def test_stowage_serves_distribution_storage_and_distribution_serves_stowage_writes(registries, tmp_path):
    missing = None
    try:
        regmod.server_binary()
    except StartError as e:
        missing = str(e)
    if missing:
        pytest.fail(f"interop test needs the Stowage server: {missing}", pytrace=False)
    shared_root = tmp_path / "shared-root"  # Distribution's rootdirectory
    stowage_root = shared_root / "docker" / "registry"
    src = OciLayout(tmp_path / "src")

    # 1. Distribution writes the storage.
    by_dist = [
        ("interop/multilayer", "v1", multi_layer_image(src, tag="multilayer", big_layer_mib=3)),
        ("interop/gzip", "v1", gzip_image(src, tag="gzip")),
        ("interop/multiarch", "v1", multi_arch_index(src, tag="multiarch")),
    ]
    deleted = gzip_image(src, tag="deleted")
    dist = registries.start(regmod.DISTRIBUTION, shared_root)
    for repo, tag, img in by_dist:
        push_image(img, dist, repo, tag)
    push_image(by_dist[1][2], dist, "interop/gzip", "also")
    by_dist.append(("interop/gzip", "also", by_dist[1][2]))
    push_image(deleted, dist, "interop/deleted", "gone")
    skopeo_delete(docker_ref(dist, "interop/deleted", "gone"))
    dist.stop()

    # 2. Stowage serves it byte for byte (and not the deleted manifest).
    stowage = registries.start(regmod.STOWAGE, stowage_root)
    assert_served_identically(stowage, by_dist, tmp_path / "pulled-stowage", "stowage reading distribution")
    assert sorted(skopeo_list_tags(stowage, "interop/gzip")) == ["also", "v1"]
    assert Client(stowage.url).get_manifest("interop/deleted", deleted.digest).status_code == 404
    assert Client(stowage.url).get_manifest("interop/deleted", "gone").status_code == 404

    # 3. Stowage writes: a new repository and a new tag in an existing one.
    src2 = OciLayout(tmp_path / "src2")
    by_stowage = [
        ("interop/from-stowage", "v1", multi_layer_image(src2, tag="from-stowage", big_layer_mib=2)),
        ("interop/gzip", "stowage", gzip_image(src2, tag="gzip-stowage")),
        ("interop/multiarch-stowage", "v1", multi_arch_index(src2, tag="multiarch-stowage")),
    ]
    for repo, tag, img in by_stowage:
        push_image(img, stowage, repo, tag)
    stowage.stop()

    # 4. Distribution serves everything: its own old data and Stowage's writes.
    dist2 = registries.start(regmod.DISTRIBUTION, shared_root)
    assert_served_identically(dist2, by_stowage, tmp_path / "pulled-dist-new", "distribution reading stowage")
    assert_served_identically(dist2, by_dist, tmp_path / "pulled-dist-old", "distribution after stowage")
    assert sorted(skopeo_list_tags(dist2, "interop/gzip")) == ["also", "stowage", "v1"]
