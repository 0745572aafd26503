//! Engine time for the driver.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use twinhub_core::Instant;

/// Engine time: milliseconds since the Unix epoch, so ages of recovered records stay true,
/// advanced by tokio's clock (which tests can pause).
pub(super) struct Clock {
    base_ms: u64,
    start: tokio::time::Instant,
}

impl Clock {
    pub(super) fn new() -> Self {
        let base_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            base_ms,
            start: tokio::time::Instant::now(),
        }
    }
    pub(super) fn now(&self) -> Instant {
        Instant::from_millis(self.base_ms + self.start.elapsed().as_millis() as u64)
    }
    pub(super) fn deadline(&self, at: Instant) -> tokio::time::Instant {
        self.start + Duration::from_millis(at.as_millis().saturating_sub(self.base_ms))
    }
}
