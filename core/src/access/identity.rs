//! Who is asking: what the adapters proved about the caller, in the shape policies see.

use std::collections::HashMap;

/// The names of a verified client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateNames {
    pub common_names: Vec<String>,
    pub organizations: Vec<String>,
}

/// A caller proven by an OIDC provider's token.
#[derive(Debug, Clone)]
pub struct OidcIdentity {
    /// The `[auth.oidc.<name>]` that verified the token.
    pub provider: String,
    /// The token's claims, as the provider wrote them (shared: an identity is cloned on
    /// every request its token makes).
    pub claims: std::sync::Arc<serde_json::Value>,
}

impl PartialEq for OidcIdentity {
    fn eq(&self, other: &Self) -> bool {
        // Clones of one verified token share their claims: equal without reading them.
        self.provider == other.provider
            && (std::sync::Arc::ptr_eq(&self.claims, &other.claims) || self.claims == other.claims)
    }
}

/// Everything known about a caller. Absent facts are empty strings and empty lists rather
/// than nulls, so a rule such as `identity.username.startsWith("ci-")` evaluates for every
/// caller instead of failing (and so denying) for the anonymous one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    /// A stable name for logs and tokens' `sub`: the username, `cert:<CN>`, `oidc:<provider>:<sub>`,
    /// or empty for the anonymous caller.
    pub id: String,
    /// The username proven by a password or a registry token; empty otherwise.
    pub username: String,
    pub certificate: CertificateNames,
    pub oidc: Option<OidcIdentity>,
}

impl Identity {
    pub fn anonymous() -> Self {
        Identity::default()
    }

    /// A user who proved a password (or was named by a token this registry trusts).
    pub fn user(username: &str) -> Self {
        Identity {
            id: username.to_owned(),
            username: username.to_owned(),
            ..Identity::default()
        }
    }

    /// Whether nothing at all was proven about the caller.
    pub fn is_anonymous(&self) -> bool {
        self.username.is_empty()
            && self.certificate.common_names.is_empty()
            && self.certificate.organizations.is_empty()
            && self.oidc.is_none()
    }

    /// Adds what a verified client certificate proves (the connection's, under whatever
    /// credentials the request carries).
    pub fn with_certificate(mut self, names: CertificateNames) -> Self {
        if self.id.is_empty()
            && let Some(cn) = names.common_names.first()
        {
            self.id = format!("cert:{cn}");
        }
        self.certificate = names;
        self
    }

    /// The value `identity` has in policy expressions, built directly (no JSON in between:
    /// a policy is evaluated on every request).
    pub(crate) fn policy_value(&self) -> Result<cel::Value, cel::SerializationError> {
        let list = |items: &[String]| {
            cel::Value::List(std::sync::Arc::new(
                items.iter().map(|i| cel::Value::from(i.clone())).collect(),
            ))
        };
        let (provider, claims) = match &self.oidc {
            Some(oidc) => (oidc.provider.clone(), cel::to_value(&*oidc.claims)?),
            None => (
                String::new(),
                cel::Value::from(HashMap::<String, cel::Value>::new()),
            ),
        };
        let certificate = HashMap::from([
            (
                "common_names".to_owned(),
                list(&self.certificate.common_names),
            ),
            (
                "organizations".to_owned(),
                list(&self.certificate.organizations),
            ),
        ]);
        let oidc = HashMap::from([
            ("provider".to_owned(), cel::Value::from(provider)),
            ("claims".to_owned(), claims),
        ]);
        Ok(cel::Value::from(HashMap::from([
            ("id".to_owned(), cel::Value::from(self.id.clone())),
            (
                "username".to_owned(),
                cel::Value::from(self.username.clone()),
            ),
            (
                "anonymous".to_owned(),
                cel::Value::Bool(self.is_anonymous()),
            ),
            ("certificate".to_owned(), cel::Value::from(certificate)),
            ("oidc".to_owned(), cel::Value::from(oidc)),
        ])))
    }
}
