//! Pull workflow: `/v2/`, blob and manifest GET/HEAD, ranges, and the 404s for unknown content.

use crate::case::{Case, Env};
use crate::ensure;
use crate::error::Failure;
use crate::fixtures::{
    ACCEPT_MANIFESTS, Blob, Image, OCI_LAYER, OCI_MANIFEST, blob_path, expect_content_digest,
    expect_content_length, get_manifest, head_manifest, manifest_path, push_blob, unknown_digest,
    verify_blob, verify_manifest,
};

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("pull/api-version", api_version),
        Case::new("pull/blob-head", blob_head),
        Case::new("pull/blob-get", blob_get),
        Case::new("pull/blob-head-unknown", blob_head_unknown),
        Case::new("pull/blob-get-unknown", blob_get_unknown),
        Case::new("pull/blob-get-range", blob_get_range),
        Case::new(
            "pull/blob-get-range-unsatisfiable",
            blob_get_range_unsatisfiable,
        ),
        Case::new("pull/manifest-get-by-tag", manifest_get_by_tag),
        Case::new("pull/manifest-get-by-digest", manifest_get_by_digest),
        Case::new("pull/manifest-head-by-tag", manifest_head_by_tag),
        Case::new("pull/manifest-head-by-digest", manifest_head_by_digest),
        Case::new("pull/manifest-get-unknown", manifest_get_unknown),
        Case::new("pull/manifest-head-unknown", manifest_head_unknown),
        Case::new("pull/unknown-repository", unknown_repository),
    ]
}

fn api_version(env: &Env) -> Result<(), Failure> {
    env.c.get("/v2/", &[])?.expect(200)?;
    Ok(())
}

fn pushed_blob(env: &Env, len: usize) -> Result<Blob, Failure> {
    let blob = Blob::random(OCI_LAYER, len);
    push_blob(env.c, &env.repo, &blob)?;
    Ok(blob)
}

fn blob_head(env: &Env) -> Result<(), Failure> {
    let blob = pushed_blob(env, 777)?;
    let r = env.c.head(&blob_path(&env.repo, &blob.digest), &[])?;
    r.expect(200)?;
    expect_content_digest(&r, &blob.digest, &blob.data)?;
    expect_content_length(&r, blob.data.len())?;
    ensure!(r.body.is_empty(), "{}: HEAD response has a body", r.what);
    Ok(())
}

fn blob_get(env: &Env) -> Result<(), Failure> {
    let blob = pushed_blob(env, 4096 + 17)?;
    verify_blob(env.c, &env.repo, &blob.digest, &blob.data)
}

fn blob_head_unknown(env: &Env) -> Result<(), Failure> {
    // Push something first so the repository exists and only the blob is unknown.
    pushed_blob(env, 32)?;
    env.c
        .head(&blob_path(&env.repo, &unknown_digest()), &[])?
        .expect(404)?;
    Ok(())
}

fn blob_get_unknown(env: &Env) -> Result<(), Failure> {
    pushed_blob(env, 32)?;
    env.c
        .get(&blob_path(&env.repo, &unknown_digest()), &[])?
        .expect_error(404, &["BLOB_UNKNOWN"])?;
    Ok(())
}

fn blob_get_range(env: &Env) -> Result<(), Failure> {
    let blob = pushed_blob(env, 1000)?;
    let r = env.c.get(
        &blob_path(&env.repo, &blob.digest),
        &[("Range", "bytes=100-249")],
    )?;
    r.expect(206)?;
    let content_range = r.require_header("content-range")?;
    ensure!(
        content_range == "bytes 100-249/1000",
        "{}: Content-Range {content_range:?}, expected \"bytes 100-249/1000\"",
        r.what
    );
    ensure!(
        r.body == blob.data[100..250],
        "{}: partial body ({} bytes) is not bytes 100-249 of the blob",
        r.what,
        r.body.len()
    );
    Ok(())
}

fn blob_get_range_unsatisfiable(env: &Env) -> Result<(), Failure> {
    let blob = pushed_blob(env, 100)?;
    env.c
        .get(
            &blob_path(&env.repo, &blob.digest),
            &[("Range", "bytes=500-600")],
        )?
        .expect(416)?;
    Ok(())
}

fn pushed_image(env: &Env, tag: &str) -> Result<Image, Failure> {
    let image = Image::oci(2);
    image.push(env.c, &env.repo, tag)?;
    Ok(image)
}

fn manifest_get_by_tag(env: &Env) -> Result<(), Failure> {
    let image = pushed_image(env, "latest")?;
    verify_manifest(env.c, &env.repo, "latest", &image.manifest)
}

fn manifest_get_by_digest(env: &Env) -> Result<(), Failure> {
    let image = pushed_image(env, "v1")?;
    verify_manifest(env.c, &env.repo, &image.manifest.digest, &image.manifest)
}

fn check_manifest_head(env: &Env, reference: &str, image: &Image) -> Result<(), Failure> {
    let r = head_manifest(env.c, &env.repo, reference)?;
    r.expect(200)?;
    expect_content_digest(&r, &image.manifest.digest, &image.manifest.bytes)?;
    expect_content_length(&r, image.manifest.bytes.len())?;
    // Content-Type on HEAD is not a MUST, but if sent it must not contradict GET.
    if let Some(ct) = r.content_type() {
        ensure!(
            ct == OCI_MANIFEST,
            "{}: Content-Type {ct}, expected {OCI_MANIFEST}",
            r.what
        );
    }
    Ok(())
}

fn manifest_head_by_tag(env: &Env) -> Result<(), Failure> {
    let image = pushed_image(env, "v1.0")?;
    check_manifest_head(env, "v1.0", &image)
}

fn manifest_head_by_digest(env: &Env) -> Result<(), Failure> {
    let image = pushed_image(env, "v1.0")?;
    check_manifest_head(env, &image.manifest.digest, &image)
}

fn manifest_get_unknown(env: &Env) -> Result<(), Failure> {
    pushed_image(env, "present")?;
    get_manifest(env.c, &env.repo, "absent")?.expect_error(404, &["MANIFEST_UNKNOWN"])?;
    get_manifest(env.c, &env.repo, &unknown_digest())?.expect_error(404, &["MANIFEST_UNKNOWN"])?;
    Ok(())
}

fn manifest_head_unknown(env: &Env) -> Result<(), Failure> {
    pushed_image(env, "present")?;
    head_manifest(env.c, &env.repo, "absent")?.expect(404)?;
    head_manifest(env.c, &env.repo, &unknown_digest())?.expect(404)?;
    Ok(())
}

fn unknown_repository(env: &Env) -> Result<(), Failure> {
    // Nothing was ever pushed to this repository.
    let repo = env.sub("never-pushed");
    env.c
        .get(
            &manifest_path(&repo, "latest"),
            &[("Accept", ACCEPT_MANIFESTS)],
        )?
        .expect_error(404, &["NAME_UNKNOWN", "MANIFEST_UNKNOWN"])?;
    env.c
        .get(&blob_path(&repo, &unknown_digest()), &[])?
        .expect_error(404, &["NAME_UNKNOWN", "BLOB_UNKNOWN"])?;
    Ok(())
}
