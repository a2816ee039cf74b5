//! Attach (register + replay on connect) and JOIN with resume, run on the engine thread so a
//! replay is never overtaken by a live message of the same stream.

use std::sync::Arc;

use push_protocol::{ErrorCode, Frame, Gap, Stream, StreamPos};

use super::{Engine, RetryState};
use crate::hub::Conn;
use crate::store::{keys_position, record_range, Record};
use crate::stream::StreamKey;

impl Engine {
    /// Queues to `conn` the stored messages of `name` with positions `from..=to`. Returns how
    /// many were queued.
    fn replay(&self, conn: &Conn, name: &StreamKey, from: u64, to: u64) -> usize {
        if from > to {
            return 0;
        }
        let (a, b) = record_range(name, from, to);
        let rows = match self.kv.scan(&a, &b, self.cfg.replay_chunk) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(stream = %name, "replay read failed: {e}");
                return 0;
            }
        };
        let mut n = 0;
        let now_ms = self.now.unix_ms;
        for (k, v) in rows {
            let (Some(position), Ok(rec)) = (keys_position(&k), Record::decode(&v)) else {
                tracing::error!(stream = %name, "skipping an undecodable stored record");
                continue;
            };
            if rec.recalled {
                // The client may hold it from before the recall (an unacknowledged copy).
                self.send_recall(conn, rec.id, name, position);
                continue;
            }
            if rec.expired(now_ms) {
                continue;
            }
            if let Some(frame) = self.encode_push(rec.id, name, position, &rec) {
                if self.hub.send_conn(conn, frame).is_err() {
                    break;
                }
                n += 1;
            }
        }
        n
    }

    /// Tells `conn` that positions before `first` of a stream are gone.
    fn gap(&self, conn: &Conn, name: &StreamKey, requested_after: u64, first_available: u64) {
        self.send_frame(
            conn,
            0,
            Frame::Gap(Gap {
                stream: name.wire(),
                requested_after,
                first_available,
            }),
        );
    }

    /// Resumes a room or broadcast stream for `conn` after position `after`. At most one
    /// replay chunk is sent (it must fit the connection's queue); anything older is reported
    /// with a GAP, like history that is no longer retained.
    fn resume(&self, conn: &Conn, name: &StreamKey, after: u64) -> usize {
        let meta = self.meta(name);
        if after > meta.tail {
            // The client is ahead of the stream (restored or recreated): say so (§5.11).
            self.gap(conn, name, after, meta.tail + 1);
            return 0;
        }
        if after == meta.tail {
            return 0;
        }
        let window_start = meta.tail.saturating_sub(self.cfg.replay_chunk as u64) + 1;
        let first = meta.first.max(window_start);
        if after + 1 < first {
            self.gap(conn, name, after, first);
        }
        self.replay(conn, name, (after + 1).max(first), meta.tail)
    }

    /// Queues the next chunk of the user's backlog to `conn`, starting at `from`, and records
    /// where the replay stands. Returns how many messages were queued.
    fn replay_user_chunk(&self, conn: &Conn, from: u64) -> usize {
        let name = StreamKey::user(&conn.user);
        let meta = self.meta(&name);
        let from = from.max(meta.acked + 1).max(meta.first);
        if from > meta.tail {
            conn.set_replay_next(0);
            return 0;
        }
        let to = from
            .saturating_add(self.cfg.replay_chunk as u64 - 1)
            .min(meta.tail);
        // Record where the replay will stand before queueing the chunk: the connection may
        // drain it on another thread before this function returns, and must then see the
        // right position to ask for the next step.
        conn.set_replay_next(if to >= meta.tail { 0 } else { to + 1 });
        self.replay(conn, &name, from, to)
    }

    /// The connection drained its queue: continue its replay.
    pub(super) fn continue_replay(&self, conn: &Conn) {
        let next = conn.replay_next();
        if next != 0 {
            self.replay_user_chunk(conn, next);
        }
    }

    /// Registers `conn` and queues everything it missed: every unacknowledged message of the
    /// user's stream (pending and failed alike), and broadcast after the position it names.
    pub(super) fn attach(
        &mut self,
        conn: &Arc<Conn>,
        resume: &[StreamPos],
    ) -> Result<(), ErrorCode> {
        self.hub.register(conn.clone())?;
        let name = StreamKey::user(&conn.user);
        let mut meta = self.meta(&name);
        let resumed = resume
            .iter()
            .find(|p| p.stream == Stream::User)
            .map(|p| p.position);
        match resumed {
            // The client is ahead of the stream (a store restored from an older copy or
            // recreated): a GAP says where the replay starts instead (§5.11).
            Some(p) if p > meta.tail => {
                self.gap(conn, &name, p, (meta.acked + 1).max(meta.first));
            }
            resumed => {
                // A client that says it processed more than it acknowledged has acknowledged
                // it now.
                if let Some(p) = resumed.filter(|p| *p > meta.acked) {
                    meta.acked = p;
                    self.set_meta(&name, meta);
                }
                if meta.acked + 1 < meta.first {
                    self.gap(conn, &name, meta.acked, meta.first);
                }
            }
        }
        let replayed = self.replay_user_chunk(conn, meta.acked + 1);
        if meta.acked < meta.tail {
            self.retry.insert(
                conn.user.to_string(),
                RetryState {
                    retries: 0,
                    next_at: self.now.at + self.cfg.retry_interval,
                },
            );
        }
        let mut broadcast = 0;
        if let Some(p) = resume.iter().find(|p| p.stream == Stream::Broadcast) {
            broadcast = self.resume(conn, &StreamKey::Broadcast, p.position);
        }
        if replayed + broadcast > 0 {
            tracing::debug!(conn = conn.id, user = %conn.user, replayed, broadcast, "replayed on connect");
        }
        Ok(())
    }

    /// JOIN: membership, optional replay after `resume_after`, then OK with the room's tail.
    /// A connection already in the room gets the OK without a second replay: it has been
    /// sent the room's messages since it joined.
    pub(super) fn join(
        &mut self,
        conn: &Arc<Conn>,
        room: &str,
        resume_after: Option<u64>,
        seq: u32,
    ) {
        let joined = match self.hub.join(room, conn) {
            Ok(joined) => joined,
            Err(code) => {
                let reason = if code == ErrorCode::TOO_MANY_ROOMS {
                    "this connection has joined the maximum number of rooms".to_string()
                } else {
                    format!("cannot join {room}")
                };
                return self.send_error(conn, seq, code, reason);
            }
        };
        let name = StreamKey::room(room);
        if let (true, Some(after)) = (joined, resume_after) {
            self.resume(conn, &name, after);
        }
        let tail = self.meta(&name).tail;
        self.send_frame(conn, seq, Frame::Ok(Some(tail)));
    }
}
