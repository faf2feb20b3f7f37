//! Log lines to stderr, as text or JSON (`[observability.log]`), written by a thread of
//! their own: a request formats its access log line and hands it over, so a slow terminal
//! or log collector never holds a connection's runtime. The hand-over queue is bounded
//! (tracing-appender's default, 128k lines); past that, lines are dropped rather than
//! making requests wait.

use std::io::IsTerminal;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Starts logging; keep the guard until the process ends, so the last lines are written.
/// `RUST_LOG`, when set, wins over `level`.
pub(crate) fn init(settings: &LogSettings) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match settings.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    guard
}
