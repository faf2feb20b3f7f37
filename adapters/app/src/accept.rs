//! What an accept loop does when `accept` fails. Out of file descriptors (EMFILE, ENFILE) or
//! kernel memory, the connection stays queued and the listener stays readable, so accepting
//! again at once fails again at once, spinning a core and logging every failure. Instead
//! the loop waits, 100 ms doubling up to 1 s, while the connections already
//! open go on being served (and closing, which frees descriptors), and logs at most once a
//! second how many accepts failed. An error that concerns one connection only (reset or
//! aborted while queued) is retried at once.

use std::io;
use std::time::{Duration, Instant};

const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);
const LOG_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct AcceptBackoff {
    /// Zero while accepting works.
    pause: Duration,
    /// Failures not logged yet.
    unlogged: u64,
    last_log: Option<Instant>,
}

impl AcceptBackoff {
    /// A connection was accepted: the next failure waits the shortest pause again.
    pub fn accepted(&mut self) {
        if !self.pause.is_zero() {
            tracing::info!(
                failed_since_last_log = self.unlogged,
                "accepting connections again"
            );
            *self = AcceptBackoff::default();
        }
    }

    /// How long to wait before accepting again after `error`.
    pub fn failed(&mut self, error: &io::Error) -> Duration {
        if concerns_one_connection(error) {
            tracing::debug!(error = %error, "a connection was lost before it was accepted");
            return Duration::ZERO;
        }
        let (pause, log) = self.failure(Instant::now());
        if let Some(failed) = log {
            tracing::warn!(error = %error, failed, retry_in = ?pause, "cannot accept connections");
        }
        pause
    }

    /// The pause after one more failure at `now`, and the count of failures to log if a
    /// line is due.
    fn failure(&mut self, now: Instant) -> (Duration, Option<u64>) {
        self.pause = (self.pause * 2).clamp(FIRST_PAUSE, LONGEST_PAUSE);
        self.unlogged += 1;
        let due = self
            .last_log
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY);
        if !due {
            return (self.pause, None);
        }
        self.last_log = Some(now);
        (self.pause, Some(std::mem::take(&mut self.unlogged)))
    }
}

fn concerns_one_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_a_second_and_reset_on_success() {
        let mut backoff = AcceptBackoff::default();
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        let pauses: Vec<_> = (0..6).map(|_| backoff.failed(&emfile)).collect();
        let ms = |ms| Duration::from_millis(ms);
        assert_eq!(
            pauses,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        backoff.accepted();
        assert_eq!(backoff.failed(&emfile), ms(100));
    }

    #[test]
    fn logs_at_most_once_a_second_with_the_count() {
        let mut backoff = AcceptBackoff::default();
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(backoff.failure(at(0)).1, Some(1));
        assert_eq!(backoff.failure(at(100)).1, None);
        assert_eq!(backoff.failure(at(500)).1, None);
        assert_eq!(backoff.failure(at(1000)).1, Some(3));
        assert_eq!(backoff.failure(at(1500)).1, None);
    }

    #[test]
    fn retries_at_once_after_an_error_of_one_connection() {
        let mut backoff = AcceptBackoff::default();
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(backoff.failed(&aborted), Duration::ZERO);
        let enfile = io::Error::from_raw_os_error(libc::ENFILE);
        assert_eq!(backoff.failed(&enfile), FIRST_PAUSE);
    }
}
