//! Content discovery workflow: tag listing with pagination, the catalog, and the referrers API.

use serde_json::{Value, json};

use crate::case::{Case, Env, Needs};
use crate::client::Client;
use crate::error::Failure;
use crate::fixtures::{
    Blob, Image, Manifest, OCI_INDEX, OCI_MANIFEST, fields, index, push_blob, push_manifest,
    random_hex, referrers_path, tags_path,
};
use crate::response::{Response, with_query};
use crate::{ensure, fail};

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("discovery/tags-list", tags_list),
        Case::new("discovery/tags-list-n", tags_list_n),
        Case::new("discovery/tags-list-last", tags_list_last),
        Case::new("discovery/tags-list-link", tags_list_link),
        Case::new("discovery/tags-list-n-zero", tags_list_n_zero),
        Case::new("discovery/tags-list-unknown-repository", tags_unknown_repo),
        // No other case name may start with "discovery/catalog": the case relies on nothing
        // sorting between its repository name and those of its sub-repositories.
        Case::new("discovery/catalog", catalog),
        Case::new("discovery/referrers", referrers).needs(Needs::Referrers),
        Case::new("discovery/referrers-artifact-type-filter", referrers_filter)
            .needs(Needs::Referrers),
        Case::new("discovery/referrers-none", referrers_none).needs(Needs::Referrers),
        Case::new(
            "discovery/referrers-missing-subject",
            referrers_missing_subject,
        )
        .needs(Needs::Referrers),
        Case::new(
            "discovery/referrers-invalid-digest",
            referrers_invalid_digest,
        )
        .needs(Needs::Referrers),
    ]
}

/// Upper bound on pages followed through `Link` headers, so a looping registry can't hang us.
const MAX_PAGES: usize = 50;

// ---------------------------------------------------------------------------------------------
// Tags.

/// Tags pushed in this (unsorted) order; all lowercase alphanumerics, so lexical and
/// ASCIIbetical orders (both allowed by the spec) agree.
const TAGS: [&str; 6] = ["v2", "latest", "alpha", "v10", "beta7", "v1"];

fn sorted_tags() -> Vec<String> {
    let mut tags: Vec<String> = TAGS.iter().map(|t| t.to_string()).collect();
    tags.sort();
    tags
}

/// One image tagged with every tag in [`TAGS`].
fn push_tagged(env: &Env) -> Result<(), Failure> {
    let image = Image::oci(1);
    image.push(env.c, &env.repo, TAGS[0])?;
    for tag in &TAGS[1..] {
        push_manifest(env.c, &env.repo, tag, &image.manifest)?;
    }
    Ok(())
}

/// The `"key"` array of a listing body; `null` or absent count as empty.
fn string_list(r: &Response, key: &str) -> Result<Vec<String>, Failure> {
    let body = r.json()?;
    match body.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    Failure::Check(format!("{}: non-string entry in \"{key}\"", r.what))
                })
            })
            .collect(),
        Some(other) => Err(Failure::Check(format!(
            "{}: \"{key}\" is not an array: {other}",
            r.what
        ))),
    }
}

/// The target of a `Link: <url>; rel="next"` header, if any.
pub fn next_link(r: &Response) -> Option<String> {
    r.header_all("link")
        .into_iter()
        .flat_map(|v| v.split(','))
        .find(|part| {
            part.split(';')
                .skip(1)
                .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"))
        })
        .and_then(|part| {
            let start = part.find('<')? + 1;
            let end = part[start..].find('>')? + start;
            Some(part[start..end].to_string())
        })
}

/// A page of at most `n` results must be the start of `expected`; it may only be shorter than
/// `n` (and than what remains) when the registry sends a `Link` to the rest.
fn check_page(r: &Response, got: &[String], expected: &[String], n: usize) -> Result<(), Failure> {
    let full = n.min(expected.len());
    let has_link = next_link(r).is_some();
    ensure!(
        got.len() <= n,
        "{}: asked for at most {n} entries, got {}: {got:?}",
        r.what,
        got.len()
    );
    ensure!(
        got.len() == full || (has_link && !got.is_empty()),
        "{}: expected {full} entries {:?}, got {got:?} (without a Link header to the rest)",
        r.what,
        &expected[..full]
    );
    ensure!(
        expected.starts_with(got),
        "{}: expected entries starting {:?}, got {got:?}",
        r.what,
        &expected[..full]
    );
    Ok(())
}

