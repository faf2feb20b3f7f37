//! A hyper request body as the storage adapter's [`BodySource`], with an idle timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{Either, select};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use stowage_core::step::BodyError;
use stowage_driver::Timer;
use stowage_storage::BodySource;

pub struct RequestBody {
    incoming: Incoming,
    timer: Arc<dyn Timer>,
    idle_timeout: Duration,
}

impl RequestBody {
    pub fn new(incoming: Incoming, timer: Arc<dyn Timer>, idle_timeout: Duration) -> Self {
        RequestBody {
            incoming,
            timer,
            idle_timeout,
        }
    }

    /// Whether unread body bytes may still be on the connection (the operation answered
    /// without reading them all).
    pub fn left_unread(&self) -> bool {
        !self.incoming.is_end_stream()
    }
}

impl BodySource for RequestBody {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, BodyError>> {
        loop {
            let idle = self.timer.sleep(self.idle_timeout);
            let frame = match select(self.incoming.frame(), idle).await {
                Either::Left((frame, _)) => frame?,
                Either::Right(_) => {
                    let secs = self.idle_timeout.as_secs();
                    return Some(Err(BodyError::Client(format!("no body data for {secs}s"))));
                }
            };
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
