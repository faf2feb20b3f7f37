//! Access policies: CEL rules over `identity` and `request`, decided here so the simulation
//! and the property tests reach the same decisions the servers make.
//!
//! A policy has a default and rules that are exceptions to it: with `default = "deny"` a
//! request is allowed when some rule is true; with `default = "allow"` it is denied when
//! some rule is true. A rule that fails to evaluate (a missing field, a type error, a
//! result that is not a boolean) votes to deny in both modes: under `deny` it allows
//! nothing (another rule may still allow), under `allow` it denies. A policy that cannot be
//! evaluated never lets a request through.

use std::sync::Arc;

use cel::{Context, Program, Value};
use serde::Deserialize;

use super::Identity;
use super::decisions::Decisions;

/// What a policy decides when no rule says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyDefault {
    Allow,
    Deny,
}

/// The operations policies distinguish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Pull,
    Push,
    Delete,
    /// Listing a repository's tags or referrers.
    List,
    Catalog,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::List => "list",
            Action::Catalog => "catalog",
        }
    }
}

/// What is being asked, in the shape `request` has in policy expressions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccessRequest {
    pub action: Action,
    /// Empty for the catalog.
    pub repository: String,
    /// The tag or digest of a manifest request; empty otherwise.
    pub reference: String,
    /// The blob or manifest digest named by the request; empty when none is.
    pub digest: String,
    /// The `from` repository of a cross-repository mount; empty otherwise.
    pub mount_source: String,
}

impl AccessRequest {
    pub fn new(action: Action, repository: &str) -> Self {
        AccessRequest {
            action,
            repository: repository.to_owned(),
            reference: String::new(),
            digest: String::new(),
            mount_source: String::new(),
        }
    }

    fn policy_value(&self) -> Value {
        let text = |s: &str| Value::from(s.to_owned());
        Value::from(std::collections::HashMap::from([
            ("action".to_owned(), text(self.action.as_str())),
            ("repository".to_owned(), text(&self.repository)),
            ("reference".to_owned(), text(&self.reference)),
            ("digest".to_owned(), text(&self.digest)),
            ("mount_source".to_owned(), text(&self.mount_source)),
        ]))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("rule {index} ({source_text:?}) is not valid CEL: {message}")]
pub struct PolicyError {
    pub index: usize,
    pub source_text: String,
    pub message: String,
}

struct Rule {
    source: String,
    program: Program,
}

/// A compiled policy.
#[derive(Clone)]
pub struct Policy {
    default: PolicyDefault,
    rules: Arc<Vec<Rule>>,
    env: Arc<cel::Env>,
    decisions: Arc<Decisions>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rules: Vec<&str> = self.rules.iter().map(|r| r.source.as_str()).collect();
        f.debug_struct("Policy")
            .field("default", &self.default)
            .field("rules", &rules)
            .finish()
    }
}

/// The outcome of one evaluation, with the reason for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
}

