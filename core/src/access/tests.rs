use http::Method;

use super::*;
use crate::repositories::{Repositories, RepositorySettings};

fn route(method: Method, path: &str, query: Option<&str>) -> Route {
    Route::parse(&method, path, query).unwrap()
}

fn policy(default: PolicyDefault, rules: &[&str]) -> Policy {
    let rules: Vec<String> = rules.iter().map(|r| (*r).to_owned()).collect();
    Policy::new(default, &rules).unwrap()
}

fn bearer(global: Option<Policy>) -> AccessControl {
    AccessControl {
        challenge: Challenge::Bearer {
            realm: String::new(),
            service: "stowage".into(),
        },
        global_policy: global,
    }
}

fn caller(authentication: Authentication) -> Caller {
    Caller {
        authentication,
        tls: true,
    }
}

fn user(name: &str) -> Caller {
    caller(Authentication::Identified(Identity::user(name)))
}

#[test]
fn an_open_registry_allows_everything() {
    let access = AccessControl::default();
    let repos = Repositories::default();
    let push = needs(&route(Method::PUT, "/v2/app/manifests/v1", None));
    assert!(
        access
            .authorize(&repos, &Caller::anonymous(), &push, None)
            .is_ok()
    );
}

#[test]
fn without_a_policy_a_login_requires_authentication() {
    let access = bearer(None);
    let repos = Repositories::default();
    let pull = needs(&route(Method::GET, "/v2/app/manifests/v1", None));
    let refused = access
        .authorize(
            &repos,
            &caller(Authentication::Anonymous),
            &pull,
            Some("reg:5000"),
        )
        .unwrap_err();
    assert_eq!(refused.error.code, ErrorCode::Unauthorized);
    assert_eq!(
        refused.challenge.as_deref(),
        Some(
            "Bearer realm=\"https://reg:5000/token\",service=\"stowage\",scope=\"repository:app:pull\""
        )
    );
    assert!(
        access
            .authorize(&repos, &user("alice"), &pull, None)
            .is_ok()
    );
    // The base endpoint tells a client to log in, and accepts any identity.
    let base = needs(&Route::Base);
    assert!(
        access
            .authorize(&repos, &Caller::anonymous(), &base, None)
            .is_err()
    );
    assert!(
        access
            .authorize(&repos, &user("alice"), &base, None)
            .is_ok()
    );
}

#[test]
fn failed_credentials_are_refused_even_where_anonymous_is_allowed() {
    let access = bearer(Some(policy(PolicyDefault::Allow, &[])));
    let repos = Repositories::default();
    let pull = needs(&route(Method::GET, "/v2/app/manifests/v1", None));
    let failed = caller(Authentication::Failed("bad password".into()));
    let refused = access.authorize(&repos, &failed, &pull, None).unwrap_err();
    assert_eq!(refused.error.code, ErrorCode::Unauthorized);
}

#[test]
fn an_authenticated_caller_the_policy_refuses_gets_403() {
    let access = bearer(Some(policy(
        PolicyDefault::Deny,
        &["request.action == 'pull'", "identity.username == 'ci'"],
    )));
    let repos = Repositories::default();
    let push = needs(&route(Method::POST, "/v2/app/blobs/uploads/", None));
    let refused = access
        .authorize(&repos, &user("reader"), &push, None)
        .unwrap_err();
    assert_eq!(refused.error.code, ErrorCode::Denied);
    assert!(refused.challenge.is_none());
    let anonymous = access
        .authorize(&repos, &Caller::anonymous(), &push, None)
        .unwrap_err();
    assert_eq!(anonymous.error.code, ErrorCode::Unauthorized);
    assert!(access.authorize(&repos, &user("ci"), &push, None).is_ok());
}

