//! Push workflow: every blob upload flavour (monolithic, single POST, chunked, streamed,
//! final chunk in PUT), upload status and cancel, mounts, digest errors, sha512, and manifest
//! pushes of every media type.

use serde_json::{Value, json};

use crate::case::{Case, Env, Needs};
use crate::client::{Body, Client};
use crate::error::{Failure, StepExt};
use crate::fixtures::{
    Algorithm, Blob, DOCKER_LIST, EMPTY_SHA256, Image, Manifest, OCI_INDEX, OCI_LAYER,
    OCI_MANIFEST, OCTET_STREAM, blob_path, digest, expect_content_digest, expect_content_length,
    expect_digest_header, fields, get_manifest, index, manifest_path, push_blob, push_manifest,
    put_manifest, random_bytes, random_hex, start_upload, start_upload_at, tags_path,
    unknown_digest, uploads_path, verify_blob, verify_blob_at, verify_manifest,
    verify_manifest_digest,
};
use crate::response::{Response, with_query};
use crate::{ensure, fail};

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("push/blob-post-put", blob_post_put),
        Case::new("push/blob-single-post", blob_single_post),
        Case::new("push/blob-chunked", blob_chunked),
        Case::new("push/blob-streamed", blob_streamed),
        Case::new(
            "push/blob-chunked-final-chunk-in-put",
            blob_final_chunk_in_put,
        ),
        Case::new("push/blob-chunk-out-of-order", blob_chunk_out_of_order),
        Case::new("push/upload-status", upload_status),
        Case::new("push/upload-cancel", upload_cancel),
        Case::new("push/blob-digest-mismatch", blob_digest_mismatch),
        Case::new("push/blob-digest-malformed", blob_digest_malformed),
        Case::new("push/blob-empty", blob_empty),
        Case::new("push/blob-mount", blob_mount),
        Case::new("push/blob-mount-unknown-blob", blob_mount_unknown),
        Case::new("push/blob-mount-without-from", blob_mount_without_from),
        Case::new("push/blob-sha512", blob_sha512).needs(Needs::Sha512),
        Case::new("push/blob-sha512-chunked", blob_sha512_chunked).needs(Needs::Sha512),
        Case::new("push/manifest-by-tag", manifest_by_tag),
        Case::new("push/manifest-by-digest", manifest_by_digest),
        Case::new("push/manifest-by-digest-with-tags", manifest_with_tag_query),
        Case::new("push/manifest-retag", manifest_retag),
        Case::new("push/manifest-no-layers", manifest_no_layers),
        Case::new("push/manifest-artifact", manifest_artifact),
        Case::new("push/manifest-oci-index", manifest_oci_index),
        Case::new("push/manifest-sparse-index", manifest_sparse_index),
        Case::new("push/manifest-docker-schema2", manifest_docker_schema2),
        Case::new("push/manifest-docker-list", manifest_docker_list),
        Case::new("push/manifest-subject-missing", manifest_subject_missing),
        Case::new(
            "push/manifest-oci-subject-header",
            manifest_oci_subject_header,
        )
        .needs(Needs::Referrers),
        Case::new("push/manifest-blob-unknown", manifest_blob_unknown),
        Case::new("push/manifest-invalid", manifest_invalid),
        Case::new("push/manifest-digest-mismatch", manifest_digest_mismatch),
        Case::new("push/manifest-large", manifest_large),
        Case::new("push/manifest-sha512", manifest_sha512).needs(Needs::Sha512),
        Case::new("push/name-invalid", name_invalid),
        Case::new("push/tag-invalid", tag_invalid),
    ]
}

// ---------------------------------------------------------------------------------------------
// Upload helpers.

/// Chunks are at least this big, so chunked cases exercise more than one PATCH.
const DEFAULT_CHUNK: usize = 1024;
/// Upper bound on honouring `OCI-Chunk-Min-Length`, so a silly value cannot exhaust memory.
const MAX_CHUNK: usize = 64 << 20;

/// Opens a session at `target` (an uploads URL, possibly with query) for a chunked upload.
/// Returns the Location and the chunk size to use, honouring `OCI-Chunk-Min-Length`.
fn open_chunked(c: &Client, target: &str) -> Result<(String, usize), Failure> {
    let r = c.post(target, &[], &[])?;
    r.expect(202)?;
    let location = r.require_header("location")?.to_string();
    let min = r
        .header("oci-chunk-min-length")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    Ok((location, min.clamp(DEFAULT_CHUNK, MAX_CHUNK)))
}

