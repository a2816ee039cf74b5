//! One task per connection: handshake, then a single event loop that reads and decodes inbound
//! frames, writes queued outbound frames in vectored batches, and obeys close orders.
//!
//! The task is a small hand-written future ([`ConnTask`]) rather than an `async fn`: the
//! handshake and the final flush run as boxed futures that exist only while they run, and the
//! long-lived part is a [`Session`] of about a hundred bytes. Its loop waits on exactly two
//! sources, socket readiness and the connection's outbox (a hand-rolled `select!`).
//! Heartbeats, shutdown and kicks reach it as frames or close orders in its outbox (from the
//! shared heartbeat sweep and the hub), so it holds no timer of its own (a rate pause spawns a
//! one-shot timer that wakes it through the outbox). Read state (buffer and codec) exists only
//! while a partial frame is pending; the write batch only while writing.
//!
//! This file holds the task and the write side; `read` the read side under inbound flow
//! control (`inflow`), `handshake` the first frame, `rooms` JOIN/LEAVE/PUBLISH, `finish` the
//! last frames and the close.

mod finish;
mod handshake;
mod inflow;
mod link;
mod read;
mod records;
mod rooms;
mod tls_handshake;
mod tls_stream;

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use push_protocol::{
    encode_to_bytes, reencode, ErrorBody, ErrorCode, Frame, FrameCodec, Hello, Limits, Packet,
    ProtocolError,
};
use thin_vec::ThinVec;
use tokio::net::TcpStream;

use crate::context::Admission;
use crate::hub::{CloseOrder, Conn, Output, Queued};
use inflow::Inflow;
use push_protocol::ws::frame::WsError;
use push_protocol::ws::inbound::{InboundError, ReadState};
use push_protocol::ws::Transport;

pub(crate) use handshake::HandshakeError;
pub(crate) use link::Link;
pub(crate) use tls_stream::TlsStream;

/// Frames taken from the outbox per vectored write.
const WRITE_BATCH: usize = 64;
/// Loop iterations per poll before yielding, so one busy connection cannot starve others.
const POLL_BUDGET: usize = 32;

/// How a session ended.
#[derive(Debug)]
enum Ending {
    /// The peer closed the socket.
    PeerClosed,
    /// The peer sent a protocol CLOSE frame (on WebSocket answered with close 1000).
    ClientClose,
    /// Socket error.
    Io(io::Error),
    /// The peer broke the protocol; the error is reported before closing, echoing the
    /// Sequence of the frame it was about (0 when its header was unreadable).
    Protocol(ProtocolError, u32),
    /// The server ordered the close (shutdown, kick, slow consumer, heartbeat timeout).
    Ordered(CloseOrder),
    /// The peer broke the WebSocket framing or the JSON mode.
    Ws(WsError),
    /// The peer sent a WebSocket CLOSE; it is echoed.
    WsPeerClosed,
}

impl Ending {
    /// The ending for a decoding error of `st`.
    fn inbound(e: InboundError, st: &ReadState) -> Ending {
        match e {
            InboundError::Protocol(e) => Ending::Protocol(e, st.codec.error_seq()),
            InboundError::Ws(e) => Ending::Ws(e),
        }
    }
}

/// What woke the loop.
#[derive(Default)]
struct Wake {
    readable: bool,
    /// Reading may go on after a pause, and frames may be waiting in the read buffer.
    resume: bool,
    output: bool,
    writable: bool,
    close: Option<CloseOrder>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Decoding limits for frames the server encoded itself, to re-encode them for one client.
const OWN_FRAMES: Limits = Limits {
    max_frame_len: u32::MAX,
    max_message_len: usize::MAX,
    max_decompressed_len: usize::MAX,
    max_partial: 1,
    reassembly_timeout_ms: u64::MAX,
    require_checksum: false,
};

/// Puts server wire bytes into a client's encoding (its version-2 HELLO options: no zstd, a
/// smaller frame, checksums) and its transport's framing. Frames are encoded once for every
/// connection; only a client that asked for something else pays for a re-encode.
fn wrap_frame(transport: Transport, conn: &Conn, ctx: &Admission, frame: Bytes) -> Bytes {
    let frame = match conn.encoding() {
        // JSON mode has neither compression, fragments nor checksums.
        Some(opts) if transport != Transport::WsJson => match reencode(&frame, OWN_FRAMES, opts) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(
                    conn = conn.id,
                    "cannot re-encode a frame for the client: {e}"
                );
                frame
            }
        },
        _ => frame,
    };
    transport.wrap(frame, ctx.limits, *ctx.delivery.options())
}

