//! Where log lines go: appended to a buffer in memory (one short mutex hold, no system
//! call), which a thread of its own writes to stderr in batches.
//!
//! Not a channel per line (tracing-appender's non-blocking writer): there every line wakes
//! the writer thread (a futex, a context switch, its receive loop's `sched_yield`s) on the
//! same cores that serve the requests, which showed in the manifest GET benchmark with the
//! access log on (docs/bench.md). Here the producer wakes the writer only when
//! the buffer goes from empty to not empty, and the writer lets a batch gather for
//! [`LINGER`] before writing it in one call, so under load the writer wakes at most a few
//! hundred times a second whatever the request rate.
//!
//! The buffer is bounded ([`MAX_PENDING`]); past that, lines are dropped rather than making
//! requests wait, and the writer says how many it dropped.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer waits for more lines once one arrived.
const LINGER: Duration = Duration::from_millis(10);

/// The most bytes of log lines waiting to be written.
const MAX_PENDING: usize = 16 * 1024 * 1024;

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    dropped: u64,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    arrived: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Hands lines to the writer thread; what the log subscriber writes with.
#[derive(Clone)]
pub(crate) struct LogWriter(Arc<Shared>);

/// Writes what is pending and stops the writer thread when dropped: keep it until the
/// process ends.
pub(crate) struct Flush {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread over `out`. Without a thread (the system refused one), lines
/// are written by whoever logs.
pub(crate) fn start(out: impl Write + Send + 'static) -> (LogWriter, Flush) {
    let shared = Arc::new(Shared::default());
    let writer = shared.clone();
    let thread = std::thread::Builder::new()
        .name("stowage-log".into())
        .spawn(move || write_batches(&writer, out))
        .ok();
    if thread.is_none() {
        shared.lock().closed = true;
    }
    (LogWriter(shared.clone()), Flush { shared, thread })
}

fn write_batches(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::new();
    loop {
        let mut pending = shared.lock();
        while pending.bytes.is_empty() && !pending.closed {
            pending = shared
                .arrived
                .wait(pending)
                .unwrap_or_else(|p| p.into_inner());
        }
        let closed = pending.closed;
        if !closed {
            drop(pending);
            std::thread::sleep(LINGER);
            pending = shared.lock();
        }
        std::mem::swap(&mut batch, &mut pending.bytes);
        let dropped = std::mem::take(&mut pending.dropped);
        drop(pending);
        // Nowhere to report a failing stderr: the lines are lost either way.
        let _ = out.write_all(&batch);
        if dropped > 0 {
            let _ = writeln!(
                out,
                "stowage: {dropped} log lines dropped: logs were written slower than they came"
            );
        }
        let _ = out.flush();
        batch.clear();
        if closed {
            return;
        }
    }
}

impl LogWriter {
    /// A writer without a thread: lines are written to stderr by whoever logs.
    pub(crate) fn direct() -> Self {
        let shared = Shared::default();
        shared.lock().closed = true;
        LogWriter(Arc::new(shared))
    }

    /// Hands one or more whole lines over.
    pub(crate) fn append(&self, line: &[u8]) {
        let mut pending = self.0.lock();
        if pending.closed {
            drop(pending);
            // Nowhere to report a failing stderr: the line is lost either way.
            let _ = std::io::stderr().write_all(line);
            return;
        }
        if pending.bytes.len() + line.len() > MAX_PENDING {
            pending.dropped += 1;
            return;
        }
        let was_empty = pending.bytes.is_empty();
        pending.bytes.extend_from_slice(line);
        drop(pending);
        if was_empty {
            self.0.arrived.notify_one();
        }
    }
}

impl Write for LogWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.append(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        self.clone()
    }
}

impl Drop for Flush {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.arrived.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects what the writer thread writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_flush_is_dropped() {
        let sink = Sink::default();
        let (writer, flush) = start(sink.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut writer = writer.clone();
                std::thread::spawn(move || {
                    for n in 0..1000 {
                        writer.write_all(format!("{t} {n}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(flush);
        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        for t in 0..4 {
            let ns: Vec<u32> = written
                .lines()
                .filter_map(|line| line.strip_prefix(&format!("{t} ")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(ns, (0..1000).collect::<Vec<_>>(), "thread {t}");
        }
    }

    #[test]
    fn a_full_buffer_drops_lines_and_says_so() {
        let shared = Arc::new(Shared::default());
        let mut writer = LogWriter(shared.clone());
        let line = vec![b'x'; MAX_PENDING / 2 + 1];
        writer.write_all(&line).unwrap();
        writer.write_all(&line).unwrap();
        assert_eq!(shared.lock().dropped, 1);
        assert_eq!(shared.lock().bytes.len(), line.len());
        let sink = Sink::default();
        shared.lock().closed = true;
        write_batches(&shared, sink.clone());
        let written = sink.0.lock().unwrap().clone();
        assert!(
            written.ends_with(b"1 log lines dropped: logs were written slower than they came\n")
        );
    }
}
