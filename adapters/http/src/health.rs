//! `/readyz`: whether the stores this process depends on answer. The metadata store, and
//! the blob store where it is another store, must answer a stat of one fixed key (absent or
//! present, either is an answer), and Redis,
//! where locks or the cache live there, a `PING`; each within the readiness timeout. The
//! result is kept for a second, so probes from many places cost the stores at most one
//! small request each per second. (`/healthz` needs none of this: a process that answers
//! is alive.)

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{Either, join, join3, select};
use stowage_core::step::{IoError, Outcome, StoreRole};
use stowage_driver::{BoxFuture, Io};
use stowage_storage::Store;

/// How long one answer is served to every probe.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// The key stat'ed on each store: never written, so the stat is a small request whatever
/// the store holds.
const PROBE_KEY: &str = "v2/.stowage-readyz";

/// One readiness answer: ready or not, and the JSON body naming each check's result.
#[derive(Clone, Debug)]
pub(crate) struct Readiness {
    pub(crate) ready: bool,
    pub(crate) body: Bytes,
}

pub(crate) struct Probe {
    io: Io,
    timeout: Duration,
    last: Mutex<Option<(Instant, Readiness)>>,
}

impl Probe {
    pub(crate) fn new(io: Io, timeout: Duration) -> Self {
        Probe {
            io,
            timeout,
            last: Mutex::new(None),
        }
    }

    /// The last answer if it is fresh, else a new one. Two probes arriving together may
    /// both check; neither waits for the other.
    pub(crate) async fn readiness(&self) -> Readiness {
        let now = Instant::now();
        if let Some((at, answer)) = &*self.last.lock().unwrap_or_else(|p| p.into_inner())
            && now.duration_since(*at) < FRESH_FOR
        {
            return answer.clone();
        }
        let answer = self.check().await;
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((now, answer.clone()));
        answer
    }

    async fn check(&self) -> Readiness {
        let io = &self.io;
        let separate_blobs = io.stores.separate_meta().is_some();
        let metadata = self.bounded(answers(io.stores.store(StoreRole::Meta)));
        let blobs = self.bounded(async {
            if separate_blobs {
                answers(io.stores.store(StoreRole::Blobs)).await
            } else {
                Ok(())
            }
        });
        let redis = self.bounded(redis(io));
        let (metadata, blobs, redis) = join3(metadata, blobs, redis).await;
        let mut checks = vec![("metadata_store", metadata)];
        if separate_blobs {
            checks.push(("blob_store", blobs));
        }
        if io.locks.ping().is_some() || io.cache.ping().is_some() {
            checks.push(("redis", redis));
        }
        report(checks)
    }

    /// `check`'s result, or an error once the readiness timeout passes.
    async fn bounded(&self, check: impl Future<Output = Result<(), String>>) -> Result<(), String> {
        let check = std::pin::pin!(check);
        match select(check, self.io.timer.sleep(self.timeout)).await {
            Either::Left((result, _)) => result,
            Either::Right(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }
}

/// Whether `store` answers a stat of [`PROBE_KEY`].
async fn answers(store: &Store) -> Result<(), String> {
    match store.stat(PROBE_KEY).await {
        Outcome::Failed(e) => Err(e.message),
        _ => Ok(()),
    }
}

/// Pings each Redis the process uses (the locks' and the cache's; nothing when neither is
/// on Redis).
async fn redis(io: &Io) -> Result<(), String> {
    let (locks, cache) = join(
        ping("locks", io.locks.ping()),
        ping("cache", io.cache.ping()),
    )
    .await;
    match (locks, cache) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
        (Err(locks), Err(cache)) => Err(format!("{locks}; {cache}")),
    }
}

async fn ping(what: &str, ping: Option<BoxFuture<'_, Result<(), IoError>>>) -> Result<(), String> {
    match ping {
        Some(ping) => ping.await.map_err(|e| format!("{what}: {}", e.message)),
        None => Ok(()),
    }
}

/// `{"checks": {"metadata_store": "ok", "redis": "error: ..."}}`, ready when all are ok.
fn report(checks: Vec<(&'static str, Result<(), String>)>) -> Readiness {
    let ready = checks.iter().all(|(_, result)| result.is_ok());
    let checks: BTreeMap<_, _> = checks
        .into_iter()
        .map(|(name, result)| match result {
            Ok(()) => (name, "ok".to_owned()),
            Err(e) => (name, format!("error: {e}")),
        })
        .collect();
    let body = serde_json::json!({ "checks": checks }).to_string();
    Readiness {
        ready,
        body: Bytes::from(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_every_check_and_is_ready_only_when_all_are_ok() {
        let ok = report(vec![("metadata_store", Ok(())), ("redis", Ok(()))]);
        assert!(ok.ready);
        assert_eq!(
            ok.body,
            r#"{"checks":{"metadata_store":"ok","redis":"ok"}}"#
        );
        let failed = report(vec![
            ("metadata_store", Ok(())),
            ("redis", Err("locks: connection refused".into())),
        ]);
        assert!(!failed.ready);
        let json: serde_json::Value = serde_json::from_slice(&failed.body).unwrap();
        assert_eq!(json["checks"]["redis"], "error: locks: connection refused");
        assert_eq!(json["checks"]["metadata_store"], "ok");
    }
}
