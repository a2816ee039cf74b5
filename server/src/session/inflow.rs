//! Inbound flow control for one connection (SPEC.md §9.2): frame-rate slices and coalesced
//! ACKs. The in-flight limit on engine requests lives on the shared `Conn`, because the engine
//! thread releases it.

use push_protocol::StreamPos;

/// Length of one rate slice, ms: a tenth of the per-second limits is allowed in each, so a
/// connection's allowance cannot arrive as one burst (a burst of JOINs would replay whole
/// rooms back to back and hold up everyone's deliveries).
const SLICE_MS: u64 = 100;
/// Slices per second.
const SLICES: u16 = 10;
/// Distinct streams one coalesced ACK request may carry before it is sent.
const MAX_ACK_STREAMS: usize = 64;

/// Per-connection rate limits, from the server config.
#[derive(Debug, Clone, Copy)]
pub(super) struct RateLimits {
    /// Frames per second (0 = unlimited, at most 65,535).
    pub frames: u32,
    /// JOIN and LEAVE frames per second (0 = unlimited, at most 2,540).
    pub room_ops: u32,
    /// PUBLISH frames per second (0 = unlimited), counted on the connection's `Conn`.
    pub publishes: u32,
    /// Consecutive seconds over a limit after which the connection is closed (1 to 15).
    pub close_after: u8,
}

/// What the rate slice says after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Within the limits.
    Go,
    /// Over a limit: stop reading for this many ms (until the slice ends).
    Pause(u32),
    /// Over a limit in `close_after` seconds in a row: close with RATE_LIMITED.
    Close,
}

/// A slice went over a limit.
const OVER: u8 = 1;
/// Some slice of the current second went over a limit.
const OVER_SECOND: u8 = 2;
const PAUSED: u8 = 4;
const STALLED: u8 = 8;
/// `strikes` (consecutive earlier seconds over a limit) live in the high four bits.
const STRIKE_SHIFT: u8 = 4;

/// Allowance per slice of a per-second limit.
pub(super) fn per_slice(per_sec: u32) -> u32 {
    per_sec.div_ceil(u32::from(SLICES))
}

/// Frames counted in the current 100 ms slice, and whether reading is held. Six bytes,
/// because every connection carries it (the session must stay in a 96-byte allocation):
/// aligned slices numbered from the hub's start, counters that saturate, and one byte of
/// flags with the count of consecutive seconds over a limit.
#[derive(Debug, Default)]
pub(super) struct Inflow {
    slice: u16,
    frames: u16,
    room_ops: u8,
    flags: u8,
}

impl Inflow {
    fn strikes(&self) -> u8 {
        self.flags >> STRIKE_SHIFT
    }

    /// Counts one frame received at `now_ms` (hub clock).
    pub(super) fn count(&mut self, now_ms: u64, room_op: bool, limits: &RateLimits) -> Verdict {
        let slice = Inflow::slice_of(now_ms);
        if slice != self.slice {
            let (was, is) = (self.slice / SLICES, slice / SLICES);
            if was != is {
                // A second without frames in between breaks the streak.
                let strikes = if self.flags & OVER_SECOND != 0 && is.wrapping_sub(was) == 1 {
                    (self.strikes() + 1).min(15)
                } else {
                    0
                };
                self.flags = (self.flags & STALLED) | (strikes << STRIKE_SHIFT);
            } else {
                self.flags &= !(OVER | PAUSED);
            }
            self.slice = slice;
            self.frames = 0;
            self.room_ops = 0;
        }
        self.frames = self.frames.saturating_add(1);
        if room_op {
            self.room_ops = self.room_ops.saturating_add(1);
        }
        let over = (limits.frames != 0 && u32::from(self.frames) > per_slice(limits.frames))
            || (limits.room_ops != 0 && u32::from(self.room_ops) > per_slice(limits.room_ops));
        if !over {
            return Verdict::Go;
        }
        self.over(now_ms, limits)
    }

    /// The rate slice `now_ms` falls in.
    pub(super) fn slice_of(now_ms: u64) -> u16 {
        (now_ms / SLICE_MS) as u16
    }

    /// The frame just counted went over a limit: pause until the slice ends, or close after
    /// `close_after` seconds over. Also for a limit kept elsewhere (PUBLISH, on the `Conn`).
    pub(super) fn over(&mut self, now_ms: u64, limits: &RateLimits) -> Verdict {
        self.flags |= OVER | OVER_SECOND;
        if self.strikes() + 1 >= limits.close_after {
            return Verdict::Close;
        }
        self.flags |= PAUSED;
        Verdict::Pause((SLICE_MS - now_ms % SLICE_MS) as u32)
    }

    /// True while reading is paused at `now_ms`; a pause ends with its slice.
    pub(super) fn rate_paused(&mut self, now_ms: u64) -> bool {
        if self.flags & PAUSED == 0 {
            return false;
        }
        if (now_ms / SLICE_MS) as u16 == self.slice {
            return true;
        }
        self.flags &= !PAUSED;
        false
    }

