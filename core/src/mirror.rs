//! Repositories that mirror other registries (`[[repository."<prefix>".upstream]]`): which
//! upstreams a pull may ask, under what name, and for how long an upstream's answer about
//! a tag is trusted.
//!
//! The decisions live here and in `handlers/mirror.rs`, sans IO: the core asks the driver
//! for one upstream request at a time ([`crate::step::UpstreamRequest`]) and decides from
//! the answer whether to fetch, to serve what it has (stale or not), or to fail. The driver
//! only speaks the protocol (authentication, redirects, `Retry-After`). So the rules a
//! mirror keeps (a blob is stored only when it hashes to its name, one fetch per digest
//! across replicas through the lock store, stale tags served when the upstream is down)
//! are checked by the same tests and models as the rest of the registry. See
//! `docs/mirror.md`.

/// One upstream a mirror may ask, as the core knows it: the driver holds the client
/// (address, credentials, TLS) under the same index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRef {
    /// The upstream's index in the driver's table.
    pub index: usize,
    /// Its URL, naming it in errors and in the shared back-off record.
    pub url: String,
    /// The registry hosts `?ns=` may name to select it: the URL's host, and the registry
    /// it stands for when that differs (`docker.io` for `registry-1.docker.io`).
    pub hosts: Vec<String>,
}

/// A repository prefix's mirror settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// Asked in order.
    pub upstreams: Vec<UpstreamRef>,
    /// How long an upstream's answer about a tag is trusted before it is asked again.
    pub tag_ttl_ms: u64,
    /// Whether clients may push to (and delete from) the mirrored repositories.
    pub allow_push: bool,
}

/// The default `tag_ttl_secs`.
pub const DEFAULT_TAG_TTL_SECS: u64 = 300;

impl Mirror {
    /// The upstreams to ask, in order: those `ns` (the `?ns=` of a containerd or CRI-O
    /// mirror request) names, or every one when the request names none. A request naming
    /// a registry this mirror does not stand for asks nobody.
    pub fn candidates(&self, ns: Option<&str>) -> Vec<&UpstreamRef> {
        match ns {
            None => self.upstreams.iter().collect(),
            Some(ns) => self
                .upstreams
                .iter()
                .filter(|u| u.hosts.iter().any(|h| h.eq_ignore_ascii_case(ns)))
                .collect(),
        }
    }
}

/// The upstream's name for repository `name` of a mirror configured at `prefix`: the prefix
/// stripped (`dockerhub/library/nginx` under `dockerhub` is `library/nginx`). A mirror at
/// the root (`""`) keeps names as they are, as a Docker engine `registry-mirrors` entry
/// needs.
pub fn upstream_name(prefix: &str, name: &str) -> String {
    let rest = name.strip_prefix(prefix).unwrap_or(name);
    rest.trim_start_matches('/').to_owned()
}

/// The value of `ns` in a request's query string, if any.
pub fn ns_parameter(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "ns")
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(index: usize, hosts: &[&str]) -> UpstreamRef {
        UpstreamRef {
            index,
            url: format!("https://{}", hosts[0]),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn the_prefix_is_stripped_upstream() {
        assert_eq!(
            upstream_name("dockerhub", "dockerhub/library/nginx"),
            "library/nginx"
        );
        assert_eq!(
            upstream_name("dockerhub/", "dockerhub/library/nginx"),
            "library/nginx"
        );
        assert_eq!(upstream_name("", "library/nginx"), "library/nginx");
    }

    #[test]
    fn ns_selects_upstreams_by_host() {
        let mirror = Mirror {
            upstreams: vec![
                upstream(0, &["registry-1.docker.io", "docker.io"]),
                upstream(1, &["quay.io"]),
            ],
            tag_ttl_ms: 1,
            allow_push: false,
        };
        let indexes =
            |ns| -> Vec<usize> { mirror.candidates(ns).iter().map(|u| u.index).collect() };
        assert_eq!(indexes(None), vec![0, 1]);
        assert_eq!(indexes(Some("docker.io")), vec![0]);
        assert_eq!(indexes(Some("QUAY.io")), vec![1]);
        assert_eq!(indexes(Some("ghcr.io")), Vec::<usize>::new());
    }

    #[test]
    fn ns_is_read_from_the_query() {
        assert_eq!(ns_parameter(Some("ns=docker.io")), Some("docker.io"));
        assert_eq!(ns_parameter(Some("n=1&ns=quay.io")), Some("quay.io"));
        assert_eq!(ns_parameter(Some("ns=")), None);
        assert_eq!(ns_parameter(Some("nsx=a")), None);
        assert_eq!(ns_parameter(None), None);
    }
}
