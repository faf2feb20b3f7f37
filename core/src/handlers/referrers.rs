//! The referrers API: an image index of the manifests whose `subject` is a digest.

use http::StatusCode;

use super::Ctx;
use super::response::Reply;
use crate::digest::Digest;
use crate::error::RegistryError;
use crate::layout;
use crate::manifest::{Descriptor, OCI_INDEX};
use crate::names::RepoName;
use crate::step::{Response, Store};

pub(super) async fn list(
    ctx: &Ctx,
    name: &RepoName,
    subject: &Digest,
    artifact_type: Option<String>,
) -> Result<Response, RegistryError> {
    let dir = layout::referrers_dir(name, subject);
    let mut descriptors = Vec::new();
    for entry in ctx.list(Store::Meta, dir.clone()).await? {
        if entry.ends_with('/') {
            continue;
        }
        // An entry deleted between list and read is simply no longer a referrer.
        let Some(bytes) = ctx.read(Store::Meta, format!("{dir}{entry}")).await? else {
            continue;
        };
        let Ok(descriptor) = serde_json::from_slice::<Descriptor>(&bytes) else {
            continue;
        };
        if artifact_type
            .as_ref()
            .is_none_or(|wanted| descriptor.artifact_type.as_ref() == Some(wanted))
        {
            descriptors.push(descriptor);
        }
    }
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
