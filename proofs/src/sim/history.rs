//! Every request of a run, with when it started and ended, in scheduler ticks: the checks
//! decide from this what the store may and must contain.

use http::StatusCode;

use super::workload::Kind;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Answered(StatusCode),
    /// Its replica crashed: whatever steps it had performed stay performed.
    Crashed,
}

#[derive(Debug, Clone)]
pub struct Record {
    pub client: usize,
    pub replica: usize,
    pub kind: Kind,
    pub started: u64,
    /// When it answered or crashed; `None` while in flight.
    pub ended: Option<(u64, Ending)>,
    /// Whether a fault was injected into one of its lock steps (its lock may outlive it).
    pub lock_fault: bool,
}

impl Record {
    /// Acknowledged with a 2xx answer.
    pub fn acknowledged(&self) -> bool {
        matches!(self.ended, Some((_, Ending::Answered(s))) if s.is_success())
    }

    /// The answer's status, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self.ended {
            Some((_, Ending::Answered(status))) => Some(status),
            _ => None,
        }
    }

    /// The last tick at which it may have changed anything.
    pub fn last_effect(&self) -> u64 {
        self.ended.map_or(u64::MAX, |(tick, _)| tick)
    }

    /// Whether it may have taken effect after `tick` (it had not ended by then).
    pub fn may_act_after(&self, tick: u64) -> bool {
        self.last_effect() > tick
    }

    /// Who sent it where, what it was and when, for violation reports.
    pub fn describe(&self) -> String {
        format!(
            "client {} via replica {}: {:?}, ticks {}..{:?}",
            self.client, self.replica, self.kind, self.started, self.ended
        )
    }

    pub fn crashed(&self) -> bool {
        matches!(self.ended, Some((_, Ending::Crashed)))
    }
}

#[derive(Debug, Default)]
pub struct History {
    pub records: Vec<Record>,
}

impl History {
    pub fn start(&mut self, client: usize, replica: usize, kind: Kind, tick: u64) -> usize {
        self.records.push(Record {
            client,
            replica,
            kind,
            started: tick,
            ended: None,
            lock_fault: false,
        });
        self.records.len() - 1
    }

    pub fn end(&mut self, record: usize, tick: u64, ending: Ending) {
        self.records[record].ended = Some((tick, ending));
    }

    pub fn iter(&self) -> impl Iterator<Item = &Record> {
        self.records.iter()
    }
}
