//! Fan-out to version-2 connections only: transient messages (SPEC.md §5.4), queued once,
//! right now, to the connections that speak version 2 (a version-1 client has no "position
//! 0") and are not catching up on a replay; and RECALL (§5.12), which version 1 lacks.

use bytes::Bytes;

use super::{lock, Conn, FanOut, Hub, Shared, Stamp};
use crate::stream::StreamKey;

/// True for a connection that may be handed a transient message now.
fn takes_transient(c: &Conn) -> bool {
    c.version() >= 2 && c.replay_next() == 0
}

impl Hub {
    /// Queues a transient message of `stream` to the connections online for it here, but
    /// connection `skip` (a publisher that asked for no echo).
    pub fn send_transient(
        &self,
        stream: &StreamKey,
        frame: &Bytes,
        stamp: Stamp,
        skip: Option<u64>,
    ) -> FanOut {
        self.send_where(stream, frame, stamp, |c| {
            Some(c.id) != skip && takes_transient(c)
        })
    }

    /// Queues a frame of version 2 (RECALL) to every version-2 connection of `stream` here.
    pub fn send_version_2(&self, stream: &StreamKey, frame: &Bytes) -> FanOut {
        self.send_where(stream, frame, Stamp::NONE, |c| c.version() >= 2)
    }

    fn send_where(
        &self,
        stream: &StreamKey,
        frame: &Bytes,
        stamp: Stamp,
        keep: impl Fn(&Conn) -> bool,
    ) -> FanOut {
        let mut out = FanOut::default();
        let mut frame = Shared::new(frame, &self.framing);
        match stream {
            StreamKey::User(user) => {
                let (shard, hash) = self.slot(user);
                for c in lock(&self.users[shard]).devices(hash, user) {
                    if keep(c) {
                        out.record(self.enqueue_shared(c, &mut frame, stamp));
                    }
                }
            }
            StreamKey::Room(room) => {
                if let Some(members) = lock(&self.rooms[self.shard_of(room)]).get(&**room) {
                    for c in members.iter().filter(|c| keep(c)) {
                        out.record(self.enqueue_shared(c, &mut frame, stamp));
                    }
                }
            }
            StreamKey::Broadcast => {
                for shard in self.users.iter() {
                    for c in lock(shard).conns() {
                        if keep(c) {
                            out.record(self.enqueue_shared(c, &mut frame, stamp));
                        }
                    }
                }
            }
        }
        out
    }
}
