//! The read side of a session: bytes from the socket, decoded into frames, handled under
//! inbound flow control (SPEC.md §9.2): the in-flight limit on engine requests, rate slices,
//! and ACKs coalesced per read.

use std::io;
use std::time::Duration;

use push_protocol::{ErrorCode, Frame, FrameCodec, Packet};

use super::inflow::{self, AckBatch, Inflow, RateLimits, Verdict};
use super::{Ending, Session};
use crate::hub::CloseOrder;
use push_protocol::ws::frame as wsf;
use push_protocol::ws::inbound::{self, Inbound, ReadState};

/// Reads per wake before yielding to other tasks.
const READ_BUDGET: usize = 16;

impl Session {
    /// False while inbound flow control holds the connection: its rate window is used up, or
    /// its requests fill its in-flight limit. Either wakes the task through the outbox waker,
    /// which `poll_wake` registered before this: the pause's timer or the engine.
    pub(super) fn may_read(&mut self) -> bool {
        if self.inflow.may_be_paused() && self.inflow.rate_paused(self.ctx.hub.now_ms()) {
            return false;
        }
        !self
            .conn
            .must_wait_for_engine(self.ctx.config.max_requests_in_flight)
    }

    fn rate_limits(&self) -> RateLimits {
        let c = &self.ctx.config;
        RateLimits {
            frames: c.max_frames_per_sec,
            room_ops: c.max_room_ops_per_sec,
            publishes: c.max_publishes_per_sec,
            close_after: c.rate_limit_close_after_sec,
        }
    }

    /// Handles frames that arrived together with HELLO: they are already buffered, and the
    /// socket may have nothing more to say until they are answered.
    pub(super) fn decode_pending(&mut self) -> Result<(), Ending> {
        let Some(mut st) = self.pending.take() else {
            self.inflow.set_stalled(false);
            return Ok(());
        };
        let result = self.decode_all(&mut st);
        if !st.is_idle() {
            self.pending = Some(st);
        }
        result
    }

    pub(super) fn on_readable(&mut self) -> Result<(), Ending> {
        let mut st = self.pending.take().unwrap_or_else(|| {
            Box::new(ReadState::new(FrameCodec::new(
                self.ctx.limits,
                *self.ctx.delivery.options(),
            )))
        });
        let result = self.read_into(&mut st);
        if !st.is_idle() {
            self.pending = Some(st);
        }
        result
    }