/// Session size is part of the memory budget per idle connection.
const _: () = assert!(std::mem::size_of::<Session>() <= 80);

/// The future of one connection's task.
pub(crate) enum ConnTask {
    /// Reading HELLO, verifying, registering.
    Handshake(BoxFuture<Option<Box<Session>>>),
    /// The long-lived event loop. Boxed so the task cell itself fits tokio's smallest
    /// 128-byte-aligned slot.
    Running(Box<Session>),
    /// Writing the last frames.
    Finishing(BoxFuture<()>),
    /// Over.
    Done,
}

/// Serves one admitted TCP socket until it closes; the admission is released when the task
/// ends, however it ends.
pub(crate) fn serve(stream: TcpStream, peer: SocketAddr, ctx: Admission) -> ConnTask {
    let link = match ctx.tls.as_ref() {
        Some(t) => match rustls::server::UnbufferedServerConnection::new(t.clone()) {
            Ok(c) => Link::tls_accept(stream, c),
            Err(e) => {
                tracing::error!(%peer, "cannot start TLS: {e}");
                return ConnTask::Done;
            }
        },
        None => Link::plain(stream),
    };
    serve_on(link, peer, ctx, Transport::Tcp, Bytes::new(), None)
}

/// Serves a socket on any transport: `early` holds bytes already read past the HTTP upgrade,
/// `hello` a HELLO taken from the upgrade's query string (then no HELLO frame is awaited).
/// Admitted by the caller, like [`serve`].
pub(crate) fn serve_on(
    link: Link,
    peer: SocketAddr,
    ctx: Admission,
    transport: Transport,
    early: Bytes,
    hello: Option<Hello>,
) -> ConnTask {
    let start = Start {
        transport,
        early,
        hello,
    };
    ConnTask::Handshake(Box::pin(handshake_phase(link, peer, ctx, start)))
}

/// How a connection begins.
struct Start {
    transport: Transport,
    early: Bytes,
    hello: Option<Hello>,
}

async fn handshake_phase(
    mut link: Link,
    peer: SocketAddr,
    ctx: Admission,
    start: Start,
) -> Option<Box<Session>> {
    let _ = link.tcp().set_nodelay(true);
    let mut st = ReadState::new(FrameCodec::new(ctx.limits, *ctx.delivery.options()));
    st.raw.extend_from_slice(&start.early);
    let transport = start.transport;
    match handshake::handshake(&mut link, &mut st, start.hello, transport, &ctx, peer).await {
        Ok(handshake::Handshaken { conn, seq, rooms }) => {
            ctx.stats.inc(&ctx.stats.handshakes_ok);
            ctx.stats
                .inc(&ctx.stats.connections[usize::from(transport.is_ws())]);
            let pending = (!st.is_idle()).then(|| Box::new(st));
            let mut session = Box::new(Session {
                link,
                pending,
                batch: ThinVec::new(),
                partial: false,
                inflow: Inflow::default(),
                transport,
                conn,
                ctx,
            });
            // Rooms resumed in HELLO are joined as JOINs with resume would be, each answered
            // (OK or ERROR) with HELLO's Sequence, in the order listed.
            for join in rooms {
                session.on_join(seq, join);
            }
            Some(session)
        }
        Err(e) => {
            ctx.stats.inc(&ctx.stats.handshakes_failed);
            match &e {
                HandshakeError::Refused { code, .. } => {
                    ctx.stats.handshake_refused(*code);
                    ctx.note_failed_handshake(peer.ip());
                    tracing::warn!(%peer, "handshake {e}");
                }
                HandshakeError::Ws(_) | HandshakeError::Tls(_) => {
                    ctx.note_failed_handshake(peer.ip());
                    tracing::warn!(%peer, "handshake refused: {e}");
                }
                _ => {
                    ctx.stats.inc(&ctx.stats.handshakes_abandoned);
                    tracing::debug!(%peer, "handshake ended: {e}");
                }
            }
            None
        }
    }
}

