//! Bounded label values for the HTTP metrics: each maps what a client sent or got to one of
//! a fixed few words, so a client cannot grow the number of series (a made-up method, a path
//! that routes nowhere) and no label ever holds a repository, tag, digest or user.

use http::{Method, StatusCode};
use stowage_core::access::Authentication;

/// The request method, or `other` for any method the registry does not serve.
pub(crate) fn method(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `2xx`, `4xx`, ...
pub(crate) fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The route of a path outside the Distribution API (which [`stowage_core::route::Route`]
/// names): the server's own endpoints, or `other`.
pub(crate) fn unrouted(path: &str) -> &'static str {
    match path {
        "/token" => "/token",
        "/metrics" => "/metrics",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        _ => "other",
    }
}

/// How a caller authenticated (`throttled` is decided before, see the service).
pub(crate) fn authentication(authentication: &Authentication) -> &'static str {
    match authentication {
        Authentication::Anonymous => "anonymous",
        Authentication::Identified(_) => "identified",
        Authentication::Token { .. } => "token",
        Authentication::Failed(_) => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_core::access::Identity;

    #[test]
    fn made_up_methods_and_paths_fold_into_other() {
        assert_eq!(method(&Method::GET), "GET");
        assert_eq!(method(&Method::from_bytes(b"SECRETREPO").unwrap()), "other");
        assert_eq!(unrouted("/token"), "/token");
        assert_eq!(unrouted("/readyz"), "/readyz");
        assert_eq!(unrouted("/v3/secret/repo"), "other");
    }

    #[test]
    fn statuses_fold_into_classes() {
        assert_eq!(status_class(StatusCode::OK), "2xx");
        assert_eq!(status_class(StatusCode::TEMPORARY_REDIRECT), "3xx");
        assert_eq!(status_class(StatusCode::NOT_FOUND), "4xx");
        assert_eq!(status_class(StatusCode::SERVICE_UNAVAILABLE), "5xx");
    }

    #[test]
    fn authentication_outcomes_never_name_the_user() {
        let user = Authentication::Identified(Identity::user("alice"));
        assert_eq!(authentication(&user), "identified");
        let failed = Authentication::Failed("wrong password for alice".into());
        assert_eq!(authentication(&failed), "failed");
        assert_eq!(authentication(&Authentication::Anonymous), "anonymous");
    }
}
