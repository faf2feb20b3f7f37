//! Request handlers: one `async fn` per API operation, run as an [`Operation`].

pub(crate) mod announce;
pub(crate) mod blobs;
mod ctx;
pub(crate) mod fence;
mod listing;
pub(crate) mod manifests;
mod mirror;
mod referrers;
mod uploads;

use http::{HeaderMap, Method, StatusCode};

use std::sync::Arc;

use crate::access::{AccessControl, Action, Caller, Refusal, needs};
use crate::config::Limits;
use crate::error::{ErrorCode, RegistryError};
use crate::events::Subscriptions;
use crate::op::{Channel, Operation};
use crate::repositories::Repositories;
use crate::rng::Entropy;
use crate::route::Route;
use crate::step::Response;

use crate::response::{Reply, error_response};
pub(crate) use ctx::{Ctx, keys};

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
    access: Arc<AccessControl>,
    pub(crate) repositories: Arc<Repositories>,
    pub(crate) subscriptions: Arc<Subscriptions>,
    gc_state_read: Arc<fence::LastRead>,
}

impl Registry {
    /// An open registry: every request allowed, no repository settings.
    pub fn new(limits: Limits) -> Self {
        Registry {
            limits,
            ..Registry::default()
        }
    }

    pub fn with_access(mut self, access: AccessControl, repositories: Repositories) -> Self {
        self.access = Arc::new(access);
        self.repositories = Arc::new(repositories);
        self
    }

