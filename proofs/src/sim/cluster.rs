//! The scheduler: clients, replicas, the shared world, and the faults injected between
//! and into the operations' steps.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use http::StatusCode;
use stowage_core::config::LockSettings;
use stowage_core::digest::Digest;
use stowage_core::gc::GcSettings;
use stowage_core::step::{
    BodyError, IoError, LockRequest, Outcome, Response, Step, UpstreamAnswer,
};
use stowage_core::{Limits, Registry};

use super::Violation;
use super::history::{Ending, History};
use super::workload::{self, Answer, Intent, Kind, Op, Planned, Task};
use crate::actor::{Actor, Executed};
use crate::integrity::sha256;
use crate::request::{BrokenBody, Reply};
use crate::rng::SimRng;
use crate::store::ObjectStore;
use crate::upstream::mirroring;
use crate::world::World;

/// How long the mirror trusts a tag's answer: short enough that runs ask again.
const TAG_TTL_MS: u64 = 100;

/// A run that needs more scheduler ticks than this is stuck.
const MAX_TICKS: u64 = 200_000;

/// Fault rates, per mille.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// Per storage, lock, cache or upstream step: fails without taking effect.
    pub error: u64,
    /// Per storage, lock, cache or upstream step: takes effect, but the answer is lost.
    pub timeout: u64,
    /// Per request: the client disconnects mid-body.
    pub disconnect: u64,
    /// Per tick: a replica crashes, dropping every operation it serves.
    pub crash: u64,
    /// Per tick: the clock jumps past the lock TTL.
    pub clock_jump: u64,
}

impl Faults {
    pub const NONE: Faults = Faults {
        error: 0,
        timeout: 0,
        disconnect: 0,
        crash: 0,
        clock_jump: 0,
    };

    pub fn any(&self) -> bool {
        *self != Faults::NONE
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub replicas: usize,
    pub clients: usize,
    pub limits: Limits,
    pub faults: Faults,
    /// Whether the store checks versions (S3) or only create-new (the filesystem): with
    /// clock jumps, locks are lost and conditional writes refuse stale commits.
    pub versioned: bool,
    /// Whether the clients' locks are extended while they wait, as the driver extends
    /// them (the collector's always are). In the other half of the runs they expire between
    /// steps, as in a stalled process, so the simulation reaches commits whose lock expired.
    pub clients_keep_alive: bool,
    /// A garbage collector running beside the clients, if any.
    pub gc: Option<GcPlan>,
}

/// The collector of a run: how many collections it runs, one after another, and how.
#[derive(Debug, Clone)]
pub struct GcPlan {
    pub runs: u32,
    pub settings: GcSettings,
}

impl GcPlan {
    /// Half the runs collect; the grace period is short enough (in simulated
    /// milliseconds) that blobs of pushes in progress get collected.
    fn draw(rng: &mut SimRng) -> Option<GcPlan> {
        rng.chance(500).then(|| GcPlan {
            runs: 1 + rng.below(4) as u32,
            settings: GcSettings {
                grace_ms: [0, 5, 50][rng.index(3)],
                delete_untagged: rng.chance(500),
                dry_run: false,
                separate_meta_store: true,
            },
        })
    }
}

impl Config {
    /// A configuration drawn from the run's generator: cluster size, strictness and how
    /// faulty the world is (a quarter of the runs have no faults at all).
    fn draw(rng: &mut SimRng, collector: bool) -> Config {
        let faulty = !rng.chance(250);
        let rate = |rng: &mut SimRng, max: u64| if faulty { rng.below(max + 1) } else { 0 };
        let faults = Faults {
            error: rate(rng, 20),
            timeout: rate(rng, 20),
            disconnect: rate(rng, 50),
            crash: rate(rng, 4),
            clock_jump: rate(rng, 3),
        };
        let versioned = rng.chance(500);
        let clients_keep_alive = rng.chance(500);
        Config {
            replicas: 1 + rng.index(3),
            clients: 2 + rng.index(5),
            limits: Limits {
                allow_missing_manifest_references: rng.chance(500),
                locks: LockSettings {
                    ttl_ms: 200,
                    max_retries: 40,
                    retry_delay_ms: 10,
                },
                // The filesystem writes chunks in place; object storage cannot.
                chunks_in_place: !versioned,
                ..Limits::default()
            },
            faults,
            versioned,
            clients_keep_alive,
            gc: if collector { GcPlan::draw(rng) } else { None },
        }
    }
}

/// What a run did, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub ticks: u64,
    pub requests: usize,
    pub acknowledged: usize,
    pub crashes: u64,
    pub injected: u64,
}

