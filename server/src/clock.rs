//! Where the delivery engine's time comes from.
//!
//! The engine never reads the operating system's clock for a decision (when a retry is due,
//! whether a message expired, what compaction may delete, how long an idempotency id is
//! kept): it takes a [`Now`] from a [`Clock`] once per batch and passes it down. Production
//! uses [`SystemClock`]; tests use [`ManualClock`] and move time forward themselves, so they
//! never sleep waiting for a deadline. Latency measurements (metrics) still use real time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One reading of a clock: a monotonic instant for schedules and Unix milliseconds for what
/// is stored (message timestamps, expiry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// For schedules (retries, compaction).
    pub at: Instant,
    /// Milliseconds since the Unix epoch, for stored times.
    pub unix_ms: u64,
}

/// A source of time for the delivery engine.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Now;
}

/// The operating system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Now {
        Now {
            at: Instant::now(),
            unix_ms: unix_ms(),
        }
    }
}

/// Milliseconds since the Unix epoch from the system clock.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A clock that only moves when told to (tests).
#[derive(Debug)]
pub struct ManualClock {
    start: Now,
    offset_ms: AtomicU64,
}

impl ManualClock {
    /// A clock standing at the current system time.
    pub fn new() -> ManualClock {
        ManualClock {
            start: SystemClock.now(),
            offset_ms: AtomicU64::new(0),
        }
    }

    /// Moves the clock forward by `by` (whole milliseconds).
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Now {
        let offset = self.offset_ms.load(Ordering::SeqCst);
        Now {
            at: self.start.at + Duration::from_millis(offset),
            unix_ms: self.start.unix_ms + offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let c = ManualClock::new();
        let a = c.now();
        assert_eq!(c.now(), a);
        c.advance(Duration::from_millis(1500));
        let b = c.now();
        assert_eq!(b.unix_ms - a.unix_ms, 1500);
        assert_eq!(b.at - a.at, Duration::from_millis(1500));
    }
}