fn tags_list(env: &Env) -> Result<(), Failure> {
    push_tagged(env)?;
    let r = env.c.get(&tags_path(&env.repo), &[])?;
    r.expect(200)?;
    let name = r.json()?.get("name").cloned().unwrap_or(Value::Null);
    ensure!(
        name == env.repo.as_str(),
        "{}: name is {name}, expected {:?}",
        r.what,
        env.repo
    );
    let tags = string_list(&r, "tags")?;
    ensure!(
        tags == sorted_tags(),
        "{}: expected sorted tags {:?}, got {tags:?}",
        r.what,
        sorted_tags()
    );
    Ok(())
}

fn tags_list_n(env: &Env) -> Result<(), Failure> {
    push_tagged(env)?;
    let r = env
        .c
        .get(&with_query(&tags_path(&env.repo), &[("n", "3")]), &[])?;
    r.expect(200)?;
    check_page(&r, &string_list(&r, "tags")?, &sorted_tags(), 3)
}

fn tags_list_last(env: &Env) -> Result<(), Failure> {
    push_tagged(env)?;
    let all = sorted_tags();
    let r = env.c.get(
        &with_query(&tags_path(&env.repo), &[("n", "2"), ("last", &all[1])]),
        &[],
    )?;
    r.expect(200)?;
    check_page(&r, &string_list(&r, "tags")?, &all[2..], 2)?;

    // `n` is optional when `last` is given.
    let r = env.c.get(
        &with_query(&tags_path(&env.repo), &[("last", &all[3])]),
        &[],
    )?;
    r.expect(200)?;
    check_page(&r, &string_list(&r, "tags")?, &all[4..], usize::MAX)
}

fn tags_list_link(env: &Env) -> Result<(), Failure> {
    push_tagged(env)?;
    let all = sorted_tags();
    let mut seen = Vec::new();
    let mut target = with_query(&tags_path(&env.repo), &[("n", "2")]);
    for page in 0.. {
        ensure!(
            page < MAX_PAGES,
            "Link headers did not end after {MAX_PAGES} pages"
        );
        let r = env.c.get(&target, &[])?;
        r.expect(200)?;
        let tags = string_list(&r, "tags")?;
        ensure!(
            tags.len() <= 2,
            "{}: asked for 2 tags, got {tags:?}",
            r.what
        );
        seen.extend(tags);
        match next_link(&r) {
            Some(next) => target = next,
            None if page == 0 => fail!(
                "{}: no Link header with rel=\"next\" although {} tags exist",
                r.what,
                all.len()
            ),
            None => break,
        }
    }
    ensure!(
        seen == all,
        "following Link headers gave {seen:?}, expected {all:?}"
    );
    Ok(())
}

fn tags_list_n_zero(env: &Env) -> Result<(), Failure> {
    push_tagged(env)?;
    let r = env
        .c
        .get(&with_query(&tags_path(&env.repo), &[("n", "0")]), &[])?;
    r.expect(200)?;
    let tags = string_list(&r, "tags")?;
    ensure!(
        tags.is_empty(),
        "{}: n=0 must return an empty list, got {tags:?}",
        r.what
    );
    ensure!(
        r.header("link").is_none(),
        "{}: n=0 must not include a Link header",
        r.what
    );
    Ok(())
}

