//! Access control: who may do what, decided without IO.
//!
//! The adapters authenticate (check passwords, verify tokens and certificates) and hand the
//! core an [`Authentication`]; everything after that is decided here: which access a route
//! needs, whether the caller's policy or token grants it, the `401`/`403` and its challenge,
//! which scopes a registry token may carry, and which repositories the catalog shows.

mod decisions;
mod identity;
mod policy;
mod scope;

pub use identity::{CertificateNames, Identity, OidcIdentity};
pub use policy::{AccessRequest, Action, Decision, Policy, PolicyDefault, PolicyError};
pub use scope::{Access, Resource, scope_string};

use crate::error::{ErrorCode, RegistryError};
use crate::route::Route;

/// How callers are asked to prove who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Nobody can log in: no identities are configured.
    None,
    Basic {
        realm: String,
    },
    /// The Docker token protocol. An empty `realm` means this server's own `/token`.
    Bearer {
        realm: String,
        service: String,
    },
}

/// What the adapters established about a request's caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Authentication {
    Anonymous,
    /// Proven by a password, a client certificate or an identity provider's token.
    Identified(Identity),
    /// A registry token: whom it was issued to and what it grants. The policy was applied
    /// when it was issued.
    Token {
        identity: Identity,
        /// Shared: a verified token's authentication is cloned on every request it makes.
        access: std::sync::Arc<[Access]>,
    },
    /// Credentials were presented and proved nothing (the reason is for logs).
    Failed(String),
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub authentication: Authentication,
    /// Whether the request came over TLS (the default token realm's scheme).
    pub tls: bool,
}

impl Caller {
    pub fn anonymous() -> Self {
        Caller {
            authentication: Authentication::Anonymous,
            tls: false,
        }
    }

    /// The proven identity's id ([`Identity::id`]); empty when nothing was proven.
    pub fn identity_id(&self) -> &str {
        match &self.authentication {
            Authentication::Identified(identity) | Authentication::Token { identity, .. } => {
                &identity.id
            }
            Authentication::Anonymous | Authentication::Failed(_) => "",
        }
    }

    /// The identity policies see: anonymous when nothing was proven.
    pub fn identity(&self) -> Identity {
        match &self.authentication {
            Authentication::Identified(identity) | Authentication::Token { identity, .. } => {
                identity.clone()
            }
            Authentication::Anonymous | Authentication::Failed(_) => Identity::anonymous(),
        }
    }
}

/// The registry's access settings: how to challenge, and the policy for every repository.
#[derive(Debug, Clone)]
pub struct AccessControl {
    pub challenge: Challenge,
    /// `[global.access_policy]`. Without one, but with a way to log in, authenticated
    /// callers may do everything and anonymous ones nothing.
    pub global_policy: Option<Policy>,
}

impl Default for AccessControl {
    /// Open: no challenge, no policy, every request allowed (the embedded default).
    fn default() -> Self {
        AccessControl {
            challenge: Challenge::None,
            global_policy: None,
        }
    }
}

/// Why a request was refused: the error, and for `401` the challenge to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub error: RegistryError,
    pub challenge: Option<String>,
}

/// One access a route needs: the policy's question and the token scope that answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub request: AccessRequest,
    pub resource: Resource,
    /// The token action that grants it (`pull`, `push`, `delete`, `*`).
    pub token_action: &'static str,
    /// The actions a challenge asks for, as Docker clients expect (`pull,push` for a push).
    pub challenge_actions: &'static [&'static str],
}

impl Need {
    fn repository(action: Action, name: &str) -> Need {
        let (token_action, challenge_actions): (&str, &[&str]) = match action {
            Action::Pull | Action::List => ("pull", &["pull"]),
            Action::Push => ("push", &["pull", "push"]),
            Action::Delete => ("delete", &["delete"]),
            Action::Catalog => ("*", &["*"]),
        };
        Need {
            request: AccessRequest::new(action, name),
            resource: Resource::Repository(name.to_owned()),
            token_action,
            challenge_actions,
        }
    }

    fn catalog() -> Need {
        Need {
            request: AccessRequest::new(Action::Catalog, ""),
            resource: Resource::Catalog,
            token_action: "*",
            challenge_actions: &["*"],
        }
    }
}

