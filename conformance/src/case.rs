//! The unit of the suite: a named case that runs against its own fresh repository.

use crate::client::Client;
use crate::error::Failure;

/// Optional registry features a case depends on; each can be skipped from the command line so
/// the suite can run against registries that predate them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Needs {
    Nothing,
    /// The referrers API and `OCI-Subject` (distribution-spec 1.1).
    Referrers,
    /// sha512 digests for blobs and manifests.
    Sha512,
    /// Credentials (`--username`/`--password`): the case checks what anonymous requests get.
    Credentials,
}

pub type CaseFn = fn(&Env) -> Result<(), Failure>;

pub struct Case {
    /// `<workflow>/<case>`; also the tail of the case's repository name, so it must consist of
    /// valid repository path components.
    pub name: &'static str,
    pub needs: Needs,
    pub run: CaseFn,
}

impl Case {
    pub const fn new(name: &'static str, run: CaseFn) -> Case {
        Case {
            name,
            needs: Needs::Nothing,
            run,
        }
    }

    pub const fn needs(mut self, needs: Needs) -> Case {
        self.needs = needs;
        self
    }
}

/// What a running case gets: the client and a repository no other case (or earlier run) uses.
pub struct Env<'a> {
    pub c: &'a Client,
    /// `conformance/<run-id>/<case name>`.
    pub repo: String,
}

impl Env<'_> {
    /// A further fresh repository under this case's one, for cases that need several.
    pub fn sub(&self, leaf: &str) -> String {
        format!("{}/{leaf}", self.repo)
    }
}
