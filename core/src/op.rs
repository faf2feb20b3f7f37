//! An operation: one request's logic, run step by step by a driver.
//!
//! Handlers are written as plain `async fn`s that `await` their IO through a [`Channel`]; no
//! runtime ever polls them. [`Operation::poll`] polls the handler once with a no-op waker: the
//! handler parks the step it needs in the channel and returns `Pending`; the driver performs
//! the step and hands the outcome back through [`Operation::on_result`]. This keeps the
//! sans-IO contract (steps out, results and time in) while the logic reads top to bottom.
//!
//! An operation holding locks also hands out a deadline ([`Operation::poll_timeout`]): a
//! step still running then (a long upload, a wait for a busy lock) must not outlive its
//! locks, so the driver extends them through [`Operation::handle_timeout`] meanwhile.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::lock::Leases;
use crate::step::{LockRequest, Outcome, Step};
use crate::time::Millis;

#[derive(Default)]
struct Slot {
    now: Millis,
    step: Option<Step>,
    outcome: Option<Outcome>,
    leases: Leases,
}

/// The handler's side of the step exchange.
#[derive(Clone, Default)]
pub(crate) struct Channel(Arc<Mutex<Slot>>);

impl Channel {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn now(&self) -> Millis {
        self.slot().now
    }

    /// The operation's record of its locks.
    pub(crate) fn leases<T>(&self, f: impl FnOnce(&mut Leases) -> T) -> T {
        f(&mut self.slot().leases)
    }

    /// Hands `step` to the driver and resolves with its outcome.
    pub(crate) fn perform(&self, step: Step) -> Perform {
        Perform {
            channel: self.clone(),
            step: Some(step),
        }
    }
}

pub(crate) struct Perform {
    channel: Channel,
    step: Option<Step>,
}

impl Future for Perform {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Outcome> {
        if let Some(step) = self.step.take() {
            self.channel.slot().step = Some(step);
            return Poll::Pending;
        }
        match self.channel.slot().outcome.take() {
            Some(outcome) => Poll::Ready(outcome),
            None => Poll::Pending,
        }
    }
}

type Handler = Pin<Box<dyn Future<Output = crate::step::Response> + Send>>;

/// One request in progress.
pub struct Operation {
    handler: Option<Handler>,
    channel: Channel,
}

impl Operation {
    pub(crate) fn new(channel: Channel, handler: Handler) -> Self {
        Operation {
            handler: Some(handler),
            channel,
        }
    }

    /// What the driver must do next, given the current time.
    pub fn poll(&mut self, now: Millis) -> Step {
        self.channel.slot().now = now;
        let Some(handler) = self.handler.as_mut() else {
            return Step::Respond(crate::response::unavailable(
                "operation polled after it finished",
            ));
        };
        match handler
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(response) => {
                self.handler = None;
                Step::Respond(response)
            }
            Poll::Pending => match self.channel.slot().step.take() {
                Some(step) => step,
                None => {
                    self.handler = None;
                    Step::Respond(crate::response::unavailable(
                        "operation waited without asking for a step",
                    ))
                }
            },
        }
    }

    /// The result of the step last returned by [`Operation::poll`].
    pub fn on_result(&mut self, outcome: Outcome) {
        self.channel.slot().outcome = Some(outcome);
    }

    /// When the driver must call [`Operation::handle_timeout`] if the current step has not
    /// ended by then; `None` while the operation holds no lock.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.channel.leases(|leases| leases.next_due())
    }

    /// The lock extensions due at `now`, for the driver to perform while the current step
    /// runs; each answer goes back through [`Operation::on_refreshed`].
    pub fn handle_timeout(&mut self, now: Millis) -> Vec<LockRequest> {
        self.channel.leases(|leases| leases.due_at(now))
    }

    /// The lock store's answer to an extension issued at `issued`. A driver that got no
    /// answer does not call this: the extension is asked again when next due, and the
    /// operation's own check before its commit write finds a lock store that stays away.
    pub fn on_refreshed(&mut self, issued: Millis, request: &LockRequest, taken: bool) {
        self.channel
            .leases(|leases| leases.record(request, issued, taken));
    }
}