/// The accesses `route` needs; empty for the base endpoint.
pub fn needs(route: &Route) -> Vec<Need> {
    let with = |mut need: Need, reference: String, digest: String| {
        need.request.reference = reference;
        need.request.digest = digest;
        need
    };
    match route {
        Route::Base => Vec::new(),
        Route::Catalog(_) => vec![Need::catalog()],
        Route::ListTags { name, .. } => vec![Need::repository(Action::List, name.as_str())],
        Route::Referrers { name, subject, .. } => vec![with(
            Need::repository(Action::List, name.as_str()),
            String::new(),
            subject.to_string(),
        )],
        Route::GetManifest {
            name, reference, ..
        } => vec![with(
            Need::repository(Action::Pull, name.as_str()),
            reference.to_string(),
            reference_digest(reference),
        )],
        Route::PutManifest {
            name, reference, ..
        } => vec![with(
            Need::repository(Action::Push, name.as_str()),
            reference.to_string(),
            reference_digest(reference),
        )],
        Route::DeleteManifest { name, reference } => vec![with(
            Need::repository(Action::Delete, name.as_str()),
            reference.to_string(),
            reference_digest(reference),
        )],
        Route::GetBlob { name, digest, .. } => vec![with(
            Need::repository(Action::Pull, name.as_str()),
            String::new(),
            digest.to_string(),
        )],
        Route::DeleteBlob { name, digest } => vec![with(
            Need::repository(Action::Delete, name.as_str()),
            String::new(),
            digest.to_string(),
        )],
        Route::StartUpload {
            name,
            digest,
            mount,
            from,
        } => {
            let named = mount.as_ref().or(digest.as_ref());
            let mut push = Need::repository(Action::Push, name.as_str());
            push.request.digest = named.map(ToString::to_string).unwrap_or_default();
            let mut needs = vec![push];
            if let (Some(mount), Some(from)) = (mount, from) {
                needs[0].request.mount_source = from.to_string();
                needs.push(with(
                    Need::repository(Action::Pull, from.as_str()),
                    String::new(),
                    mount.to_string(),
                ));
            }
            needs
        }
        Route::FinishUpload { name, digest, .. } => vec![with(
            Need::repository(Action::Push, name.as_str()),
            String::new(),
            digest.to_string(),
        )],
        Route::UploadStatus { name, .. }
        | Route::PatchUpload { name, .. }
        | Route::CancelUpload { name, .. } => vec![Need::repository(Action::Push, name.as_str())],
    }
}

fn reference_digest(reference: &crate::names::Reference) -> String {
    match reference {
        crate::names::Reference::Digest(d) => d.to_string(),
        crate::names::Reference::Tag(_) => String::new(),
    }
}

/// Where access control finds each repository's own policy. The repository settings
/// ([`crate::repositories::Repositories`]) implement it, so they may hold policies without
/// access control depending on them.
pub trait RepositoryPolicies {
    /// The policy of repository `name`, if its settings give one.
    fn policy_for(&self, name: &str) -> Option<&Policy>;
    /// Whether any repository has a policy of its own.
    fn any_policy(&self) -> bool;
}

impl AccessControl {
    /// Whether any request can be refused: a way to log in or a policy exists.
    pub fn enforced(&self, repositories: &impl RepositoryPolicies) -> bool {
        self.challenge != Challenge::None
            || self.global_policy.is_some()
            || repositories.any_policy()
    }

    /// The policies' decision for `identity` on `request`: the global policy (or its
    /// implicit "authenticated callers only" when a login exists) and the repository's own,
    /// both of which must allow.
    pub fn decide(
        &self,
        repositories: &impl RepositoryPolicies,
        identity: &Identity,
        request: &AccessRequest,
    ) -> Decision {
        let global = match &self.global_policy {
            Some(policy) => policy.decide(identity, request),
            None if self.challenge != Challenge::None && identity.is_anonymous() => {
                Decision::Deny("anonymous access is not allowed".to_owned())
            }
            None => Decision::Allow,
        };
        if global != Decision::Allow || request.repository.is_empty() {
            return global;
        }
        match repositories.policy_for(&request.repository) {
            Some(policy) => policy.decide(identity, request),
            None => Decision::Allow,
        }
    }