/// The `Range` header of an upload response must be `0-<end>`.
fn expect_range(r: &Response, end: usize) -> Result<(), Failure> {
    let range = r.require_header("range")?;
    let want = format!("0-{end}");
    ensure!(
        range == want,
        "{}: Range {range:?}, expected {want:?}",
        r.what
    );
    Ok(())
}

/// PATCHes `chunk` as bytes `start..` with a Content-Range; returns the next Location.
fn patch_chunk(c: &Client, location: &str, chunk: &[u8], start: usize) -> Result<String, Failure> {
    let r = patch_range(c, location, chunk, start)?;
    r.expect(202)?;
    expect_range(&r, start + chunk.len() - 1)?;
    Ok(r.require_header("location")?.to_string())
}

fn patch_range(
    c: &Client,
    location: &str,
    chunk: &[u8],
    start: usize,
) -> Result<Response, Failure> {
    let range = format!("{start}-{}", start + chunk.len() - 1);
    c.patch(
        location,
        &[OCTET_STREAM, ("Content-Range", range.as_str())],
        Body::Bytes(chunk),
    )
}

/// Closes a session whose data was all PATCHed; expects 201 with a Location.
fn close_upload(c: &Client, location: &str, digest: &str) -> Result<Response, Failure> {
    let r = c.put(&with_query(location, &[("digest", digest)]), &[], &[])?;
    r.expect(201)?;
    r.require_header("location")?;
    Ok(r)
}

/// Uploads `data` in PATCHed chunks of `chunk` bytes and closes the session.
fn upload_chunked(
    c: &Client,
    mut location: String,
    data: &[u8],
    chunk: usize,
    digest: &str,
) -> Result<(), Failure> {
    let mut offset = 0;
    for piece in data.chunks(chunk) {
        location = patch_chunk(c, &location, piece, offset)?;
        offset += piece.len();
    }
    close_upload(c, &location, digest)?;
    Ok(())
}

/// Data spanning two full chunks and a partial last one.
fn chunked_data(chunk: usize) -> Vec<u8> {
    random_bytes(chunk * 2 + chunk / 2 + 1)
}

// ---------------------------------------------------------------------------------------------
// Blob uploads.

fn blob_post_put(env: &Env) -> Result<(), Failure> {
    let blob = Blob::random(OCI_LAYER, 2048);
    let location = start_upload(env.c, &env.repo)?;
    let r = env.c.put(
        &with_query(&location, &[("digest", &blob.digest)]),
        &[OCTET_STREAM],
        &blob.data,
    )?;
    r.expect(201)?;
    // The Location must be a pullable blob URL.
    verify_blob_at(env.c, r.require_header("location")?, &blob.data)?;
    verify_blob(env.c, &env.repo, &blob.digest, &blob.data)
}

fn blob_single_post(env: &Env) -> Result<(), Failure> {
    let blob = Blob::random(OCI_LAYER, 1500);
    let r = env.c.post(
        &with_query(&uploads_path(&env.repo), &[("digest", &blob.digest)]),
        &[OCTET_STREAM],
        &blob.data,
    )?;
    // Registries without single-POST support answer 202 and the client PUTs instead.
    complete_after_post(env, &r, &blob)
}

/// After a `POST` that may store the blob by itself (single-POST upload, mount): either it
/// did (201), or it only opened an upload (202), which the client completes with a `PUT`.
fn complete_after_post(env: &Env, r: &Response, blob: &Blob) -> Result<(), Failure> {
    match r.status {
        201 => {
            verify_blob_at(env.c, r.require_header("location")?, &blob.data)?;
        }
        202 => put_whole_blob(env.c, r.require_header("location")?, blob)?,
        _ => {
            r.expect_any(&[201, 202])?;
        }
    }
    verify_blob(env.c, &env.repo, &blob.digest, &blob.data)
}

/// Completes the upload at `location` with a `PUT` of the whole blob.
fn put_whole_blob(c: &Client, location: &str, blob: &Blob) -> Result<(), Failure> {
    c.put(
        &with_query(location, &[("digest", &blob.digest)]),
        &[OCTET_STREAM],
        &blob.data,
    )?
    .expect(201)?;
    Ok(())
}

