//! Inbound flow control for one connection (SPEC.md §9.2): frame-rate windows and coalesced
//! ACKs. The in-flight limit on engine requests lives on the shared `Conn`, because the engine
//! thread releases it.

use push_protocol::StreamPos;

/// Length of one rate window, ms.
const WINDOW_MS: u32 = 1000;
/// Distinct streams one coalesced ACK request may carry before it is sent.
const MAX_ACK_STREAMS: usize = 64;

/// Per-connection rate limits, from the server config.
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    /// Frames per window (0 = unlimited, at most 65,535).
    pub frames: u32,
    /// JOIN and LEAVE frames per window (0 = unlimited, at most 255).
    pub room_ops: u32,
    /// Consecutive windows over a limit after which the connection is closed (1 to 31).
    pub close_after: u8,
}

/// What the rate window says after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limits.
    Go,
    /// Over a limit: stop reading for this many ms (until the window ends).
    Pause(u32),
    /// Over a limit for `close_after` windows in a row: close with RATE_LIMITED.
    Close,
}

const OVER: u8 = 1;
const PAUSED: u8 = 2;
const STALLED: u8 = 4;

/// Frames counted in the current one-second window, and whether reading is held. Six bytes,
/// because every connection carries it (the session must stay in a 96-byte allocation):
/// aligned windows numbered by the second, counters that saturate, flags and the count of
/// consecutive windows over a limit (`strikes`, bits 3-7) in one byte.
#[derive(Debug, Default)]
pub struct Inflow {
    window: u16,
    frames: u16,
    room_ops: u8,
    flags: u8,
}

impl Inflow {
    /// Counts one frame received at `now_ms` (hub clock).
    pub fn count(&mut self, now_ms: u64, room_op: bool, limits: &RateLimits) -> Verdict {
        let window = (now_ms / u64::from(WINDOW_MS)) as u16;
        if window != self.window {
            let next = window.wrapping_sub(self.window) == 1;
            let strikes = if self.flags & OVER != 0 && next {
                (self.flags >> 3).saturating_add(1).min(31)
            } else {
                0
            };
            self.flags = (self.flags & STALLED) | (strikes << 3);
            self.window = window;
            self.frames = 0;
            self.room_ops = 0;
        }
        self.frames = self.frames.saturating_add(1);
        if room_op {
            self.room_ops = self.room_ops.saturating_add(1);
        }
        let over = (limits.frames != 0 && u32::from(self.frames) > limits.frames)
            || (limits.room_ops != 0 && u32::from(self.room_ops) > limits.room_ops);
        if !over {
            return Verdict::Go;
        }
        self.flags |= OVER;
        if (self.flags >> 3) + 1 >= limits.close_after {
            return Verdict::Close;
        }
        self.flags |= PAUSED;
        Verdict::Pause(WINDOW_MS - (now_ms % u64::from(WINDOW_MS)) as u32)
    }

    /// True while reading is paused for a rate limit at `now_ms`; the pause ends with its
    /// window.
    pub fn rate_paused(&mut self, now_ms: u64) -> bool {
        if self.flags & PAUSED == 0 {
            return false;
        }
        if (now_ms / u64::from(WINDOW_MS)) as u16 == self.window {
            return true;
        }
        self.flags &= !PAUSED;
        false
    }

    /// True when a rate pause may be in force (no clock read).
    pub fn may_be_paused(&self) -> bool {
        self.flags & PAUSED != 0
    }

    /// Decoding stopped for flow control, possibly with frames left in the read buffer.
    pub fn stalled(&self) -> bool {
        self.flags & STALLED != 0
    }

    /// Records whether decoding stopped for flow control.
    pub fn set_stalled(&mut self, stalled: bool) {
        if stalled {
            self.flags |= STALLED;
        } else {
            self.flags &= !STALLED;
        }
    }
}

/// ACKs read together, coalesced: per stream the highest position, with the Sequence of the
/// frame that carried it (echoed by INVALID_ACK). ACKs are cumulative, so a lower position of
/// the same stream adds nothing.
#[derive(Debug, Default)]
pub struct AckBatch {
    positions: Vec<(StreamPos, u32)>,
}

