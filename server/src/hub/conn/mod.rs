//! The part of a connection that other tasks touch: its identity, heartbeat and replay
//! state, flow-control counters (`flow`) and its outbox (`outbox`: queue, close order, rooms).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

mod flow;
mod outbox;

use outbox::Outbox;
pub use outbox::{close_frame, CloseOrder, EnqueueError, Output, QueueLimits, Queued, Stamp};

use bytes::Bytes;
use push_protocol::ws::Transport;
use push_protocol::{EncodeOptions, ErrorCode};
use thin_vec::ThinVec;

/// Shared handle to one authenticated connection.
#[derive(Debug)]
pub struct Conn {
    /// Server-unique connection id.
    pub id: u64,
    /// Authenticated user.
    pub user: Arc<str>,
    /// Device label and room grants, when the token or HELLO had any (boxed: usually absent,
    /// and an idle connection should not pay for them).
    extra: Option<Box<Extra>>,
    /// Last time (ms on the hub clock) a whole frame arrived; read by the heartbeat sweep.
    last_seen_ms: AtomicU64,
    /// Next position of the user's stream still to be replayed to this connection (0 = caught
    /// up). While non-zero, live user messages are not queued directly: the replay, paced by
    /// the connection draining its queue, delivers them in order.
    replay_next: AtomicU64,
    /// Set while a request to continue the replay is on its way to the delivery engine.
    replay_asked: AtomicBool,
    /// The protocol version negotiated in the handshake (in the padding after the flag).
    version: u8,
    /// Index into `stats::TRANSPORTS` (presence answers; in the padding too).
    transport: u8,
    /// The WebSocket mode whose frames the hub may wrap once for every such connection
    /// (`FRAMING_*`; in the padding too).
    framing: u8,
    /// When the connection was admitted, in seconds on the hub clock (presence answers; fits
    /// the padding beside the two u32 counters, so it costs no bytes).
    connected_s: u32,
    /// Requests of this connection waiting for the delivery engine (inbound flow control),
    /// with `flow::READER_WAITING` set while the connection's reader is paused for credit.
    requests: AtomicU32,
    /// PUBLISH frames counted in the current rate slice: the slice's number in the high 16
    /// bits, the count in the low 16 (SPEC.md §9.2). Only the connection's own task uses it.
    publishes: AtomicU32,
    outbox: Mutex<Outbox>,
}

const FRAMING_NONE: u8 = 0;
const FRAMING_WS_BINARY: u8 = 1;
const FRAMING_WS_JSON: u8 = 2;

/// The rarely present parts of a connection.
#[derive(Debug, Default)]
struct Extra {
    device: Option<Box<str>>,
    room_grants: Box<[Box<str>]>,
    /// How frames must be re-encoded for this client (its version-2 HELLO options), when they
    /// differ from the server's.
    encoding: Option<EncodeOptions>,
    /// The client asked not to receive its own room PUBLISHes.
    no_echo: bool,
}

impl Conn {
    /// A connection with an empty queue, seen at `now_ms`.
    pub fn new(id: u64, user: Arc<str>, device: Option<Box<str>>, now_ms: u64) -> Self {
        Conn::with_grants(id, user, device, Vec::new(), now_ms)
    }

    /// Like `new`, with the token's room grants (for rooms under `restricted_room_prefixes`).
    pub fn with_grants(
        id: u64,
        user: Arc<str>,
        device: Option<Box<str>>,
        room_grants: Vec<String>,
        now_ms: u64,
    ) -> Self {
        let extra = (device.is_some() || !room_grants.is_empty()).then(|| {
            Box::new(Extra {
                device,
                room_grants: room_grants
                    .into_iter()
                    .map(String::into_boxed_str)
                    .collect(),
                ..Extra::default()
            })
        });
        Conn {
            id,
            user,
            extra,
            last_seen_ms: AtomicU64::new(now_ms),
            replay_next: AtomicU64::new(0),
            replay_asked: AtomicBool::new(false),
            version: 1,
            transport: 0,
            framing: FRAMING_NONE,
            connected_s: (now_ms / 1000) as u32,
            requests: AtomicU32::new(0),
            publishes: AtomicU32::new(0),
            outbox: Mutex::new(Outbox::default()),
        }
    }

    /// The same connection, speaking protocol `version` (negotiated in the handshake).
    pub fn with_version(mut self, version: u16) -> Self {
        self.version = u8::try_from(version).unwrap_or(u8::MAX);
        self
    }

