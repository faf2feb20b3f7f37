//! `oci-conformance`: runs the OCI Distribution Spec v1.1 conformance workflows (pull, push,
//! content discovery, content management) against a registry URL, black-box, over HTTP.
//!
//! Each case gets its own fresh repository `conformance/<run-id>/<case name>` and random content,
//! so runs never interfere and can be repeated against the same registry.

mod auth;
mod case;
mod challenge;
mod client;
mod discovery;
mod error;
mod fixtures;
mod management;
mod pull;
mod push;
mod response;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;

use auth::Credentials;
use case::{Case, Env, Needs};
use client::Client;

/// Runs the OCI Distribution Spec v1.1 conformance workflows against a registry.
#[derive(Parser, Debug)]
#[command(name = "oci-conformance", version)]
struct Args {
    /// Base URL of the registry, e.g. http://127.0.0.1:5000
    #[arg(long, required_unless_present = "list")]
    url: Option<String>,

    /// Only run cases whose name contains this substring
    #[arg(long)]
    filter: Option<String>,

    /// Skip cases needing the referrers API and OCI-Subject (for pre-1.1 registries)
    #[arg(long)]
    skip_referrers: bool,

    /// Skip cases needing sha512 digests
    #[arg(long)]
    skip_sha512: bool,

    /// User name to log in with when the registry asks (Basic, or for Bearer tokens)
    #[arg(long, env = "OCI_USERNAME", requires = "password")]
    username: Option<String>,

    /// Password to log in with
    #[arg(
        long,
        env = "OCI_PASSWORD",
        hide_env_values = true,
        requires = "username"
    )]
    password: Option<String>,

    /// Per-request timeout in seconds
    #[arg(long, default_value_t = 60)]
    timeout: u64,

    /// List the case names and exit
    #[arg(long)]
    list: bool,
}

fn all_cases() -> Vec<Case> {
    let mut cases = pull::cases();
    cases.extend(push::cases());
    cases.extend(discovery::cases());
    cases.extend(management::cases());
    cases
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    let cases: Vec<Case> = all_cases()
        .into_iter()
        .filter(|c| args.filter.as_deref().is_none_or(|f| c.name.contains(f)))
        .collect();

    if args.list {
        for case in &cases {
            println!("{}", case.name);
        }
        return ExitCode::SUCCESS;
    }
    let Some(url) = args.url.as_deref() else {
        // clap enforces --url unless --list; this is only reachable if that changes.
        eprintln!("--url is required");
        return ExitCode::from(2);
    };

    fixtures::seed(run_seed());
    let run_id = fixtures::random_hex(12);
    let credentials = args
        .username
        .take()
        .zip(args.password.take())
        .map(|(username, password)| Credentials { username, password });
    let logged_in = credentials.is_some();
    let client = Client::new(url, Duration::from_secs(args.timeout), credentials);
    eprintln!(
        "oci-conformance: {} cases against {url}, repositories under conformance/{run_id}/",
        cases.len()
    );

    let (mut passed, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    for case in &cases {
        let skip_reason = match case.needs {
            Needs::Referrers if args.skip_referrers => Some("--skip-referrers"),
            Needs::Sha512 if args.skip_sha512 => Some("--skip-sha512"),
            Needs::Credentials if !logged_in => Some("needs --username and --password"),
            _ => None,
        };
        if let Some(reason) = skip_reason {
            println!("SKIP {} ({reason})", case.name);
            skipped += 1;
            continue;
        }
        let env = Env {
            c: &client,
            repo: format!("conformance/{run_id}/{}", case.name),
        };
        // A bug in a case must not take the remaining cases down with it.
        match catch_unwind(AssertUnwindSafe(|| (case.run)(&env))) {
            Ok(Ok(())) => {
                println!("PASS {}", case.name);
                passed += 1;
            }
            Ok(Err(failure)) => {
                println!("FAIL {}: {failure}", case.name);
                failed += 1;
            }
            Err(_) => {
                println!("FAIL {}: the case panicked", case.name);
                failed += 1;
            }
        }
    }

    if skipped > 0 {
        println!("{passed} passed, {failed} failed, {skipped} skipped");
    } else {
        println!("{passed} passed, {failed} failed");
    }
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Seed for this run's content and repository names: distinct across runs and processes.
fn run_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn case_names_are_unique_and_valid_repository_paths() {
        let mut seen = HashSet::new();
        for case in all_cases() {
            assert!(seen.insert(case.name), "duplicate case {}", case.name);
            for component in case.name.split('/') {
                assert!(
                    !component.is_empty()
                        && component
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                        && !component.starts_with('-')
                        && !component.ends_with('-'),
                    "case name {} is not a valid repository path",
                    case.name
                );
            }
        }
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            response::with_query("/x?_state=a", &[("artifactType", "a/b+json")]),
            "/x?_state=a&artifactType=a%2Fb%2Bjson"
        );
    }

    #[test]
    fn digests_match_known_values() {
        assert_eq!(fixtures::sha256(b""), fixtures::EMPTY_SHA256);
        assert_eq!(
            fixtures::Blob::empty_config().digest,
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }
}
