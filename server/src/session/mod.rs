//! One task per connection: handshake, then a single event loop that reads and decodes inbound
//! frames, writes queued outbound frames in vectored batches, and obeys close orders.
//!
//! The loop waits on exactly two sources, socket readiness and the connection's outbox, through
//! one `poll_fn`: a hand-rolled `select!` whose state is a few words, so an idle connection costs
//! little memory. Heartbeats, shutdown and kicks reach the task as frames or close orders in its
//! outbox (from the shared heartbeat sweep and the hub), so it holds no timer of its own.
//! Read and write buffers exist only while bytes are in flight.

mod handshake;
mod rooms;

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use push_protocol::{
    encode_to_bytes, ErrorBody, ErrorCode, Frame, FrameCodec, Packet, ProtocolError,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

use crate::context::Ctx;
use crate::hub::{CloseOrder, Conn, Output};

pub use handshake::{negotiate, HandshakeError};
pub use rooms::valid_room_name;

/// Bytes requested per read; a read buffer is allocated only when the socket is readable.
const READ_CHUNK: usize = 4096;
/// Reads per wake before yielding to other tasks.
const READ_BUDGET: usize = 16;
/// Frames taken from the outbox per vectored write.
const WRITE_BATCH: usize = 64;

/// How a session ended.
#[derive(Debug)]
enum Ending {
    /// The peer closed the socket or sent CLOSE.
    PeerClosed,
    /// Socket error.
    Io(io::Error),
    /// The peer broke the protocol; the error is reported before closing.
    Protocol(ProtocolError),
    /// The server ordered the close (shutdown, kick, slow consumer, heartbeat timeout).
    Ordered(CloseOrder),
}

/// What woke the loop.
#[derive(Default)]
struct Wake {
    readable: bool,
    output: bool,
    writable: bool,
    close: Option<CloseOrder>,
}

/// Serves one accepted socket until it closes.
pub async fn serve(stream: TcpStream, peer: SocketAddr, ctx: Arc<Ctx>) {
    let _open = OpenGuard(ctx.clone());
    let _ = stream.set_nodelay(true);
    let mut stream = stream;
    let mut rbuf = BytesMut::new();
    let mut codec = FrameCodec::new(ctx.limits, *ctx.delivery.options());
    // Boxed so the handshake's timer and buffers do not enlarge the long-lived task.
    let hs = Box::pin(handshake::handshake(
        &mut stream,
        &mut rbuf,
        &mut codec,
        &ctx,
        peer,
    ))
    .await;
    let conn = match hs {
        Ok(conn) => conn,
        Err(e) => {
            ctx.stats.inc(&ctx.stats.handshakes_failed);
            match &e {
                HandshakeError::Refused { .. } => tracing::warn!(%peer, "handshake {e}"),
                _ => tracing::debug!(%peer, "handshake ended: {e}"),
            }
            return;
        }
    };
    ctx.stats.inc(&ctx.stats.handshakes_ok);
    let mut session = Session {
        stream,
        rbuf: (!rbuf.is_empty()).then_some(rbuf),
        codec,
        batch: Vec::new(),
        partial: false,
        conn,
        ctx,
        peer,
    };
    let ending = session.run().await;
    session.finish(ending).await;
}

/// Keeps the global open-socket count exact whatever path the task ends on.
struct OpenGuard(Arc<Ctx>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

struct Session {
    stream: TcpStream,
    /// Present only while a partial frame is pending.
    rbuf: Option<BytesMut>,
    codec: FrameCodec,
    /// Frames taken from the outbox and not yet fully written; the first may be partly sent.
    batch: Vec<Bytes>,
    /// True when the first frame of `batch` has been partly written.
    partial: bool,
    conn: Arc<Conn>,
    ctx: Arc<Ctx>,
    peer: SocketAddr,
}

impl Session {
    async fn run(&mut self) -> Ending {
        loop {
            let wake = poll_fn(|cx| self.poll_wake(cx)).await;
            if let Some(order) = wake.close {
                return Ending::Ordered(order);
            }
            if wake.readable {
                if let Err(e) = self.on_readable() {
                    return e;
                }
            }
            if wake.output || wake.writable {
                if let Err(e) = self.flush() {
                    return Ending::Io(e);
                }
            }
        }
    }

    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        let mut wake = Wake::default();
        if self.batch.is_empty() {
            match self.conn.poll_output(cx, &mut self.batch, WRITE_BATCH) {
                Poll::Ready(Output::Frames) => wake.output = true,
                Poll::Ready(Output::Close(order)) => wake.close = Some(order),
                Poll::Pending => {}
            }
        } else {
            if self.stream.poll_write_ready(cx).is_ready() {
                // Errors surface from the write itself.
                wake.writable = true;
            }
            if let Poll::Ready(order) = self.conn.poll_close(cx) {
                wake.close = Some(order);
            }
        }
        if self.stream.poll_read_ready(cx).is_ready() {
            wake.readable = true;
        }
        if wake.readable || wake.output || wake.writable || wake.close.is_some() {
            Poll::Ready(wake)
        } else {
            Poll::Pending
        }
    }

    /// Writes as much of the batch as the socket takes without blocking.
    fn flush(&mut self) -> io::Result<()> {
        while !self.batch.is_empty() {
            let slices: Vec<IoSlice<'_>> = self.batch.iter().map(|b| IoSlice::new(b)).collect();
            match self.stream.try_write_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(mut n) => {
                    self.ctx.stats.add(&self.ctx.stats.bytes_out, n as u64);
                    let mut done = 0;
                    let mut advanced = false;
                    for b in self.batch.iter_mut() {
                        if n >= b.len() {
                            n -= b.len();
                            done += 1;
                        } else {
                            if n > 0 {
                                b.advance(n);
                                advanced = true;
                            }
                            break;
                        }
                    }
                    self.batch.drain(..done);
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
        self.batch = Vec::new();
        Ok(())
    }

    fn on_readable(&mut self) -> Result<(), Ending> {
        for _ in 0..READ_BUDGET {
            let buf = self
                .rbuf
                .get_or_insert_with(|| BytesMut::with_capacity(READ_CHUNK));
            if buf.capacity() == buf.len() {
                buf.reserve(READ_CHUNK);
            }
            match self.stream.try_read_buf(buf) {
                Ok(0) => return Err(Ending::PeerClosed),
                Ok(_) => self.decode_all()?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(Ending::Io(e)),
            }
        }
        if self.rbuf.as_ref().is_some_and(BytesMut::is_empty) {
            self.rbuf = None;
        }
        Ok(())
    }

    fn decode_all(&mut self) -> Result<(), Ending> {
        self.codec.set_now_ms(self.ctx.hub.now_ms());
        while let Some(buf) = self.rbuf.as_mut() {
            let packet = match self.codec.decode(buf) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => return Err(Ending::Protocol(e)),
            };
            self.ctx.stats.inc(&self.ctx.stats.frames_in);
            self.conn.touch(self.ctx.hub.now_ms());
            self.handle(packet)?;
        }
        self.codec.check_timeouts().map_err(Ending::Protocol)
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

    fn handle(&mut self, packet: Packet) -> Result<(), Ending> {
        let seq = packet.seq;
        match packet.frame {
            Frame::Pong => {}
            Frame::Ack(_) => {
                // Acks become meaningful with durable delivery; until then they only count as life.
            }
            Frame::Join(join) => self.on_join(seq, join),
            Frame::Leave(room) => self.on_leave(seq, room),
            Frame::Publish(p) => self.on_publish(seq, p),
            Frame::Close(c) => {
                tracing::debug!(conn = self.conn.id, code = %c.code, reason = %c.reason, "client closed");
                return Err(Ending::PeerClosed);
            }
            Frame::Error(e) => {
                tracing::debug!(conn = self.conn.id, code = %e.code, reason = %e.reason, "client reported an error");
            }
            Frame::Unknown { ty, .. } => self.error(
                seq,
                ErrorCode::UNKNOWN_FRAME_TYPE,
                format!("frame type {ty:#04x} is not known to this server"),
            ),
            other => self.error(
                seq,
                ErrorCode::UNEXPECTED_FRAME,
                format!(
                    "{} is not sent by clients after the handshake",
                    Frame::type_name(other.type_id())
                ),
            ),
        }
        Ok(())
    }

    async fn finish(mut self, ending: Ending) {
        let final_frame = match &ending {
            Ending::PeerClosed | Ending::Io(_) => None,
            Ending::Protocol(e) => {
                self.ctx.stats.inc(&self.ctx.stats.protocol_errors);
                tracing::warn!(peer = %self.peer, conn = self.conn.id, "protocol error: {e}");
                self.batch.clear();
                encode_to_bytes(
                    &Packet::new(
                        0,
                        Frame::Error(ErrorBody {
                            code: e.code(),
                            reason: e.to_string(),
                        }),
                    ),
                    &Default::default(),
                )
                .ok()
            }
            Ending::Ordered(order) => {
                if order.code == ErrorCode::HEARTBEAT_TIMEOUT {
                    self.ctx.stats.inc(&self.ctx.stats.heartbeat_timeouts);
                }
                tracing::debug!(conn = self.conn.id, code = %order.code, "closing on order");
                if order.code == ErrorCode::SHUTTING_DOWN {
                    // Deliver what was already queued before saying goodbye.
                    self.batch.extend(self.conn.take_queued());
                } else {
                    // Drop the backlog, but finish a half-written frame so the CLOSE that
                    // follows is readable.
                    self.batch.truncate(usize::from(self.partial));
                }
                Some(order.frame.clone())
            }
        };
        self.ctx.hub.unregister(&self.conn);
        if let Ending::Io(e) = &ending {
            tracing::debug!(conn = self.conn.id, "socket error: {e}");
        }
        if let Some(frame) = final_frame {
            let drain = Duration::from_millis(self.ctx.config.shutdown_drain_ms);
            let mut batch = std::mem::take(&mut self.batch);
            batch.push(frame);
            let stream = &mut self.stream;
            let _ = Box::pin(tokio::time::timeout(drain, async move {
                for b in batch {
                    stream.write_all(&b).await?;
                }
                stream.shutdown().await
            }))
            .await;
        }
        tracing::debug!(peer = %self.peer, conn = self.conn.id, "disconnected");
    }
}
