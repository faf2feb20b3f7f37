//! Request routing: method, path and query become a [`Route`] with validated parts.

use http::Method;

use crate::digest::Digest;
use crate::error::{ErrorCode, RegistryError};
use crate::names::{Reference, RepoName, Tag};

/// Pagination of tag and catalog listings (`n`, `last`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub n: Option<usize>,
    pub last: Option<String>,
}

/// Every operation of the Distribution API, with its arguments parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog(Page),
    ListTags {
        name: RepoName,
        page: Page,
    },
    GetManifest {
        name: RepoName,
        reference: Reference,
        head: bool,
    },
    PutManifest {
        name: RepoName,
        reference: Reference,
        /// Extra tags from `?tag=` (only with a digest reference).
        tags: Vec<Tag>,
    },
    DeleteManifest {
        name: RepoName,
        reference: Reference,
    },
    GetBlob {
        name: RepoName,
        digest: Digest,
        head: bool,
    },
    DeleteBlob {
        name: RepoName,
        digest: Digest,
    },
    StartUpload {
        name: RepoName,
        digest: Option<Digest>,
        mount: Option<Digest>,
        from: Option<RepoName>,
    },
    UploadStatus {
        name: RepoName,
        id: UploadId,
    },
    PatchUpload {
        name: RepoName,
        id: UploadId,
    },
    FinishUpload {
        name: RepoName,
        id: UploadId,
        digest: Digest,
    },
    CancelUpload {
        name: RepoName,
        id: UploadId,
    },
    Referrers {
        name: RepoName,
        subject: Digest,
        artifact_type: Option<String>,
    },
}

/// An upload session id: letters, digits, `-` and `_`, so it is safe inside a storage key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UploadId(String);

impl UploadId {
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| UploadId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> RegistryError {
    RegistryError::new(code, message)
}

fn repo(name: &str) -> Result<RepoName, RegistryError> {
    name.parse().map_err(|_| {
        err(
            ErrorCode::NameInvalid,
            format!("invalid repository name {name:?}"),
        )
    })
}

fn digest(s: &str) -> Result<Digest, RegistryError> {
    s.parse().map_err(|e| {
        err(
            ErrorCode::DigestInvalid,
            format!("invalid digest {s:?}: {e}"),
        )
    })
}

fn upload_id(s: &str) -> Result<UploadId, RegistryError> {
    UploadId::parse(s).ok_or_else(|| err(ErrorCode::BlobUploadUnknown, "unknown upload id"))
}

/// A manifest reference: what holds a ':' must be a digest (`DIGEST_INVALID` otherwise),
/// anything else a tag (`TAG_INVALID`), so the client learns which part of its request is
/// wrong rather than being told its manifest is.
fn manifest_reference(s: &str) -> Result<Reference, RegistryError> {
    if s.contains(':') {
        return digest(s).map(Reference::Digest);
    }
    s.parse()
        .map_err(|_| err(ErrorCode::TagInvalid, format!("invalid tag {s:?}")))
}

/// Splits `rest` at the last `separator` when what follows is a single path segment:
/// references, digests and upload ids never hold a `/`, so a repository name with a
/// `manifests`, `blobs` or `referrers` component (`a/manifests/b`) still routes.
fn split_last<'a>(rest: &'a str, separator: &str) -> Option<(&'a str, &'a str)> {
    rest.rsplit_once(separator)
        .filter(|(_, tail)| !tail.contains('/'))
}

struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn page(&self) -> Result<Page, RegistryError> {
        let n =
            match self.get("n") {
                None | Some("") => None,
                Some(n) => Some(n.parse().map_err(|_| {
                    err(ErrorCode::SizeInvalid, format!("invalid page size n={n:?}"))
                })?),
            };
        Ok(Page {
            n,
            last: self
                .get("last")
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        })
    }
}