    fn read_into(&mut self, st: &mut ReadState) -> Result<(), Ending> {
        for _ in 0..READ_BUDGET {
            if st.raw.capacity() == st.raw.len() {
                st.raw.reserve(inbound::READ_CHUNK);
            }
            match self.link.try_read_buf(&mut st.raw) {
                Ok(0) => return Err(Ending::PeerClosed),
                Ok(n) => {
                    self.ctx.stats.add(&self.ctx.stats.bytes_in, n as u64);
                    self.decode_all(st)?;
                    if self.inflow.stalled() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(Ending::Io(e)),
            }
        }
        Ok(())
    }

    /// Decodes and handles what the buffer holds, until flow control says stop (SPEC.md
    /// §9.2): the connection's engine requests reach `max_requests_in_flight`, or a frame
    /// goes over a rate window (pause until it ends, or RATE_LIMITED after too many).
    fn decode_all(&mut self, st: &mut ReadState) -> Result<(), Ending> {
        let now = self.ctx.hub.now_ms();
        st.codec.set_now_ms(now);
        let max_ws = self.ctx.config.ws_max_message;
        let max_in_flight = self.ctx.config.max_requests_in_flight;
        let limits = self.rate_limits();
        let mut acks = AckBatch::default();
        self.inflow.set_stalled(false);
        let result = loop {
            if self.conn.must_wait_for_engine(max_in_flight) {
                self.ctx.stats.inc(&self.ctx.stats.paused_for_engine);
                self.inflow.set_stalled(true);
                break Ok(());
            }
            let inbound = match st.next(self.transport, max_ws) {
                Ok(Some(inbound)) => inbound,
                Ok(None) => break Ok(()),
                Err(e) => break Err(Ending::inbound(e, st)),
            };
            self.conn.touch(now);
            let (room_op, publish) = match &inbound {
                Inbound::Packet(p) => (
                    matches!(p.frame, Frame::Join(_) | Frame::Leave(_)),
                    matches!(p.frame, Frame::Publish(_) | Frame::Withdraw(_)),
                ),
                _ => (false, false),
            };
            let mut verdict = self.inflow.count(now, room_op, &limits);
            if publish
                && verdict == Verdict::Go
                && limits.publishes != 0
                && !self
                    .conn
                    .count_publish(Inflow::slice_of(now), inflow::per_slice(limits.publishes))
            {
                verdict = self.inflow.over(now, &limits);
            }
            if let Err(e) = self.on_inbound(inbound, &mut acks) {
                break Err(e);
            }
            match verdict {
                Verdict::Go => {}
                Verdict::Pause(ms) => {
                    self.ctx.stats.inc(&self.ctx.stats.paused_for_rate);
                    // One timer per pause, at most one pause per 100 ms slice; the extra ms
                    // makes sure the hub clock has reached the next slice when it fires.
                    let conn = self.conn.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(u64::from(ms) + 1)).await;
                        conn.wake();
                    });
                    self.inflow.set_stalled(true);
                    break Ok(());
                }
                Verdict::Close => {
                    self.ctx.stats.inc(&self.ctx.stats.rate_limited_closes);
                    tracing::warn!(conn = self.conn.id, user = %self.conn.user,
                        frames_per_sec = limits.frames, room_ops_per_sec = limits.room_ops,
                        windows = limits.close_after, "closing a connection that stayed over its rate limit");
                    let reason = format!(
                        "over the rate limit ({} frames, {} JOIN/LEAVE, {} PUBLISH per second; 0 = none) in {} consecutive seconds",
                        limits.frames, limits.room_ops, limits.publishes, limits.close_after
                    );
                    let hint = Some(self.ctx.config.reconnect_hint_ms);
                    break Err(Ending::Ordered(CloseOrder::new(
                        ErrorCode::RATE_LIMITED,
                        hint,
                        &reason,
                    )));
                }
            }
        };
        self.send_acks(&mut acks);
        result?;
        st.codec
            .check_timeouts()
            .map_err(|e| Ending::Protocol(e, st.codec.error_seq()))
    }

    fn on_inbound(&mut self, inbound: Inbound, acks: &mut AckBatch) -> Result<(), Ending> {
        match inbound {
            Inbound::Packet(packet) => {
                self.ctx.stats.inc(&self.ctx.stats.frames_in);
                self.handle(packet, acks)
            }
            Inbound::Ping(payload) => {
                let pong = wsf::encode(wsf::opcode::PONG, &payload);
                let _ = self.ctx.hub.send_conn_raw(&self.conn, pong);
                Ok(())
            }
            Inbound::Pong => Ok(()),
            Inbound::Close(code, reason) => {
                tracing::debug!(conn = self.conn.id, ?code, %reason, "WebSocket closed by the client");
                Err(Ending::WsPeerClosed)
            }
        }
    }

    /// Hands coalesced ACKs to the engine as one request.
    fn send_acks(&self, acks: &mut AckBatch) {
        if let Some(positions) = acks.take() {
            self.ctx.delivery.ack(self.conn.clone(), positions);
        }
    }

    fn handle(&mut self, packet: Packet, acks: &mut AckBatch) -> Result<(), Ending> {
        let seq = packet.seq;
        match packet.frame {
            Frame::Pong => return Ok(()),
            Frame::Ack(positions) => {
                acks.add(seq, positions);
                if acks.is_full() {
                    self.send_acks(acks);
                }
                return Ok(());
            }
            _ => {}
        }
        // Whatever else the client sent is handled after the ACKs that preceded it.
        self.send_acks(acks);
        match packet.frame {
            Frame::Pong | Frame::Ack(_) => {}
            // Version 2: answered in order with every frame already queued for the client.
            Frame::Ping if self.conn.version() >= 2 => self.reply(seq, Frame::Pong),
            Frame::Ping => self.error(
                seq,
                ErrorCode::UNEXPECTED_FRAME,
                format!(
                    "PING from a client needs protocol version 2; this session speaks {}",
                    self.conn.version()
                ),
            ),
            Frame::Join(join) => self.on_join(seq, join),
            Frame::Leave(room) => self.on_leave(seq, room),
            Frame::Publish(p) => self.on_publish(seq, p),
            Frame::Withdraw(w) => self.on_withdraw(seq, w),
            Frame::Close(c) => {
                tracing::debug!(conn = self.conn.id, code = %c.code, reason = %c.reason, "client closed");
                return Err(Ending::ClientClose);
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
}
