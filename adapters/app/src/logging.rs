//! Log lines to stderr, as text or JSON (`[observability.log]`), written by a thread of
//! their own (see [`crate::log_writer`]): a request formats its access log line and hands
//! it over, so a slow terminal or log collector never holds a connection's runtime.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};
use crate::log_writer::{self, Flush, LogWriter};

/// The writer thread's end, once [`init`] has started it.
static WRITER: OnceLock<LogWriter> = OnceLock::new();

/// Starts logging; keep the [`Flush`] until the process ends, so the last lines are
/// written. `RUST_LOG`, when set, wins over `level`.
pub(crate) fn init(settings: &LogSettings) -> Flush {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, flush) = log_writer::start(std::io::stderr());
    let _ = WRITER.set(writer.clone());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match settings.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    flush
}

/// Where lines written outside `tracing` go (the access log): the writer thread once
/// [`init`] has run, else stderr directly.
pub(crate) fn writer() -> LogWriter {
    WRITER.get().cloned().unwrap_or_else(LogWriter::direct)
}
