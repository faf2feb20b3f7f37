"""ORAS Python client (oras-py) against the registry under test: artifacts
round-trip byte for byte, and artifacts with a ``subject`` show up in the
OCI 1.1 referrers API."""

from __future__ import annotations

import json
import os

import oras.client
import oras.oci
import pytest

from harness.oci import (
    EMPTY_TYPE,
    INDEX_TYPE,
    MANIFEST_TYPE,
    Client,
    canonical_json,
    sha256_digest,
)

SBOM_TYPE = "application/vnd.stowage.test.sbom.v1+json"
SIGNATURE_TYPE = "application/vnd.stowage.test.signature.v1"
FILE_TYPE = "application/vnd.stowage.test.file.v1"


@pytest.fixture
def oras_client(registry):
    return oras.client.OrasClient(hostname=registry.host, insecure=True)


def write_random(path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def manifest_of(registry, repo: str, ref: str) -> tuple[bytes, str]:
    """Raw manifest bytes at ``ref`` and their digest (checked against the
    Docker-Content-Digest header when present)."""
    r = Client(registry.url).get_manifest(repo, ref)
    assert r.status_code == 200, f"GET manifest {ref}: {r.status_code} {r.text[:300]}"
    digest = sha256_digest(r.content)
    assert r.headers.get("Docker-Content-Digest", digest) == digest
    return r.content, digest


def pull_and_compare(client, target: str, outdir, expected: dict[str, bytes]) -> None:
    files = client.pull(target=target, outdir=str(outdir))
    got = {os.path.basename(f): open(f, "rb").read() for f in files}
    assert got.keys() == expected.keys()
    for name, data in expected.items():
        assert got[name] == data, f"{name} differs after oras push/pull"


@pytest.mark.parametrize("chunked", [False, True], ids=["monolithic", "chunked"])
def test_oras_push_pull_artifact_roundtrip(registry, repo, oras_client, tmp_path, chunked):
    src = tmp_path / "src"
    src.mkdir()
    expected = {
        "model.bin": write_random(src / "model.bin", 3 * 1024 * 1024 + 17),
        "notes.txt": write_random(src / "notes.txt", 100),
    }
    target = f"{registry.host}/{repo}:artifact"
    resp = oras_client.push(
        target=target,
        files=[f"{src / name}:{FILE_TYPE}" for name in expected],
        disable_path_validation=True,
        manifest_annotations={"org.opencontainers.image.description": "stowage oras test"},
        do_chunked=chunked,
        chunk_size=1024 * 1024,
        quiet=True,
    )
    assert resp.status_code == 201, resp.text

    raw, _ = manifest_of(registry, repo, "artifact")
    manifest = json.loads(raw)
    assert [l["mediaType"] for l in manifest["layers"]] == [FILE_TYPE, FILE_TYPE]
    assert [l["annotations"]["org.opencontainers.image.title"] for l in manifest["layers"]] == list(expected)
    for layer, data in zip(manifest["layers"], expected.values()):
        assert layer["digest"] == sha256_digest(data) and layer["size"] == len(data)

    pull_and_compare(oras_client, target, tmp_path / "out", expected)


@pytest.mark.needs_referrers
def test_oras_artifacts_with_subject_are_listed_by_referrers_api(registry, repo, oras_client, tmp_path):
    src = tmp_path / "src"
    src.mkdir()

    # 1. The subject: an ordinary artifact pushed with oras.
    subject_file = write_random(src / "app.bin", 200_000)
    oras_client.push(target=f"{registry.host}/{repo}:app", files=[f"{src / 'app.bin'}:{FILE_TYPE}"],
                     disable_path_validation=True, quiet=True)
    subject_raw, subject_digest = manifest_of(registry, repo, "app")
    subject = oras.oci.Subject(mediaType=MANIFEST_TYPE, digest=subject_digest, size=len(subject_raw))

    # 2. Referrer A: pushed by oras with `subject`; its artifact type is the
    #    config media type (no artifactType field).
    sbom = write_random(src / "sbom.json", 5000)
    oras_client.push(target=f"{registry.host}/{repo}:sbom", files=[f"{src / 'sbom.json'}:{FILE_TYPE}"],
                     manifest_config=f"{src / 'no-config'}:{SBOM_TYPE}", subject=subject,
                     disable_path_validation=True, quiet=True)
    sbom_raw, sbom_digest = manifest_of(registry, repo, "sbom")
    assert json.loads(sbom_raw)["subject"]["digest"] == subject_digest

    # 3. Referrer B: blobs pushed with oras, manifest with an explicit
    #    artifactType + empty config PUT by digest (untagged) with the harness's client.
    signature = write_random(src / "sig.bin", 512)
    container = oras_client.get_container(f"{registry.host}/{repo}")
    layer = oras.oci.NewLayer(str(src / "sig.bin"), media_type=SIGNATURE_TYPE)
    assert oras_client.upload_blob(str(src / "sig.bin"), container, layer).status_code in (200, 201)
    (src / "empty.json").write_bytes(b"{}")
    empty = {"mediaType": EMPTY_TYPE, "digest": sha256_digest(b"{}"), "size": 2}
    assert oras_client.upload_blob(str(src / "empty.json"), container, dict(empty)).status_code in (200, 201)
    sig_manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": SIGNATURE_TYPE,
        "config": empty,
        "layers": [{"mediaType": SIGNATURE_TYPE, "digest": layer["digest"], "size": layer["size"],
                    "annotations": {"org.opencontainers.image.title": "sig.bin"}}],
        "subject": {"mediaType": MANIFEST_TYPE, "digest": subject_digest, "size": len(subject_raw)},
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z", "stowage.test": "sig"},
    })
    sig_digest = sha256_digest(sig_manifest)
    r = Client(registry.url).push_manifest(repo, sig_digest, sig_manifest, MANIFEST_TYPE)
    assert r.status_code == 201, f"PUT referrer manifest: {r.status_code} {r.text[:300]}"
    assert r.headers.get("OCI-Subject") == subject_digest, "OCI-Subject header missing on PUT with subject"

    # 4. The referrers API lists both, with the right descriptors.
    r = Client(registry.url).referrers(repo, subject_digest)
    assert r.status_code == 200, f"GET referrers: {r.status_code} {r.text[:300]}"
    assert r.headers.get("Content-Type", "").split(";")[0] == INDEX_TYPE
    index = r.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == INDEX_TYPE
    by_digest = {m["digest"]: m for m in index["manifests"]}
    assert set(by_digest) == {sbom_digest, sig_digest}, f"referrers: {index}"
    assert by_digest[sbom_digest]["artifactType"] == SBOM_TYPE
    assert by_digest[sbom_digest]["size"] == len(sbom_raw)
    assert by_digest[sbom_digest]["mediaType"] == MANIFEST_TYPE
    assert by_digest[sig_digest]["artifactType"] == SIGNATURE_TYPE
    assert by_digest[sig_digest]["size"] == len(sig_manifest)
    assert by_digest[sig_digest]["annotations"]["stowage.test"] == "sig"

    # 5. Filtering by artifactType (if the registry applies it, it says so).
    r = Client(registry.url).referrers(repo, subject_digest, SIGNATURE_TYPE)
    assert r.status_code == 200
    listed = {m["digest"] for m in r.json()["manifests"]}
    if "artifactType" in r.headers.get("OCI-Filters-Applied", ""):
        assert listed == {sig_digest}
    else:
        assert listed == {sbom_digest, sig_digest}

    # 6. A digest nobody refers to has an empty (not missing) referrers list.
    r = Client(registry.url).referrers(repo, sbom_digest)
    assert r.status_code == 200 and r.json()["manifests"] == []

    # 7. The referrers pull back byte for byte with oras.
    pull_and_compare(oras_client, f"{registry.host}/{repo}@{sig_digest}", tmp_path / "sig-out",
                     {"sig.bin": signature})
    pull_and_compare(oras_client, f"{registry.host}/{repo}:sbom", tmp_path / "sbom-out", {"sbom.json": sbom})
    pull_and_compare(oras_client, f"{registry.host}/{repo}:app", tmp_path / "app-out", {"app.bin": subject_file})