impl AckBatch {
    /// Adds the positions of one ACK frame.
    pub fn add(&mut self, seq: u32, list: Vec<StreamPos>) {
        for p in list {
            match self
                .positions
                .iter_mut()
                .find(|(e, _)| e.stream == p.stream)
            {
                Some(slot) => {
                    if p.position >= slot.0.position {
                        *slot = (p, seq);
                    }
                }
                None => self.positions.push((p, seq)),
            }
        }
    }

    /// True when the batch should be sent before more is added.
    pub fn is_full(&self) -> bool {
        self.positions.len() >= MAX_ACK_STREAMS
    }

    /// Takes the batch, if it holds anything.
    pub fn take(&mut self) -> Option<Vec<(StreamPos, u32)>> {
        (!self.positions.is_empty()).then(|| std::mem::take(&mut self.positions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use push_protocol::Stream;

    const LIMITS: RateLimits = RateLimits {
        frames: 3,
        room_ops: 1,
        close_after: 3,
    };

    #[test]
    fn frames_over_the_window_limit_pause_until_the_window_ends() {
        let mut f = Inflow::default();
        assert_eq!(f.count(5_000, false, &LIMITS), Verdict::Go);
        assert_eq!(f.count(5_100, false, &LIMITS), Verdict::Go);
        assert_eq!(f.count(5_200, false, &LIMITS), Verdict::Go);
        assert_eq!(f.count(5_300, false, &LIMITS), Verdict::Pause(700));
        assert!(f.rate_paused(5_999));
        assert!(!f.rate_paused(6_000));
        // A new window starts fresh.
        assert_eq!(f.count(6_000, false, &LIMITS), Verdict::Go);
    }

    #[test]
    fn room_operations_have_their_own_limit() {
        let mut f = Inflow::default();
        assert_eq!(f.count(5_000, true, &LIMITS), Verdict::Go);
        assert_eq!(f.count(5_001, true, &LIMITS), Verdict::Pause(999));
    }

    #[test]
    fn consecutive_windows_over_the_limit_close_and_a_quiet_window_forgives() {
        let mut f = Inflow::default();
        let over_in_window = |f: &mut Inflow, start: u64| {
            let mut last = Verdict::Go;
            for i in 0..4 {
                last = f.count(start + i, false, &LIMITS);
            }
            last
        };
        assert_eq!(over_in_window(&mut f, 10_000), Verdict::Pause(997));
        assert_eq!(over_in_window(&mut f, 11_000), Verdict::Pause(997));
        // A window skipped entirely resets the streak.
        assert_eq!(over_in_window(&mut f, 13_000), Verdict::Pause(997));
        assert_eq!(over_in_window(&mut f, 14_000), Verdict::Pause(997));
        assert_eq!(over_in_window(&mut f, 15_000), Verdict::Close);
    }

    #[test]
    fn a_window_within_limits_resets_the_streak() {
        let mut f = Inflow::default();
        for start in [10_000, 11_000] {
            for i in 0..4 {
                f.count(start + i, false, &LIMITS);
            }
        }
        assert_eq!(f.count(12_000, false, &LIMITS), Verdict::Go);
        for i in 0..4 {
            assert_ne!(f.count(13_000 + i, false, &LIMITS), Verdict::Close);
        }
    }

    #[test]
    fn unlimited_never_pauses() {
        let mut f = Inflow::default();
        let limits = RateLimits {
            frames: 0,
            room_ops: 0,
            close_after: 1,
        };
        for i in 0..100_000 {
            assert_eq!(f.count(i / 100, i % 2 == 0, &limits), Verdict::Go);
        }
    }

    #[test]
    fn acks_coalesce_to_the_highest_position_per_stream() {
        let mut b = AckBatch::default();
        let at = |stream: Stream, position| StreamPos { stream, position };
        b.add(1, vec![at(Stream::User, 5)]);
        b.add(2, vec![at(Stream::User, 9), at(Stream::Broadcast, 2)]);
        b.add(3, vec![at(Stream::User, 7)]);
        assert_eq!(
            b.take().unwrap(),
            vec![(at(Stream::User, 9), 2), (at(Stream::Broadcast, 2), 2)]
        );
        assert!(b.take().is_none());
    }
}
