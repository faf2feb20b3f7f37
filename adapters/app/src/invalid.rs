//! The error of a configuration setting that does not compile, shared by every table that
//! compiles settings.

/// A setting that does not compile, with the key it is under.
#[derive(Debug)]
pub struct Invalid {
    pub key: String,
    pub reason: String,
}
