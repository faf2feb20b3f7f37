//! The registry client a mirror asks its upstreams with (`[[repository."<prefix>".upstream]]`).
//! The core decides what to ask and what the answer means (`stowage_core::mirror`); this
//! crate speaks the protocol: authentication ([`auth`]), redirects and statuses
//! ([`client`]), and streaming a fetched blob into storage through the core's tap, which
//! keeps it invisible unless it hashes to its digest.

mod auth;
mod body;
mod challenge;
mod client;
mod status;

use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Method;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use stowage_core::digest::Digest;
use stowage_core::step::{Outcome, StorageRequest, UpstreamAnswer, UpstreamRequest};
use stowage_driver::{AnswerEarly, BoxFuture, Cache, Upstreams};
use stowage_storage::Stores;
use url::Url;

pub use auth::Credentials;

use body::ResponseBody;
use client::Upstream;
use status::failure;

/// The manifest media types a pull accepts, as a client sends them.
const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// One `[[repository."<prefix>".upstream]]` entry, with its files not yet read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub url: String,
    pub credentials: CredentialSettings,
    /// PEM: CAs trusted besides the platform's.
    pub ca_bundle: Option<PathBuf>,
    /// PEM: a client certificate and its key, for upstreams that ask for one.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// How long connecting, and then each wait for more of an answer, may take.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSettings {
    Anonymous,
    Password {
        username: String,
        password: String,
    },
    /// The password read from a file (kept out of the configuration file).
    PasswordFile {
        username: String,
        path: PathBuf,
    },
    /// A bearer token read from a file, sent as it is.
    TokenFile(PathBuf),
}

#[derive(Debug, thiserror::Error)]
#[error("upstream {url}: {reason}")]
pub struct UpstreamError {
    pub url: String,
    pub reason: String,
}

/// Every configured upstream, by the index the core names them by.
pub struct HttpUpstreams {
    upstreams: Vec<Upstream>,
    cache: Arc<dyn Cache>,
}

impl HttpUpstreams {
    /// Builds a client per upstream, reading its files now; tokens are cached in `cache`.
    pub fn new(
        settings: &[UpstreamSettings],
        cache: Arc<dyn Cache>,
    ) -> Result<Self, UpstreamError> {
        // The process-wide TLS provider; whoever installs it first installs the same one.
        static PROVIDER: Once = Once::new();
        PROVIDER.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let upstreams = settings.iter().map(build).collect::<Result<Vec<_>, _>>()?;
        Ok(HttpUpstreams { upstreams, cache })
    }

    async fn answer(
        &self,
        request: UpstreamRequest,
        stores: &Stores,
        early: Option<&AnswerEarly>,
    ) -> UpstreamAnswer {
        let index = match &request {
            UpstreamRequest::Manifest { upstream, .. }
            | UpstreamRequest::BlobExists { upstream, .. }
            | UpstreamRequest::FetchBlob { upstream, .. } => *upstream,
        };
        let Some(upstream) = self.upstreams.get(index) else {
            return UpstreamAnswer::Refused {
                reason: format!("no upstream number {index}"),
            };
        };
        match self.exchange(upstream, request, stores, early).await {
            Ok(answer) | Err(answer) => answer,
        }
    }

    async fn exchange(
        &self,
        upstream: &Upstream,
        request: UpstreamRequest,
        stores: &Stores,
        early: Option<&AnswerEarly>,
    ) -> Result<UpstreamAnswer, UpstreamAnswer> {
        let who = upstream.base.as_str();
        match request {
            UpstreamRequest::Manifest {
                repository,
                reference,
                body,
                limit,
                ..
            } => {
                let method = if body { Method::GET } else { Method::HEAD };
                let path = format!("v2/{repository}/manifests/{reference}");
                let mut response = upstream
                    .send(
                        &self.cache,
                        method,
                        &path,
                        &MANIFEST_TYPES,
                        &pull_scope(&repository),
                    )
                    .await?;
                if let Some(answer) = failure(response.status(), response.headers(), who) {
                    return Err(answer);
                }
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let digest = header("docker-content-digest").and_then(|d| d.parse::<Digest>().ok());
                let media_type = header(CONTENT_TYPE.as_str());
                let body = match body {
                    true => Some(read_limited(&mut response, limit, who).await?),
                    false => None,
                };
                Ok(UpstreamAnswer::Manifest {
                    digest,
                    media_type,
                    body,
                })
            }
            UpstreamRequest::BlobExists {
                repository, digest, ..
            } => {
                let path = format!("v2/{repository}/blobs/{digest}");
                let response = upstream
                    .send(
                        &self.cache,
                        Method::HEAD,
                        &path,
                        &[],
                        &pull_scope(&repository),
                    )
                    .await?;
                match failure(response.status(), response.headers(), who) {
                    Some(answer) => Err(answer),
                    None => Ok(UpstreamAnswer::Found),
                }
            }
            UpstreamRequest::FetchBlob {
                repository,
                digest,
                store,
                key,
                tap,
                serve,
                ..
            } => {
                let path = format!("v2/{repository}/blobs/{digest}");
                let response = upstream
                    .send(
                        &self.cache,
                        Method::GET,
                        &path,
                        &[],
                        &pull_scope(&repository),
                    )
                    .await?;
                if let Some(answer) = failure(response.status(), response.headers(), who) {
                    return Err(answer);
                }
                let write = StorageRequest::WriteBody {
                    store,
                    key,
                    tap: *tap,
                };
                let length = response.headers().get(CONTENT_LENGTH).cloned();
                let mut body = ResponseBody(response);
                if let (Some(mut headers), Some(early)) = (serve, early) {
                    match length {
                        Some(length) => headers.insert(CONTENT_LENGTH, length),
                        None => headers.remove(CONTENT_LENGTH),
                    };
                    // A client that stalls is cut before the upstream's read timeout
                    // would fail the fetch.
                    match early.open(headers, body, upstream.read_timeout / 2) {
                        Ok(mut tee) => {
                            let outcome = stores.perform(write, &mut tee).await;
                            let stored = matches!(outcome, Outcome::Body { error: None, .. });
                            tee.finish(stored).await;
                            return fetched(outcome, true, who);
                        }
                        // Answered already, or nobody waits: stored only.
                        Err(source) => body = source,
                    }
                }
                fetched(stores.perform(write, &mut body).await, false, who)
            }
        }
    }
}

