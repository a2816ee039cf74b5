//! When a node resends a user's unacknowledged messages to the user's connections on it, as
//! the single node does: `retry_interval`, doubling after each attempt, and after
//! `max_retries` attempts the messages are marked failed (still delivered on the next
//! connect). Time comes from the engine's clock.

use std::time::{Duration, Instant};

/// What the next step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Resend now (this is attempt `n`, 1-based).
    Resend(u8),
    /// Give up: mark the unacknowledged messages failed.
    Fail,
}

/// The retry schedule of one user on one node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    interval: Duration,
    max: u8,
    state: Option<(u8, Instant)>,
}

impl Retry {
    /// Nothing scheduled yet.
    pub(crate) fn new(interval: Duration, max: u8) -> Retry {
        Retry {
            interval,
            max,
            state: None,
        }
    }

    /// Starts the schedule (first resend one interval from `now`) unless one runs.
    pub(crate) fn start(&mut self, now: Instant) {
        if self.state.is_none() {
            self.state = Some((0, now + self.interval));
        }
    }

    /// Stops it (everything acknowledged, no connection left, or given up).
    pub(crate) fn stop(&mut self) {
        self.state = None;
    }

    /// How long until the next step, if one is scheduled.
    pub(crate) fn wait(&self, now: Instant) -> Option<Duration> {
        self.state.map(|(_, at)| at.saturating_duration_since(now))
    }

    /// The step due at `now`, if any; schedules the one after it.
    pub(crate) fn due(&mut self, now: Instant) -> Option<Step> {
        let (done, at) = self.state?;
        if now < at {
            return None;
        }
        let attempt = done.saturating_add(1);
        if attempt > self.max {
            self.state = None;
            return Some(Step::Fail);
        }
        let backoff = self.interval * 2u32.saturating_pow(u32::from(attempt.min(16)));
        self.state = Some((attempt, now + backoff));
        Some(Step::Resend(attempt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resends_with_doubling_intervals_then_fails() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Retry::new(ms(100), 2);
        assert_eq!(r.wait(t0), None);
        r.start(t0);
        assert_eq!(r.due(t0 + ms(99)), None);
        assert_eq!(r.due(t0 + ms(100)), Some(Step::Resend(1)));
        // Next after 200 ms, then 400 ms.
        assert_eq!(r.wait(t0 + ms(100)), Some(ms(200)));
        assert_eq!(r.due(t0 + ms(300)), Some(Step::Resend(2)));
        assert_eq!(r.due(t0 + ms(700)), Some(Step::Fail));
        assert_eq!(r.wait(t0 + ms(700)), None);
        r.start(t0 + ms(800));
        r.stop();
        assert_eq!(r.due(t0 + ms(10_000)), None);
    }
}