    /// A push or delete in a mirrored repository is refused unless its mirror allows them:
    /// the repository's content is the upstream's.
    fn refuse_writes_to_mirrors(&self, needs: &[crate::access::Need]) -> Result<(), RegistryError> {
        for need in needs {
            let request = &need.request;
            if !matches!(request.action, Action::Push | Action::Delete) {
                continue;
            }
            if let Some((_, mirror)) = self.repositories.mirror_for(&request.repository)
                && !mirror.allow_push
            {
                return Err(RegistryError::new(
                    crate::error::ErrorCode::Denied,
                    format!(
                        "{} mirrors an upstream registry: pushes and deletes are refused (allow_push = false)",
                        request.repository
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Announces events to the webhooks `subscriptions` name.
    pub fn with_events(mut self, subscriptions: Subscriptions) -> Self {
        self.subscriptions = Arc::new(subscriptions);
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The channel and context of an operation the registry runs of its own accord (a
    /// collection, a purge): what it changes is announced by no identity.
    pub(crate) fn own_operation(&self, entropy: Entropy) -> (Channel, Ctx) {
        let channel = Channel::default();
        let audience = announce::Audience {
            subscriptions: self.subscriptions.clone(),
            identity: None,
        };
        let ctx = self.context(&channel, audience, entropy);
        (channel, ctx)
    }

    /// The context of one operation run by this registry's process.
    fn context(&self, channel: &Channel, audience: announce::Audience, entropy: Entropy) -> Ctx {
        Ctx::new(
            channel.clone(),
            self.limits.clone(),
            audience,
            entropy,
            self.gc_state_read.clone(),
        )
    }

    pub fn access(&self) -> &AccessControl {
        &self.access
    }

    pub fn repositories(&self) -> &Repositories {
        &self.repositories
    }

    /// Starts the operation for one request from `caller`, with fresh randomness from the
    /// driver (the upload id, lock tokens, jitter).
    pub fn handle(&self, head: RequestHead, caller: Caller, entropy: Entropy) -> Operation {
        let route = Route::parse(&head.method, &head.path, head.query.as_deref());
        self.handle_route(route, head, caller, entropy)
    }

    /// Whether the operation for `route` may answer before it ends: a blob GET of a mirrored
    /// repository streams a missed blob as it is fetched (see
    /// [`crate::step::UpstreamRequest::FetchBlob`]). The driver need not offer any other
    /// operation a place for an early answer.
    pub fn may_answer_early(&self, route: &Result<Route, RegistryError>) -> bool {
        match route {
            Ok(Route::GetBlob {
                name, head: false, ..
            }) => self.repositories.mirror_for(name.as_str()).is_some(),
            _ => false,
        }
    }

    /// As [`Registry::handle`], with the request already routed (a server that labels its
    /// metrics by route parses it once).
    pub fn handle_route(
        &self,
        route: Result<Route, RegistryError>,
        head: RequestHead,
        caller: Caller,
        entropy: Entropy,
    ) -> Operation {
        let channel = Channel::default();
        let identity = Some(caller.identity_id())
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
        let audience = announce::Audience {
            subscriptions: self.subscriptions.clone(),
            identity,
        };
        let ctx = self.context(&channel, audience, entropy);
        let registry = self.clone();
        Operation::new(
            channel,
            Box::pin(async move {
                let route = match route {
                    Ok(route) => route,
                    Err(e) => return error_response(&e),
                };
                let host = head.header("host");
                let needs = needs(&route);
                if let Err(refusal) =
                    registry
                        .access
                        .authorize(registry.repositories.as_ref(), &caller, &needs, host)
                {
                    return refusal_response(&refusal);
                }
                if let Err(e) = registry.refuse_writes_to_mirrors(&needs) {
                    return error_response(&e);
                }
                let request = Request {
                    ctx: &ctx,
                    head: &head,
                    caller: &caller,
                    registry: &registry,
                };
                dispatch(&request, route)
                    .await
                    .unwrap_or_else(|e| error_response(&e))
            }),
        )
    }
}

/// A `401` or `403` with its challenge.
fn refusal_response(refusal: &Refusal) -> Response {
    let mut response = error_response(&refusal.error);
    if let Some(challenge) = &refusal.challenge
        && let Ok(value) = http::HeaderValue::from_str(challenge)
    {
        response
            .headers
            .insert(http::header::WWW_AUTHENTICATE, value);
    }
    response
}

/// One request as handlers see it: the step channel, the head, the caller and the
/// registry's settings.
pub(crate) struct Request<'a> {
    ctx: &'a Ctx,
    head: &'a RequestHead,
    caller: &'a Caller,
    registry: &'a Registry,
}

impl Request<'_> {
    /// Whether a repository is shown to this caller in the catalog.
    fn may_see(&self, repository: &str) -> bool {
        self.registry
            .access
            .may_see(self.registry.repositories.as_ref(), self.caller, repository)
    }

    /// Whether a mount without `from` may look for its blob anywhere: only while nothing
    /// is enforced, since the blob could belong to a repository the caller may not pull.
    fn may_mount_from_anywhere(&self) -> bool {
        !self
            .registry
            .access
            .enforced(self.registry.repositories.as_ref())
    }

    /// The mirror settings for a pull of `name`, if it is mirrored.
    fn mirrored(&self, name: &crate::names::RepoName) -> Option<mirror::Mirrored<'_>> {
        let (prefix, settings) = self.registry.repositories.mirror_for(name.as_str())?;
        let ns = crate::mirror::ns_parameter(self.head.query.as_deref());
        Some(mirror::Mirrored::new(prefix, settings, name, ns))
    }

    fn tag_is_immutable(&self, name: &crate::names::RepoName, tag: &crate::names::Tag) -> bool {
        self.registry
            .repositories
            .tag_is_immutable(name.as_str(), tag.as_str())
    }
}

async fn dispatch(request: &Request<'_>, route: Route) -> Result<Response, RegistryError> {
    let (ctx, head) = (request.ctx, request.head);
    match route {
        Route::Base => Ok(Reply::new(StatusCode::OK)
            .header("docker-distribution-api-version", "registry/2.0")
            .json(&serde_json::json!({}))
            .done()),
        Route::Catalog(page) => listing::catalog(ctx, page, |r| request.may_see(r)).await,
        Route::ListTags { name, page } => listing::tags(ctx, &name, page).await,
        Route::GetManifest {
            name,
            reference,
            head: only_head,
        } => {
            // A mirrored repository first makes sure it holds what the reference names.
            let resolved = match request.mirrored(&name) {
                Some(m) => Some(mirror::resolve(ctx, &m, &name, &reference).await?),
                None => None,
            };
            manifests::get(ctx, &name, &reference, only_head, resolved).await
        }
        Route::PutManifest {
            name,
            reference,
            tags,
        } => manifests::put(request, &name, &reference, tags).await,
        Route::DeleteManifest { name, reference } => {
            manifests::delete(request, &name, &reference).await
        }
        Route::GetBlob {
            name,
            digest,
            head: only_head,
        } => match blobs::get(ctx, head, &name, &digest, only_head).await {
            // A mirrored repository fetches a blob it does not hold, then serves it (or
            // streams it as it arrives).
            Err(e) if e.code == ErrorCode::BlobUnknown => match request.mirrored(&name) {
                Some(m) => {
                    let serve = blobs::streamed_headers(head, &digest, only_head);
                    match mirror::fetch_blob(ctx, &m, &name, &digest, serve).await? {
                        mirror::Fetched::Stored => {
                            blobs::get(ctx, head, &name, &digest, only_head).await
                        }
                        // The client has had its answer; the driver does not send this one.
                        mirror::Fetched::Streamed => Ok(Reply::new(StatusCode::OK).done()),
                    }
                }
                None => Err(e),
            },
            answer => answer,
        },
        Route::DeleteBlob { name, digest } => blobs::delete(ctx, &name, &digest).await,
        Route::StartUpload {
            name,
            digest,
            mount,
            from,
        } => {
            let from = from.map(uploads::MountSource::Repository).or_else(|| {
                request
                    .may_mount_from_anywhere()
                    .then_some(uploads::MountSource::Anywhere)
            });
            uploads::start(ctx, head, &name, digest, mount, from).await
        }
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