/// What storing a fetched blob came to.
fn fetched(outcome: Outcome, served: bool, who: &str) -> Result<UpstreamAnswer, UpstreamAnswer> {
    match outcome {
        Outcome::Body { tap, error } => Ok(UpstreamAnswer::Fetched { tap, error, served }),
        Outcome::Failed(e) => Err(unavailable(who, &format!("storing the blob failed: {e}"))),
        other => Err(unavailable(
            who,
            &format!("storing the blob: unexpected {other:?}"),
        )),
    }
}

fn unavailable(who: &str, reason: &str) -> UpstreamAnswer {
    UpstreamAnswer::Unavailable {
        reason: format!("{who}: {reason}"),
        retry_after_ms: None,
    }
}

impl Upstreams for HttpUpstreams {
    fn perform<'a>(
        &'a self,
        request: UpstreamRequest,
        stores: &'a Stores,
        early: Option<&'a AnswerEarly>,
    ) -> BoxFuture<'a, UpstreamAnswer> {
        Box::pin(self.answer(request, stores, early))
    }
}

fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

async fn read_limited(
    response: &mut reqwest::Response,
    limit: u64,
    who: &str,
) -> Result<Bytes, UpstreamAnswer> {
    let mut body = BytesMut::new();
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|e| UpstreamAnswer::Unavailable {
                reason: format!("{who}: the answer broke off: {e}"),
                retry_after_ms: None,
            })?;
        let Some(chunk) = chunk else {
            return Ok(body.freeze());
        };
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(UpstreamAnswer::Refused {
                reason: format!("{who}: a manifest larger than {limit} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
}

fn build(settings: &UpstreamSettings) -> Result<Upstream, UpstreamError> {
    let error = |reason: String| UpstreamError {
        url: settings.url.clone(),
        reason,
    };
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|e| error(format!("cannot read {}: {e}", path.display())))
    };
    let read_text = |path: &PathBuf| -> Result<String, UpstreamError> {
        let bytes = read(path)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| error(format!("{} is not text", path.display())))?;
        Ok(text.trim().to_owned())
    };
    let mut base = Url::parse(&settings.url).map_err(|e| error(e.to_string()))?;
    if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
        return Err(error("not an http or https URL".to_owned()));
    }
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    let credentials = match &settings.credentials {
        CredentialSettings::Anonymous => Credentials::Anonymous,
        CredentialSettings::Password { username, password } => Credentials::Basic {
            username: username.clone(),
            password: password.clone(),
        },
        CredentialSettings::PasswordFile { username, path } => Credentials::Basic {
            username: username.clone(),
            password: read_text(path)?,
        },
        CredentialSettings::TokenFile(path) => Credentials::Token(read_text(path)?),
    };
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(settings.timeout)
        .read_timeout(settings.timeout);
    if let Some(bundle) = &settings.ca_bundle {
        let certificates = reqwest::Certificate::from_pem_bundle(&read(bundle)?)
            .map_err(|e| error(format!("{}: {e}", bundle.display())))?;
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    if let Some((certificate, key)) = &settings.client_identity {
        let mut pem = read(certificate)?;
        pem.push(b'\n');
        pem.extend(read(key)?);
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|e| error(format!("client certificate: {e}")))?;
        builder = builder.identity(identity);
    }
    let client = builder.build().map_err(|e| error(e.to_string()))?;
    Ok(Upstream::new(base, client, credentials, settings.timeout))
}
