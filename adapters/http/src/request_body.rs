//! A hyper request body as the storage adapter's [`BodySource`], with an idle timeout.

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

pub struct RequestBody {
    incoming: Incoming,
    timer: Arc<dyn Timer>,
    idle_timeout: Duration,
    /// Runs out no earlier than `idle_timeout` after the last data. It is set again only
    /// when it runs out, not for every chunk: a fresh timer per 128 KiB read cost a timer
    /// registration and, on tokio, a wake-up of the runtime's driver (a system call) each.
    idle: Option<BoxFuture<'static, ()>>,
    last_data: Instant,
    /// Body bytes read so far.
    received: u64,
}

impl RequestBody {
    pub fn new(incoming: Incoming, timer: Arc<dyn Timer>, idle_timeout: Duration) -> Self {
        RequestBody {
            incoming,
            timer,
            idle_timeout,
            idle: None,
            last_data: Instant::now(),
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
}

impl BodySource for RequestBody {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, BodyError>> {
        loop {
            let idle = self
                .idle
                .get_or_insert_with(|| self.timer.sleep(self.idle_timeout));
            let frame = match select(self.incoming.frame(), idle).await {
                Either::Left((frame, _)) => frame?,
                Either::Right(_) => {
                    let quiet = self.last_data.elapsed();
                    if quiet < self.idle_timeout {
                        self.idle = Some(self.timer.sleep(self.idle_timeout - quiet));
                        continue;
                    }
                    let secs = self.idle_timeout.as_secs();
                    return Some(Err(BodyError::Client(format!("no body data for {secs}s"))));
                }
            };
            self.last_data = Instant::now();
            match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => {
                        self.received += data.len() as u64;
                        return Some(Ok(data));
                    }
                    // Trailers carry nothing the registry uses.
                    Err(_) => continue,
                },
                Err(e) => return Some(Err(BodyError::Client(e.to_string()))),
            }
        }
    }
}