struct InFlight {
    actor: Actor,
    replica: usize,
    record: usize,
    /// Whether the operation's locks are extended when due, every tick, as the driver
    /// extends them while a step runs: a run takes many ticks of waiting its turn.
    kept_alive: bool,
}

struct Client {
    intents: VecDeque<Intent>,
    task: Option<Task>,
    inflight: Option<InFlight>,
    finished: bool,
}

impl Client {
    /// The next request of the current intent, moving to the next intent when it is over.
    fn next_planned(&mut self) -> Option<Planned> {
        loop {
            if let Some(planned) = self.task.as_ref().and_then(Task::next) {
                return Some(planned);
            }
            self.task = Some(Task::new(self.intents.pop_front()?));
        }
    }

    fn answered(&mut self, answer: &Answer) {
        if let Some(task) = &mut self.task {
            task.on_answer(answer);
        }
        self.inflight = None;
    }
}

/// The collector actor: collections one after another, each on a replica drawn at start.
struct Collector {
    runs_left: u32,
    /// Not before this tick does the next collection start.
    next_start: u64,
    inflight: Option<InFlight>,
}

/// An injected fault in one step.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Not performed; the operation hears of a failure.
    Error,
    /// Performed; the operation hears of a failure.
    Timeout,
}

/// A replica's process as it starts: it mirrors the model upstream and remembers nothing.
fn replica_process(config: &Config) -> Registry {
    mirroring(config.limits.clone(), workload::MIRROR_PREFIX, TAG_TTL_MS)
}

pub(super) struct Cluster {
    rng: SimRng,
    pub(super) config: Config,
    /// Each replica's process: what it remembers between requests is its own.
    pub(super) registries: Vec<Registry>,
    pub(super) world: World,
    pub(super) history: History,
    clients: Vec<Client>,
    collector: Option<Collector>,
    tick: u64,
    /// Lock token -> the request that used it.
    pub(super) lock_owners: BTreeMap<String, usize>,
    pub(super) lock_keys: BTreeSet<String>,
    pub(super) summary: Summary,
}

impl Cluster {
    /// Every request of the run, for a replay with SIM_TRACE set.
    pub(super) fn trace(&self) {
        for r in self.history.iter() {
            eprintln!("{}", r.describe());
        }
    }

    /// The run of `seed`; with `collector`, half the runs have a garbage collector too.
    pub(super) fn new(seed: u64, collector: bool) -> Self {
        let mut rng = SimRng::new(seed);
        let config = Config::draw(&mut rng, collector);
        let clients = (0..config.clients)
            .map(|_| Client {
                intents: workload::script(&mut rng).into(),
                task: None,
                inflight: None,
                finished: false,
            })
            .collect();
        let store = if config.versioned {
            ObjectStore::default()
        } else {
            ObjectStore::without_versions()
        };
        let collector = config.gc.as_ref().map(|plan| Collector {
            runs_left: plan.runs,
            next_start: rng.below(300),
            inflight: None,
        });
        Cluster {
            collector,
            registries: (0..config.replicas)
                .map(|_| replica_process(&config))
                .collect(),
            rng,
            config,
            world: World {
                store,
                upstream: Some(workload::upstream()),
                ..World::default()
            },
            history: History::default(),
            clients,
            tick: 0,
            lock_owners: BTreeMap::new(),
            lock_keys: BTreeSet::new(),
            summary: Summary::default(),
        }
    }

