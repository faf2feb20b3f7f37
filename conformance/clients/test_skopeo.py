"""skopeo (containers/image) against the registry under test: OCI layout ->
registry -> OCI layout must be byte-identical."""

from __future__ import annotations

import json

from harness.layout import gzip_image, multi_arch_index, multi_layer_image, umoci_image
from harness.oci import Client
from harness.tools import (
    assert_layout_images_identical,
    docker_ref,
    pull_image,
    push_image,
    roundtrip_with_skopeo,
    skopeo_copy,
    skopeo_delete,
    skopeo_inspect_raw,
    skopeo_list_tags,
)


def test_skopeo_roundtrip_multi_layer_image_is_byte_identical(registry, repo, layout, tmp_path):
    img = multi_layer_image(layout)
    roundtrip_with_skopeo(img, registry, repo, tmp_path / "pulled")


def test_skopeo_roundtrip_gzip_layer_image_is_byte_identical(registry, repo, layout, tmp_path):
    img = gzip_image(layout)
    roundtrip_with_skopeo(img, registry, repo, tmp_path / "pulled")


def test_skopeo_roundtrip_umoci_built_image_is_byte_identical(registry, repo, tmp_path):
    img = umoci_image(tmp_path / "umoci-layout")
    assert len(json.loads(img.layout.blob(img.digest))["layers"]) == 2
    roundtrip_with_skopeo(img, registry, repo, tmp_path / "pulled")


def test_skopeo_roundtrip_multi_arch_index_with_all_is_byte_identical(registry, repo, layout, tmp_path):
    img = multi_arch_index(layout)
    pulled = roundtrip_with_skopeo(img, registry, repo, tmp_path / "pulled")
    # Every platform manifest is individually addressable and identical.
    index = layout.blob(img.digest)
    for child in json.loads(index)["manifests"]:
        raw = skopeo_inspect_raw(docker_ref(registry, repo, child["digest"])).stdout
        assert raw == layout.blob(child["digest"])
        assert pulled.blob(child["digest"]) == raw


def test_skopeo_push_same_image_under_several_tags_lists_them(registry, repo, layout):
    img = gzip_image(layout, tag="one")
    push_image(img, registry, repo, "one")
    push_image(img, registry, repo, "two")
    push_image(img, registry, repo, "three")
    assert sorted(skopeo_list_tags(registry, repo)) == ["one", "three", "two"]
    for tag in ("one", "two", "three"):
        assert skopeo_inspect_raw(docker_ref(registry, repo, tag)).stdout == layout.blob(img.digest)


def test_skopeo_copy_between_repositories_keeps_bytes(registry, repo, layout, tmp_path):
    """registry -> registry copy (skopeo tries a cross-repository blob mount)."""
    img = multi_layer_image(layout, big_layer_mib=2)
    src = push_image(img, registry, repo)
    other = repo + "-copy"
    skopeo_copy(src, docker_ref(registry, other, "copied"))
    pulled = pull_image(registry, other, "copied", tmp_path / "pulled")
    assert_layout_images_identical(layout, img.tag, pulled, "copied")


def test_skopeo_delete_then_pull_fails(registry, repo, layout, tmp_path):
    img = gzip_image(layout)
    ref = push_image(img, registry, repo)
    assert Client(registry.url).get_manifest(repo, img.digest).status_code == 200

    skopeo_delete(ref)

    assert skopeo_inspect_raw(ref, check=False).returncode != 0, "tag still resolves after delete"
    by_digest = docker_ref(registry, repo, img.digest)
    assert skopeo_inspect_raw(by_digest, check=False).returncode != 0, "manifest still served after delete"
    cp = skopeo_copy(ref, f"oci:{tmp_path / 'after-delete'}:x", check=False)
    assert cp.returncode != 0, "pull succeeded after delete"
    assert Client(registry.url).get_manifest(repo, img.digest).status_code == 404
    assert Client(registry.url).get_manifest(repo, img.tag).status_code == 404