#[test]
fn a_mount_needs_pull_on_its_source() {
    let access = bearer(Some(policy(
        PolicyDefault::Deny,
        &["request.repository == 'mine'"],
    )));
    let repos = Repositories::default();
    let digest = format!("sha256:{}", "a".repeat(64));
    let mount = needs(&route(
        Method::POST,
        "/v2/mine/blobs/uploads/",
        Some(&format!("mount={digest}&from=theirs")),
    ));
    assert_eq!(mount.len(), 2);
    assert_eq!(mount[0].request.mount_source, "theirs");
    let refused = access
        .authorize(&repos, &user("alice"), &mount, None)
        .unwrap_err();
    assert!(refused.error.message.contains("pull theirs"));
}

#[test]
fn tokens_grant_exactly_their_access() {
    let access = bearer(None);
    let repos = Repositories::default();
    let token = caller(Authentication::Token {
        identity: Identity::user("alice"),
        access: vec![Access::parse("repository:app:pull").unwrap()].into(),
    });
    let pull = needs(&route(Method::GET, "/v2/app/manifests/v1", None));
    assert!(access.authorize(&repos, &token, &pull, None).is_ok());
    let push = needs(&route(Method::PUT, "/v2/app/manifests/v1", None));
    let refused = access.authorize(&repos, &token, &push, None).unwrap_err();
    assert_eq!(refused.error.code, ErrorCode::Unauthorized);
    let challenge = refused.challenge.unwrap();
    assert!(challenge.contains("scope=\"repository:app:pull,push\""));
    assert!(challenge.ends_with(",error=\"insufficient_scope\""));
    let other = needs(&route(Method::GET, "/v2/other/manifests/v1", None));
    assert!(access.authorize(&repos, &token, &other, None).is_err());
}

#[test]
fn grants_are_what_the_policy_allows_of_what_was_asked() {
    let access = bearer(Some(policy(
        PolicyDefault::Deny,
        &[
            "request.action == 'pull'",
            "identity.username == 'alice' && request.repository.startsWith('team-a/')",
        ],
    )));
    let repos = Repositories::new([(
        "team-a/frozen".to_owned(),
        RepositorySettings {
            access_policy: Some(policy(
                PolicyDefault::Allow,
                &["request.action == 'delete'"],
            )),
            immutable_tags: None,
            mirror: None,
            retention: None,
        },
    )]);
    let asked = |s: &str| vec![Access::parse(s).unwrap()];
    let alice = Identity::user("alice");
    let granted = access.grant(
        &repos,
        &alice,
        &asked("repository:team-a/app:pull,push,delete"),
    );
    assert_eq!(granted[0].actions, ["pull", "push", "delete"]);
    let granted = access.grant(&repos, &alice, &asked("repository:team-a/frozen:*"));
    assert_eq!(granted[0].actions, ["pull", "push"]);
    let granted = access.grant(&repos, &alice, &asked("repository:team-b/app:pull,push"));
    assert_eq!(granted[0].actions, ["pull"]);
    let granted = access.grant(
        &repos,
        &Identity::anonymous(),
        &asked("repository:team-a/app:push"),
    );
    assert!(granted.is_empty());
    assert!(
        access
            .grant(&repos, &alice, &asked("repository:Not_Valid:pull"))
            .is_empty()
    );
}

#[test]
fn basic_challenges_name_the_realm() {
    let access = AccessControl {
        challenge: Challenge::Basic {
            realm: "stowage".into(),
        },
        global_policy: None,
    };
    let refused = access
        .authorize(
            &Repositories::default(),
            &Caller::anonymous(),
            &needs(&Route::Base),
            None,
        )
        .unwrap_err();
    assert_eq!(
        refused.challenge.as_deref(),
        Some("Basic realm=\"stowage\"")
    );
}

#[test]
fn the_catalog_shows_what_the_caller_may_pull() {
    let access = bearer(Some(policy(
        PolicyDefault::Deny,
        &[
            "request.action == 'catalog'",
            "request.repository.startsWith('public/')",
        ],
    )));
    let repos = Repositories::default();
    let anonymous = Caller::anonymous();
    assert!(access.may_see(&repos, &anonymous, "public/app"));
    assert!(!access.may_see(&repos, &anonymous, "private/app"));
}