    /// The same connection, with what its client asked of the server's frames in HELLO:
    /// `encoding` when frames must be re-encoded for it, `no_echo` to skip its own PUBLISHes.
    pub fn with_client_options(mut self, encoding: Option<EncodeOptions>, no_echo: bool) -> Self {
        if encoding.is_some() || no_echo {
            let extra = self.extra.get_or_insert_with(Box::default);
            extra.encoding = encoding;
            extra.no_echo = no_echo;
        }
        self
    }

    /// How frames are re-encoded for this client; `None` when the server's encoding suits it.
    pub fn encoding(&self) -> Option<&EncodeOptions> {
        self.extra.as_deref().and_then(|e| e.encoding.as_ref())
    }

    /// True when the client asked not to receive its own room PUBLISHes.
    pub fn no_echo(&self) -> bool {
        self.extra.as_deref().is_some_and(|e| e.no_echo)
    }

    /// The same connection, on transport `index` (into `stats::TRANSPORTS`).
    pub fn with_transport(mut self, index: usize) -> Self {
        self.transport = u8::try_from(index).unwrap_or(0);
        self
    }

    /// The same connection on `transport`; a WebSocket connection may then be handed frames
    /// the hub wrapped once for all of them (see [`Conn::shared_framing`]).
    pub fn with_framing(mut self, transport: Transport) -> Self {
        self.framing = match transport {
            Transport::WsBinary => FRAMING_WS_BINARY,
            Transport::WsJson => FRAMING_WS_JSON,
            Transport::Tcp => FRAMING_NONE,
        };
        self
    }

    /// The WebSocket mode of a connection that takes frames as the hub wraps them for every
    /// connection of that mode: none for TCP, long polls and clients with an encoding of
    /// their own (their task re-encodes each frame).
    pub fn shared_framing(&self) -> Option<Transport> {
        // The byte first: a TCP connection's fan-out never looks into `extra`.
        let mode = match self.framing {
            FRAMING_WS_BINARY => Transport::WsBinary,
            FRAMING_WS_JSON => Transport::WsJson,
            _ => return None,
        };
        self.encoding().is_none().then_some(mode)
    }

    /// Index into `stats::TRANSPORTS` of the connection's transport.
    pub fn transport(&self) -> usize {
        usize::from(self.transport)
    }

    /// When the connection was admitted, in seconds on the hub clock.
    pub fn connected_s(&self) -> u64 {
        u64::from(self.connected_s)
    }

    /// The protocol version negotiated in the handshake.
    pub fn version(&self) -> u16 {
        u16::from(self.version)
    }

    /// Device label, if the token or HELLO named one.
    pub fn device(&self) -> Option<&str> {
        self.extra.as_deref().and_then(|e| e.device.as_deref())
    }

    /// The token's room grants (room names, or prefixes ending in `*`).
    pub fn room_grants(&self) -> &[Box<str>] {
        self.extra.as_deref().map_or(&[], |e| &e.room_grants)
    }

    fn lock(&self) -> MutexGuard<'_, Outbox> {
        // A panic while holding this lock leaves only plain data behind; keep serving.
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that a frame arrived.
    pub fn touch(&self, now_ms: u64) {
        self.last_seen_ms.store(now_ms, Ordering::Relaxed);
    }