    /// Runs until every client is done: the cluster then stands still for its invariants.
    pub(super) fn run(mut self) -> Result<Cluster, Violation> {
        while self.tick < MAX_TICKS {
            self.tick += 1;
            self.world.now = self.world.now.plus(self.rng.below(3));
            self.keep_alive();
            let faults = self.config.faults;
            if self.rng.chance(faults.clock_jump) {
                let ttl = self.config.limits.locks.ttl_ms;
                self.world.now = self.world.now.plus(ttl + self.rng.below(ttl));
            }
            if self.rng.chance(faults.crash) {
                let replica = self.rng.index(self.config.replicas);
                self.crash(replica);
            }
            // The collector is actor `clients.len()`.
            let runnable: Vec<usize> = (0..=self.clients.len())
                .filter(|&c| self.runnable(c))
                .collect();
            if runnable.is_empty() {
                let collecting = self.collector.as_ref().and_then(|c| c.inflight.as_ref());
                let sleeping = self
                    .clients
                    .iter()
                    .filter_map(|c| c.inflight.as_ref())
                    .chain(collecting)
                    .map(|f| f.actor.wake_at())
                    .min();
                match sleeping {
                    Some(wake) => self.world.now = self.world.now.max(wake),
                    None => {
                        self.summary.ticks = self.tick;
                        self.summary.requests = self.history.records.len();
                        self.summary.acknowledged =
                            self.history.iter().filter(|r| r.acknowledged()).count();
                        return Ok(self);
                    }
                }
                continue;
            }
            let actor = runnable[self.rng.index(runnable.len())];
            if actor == self.clients.len() {
                self.advance_collector()?;
            } else {
                self.advance(actor)?;
            }
        }
        Err(Violation::Stuck { ticks: MAX_TICKS })
    }

    fn runnable(&self, c: usize) -> bool {
        let Some(client) = self.clients.get(c) else {
            return self
                .collector
                .as_ref()
                .is_some_and(|collector| match &collector.inflight {
                    Some(inflight) => inflight.actor.ready(self.world.now),
                    None => collector.runs_left > 0 && self.tick >= collector.next_start,
                });
        };
        match &client.inflight {
            Some(inflight) => inflight.actor.ready(self.world.now),
            None => !client.finished,
        }
    }

    /// Starts the client's next request, or takes one step of the one in flight.
    fn advance(&mut self, c: usize) -> Result<(), Violation> {
        let Some(mut inflight) = self.clients[c].inflight.take() else {
            self.send(c);
            return Ok(());
        };
        let Some(response) = self.step(&mut inflight) else {
            self.clients[c].inflight = Some(inflight);
            return Ok(());
        };
        let reply = inflight.actor.reply(&mut self.world, response);
        self.history
            .end(inflight.record, self.tick, Ending::Answered(reply.status));
        self.check_reply(inflight.record, &reply)?;
        self.clients[c].answered(&Answer::Replied(reply));
        Ok(())
    }

    /// Starts the next collection, or takes one step of the one in flight. A collection
    /// succeeds, or fails with 503 when faults were injected.
    fn advance_collector(&mut self) -> Result<(), Violation> {
        let Some(collector) = self.collector.as_mut() else {
            return Ok(());
        };
        let Some(mut inflight) = collector.inflight.take() else {
            collector.runs_left -= 1;
            let replica = self.rng.index(self.config.replicas);
            let record = self
                .history
                .start(usize::MAX, replica, Kind::Collect, self.tick);
            let settings = self.config.gc.as_ref().map(|plan| plan.settings.clone());
            let Some(settings) = settings else {
                return Ok(());
            };
            let actor = Actor::collect(&self.registries[replica], settings, self.rng.next_u64());
            collector.inflight = Some(InFlight {
                actor,
                replica,
                record,
                kept_alive: true,
            });
            return Ok(());
        };
        let Some(response) = self.step(&mut inflight) else {
            if let Some(collector) = self.collector.as_mut() {
                collector.inflight = Some(inflight);
            }
            return Ok(());
        };
        let reply = self.world.reply(response);
        self.history
            .end(inflight.record, self.tick, Ending::Answered(reply.status));
        let pause = self.rng.below(300);
        if let Some(collector) = self.collector.as_mut() {
            collector.next_start = self.tick + pause;
        }
        let failed_with_faults =
            reply.status == StatusCode::SERVICE_UNAVAILABLE && self.config.faults.any();
        if reply.status != StatusCode::OK && !failed_with_faults {
            let body = String::from_utf8_lossy(reply.body.as_deref().unwrap_or_default());
            return Err(Violation::BadReply {
                path: self.history.records[inflight.record].describe(),
                status: reply.status,
                detail: format!("collection failed: {body}"),
            });
        }
        Ok(())
    }