fn blob_chunked(env: &Env) -> Result<(), Failure> {
    let (location, chunk) = open_chunked(env.c, &uploads_path(&env.repo))?;
    let data = chunked_data(chunk);
    let d = digest(Algorithm::Sha256, &data);
    upload_chunked(env.c, location, &data, chunk, &d)?;
    verify_blob(env.c, &env.repo, &d, &data)
}

fn blob_streamed(env: &Env) -> Result<(), Failure> {
    let data = random_bytes(20_000);
    let d = digest(Algorithm::Sha256, &data);
    let location = start_upload(env.c, &env.repo)?;
    // No Content-Range and chunked transfer encoding: a client streaming data of unknown size.
    let r = env
        .c
        .patch(&location, &[OCTET_STREAM], Body::Streamed(&data))?;
    r.expect(202)?;
    expect_range(&r, data.len() - 1)?;
    close_upload(env.c, r.require_header("location")?, &d)?;
    verify_blob(env.c, &env.repo, &d, &data)
}

fn blob_final_chunk_in_put(env: &Env) -> Result<(), Failure> {
    let (location, chunk) = open_chunked(env.c, &uploads_path(&env.repo))?;
    let data = chunked_data(chunk);
    let d = digest(Algorithm::Sha256, &data);
    let location = patch_chunk(env.c, &location, &data[..chunk], 0)?;
    let range = format!("{chunk}-{}", data.len() - 1);
    let r = env.c.put(
        &with_query(&location, &[("digest", &d)]),
        &[OCTET_STREAM, ("Content-Range", range.as_str())],
        &data[chunk..],
    )?;
    r.expect(201)?;
    r.require_header("location")?;
    verify_blob(env.c, &env.repo, &d, &data)
}

fn blob_chunk_out_of_order(env: &Env) -> Result<(), Failure> {
    let (location, chunk) = open_chunked(env.c, &uploads_path(&env.repo))?;
    let data = chunked_data(chunk);
    let d = digest(Algorithm::Sha256, &data);
    let location = patch_chunk(env.c, &location, &data[..chunk], 0)?;

    // Skipping ahead leaves a gap.
    patch_range(env.c, &location, &data[2 * chunk..], 2 * chunk)
        .and_then(|r| r.expect(416).map(drop))
        .step("chunk leaving a gap")?;
    // Resending the first chunk overlaps what was already received.
    patch_range(env.c, &location, &data[..chunk], 0)
        .and_then(|r| r.expect(416).map(drop))
        .step("chunk overlapping received data")?;

    // After a 416 the client asks where the upload stands, and resumes from there.
    let r = env.c.get(&location, &[]).step("status after 416")?;
    r.expect(204).step("status after 416")?;
    expect_range(&r, chunk - 1).step("status after 416")?;
    let location = r.require_header("location").step("status after 416")?;
    let location = patch_chunk(env.c, location, &data[chunk..], chunk).step("resumed upload")?;
    close_upload(env.c, &location, &d).step("resumed upload")?;
    verify_blob(env.c, &env.repo, &d, &data)
}

fn upload_status(env: &Env) -> Result<(), Failure> {
    let (location, chunk) = open_chunked(env.c, &uploads_path(&env.repo))?;
    let r = env.c.get(&location, &[])?;
    r.expect(204)?;
    r.require_header("location")?;

    let data = random_bytes(chunk);
    let location = patch_chunk(env.c, &location, &data, 0)?;
    let r = env.c.get(&location, &[])?;
    r.expect(204)?;
    expect_range(&r, chunk - 1)?;
    r.require_header("location")?;
    // Release the session; failures here are not what this case tests.
    let _ = env.c.delete(&location);
    Ok(())
}

fn upload_cancel(env: &Env) -> Result<(), Failure> {
    let (location, chunk) = open_chunked(env.c, &uploads_path(&env.repo))?;
    let location = patch_chunk(env.c, &location, &random_bytes(chunk), 0)?;
    env.c.delete(&location)?.expect(204)?;
    env.c
        .get(&location, &[])?
        .expect_error(404, &["BLOB_UPLOAD_UNKNOWN"])?;
    Ok(())
}

