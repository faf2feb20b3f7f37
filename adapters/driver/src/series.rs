//! Handles of metric series, remembered by each thread once a recorder is installed.
//!
//! The `metrics` macros look a labelled series up in the recorder's registry on every call:
//! they allocate its labels, hash and compare them under a lock. A request records a few
//! series, and those lookups were several percent of a manifest GET's CPU. Every label value
//! here is a `&'static str` from a fixed set, so a thread keeps the handles it has used, keyed
//! by the addresses of the name and labels: the same text at two addresses makes two entries
//! holding handles of one series, never two series.
//!
//! Handles taken before the recorder was installed would be no-ops forever, so nothing is
//! remembered until [`recording`] says the recorder is in place; until then each call goes to
//! the macros.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::LocalKey;

use metrics::{Counter, Gauge, Histogram, Label, Level, Metadata};

/// Labels as the call sites name them: `[("route", route), ("method", method)]`.
pub type Labels<'a> = &'a [(&'static str, &'static str)];

/// The most labels a remembered series has; a series with more is looked up each time.
const MAX_LABELS: usize = 3;

/// Addresses of the name, then of each label's name and value (zero past the last).
type Address = [usize; 1 + 2 * MAX_LABELS];

static RECORDING: AtomicBool = AtomicBool::new(false);

/// Says the process's recorder is installed: handles may be remembered from now on.
pub fn recording() {
    RECORDING.store(true, Ordering::Release);
}

type Handles<H> = RefCell<HashMap<Address, H, foldhash::fast::RandomState>>;

thread_local! {
    static COUNTERS: Handles<Counter> = RefCell::default();
    static GAUGES: Handles<Gauge> = RefCell::default();
    static HISTOGRAMS: Handles<Histogram> = RefCell::default();
}

/// Adds `value` to the counter `name` with `labels`.
pub fn increment(name: &'static str, labels: Labels, value: u64) {
    with_handle(name, labels, |counter: &Counter| counter.increment(value));
}

/// Adds `delta` (less than zero: takes it away) to the gauge `name` with `labels`.
pub fn gauge_add(name: &'static str, labels: Labels, delta: f64) {
    with_handle(name, labels, |gauge: &Gauge| gauge.increment(delta));
}

/// Records `value` in the histogram `name` with `labels`.
pub fn record(name: &'static str, labels: Labels, value: f64) {
    with_handle(name, labels, |histogram: &Histogram| {
        histogram.record(value)
    });
}

/// A kind of series: how its handle is registered, and where a thread keeps them.
trait Series: Sized + 'static {
    fn register(recorder: &dyn metrics::Recorder, key: &metrics::Key) -> Self;
    fn remembered() -> &'static LocalKey<Handles<Self>>;
}

impl Series for Counter {
    fn register(recorder: &dyn metrics::Recorder, key: &metrics::Key) -> Self {
        recorder.register_counter(key, &METADATA)
    }
    fn remembered() -> &'static LocalKey<Handles<Self>> {
        &COUNTERS
    }
}

impl Series for Gauge {
    fn register(recorder: &dyn metrics::Recorder, key: &metrics::Key) -> Self {
        recorder.register_gauge(key, &METADATA)
    }
    fn remembered() -> &'static LocalKey<Handles<Self>> {
        &GAUGES
    }
}

impl Series for Histogram {
    fn register(recorder: &dyn metrics::Recorder, key: &metrics::Key) -> Self {
        recorder.register_histogram(key, &METADATA)
    }
    fn remembered() -> &'static LocalKey<Handles<Self>> {
        &HISTOGRAMS
    }
}

/// Calls `act` with the handle of the series: a remembered one is borrowed, not cloned, as
/// a clone and its drop are two atomic updates of a count every thread shares.
fn with_handle<H: Series>(name: &'static str, labels: Labels, act: impl FnOnce(&H)) {
    let lookup = || {
        let key = metrics::Key::from_parts(
            name,
            labels
                .iter()
                .map(|&(label, value)| Label::from_static_parts(label, value))
                .collect::<Vec<_>>(),
        );
        metrics::with_recorder(|recorder| H::register(recorder, &key))
    };
    let Some(address) = address(name, labels).filter(|_| RECORDING.load(Ordering::Acquire)) else {
        return act(&lookup());
    };
    H::remembered().with(|handles| {
        if let Some(handle) = handles.borrow().get(&address) {
            return act(handle);
        }
        let handle = lookup();
        act(&handle);
        handles.borrow_mut().insert(address, handle);
    })
}

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

fn address(name: &'static str, labels: Labels) -> Option<Address> {
    if labels.len() > MAX_LABELS {
        return None;
    }
    let mut address = [0; 1 + 2 * MAX_LABELS];
    address[0] = name.as_ptr() as usize;
    for (i, (label, value)) in labels.iter().enumerate() {
        address[1 + 2 * i] = label.as_ptr() as usize;
        address[2 + 2 * i] = value.as_ptr() as usize;
    }
    Some(address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[test]
    fn remembered_handles_count_into_the_series_they_were_taken_for() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            recording();
            for route in ["/a", "/b", "/a", "/a"] {
                increment("requests", &[("route", route), ("status", "2xx")], 1);
            }
            // Equal text at another address is the same series.
            let other = String::from("/b").leak();
            increment("requests", &[("route", other), ("status", "2xx")], 1);
        });
        let counts: HashMap<String, u64> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let route = key.key().labels().next().unwrap().value().to_owned();
                let DebugValue::Counter(n) = value else {
                    panic!("not a counter: {value:?}")
                };
                (route, n)
            })
            .collect();
        assert_eq!(counts, HashMap::from([("/a".into(), 3), ("/b".into(), 2)]));
    }
}