fn tags_unknown_repo(env: &Env) -> Result<(), Failure> {
    env.c
        .get(&tags_path(&env.sub("never-pushed")), &[])?
        .expect_error(404, &["NAME_UNKNOWN"])?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Catalog. Not part of the current spec text but served by most registries; the suite checks
// it with the same pagination rules as tags. Other repositories may exist on the registry, so
// the listing is anchored at this case's own name with `last`.

fn catalog(env: &Env) -> Result<(), Failure> {
    let repos: Vec<String> = ["r1", "r2", "r3"].iter().map(|r| env.sub(r)).collect();
    for repo in &repos {
        Image::oci(1).push(env.c, repo, "latest")?;
    }
    let r = env.c.get(
        &with_query("/v2/_catalog", &[("n", "3"), ("last", &env.repo)]),
        &[],
    )?;
    r.expect(200)?;
    check_page(&r, &string_list(&r, "repositories")?, &repos, 3)?;

    let r = env.c.get(
        &with_query("/v2/_catalog", &[("n", "1"), ("last", &repos[0])]),
        &[],
    )?;
    r.expect(200)?;
    let page = string_list(&r, "repositories")?;
    ensure!(
        page == repos[1..2],
        "{}: expected [{:?}], got {page:?}",
        r.what,
        repos[1]
    );
    let Some(next) = next_link(&r) else {
        fail!(
            "{}: no Link header with rel=\"next\" although more repositories exist",
            r.what
        );
    };
    let r = env.c.get(&next, &[])?;
    r.expect(200)?;
    let page = string_list(&r, "repositories")?;
    ensure!(
        page.first() == Some(&repos[2]),
        "{}: page after Link should start with {:?}, got {page:?}",
        r.what,
        repos[2]
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Referrers.

pub const SBOM_TYPE: &str = "application/vnd.stowage.conformance.sbom.v1+json";
pub const SIG_CONFIG_TYPE: &str = "application/vnd.stowage.conformance.signature.config.v1+json";
pub const BUNDLE_TYPE: &str = "application/vnd.stowage.conformance.bundle.v1";

/// A manifest with a `subject`, and the descriptor the referrers API must list for it.
pub struct Referrer {
    pub manifest: Manifest,
    pub expected: Value,
}

fn annotations(tag: &str) -> Value {
    json!({
        "org.opencontainers.image.created": "2024-01-01T00:00:00Z",
        "org.stowage.conformance.referrer": format!("{tag}-{}", random_hex(8)),
    })
}

fn expected_descriptor(manifest: &Manifest, artifact_type: Option<&str>, ann: &Value) -> Value {
    let mut d = manifest.descriptor();
    if let Some(t) = artifact_type {
        d["artifactType"] = json!(t);
    }
    d["annotations"] = ann.clone();
    d
}

/// An artifact manifest with an explicit `artifactType` and the empty config.
pub fn push_sbom_referrer(c: &Client, repo: &str, subject: &Value) -> Result<Referrer, Failure> {
    let config = Blob::empty_config();
    let layer = Blob::random("application/vnd.stowage.conformance.sbom.data", 200);
    push_blob(c, repo, &config)?;
    push_blob(c, repo, &layer)?;
    let ann = annotations("sbom");
    let manifest = Manifest::from_json(
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SBOM_TYPE,
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
            "subject": subject,
            "annotations": ann,
        }),
    );
    push_manifest(c, repo, &manifest.digest, &manifest)?;
    let expected = expected_descriptor(&manifest, Some(SBOM_TYPE), &ann);
    Ok(Referrer { manifest, expected })
}

/// An image manifest without `artifactType`: the listed type must be its config media type.
pub fn push_signature_referrer(
    c: &Client,
    repo: &str,
    subject: &Value,
) -> Result<Referrer, Failure> {
    let config = Blob::new(
        SIG_CONFIG_TYPE,
        format!("{{\"signer\":\"{}\"}}", random_hex(12)).into_bytes(),
    );
    let layer = Blob::random("application/vnd.stowage.conformance.signature", 64);
    push_blob(c, repo, &config)?;
    push_blob(c, repo, &layer)?;
    let ann = annotations("signature");
    let manifest = Manifest::from_json(
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
            "subject": subject,
            "annotations": ann,
        }),
    );
    push_manifest(c, repo, &manifest.digest, &manifest)?;
    let expected = expected_descriptor(&manifest, Some(SIG_CONFIG_TYPE), &ann);
    Ok(Referrer { manifest, expected })
}

/// An image index with a subject (indexes can be referrers too).
fn push_index_referrer(c: &Client, repo: &str, subject: &Value) -> Result<Referrer, Failure> {
    let member = Image::oci(1);
    member.push(c, repo, &member.manifest.digest)?;
    let ann = annotations("bundle");
    let manifest = index(
        OCI_INDEX,
        &[&member.manifest],
        fields([
            ("artifactType", json!(BUNDLE_TYPE)),
            ("subject", subject.clone()),
            ("annotations", ann.clone()),
        ]),
    );
    push_manifest(c, repo, &manifest.digest, &manifest)?;
    let expected = expected_descriptor(&manifest, Some(BUNDLE_TYPE), &ann);
    Ok(Referrer { manifest, expected })
}

