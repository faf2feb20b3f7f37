//! The driver's [`Timer`] on async-io's timers (retry delays, the body idle timeout).

use std::time::Duration;

use stowage_driver::{BoxFuture, Timer};

pub struct SmolSleep;

impl Timer for SmolSleep {
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            async_io::Timer::after(duration).await;
        })
    }
}
