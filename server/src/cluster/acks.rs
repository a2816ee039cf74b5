//! A user's acknowledgement record in cluster mode: the acknowledged position and the
//! position up to which unacknowledged messages exhausted their retries, stored on the user's
//! ack subject as `acked failed` and only ever moved forward (compare-and-set), and the purge
//! of acknowledged messages.

use std::time::Duration;

use bytes::Bytes;

use super::engine::ClusterEngine;
use super::js::{last_for_subject, JsError, Outbound};

/// `AckState::seq` of a record kept in memory that could not be stored yet.
pub(crate) const UNSTORED: u64 = u64::MAX;

/// A user's acknowledgement record, stored on the ack subject as `acked` or `acked failed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AckState {
    /// Last acknowledged position.
    pub(crate) acked: u64,
    /// Unacknowledged messages up to this position exhausted their retries (failed).
    pub(crate) failed: u64,
    /// Stream sequence of the record (for compare-and-set).
    pub(crate) seq: u64,
}

impl AckState {
    pub(crate) fn parse(payload: &[u8], seq: u64) -> AckState {
        let text = String::from_utf8_lossy(payload);
        let mut parts = text.split_whitespace().map(|p| p.parse().unwrap_or(0));
        AckState {
            acked: parts.next().unwrap_or(0),
            failed: parts.next().unwrap_or(0),
            seq,
        }
    }

    fn payload(&self) -> Bytes {
        Bytes::from(format!("{} {}", self.acked, self.failed))
    }

    /// Both positions only move forward.
    fn merged(self, other: AckState) -> AckState {
        AckState {
            acked: self.acked.max(other.acked),
            failed: self.failed.max(other.failed),
            seq: self.seq,
        }
    }
}

/// Acknowledged messages a connected user's actor lets gather before it purges them (it also
/// purges at its tail check and when it retires).
const PURGE_EVERY: u64 = 64;

/// What of a user's stream an actor has purged: positions up to `.0` are gone.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Purged(u64);

impl ClusterEngine {
    /// Deletes the user's acknowledged messages once every message delivered is acknowledged
    /// and the record says so, keeping the last (the next publish's compare-and-set stands on
    /// it): as the single node's compaction does. `now` purges whatever there is; otherwise
    /// only once [`PURGE_EVERY`] have gathered.
    pub(crate) async fn purge_acked(
        &self,
        user: &str,
        ack: AckState,
        delivered: super::engine::Tail,
        purged: &mut Purged,
        now: bool,
    ) {
        let gathered = delivered.pos.saturating_sub(purged.0);
        if ack.seq == UNSTORED || ack.acked < delivered.pos || gathered <= 1 {
            return;
        }
        if !now && gathered < PURGE_EVERY {
            return;
        }
        let purge = self
            .stream
            .purge()
            .filter(self.names.user(user))
            .sequence(delivered.seq);
        match purge.await {
            // Everything before the last delivered message is gone; that one is kept.
            Ok(_) => purged.0 = delivered.pos - 1,
            Err(e) => tracing::debug!(%user, "purging acknowledged messages: {e}"),
        }
    }

    /// The user's stored acknowledgement record.
    pub(crate) async fn stored_ack(&self, user: &str) -> Result<AckState, JsError> {
        Ok(
            match last_for_subject(&self.stream, &self.names.ack(user)).await? {
                Some(m) => AckState::parse(&m.payload, m.sequence),
                None => AckState::default(),
            },
        )
    }

    /// The stored tail position when `pos` lies beyond it (an ACK for a position never
    /// sent); `None` when it does not, or when the stream cannot be read (then the ack goes
    /// on, and the actor applies it only up to what it delivered).
    pub(crate) async fn ack_beyond_tail(&self, user: &str, pos: u64) -> Option<u64> {
        if self.known_tail(user).is_some_and(|t| pos <= t.pos) {
            return None;
        }
        let tail = self.stored_tail(user, true).await.ok()?.pos;
        (pos > tail).then_some(tail)
    }

    /// Stores `want` (acknowledged position, failed-up-to position), each only ever forward
    /// (compare-and-set on the ack subject; a lost race re-reads and keeps the larger).
    /// Returns the record, with `seq` [`UNSTORED`] when it could not be stored yet (the
    /// actor tries again on its next check).
    pub(crate) async fn write_ack(
        &self,
        user: &str,
        want: AckState,
        mut known: AckState,
    ) -> AckState {
        for _ in 0..4 {
            let next = known.merged(want);
            if (next.acked, next.failed) == (known.acked, known.failed) {
                return known;
            }
            let mut m = Outbound::new(self.names.ack(user), next.payload())
                .expect_last_subject_sequence(known.seq);
            m.headers.insert("Nats-Rollup", "sub");
            match self.commit_users.commit(vec![m]).await {
                Ok(ack) => {
                    return AckState {
                        seq: ack.sequence,
                        ..next
                    }
                }
                Err(_) => match self.stored_ack(user).await {
                    Ok(k) => known = k,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                },
            }
        }
        tracing::warn!(%user, acked = want.acked, "could not store the acknowledgement record yet; retrying");
        AckState {
            seq: UNSTORED,
            ..known.merged(want)
        }
    }
}
