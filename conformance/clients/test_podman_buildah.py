"""podman and buildah (rootful, private vfs storage) pushing to and pulling
from the registry under test.

podman re-compresses layers it pushes from its own storage, so digests of
layer blobs differ from the source layout; what must hold is that the image
id (config digest) and every layer's uncompressed content (diff_id) survive,
and that pulling back yields exactly the manifest digest that push reported.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os

from harness.layout import gzip_image, multi_arch_index, multi_layer_image, tar_members
from harness.oci import MANIFEST_TYPE, Client, sha256_digest
from harness.tools import pull_image


def assert_registry_image_matches(registry, repo, ref, manifest_digest, config_bytes, layers_files):
    """The manifest at ``ref`` has digest ``manifest_digest``, carries exactly
    ``config_bytes`` as config, and each layer blob hashes to its digest,
    decompresses to its config diff_id and contains the expected files."""
    r = Client(registry.url).get_manifest(repo, ref)
    assert r.status_code == 200, f"GET manifest {ref}: {r.status_code}"
    assert sha256_digest(r.content) == manifest_digest, "manifest digest differs from the one push reported"
    manifest = json.loads(r.content)

    cfg = Client(registry.url).get_blob(repo, manifest["config"]["digest"])
    assert cfg.status_code == 200
    assert cfg.content == config_bytes, "config blob changed"
    diff_ids = json.loads(config_bytes)["rootfs"]["diff_ids"]
    assert len(manifest["layers"]) == len(diff_ids) == len(layers_files)

    for desc, diff_id, files in zip(manifest["layers"], diff_ids, layers_files):
        blob = Client(registry.url).get_blob(repo, desc["digest"])
        assert blob.status_code == 200
        assert sha256_digest(blob.content) == desc["digest"], "blob bytes don't match digest"
        assert len(blob.content) == desc["size"]
        raw = blob.content
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        assert sha256_digest(raw) == diff_id, "uncompressed layer differs from diff_id"
        assert tar_members(raw) == files, "layer file contents differ"


def test_podman_push_rmi_pull_keeps_image_id_and_digest(registry, repo, layout, podman):
    img = multi_layer_image(layout, big_layer_mib=2)
    manifest = json.loads(layout.blob(img.digest))
    config_digest = manifest["config"]["digest"]
    config_bytes = layout.blob(config_digest)
    layer_files = [tar_members(layout.blob(l["digest"])) for l in manifest["layers"]]

    image_id = podman.out("pull", "-q", img.ref).splitlines()[-1]
    assert "sha256:" + image_id == config_digest, "podman image id is not the config digest"

    target = f"{registry.host}/{repo}:pushed"
    digestfile = layout.path.parent / "podman.digest"
    podman("push", "--tls-verify=false", "--digestfile", str(digestfile), image_id, f"docker://{target}")
    pushed_digest = digestfile.read_text().strip()
    assert pushed_digest.startswith("sha256:")
    assert_registry_image_matches(registry, repo, "pushed", pushed_digest, config_bytes, layer_files)

    podman("rmi", "-f", image_id)
    assert podman("image", "exists", image_id, check=False).returncode != 0, "rmi did not remove the image"

    podman("pull", "-q", "--tls-verify=false", target)
    got_id, got_digest = podman.out("inspect", "--format", "{{.Id}} {{.Digest}}", target).split()
    assert got_id == image_id, "image id changed after push/pull"
    assert got_digest == pushed_digest, "pulled manifest digest differs from pushed"


def test_podman_push_by_digest_and_second_tag(registry, repo, layout, podman):
    img = gzip_image(layout)
    image_id = podman.out("pull", "-q", img.ref).splitlines()[-1]
    digestfile = layout.path.parent / "podman.digest"
    podman("push", "--tls-verify=false", "--digestfile", str(digestfile), image_id,
           f"docker://{registry.host}/{repo}:first")
    digest = digestfile.read_text().strip()
    podman("push", "--tls-verify=false", image_id, f"docker://{registry.host}/{repo}:second")

    client = Client(registry.url)
    first, second = client.get_manifest(repo, "first"), client.get_manifest(repo, "second")
    assert first.status_code == second.status_code == 200
    assert first.content == second.content, "same image pushed twice gave different manifests"
    assert sha256_digest(first.content) == digest

    podman("rmi", "-f", image_id)
    podman("pull", "-q", "--tls-verify=false", f"{registry.host}/{repo}@{digest}")
    got_id = podman.out("inspect", "--format", "{{.Id}}", f"{registry.host}/{repo}@{digest}")
    assert got_id == image_id


def test_podman_manifest_push_all_multi_arch(registry, repo, layout, podman, tmp_path):
    """podman manifest list with two platform images, pushed with --all."""
    img = multi_arch_index(layout)
    index = json.loads(layout.blob(img.digest))
    podman("manifest", "create", "stowage-list")
    for child in index["manifests"]:
        # The oci: transport here cannot address by digest; tag each platform.
        plat_tag = "plat-" + child["platform"]["architecture"]
        layout.tag(plat_tag, child)
        podman("manifest", "add", "stowage-list", f"oci:{layout.path}:{plat_tag}")
    digestfile = tmp_path / "list.digest"
    podman("manifest", "push", "--all", "--tls-verify=false", "--digestfile", str(digestfile),
           "stowage-list", f"docker://{registry.host}/{repo}:list")

    r = Client(registry.url).get_manifest(repo, "list")
    assert r.status_code == 200
    assert sha256_digest(r.content) == digestfile.read_text().strip()
    pushed = json.loads(r.content)
    arches = sorted(m["platform"]["architecture"] for m in pushed["manifests"])
    assert arches == sorted(c["platform"]["architecture"] for c in index["manifests"])
    # Each platform image is complete in the registry, with its original config.
    original_configs = {json.loads(layout.blob(c["digest"]))["config"]["digest"] for c in index["manifests"]}
    pushed_configs = set()
    for m in pushed["manifests"]:
        child = Client(registry.url).get_manifest(repo, m["digest"])
        assert child.status_code == 200 and sha256_digest(child.content) == m["digest"]
        pushed_configs.add(json.loads(child.content)["config"]["digest"])
        for d in [json.loads(child.content)["config"]] + json.loads(child.content)["layers"]:
            b = Client(registry.url).get_blob(repo, d["digest"])
            assert b.status_code == 200 and sha256_digest(b.content) == d["digest"]
    assert pushed_configs == original_configs
    # And skopeo pulls the whole list back consistently.
    pulled = pull_image(registry, repo, "list", tmp_path / "pulled")
    assert pulled.resolve("list")["digest"] == sha256_digest(r.content)


def test_buildah_push_scratch_image_roundtrip(registry, repo, buildah, tmp_path):
    payload = hashlib.sha256(repr(tmp_path).encode()).digest() * 4096 + os.urandom(300_000)
    src = tmp_path / "payload.bin"
    src.write_bytes(payload)

    ctr = buildah.out("from", "scratch")
    buildah("copy", ctr, str(src), "/payload.bin")
    buildah("config", "--label", "stowage.test=buildah", "--entrypoint", '["/payload.bin"]', ctr)
    image_id = buildah.out("commit", "-q", "--format", "oci", ctr, "localhost/stowage-buildah:test")

    digestfile = tmp_path / "buildah.digest"
    buildah("push", "--tls-verify=false", "--digestfile", str(digestfile), "localhost/stowage-buildah:test",
            f"docker://{registry.host}/{repo}:built")
    digest = digestfile.read_text().strip()

    r = Client(registry.url).get_manifest(repo, "built")
    assert r.status_code == 200
    assert r.headers.get("Content-Type", "").split(";")[0] == MANIFEST_TYPE
    assert sha256_digest(r.content) == digest
    manifest = json.loads(r.content)
    assert manifest["config"]["digest"] == "sha256:" + image_id

    pulled = pull_image(registry, repo, "built", tmp_path / "pulled")
    assert pulled.resolve("built")["digest"] == digest
    assert pulled.blob(digest) == r.content
    files = {}
    for layer in manifest["layers"]:
        files.update(tar_members(pulled.blob(layer["digest"])))
    assert files.get("payload.bin") == payload, "payload.bin not byte-identical after push/pull"
    config = json.loads(pulled.blob(manifest["config"]["digest"]))
    assert config["config"]["Labels"]["stowage.test"] == "buildah"