fn blob_digest_mismatch(env: &Env) -> Result<(), Failure> {
    let data = random_bytes(300);
    let wrong = unknown_digest();
    let location = start_upload(env.c, &env.repo)?;
    env.c
        .put(
            &with_query(&location, &[("digest", &wrong)]),
            &[OCTET_STREAM],
            &data,
        )?
        .expect_error(400, &["DIGEST_INVALID"])?;
    // Nothing may have been stored under the claimed digest.
    env.c
        .head(&blob_path(&env.repo, &wrong), &[])?
        .expect(404)?;
    Ok(())
}

fn blob_digest_malformed(env: &Env) -> Result<(), Failure> {
    let data = random_bytes(300);
    let location = start_upload(env.c, &env.repo)?;
    env.c
        .put(
            &with_query(&location, &[("digest", "sha256:not-a-hex-digest")]),
            &[OCTET_STREAM],
            &data,
        )?
        .expect_error(400, &["DIGEST_INVALID", "BLOB_UPLOAD_INVALID"])?;
    Ok(())
}

fn blob_empty(env: &Env) -> Result<(), Failure> {
    let location = start_upload(env.c, &env.repo)?;
    env.c
        .put(
            &with_query(&location, &[("digest", EMPTY_SHA256)]),
            &[OCTET_STREAM],
            &[],
        )?
        .expect(201)?;
    let r = env.c.head(&blob_path(&env.repo, EMPTY_SHA256), &[])?;
    r.expect(200)?;
    expect_content_length(&r, 0)?;
    expect_content_digest(&r, EMPTY_SHA256, &[])?;
    verify_blob(env.c, &env.repo, EMPTY_SHA256, &[])
}

fn mount_url(repo: &str, digest: &str, from: Option<&str>) -> String {
    let mut params = vec![("mount", digest)];
    if let Some(from) = from {
        params.push(("from", from));
    }
    with_query(&uploads_path(repo), &params)
}

fn blob_mount(env: &Env) -> Result<(), Failure> {
    let source = env.sub("source");
    let blob = Blob::random(OCI_LAYER, 1234);
    push_blob(env.c, &source, &blob)?;

    let r = env
        .c
        .post(&mount_url(&env.repo, &blob.digest, Some(&source)), &[], &[])?;
    r.expect(201)?;
    expect_content_digest(&r, &blob.digest, &blob.data)?;
    verify_blob_at(env.c, r.require_header("location")?, &blob.data)?;
    verify_blob(env.c, &env.repo, &blob.digest, &blob.data)
}

fn blob_mount_unknown(env: &Env) -> Result<(), Failure> {
    let source = env.sub("source");
    push_blob(env.c, &source, &Blob::random(OCI_LAYER, 64))?;

    // Asking to mount a blob the source doesn't have must open an ordinary upload instead.
    let blob = Blob::random(OCI_LAYER, 999);
    let r = env
        .c
        .post(&mount_url(&env.repo, &blob.digest, Some(&source)), &[], &[])?;
    r.expect(202)?;
    put_whole_blob(env.c, r.require_header("location")?, &blob)?;
    verify_blob(env.c, &env.repo, &blob.digest, &blob.data)
}

fn blob_mount_without_from(env: &Env) -> Result<(), Failure> {
    let source = env.sub("source");
    let blob = Blob::random(OCI_LAYER, 555);
    push_blob(env.c, &source, &blob)?;

    // `from` is optional for the registry: it may mount anyway (201) or open an upload (202).
    let r = env
        .c
        .post(&mount_url(&env.repo, &blob.digest, None), &[], &[])?;
    complete_after_post(env, &r, &blob)
}

fn blob_sha512(env: &Env) -> Result<(), Failure> {
    let data = random_bytes(3000);
    let d = digest(Algorithm::Sha512, &data);
    let location = start_upload_at(
        env.c,
        &with_query(&uploads_path(&env.repo), &[("digest-algorithm", "sha512")]),
    )?;
    env.c
        .put(
            &with_query(&location, &[("digest", &d)]),
            &[OCTET_STREAM],
            &data,
        )?
        .expect(201)?;
    let r = env.c.head(&blob_path(&env.repo, &d), &[])?;
    r.expect(200)?;
    expect_content_digest(&r, &d, &data)?;
    expect_content_length(&r, data.len())?;
    verify_blob(env.c, &env.repo, &d, &data)
}

fn blob_sha512_chunked(env: &Env) -> Result<(), Failure> {
    let (location, chunk) = open_chunked(
        env.c,
        &with_query(&uploads_path(&env.repo), &[("digest-algorithm", "sha512")]),
    )?;
    let data = chunked_data(chunk);
    let d = digest(Algorithm::Sha512, &data);
    upload_chunked(env.c, location, &data, chunk, &d)?;
    verify_blob(env.c, &env.repo, &d, &data)
}