impl Future for ConnTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match this {
                ConnTask::Handshake(f) => match f.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => *this = ConnTask::Done,
                    Poll::Ready(Some(mut session)) => match session.decode_pending() {
                        Ok(()) => *this = ConnTask::Running(session),
                        Err(ending) => {
                            *this = ConnTask::Finishing(Box::pin((*session).finish(ending)));
                        }
                    },
                },
                ConnTask::Running(session) => {
                    let ending = match session.poll_run(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(ending) => ending,
                    };
                    let ConnTask::Running(session) = std::mem::replace(this, ConnTask::Done) else {
                        unreachable!("matched Running above");
                    };
                    *this = ConnTask::Finishing(Box::pin((*session).finish(ending)));
                }
                ConnTask::Finishing(f) => {
                    if f.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    *this = ConnTask::Done;
                }
                ConnTask::Done => return Poll::Ready(()),
            }
        }
    }
}

/// The long-lived state of an authenticated connection.
pub(crate) struct Session {
    link: Link,
    /// Present only while a partial frame or fragmented message is pending.
    pending: Option<Box<ReadState>>,
    /// Frames taken from the outbox and not yet fully written; the first may be partly sent.
    /// A thin vector: 8 bytes instead of 24 keep the boxed session in jemalloc's 80-byte class.
    batch: ThinVec<Queued>,
    /// True when the first frame of `batch` has been partly written.
    partial: bool,
    /// Frames counted in the current rate window; whether reading is held.
    inflow: Inflow,
    /// Raw TCP or one of the WebSocket modes.
    transport: Transport,
    conn: Arc<Conn>,
    ctx: Admission,
}