    /// Extends the due locks of every operation kept alive.
    fn keep_alive(&mut self) {
        let clients = self.clients.iter_mut().filter_map(|c| c.inflight.as_mut());
        let collecting = self.collector.as_mut().and_then(|c| c.inflight.as_mut());
        for inflight in clients.chain(collecting) {
            if inflight.kept_alive {
                inflight.actor.keep_alive(&mut self.world);
            }
        }
    }

    /// One step of an operation in flight, with the faults drawn for it; its response once
    /// it answered.
    fn step(&mut self, inflight: &mut InFlight) -> Option<Response> {
        let now = self.world.now;
        let (step, record) = (inflight.actor.poll(now), inflight.record);
        if let Step::Lock(request) = &step {
            let (key, token) = match request {
                LockRequest::Acquire { key, token, .. }
                | LockRequest::Refresh { key, token, .. }
                | LockRequest::Release { key, token } => (key, token),
            };
            self.lock_keys.insert(key.clone());
            self.lock_owners.insert(token.clone(), record);
        }
        let fault = draw_fault(&mut self.rng, self.config.faults, &step);
        if fault.is_some() {
            self.summary.injected += 1;
            if matches!(step, Step::Lock(_)) {
                self.history.records[record].lock_fault = true;
            }
        }
        let failure = failure_for(&step);
        let executed = match fault {
            None => inflight.actor.execute(&mut self.world, step),
            Some(Fault::Error) => Executed::Outcome(failure),
            Some(Fault::Timeout) => match inflight.actor.execute(&mut self.world, step) {
                Executed::Outcome(_) => Executed::Outcome(failure),
                done => done,
            },
        };
        match executed {
            Executed::Outcome(outcome) => {
                inflight.actor.answer(outcome);
                None
            }
            Executed::Responded(response) => Some(response),
        }
    }

    fn send(&mut self, c: usize) {
        let Some(planned) = self.clients[c].next_planned() else {
            self.clients[c].finished = true;
            return;
        };
        let replica = self.rng.index(self.config.replicas);
        let record = self.history.start(c, replica, planned.kind, self.tick);
        let mut request = planned.request;
        if self.rng.chance(self.config.faults.disconnect) {
            let kept = self.rng.index(3);
            request.body = request.body.disconnect_after(kept);
            self.summary.injected += 1;
        }
        let actor = Actor::start(&self.registries[replica], request, self.rng.next_u64());
        self.clients[c].inflight = Some(InFlight {
            actor,
            replica,
            record,
            kept_alive: self.config.clients_keep_alive,
        });
    }

    /// A replica crashes: its operations stop where they are. With a single replica the
    /// in-process cache is lost too; several replicas share theirs (Redis) and keep it.
    fn crash(&mut self, replica: usize) {
        self.summary.crashes += 1;
        for client in &mut self.clients {
            let Some(inflight) = &client.inflight else {
                continue;
            };
            if inflight.replica == replica {
                self.history
                    .end(inflight.record, self.tick, Ending::Crashed);
                client.answered(&Answer::Crashed);
            }
        }
        let collecting = self
            .collector
            .as_mut()
            .and_then(|c| c.inflight.take_if(|inflight| inflight.replica == replica));
        if let Some(inflight) = collecting {
            self.history
                .end(inflight.record, self.tick, Ending::Crashed);
        }
        if self.config.replicas == 1 {
            self.world.forget_cache();
        }
        self.registries[replica] = replica_process(&self.config);
    }

