//! Settings that apply to a repository by its name or a prefix of it
//! (`[repository."<name or prefix>"]`): its access policy, whether its tags are immutable,
//! whether it mirrors other registries, and which tags a collection keeps. The most
//! specific entry wins.

use regex::Regex;

use crate::access::{Policy, RepositoryPolicies};
use crate::mirror::Mirror;
use crate::retention::Retention;

/// Tags that, once pushed, may not be re-pointed or deleted.
#[derive(Debug, Clone)]
pub struct ImmutableTags {
    /// Tags matching any of these stay mutable (`^latest$`).
    pub exclusions: Vec<Regex>,
}

impl ImmutableTags {
    pub fn covers(&self, tag: &str) -> bool {
        !self.exclusions.iter().any(|r| r.is_match(tag))
    }
}

/// One `[repository."<prefix>"]` table.
#[derive(Debug, Clone, Default)]
pub struct RepositorySettings {
    pub access_policy: Option<Policy>,
    pub immutable_tags: Option<ImmutableTags>,
    /// Its upstreams, when the repositories under the prefix mirror other registries.
    pub mirror: Option<Mirror>,
    /// Which tags a collection keeps; without, all.
    pub retention: Option<Retention>,
}

/// Every repository table, by prefix.
#[derive(Debug, Clone, Default)]
pub struct Repositories {
    /// Longest prefix first, so the first match is the most specific.
    entries: Vec<(String, RepositorySettings)>,
}

impl Repositories {
    pub fn new(entries: impl IntoIterator<Item = (String, RepositorySettings)>) -> Self {
        let mut entries: Vec<_> = entries.into_iter().collect();
        entries.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Repositories { entries }
    }

    /// The settings for repository `name`: those of the longest key that is `name` itself
    /// or a path prefix of it (`team-a` and `team-a/` both cover `team-a/app`, not
    /// `team-ab`).
    pub fn for_name(&self, name: &str) -> Option<&RepositorySettings> {
        self.entries
            .iter()
            .find(|(prefix, _)| covers(prefix, name))
            .map(|(_, settings)| settings)
    }

    /// The mirror `name` belongs to, with the prefix it is configured at: the most specific
    /// entry that has upstreams (a more specific entry setting only a policy keeps the
    /// repositories under it mirrored).
    pub fn mirror_for(&self, name: &str) -> Option<(&str, &Mirror)> {
        self.entries
            .iter()
            .filter(|(prefix, _)| covers(prefix, name))
            .find_map(|(prefix, s)| s.mirror.as_ref().map(|m| (prefix.as_str(), m)))
    }

    /// Whether `tag` of `repository` may no longer be re-pointed or deleted.
    pub fn tag_is_immutable(&self, repository: &str, tag: &str) -> bool {
        self.for_name(repository)
            .and_then(|s| s.immutable_tags.as_ref())
            .is_some_and(|immutable| immutable.covers(tag))
    }
}

impl RepositoryPolicies for Repositories {
    fn policy_for(&self, name: &str) -> Option<&Policy> {
        self.for_name(name).and_then(|r| r.access_policy.as_ref())
    }

    fn any_policy(&self) -> bool {
        self.entries.iter().any(|(_, s)| s.access_policy.is_some())
    }
}

fn covers(prefix: &str, name: &str) -> bool {
    if prefix.is_empty() {
        return true;
    }
    if prefix.ends_with('/') {
        return name.starts_with(prefix);
    }
    name == prefix
        || name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn immutable(exclusions: &[&str]) -> RepositorySettings {
        RepositorySettings {
            access_policy: None,
            immutable_tags: Some(ImmutableTags {
                exclusions: exclusions.iter().map(|e| Regex::new(e).unwrap()).collect(),
            }),
            mirror: None,
            retention: None,
        }
    }

    #[test]
    fn the_most_specific_path_prefix_wins() {
        let repos = Repositories::new([
            ("team-a".to_owned(), immutable(&[])),
            ("team-a/dev/".to_owned(), RepositorySettings::default()),
        ]);
        assert!(repos.tag_is_immutable("team-a", "v1"));
        assert!(repos.tag_is_immutable("team-a/app", "v1"));
        assert!(!repos.tag_is_immutable("team-a/dev/app", "v1"));
        assert!(!repos.tag_is_immutable("team-ab/app", "v1"));
    }

    #[test]
    fn exclusions_stay_mutable() {
        let repos = Repositories::new([("prod/".to_owned(), immutable(&["^latest$", "^dev-"]))]);
        assert!(repos.tag_is_immutable("prod/app", "v1.2"));
        assert!(!repos.tag_is_immutable("prod/app", "latest"));
        assert!(!repos.tag_is_immutable("prod/app", "dev-123"));
    }
}