impl Policy {
    /// Compiles every rule; the first that does not parse is the error.
    pub fn new(default: PolicyDefault, rules: &[String]) -> Result<Self, PolicyError> {
        let rules = rules
            .iter()
            .enumerate()
            .map(|(index, source)| {
                Program::compile(source)
                    .map(|program| Rule {
                        source: source.clone(),
                        program,
                    })
                    .map_err(|e| PolicyError {
                        index,
                        source_text: source.clone(),
                        message: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy {
            default,
            rules: Arc::new(rules),
            env: Arc::new(cel::Env::stdlib()),
            decisions: Arc::default(),
        })
    }

    pub fn decide(&self, identity: &Identity, request: &AccessRequest) -> Decision {
        self.decisions
            .recall_or(identity, request, || self.evaluate(identity, request))
    }

    fn evaluate(&self, identity: &Identity, request: &AccessRequest) -> Decision {
        let mut context = Context::with_env(self.env.clone());
        match identity.policy_value() {
            Ok(identity) => context.add_variable_from_value("identity", identity),
            Err(e) => return Decision::Deny(format!("the identity cannot be evaluated: {e}")),
        }
        context.add_variable_from_value("request", request.policy_value());
        // Each rule votes; one that cannot be evaluated votes to deny, whatever the default:
        // under "deny" it allows nothing, under "allow" it denies.
        let mut failure = None;
        for rule in self.rules.iter() {
            let vote = match rule.program.execute(&context) {
                Ok(Value::Bool(matched)) => Ok(matched),
                Ok(other) => Err(format!(
                    "rule {:?} gave {other:?}, not a boolean",
                    rule.source
                )),
                Err(e) => Err(format!("rule {:?} failed: {e}", rule.source)),
            };
            match (self.default, vote) {
                (PolicyDefault::Deny, Ok(true)) => return Decision::Allow,
                (PolicyDefault::Allow, Ok(true)) => {
                    return Decision::Deny(format!("denied by rule {:?}", rule.source));
                }
                (PolicyDefault::Allow, Err(reason)) => return Decision::Deny(reason),
                (PolicyDefault::Deny, Err(reason)) => failure = failure.or(Some(reason)),
                (_, Ok(false)) => {}
            }
        }
        match self.default {
            PolicyDefault::Allow => Decision::Allow,
            PolicyDefault::Deny => {
                Decision::Deny(failure.unwrap_or_else(|| "no rule allows it".to_owned()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(default: PolicyDefault, rules: &[&str]) -> Policy {
        let rules: Vec<String> = rules.iter().map(|r| (*r).to_owned()).collect();
        Policy::new(default, &rules).unwrap()
    }

    fn pull(repo: &str) -> AccessRequest {
        AccessRequest::new(Action::Pull, repo)
    }

    #[test]
    fn public_pull_authenticated_push() {
        let p = policy(
            PolicyDefault::Deny,
            &["request.action == 'pull'", "!identity.anonymous"],
        );
        let anon = Identity::anonymous();
        assert_eq!(p.decide(&anon, &pull("app")), Decision::Allow);
        let push = AccessRequest::new(Action::Push, "app");
        assert!(matches!(p.decide(&anon, &push), Decision::Deny(_)));
        assert_eq!(p.decide(&Identity::user("alice"), &push), Decision::Allow);
    }

    #[test]
    fn deny_rules_under_default_allow() {
        let p = policy(
            PolicyDefault::Allow,
            &["request.action == 'delete' && identity.username != 'admin'"],
        );
        let delete = AccessRequest::new(Action::Delete, "app");
        assert!(matches!(
            p.decide(&Identity::user("bob"), &delete),
            Decision::Deny(_)
        ));
        assert_eq!(p.decide(&Identity::user("admin"), &delete), Decision::Allow);
        assert_eq!(
            p.decide(&Identity::user("bob"), &pull("app")),
            Decision::Allow
        );
    }

    #[test]
    fn a_rule_that_cannot_evaluate_denies_in_both_modes() {
        let p = policy(PolicyDefault::Allow, &["identity.no_such_field == 1"]);
        assert!(matches!(
            p.decide(&Identity::user("a"), &pull("x")),
            Decision::Deny(_)
        ));
        // Under "deny" a failing rule allows nothing, and leaves the other rules their say.
        let p = policy(
            PolicyDefault::Deny,
            &["identity.no_such_field == 1", "identity.username == 'a'"],
        );
        assert_eq!(p.decide(&Identity::user("a"), &pull("x")), Decision::Allow);
        assert!(matches!(
            p.decide(&Identity::user("b"), &pull("x")),
            Decision::Deny(_)
        ));
        for default in [PolicyDefault::Allow, PolicyDefault::Deny] {
            let p = policy(default, &["'not a boolean'"]);
            assert!(matches!(
                p.decide(&Identity::user("a"), &pull("x")),
                Decision::Deny(_)
            ));
        }
    }

    #[test]
    fn claims_and_certificates_are_visible() {
        let p = policy(
            PolicyDefault::Deny,
            &[
                "identity.oidc.claims.repository == 'org/app' && request.repository.startsWith('org/')",
                "'robots' in identity.certificate.organizations",
            ],
        );
        let mut ci = Identity::anonymous();
        ci.oidc = Some(super::super::OidcIdentity {
            provider: "github".into(),
            claims: Arc::new(serde_json::json!({ "repository": "org/app" })),
        });
        assert_eq!(p.decide(&ci, &pull("org/app")), Decision::Allow);
        assert!(matches!(
            p.decide(&ci, &pull("other/app")),
            Decision::Deny(_)
        ));
        let robot = Identity::anonymous().with_certificate(super::super::CertificateNames {
            common_names: vec!["builder".into()],
            organizations: vec!["robots".into()],
        });
        assert_eq!(p.decide(&robot, &pull("anything")), Decision::Allow);
    }

    #[test]
    fn remembered_decisions_are_those_of_their_own_inputs() {
        let p = policy(
            PolicyDefault::Deny,
            &["identity.oidc.claims.ref == 'main' && request.reference != 'latest'"],
        );
        let on = |git_ref: &str| {
            let mut ci = Identity::anonymous();
            ci.oidc = Some(super::super::OidcIdentity {
                provider: "ci".into(),
                claims: Arc::new(serde_json::json!({ "ref": git_ref })),
            });
            ci
        };
        let tagged = |reference: &str| AccessRequest {
            reference: reference.into(),
            ..AccessRequest::new(Action::Push, "app")
        };
        // Asked in turns, past the memory's capacity, each answer stays its inputs' own.
        for round in 0..3 {
            for i in 0..2100 {
                let reference = format!("v{i}");
                assert_eq!(p.decide(&on("main"), &tagged(&reference)), Decision::Allow);
                assert!(
                    matches!(p.decide(&on("dev"), &tagged(&reference)), Decision::Deny(_)),
                    "round {round}, {reference}"
                );
            }
            assert!(matches!(
                p.decide(&on("main"), &tagged("latest")),
                Decision::Deny(_)
            ));
        }
    }

    #[test]
    fn invalid_rules_are_refused_with_their_index() {
        let err = Policy::new(
            PolicyDefault::Deny,
            &["true".into(), "request.action ==".into()],
        )
        .unwrap_err();
        assert_eq!(err.index, 1);
    }
}
