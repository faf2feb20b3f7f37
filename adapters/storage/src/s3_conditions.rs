//! Which write conditions an S3 store enforces, and so which ones Stowage sends.
//!
//! Stores differ: AWS enforces `If-None-Match: *` and `If-Match` on PutObject and
//! CompleteMultipartUpload but documents neither on CopyObject; some stores ignore the headers
//! and overwrite anyway (Garage), some answer `501 NotImplemented` or `400`. A condition the
//! store ignores protects nothing, and one it rejects would fail every commit, so with
//! `conditional_writes = "auto"` a probe at startup tries each on a scratch key and only the
//! enforced ones are sent; the others are left to the lock, as on the filesystem. A request
//! that still fails with 400/501 while carrying a condition is retried once without it; if
//! that succeeds the store rejects the condition, and it is sent no more.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use opendal::{ErrorKind, Operator};

use crate::settings::ConditionalWrites;

/// One condition Stowage may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Condition {
    /// `If-None-Match: *` on PutObject and CompleteMultipartUpload.
    CreateNew,
    /// `If-Match: <etag>` on PutObject.
    IfMatch,
    /// `If-None-Match: *` on CopyObject, which AWS does not document.
    CopyCreateNew,
}

impl Condition {
    fn describe(self) -> &'static str {
        match self {
            Condition::CreateNew => "If-None-Match on PutObject",
            Condition::IfMatch => "If-Match on PutObject",
            Condition::CopyCreateNew => "If-None-Match on CopyObject",
        }
    }
}

/// What a store does with one condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Support {
    /// Refuses the write when the condition does not hold (412).
    Enforced,
    /// Writes anyway.
    Ignored,
    /// Refuses the request because of the header (400, 501).
    Rejected,
}

impl Support {
    fn as_str(self) -> &'static str {
        match self {
            Support::Enforced => "enforced",
            Support::Ignored => "ignored",
            Support::Rejected => "rejected",
        }
    }
}

/// The conditions one S3 store is sent, shared by the clones of its backend.
#[derive(Debug)]
pub(crate) struct Conditions {
    mode: ConditionalWrites,
    create_new: AtomicBool,
    if_match: AtomicBool,
    copy_create_new: AtomicBool,
}

impl Conditions {
    /// Before any probe: `off` sends none; `on` and `auto` send those AWS documents (a
    /// store that rejects one is caught at its first use).
    pub(crate) fn new(mode: ConditionalWrites) -> Self {
        let documented = mode != ConditionalWrites::Off;
        Conditions {
            mode,
            create_new: AtomicBool::new(documented),
            if_match: AtomicBool::new(documented),
            copy_create_new: AtomicBool::new(false),
        }
    }

    fn flag(&self, condition: Condition) -> &AtomicBool {
        match condition {
            Condition::CreateNew => &self.create_new,
            Condition::IfMatch => &self.if_match,
            Condition::CopyCreateNew => &self.copy_create_new,
        }
    }

    pub(crate) fn sends(&self, condition: Condition) -> bool {
        self.flag(condition).load(Ordering::Relaxed)
    }

    /// After a request carrying `condition` failed with 400/501 and succeeded without it.
    pub(crate) fn rejected_at_run_time(&self, condition: Condition, error: &dyn std::fmt::Display) {
        if self.flag(condition).swap(false, Ordering::Relaxed) {
            tracing::warn!(
                condition = condition.describe(),
                error = %error,
                "the S3 store rejected a write condition and accepted the write without it: \
                 it is sent no more, and locks alone guard these commits"
            );
        }
    }

    /// With `auto`, finds what the store does with each condition under `op`'s root and
    /// sends the enforced ones only; logs what it found. A probe that cannot finish (the
    /// store unreachable) leaves the documented conditions on.
    pub(crate) async fn probe(&self, op: &Operator, location: &str) {
        if self.mode != ConditionalWrites::Auto {
            tracing::info!(
                location,
                conditional_writes = ?self.mode,
                "S3 write conditions not probed"
            );
            return;
        }
        match probe(op).await {
            Ok(found) => {
                for (condition, support) in found.each() {
                    self.flag(condition)
                        .store(support == Support::Enforced, Ordering::Relaxed);
                }
                let guarded = found.each().iter().all(|(_, s)| *s == Support::Enforced);
                tracing::info!(
                    location,
                    if_none_match_put = found.create_new.as_str(),
                    if_match_put = found.if_match.as_str(),
                    if_none_match_copy = found.copy_create_new.as_str(),
                    "S3 write conditions probed: only enforced ones are sent"
                );
                if found.create_new != Support::Enforced || found.if_match != Support::Enforced {
                    tracing::warn!(
                        location,
                        "this S3 store does not enforce conditional writes: a commit whose \
                         lock expired while it paused can overwrite a newer one; locks alone \
                         guard commits (Redis locks for several replicas)"
                    );
                } else if !guarded {
                    tracing::info!(
                        location,
                        "copies are not conditional here; they only write content addresses, \
                         where a repeated copy writes the same bytes"
                    );
                }
            }
            Err(e) => tracing::warn!(
                location,
                error = %e,
                "could not probe S3 write conditions: sending the documented ones"
            ),
        }
    }
}

