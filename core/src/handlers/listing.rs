//! Tag listing and the catalog, with `n`/`last` pagination and a `Link` to the next page.

use http::StatusCode;

use super::Ctx;
use crate::error::{ErrorCode, RegistryError};
use crate::layout;
use crate::names::RepoName;
use crate::response::Reply;
use crate::route::Page;
use crate::step::{Response, StoreRole};

/// Cuts one page out of sorted `items`; answers the page and whether more follow.
fn paginate(mut items: Vec<String>, page: &Page) -> (Vec<String>, bool) {
    items.sort();
    items.dedup();
    if let Some(last) = &page.last {
        items.retain(|item| item > last);
    }
    match page.n {
        Some(n) if items.len() > n => {
            items.truncate(n);
            (items, true)
        }
        _ => (items, false),
    }
}

/// The `Link` header to the page after `items` (RFC 8288).
fn next_link(path: &str, items: &[String], page: &Page) -> Option<String> {
    let (last, n) = (items.last()?, page.n?);
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("n", &n.to_string())
        .append_pair("last", last)
        .finish();
    Some(format!("<{path}?{query}>; rel=\"next\""))
}

pub(super) async fn tags(
    ctx: &Ctx,
    name: &RepoName,
    page: Page,
) -> Result<Response, RegistryError> {
    let tags: Vec<String> =
        layout::folders(ctx.list(StoreRole::Meta, layout::tags_dir(name)).await?).collect();
    if tags.is_empty() && !repository_exists(ctx, name).await? {
        return Err(RegistryError::new(
            ErrorCode::NameUnknown,
            format!("repository {name} is unknown"),
        ));
    }
    let (tags, more) = paginate(tags, &page);
    let mut reply = Reply::new(StatusCode::OK);
    if more && let Some(link) = next_link(&format!("/v2/{name}/tags/list"), &tags, &page) {
        reply = reply.header("link", link);
    }
    Ok(reply
        .json(&serde_json::json!({ "name": name.as_str(), "tags": tags }))
        .done())
}

/// Whether `name` holds manifests or layers of its own: a folder that only holds deeper
/// repositories (`a` of `a/b`) is no repository.
pub(super) async fn repository_exists(ctx: &Ctx, name: &RepoName) -> Result<bool, RegistryError> {
    let dir = format!("{}{name}/", layout::REPOSITORIES);
    let entries = ctx.list(StoreRole::Meta, dir).await?;
    Ok(entries
        .iter()
        .any(|e| REPOSITORY_MARKERS.contains(&e.as_str())))
}

/// A folder below `v2/repositories/` is a repository when it holds manifests or layers;
/// other folders are path components of deeper names.
const REPOSITORY_MARKERS: [&str; 2] = ["_manifests/", "_layers/"];

/// The repositories `visible` accepts (those the caller may pull), one page of them.
pub(super) async fn catalog(
    ctx: &Ctx,
    page: Page,
    visible: impl Fn(&str) -> bool,
) -> Result<Response, RegistryError> {
    let mut repositories = Vec::new();
    // One level of the tree at a time, its folders listed at once.
    let mut level = vec![String::new()];
    while !level.is_empty() {
        let prefixes = level
            .iter()
            .map(|path| format!("{}{path}", layout::REPOSITORIES))
            .collect();
        let listings = ctx.list_each(StoreRole::Meta, prefixes).await?;
        let mut next = Vec::new();
        for (path, entries) in level.into_iter().zip(listings) {
            if !path.is_empty()
                && entries
                    .iter()
                    .any(|e| REPOSITORY_MARKERS.contains(&e.as_str()))
            {
                repositories.push(path.trim_end_matches('/').to_owned());
            }
            for entry in entries {
                if entry.ends_with('/') && !entry.starts_with('_') {
                    next.push(format!("{path}{entry}"));
                }
            }
        }
        level = next;
    }
    repositories.retain(|r| visible(r));
    let (repositories, more) = paginate(repositories, &page);
    let mut reply = Reply::new(StatusCode::OK);
    if more && let Some(link) = next_link("/v2/_catalog", &repositories, &page) {
        reply = reply.header("link", link);
    }
    Ok(reply
        .json(&serde_json::json!({ "repositories": repositories }))
        .done())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_last() {
        let items: Vec<String> = ["c", "a", "b", "d"].map(String::from).to_vec();
        let page = Page {
            n: Some(2),
            last: Some("a".into()),
        };
        let (got, more) = paginate(items.clone(), &page);
        assert_eq!(
            (got.as_slice(), more),
            (&["b".to_string(), "c".to_string()][..], true)
        );
        let (got, more) = paginate(
            items,
            &Page {
                n: Some(0),
                last: None,
            },
        );
        assert!(got.is_empty() && more);
    }
}
