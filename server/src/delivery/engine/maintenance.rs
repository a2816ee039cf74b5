//! Housekeeping on the engine thread: retries of unacknowledged messages to online users, and
//! compaction (acknowledged messages, expired room history, expired idempotency ids).

use super::Engine;
use crate::store::{idem_key, keys_position, record_range, Op, Record, IDEM_PREFIX};
use crate::stream::StreamKey;

/// Deletes per compaction pass, so one pass never stalls publishers for long.
const COMPACTION_BUDGET: usize = 20_000;
/// Idempotency entries examined per pass.
const IDEM_SCAN: usize = 10_000;

impl Engine {
    /// Runs whatever housekeeping is due.
    pub(super) fn tick(&mut self) {
        self.retry_due();
        if self.now.at >= self.next_compaction {
            self.compact();
            self.next_compaction = self.now.at + self.cfg.compaction_interval;
        }
    }

    fn retry_due(&mut self) {
        let now = self.now.at;
        let due: Vec<String> = self
            .retry
            .iter()
            .filter(|(_, r)| r.next_at <= now)
            .map(|(u, _)| u.clone())
            .collect();
        for user in due {
            let name = StreamKey::user(&user);
            let meta = self.meta(&name);
            // Connections still replaying their backlog get these messages from the replay.
            let conns: Vec<_> = self
                .hub
                .user_connections(&user)
                .into_iter()
                .filter(|c| c.replay_next() == 0)
                .collect();
            if meta.acked >= meta.tail || conns.is_empty() {
                self.retry.remove(&user);
                continue;
            }
            let Some(state) = self.retry.get_mut(&user) else {
                continue;
            };
            state.retries = state.retries.saturating_add(1);
            let retries = state.retries;
            let exhausted = retries > self.cfg.max_retries;
            state.next_at =
                now + self.cfg.retry_interval * 2u32.saturating_pow(u32::from(retries.min(16)));
            if exhausted {
                self.retry.remove(&user);
            }
            let from = (meta.acked + 1).max(meta.first);
            let (a, b) = record_range(&name, from, meta.tail);
            let rows = match self.kv.scan(&a, &b, self.cfg.replay_chunk) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(%user, "retry read failed: {e}");
                    continue;
                }
            };
            let now_ms = self.now.unix_ms;
            let mut resent = 0;
            for (k, v) in rows {
                let (Some(position), Ok(mut rec)) = (keys_position(&k), Record::decode(&v)) else {
                    continue;
                };
                if rec.gone(now_ms) {
                    continue;
                }
                if exhausted {
                    rec.failed = true;
                } else {
                    rec.retries = rec.retries.saturating_add(1);
                    if let Some(frame) = self.encode_push(rec.id, &name, position, &rec) {
                        for c in &conns {
                            let _ = self.hub.send_conn(c, frame.clone());
                        }
                        resent += 1;
                    }
                }
                rec.updated_ms = now_ms;
                self.stage_op(Op::Put(k, rec.encode()));
            }
            if exhausted {
                self.stats.inc(&self.stats.messages_failed);
                tracing::warn!(%user, retries = retries - 1, "retries exhausted: unacknowledged messages marked failed until the user reconnects");
            } else if resent > 0 {
                self.stats.add(&self.stats.retries, resent);
                tracing::debug!(%user, resent, retry = retries, "resent unacknowledged messages");
            }
        }
    }

    fn compact(&mut self) {
        // Samples never acknowledged (the user went away) stop being interesting after an hour.
        self.ack_watch
            .retain(|_, (_, since)| since.elapsed() < std::time::Duration::from_secs(3600));
        let now_ms = self.now.unix_ms;
        let mut budget = COMPACTION_BUDGET;
        let streams: Vec<StreamKey> = self.metas.keys().cloned().collect();
        for name in streams {
            if budget == 0 {
                break;
            }
            let mut meta = self.meta(&name);
            let mut keep_from = meta.first;
            if name.as_user().is_some() {
                keep_from = keep_from
                    .max(meta.acked + 1)
                    .max(meta.tail.saturating_sub(self.cfg.user_max_pending) + 1);
            } else {
                keep_from =
                    keep_from.max(meta.tail.saturating_sub(self.cfg.room_retention_count) + 1);
                keep_from =
                    keep_from.max(self.first_unexpired(&name, keep_from, meta.tail, now_ms));
            }
            if keep_from <= meta.first {
                continue;
            }
            let (a, b) = record_range(&name, meta.first, keep_from - 1);
            let rows = match self.kv.scan(&a, &b, budget) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(stream = %name, "compaction read failed: {e}");
                    return;
                }
            };
            let complete = rows.len() < budget;
            let mut last = meta.first.saturating_sub(1);
            for (k, _) in rows {
                last = keys_position(&k).unwrap_or(last);
                self.stage_op(Op::Delete(k));
                budget -= 1;
            }
            meta.first = if complete { keep_from } else { last + 1 };
            self.set_meta(&name, meta);
            self.stats.inc(&self.stats.compactions);
        }
        self.expire_idempotency(now_ms);
    }

    /// First position of a room stream younger than the retention age.
    fn first_unexpired(&self, name: &StreamKey, from: u64, tail: u64, now_ms: u64) -> u64 {
        if from > tail {
            return from;
        }
        let (a, b) = record_range(name, from, tail);
        let Ok(rows) = self.kv.scan(&a, &b, COMPACTION_BUDGET) else {
            return from;
        };
        for (k, v) in rows {
            let Some(p) = keys_position(&k) else { continue };
            match Record::decode(&v) {
                Ok(r) if now_ms.saturating_sub(r.timestamp_ms) > self.cfg.room_retention_ms => {}
                _ => return p,
            }
        }
        tail + 1
    }

    fn expire_idempotency(&mut self, now_ms: u64) {
        let end = [IDEM_PREFIX + 1];
        let rows = match self.kv.scan(&self.idem_cursor, &end, IDEM_SCAN) {
            Ok(r) => r,
            Err(_) => return,
        };
        let wrapped = rows.len() < IDEM_SCAN;
        let mut last = None;
        for (k, v) in rows {
            if let Ok((at, _)) = crate::store::decode_accepted(&v) {
                if now_ms.saturating_sub(at) > self.cfg.idempotency_window_ms {
                    self.stage_op(Op::Delete(k.clone()));
                }
            }
            last = Some(k);
        }
        self.idem_cursor = match (wrapped, last) {
            (false, Some(mut k)) => {
                k.push(0);
                k
            }
            _ => idem_key(""),
        };
    }
}
