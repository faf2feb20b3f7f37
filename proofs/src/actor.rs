//! One operation in flight, stepped from outside: for schedules that interleave several
//! operations (the lock checks and the simulated cluster).

use stowage_core::Registry;
use stowage_core::gc::GcSettings;
use stowage_core::op::Operation;
use stowage_core::step::{Outcome, Response, Step, StorageRequest};
use stowage_core::time::Millis;

use crate::request::{Reply, Request};
use crate::rng::SimRng;
use crate::store::RequestBody;
use crate::world::MAX_STEPS;
use crate::world::{Performed, World};

/// What executing a step gave.
#[derive(Debug)]
pub enum Executed {
    /// For the operation, unless the caller replaces it with a fault.
    Outcome(Outcome),
    Responded(Response),
}

pub struct Actor {
    op: Operation,
    body: RequestBody,
    /// A sleeping operation is not polled before this time.
    wake_at: Millis,
    /// The storage batch in flight: its requests go out one step at a time, in a random
    /// order, interleaved with other actors' steps, as a driver performing them at once may.
    batch: Option<Batch>,
    rng: SimRng,
    /// What the client was answered before the operation's end, if it was.
    early: Option<Reply>,
}

/// A [`Step::StorageBatch`] being performed member by member.
struct Batch {
    /// Not yet asked, with their places in the batch; the next one is popped.
    waiting: Vec<(usize, StorageRequest)>,
    /// The place of the member last asked.
    asked: usize,
    outcomes: Vec<Option<Outcome>>,
}

impl Actor {
    pub fn start(registry: &Registry, request: Request, seed: u64) -> Self {
        Actor {
            op: registry.handle(
                request.head,
                stowage_core::access::Caller::anonymous(),
                stowage_core::Entropy::from_seed(seed),
            ),
            body: request.body,
            wake_at: Millis(0),
            batch: None,
            rng: SimRng::new(seed),
            early: None,
        }
    }

    /// A garbage collection run (it answers like a request: see [`Registry::collect`]).
    pub fn collect(registry: &Registry, settings: GcSettings, seed: u64) -> Self {
        Actor {
            op: registry.collect(settings, stowage_core::Entropy::from_seed(seed)),
            body: RequestBody::default(),
            wake_at: Millis(0),
            batch: None,
            rng: SimRng::new(seed),
            early: None,
        }
    }

    /// Whether the operation can take a step at `now` (it is not sleeping).
    pub fn ready(&self, now: Millis) -> bool {
        now >= self.wake_at
    }

    pub fn wake_at(&self) -> Millis {
        self.wake_at
    }

    /// The operation's next step; a member of its storage batch while one is in flight.
    pub fn poll(&mut self, now: Millis) -> Step {
        if let Some(batch) = &mut self.batch
            && let Some((place, request)) = batch.waiting.pop()
        {
            batch.asked = place;
            return Step::Storage(request);
        }
        match self.op.poll(now) {
            // Drawn by the driver without any IO: it takes no turn in a schedule.
            Step::Progress(_) => {
                self.op.on_result(Outcome::Ok);
                self.poll(now)
            }
            Step::StorageBatch(requests) if requests.is_empty() => {
                self.op.on_result(Outcome::Batch(Vec::new()));
                self.poll(now)
            }
            Step::StorageBatch(requests) => {
                let mut waiting: Vec<_> = requests.into_iter().enumerate().collect();
                for i in (1..waiting.len()).rev() {
                    waiting.swap(i, self.rng.index(i + 1));
                }
                let outcomes = waiting.iter().map(|_| None).collect();
                self.batch = Some(Batch {
                    waiting,
                    asked: 0,
                    outcomes,
                });
                self.poll(now)
            }
            step => step,
        }
    }

    /// Extends the operation's locks due at the world's time, as the driver does while a
    /// step runs.
    pub fn keep_alive(&mut self, world: &mut World) {
        for refresh in self.op.handle_timeout(world.now) {
            let taken = world.lock(&refresh);
            self.op.on_refreshed(world.now, &refresh, taken);
        }
    }

    /// Performs `step` (a sleep just sets the wake-up time) without feeding the outcome back.
    pub fn execute(&mut self, world: &mut World, step: Step) -> Executed {
        match world.perform(step, &mut self.body) {
            Performed::Outcome(outcome) => Executed::Outcome(outcome),
            Performed::Sleep(ms) => {
                self.wake_at = world.now.plus(ms);
                Executed::Outcome(Outcome::Ok)
            }
            Performed::AnsweredEarly(outcome, reply) => {
                self.early = Some(reply);
                Executed::Outcome(outcome)
            }
            Performed::Responded(response) => Executed::Responded(response),
        }
    }

    /// What the client received, the operation having responded `response`.
    pub fn reply(&mut self, world: &mut World, response: Response) -> Reply {
        world.reply_to(self.early.take(), response)
    }

    /// Performs `step` faithfully and feeds its outcome back; the response once done.
    pub fn perform(&mut self, world: &mut World, step: Step) -> Option<Response> {
        match self.execute(world, step) {
            Executed::Outcome(outcome) => {
                self.answer(outcome);
                None
            }
            Executed::Responded(response) => Some(response),
        }
    }

    /// Feeds an outcome back (a faulty one, when the caller injects faults); a batch's
    /// outcomes go back together once its last member is answered.
    pub fn answer(&mut self, outcome: Outcome) {
        let Some(batch) = &mut self.batch else {
            self.op.on_result(outcome);
            return;
        };
        batch.outcomes[batch.asked] = Some(outcome);
        if batch.waiting.is_empty() {
            let outcomes = std::mem::take(&mut batch.outcomes);
            self.batch = None;
            self.op
                .on_result(Outcome::Batch(outcomes.into_iter().flatten().collect()));
        }
    }
}

/// One faithful step of `actor`; the response once it answered.
pub fn step(world: &mut World, actor: &mut Actor) -> Option<Response> {
    let step = actor.poll(world.now);
    actor.perform(world, step)
}

/// Runs the actors in turns until every one answered (`None` slots are done): each ready
/// actor takes one step through `step` per round, the clock moves 1 ms per round, and when
/// no one is ready the clock jumps to the first wake-up. Answers in the actors' order.
pub fn finish_in_turns(
    world: &mut World,
    actors: &mut [Option<Actor>],
    mut step: impl FnMut(&mut World, &mut Actor) -> Option<Response>,
) -> Vec<Option<Response>> {
    let mut responses: Vec<Option<Response>> = actors.iter().map(|_| None).collect();
    for _ in 0..MAX_STEPS {
        let wake = actors.iter().flatten().map(Actor::wake_at).min();
        let Some(wake) = wake else {
            return responses;
        };
        if !actors.iter().flatten().any(|a| a.ready(world.now)) {
            world.now = world.now.max(wake);
        }
        for (slot, response) in actors.iter_mut().zip(&mut responses) {
            if let Some(actor) = slot
                && actor.ready(world.now)
                && let Some(answer) = step(world, actor)
            {
                *response = Some(answer);
                *slot = None;
            }
        }
        world.now = world.now.plus(1);
    }
    panic!("operations did not finish within {MAX_STEPS} rounds");
}