impl Route {
    /// The route's path with its variable parts named, for metrics and logs: a bounded
    /// label value that never holds a repository name, reference, digest or upload id.
    pub fn template(&self) -> &'static str {
        match self {
            Route::Base => "/v2/",
            Route::Catalog(_) => "/v2/_catalog",
            Route::ListTags { .. } => "/v2/{name}/tags/list",
            Route::GetManifest { .. }
            | Route::PutManifest { .. }
            | Route::DeleteManifest { .. } => "/v2/{name}/manifests/{reference}",
            Route::GetBlob { .. } | Route::DeleteBlob { .. } => "/v2/{name}/blobs/{digest}",
            Route::StartUpload { .. } => "/v2/{name}/blobs/uploads/",
            Route::UploadStatus { .. }
            | Route::PatchUpload { .. }
            | Route::FinishUpload { .. }
            | Route::CancelUpload { .. } => "/v2/{name}/blobs/uploads/{id}",
            Route::Referrers { .. } => "/v2/{name}/referrers/{digest}",
        }
    }

    /// The repository the request is about, if any (for the access log, never a label).
    pub fn repository(&self) -> Option<&RepoName> {
        match self {
            Route::Base | Route::Catalog(_) => None,
            Route::ListTags { name, .. }
            | Route::GetManifest { name, .. }
            | Route::PutManifest { name, .. }
            | Route::DeleteManifest { name, .. }
            | Route::GetBlob { name, .. }
            | Route::DeleteBlob { name, .. }
            | Route::StartUpload { name, .. }
            | Route::UploadStatus { name, .. }
            | Route::PatchUpload { name, .. }
            | Route::FinishUpload { name, .. }
            | Route::CancelUpload { name, .. }
            | Route::Referrers { name, .. } => Some(name),
        }
    }

    /// Routes a request. `path` is the URI path, `query` its raw query string.
    pub fn parse(method: &Method, path: &str, query: Option<&str>) -> Result<Route, RegistryError> {
        let not_found = || err(ErrorCode::NotFound, format!("no route for {path}"));
        let rest = path.strip_prefix("/v2").ok_or_else(not_found)?;
        let q = Query::parse(query);
        let allow = |methods: &[Method]| -> Result<(), RegistryError> {
            if methods.contains(method) {
                Ok(())
            } else {
                Err(err(
                    ErrorCode::MethodNotAllowed,
                    format!("{method} not allowed on {path}"),
                ))
            }
        };
        let get = [Method::GET, Method::HEAD];
        if rest.is_empty() || rest == "/" {
            allow(&get)?;
            return Ok(Route::Base);
        }
        let rest = rest.strip_prefix('/').ok_or_else(not_found)?;
        if rest == "_catalog" {
            allow(&get)?;
            return Ok(Route::Catalog(q.page()?));
        }
        if let Some(name) = rest.strip_suffix("/tags/list") {
            allow(&get)?;
            return Ok(Route::ListTags {
                name: repo(name)?,
                page: q.page()?,
            });
        }
        if let Some(name) = rest
            .strip_suffix("/blobs/uploads/")
            .or_else(|| rest.strip_suffix("/blobs/uploads"))
        {
            allow(&[Method::POST])?;
            let from = q.get("from").map(repo).transpose()?;
            return Ok(Route::StartUpload {
                name: repo(name)?,
                digest: q.get("digest").map(digest).transpose()?,
                mount: q.get("mount").map(digest).transpose()?,
                from,
            });
        }
        if let Some((name, id)) = split_last(rest, "/blobs/uploads/") {
            let (name, id) = (repo(name)?, upload_id(id)?);
            return match *method {
                Method::GET | Method::HEAD => Ok(Route::UploadStatus { name, id }),
                Method::PATCH => Ok(Route::PatchUpload { name, id }),
                Method::PUT => {
                    let d = q.get("digest").ok_or_else(|| {
                        err(ErrorCode::DigestInvalid, "PUT needs a ?digest= parameter")
                    })?;
                    Ok(Route::FinishUpload {
                        name,
                        id,
                        digest: digest(d)?,
                    })
                }
                Method::DELETE => Ok(Route::CancelUpload { name, id }),
                _ => allow(&[]).map(|_| Route::Base),
            };
        }
        if let Some((name, reference)) = split_last(rest, "/manifests/") {
            let name = repo(name)?;
            let reference = manifest_reference(reference)?;
            return match *method {
                Method::GET | Method::HEAD => Ok(Route::GetManifest {
                    name,
                    reference,
                    head: *method == Method::HEAD,
                }),
                Method::PUT => {
                    let tags = q
                        .all("tag")
                        .map(|t| {
                            t.parse().map_err(|_| {
                                err(ErrorCode::TagInvalid, format!("invalid tag {t:?}"))
                            })
                        })
                        .collect::<Result<_, _>>()?;
                    Ok(Route::PutManifest {
                        name,
                        reference,
                        tags,
                    })
                }
                Method::DELETE => Ok(Route::DeleteManifest { name, reference }),
                _ => allow(&[]).map(|_| Route::Base),
            };
        }
        if let Some((name, d)) = split_last(rest, "/blobs/") {
            let (name, digest) = (repo(name)?, digest(d)?);
            return match *method {
                Method::GET | Method::HEAD => Ok(Route::GetBlob {
                    name,
                    digest,
                    head: *method == Method::HEAD,
                }),
                Method::DELETE => Ok(Route::DeleteBlob { name, digest }),
                _ => allow(&[]).map(|_| Route::Base),
            };
        }
        if let Some((name, d)) = split_last(rest, "/referrers/") {
            allow(&get)?;
            return Ok(Route::Referrers {
                name: repo(name)?,
                subject: digest(d)?,
                artifact_type: q
                    .get("artifactType")
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned),
            });
        }
        Err(not_found())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn routes_nested_names() {
        let r = Route::parse(&Method::GET, &format!("/v2/a/b/c/blobs/{D}"), None).unwrap();
        assert!(
            matches!(r, Route::GetBlob { ref name, head: false, .. } if name.as_str() == "a/b/c")
        );
        let r = Route::parse(
            &Method::PUT,
            "/v2/a/blobs/uploads/abc-1",
            Some(&format!("digest={D}")),
        );
        assert!(matches!(r, Ok(Route::FinishUpload { .. })));
        let r = Route::parse(&Method::GET, "/v2/x/tags/list", Some("n=2&last=a")).unwrap();
        assert_eq!(
            r,
            Route::ListTags {
                name: "x".parse().unwrap(),
                page: Page {
                    n: Some(2),
                    last: Some("a".into())
                }
            }
        );
    }

    #[test]
    fn rejects_bad_parts() {
        let e = Route::parse(&Method::GET, "/v2/A/tags/list", None).unwrap_err();
        assert_eq!(e.code, ErrorCode::NameInvalid);
        let e = Route::parse(&Method::GET, "/v2/a/blobs/uploads/x%2F", None).unwrap_err();
        assert_eq!(e.code, ErrorCode::BlobUploadUnknown);
        let e = Route::parse(&Method::GET, "/v2/a/blobs/uploads/../x", None).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        let e = Route::parse(&Method::GET, "/v2/a/../b/tags/list", None).unwrap_err();
        assert_eq!(e.code, ErrorCode::NameInvalid);
        let e = Route::parse(&Method::POST, "/v2/a/tags/list", None).unwrap_err();
        assert_eq!(e.code, ErrorCode::MethodNotAllowed);
        let e = Route::parse(&Method::GET, "/v3/", None).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
    }

    #[test]
    fn names_with_endpoint_words_route() {
        let r = Route::parse(
            &Method::GET,
            &format!("/v2/team/manifests/tool/blobs/{D}"),
            None,
        );
        assert!(
            matches!(r, Ok(Route::GetBlob { ref name, .. }) if name.as_str() == "team/manifests/tool")
        );
        let r = Route::parse(&Method::GET, "/v2/a/blobs/uploads/b/manifests/latest", None);
        assert!(
            matches!(r, Ok(Route::GetManifest { ref name, .. }) if name.as_str() == "a/blobs/uploads/b")
        );
    }

    #[test]
    fn bad_manifest_references_name_what_is_wrong() {
        let code = |path: &str, query| {
            Route::parse(&Method::PUT, path, query)
                .map(|_| ())
                .unwrap_err()
                .code
        };
        assert_eq!(code("/v2/a/manifests/.bad", None), ErrorCode::TagInvalid);
        let long = format!("/v2/a/manifests/{}", "t".repeat(129));
        assert_eq!(code(&long, None), ErrorCode::TagInvalid);
        assert_eq!(
            code("/v2/a/manifests/sha256:xyz", None),
            ErrorCode::DigestInvalid
        );
        let with_tags = format!("/v2/a/manifests/{D}");
        assert_eq!(code(&with_tags, Some("tag=-x")), ErrorCode::TagInvalid);
        assert_eq!(
            ErrorCode::TagInvalid.status(),
            http::StatusCode::BAD_REQUEST
        );
        assert_eq!(ErrorCode::TagInvalid.code(), "TAG_INVALID");
    }

    #[test]
    fn templates_name_the_variable_parts_and_hold_none_of_them() {
        let cases = [
            (Method::GET, "/v2/".to_owned(), None, "/v2/"),
            (Method::GET, "/v2/_catalog".to_owned(), None, "/v2/_catalog"),
            (
                Method::GET,
                "/v2/a/b/tags/list".to_owned(),
                None,
                "/v2/{name}/tags/list",
            ),
            (
                Method::HEAD,
                "/v2/a/b/manifests/latest".to_owned(),
                None,
                "/v2/{name}/manifests/{reference}",
            ),
            (
                Method::PUT,
                format!("/v2/a/manifests/{D}"),
                None,
                "/v2/{name}/manifests/{reference}",
            ),
            (
                Method::DELETE,
                "/v2/a/manifests/v1".to_owned(),
                None,
                "/v2/{name}/manifests/{reference}",
            ),
            (
                Method::GET,
                format!("/v2/a/blobs/{D}"),
                None,
                "/v2/{name}/blobs/{digest}",
            ),
            (
                Method::DELETE,
                format!("/v2/a/blobs/{D}"),
                None,
                "/v2/{name}/blobs/{digest}",
            ),
            (
                Method::POST,
                "/v2/a/blobs/uploads/".to_owned(),
                None,
                "/v2/{name}/blobs/uploads/",
            ),
            (
                Method::PATCH,
                "/v2/a/blobs/uploads/u-1".to_owned(),
                None,
                "/v2/{name}/blobs/uploads/{id}",
            ),
            (
                Method::PUT,
                "/v2/a/blobs/uploads/u-1".to_owned(),
                Some(format!("digest={D}")),
                "/v2/{name}/blobs/uploads/{id}",
            ),
            (
                Method::GET,
                format!("/v2/a/referrers/{D}"),
                None,
                "/v2/{name}/referrers/{digest}",
            ),
        ];
        for (method, path, query, template) in cases {
            let route = Route::parse(&method, &path, query.as_deref()).unwrap();
            assert_eq!(route.template(), template, "{method} {path}");
            for part in ["a/b", "latest", "u-1", "e3b0c442"] {
                assert!(!route.template().contains(part), "{template} holds {part}");
            }
        }
    }

    #[test]
    fn the_repository_is_the_routes_name() {
        let r = Route::parse(&Method::GET, "/v2/team/app/manifests/v1", None).unwrap();
        assert_eq!(r.repository().map(RepoName::as_str), Some("team/app"));
        let r = Route::parse(&Method::GET, "/v2/_catalog", None).unwrap();
        assert_eq!(r.repository(), None);
    }

    #[test]
    fn put_manifest_collects_tags() {
        let r = Route::parse(
            &Method::PUT,
            &format!("/v2/a/manifests/{D}"),
            Some("tag=x&tag=y"),
        )
        .unwrap();
        assert!(matches!(r, Route::PutManifest { ref tags, .. } if tags.len() == 2));
    }
}