    /// Whether `caller` may make a request needing `needs`; the refusal otherwise.
    /// `host` is the request's `Host`, for the default token realm.
    pub fn authorize(
        &self,
        repositories: &impl RepositoryPolicies,
        caller: &Caller,
        needs: &[Need],
        host: Option<&str>,
    ) -> Result<(), Refusal> {
        if !self.enforced(repositories) {
            return Ok(());
        }
        let unauthorized = |message: String, insufficient: bool| Refusal {
            error: RegistryError::new(ErrorCode::Unauthorized, message),
            challenge: self.challenge_header(needs, caller.tls, host, insufficient),
        };
        match &caller.authentication {
            Authentication::Failed(reason) => Err(unauthorized(
                format!("authentication failed: {reason}"),
                false,
            )),
            Authentication::Token { access, .. } => {
                match needs
                    .iter()
                    .find(|n| !access.iter().any(|a| a.grants(&n.resource, n.token_action)))
                {
                    Some(missing) => Err(unauthorized(
                        format!(
                            "the token does not grant {}",
                            scope_string(&missing.resource, missing.challenge_actions)
                        ),
                        true,
                    )),
                    None => Ok(()),
                }
            }
            Authentication::Anonymous | Authentication::Identified(_) => {
                let identity = caller.identity();
                if needs.is_empty() {
                    // The base endpoint: a client probing whether it must log in.
                    return if identity.is_anonymous() && self.challenge != Challenge::None {
                        Err(unauthorized("authentication required".to_owned(), false))
                    } else {
                        Ok(())
                    };
                }
                for need in needs {
                    if let Decision::Deny(reason) =
                        self.decide(repositories, &identity, &need.request)
                    {
                        let what = describe(&need.request);
                        return Err(
                            if identity.is_anonymous() && self.challenge != Challenge::None {
                                unauthorized(format!("authentication required to {what}"), false)
                            } else {
                                Refusal {
                                    error: RegistryError::new(
                                        ErrorCode::Denied,
                                        format!("not allowed to {what}: {reason}"),
                                    ),
                                    challenge: None,
                                }
                            },
                        );
                    }
                }
                Ok(())
            }
        }
    }

    /// The scopes of `requested` that `identity` may hold, as a registry token's `access`:
    /// each action kept only if the policies allow it (`*` becomes the actions allowed).
    pub fn grant(
        &self,
        repositories: &impl RepositoryPolicies,
        identity: &Identity,
        requested: &[Access],
    ) -> Vec<Access> {
        let mut granted = Vec::new();
        for want in requested {
            let allowed = |action: Action, name: &str| {
                self.decide(repositories, identity, &AccessRequest::new(action, name))
                    == Decision::Allow
            };
            let actions: Vec<String> = match want.resource() {
                Some(Resource::Catalog) if allowed(Action::Catalog, "") => vec!["*".to_owned()],
                Some(Resource::Repository(name))
                    if name.parse::<crate::names::RepoName>().is_ok() =>
                {
                    let mut actions = Vec::new();
                    for (word, action) in [
                        ("pull", Action::Pull),
                        ("push", Action::Push),
                        ("delete", Action::Delete),
                    ] {
                        let asked = want.actions.iter().any(|a| a == word || a == "*");
                        if asked && allowed(action, &name) {
                            actions.push(word.to_owned());
                        }
                    }
                    actions
                }
                _ => Vec::new(),
            };
            if !actions.is_empty() {
                granted.push(Access {
                    kind: want.kind.clone(),
                    name: want.name.clone(),
                    actions,
                });
            }
        }
        granted
    }

    /// Whether the catalog shows `repository` to `caller`.
    pub fn may_see(
        &self,
        repositories: &impl RepositoryPolicies,
        caller: &Caller,
        repository: &str,
    ) -> bool {
        !self.enforced(repositories)
            || self.decide(
                repositories,
                &caller.identity(),
                &AccessRequest::new(Action::Pull, repository),
            ) == Decision::Allow
    }

    fn challenge_header(
        &self,
        needs: &[Need],
        tls: bool,
        host: Option<&str>,
        insufficient: bool,
    ) -> Option<String> {
        match &self.challenge {
            Challenge::None => None,
            Challenge::Basic { realm } => Some(format!("Basic realm=\"{}\"", quoted(realm))),
            Challenge::Bearer { realm, service } => {
                let realm = if realm.is_empty() {
                    let scheme = if tls { "https" } else { "http" };
                    format!("{scheme}://{}/token", host.unwrap_or("localhost"))
                } else {
                    realm.clone()
                };
                let mut header = format!(
                    "Bearer realm=\"{}\",service=\"{}\"",
                    quoted(&realm),
                    quoted(service)
                );
                if !needs.is_empty() {
                    let scopes: Vec<String> = needs
                        .iter()
                        .map(|n| scope_string(&n.resource, n.challenge_actions))
                        .collect();
                    header.push_str(&format!(",scope=\"{}\"", quoted(&scopes.join(" "))));
                }
                if insufficient {
                    header.push_str(",error=\"insufficient_scope\"");
                }
                Some(header)
            }
        }
    }
}

/// What a refused request tried to do, for its error message.
fn describe(request: &AccessRequest) -> String {
    match request.action {
        Action::Catalog => "list the catalog".to_owned(),
        action => format!("{} {}", action.as_str(), request.repository),
    }
}

/// A header value's quoted-string content: quotes and backslashes cannot be escaped
/// reliably across clients, and configured names never need them.
fn quoted(value: &str) -> String {
    value.chars().filter(|c| *c != '"' && *c != '\\').collect()
}

#[cfg(test)]
mod tests;
