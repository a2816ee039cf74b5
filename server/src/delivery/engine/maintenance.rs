//! Housekeeping on the engine thread: retries of unacknowledged messages to online users, and
//! compaction (acknowledged messages, expired room history, expired idempotency ids).
//!
//! A compaction pass starts every `compaction_interval` and is worked off in slices of
//! `COMPACTION_SLICE` records, one slice per turn of the engine loop (with the turn's own
//! commit, or alone when no request waits): one pass that deleted 20,000 records in a single
//! commit held a publisher's PUBLISH_ACK for 160 ms (BENCHMARKS.md, "PUBLISH_ACK stalls").

use std::collections::VecDeque;

use super::Engine;
use crate::store::{idem_key, keys_position, record_range, Op, Record, IDEM_PREFIX};
use crate::stream::StreamKey;

/// Records read or deleted per compaction slice: about half a millisecond of engine time.
pub(super) const COMPACTION_SLICE: usize = 128;
/// Idempotency entries examined per pass.
const IDEM_PER_PASS: usize = 10_000;

/// The part of a compaction pass still to do.
#[derive(Debug, Default)]
pub(super) struct Compaction {
    /// Streams not yet compacted in this pass (the one in progress first).
    streams: VecDeque<StreamKey>,
    /// Idempotency entries still to examine in this pass (the walk's cursor persists across
    /// passes).
    idempotency: usize,
}

impl Compaction {
    /// True while a pass has work left.
    pub(super) fn pending(&self) -> bool {
        self.idempotency > 0 || !self.streams.is_empty()
    }
}

impl Engine {
    /// Runs whatever housekeeping is due; starts a compaction pass when one is due and the
    /// last one is finished.
    pub(super) fn tick(&mut self) {
        self.retry_due();
        if self.now.at >= self.next_compaction && !self.compaction.pending() {
            // Samples never acknowledged (the user went away) stop being interesting after
            // an hour.
            self.ack_watch
                .retain(|_, (_, since)| since.elapsed() < std::time::Duration::from_secs(3600));
            self.compaction.streams = self.metas.keys().cloned().collect();
            self.compaction.idempotency = IDEM_PER_PASS;
            self.next_compaction = self.now.at + self.cfg.compaction_interval;
        }
    }

    /// Runs every compaction slice left in the current pass (the housekeeping request).
    pub(super) fn compact_all(&mut self) {
        while self.compaction.pending() {
            self.compact_slice();
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

    /// Deletes up to `COMPACTION_SLICE` records of the current pass: what streams no longer
    /// keep, then expired idempotency ids.
    pub(super) fn compact_slice(&mut self) {
        let now_ms = self.now.unix_ms;
        let mut budget = COMPACTION_SLICE;
        while budget > 0 {
            let Some(name) = self.compaction.streams.pop_front() else {
                break;
            };
            // Looking at a stream costs a unit too (a room's costs a read), so a slice over
            // many streams with nothing to delete stays as short as one that deletes.
            budget -= 1;
            if budget == 0 {
                self.compaction.streams.push_front(name);
                break;
            }
            let mut meta = self.meta(&name);
            let mut keep_from = meta.first;
            let mut complete = true;
            if name.as_user().is_some() {
                keep_from = keep_from
                    .max(meta.acked + 1)
                    .max(meta.tail.saturating_sub(self.cfg.user_max_pending) + 1);
            } else {
                keep_from =
                    keep_from.max(meta.tail.saturating_sub(self.cfg.room_retention_count) + 1);
                let (unexpired, found) =
                    self.first_unexpired(&name, keep_from, meta.tail, now_ms, budget);
                keep_from = keep_from.max(unexpired);
                complete = found;
            }
            if keep_from <= meta.first {
                continue;
            }
            let (a, b) = record_range(&name, meta.first, keep_from - 1);
            let rows = match self.kv.scan(&a, &b, budget) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(stream = %name, "compaction read failed: {e}");
                    self.compaction = Compaction::default();
                    return;
                }
            };
            complete &= rows.len() < budget;
            let mut last = meta.first.saturating_sub(1);
            for (k, _) in rows {
                last = keys_position(&k).unwrap_or(last);
                self.stage_op(Op::Delete(k));
                budget -= 1;
            }
            meta.first = if complete { keep_from } else { last + 1 };
            self.set_meta(&name, meta);
            self.stats.inc(&self.stats.compactions);
            if !complete {
                self.compaction.streams.push_front(name);
            }
        }
        let limit = budget.min(self.compaction.idempotency);
        if limit > 0 {
            self.compaction.idempotency = if self.expire_idempotency(now_ms, limit) {
                0
            } else {
                self.compaction.idempotency - limit
            };
        }
    }

    /// First position from `from` of a room stream younger than the retention age, reading
    /// at most `limit` records; false with it when all of those had expired (more may follow).
    fn first_unexpired(
        &self,
        name: &StreamKey,
        from: u64,
        tail: u64,
        now_ms: u64,
        limit: usize,
    ) -> (u64, bool) {
        if from > tail {
            return (from, true);
        }
        let (a, b) = record_range(name, from, tail);
        let Ok(rows) = self.kv.scan(&a, &b, limit) else {
            return (from, true);
        };
        let complete = rows.len() < limit;
        let mut next = from;
        for (k, v) in rows {
            let Some(p) = keys_position(&k) else { continue };
            match Record::decode(&v) {
                Ok(r) if now_ms.saturating_sub(r.timestamp_ms) > self.cfg.room_retention_ms => {
                    next = p + 1;
                }
                _ => return (p, true),
            }
        }
        if complete {
            (tail + 1, true)
        } else {
            (next, false)
        }
    }

    /// Deletes expired idempotency ids among the next `limit` from the walk's cursor; true
    /// when the walk wrapped around (the pass's share is done).
    fn expire_idempotency(&mut self, now_ms: u64, limit: usize) -> bool {
        let end = [IDEM_PREFIX + 1];
        let rows = match self.kv.scan(&self.idem_cursor, &end, limit) {
            Ok(r) => r,
            Err(_) => return true,
        };
        let wrapped = rows.len() < limit;
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
        wrapped
    }
}
