//! A hyper request body as the storage adapter's [`BodySource`], with an idle timeout and a
//! minimum rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{Either, select};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use stowage_core::step::BodyError;
use stowage_driver::{BoxFuture, Timer};
use stowage_storage::BodySource;

/// How slow a request body may be (`[server]` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPace {
    /// A body silent this long fails its request.
    pub idle_timeout: Duration,
    /// Once the server has waited `grace` for the body in all, a body that came slower
    /// than this many bytes per second fails its request; 0: no minimum. Without it a
    /// client sending a byte now and then would hold its request (and, for a chunk, a
    /// claim on the upload) open for ever.
    pub min_bytes_per_sec: u64,
    pub grace: Duration,
}

pub struct RequestBody {
    incoming: Incoming,
    timer: Arc<dyn Timer>,
    pace: BodyPace,
    /// Runs out no earlier than `idle_timeout` after the last data. It is set again only
    /// when it runs out, not for every chunk: a fresh timer per 128 KiB read cost a timer
    /// registration and, on tokio, a wake-up of the runtime's driver (a system call) each.
    idle: Option<BoxFuture<'static, ()>>,
    last_data: Instant,
    /// How long the server waited for the client's bytes, and how many came: the client's
    /// rate, leaving out the time the server spent storing them (a slow disk or S3 is not
    /// the client's fault).
    waited: Duration,
    received: u64,
}

impl RequestBody {
    pub fn new(incoming: Incoming, timer: Arc<dyn Timer>, pace: BodyPace) -> Self {
        RequestBody {
            incoming,
            timer,
            pace,
            idle: None,
            last_data: Instant::now(),
            waited: Duration::ZERO,
            received: 0,
        }
    }

    /// Whether unread body bytes may still be on the connection (the operation answered
    /// without reading them all).
    pub fn left_unread(&self) -> bool {
        !self.incoming.is_end_stream()
    }

    /// How many body bytes were read.
    pub fn received(&self) -> u64 {
        self.received
    }

    async fn next_data(&mut self) -> Option<Result<Bytes, BodyError>> {
        let idle_timeout = self.pace.idle_timeout;
        loop {
            let idle = self
                .idle
                .get_or_insert_with(|| self.timer.sleep(idle_timeout));
            let frame = match select(self.incoming.frame(), idle).await {
                Either::Left((frame, _)) => frame?,
                Either::Right(_) => {
                    let quiet = self.last_data.elapsed();
                    if quiet < idle_timeout {
                        self.idle = Some(self.timer.sleep(idle_timeout - quiet));
                        continue;
                    }
                    let secs = idle_timeout.as_secs();
                    return Some(Err(BodyError::Client(format!("no body data for {secs}s"))));
                }
            };
            self.last_data = Instant::now();
            match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => return Some(Ok(data)),
                    // Trailers carry nothing the registry uses.
                    Err(_) => continue,
                },
                Err(e) => return Some(Err(BodyError::Client(e.to_string()))),
            }
        }
    }
}

/// Why a body that sent `received` bytes while the server waited `waited` for them is too
/// slow for `pace`, if it is.
fn too_slow(pace: &BodyPace, received: u64, waited: Duration) -> Option<BodyError> {
    let least = pace.min_bytes_per_sec;
    if least == 0 || waited <= pace.grace {
        return None;
    }
    // received / waited < least, in integers: nanoseconds times bytes fit a u128.
    if u128::from(received) * 1_000_000_000 >= u128::from(least) * waited.as_nanos() {
        return None;
    }
    let rate = received as f64 / waited.as_secs_f64();
    Some(BodyError::Client(format!(
        "request body came at {rate:.0} bytes/s, below the minimum of {least} bytes/s"
    )))
}

impl BodySource for RequestBody {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, BodyError>> {
        let asked = Instant::now();
        let next = self.next_data().await;
        self.waited += self.last_data.saturating_duration_since(asked);
        if let Some(Ok(data)) = &next {
            self.received += data.len() as u64;
            if let Some(slow) = too_slow(&self.pace, self.received, self.waited) {
                return Some(Err(slow));
            }
        }
        next
    }

    /// The `Content-Length`, until the first chunk is read (hyper counts down what is left).
    fn declared_len(&self) -> Option<u64> {
        if self.received > 0 {
            return None;
        }
        self.incoming.size_hint().exact()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACE: BodyPace = BodyPace {
        idle_timeout: Duration::from_secs(60),
        min_bytes_per_sec: 1000,
        grace: Duration::from_secs(10),
    };

    #[test]
    fn a_body_is_too_slow_only_below_the_rate_after_the_grace_period() {
        let secs = Duration::from_secs;
        assert!(
            too_slow(&PACE, 0, secs(10)).is_none(),
            "within the grace period"
        );
        assert!(too_slow(&PACE, 20_000, secs(20)).is_none(), "at the rate");
        let slow = too_slow(&PACE, 19_999, secs(20)).expect("below the rate");
        assert!(slow.to_string().contains("1000 bytes/s"), "{slow}");
        let off = BodyPace {
            min_bytes_per_sec: 0,
            ..PACE
        };
        assert!(too_slow(&off, 0, secs(1000)).is_none(), "0 turns it off");
        // About a byte a second, computed without overflowing.
        assert!(too_slow(&PACE, u64::MAX, Duration::MAX).is_some());
    }
}
