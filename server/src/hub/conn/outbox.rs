//! A connection's outbox: the frames waiting to be written, the close order, the task's waker
//! and the rooms, all behind the connection's one lock; and the types that cross it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Waker;

use bytes::Bytes;
use push_protocol::ErrorCode;
use thin_vec::ThinVec;

/// Bounds of one connection's outbound queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Most frames waiting.
    pub max_frames: usize,
    /// Most bytes waiting.
    pub max_bytes: usize,
}

/// What the writer needs to know about a queued frame besides its bytes: when and for which
/// scenario its message was accepted (accept-to-write latency; `accepted_us == 0` means "not
/// a message": replies, pings), and whether the bytes are already in the transport's framing.
/// 16 bytes, so a queued frame stays 48.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    /// Acceptance time on the hub clock, µs.
    pub accepted_us: u64,
    /// Index into `stats::SCENARIOS`.
    pub scenario: u8,
    /// Already framed for the transport (a WebSocket PONG): written as it is, where other
    /// frames get wrapped for the connection's transport.
    pub framed: bool,
    /// The traced fan-out this frame belongs to (`trace::FanoutSpan::slot`), 0 for none.
    /// In the padding: the stamp stays 16 bytes.
    pub trace: u32,
}

impl Stamp {
    /// Not a message.
    pub const NONE: Stamp = Stamp {
        accepted_us: 0,
        scenario: 0,
        framed: false,
        trace: 0,
    };

    /// A message of scenario `scenario` (an index into `stats::SCENARIOS`) whose acceptance
    /// time is unknown here: counted, but not in the latency histograms.
    pub const fn delivery(scenario: usize) -> Stamp {
        Stamp {
            accepted_us: 0,
            scenario: scenario as u8,
            framed: false,
            trace: 0,
        }
    }

    /// Not a message, and already in the transport's framing.
    pub const FRAMED: Stamp = Stamp {
        accepted_us: 0,
        scenario: 0,
        framed: true,
        trace: 0,
    };
}

/// A frame waiting in an outbox.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Wire bytes (possibly shared with other connections).
    pub frame: Bytes,
    /// Acceptance stamp for latency metrics.
    pub stamp: Stamp,
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnqueueError {
    /// The connection is closing; the frame was dropped.
    #[error("connection is closing")]
    Closed,
    /// The queue overflowed; the connection is now closing with SLOW_CONSUMER.
    #[error("outbound queue full, connection dropped as a slow consumer")]
    SlowConsumer,
}

/// An order to close, with the pre-encoded CLOSE (or AUTH_ERROR) frame to send last.
#[derive(Debug, Clone)]
pub struct CloseOrder {
    /// Reason, for logs and metrics.
    pub code: ErrorCode,
    /// Wire bytes of the final frame.
    pub frame: Bytes,
}

impl CloseOrder {
    /// An order to close with a CLOSE frame of `code`, the reconnect hint and `reason`,
    /// encoded once so it can be shared by every connection it is sent to.
    pub fn new(code: ErrorCode, reconnect_ms: Option<u32>, reason: &str) -> CloseOrder {
        CloseOrder {
            code,
            frame: close_frame(code, reconnect_ms, reason),
        }
    }
}

/// Encodes a CLOSE frame (Sequence 0: it answers no request).
pub fn close_frame(code: ErrorCode, reconnect_ms: Option<u32>, reason: &str) -> Bytes {
    let close = push_protocol::Close {
        code,
        reconnect_ms,
        reason: reason.into(),
    };
    let packet = push_protocol::Packet::new(0, push_protocol::Frame::Close(close));
    // A CLOSE with a reason of our own making is far below every encoding limit.
    push_protocol::encode_to_bytes(&packet, &Default::default()).expect("short CLOSE encodes")
}

/// State behind the connection's lock. Empty collections hold no heap memory, so an idle
/// connection costs only this struct.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    pub(super) frames: VecDeque<Queued>,
    pub(super) bytes: u32,
    pub(super) waker: Option<Waker>,
    /// Boxed: rare, and an idle connection should not pay for its size.
    pub(super) close: Option<Box<CloseOrder>>,
    /// A thin vector (8 bytes inline instead of a Vec's 24; none allocated while in no room;
    /// one 32-byte allocation for one room instead of a boxed Vec's 32 + 64).
    pub(super) rooms: ThinVec<Arc<str>>,
    /// Set once the connection has been unregistered: a JOIN still on its way through the
    /// delivery engine must not make a closed connection a room member again.
    pub(super) gone: bool,
}

/// What the connection task gets when it polls its outbox.
#[derive(Debug)]
pub enum Output {
    /// Frames were moved into the caller's batch.
    Frames,
    /// Nothing queued; the connection must close with this order.
    Close(CloseOrder),
}
