//! The mirror keys of a `[repository."<prefix>"]` table: `[[...upstream]]` entries,
//! `tag_ttl_secs` and `allow_push`, compiled into the core's [`Mirror`] and the upstream
//! client's settings. Upstreams are numbered in the order the tables are read, the same
//! order for both.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use stowage_core::mirror::{DEFAULT_TAG_TTL_SECS, Mirror, UpstreamRef};
use stowage_upstream::{CredentialSettings, UpstreamSettings};
use url::Url;

use crate::invalid::Invalid;

/// `[[repository."<prefix>".upstream]]`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamEntry {
    pub url: String,
    /// The registry a containerd or CRI-O `?ns=` names this upstream by, when it is not the
    /// URL's host (`docker.io` for `https://registry-1.docker.io`).
    pub ns: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The password, read from a file instead.
    pub password_file: Option<PathBuf>,
    /// A bearer token sent as it is, read from a file.
    pub token_file: Option<PathBuf>,
    /// PEM: CAs to trust besides the platform's.
    pub ca_bundle: Option<PathBuf>,
    /// PEM: a client certificate and its key, for an upstream that asks for one.
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// How long connecting, and then each wait for more of an answer, may take.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_timeout_secs() -> u64 {
    30
}

impl std::fmt::Debug for UpstreamEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamEntry")
            .field("url", &self.url)
            .field("ns", &self.ns)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .field("token_file", &self.token_file)
            .finish_non_exhaustive()
    }
}

/// The mirror a table configures, if it names upstreams; `next` is the number its first
/// upstream gets.
pub fn compile(
    key: &str,
    upstream: &[UpstreamEntry],
    tag_ttl_secs: Option<u64>,
    allow_push: bool,
    next: &mut usize,
) -> Result<Option<Mirror>, Invalid> {
    if upstream.is_empty() {
        if tag_ttl_secs.is_some() || allow_push {
            return Err(Invalid {
                key: key.to_owned(),
                reason: "tag_ttl_secs and allow_push only apply to a table with upstreams".into(),
            });
        }
        return Ok(None);
    }
    let mut upstreams = Vec::with_capacity(upstream.len());
    for (n, upstream) in upstream.iter().enumerate() {
        let at = format!("{key}.upstream[{n}]");
        let url = checked_url(&at, upstream)?;
        settings(&at, upstream)?;
        let mut hosts: Vec<String> = url.host_str().map(str::to_owned).into_iter().collect();
        hosts.extend(upstream.ns.clone());
        upstreams.push(UpstreamRef {
            index: *next,
            url: upstream.url.clone(),
            hosts,
        });
        *next += 1;
    }
    Ok(Some(Mirror {
        upstreams,
        tag_ttl_ms: tag_ttl_secs.unwrap_or(DEFAULT_TAG_TTL_SECS) * 1000,
        allow_push,
    }))
}

fn checked_url(key: &str, entry: &UpstreamEntry) -> Result<Url, Invalid> {
    let invalid = |reason: String| Invalid {
        key: format!("{key}.url"),
        reason,
    };
    let url = Url::parse(&entry.url).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid("an http or https URL with a host is needed".into()));
    }
    Ok(url)
}

pub(crate) fn settings(key: &str, entry: &UpstreamEntry) -> Result<UpstreamSettings, Invalid> {
    let invalid = |reason: &str| Invalid {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    let credentials = match (
        &entry.username,
        &entry.password,
        &entry.password_file,
        &entry.token_file,
    ) {
        (None, None, None, None) => CredentialSettings::Anonymous,
        (Some(username), Some(password), None, None) => CredentialSettings::Password {
            username: username.clone(),
            password: password.clone(),
        },
        (Some(username), None, Some(path), None) => CredentialSettings::PasswordFile {
            username: username.clone(),
            path: path.clone(),
        },
        (None, None, None, Some(path)) => CredentialSettings::TokenFile(path.clone()),
        _ => {
            return Err(invalid(
                "give username with password or password_file, or token_file alone",
            ));
        }
    };
    let client_identity = match (&entry.client_certificate, &entry.client_key) {
        (None, None) => None,
        (Some(certificate), Some(key)) => Some((certificate.clone(), key.clone())),
        _ => return Err(invalid("client_certificate and client_key go together")),
    };
    if entry.timeout_secs == 0 {
        return Err(invalid("timeout_secs must be at least 1"));
    }
    Ok(UpstreamSettings {
        url: entry.url.clone(),
        credentials,
        ca_bundle: entry.ca_bundle.clone(),
        client_identity,
        timeout: Duration::from_secs(entry.timeout_secs),
    })
}
