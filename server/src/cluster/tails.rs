//! The tails a node caches: each user's last stored message (stream sequence and position),
//! which the next publish's compare-and-set stands on. A cache: a missing or stale entry
//! costs a read (a stale one also a lost race, after which it is forgotten).

use std::collections::HashMap;

use super::engine::{ClusterEngine, Tail};
use super::js::{last_for_subject_maybe_fresh, JsError};
use super::names::{self, header_u64};

/// Users' tails a node caches (~100 B each): every connected user's and recent publish
/// targets'. The soak showed the unbounded map growing with every user published to.
const MAX_TAILS: usize = 65_536;

impl ClusterEngine {
    /// The user's last stored message, from this node's cache or the stream (through the
    /// leader when `fresh`: after a lost race a replica may still be behind).
    pub(crate) async fn tail(&self, user: &str) -> Result<Tail, JsError> {
        self.tail_from(user, false).await
    }

    pub(crate) async fn tail_from(&self, user: &str, fresh: bool) -> Result<Tail, JsError> {
        if let Some(t) = self.lock_tails().get(user) {
            return Ok(*t);
        }
        let tail = self.stored_tail(user, fresh).await?;
        self.note_tail(user, tail);
        Ok(tail)
    }

    /// The user's last stored message as the stream has it (through the leader when
    /// `fresh`), not the cache.
    pub(crate) async fn stored_tail(&self, user: &str, fresh: bool) -> Result<Tail, JsError> {
        let subject = self.names.user(user);
        let last = last_for_subject_maybe_fresh(&self.stream, &subject, fresh).await?;
        Ok(match last {
            Some(m) => Tail {
                seq: m.sequence,
                pos: header_u64(&m.headers, names::POSITION).unwrap_or(0),
            },
            None => Tail::default(),
        })
    }

    /// Records the tail a live message of the user's stream shows.
    pub(crate) fn note_live_tail(&self, user: &str, msg: &async_nats::Message) {
        let Some(h) = msg.headers.as_ref() else {
            return;
        };
        if let (Some(pos), Some(seq)) = (
            header_u64(h, names::POSITION),
            header_u64(h, "Nats-Sequence"),
        ) {
            self.note_tail(user, Tail { seq, pos });
        }
    }

    /// The newest tail this node has seen of the user's stream, if any.
    pub(crate) fn known_tail(&self, user: &str) -> Option<Tail> {
        self.lock_tails().get(user).copied()
    }

    /// Records a tail seen (a commit, a live message), keeping the newest. The map is a cache
    /// (a tail it lacks costs one read): at [`MAX_TAILS`] an arbitrary half is forgotten, so
    /// its memory stays bounded however many users a node publishes to over months.
    pub(crate) fn note_tail(&self, user: &str, tail: Tail) {
        let mut tails = self.lock_tails();
        if tails.len() >= MAX_TAILS && !tails.contains_key(user) {
            let mut keep = false;
            tails.retain(|_, _| {
                keep = !keep;
                keep
            });
        }
        let t = tails.entry(user.to_string()).or_default();
        if tail.seq > t.seq {
            *t = tail;
        }
    }

    /// Forgets the tails of `users` (a write on top of them failed: they may be stale).
    pub(super) fn forget_tails(&self, users: &[String]) {
        let mut tails = self.lock_tails();
        for u in users {
            tails.remove(u);
        }
    }

    fn lock_tails(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tail>> {
        self.tails.lock().unwrap_or_else(|p| p.into_inner())
    }
}
