//! The Docker token protocol's scopes (`repository:<name>:pull,push`, `registry:catalog:*`)
//! and the `access` entries of a registry token that grant them.

use serde::{Deserialize, Serialize};

/// What a scope names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Resource {
    Repository(String),
    Catalog,
}

/// One `access` entry of a token (distribution's token specification), and one requested
/// scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Access {
    /// Parses `type:name:actions`. The name may itself hold colons (`host:5000/repo` in some
    /// clients' scopes), so the type is what precedes the first colon and the actions what
    /// follows the last; a type with a class (`repository(plugin)`) is the plain type.
    pub fn parse(scope: &str) -> Option<Access> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        let kind = kind.split_once('(').map_or(kind, |(plain, _)| plain);
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        let actions = actions
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        Some(Access {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions,
        })
    }

    pub fn resource(&self) -> Option<Resource> {
        match (self.kind.as_str(), self.name.as_str()) {
            ("repository", name) => Some(Resource::Repository(name.to_owned())),
            ("registry", "catalog") => Some(Resource::Catalog),
            _ => None,
        }
    }

    /// Whether this entry grants `action` (`*` grants every action) on `resource`.
    pub fn grants(&self, resource: &Resource, action: &str) -> bool {
        self.resource().as_ref() == Some(resource)
            && self.actions.iter().any(|a| a == action || a == "*")
    }
}

/// The scope string of a challenge: `repository:<name>:<actions>` or `registry:catalog:*`.
pub fn scope_string(resource: &Resource, actions: &[&str]) -> String {
    match resource {
        Resource::Repository(name) => format!("repository:{name}:{}", actions.join(",")),
        Resource::Catalog => "registry:catalog:*".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_with_colons_and_classes() {
        let a = Access::parse("repository:host:5000/team/app:pull,push").unwrap();
        assert_eq!(a.name, "host:5000/team/app");
        assert_eq!(a.actions, ["pull", "push"]);
        let b = Access::parse("repository(plugin):app:pull").unwrap();
        assert_eq!(b.kind, "repository");
        assert_eq!(
            Access::parse("registry:catalog:*").unwrap().resource(),
            Some(Resource::Catalog)
        );
        assert!(Access::parse("repository::pull").is_none());
        assert!(Access::parse("nonsense").is_none());
    }

    #[test]
    fn a_star_grants_every_action_of_its_resource_only() {
        let a = Access::parse("repository:app:*").unwrap();
        let app = Resource::Repository("app".into());
        assert!(a.grants(&app, "delete"));
        assert!(!a.grants(&Resource::Repository("other".into()), "pull"));
    }
}
