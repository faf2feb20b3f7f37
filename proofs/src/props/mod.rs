//! One property check per fuzz target. Each takes the fuzzer's bytes and panics when the
//! property is violated; inputs it cannot use are simply skipped.

pub mod auth;
pub mod linking;
pub mod lock;
pub mod manifest;
pub mod names;
pub mod range;
pub mod route;
pub mod upload;

use arbitrary::{Arbitrary, Unstructured};

/// Decodes items of `T` until the bytes run out (a last, incomplete item is dropped): every
/// byte of a fuzzer's input shapes the script, with no "go on" markers between items.
pub fn decode_all<'a, T: Arbitrary<'a>>(u: &mut Unstructured<'a>) -> Vec<T> {
    let mut items = Vec::new();
    while !u.is_empty() {
        match T::arbitrary(u) {
            Ok(item) => items.push(item),
            Err(_) => break,
        }
    }
    items
}

/// A property check over a fuzzer's input; it panics when the property is violated.
pub type Check = fn(&[u8]);

/// Every fuzz target by name (its `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`),
/// with the property check it runs.
pub const TARGETS: [(&str, Check); 8] = [
    ("route", route::check),
    ("names", names::check),
    ("range", range::check),
    ("manifest", manifest::check),
    ("upload", upload::check),
    ("lock", lock::check),
    ("linking", linking::check),
    ("auth", auth::check),
];
