//! How a write that did not fail ended: the one answer both writers (the filesystem's and
//! OpenDAL's) and both stores give, kept apart so neither writer depends on the other for it.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Committed {
    /// The object now holds what was written.
    Written,
    /// The write's condition did not hold: nothing changed.
    ConditionFailed,
}