    /// What an answer must be, judged as it arrives.
    fn check_reply(&self, record: usize, reply: &Reply) -> Result<(), Violation> {
        let bad = |detail: String| Violation::BadReply {
            path: self.history.records[record].describe(),
            status: reply.status,
            detail,
        };
        let body = String::from_utf8_lossy(reply.body.as_deref().unwrap_or_default());
        // The collector's fence refuses writes naming what it may be deleting.
        let fenced = self.config.gc.is_some() && body.contains("being garbage collected");
        // Locks that are not kept alive expire while their holder waits its turn (a stalled
        // process): its commit is refused.
        let stalled = !self.config.clients_keep_alive && body.contains("lost lock");
        if reply.status.is_server_error()
            && (reply.status != StatusCode::SERVICE_UNAVAILABLE
                || !(self.config.faults.any() || fenced || stalled))
        {
            return Err(bad(format!("server error without injected faults: {body}")));
        }
        let ok = reply.status == StatusCode::OK;
        match &self.history.records[record].kind {
            Kind::WrongDigestPush if reply.status.is_success() => {
                Err(Violation::WrongDigestAccepted {
                    digest: reply.header("docker-content-digest").unwrap_or("").into(),
                })
            }
            Kind::Op(Op::ReadBlob { digest, .. }) if ok => match &reply.body {
                Ok(body) if Digest::of(digest.algorithm(), body) == *digest => Ok(()),
                Ok(body) => Err(bad(format!("blob read gave {}", sha256(body)))),
                // A fetch streaming to its client that a fault or the collector's fence then
                // failed: the client's stream is cut, as the driver cuts it.
                Err(BrokenBody::Cut) if self.config.faults.any() || self.config.gc.is_some() => {
                    Ok(())
                }
                Err(broken) => Err(bad(broken.to_string())),
            },
            Kind::Op(Op::ReadTag { repo, tag }) if ok => {
                let body = reply.body.as_ref().map_err(|e| bad(e.to_string()))?;
                let digest = sha256(body);
                let pushed = self.history.iter().any(|r| {
                    matches!(&r.kind, Kind::ManifestPush { repo: pr, digest: d, tags, .. }
                        if pr == repo && *d == digest && tags.contains(tag))
                });
                let mirrored = *repo == workload::MIRRORED
                    && workload::upstream_tag(tag).as_ref() == Some(&digest);
                if !(pushed || mirrored)
                    || reply.header("docker-content-digest") != Some(&digest.to_string())
                {
                    return Err(bad(format!("tag answered {digest}, never pushed to it")));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Whether to break `step`, and how.
fn draw_fault(rng: &mut SimRng, faults: Faults, step: &Step) -> Option<Fault> {
    let faultable = matches!(
        step,
        Step::Storage(_)
            | Step::Lock(_)
            | Step::Cache(_)
            | Step::ReadBody { .. }
            | Step::Upstream(_)
    );
    if !faultable {
        None
    } else if rng.chance(faults.error) {
        Some(Fault::Error)
    } else if rng.chance(faults.timeout) {
        Some(Fault::Timeout)
    } else {
        None
    }
}

/// The failure an operation hears of when a step's fault is injected.
fn failure_for(step: &Step) -> Outcome {
    match step {
        Step::ReadBody { .. } => {
            Outcome::BodyBytes(Err(BodyError::Client("client disconnected".to_owned())))
        }
        Step::Upstream(_) => Outcome::Upstream(UpstreamAnswer::Unavailable {
            reason: "injected fault".to_owned(),
            retry_after_ms: None,
        }),
        _ => Outcome::Failed(IoError {
            message: "injected fault".to_owned(),
        }),
    }
}