impl Session {
    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Ending> {
        for _ in 0..POLL_BUDGET {
            let wake = match self.poll_wake(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(w) => w,
            };
            if let Some(order) = wake.close {
                return Poll::Ready(Ending::Ordered(order));
            }
            if wake.resume {
                if let Err(e) = self.decode_pending() {
                    return Poll::Ready(e);
                }
            }
            if wake.readable && !self.inflow.stalled() {
                if let Err(e) = self.on_readable() {
                    return Poll::Ready(e);
                }
            }
            if wake.output || wake.writable {
                if let Err(e) = self.flush() {
                    return Poll::Ready(Ending::Io(e));
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        let mut wake = Wake::default();
        // TLS records still waiting for the socket count as unfinished writes.
        if self.batch.is_empty() && !self.link.wants_flush() {
            match self.conn.poll_output(cx, &mut self.batch, WRITE_BATCH) {
                Poll::Ready(Output::Frames) => {
                    wake.output = true;
                    if self.transport.is_ws() || self.conn.encoding().is_some() {
                        let (transport, conn, ctx) = (self.transport, &self.conn, &self.ctx);
                        for q in &mut self.batch {
                            if !q.stamp.framed {
                                let wire = std::mem::take(&mut q.frame);
                                q.frame = wrap_frame(transport, conn, ctx, wire);
                            }
                        }
                    }
                }
                Poll::Ready(Output::Close(order)) => wake.close = Some(order),
                Poll::Pending => {
                    // Everything queued has reached the socket: time for the next chunk of a
                    // replay, if one is in progress (flow control for large backlogs).
                    if self.conn.should_ask_replay() {
                        self.ctx.delivery.continue_replay(self.conn.clone());
                    }
                }
            }
        } else {
            if self.link.poll_write_ready(cx).is_ready() {
                // Errors surface from the write itself.
                wake.writable = true;
            }
            if let Poll::Ready(order) = self.conn.poll_close(cx) {
                wake.close = Some(order);
            }
        }
        if self.may_read() {
            wake.resume = self.inflow.stalled();
            if self.link.poll_read_ready(cx).is_ready() {
                wake.readable = true;
            }
        }
        if wake.readable || wake.resume || wake.output || wake.writable || wake.close.is_some() {
            Poll::Ready(wake)
        } else {
            Poll::Pending
        }
    }

    /// Puts protocol wire bytes into this client's encoding and transport framing, unless
    /// `raw` (already framed).
    fn wrap(&self, frame: Bytes, raw: bool) -> Bytes {
        if raw {
            return frame;
        }
        wrap_frame(self.transport, &self.conn, &self.ctx, frame)
    }

    /// Records accept-to-write latency for the first `done` frames of the batch, which have
    /// just been handed to the kernel in full.
    fn observe_written(&self, done: usize) {
        let mut now_us = 0;
        for q in &self.batch[..done] {
            if q.stamp.trace != 0 {
                if let Some(tracer) = &self.ctx.stats.tracer {
                    tracer.written(q.stamp.trace, &self.conn);
                }
            }
            if q.stamp.accepted_us == 0 {
                continue;
            }
            if now_us == 0 {
                now_us = self.ctx.hub.now_us();
            }
            if let Some(h) = self
                .ctx
                .stats
                .write_latency
                .get(usize::from(q.stamp.scenario))
            {
                h.observe_micros(now_us.saturating_sub(q.stamp.accepted_us));
            }
        }
    }

    /// Writes as much of the batch as the socket takes without blocking.
    fn flush(&mut self) -> io::Result<()> {
        while !self.batch.is_empty() {
            // On the stack: this runs once per wake of every busy connection.
            let mut slices = [IoSlice::new(&[]); WRITE_BATCH];
            let n = self.batch.len().min(WRITE_BATCH);
            for (slot, q) in slices.iter_mut().zip(&self.batch) {
                *slot = IoSlice::new(&q.frame);
            }
            match self.link.try_write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(mut n) => {
                    self.ctx.stats.add(&self.ctx.stats.bytes_out, n as u64);
                    let mut done = 0;
                    let mut advanced = false;
                    for q in self.batch.iter_mut() {
                        if n >= q.frame.len() {
                            n -= q.frame.len();
                            done += 1;
                        } else {
                            if n > 0 {
                                q.frame.advance(n);
                                advanced = true;
                            }
                            break;
                        }
                    }
                    self.observe_written(done);
                    self.batch.drain(..done);
                    self.ctx.stats.add(&self.ctx.stats.frames_out, done as u64);
                    if done > 0 {
                        self.partial = false;
                    }
                    if advanced {
                        self.partial = true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        // Idle connections keep no batch allocation.
        self.batch = ThinVec::new();
        match self.link.try_flush() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }

    /// Queues a reply on this connection's own outbox, behind pushes already queued.
    fn reply(&self, seq: u32, frame: Frame) {
        match encode_to_bytes(&Packet::new(seq, frame), self.ctx.delivery.options()) {
            Ok(bytes) => {
                let _ = self.ctx.hub.send_conn(&self.conn, bytes);
            }
            Err(e) => tracing::error!(conn = self.conn.id, "cannot encode reply: {e}"),
        }
    }

    fn error(&self, seq: u32, code: ErrorCode, reason: impl Into<String>) {
        self.reply(
            seq,
            Frame::Error(ErrorBody {
                code,
                reason: reason.into(),
            }),
        );
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
