//! Time as the core sees it: the driver reports the wall clock with every outcome, and the
//! core never reads a clock itself (so the simulation can move time as it likes).

/// Wall-clock time in milliseconds since the Unix epoch, as the driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    pub fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}
