//! Cumulative acknowledgements from connections.

use super::*;

impl Engine {
    pub(super) fn ack(&mut self, conn: &Conn, sp: StreamPos, seq: u32) {
        let name = StreamKey::from_wire(&sp.stream, &conn.user);
        // Room and broadcast ACKs only count as life (SPEC.md §5.5).
        if name.as_user().is_none() {
            return;
        }
        let mut meta = self.meta(&name);
        if sp.position > meta.tail {
            let reason = format!(
                "position {} of the user's stream was never sent (last is {})",
                sp.position, meta.tail
            );
            return self.send_error(conn, seq, ErrorCode::INVALID_ACK, reason);
        }
        if let Some(tracer) = &self.stats.tracer {
            tracer.acked(conn, sp.position);
        }
        if let Some((pos, since)) = self.ack_watch.get(&*conn.user) {
            if sp.position >= *pos {
                self.stats
                    .ack_latency
                    .observe_micros(since.elapsed().as_micros() as u64);
                self.ack_watch.remove(&*conn.user);
            }
        }
        if sp.position > meta.acked {
            meta.acked = sp.position;
            self.set_meta(&name, meta);
            if meta.acked >= meta.tail {
                self.retry.remove(&*conn.user);
            }
        }
    }
}
