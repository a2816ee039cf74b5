//! Traced messages on their way to connections: what a connection's task needs to record its
//! `push.write` span (found by the slot number in the frame's stamp), and what an ACK needs
//! to record `push.ack` under that write. Bounded in messages, writes per message and time.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::SpanContext;

/// One traced message on one stream.
struct Entry {
    /// The `push.fanout` span: parent of every write.
    fanout: SpanContext,
    /// When the fan-out began: the frames were queued from then on.
    started: SystemTime,
    at: Instant,
    /// The user whose stream it is (acks are followed on user streams only).
    user: Option<Arc<str>>,
    position: u64,
    writes: u32,
    /// Connections written to whose ACK is awaited: id, write span, write end.
    unacked: Vec<(u64, SpanContext, SystemTime)>,
}

#[derive(Default)]
struct Table {
    next: u32,
    entries: HashMap<u32, Entry>,
    /// Slots oldest first, for expiry and eviction.
    order: VecDeque<u32>,
}

/// The table with its limits.
pub(super) struct Fanouts {
    table: Mutex<Table>,
    /// Writes awaiting an ACK, over all entries: ACKs skip the lock while it is 0.
    awaiting: AtomicUsize,
    max_messages: usize,
    max_writes: u32,
    window: Duration,
}

/// What a `push.write` span hangs under.
pub(super) struct WriteParent {
    pub fanout: SpanContext,
    pub queued: SystemTime,
}

/// What a `push.ack` span hangs under.
pub(super) struct AckParent {
    pub write: SpanContext,
    pub written: SystemTime,
    pub position: u64,
}

impl Fanouts {
    pub(super) fn new(max_messages: usize, max_writes: u32, window: Duration) -> Fanouts {
        Fanouts {
            table: Mutex::new(Table::default()),
            awaiting: AtomicUsize::new(0),
            max_messages,
            max_writes,
            window,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows a fan-out; the slot goes in the stamp of every frame it queues (never 0).
    pub(super) fn insert(
        &self,
        fanout: SpanContext,
        started: SystemTime,
        user: Option<Arc<str>>,
        position: u64,
    ) -> u32 {
        let now = Instant::now();
        let mut t = self.lock();
        while let Some(&oldest) = t.order.front() {
            let expired = t
                .entries
                .get(&oldest)
                .is_none_or(|e| now.duration_since(e.at) >= self.window);
            if !expired && t.entries.len() < self.max_messages {
                break;
            }
            t.order.pop_front();
            if let Some(e) = t.entries.remove(&oldest) {
                self.awaiting.fetch_sub(e.unacked.len(), Ordering::Relaxed);
            }
        }
        t.next = t.next.wrapping_add(1).max(1);
        let slot = t.next;
        let entry = Entry {
            fanout,
            started,
            at: now,
            user,
            position,
            writes: 0,
            unacked: Vec::new(),
        };
        if let Some(old) = t.entries.insert(slot, entry) {
            // Only after 4 billion traced messages with one still held: let it go.
            self.awaiting
                .fetch_sub(old.unacked.len(), Ordering::Relaxed);
        } else {
            t.order.push_back(slot);
        }
        slot
    }

    /// A frame of `slot` reached a connection's socket: the write span's parent, unless the
    /// message is no longer followed or has recorded its share of writes.
    pub(super) fn write(&self, slot: u32) -> Option<WriteParent> {
        let mut t = self.lock();
        let e = t.entries.get_mut(&slot)?;
        if e.writes >= self.max_writes {
            return None;
        }
        e.writes += 1;
        Some(WriteParent {
            fanout: e.fanout.clone(),
            queued: e.started,
        })
    }

    /// The write span of `conn` for `slot` was recorded: on a user stream its ACK is awaited.
    pub(super) fn written(&self, slot: u32, conn: u64, write: SpanContext, at: SystemTime) {
        let mut t = self.lock();
        if let Some(e) = t.entries.get_mut(&slot) {
            if e.user.is_some() {
                e.unacked.push((conn, write, at));
                self.awaiting.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// `conn` of `user` acknowledged its stream up to `position`: the writes this settles.
    pub(super) fn acked(&self, user: &str, conn: u64, position: u64) -> Vec<AckParent> {
        if self.awaiting.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut t = self.lock();
        for e in t.entries.values_mut() {
            if e.position > position || e.user.as_deref() != Some(user) {
                continue;
            }
            if let Some(i) = e.unacked.iter().position(|(c, _, _)| *c == conn) {
                let (_, write, written) = e.unacked.swap_remove(i);
                out.push(AckParent {
                    write,
                    written,
                    position: e.position,
                });
            }
        }
        self.awaiting.fetch_sub(out.len(), Ordering::Relaxed);
        out
    }

    /// Messages followed now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

    fn ctx(n: u8) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes([n; 16]),
            SpanId::from_bytes([n; 8]),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        )
    }

    #[test]
    fn writes_are_capped_and_acks_settle_each_connection_once() {
        let f = Fanouts::new(8, 2, Duration::from_secs(60));
        let now = SystemTime::now();
        let slot = f.insert(ctx(1), now, Some("alice".into()), 5);
        assert_ne!(slot, 0);
        assert!(f.write(slot).is_some());
        assert!(f.write(slot).is_some());
        assert!(f.write(slot).is_none(), "third write over the cap of 2");
        f.written(slot, 10, ctx(2), now);
        f.written(slot, 11, ctx(3), now);
        assert!(f.acked("alice", 10, 4).is_empty(), "ack below the position");
        assert!(f.acked("bob", 10, 9).is_empty(), "another user's ack");
        let acks = f.acked("alice", 10, 9);
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0].write, ctx(2));
        assert_eq!(acks[0].position, 5);
        assert!(f.acked("alice", 10, 9).is_empty(), "settled once");
        assert_eq!(f.acked("alice", 11, 5).len(), 1);
        assert_eq!(f.awaiting.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_oldest_message_goes_when_the_table_is_full_or_its_window_passed() {
        let f = Fanouts::new(2, 4, Duration::from_secs(60));
        let now = SystemTime::now();
        let a = f.insert(ctx(1), now, Some("u".into()), 1);
        f.written(a, 1, ctx(9), now);
        let b = f.insert(ctx(2), now, None, 1);
        let c = f.insert(ctx(3), now, None, 1);
        assert_eq!(f.len(), 2);
        assert!(f.write(a).is_none(), "evicted");
        assert!(f.write(b).is_some() && f.write(c).is_some());
        assert_eq!(
            f.awaiting.load(Ordering::Relaxed),
            0,
            "its awaited ack let go"
        );

        let short = Fanouts::new(100, 4, Duration::ZERO);
        let old = short.insert(ctx(1), now, None, 1);
        short.insert(ctx(2), now, None, 1);
        assert!(short.write(old).is_none(), "expired");
    }
}