// ---------------------------------------------------------------------------------------------
// Manifests.

/// The response to a successful manifest PUT: Location must be pullable and the digest header
/// must match what was sent.
fn check_manifest_created(
    c: &Client,
    repo: &str,
    r: &Response,
    manifest: &Manifest,
) -> Result<(), Failure> {
    expect_content_digest(r, &manifest.digest, &manifest.bytes)?;
    let location = r.require_header("location")?;
    let got = c.get(location, &[("Accept", crate::fixtures::ACCEPT_MANIFESTS)])?;
    got.expect(200)?;
    ensure!(
        got.body == manifest.bytes,
        "{}: Location of pushed manifest does not serve the pushed bytes",
        got.what
    );
    verify_manifest(c, repo, &manifest.digest, manifest)
}

fn manifest_by_tag(env: &Env) -> Result<(), Failure> {
    let image = Image::oci(2);
    let r = image.push(env.c, &env.repo, "v1")?;
    check_manifest_created(env.c, &env.repo, &r, &image.manifest)?;
    verify_manifest(env.c, &env.repo, "v1", &image.manifest)
}

fn manifest_by_digest(env: &Env) -> Result<(), Failure> {
    let image = Image::oci(1);
    let r = image.push(env.c, &env.repo, &image.manifest.digest)?;
    // Pushed by digest, the response digest must be the client's exactly.
    expect_digest_header(&r, &image.manifest.digest)?;
    check_manifest_created(env.c, &env.repo, &r, &image.manifest)
}

fn manifest_with_tag_query(env: &Env) -> Result<(), Failure> {
    let image = Image::oci(1);
    image.push_blobs(env.c, &env.repo)?;
    let tags = ["alpha", "beta", "gamma"];
    let target = with_query(
        &manifest_path(&env.repo, &image.manifest.digest),
        &tags.map(|t| ("tag", t)),
    );
    let r = env.c.put(
        &target,
        &[("Content-Type", OCI_MANIFEST)],
        &image.manifest.bytes,
    )?;
    r.expect(201)?;
    expect_digest_header(&r, &image.manifest.digest)?;

    // OCI-Tag may be repeated and each value may be a comma-separated list.
    let announced: Vec<String> = r
        .header_all("oci-tag")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    let mut created = Vec::new();
    for tag in tags {
        let g = get_manifest(env.c, &env.repo, tag)?;
        if g.status == 200 {
            ensure!(
                g.body == image.manifest.bytes,
                "{}: tag created by ?tag= serves other content",
                g.what
            );
            created.push(tag.to_string());
        }
    }
    for tag in &announced {
        ensure!(
            created.contains(tag),
            "OCI-Tag announced {tag:?} but it does not resolve to the manifest"
        );
    }
    for tag in &created {
        ensure!(
            announced.contains(tag),
            "tag {tag:?} was created from ?tag= but not listed in an OCI-Tag response header"
        );
    }
    // Registries that don't support ?tag= (a MAY) simply create no tags and send no OCI-Tag.
    verify_manifest(env.c, &env.repo, &image.manifest.digest, &image.manifest)
}

fn manifest_retag(env: &Env) -> Result<(), Failure> {
    let first = Image::oci(1);
    let second = Image::oci(1);
    first.push(env.c, &env.repo, "latest")?;
    second.push(env.c, &env.repo, "latest")?;
    verify_manifest(env.c, &env.repo, "latest", &second.manifest)?;
    // Moving a tag must not delete the manifest it used to point at.
    verify_manifest(env.c, &env.repo, &first.manifest.digest, &first.manifest)
}

fn manifest_no_layers(env: &Env) -> Result<(), Failure> {
    let image = Image::oci(0);
    image.push(env.c, &env.repo, "config-only")?;
    verify_manifest(env.c, &env.repo, "config-only", &image.manifest)
}