    /// True when a rate pause may be in force (no clock read).
    pub(super) fn may_be_paused(&self) -> bool {
        self.flags & PAUSED != 0
    }

    /// Decoding stopped for flow control, possibly with frames left in the read buffer.
    pub(super) fn stalled(&self) -> bool {
        self.flags & STALLED != 0
    }

    /// Records whether decoding stopped for flow control.
    pub(super) fn set_stalled(&mut self, stalled: bool) {
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
pub(super) struct AckBatch {
    positions: Vec<(StreamPos, u32)>,
}

impl AckBatch {
    /// Adds the positions of one ACK frame.
    pub(super) fn add(&mut self, seq: u32, list: Vec<StreamPos>) {
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
    pub(super) fn is_full(&self) -> bool {
        self.positions.len() >= MAX_ACK_STREAMS
    }

    /// Takes the batch, if it holds anything.
    pub(super) fn take(&mut self) -> Option<Vec<(StreamPos, u32)>> {
        (!self.positions.is_empty()).then(|| std::mem::take(&mut self.positions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use push_protocol::Stream;

    /// 3 frames and 1 room operation per 100 ms slice.
    const LIMITS: RateLimits = RateLimits {
        frames: 30,
        room_ops: 10,
        publishes: 0,
        close_after: 3,
    };

    #[test]
    fn frames_over_the_slice_allowance_pause_until_the_slice_ends() {
        let mut f = Inflow::default();
        assert_eq!(f.count(5_000, false, &LIMITS), Verdict::Go);
        assert_eq!(f.count(5_010, false, &LIMITS), Verdict::Go);
        assert_eq!(f.count(5_020, false, &LIMITS), Verdict::Go);
        assert_eq!(f.count(5_030, false, &LIMITS), Verdict::Pause(70));
        assert!(f.rate_paused(5_099));
        assert!(!f.rate_paused(5_100));
        // A new slice starts fresh.
        assert_eq!(f.count(5_100, false, &LIMITS), Verdict::Go);
    }

    #[test]
    fn room_operations_have_their_own_limit() {
        let mut f = Inflow::default();
        assert_eq!(f.count(5_000, true, &LIMITS), Verdict::Go);
        assert_eq!(f.count(5_001, true, &LIMITS), Verdict::Pause(99));
    }

    #[test]
    fn a_client_within_its_allowance_is_never_paused() {
        let mut f = Inflow::default();
        for t in (10_000..20_000).step_by(34) {
            assert_eq!(f.count(t, t % 100 < 34, &LIMITS), Verdict::Go, "{t}");
        }
    }

    /// Goes over the allowance in one slice of the second that starts at `start`.
    fn over_in_second(f: &mut Inflow, start: u64) -> Verdict {
        let mut last = Verdict::Go;
        for i in 0..4 {
            last = f.count(start + 500 + i, false, &LIMITS);
        }
        last
    }

    #[test]
    fn consecutive_seconds_over_the_limit_close_and_a_quiet_second_forgives() {
        let mut f = Inflow::default();
        assert_eq!(over_in_second(&mut f, 10_000), Verdict::Pause(97));
        assert_eq!(over_in_second(&mut f, 11_000), Verdict::Pause(97));
        // A second skipped entirely resets the streak.
        assert_eq!(over_in_second(&mut f, 13_000), Verdict::Pause(97));
        assert_eq!(over_in_second(&mut f, 14_000), Verdict::Pause(97));
        assert_eq!(over_in_second(&mut f, 15_000), Verdict::Close);
    }

    #[test]
    fn a_second_within_limits_resets_the_streak() {
        let mut f = Inflow::default();
        over_in_second(&mut f, 10_000);
        over_in_second(&mut f, 11_000);
        assert_eq!(f.count(12_000, false, &LIMITS), Verdict::Go);
        assert_eq!(over_in_second(&mut f, 13_000), Verdict::Pause(97));
    }

    #[test]
    fn a_limit_kept_elsewhere_pauses_and_strikes_like_the_own_ones() {
        let mut f = Inflow::default();
        assert_eq!(f.count(10_500, false, &LIMITS), Verdict::Go);
        assert_eq!(f.over(10_500, &LIMITS), Verdict::Pause(100));
        assert!(f.rate_paused(10_599));
        assert_eq!(over_in_second(&mut f, 11_000), Verdict::Pause(97));
        assert_eq!(f.count(12_100, false, &LIMITS), Verdict::Go);
        assert_eq!(f.over(12_100, &LIMITS), Verdict::Close);
    }

    #[test]
    fn unlimited_never_pauses() {
        let mut f = Inflow::default();
        let limits = RateLimits {
            frames: 0,
            room_ops: 0,
            publishes: 0,
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
