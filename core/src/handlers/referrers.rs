//! The referrers API: an image index of the manifests whose `subject` is a digest.

use http::StatusCode;

use super::Ctx;
use crate::digest::Digest;
use crate::error::RegistryError;
use crate::layout;
use crate::manifest::{Descriptor, OCI_INDEX};
use crate::names::RepoName;
use crate::response::Reply;
use crate::step::{Response, StoreRole};

pub(super) async fn list(
    ctx: &Ctx,
    name: &RepoName,
    subject: &Digest,
    artifact_type: Option<String>,
) -> Result<Response, RegistryError> {
    let dir = layout::referrers_dir(name, subject);
    let entries = ctx.list(StoreRole::Meta, dir.clone()).await?;
    let keys = entries
        .iter()
        .filter(|entry| !entry.ends_with('/'))
        .map(|entry| format!("{dir}{entry}"))
        .collect();
    // An entry deleted between list and read is simply no longer a referrer.
    let mut descriptors: Vec<Descriptor> = ctx
        .read_each(StoreRole::Meta, keys)
        .await?
        .into_iter()
        .flatten()
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .filter(|descriptor: &Descriptor| {
            artifact_type
                .as_ref()
                .is_none_or(|wanted| descriptor.artifact_type.as_ref() == Some(wanted))
        })
        .collect();
    descriptors.sort_by(|a, b| a.digest.cmp(&b.digest));
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": descriptors,
    });
    let mut reply = Reply::new(StatusCode::OK);
    if artifact_type.is_some() {
        reply = reply.header("oci-filters-applied", "artifactType");
    }
    Ok(reply.json(&index).content_type(OCI_INDEX).done())
}