fn manifest_artifact(env: &Env) -> Result<(), Failure> {
    // An artifact per the image spec's guidance: artifactType set, empty config descriptor.
    let config = Blob::empty_config();
    let layer = Blob::random("application/vnd.stowage.conformance.data", 321);
    push_blob(env.c, &env.repo, &config)?;
    push_blob(env.c, &env.repo, &layer)?;
    let manifest = Manifest::from_json(
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.stowage.conformance.artifact.v1",
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
            "annotations": { "org.opencontainers.image.title": random_hex(8) },
        }),
    );
    push_manifest(env.c, &env.repo, "artifact", &manifest)?;
    verify_manifest(env.c, &env.repo, "artifact", &manifest)
}

fn manifest_oci_index(env: &Env) -> Result<(), Failure> {
    let a = Image::oci(1);
    let b = Image::oci(1);
    a.push(env.c, &env.repo, &a.manifest.digest)?;
    b.push(env.c, &env.repo, &b.manifest.digest)?;
    let idx = index(OCI_INDEX, &[&a.manifest, &b.manifest], Default::default());
    let r = push_manifest(env.c, &env.repo, "multi", &idx)?;
    check_manifest_created(env.c, &env.repo, &r, &idx)?;
    verify_manifest(env.c, &env.repo, "multi", &idx)
}

/// A manifest that was never pushed anywhere, to be referenced but not resolvable.
fn phantom_manifest() -> Manifest {
    Manifest::from_json(
        OCI_MANIFEST,
        &json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "phantom": random_hex(32) }),
    )
}

fn manifest_sparse_index(env: &Env) -> Result<(), Failure> {
    // An index naming manifests the registry has never seen, as pushed when only some
    // platforms of a multi-platform image are copied.
    let (a, b) = (phantom_manifest(), phantom_manifest());
    let idx = index(OCI_INDEX, &[&a, &b], Default::default());
    let r = put_manifest(env.c, &env.repo, "sparse", &idx)?;
    if r.status != 201 {
        fail!(
            "{}: sparse index rejected with {} (the spec lets a registry reject it with \
             MANIFEST_BLOB_UNKNOWN; this suite requires accepting it)",
            r.what,
            r.status
        );
    }
    verify_manifest(env.c, &env.repo, "sparse", &idx)
}

fn manifest_docker_schema2(env: &Env) -> Result<(), Failure> {
    let image = Image::docker(2);
    let r = image.push(env.c, &env.repo, "docker")?;
    check_manifest_created(env.c, &env.repo, &r, &image.manifest)?;
    verify_manifest(env.c, &env.repo, "docker", &image.manifest)
}

fn manifest_docker_list(env: &Env) -> Result<(), Failure> {
    let a = Image::docker(1);
    let b = Image::docker(1);
    a.push(env.c, &env.repo, &a.manifest.digest)?;
    b.push(env.c, &env.repo, &b.manifest.digest)?;
    let list = index(DOCKER_LIST, &[&a.manifest, &b.manifest], Default::default());
    let r = push_manifest(env.c, &env.repo, "docker-list", &list)?;
    check_manifest_created(env.c, &env.repo, &r, &list)?;
    verify_manifest(env.c, &env.repo, "docker-list", &list)
}

fn manifest_subject_missing(env: &Env) -> Result<(), Failure> {
    // The spec requires accepting a subject that doesn't exist (yet), so referrers can be
    // pushed before what they refer to.
    let subject = phantom_manifest();
    let image = Image::oci_with(1, fields([("subject", subject.descriptor())]));
    let r = image.push(env.c, &env.repo, &image.manifest.digest)?;
    check_manifest_created(env.c, &env.repo, &r, &image.manifest)
}

fn manifest_oci_subject_header(env: &Env) -> Result<(), Failure> {
    let subject = Image::oci(1);
    subject.push(env.c, &env.repo, "subject")?;
    let referrer = Image::oci_with(1, fields([("subject", subject.manifest.descriptor())]));
    let r = referrer.push(env.c, &env.repo, &referrer.manifest.digest)?;
    let got = r.require_header("oci-subject")?;
    ensure!(
        got == subject.manifest.digest,
        "{}: OCI-Subject {got}, expected {}",
        r.what,
        subject.manifest.digest
    );
    Ok(())
}

fn manifest_blob_unknown(env: &Env) -> Result<(), Failure> {
    // Only the config is pushed; the layer is unknown. Registries MAY reject this, and if they
    // do the error must be MANIFEST_BLOB_UNKNOWN.
    let image = Image::oci(1);
    push_blob(env.c, &env.repo, &image.config)?;
    let r = put_manifest(env.c, &env.repo, "dangling", &image.manifest)?;
    if r.status == 201 {
        return Ok(());
    }
    ensure!(
        (400..500).contains(&r.status),
        "{}: expected 201 or a 4xx with MANIFEST_BLOB_UNKNOWN, got {}",
        r.what,
        r.status
    );
    r.expect_any_error(&[r.status], &["MANIFEST_BLOB_UNKNOWN"])?;
    Ok(())
}

