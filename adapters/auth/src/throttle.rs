//! Failed logins per client address: past the configured number within a minute, that
//! address's logins are answered `429` until the minute is over. Other addresses are not
//! affected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once; past this the oldest windows are forgotten first.
const MAX_TRACKED: usize = 100_000;

pub struct LoginThrottle {
    max_failures: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl LoginThrottle {
    /// `max_failures` per minute per address; 0 turns throttling off.
    pub fn new(max_failures: u32) -> Self {
        LoginThrottle {
            max_failures,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// How long `address` must wait before its next login is considered, if it must.
    pub fn retry_after(&self, address: IpAddr, now: Instant) -> Option<Duration> {
        if self.max_failures == 0 {
            return None;
        }
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let (start, failures) = windows.get(&address)?;
        let left = WINDOW.checked_sub(now.saturating_duration_since(*start))?;
        (*failures >= self.max_failures && !left.is_zero()).then_some(left)
    }

    pub fn record_failure(&self, address: IpAddr, now: Instant) {
        if self.max_failures == 0 {
            return;
        }
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() >= MAX_TRACKED {
            windows.retain(|_, (start, _)| now.saturating_duration_since(*start) < WINDOW);
        }
        let entry = windows.entry(address).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_failing_address_waits_and_only_for_the_minute() {
        let throttle = LoginThrottle::new(3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(throttle.retry_after(a, t0).is_none());
            throttle.record_failure(a, t0);
        }
        let wait = throttle
            .retry_after(a, t0 + Duration::from_secs(10))
            .unwrap();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(throttle.retry_after(b, t0).is_none());
        assert!(throttle.retry_after(a, t0 + WINDOW).is_none());
    }
}
