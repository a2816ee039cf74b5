//! The end of a session: the final protocol frame and WebSocket close that say why, written
//! within the drain time, and the connection unregistered.

use std::time::Duration;

use bytes::Bytes;
use push_protocol::{ErrorBody, ErrorCode, Frame, Packet};

use super::{Ending, Session};
use crate::hub::Queued;
use push_protocol::ws::frame::{self as wsf, close_code};

impl Session {
    pub(super) async fn finish(mut self, ending: Ending) {
        // Protocol-level final frame, and for WebSocket the close frame after it.
        let (final_frame, ws_close) = match &ending {
            Ending::PeerClosed | Ending::Io(_) => (None, None),
            Ending::WsPeerClosed | Ending::ClientClose => {
                (None, Some((close_code::NORMAL, String::new())))
            }
            Ending::Ws(e) => {
                self.ctx.stats.inc(&self.ctx.stats.protocol_errors);
                tracing::warn!(conn = self.conn.id, user = %self.conn.user, "WebSocket error: {e}");
                self.batch.truncate(usize::from(self.partial));
                (None, Some((e.code, e.reason.clone())))
            }
            Ending::Protocol(e, seq) => {
                self.ctx.stats.inc(&self.ctx.stats.protocol_errors);
                tracing::warn!(conn = self.conn.id, user = %self.conn.user, "protocol error: {e}");
                // Finish a half-written frame so the ERROR that follows is readable.
                self.batch.truncate(usize::from(self.partial));
                let frame = Frame::Error(ErrorBody {
                    code: e.code(),
                    reason: e.to_string(),
                });
                let options = self.conn.encoding().copied().unwrap_or_default();
                let bytes = self.transport.encode(&Packet::new(*seq, frame), &options);
                (bytes, Some((wsf::close_code_for(e.code()), e.to_string())))
            }
            Ending::Ordered(order) => {
                if order.code == ErrorCode::HEARTBEAT_TIMEOUT {
                    self.ctx.stats.inc(&self.ctx.stats.heartbeat_timeouts);
                }
                tracing::debug!(conn = self.conn.id, code = %order.code, "closing on order");
                if order.code == ErrorCode::SHUTTING_DOWN {
                    // Deliver what was already queued before saying goodbye.
                    for q in self.conn.take_queued() {
                        let frame = self.wrap(q.frame, q.stamp.framed);
                        self.batch.push(Queued { frame, ..q });
                    }
                } else {
                    // Drop the backlog, but finish a half-written frame so the CLOSE that
                    // follows is readable.
                    self.batch.truncate(usize::from(self.partial));
                }
                let frame = self.wrap(order.frame.clone(), false);
                let reason = order.code.description().to_string();
                (Some(frame), Some((wsf::close_code_for(order.code), reason)))
            }
        };
        self.ctx.hub.unregister(&self.conn);
        self.ctx.stats.connections[usize::from(self.transport.is_ws())]
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if let Ending::Io(e) = &ending {
            tracing::debug!(conn = self.conn.id, "socket error: {e}");
        }
        let ws_close = ws_close
            .filter(|_| self.transport.is_ws())
            .map(|(code, reason)| wsf::encode_close(code, &reason));
        if final_frame.is_some() || ws_close.is_some() {
            let drain = Duration::from_millis(self.ctx.config.shutdown_drain_ms);
            let mut batch: Vec<Bytes> = std::mem::take(&mut self.batch)
                .into_iter()
                .map(|q| q.frame)
                .collect();
            batch.extend(final_frame);
            batch.extend(ws_close);
            let link = &mut self.link;
            let _ = Box::pin(tokio::time::timeout(drain, async move {
                for b in batch {
                    link.write_all(&b).await?;
                }
                link.shutdown().await
            }))
            .await;
        }
        tracing::debug!(conn = self.conn.id, "disconnected");
    }
}
