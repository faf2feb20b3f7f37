//! Route and query parsing: total; a parsed route, written back as a path and query,
//! parses to itself; and every endpoint of every valid repository name routes to that name.
//!
//! Input: `METHOD path[?query]` (one request line), or a repository name.

use http::Method;
use stowage_core::route::{Page, Route};

/// A digest to build endpoint paths with.
const SAMPLE_DIGEST: &str =
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((method, target)) = text.split_once(' ')
        && let Ok(method) = Method::from_bytes(method.as_bytes())
    {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        if let Ok(route) = Route::parse(&method, path, query) {
            let (path, query) = render(&route);
            let again = Route::parse(&method, &path, query.as_deref());
            assert_eq!(again.as_ref(), Ok(&route), "{method} {path}?{query:?}");
        }
    }
    if text.parse::<stowage_core::names::RepoName>().is_ok() {
        check_endpoints_of(text);
    }
}

/// Every endpoint below a valid repository name routes to that name, whatever words its
/// components are (`a/manifests/b` is a valid name).
fn check_endpoints_of(name: &str) {
    let endpoints = [
        (Method::GET, "tags/list".to_owned(), None),
        (Method::GET, "manifests/latest".to_owned(), None),
        (Method::PUT, format!("manifests/{SAMPLE_DIGEST}"), None),
        (Method::GET, format!("blobs/{SAMPLE_DIGEST}"), None),
        (Method::POST, "blobs/uploads/".to_owned(), None),
        (Method::PATCH, "blobs/uploads/abc".to_owned(), None),
        (
            Method::PUT,
            "blobs/uploads/abc".to_owned(),
            Some(format!("digest={SAMPLE_DIGEST}")),
        ),
        (Method::GET, format!("referrers/{SAMPLE_DIGEST}"), None),
    ];
    for (method, endpoint, query) in endpoints {
        let path = format!("/v2/{name}/{endpoint}");
        let route = Route::parse(&method, &path, query.as_deref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(
            route.repository().map(|repository| repository.as_str()),
            Some(name),
            "{method} {path} routed to {route:?}"
        );
    }
}

/// The path and query a client would send for `route`.
fn render(route: &Route) -> (String, Option<String>) {
    let mut query = form_urlencoded::Serializer::new(String::new());
    let path = match route {
        Route::Base => "/v2/".to_owned(),
        Route::Catalog(page) => {
            append_page(&mut query, page);
            "/v2/_catalog".to_owned()
        }
        Route::ListTags { name, page } => {
            append_page(&mut query, page);
            format!("/v2/{name}/tags/list")
        }
        Route::GetManifest {
            name, reference, ..
        }
        | Route::DeleteManifest { name, reference } => format!("/v2/{name}/manifests/{reference}"),
        Route::PutManifest {
            name,
            reference,
            tags,
        } => {
            for tag in tags {
                query.append_pair("tag", tag.as_str());
            }
            format!("/v2/{name}/manifests/{reference}")
        }
        Route::GetBlob { name, digest, .. } | Route::DeleteBlob { name, digest } => {
            format!("/v2/{name}/blobs/{digest}")
        }
        Route::StartUpload {
            name,
            digest,
            mount,
            from,
        } => {
            let pairs = [("digest", digest), ("mount", mount)];
            for (key, value) in pairs {
                if let Some(value) = value {
                    query.append_pair(key, &value.to_string());
                }
            }
            if let Some(from) = from {
                query.append_pair("from", from.as_str());
            }
            format!("/v2/{name}/blobs/uploads/")
        }
        Route::UploadStatus { name, id }
        | Route::PatchUpload { name, id }
        | Route::CancelUpload { name, id } => {
            format!("/v2/{name}/blobs/uploads/{}", id.as_str())
        }
        Route::FinishUpload { name, id, digest } => {
            query.append_pair("digest", &digest.to_string());
            format!("/v2/{name}/blobs/uploads/{}", id.as_str())
        }
        Route::Referrers {
            name,
            subject,
            artifact_type,
        } => {
            if let Some(artifact_type) = artifact_type {
                query.append_pair("artifactType", artifact_type);
            }
            format!("/v2/{name}/referrers/{subject}")
        }
    };
    let query = query.finish();
    (path, (!query.is_empty()).then_some(query))
}

fn append_page(query: &mut form_urlencoded::Serializer<'_, String>, page: &Page) {
    if let Some(n) = page.n {
        query.append_pair("n", &n.to_string());
    }
    if let Some(last) = &page.last {
        query.append_pair("last", last);
    }
}
