//! Content management workflow: deleting manifests, tags and blobs, and what must disappear
//! with them (tags, referrers); and, when the run has credentials, that pushing needs them.

use serde_json::Value;

use crate::case::{Case, Env, Needs};
use crate::challenge::Challenge;
use crate::discovery::{check_referrers, fetch_referrers, push_sbom_referrer};
use crate::error::Failure;
use crate::fixtures::{
    Blob, Image, OCI_LAYER, blob_path, get_manifest, head_manifest, manifest_path, push_blob,
    push_manifest, tags_path, unknown_digest, uploads_path, verify_manifest,
};
use crate::{ensure, fail};

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("management/delete-manifest", delete_manifest),
        Case::new(
            "management/delete-manifest-removes-tags",
            delete_manifest_tags,
        ),
        Case::new(
            "management/delete-manifest-unknown",
            delete_manifest_unknown,
        ),
        Case::new("management/delete-tag", delete_tag),
        Case::new("management/delete-blob", delete_blob),
        Case::new("management/delete-blob-unknown", delete_blob_unknown),
        Case::new("management/delete-referrer", delete_referrer).needs(Needs::Referrers),
        Case::new("management/anonymous-push-refused", anonymous_push_refused)
            .needs(Needs::Credentials),
    ]
}

fn listed_tags(env: &Env) -> Result<Vec<String>, Failure> {
    let r = env.c.get(&tags_path(&env.repo), &[])?;
    r.expect(200)?;
    let body = r.json()?;
    Ok(body
        .get("tags")
        .and_then(Value::as_array)
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

fn delete_manifest(env: &Env) -> Result<(), Failure> {
    let image = Image::oci(1);
    image.push(env.c, &env.repo, "doomed")?;
    let digest = &image.manifest.digest;
    env.c
        .delete(&manifest_path(&env.repo, digest))?
        .expect(202)?;
    get_manifest(env.c, &env.repo, digest)?.expect_error(404, &["MANIFEST_UNKNOWN"])?;
    head_manifest(env.c, &env.repo, digest)?.expect(404)?;
    // A tag pointing at a deleted manifest must not resolve either.
    get_manifest(env.c, &env.repo, "doomed")?.expect(404)?;
    // Deleting again: it is gone.
    env.c
        .delete(&manifest_path(&env.repo, digest))?
        .expect_error(404, &["MANIFEST_UNKNOWN"])?;
    Ok(())
}

fn delete_manifest_tags(env: &Env) -> Result<(), Failure> {
    let keep = Image::oci(1);
    keep.push(env.c, &env.repo, "keep")?;
    let doomed = Image::oci(1);
    doomed.push(env.c, &env.repo, "gone1")?;
    push_manifest(env.c, &env.repo, "gone2", &doomed.manifest)?;
    env.c
        .delete(&manifest_path(&env.repo, &doomed.manifest.digest))?
        .expect(202)?;
    let tags = listed_tags(env)?;
    ensure!(
        tags == ["keep"],
        "tags list after deleting a manifest is {tags:?}, expected [\"keep\"]"
    );
    verify_manifest(env.c, &env.repo, "keep", &keep.manifest)
}

fn delete_manifest_unknown(env: &Env) -> Result<(), Failure> {
    Image::oci(1).push(env.c, &env.repo, "present")?;
    env.c
        .delete(&manifest_path(&env.repo, &unknown_digest()))?
        .expect_error(404, &["MANIFEST_UNKNOWN"])?;
    // The spec: deleting from a repository that does not exist is a 404 too.
    env.c
        .delete(&manifest_path(&env.sub("never-pushed"), &unknown_digest()))?
        .expect(404)?;
    Ok(())
}

fn delete_tag(env: &Env) -> Result<(), Failure> {
    let image = Image::oci(1);
    image.push(env.c, &env.repo, "t1")?;
    push_manifest(env.c, &env.repo, "t2", &image.manifest)?;
    let r = env.c.delete(&manifest_path(&env.repo, "t1"))?;
    if r.status == 400 || r.status == 405 {
        crate::fail!(
            "{}: {} (the spec allows this only when tag deletion is disabled)",
            r.what,
            r.status
        );
    }
    r.expect(202)?;
    get_manifest(env.c, &env.repo, "t1")?.expect_error(404, &["MANIFEST_UNKNOWN"])?;
    // Only the tag goes: the manifest and its other tags stay.
    verify_manifest(env.c, &env.repo, &image.manifest.digest, &image.manifest)?;
    verify_manifest(env.c, &env.repo, "t2", &image.manifest)?;
    let tags = listed_tags(env)?;
    ensure!(
        tags == ["t2"],
        "tags list after deleting t1 is {tags:?}, expected [\"t2\"]"
    );
    Ok(())
}

fn delete_blob(env: &Env) -> Result<(), Failure> {
    let blob = Blob::random(OCI_LAYER, 4321);
    push_blob(env.c, &env.repo, &blob)?;
    let path = blob_path(&env.repo, &blob.digest);
    env.c.delete(&path)?.expect(202)?;
    env.c.head(&path, &[])?.expect(404)?;
    env.c
        .get(&path, &[])?
        .expect_error(404, &["BLOB_UNKNOWN"])?;
    Ok(())
}

fn delete_blob_unknown(env: &Env) -> Result<(), Failure> {
    push_blob(env.c, &env.repo, &Blob::random(OCI_LAYER, 10))?;
    env.c
        .delete(&blob_path(&env.repo, &unknown_digest()))?
        .expect_error(404, &["BLOB_UNKNOWN"])?;
    Ok(())
}

fn delete_referrer(env: &Env) -> Result<(), Failure> {
    let subject = Image::oci(1);
    subject.push(env.c, &env.repo, "subject")?;
    let s = subject.manifest.descriptor();
    let gone = push_sbom_referrer(env.c, &env.repo, &s)?;
    let kept = push_sbom_referrer(env.c, &env.repo, &s)?;
    let before = fetch_referrers(env.c, &env.repo, &subject.manifest.digest, None)?;
    check_referrers(&before, &[&gone, &kept])?;

    env.c
        .delete(&manifest_path(&env.repo, &gone.manifest.digest))?
        .expect(202)?;
    let after = fetch_referrers(env.c, &env.repo, &subject.manifest.digest, None)?;
    check_referrers(&after, &[&kept])
}

/// A run given credentials is against a registry that wants them: a push without any must be
/// refused with a challenge a client can answer, and the same push with them accepted.
fn anonymous_push_refused(env: &Env) -> Result<(), Failure> {
    let uploads = uploads_path(&env.repo);
    let r = env.c.bare().post(&uploads, &[], &[])?;
    r.expect_error(401, &["UNAUTHORIZED"])?;
    let challenges = r.challenges()?;
    if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
        ensure!(
            bearer.param("realm").is_some_and(|realm| !realm.is_empty()),
            "{}: Bearer challenge without a realm",
            r.what
        );
        // Clients like this one ask the realm for exactly the scopes the challenge names.
        ensure!(
            names_push_scope(bearer, &env.repo),
            "{}: Bearer challenge's scope {:?} does not ask for push on {}",
            r.what,
            bearer.param("scope").unwrap_or(""),
            env.repo
        );
    } else if !challenges.iter().any(|c| c.scheme == "basic") {
        fail!(
            "{}: WWW-Authenticate {:?} offers neither Basic nor Bearer",
            r.what,
            r.header_all("www-authenticate")
        );
    }
    env.c.post(&uploads, &[], &[])?.expect(202)?;
    Ok(())
}

/// Whether a Bearer challenge's scopes include `repository:<repo>:…push…` (or `*`).
fn names_push_scope(bearer: &Challenge, repo: &str) -> bool {
    let prefix = format!("repository:{repo}:");
    bearer
        .param("scope")
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|scope| scope.strip_prefix(&prefix))
        .any(|actions| actions.split(',').any(|a| a == "push" || a == "*"))
}
