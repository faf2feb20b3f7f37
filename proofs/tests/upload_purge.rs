//! The purge of stale upload sessions, over the model store: it removes the sessions started
//! before the cutoff in every repository and those without a record, keeps the young ones,
//! and keeps a stale one whose lock is taken until the lock is free.

use http::{Method, StatusCode};
use stowage_core::layout;
use stowage_core::names::RepoName;
use stowage_core::purge::PurgeReport;
use stowage_core::route::UploadId;
use stowage_core::step::{LockRequest, Outcome, Step, StorageRequest, StoreRole, WriteCondition};
use stowage_core::{Limits, Registry};
use stowage_proofs::request::Request;
use stowage_proofs::store::RequestBody;
use stowage_proofs::world::{Performed, World};

struct Harness {
    registry: Registry,
    world: World,
    seed: u64,
}

impl Harness {
    fn start(&mut self, repo: &str) -> Session {
        self.seed += 1;
        let request = Request::new(Method::POST, format!("/v2/{repo}/blobs/uploads/"));
        let reply = self.world.run(&self.registry, request, self.seed);
        assert_eq!(reply.status, StatusCode::ACCEPTED);
        let id = reply.header("docker-upload-uuid").expect("an upload id");
        Session {
            name: repo.parse().unwrap(),
            id: UploadId::parse(id).unwrap(),
        }
    }

    /// Whether anything of `session` is still stored.
    fn stored(&self, session: &Session) -> bool {
        let dir = layout::upload_dir(&session.name, &session.id);
        let objects = self.world.store.objects(StoreRole::Blobs);
        objects.iter().any(|(key, _)| key.starts_with(&dir))
    }

    fn lock(&mut self, request: LockRequest) {
        let performed = self
            .world
            .perform(Step::Lock(request), &mut RequestBody::default());
        assert!(matches!(performed, Performed::Outcome(Outcome::Lock(true))));
    }

    fn purge(&mut self, cutoff_ms: u64) -> PurgeReport {
        self.seed += 1;
        let cutoff = stowage_core::time::Millis(cutoff_ms);
        self.world
            .purge_uploads(&self.registry, cutoff, self.seed)
            .expect("a purge report")
    }
}

struct Session {
    name: RepoName,
    id: UploadId,
}

#[test]
fn removes_stale_and_recordless_sessions_and_waits_for_a_taken_lock() {
    let mut h = Harness {
        registry: Registry::new(Limits::default()),
        world: World::default(),
        seed: 0,
    };
    let started = h.world.now.0;
    let old = h.start("app");
    let nested = h.start("team/deep/app");
    let in_use = h.start("app");
    h.world.now = h.world.now.plus(10_000);
    let young = h.start("app");
    let orphan = h.start("app");
    // Bytes of a request whose record is gone: nothing can continue it.
    let part = layout::upload_part(&orphan.name, &orphan.id, "part-1");
    let record = layout::upload_record(&orphan.name, &orphan.id);
    for request in [
        StorageRequest::Write {
            store: StoreRole::Blobs,
            key: part,
            data: "bytes".into(),
            condition: WriteCondition::Overwrite,
        },
        StorageRequest::Delete {
            store: StoreRole::Blobs,
            key: record,
        },
    ] {
        let done = h
            .world
            .store
            .perform(request, &mut RequestBody::default(), h.world.now);
        assert!(matches!(done, Outcome::Ok), "{done:?}");
    }
    let lock_key = format!("upload/{}", in_use.id.as_str());
    let token = "a request still writing".to_owned();
    h.lock(LockRequest::Acquire {
        key: lock_key.clone(),
        token: token.clone(),
        ttl_ms: 600_000,
    });

    let report = h.purge(started + 5_000);

    let expected = PurgeReport {
        sessions_removed: 3,
        sessions_in_use: 1,
    };
    assert_eq!(report, expected);
    for (session, what) in [(&old, "old"), (&nested, "nested"), (&orphan, "orphan")] {
        assert!(!h.stored(session), "the {what} session outlived the purge");
    }
    for (session, what) in [(&young, "young"), (&in_use, "locked")] {
        assert!(h.stored(session), "the {what} session was purged");
    }

    h.lock(LockRequest::Release {
        key: lock_key,
        token,
    });
    let report = h.purge(started + 5_000);
    assert_eq!(report.sessions_removed, 1);
    assert!(
        !h.stored(&in_use),
        "a freed stale session outlived the purge"
    );
    assert!(h.stored(&young), "the young session was purged");
}