    /// When the last frame arrived.
    pub fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms.load(Ordering::Relaxed)
    }

    /// Next user-stream position still to replay (0 = caught up).
    pub fn replay_next(&self) -> u64 {
        self.replay_next.load(Ordering::Acquire)
    }

    /// Records where the replay stands and allows the next continuation request.
    pub fn set_replay_next(&self, next: u64) {
        self.replay_next.store(next, Ordering::Release);
        self.replay_asked.store(false, Ordering::Release);
    }

    /// True (once) when the caller should ask for the next replay chunk.
    pub fn should_ask_replay(&self) -> bool {
        self.replay_next() != 0 && !self.replay_asked.swap(true, Ordering::AcqRel)
    }

    /// Queues a frame for writing; on overflow the connection is closed as a slow consumer.
    pub fn enqueue(
        &self,
        frame: Bytes,
        limits: &QueueLimits,
        slow_close: &Bytes,
    ) -> Result<(), EnqueueError> {
        self.enqueue_stamped(frame, Stamp::NONE, limits, slow_close)
    }

    /// Like `enqueue`, with the message's acceptance stamp.
    pub fn enqueue_stamped(
        &self,
        frame: Bytes,
        stamp: Stamp,
        limits: &QueueLimits,
        slow_close: &Bytes,
    ) -> Result<(), EnqueueError> {
        let waker;
        {
            let mut o = self.lock();
            if o.close.is_some() {
                return Err(EnqueueError::Closed);
            }
            if o.frames.len() >= limits.max_frames
                || o.bytes as usize + frame.len() > limits.max_bytes
            {
                // Free the backlog now: durable messages are replayed from storage on reconnect.
                o.frames = VecDeque::new();
                o.bytes = 0;
                o.close = Some(Box::new(CloseOrder {
                    code: ErrorCode::SLOW_CONSUMER,
                    frame: slow_close.clone(),
                }));
                waker = o.waker.take();
                drop(o);
                if let Some(w) = waker {
                    w.wake();
                }
                return Err(EnqueueError::SlowConsumer);
            }
            o.bytes += frame.len() as u32;
            o.frames.push_back(Queued { frame, stamp });
            waker = o.waker.take();
        }
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Orders the connection closed after what is already queued (first order wins).
    pub fn close(&self, order: CloseOrder, discard_queue: bool) {
        let waker = {
            let mut o = self.lock();
            if o.close.is_none() {
                o.close = Some(Box::new(order));
            }
            if discard_queue {
                o.frames = VecDeque::new();
                o.bytes = 0;
            }
            o.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// True once a close has been ordered.
    pub fn is_closing(&self) -> bool {
        self.lock().close.is_some()
    }

    /// Moves up to `max` queued frames into `batch`, or reports the close order once the queue
    /// is empty, or registers the task's waker.
    pub fn poll_output(
        &self,
        cx: &mut Context<'_>,
        batch: &mut ThinVec<Queued>,
        max: usize,
    ) -> Poll<Output> {
        let mut o = self.lock();
        if !o.frames.is_empty() {
            let n = o.frames.len().min(max);
            let mut taken = 0;
            for q in o.frames.drain(..n) {
                taken += q.frame.len();
                batch.push(q);
            }
            o.bytes = o.bytes.saturating_sub(taken as u32);
            if o.frames.is_empty() {
                // An idle connection keeps no queue allocation.
                o.frames = VecDeque::new();
            }
            return Poll::Ready(Output::Frames);
        }
        if let Some(order) = &o.close {
            return Poll::Ready(Output::Close(CloseOrder::clone(order)));
        }
        match &o.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => o.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Reports a close order even while the task is blocked writing, so a stalled socket still
    /// learns it must close; otherwise registers the waker.
    pub fn poll_close(&self, cx: &mut Context<'_>) -> Poll<CloseOrder> {
        let mut o = self.lock();
        if let Some(order) = &o.close {
            return Poll::Ready(CloseOrder::clone(order));
        }
        match &o.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => o.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Takes every queued frame (when closing gracefully).
    pub fn take_queued(&self) -> VecDeque<Queued> {
        let mut o = self.lock();
        o.bytes = 0;
        std::mem::take(&mut o.frames)
    }

    /// Adds a room to this connection's list; false when already a member.
    pub fn add_room(&self, room: &Arc<str>, max: usize) -> Result<bool, ErrorCode> {
        let mut o = self.lock();
        if o.gone {
            return Ok(false);
        }
        let rooms = &mut o.rooms;
        if rooms.iter().any(|r| r == room) {
            return Ok(false);
        }
        if rooms.len() >= max {
            return Err(ErrorCode::TOO_MANY_ROOMS);
        }
        // Exact growth while the list is short: most connections are in one or two rooms, and
        // the default first allocation (four entries) would be 64 bytes on every such one.
        if rooms.len() < 4 {
            rooms.reserve_exact(1);
        }
        rooms.push(room.clone());
        Ok(true)
    }

    /// Removes a room; false when it was not a member.
    pub fn remove_room(&self, room: &str) -> bool {
        let mut o = self.lock();
        let rooms = &mut o.rooms;
        let before = rooms.len();
        rooms.retain(|r| &**r != room);
        let removed = rooms.len() != before;
        if rooms.is_empty() {
            // Frees the allocation: an empty ThinVec points at a shared static header.
            *rooms = ThinVec::new();
        }
        removed
    }

    /// True when the connection is in `room`.
    pub fn in_room(&self, room: &str) -> bool {
        self.lock().rooms.iter().any(|r| &**r == room)
    }

    /// Takes the room list (on disconnect).
    pub fn take_rooms(&self) -> ThinVec<Arc<str>> {
        let mut o = self.lock();
        o.gone = true;
        std::mem::take(&mut o.rooms)
    }

    /// Frames and bytes waiting.
    pub fn queued(&self) -> (usize, usize) {
        let o = self.lock();
        (o.frames.len(), o.bytes as usize)
    }
}

#[cfg(test)]
mod tests;
