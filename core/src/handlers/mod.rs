//! Request handlers: one `async fn` per API operation, run as an [`Operation`].

mod blobs;
mod ctx;
mod listing;
mod manifests;
mod referrers;
mod response;
mod uploads;

use http::{HeaderMap, Method, StatusCode};

use crate::config::Limits;
use crate::error::RegistryError;
use crate::op::{Channel, Operation};
use crate::route::Route;
use crate::step::Response;

pub(crate) use ctx::Ctx;
use response::Reply;
pub(crate) use response::error_response;

/// What the core needs of a request before its body: the driver parses nothing.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
}

impl RequestHead {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether a body follows the head (a non-zero length, or chunked transfer).
    pub(crate) fn has_body(&self) -> bool {
        match self.content_length() {
            Some(len) => len > 0,
            None => self.headers.contains_key(http::header::TRANSFER_ENCODING),
        }
    }

    pub(crate) fn content_length(&self) -> Option<u64> {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
    }
}

/// The registry logic with its settings; cheap to share between requests.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    limits: Limits,
}

impl Registry {
    pub fn new(limits: Limits) -> Self {
        Registry { limits }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Starts the operation for one request. `seed` is fresh randomness from the driver
    /// (upload ids, lock tokens, jitter).
    pub fn handle(&self, head: RequestHead, seed: u64) -> Operation {
        let channel = Channel::default();
        let ctx = Ctx::new(channel.clone(), self.limits.clone(), seed);
        Operation::new(
            channel,
            Box::pin(async move {
                let result = match Route::parse(&head.method, &head.path, head.query.as_deref()) {
                    Ok(route) => dispatch(&ctx, &head, route).await,
                    Err(e) => Err(e),
                };
                result.unwrap_or_else(|e| error_response(&e))
            }),
        )
    }
}

async fn dispatch(ctx: &Ctx, head: &RequestHead, route: Route) -> Result<Response, RegistryError> {
    match route {
        Route::Base => Ok(Reply::new(StatusCode::OK)
            .header("docker-distribution-api-version", "registry/2.0")
            .json(&serde_json::json!({}))
            .done()),
        Route::Catalog(page) => listing::catalog(ctx, page).await,
        Route::ListTags { name, page } => listing::tags(ctx, &name, page).await,
        Route::GetManifest {
            name,
            reference,
            head: only_head,
        } => manifests::get(ctx, &name, &reference, only_head).await,
        Route::PutManifest {
            name,
            reference,
            tags,
        } => manifests::put(ctx, head, &name, &reference, tags).await,
        Route::DeleteManifest { name, reference } => {
            manifests::delete(ctx, &name, &reference).await
        }
        Route::GetBlob {
            name,
            digest,
            head: only_head,
        } => blobs::get(ctx, head, &name, &digest, only_head).await,
        Route::DeleteBlob { name, digest } => blobs::delete(ctx, &name, &digest).await,
        Route::StartUpload {
            name,
            digest,
            mount,
            from,
        } => uploads::start(ctx, head, &name, digest, mount, from).await,
        Route::UploadStatus { name, id } => uploads::status(ctx, &name, &id).await,
        Route::PatchUpload { name, id } => uploads::patch(ctx, head, &name, &id).await,
        Route::FinishUpload { name, id, digest } => {
            uploads::finish(ctx, head, &name, &id, &digest).await
        }
        Route::CancelUpload { name, id } => uploads::cancel(ctx, &name, &id).await,
        Route::Referrers {
            name,
            subject,
            artifact_type,
        } => referrers::list(ctx, &name, &subject, artifact_type).await,
    }
}
