//! Storage keys. The layout is CNCF Distribution's (below its `docker/registry/` prefix), so
//! a Distribution root can be served in place; what Distribution lacks (referrers, our upload
//! records) lives under names it ignores. Keys are relative to a store's root and use `/`.

use crate::digest::Digest;
use crate::names::{RepoName, Tag};
use crate::route::UploadId;

fn repo(name: &RepoName) -> String {
    format!("v2/repositories/{name}")
}

/// The folder below which blob and manifest bytes live, one folder per digest.
pub const BLOBS: &str = "v2/blobs/";

/// The folder of one digest's bytes (what the collector removes).
pub fn blob_dir(d: &Digest) -> String {
    format!(
        "{BLOBS}{}/{}/{}/",
        d.algorithm().name(),
        &d.hex()[..2],
        d.hex()
    )
}

/// A repository's own folder.
pub fn repository_dir(name: &RepoName) -> String {
    format!("{}/", repo(name))
}

/// The folder of a repository's layer links: `<alg>/<hex>/link` below it.
pub fn layers_dir(name: &RepoName) -> String {
    format!("{}/_layers/", repo(name))
}

/// The folder of a repository's manifest revision links: `<alg>/<hex>/link` below it.
pub fn revisions_dir(name: &RepoName) -> String {
    format!("{}/_manifests/revisions/", repo(name))
}

/// The folder of a manifest's revision link.
pub fn revision_dir(name: &RepoName, d: &Digest) -> String {
    format!(
        "{}{}/{}/",
        revisions_dir(name),
        d.algorithm().name(),
        d.hex()
    )
}

/// The folder of a repository's referrers: `<alg>/<hex>/` of each subject below it.
pub fn referrers_root(name: &RepoName) -> String {
    format!("{}/_referrers/", repo(name))
}

/// The collector's state (epoch, whether it is deleting), read by writers around their
/// commits (see `gc::fence`). Outside `v2/`, so Distribution ignores it.
pub const GC_STATE: &str = "_stowage/gc/state";

/// The folder of the digests the collector is about to delete.
pub const GC_DOOMED: &str = "_stowage/gc/doomed/";

/// Marks `d` as about to be deleted (its bytes, links to it, or manifest revisions of it).
pub fn gc_doomed(d: &Digest) -> String {
    format!("{GC_DOOMED}{}/{}", d.algorithm().name(), d.hex())
}

/// The bytes of a blob or manifest, addressed by digest.
pub fn blob_data(d: &Digest) -> String {
    format!(
        "v2/blobs/{}/{}/{}/data",
        d.algorithm().name(),
        &d.hex()[..2],
        d.hex()
    )
}

/// The content of every link file: the digest it points at.
pub fn link_content(d: &Digest) -> String {
    d.to_string()
}

/// Marks a blob as part of a repository.
pub fn layer_link(name: &RepoName, d: &Digest) -> String {
    format!(
        "{}/_layers/{}/{}/link",
        repo(name),
        d.algorithm().name(),
        d.hex()
    )
}

/// Marks a manifest as part of a repository.
pub fn revision_link(name: &RepoName, d: &Digest) -> String {
    format!(
        "{}/_manifests/revisions/{}/{}/link",
        repo(name),
        d.algorithm().name(),
        d.hex()
    )
}

/// The folder holding one directory per tag.
pub fn tags_dir(name: &RepoName) -> String {
    format!("{}/_manifests/tags/", repo(name))
}

/// The folder of one tag (current link and history).
pub fn tag_dir(name: &RepoName, tag: &Tag) -> String {
    format!("{}/_manifests/tags/{tag}/", repo(name))
}

/// What a tag points at now.
pub fn tag_current(name: &RepoName, tag: &Tag) -> String {
    format!("{}current/link", tag_dir(name, tag))
}

/// Every manifest a tag ever pointed at (Distribution keeps this history).
pub fn tag_index(name: &RepoName, tag: &Tag, d: &Digest) -> String {
    format!(
        "{}index/{}/{}/link",
        tag_dir(name, tag),
        d.algorithm().name(),
        d.hex()
    )
}

/// The folder of a subject's referrers: one descriptor file per referring manifest.
pub fn referrers_dir(name: &RepoName, subject: &Digest) -> String {
    format!(
        "{}/_referrers/{}/{}/",
        repo(name),
        subject.algorithm().name(),
        subject.hex()
    )
}

/// One referrer's descriptor, named `<alg>-<hex>` of the referring manifest.
pub fn referrer_entry(name: &RepoName, subject: &Digest, referrer: &Digest) -> String {
    format!(
        "{}{}-{}",
        referrers_dir(name, subject),
        referrer.algorithm().name(),
        referrer.hex()
    )
}

/// The folder of a repository's upload sessions, one folder per session.
pub const UPLOADS: &str = "_uploads";

/// The file of an upload session's folder holding its record.
pub const UPLOAD_RECORD: &str = "session.json";

/// The folder of a repository's upload sessions.
pub fn uploads_dir(name: &RepoName) -> String {
    format!("{}/{UPLOADS}/", repo(name))
}

/// The folder of one upload session.
pub fn upload_dir(name: &RepoName, id: &UploadId) -> String {
    format!("{}{}/", uploads_dir(name), id.as_str())
}

/// The upload session record (offset, parts, hash state).
pub fn upload_record(name: &RepoName, id: &UploadId) -> String {
    format!("{}{UPLOAD_RECORD}", upload_dir(name, id))
}

/// The bytes of one upload request, under a name of their own (see [`crate::upload::Part`]).
pub fn upload_part(name: &RepoName, id: &UploadId, part: &str) -> String {
    format!("{}parts/{part}", upload_dir(name, id))
}

/// The upload's data file: its chunks, each written in place at its offset while that can
/// be done safely (see [`crate::upload::Part`]).
pub fn upload_data(name: &RepoName, id: &UploadId) -> String {
    format!("{}data", upload_dir(name, id))
}

/// Taken (created new, empty) by the one request that may write the data file from `offset`
/// on.
pub fn upload_claim(name: &RepoName, id: &UploadId, offset: u64) -> String {
    format!("{}claims/{offset}", upload_dir(name, id))
}

/// Where repositories live; the catalog walks below it.
pub const REPOSITORIES: &str = "v2/repositories/";

/// Events queued for webhooks with the `async` policy (in the metadata store): one object
/// per event and webhook, holding the body to deliver, named by [`queued_event`].
pub const EVENT_QUEUE: &str = "_events/queue/";

/// Where a queued event goes once its webhook has failed it too often: kept for an
/// operator, delivered no more.
pub const UNDELIVERABLE_EVENTS: &str = "_events/undeliverable/";

/// A queued event's name: `<time, 16 hex digits>-<event id>-<webhook>`, so a listing is
/// oldest first.
pub fn queued_event(time: crate::time::Millis, id: &str, webhook: &str) -> String {
    format!("{EVENT_QUEUE}{:016x}-{id}-{webhook}", time.0)
}

/// The webhook a queued event (its name within [`EVENT_QUEUE`]) is for.
pub fn queued_event_webhook(name: &str) -> Option<&str> {
    let mut parts = name.splitn(3, '-');
    let (_time, _id) = (parts.next()?, parts.next()?);
    parts.next().filter(|webhook| !webhook.is_empty())
}

/// The folders of a listing (the entries ending in `/`, as every store lists them), by name.
pub fn folders(entries: Vec<String>) -> impl Iterator<Item = String> {
    entries
        .into_iter()
        .filter_map(|e| e.strip_suffix('/').map(str::to_owned))
}