/// Fetches the referrers of `digest` (following `Link` pages), checking the response format,
/// and returns the listed descriptors.
pub fn fetch_referrers(
    c: &Client,
    repo: &str,
    digest: &str,
    artifact_type: Option<&str>,
) -> Result<Vec<Value>, Failure> {
    let mut target = referrers_path(repo, digest);
    if let Some(t) = artifact_type {
        target = with_query(&target, &[("artifactType", t)]);
    }
    let mut descriptors = Vec::new();
    for _ in 0..MAX_PAGES {
        let r = c.get(&target, &[("Accept", OCI_INDEX)])?;
        r.expect(200)?;
        let ct = r.content_type();
        ensure!(
            ct.as_deref() == Some(OCI_INDEX),
            "{}: Content-Type {ct:?}, expected {OCI_INDEX}",
            r.what
        );
        if artifact_type.is_some() {
            let applied = r.header_all("oci-filters-applied");
            ensure!(
                applied
                    .iter()
                    .flat_map(|v| v.split(','))
                    .any(|f| f.trim() == "artifactType"),
                "{}: OCI-Filters-Applied does not include artifactType (got {applied:?})",
                r.what
            );
        }
        let body = r.json()?;
        ensure!(
            body.get("schemaVersion") == Some(&json!(2)),
            "{}: schemaVersion is not 2",
            r.what
        );
        ensure!(
            body.get("mediaType") == Some(&json!(OCI_INDEX)),
            "{}: mediaType is not {OCI_INDEX}",
            r.what
        );
        match body.get("manifests") {
            Some(Value::Array(items)) => descriptors.extend(items.iter().cloned()),
            other => fail!("{}: \"manifests\" is not an array: {other:?}", r.what),
        }
        match next_link(&r) {
            Some(next) => target = next,
            None => return Ok(descriptors),
        }
    }
    fail!("referrers Link headers did not end after {MAX_PAGES} pages")
}

/// The listed descriptors must be exactly `expected` (in any order), field by field.
pub fn check_referrers(got: &[Value], expected: &[&Referrer]) -> Result<(), Failure> {
    let digests = |v: &[Value]| -> Vec<String> {
        v.iter()
            .map(|d| {
                d.get("digest")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string()
            })
            .collect()
    };
    let want: Vec<Value> = expected.iter().map(|r| r.expected.clone()).collect();
    ensure!(
        got.len() == want.len(),
        "referrers list has {} entries {:?}, expected {} {:?}",
        got.len(),
        digests(got),
        want.len(),
        digests(&want)
    );
    for w in &want {
        let Some(g) = got.iter().find(|g| g.get("digest") == w.get("digest")) else {
            fail!("referrers list lacks {}", w["digest"]);
        };
        for key in ["mediaType", "size", "artifactType", "annotations"] {
            ensure!(
                g.get(key) == w.get(key),
                "referrer {}: {key} is {}, expected {}",
                w["digest"],
                g.get(key).unwrap_or(&Value::Null),
                w.get(key).unwrap_or(&Value::Null)
            );
        }
    }
    Ok(())
}

fn referrers(env: &Env) -> Result<(), Failure> {
    let subject = Image::oci(1);
    subject.push(env.c, &env.repo, "subject")?;
    let s = subject.manifest.descriptor();
    let sbom = push_sbom_referrer(env.c, &env.repo, &s)?;
    let sig = push_signature_referrer(env.c, &env.repo, &s)?;
    let bundle = push_index_referrer(env.c, &env.repo, &s)?;

    // A referrer of a different subject must not show up.
    let other = Image::oci(1);
    other.push(env.c, &env.repo, "other")?;
    push_sbom_referrer(env.c, &env.repo, &other.manifest.descriptor())?;

    let got = fetch_referrers(env.c, &env.repo, &subject.manifest.digest, None)?;
    check_referrers(&got, &[&sbom, &sig, &bundle])
}

fn referrers_filter(env: &Env) -> Result<(), Failure> {
    let subject = Image::oci(1);
    subject.push(env.c, &env.repo, "subject")?;
    let s = subject.manifest.descriptor();
    let sbom = push_sbom_referrer(env.c, &env.repo, &s)?;
    push_signature_referrer(env.c, &env.repo, &s)?;

    let got = fetch_referrers(env.c, &env.repo, &subject.manifest.digest, Some(SBOM_TYPE))?;
    check_referrers(&got, &[&sbom])
}

fn referrers_none(env: &Env) -> Result<(), Failure> {
    let subject = Image::oci(1);
    subject.push(env.c, &env.repo, "lonely")?;
    let got = fetch_referrers(env.c, &env.repo, &subject.manifest.digest, None)?;
    check_referrers(&got, &[])
}

fn referrers_missing_subject(env: &Env) -> Result<(), Failure> {
    // The subject is never pushed; its referrers must be listed all the same.
    let subject = Manifest::from_json(
        OCI_MANIFEST,
        &json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "phantom": random_hex(32) }),
    );
    let sbom = push_sbom_referrer(env.c, &env.repo, &subject.descriptor())?;
    let got = fetch_referrers(env.c, &env.repo, &subject.digest, None)?;
    check_referrers(&got, &[&sbom])
}

fn referrers_invalid_digest(env: &Env) -> Result<(), Failure> {
    Image::oci(1).push(env.c, &env.repo, "latest")?;
    env.c
        .get(&referrers_path(&env.repo, "sha256:not-a-digest"), &[])?
        .expect(400)?;
    Ok(())
}