/// What the probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probed {
    pub(crate) create_new: Support,
    pub(crate) if_match: Support,
    pub(crate) copy_create_new: Support,
}

impl Probed {
    fn each(&self) -> [(Condition, Support); 3] {
        [
            (Condition::CreateNew, self.create_new),
            (Condition::IfMatch, self.if_match),
            (Condition::CopyCreateNew, self.copy_create_new),
        ]
    }
}

/// Whether a failed request may have failed because of a condition it carried: S3 answered
/// 400 or 501 (`NotImplemented`), not a retryable error.
pub(crate) fn maybe_rejected(error: &opendal::Error) -> bool {
    let text = error.to_string();
    !error.is_temporary()
        && error.kind() == ErrorKind::Unexpected
        && (text.contains("status: 400") || text.contains("status: 501"))
}

/// As [`maybe_rejected`], for an OpenDAL error carried in an I/O error.
pub(crate) fn maybe_rejected_io(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<opendal::Error>())
        .is_some_and(maybe_rejected)
}

/// The answer to a write whose condition does not hold.
fn support<T>(result: opendal::Result<T>) -> opendal::Result<Support> {
    match result {
        Ok(_) => Ok(Support::Ignored),
        Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(Support::Enforced),
        Err(e) if maybe_rejected(&e) => Ok(Support::Rejected),
        Err(e) => Err(e),
    }
}

/// A folder for scratch objects under the store's root, unique to this process and moment.
pub(crate) fn scratch_folder() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("_stowage_probe/{}-{nanos}", std::process::id())
}

async fn probe(op: &Operator) -> opendal::Result<Probed> {
    let folder = scratch_folder();
    let (a, b) = (format!("{folder}/a"), format!("{folder}/b"));
    let found = probe_keys(op, &a, &b).await;
    for key in [&a, &b] {
        if let Err(e) = op.delete(key).await {
            tracing::warn!(key, error = %e, "could not delete an S3 probe's scratch object");
        }
    }
    found
}

async fn probe_keys(op: &Operator, a: &str, b: &str) -> opendal::Result<Probed> {
    let data = || Bytes::from_static(b"stowage write-condition probe");
    // Create-if-absent on a fresh key must succeed, then fail on the same key.
    let create_new = match op.write_with(a, data()).if_not_exists(true).await {
        Ok(_) => support(op.write_with(a, data()).if_not_exists(true).await)?,
        Err(e) if maybe_rejected(&e) => Support::Rejected,
        Err(e) => return Err(e),
    };
    op.write(a, data()).await?;
    let if_match = support(
        op.write_with(a, data())
            .if_match("\"00000000000000000000000000000000\"")
            .await,
    )?;
    op.write(b, data()).await?;
    let copy_create_new = support(op.copy_with(a, b).if_not_exists(true).await)?;
    Ok(Probed {
        create_new,
        if_match,
        copy_create_new,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16, temporary: bool) -> opendal::Error {
        let e = opendal::Error::new(ErrorKind::Unexpected, "NotImplemented").with_context(
            "response",
            format!("Parts {{ status: {status}, version: HTTP/1.1, headers: {{}} }}"),
        );
        if temporary { e.set_temporary() } else { e }
    }

    #[test]
    fn only_permanent_400_and_501_answers_may_be_rejections() {
        assert!(maybe_rejected(&answered(501, false)));
        assert!(maybe_rejected(&answered(400, false)));
        assert!(!maybe_rejected(&answered(503, true)));
        assert!(!maybe_rejected(&answered(403, false)));
        let io = std::io::Error::other(answered(501, false));
        assert!(maybe_rejected_io(&io));
        assert!(!maybe_rejected_io(&std::io::Error::other("status: 501")));
    }

    #[test]
    fn a_write_that_went_through_means_the_condition_was_ignored() {
        assert_eq!(support(Ok(())).unwrap(), Support::Ignored);
        let refused = opendal::Error::new(ErrorKind::ConditionNotMatch, "412");
        assert_eq!(support::<()>(Err(refused)).unwrap(), Support::Enforced);
        assert_eq!(
            support::<()>(Err(answered(501, false))).unwrap(),
            Support::Rejected
        );
        assert!(support::<()>(Err(answered(503, true))).is_err());
    }

    #[test]
    fn off_sends_nothing_and_auto_starts_with_the_documented_conditions() {
        let off = Conditions::new(ConditionalWrites::Off);
        assert!(!off.sends(Condition::CreateNew) && !off.sends(Condition::IfMatch));
        let auto = Conditions::new(ConditionalWrites::Auto);
        assert!(auto.sends(Condition::CreateNew) && auto.sends(Condition::IfMatch));
        assert!(!auto.sends(Condition::CopyCreateNew));
        auto.rejected_at_run_time(Condition::CreateNew, &"501");
        assert!(!auto.sends(Condition::CreateNew) && auto.sends(Condition::IfMatch));
    }
}