fn manifest_invalid(env: &Env) -> Result<(), Failure> {
    let r = env.c.put(
        &manifest_path(&env.repo, "broken"),
        &[("Content-Type", OCI_MANIFEST)],
        b"{\"schemaVersion\": 2, \"mediaType\": \"application/vnd.oci.image.manifest.v1+json\", ",
    )?;
    r.expect_error(400, &["MANIFEST_INVALID"])?;
    Ok(())
}

fn manifest_digest_mismatch(env: &Env) -> Result<(), Failure> {
    let image = Image::oci(1);
    image.push_blobs(env.c, &env.repo)?;
    let wrong = unknown_digest();
    put_manifest(env.c, &env.repo, &wrong, &image.manifest)?
        .expect_error(400, &["DIGEST_INVALID", "MANIFEST_INVALID"])?;
    get_manifest(env.c, &env.repo, &wrong)?.expect(404)?;
    Ok(())
}

fn manifest_large(env: &Env) -> Result<(), Failure> {
    // The spec: registries SHOULD accept manifests of at least 4 megabytes.
    const TARGET: usize = 4_000_000;
    let config = Blob::config(crate::fixtures::OCI_CONFIG);
    let layer = Blob::random(OCI_LAYER, 100);
    push_blob(env.c, &env.repo, &config)?;
    push_blob(env.c, &env.repo, &layer)?;
    let build = |padding: usize| {
        Manifest::from_json(
            OCI_MANIFEST,
            &json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.descriptor(),
                "layers": [layer.descriptor()],
                "annotations": { "org.stowage.conformance.padding": "x".repeat(padding) },
            }),
        )
    };
    let base = build(0).bytes.len();
    let manifest = build(TARGET.saturating_sub(base));
    push_manifest(env.c, &env.repo, "large", &manifest)?;
    verify_manifest(env.c, &env.repo, "large", &manifest)
}

fn manifest_sha512(env: &Env) -> Result<(), Failure> {
    let image = Image::oci(1);
    image.push_blobs(env.c, &env.repo)?;
    let d = digest(Algorithm::Sha512, &image.manifest.bytes);
    let r = push_manifest(env.c, &env.repo, &d, &image.manifest)?;
    expect_digest_header(&r, &d)?;
    verify_manifest_digest(env.c, &env.repo, &d, &image.manifest, &d)
}

fn name_invalid(env: &Env) -> Result<(), Failure> {
    // Uppercase letters are outside the spec's repository-name grammar.
    let repo = format!("{}/Invalid-Name", env.repo);
    env.c
        .post(&uploads_path(&repo), &[], &[])?
        .expect_any_error(&[400, 404], &["NAME_INVALID"])
        .step("blob upload")?;
    let image = Image::oci(0);
    put_manifest(env.c, &repo, "latest", &image.manifest)?
        .expect_any_error(&[400, 404], &["NAME_INVALID"])
        .step("manifest push")?;
    Ok(())
}

fn tag_invalid(env: &Env) -> Result<(), Failure> {
    let image = Image::oci(1);
    image.push(env.c, &env.repo, "valid")?;
    // Tags are at most 128 characters and may not start with '.' or '-'.
    let cases = [
        ("t".repeat(129), "129-character tag"),
        (".starts-with-dot".to_string(), "tag starting with '.'"),
    ];
    for (tag, step) in cases {
        let r = put_manifest(env.c, &env.repo, &tag, &image.manifest)?;
        r.expect_any_error(
            &[400, 404],
            &["TAG_INVALID", "MANIFEST_INVALID", "NAME_INVALID"],
        )
        .step(step)?;
    }
    let r = env.c.get(&tags_path(&env.repo), &[])?;
    r.expect(200)?;
    let tags = r.json()?;
    ensure!(
        tags.get("tags") == Some(&Value::from(vec!["valid"])),
        "{}: expected only the valid tag, got {}",
        r.what,
        tags.get("tags").unwrap_or(&Value::Null)
    );
    Ok(())
}
