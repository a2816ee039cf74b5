//! Who is connected where: user -> connections, room -> members, and every connection for
//! broadcast. Each map is split into shards with their own lock so that concurrent pushes to
//! different users or rooms do not contend.
//!
//! Lock order: a shard lock may be held while taking a connection's outbox lock, never the
//! reverse.

mod conn;
mod framing;
mod tables;
mod transient;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use push_protocol::ErrorCode;

pub use conn::{close_frame, CloseOrder, Conn, EnqueueError, Output, QueueLimits, Queued, Stamp};
pub use framing::Framing;
use framing::Shared;
use tables::{Members, UserShard};

/// Number of shards per map; a power of two well above the core count.
const SHARDS: usize = 64;

type RoomMap = HashMap<Arc<str>, Members>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts of one fan-out.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FanOut {
    /// Connections the frame was queued to.
    pub queued: usize,
    /// Connections dropped as slow consumers by this fan-out.
    pub slow: usize,
}

impl FanOut {
    fn record(&mut self, r: Result<(), EnqueueError>) {
        match r {
            Ok(()) => self.queued += 1,
            Err(EnqueueError::SlowConsumer) => self.slow += 1,
            Err(EnqueueError::Closed) => {}
        }
    }
}

/// The registry of live, authenticated connections.
pub struct Hub {
    users: Box<[Mutex<UserShard>]>,
    rooms: Box<[Mutex<RoomMap>]>,
    hasher: RandomState,
    count: AtomicUsize,
    limits: QueueLimits,
    max_per_user: usize,
    max_rooms: usize,
    /// Final frame for connections dropped as slow consumers, encoded once.
    slow_close: Bytes,
    /// How fan-outs wrap a frame once for all WebSocket connections.
    framing: Framing,
    epoch: Instant,
    /// Told when a user's last connection leaves (set once, by cluster mode).
    on_user_gone: std::sync::OnceLock<UserGone>,
}

/// Called with a user whose last connection on this node has left.
pub type UserGone = Box<dyn Fn(&str) + Send + Sync>;

impl Hub {
    /// An empty hub.
    pub fn new(
        limits: QueueLimits,
        max_per_user: usize,
        max_rooms: usize,
        slow_close: Bytes,
        framing: Framing,
    ) -> Self {
        Hub {
            users: (0..SHARDS).map(|_| Mutex::default()).collect(),
            rooms: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            count: AtomicUsize::new(0),
            limits,
            max_per_user,
            max_rooms,
            slow_close,
            framing,
            epoch: Instant::now(),
            on_user_gone: std::sync::OnceLock::new(),
        }
    }

    /// Sets what to call when a user's last connection leaves (once; later calls are
    /// ignored).
    pub fn on_user_gone(&self, f: UserGone) {
        let _ = self.on_user_gone.set(f);
    }

    /// Milliseconds on the hub's monotonic clock.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn shard_of(&self, key: &str) -> usize {
        self.slot(key).0
    }

    /// The shard of `key` and its hash. The shard comes from bits 40-45, which a shard's own
    /// table uses neither for its bucket index (low bits) nor for its tags (top 7 bits).
    fn slot(&self, key: &str) -> (usize, u64) {
        let hash = self.hasher.hash_one(key);
        (((hash >> 40) as usize) & (SHARDS - 1), hash)
    }

    /// Registers an authenticated connection, enforcing the per-user limit.
    pub fn register(&self, conn: Arc<Conn>) -> Result<(), ErrorCode> {
        {
            let (shard, hash) = self.slot(&conn.user);
            let mut users = lock(&self.users[shard]);
            if users.devices(hash, &conn.user).count() >= self.max_per_user {
                return Err(ErrorCode::TOO_MANY_USER_CONNECTIONS);
            }
            users.insert(hash, conn.clone(), &self.hasher);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes a connection from every map.
    pub fn unregister(&self, conn: &Conn) {
        for room in conn.take_rooms() {
            self.remove_member(&room, conn.id);
        }
        let (shard, hash) = self.slot(&conn.user);
        let removed = lock(&self.users[shard]).remove(hash, &conn.user, conn.id, &self.hasher);
        let Some(last) = removed else {
            return;
        };
        self.count.fetch_sub(1, Ordering::Relaxed);
        if let Some(f) = self.on_user_gone.get().filter(|_| last) {
            f(&conn.user);
        }
    }

    /// Live connections.
    pub fn connection_count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Connections of one user.
    pub fn user_connections(&self, user: &str) -> Vec<Arc<Conn>> {
        let (shard, hash) = self.slot(user);
        lock(&self.users[shard])
            .devices(hash, user)
            .cloned()
            .collect()
    }

    /// Adds `conn` to `room`; false when it was already a member.
    pub fn join(&self, room: &str, conn: &Arc<Conn>) -> Result<bool, ErrorCode> {
        let mut rooms = lock(&self.rooms[self.shard_of(room)]);
        let key: Arc<str> = match rooms.get_key_value(room) {
            Some((k, _)) => k.clone(),
            None => room.into(),
        };
        if !conn.add_room(&key, self.max_rooms)? {
            return Ok(false);
        }
        rooms.entry(key).or_default().insert(conn);
        Ok(true)
    }

    /// Removes `conn` from `room`; false when it was not a member.
    pub fn leave(&self, room: &str, conn: &Conn) -> bool {
        if !conn.remove_room(room) {
            return false;
        }
        self.remove_member(room, conn.id);
        true
    }

    fn remove_member(&self, room: &str, id: u64) {
        let mut rooms = lock(&self.rooms[self.shard_of(room)]);
        if let Some(members) = rooms.get_mut(room) {
            members.remove(id);
            if members.is_empty() {
                rooms.remove(room);
            }
        }
    }

    /// Server-side join: every connection of `user` joins `room`. Returns how many joined.
    pub fn join_user(&self, user: &str, room: &str) -> usize {
        self.user_connections(user)
            .iter()
            .filter(|c| matches!(self.join(room, c), Ok(true)))
            .count()
    }

    /// Server-side leave: every connection of `user` leaves `room`. Returns how many left.
    pub fn leave_user(&self, user: &str, room: &str) -> usize {
        self.user_connections(user)
            .iter()
            .filter(|c| self.leave(room, c))
            .count()
    }

    /// Members of a room.
    pub fn room_size(&self, room: &str) -> usize {
        lock(&self.rooms[self.shard_of(room)])
            .get(room)
            .map_or(0, Members::len)
    }

    /// Number of non-empty rooms.
    pub fn room_count(&self) -> usize {
        self.rooms.iter().map(|s| lock(s).len()).sum()
    }

    /// Number of users with at least one connection (a walk over every connection).
    pub fn user_count(&self) -> usize {
        self.users
            .iter()
            .map(|s| lock(s).user_count(&self.hasher))
            .sum()
    }

    fn enqueue(&self, conn: &Conn, frame: &Bytes, stamp: Stamp) -> Result<(), EnqueueError> {
        conn.enqueue_stamped(frame.clone(), stamp, &self.limits, &self.slow_close)
    }

    /// Queues one message of a fan-out to `conn`, in the form its transport takes.
    fn enqueue_shared(
        &self,
        conn: &Conn,
        frame: &mut Shared<'_>,
        stamp: Stamp,
    ) -> Result<(), EnqueueError> {
        let (bytes, stamp) = frame.for_conn(conn, stamp);
        conn.enqueue_stamped(bytes, stamp, &self.limits, &self.slow_close)
    }

    /// Microseconds on the hub's monotonic clock (the clock of [`Stamp`]).
    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Queues a frame to one connection under the hub's queue limits.
    pub fn send_conn(&self, conn: &Conn, frame: Bytes) -> Result<(), EnqueueError> {
        conn.enqueue(frame, &self.limits, &self.slow_close)
    }

    /// Queues bytes already framed for the connection's transport (see [`Stamp::framed`]).
    pub fn send_conn_raw(&self, conn: &Conn, frame: Bytes) -> Result<(), EnqueueError> {
        conn.enqueue_stamped(frame, Stamp::FRAMED, &self.limits, &self.slow_close)
    }

    /// Queues a live user-stream frame to every connection of `user` that is caught up; one
    /// still replaying its backlog gets the message from the replay, in order.
    pub fn send_user(&self, user: &str, frame: &Bytes, stamp: Stamp) -> FanOut {
        let mut out = FanOut::default();
        let mut frame = Shared::new(frame, &self.framing);
        let (shard, hash) = self.slot(user);
        for c in lock(&self.users[shard]).devices(hash, user) {
            if c.replay_next() == 0 {
                out.record(self.enqueue_shared(c, &mut frame, stamp));
            } else {
                out.queued += 1;
            }
        }
        out
    }

    /// Queues a frame to every member of `room`.
    pub fn send_room(&self, room: &str, frame: &Bytes, stamp: Stamp) -> FanOut {
        self.send_room_except(room, frame, stamp, None)
    }

    /// Queues a frame to every member of `room` but connection `skip` (a publisher that asked
    /// not to receive its own messages).
    pub fn send_room_except(
        &self,
        room: &str,
        frame: &Bytes,
        stamp: Stamp,
        skip: Option<u64>,
    ) -> FanOut {
        let mut out = FanOut::default();
        let mut frame = Shared::new(frame, &self.framing);
        if let Some(members) = lock(&self.rooms[self.shard_of(room)]).get(room) {
            for c in members.iter() {
                if Some(c.id) != skip {
                    out.record(self.enqueue_shared(c, &mut frame, stamp));
                }
            }
        }
        out
    }

    /// Queues the same frame bytes to every connection.
    pub fn broadcast(&self, frame: &Bytes, stamp: Stamp) -> FanOut {
        let mut out = FanOut::default();
        let mut frame = Shared::new(frame, &self.framing);
        for shard in self.users.iter() {
            for c in lock(shard).conns() {
                out.record(self.enqueue_shared(c, &mut frame, stamp));
            }
        }
        out
    }

    /// Closes every connection of `user` with KICKED and no reconnect hint (the operator
    /// disconnected them); returns how many.
    pub fn kick(&self, user: &str) -> usize {
        let order = CloseOrder::new(
            ErrorCode::KICKED,
            None,
            "disconnected by the server operator",
        );
        self.close_user(user, &order)
    }

    /// Orders every connection of `user` closed; returns how many.
    pub fn close_user(&self, user: &str, order: &CloseOrder) -> usize {
        let list = self.user_connections(user);
        for c in &list {
            c.close(order.clone(), true);
        }
        list.len()
    }

    /// Orders every connection closed after its queued frames.
    pub fn close_all(&self, order: &CloseOrder) {
        self.close_each(|| order.clone());
    }

    /// Closes every connection with an order made for it (e.g. each with its own reconnect
    /// hint).
    pub fn close_each(&self, mut order: impl FnMut() -> CloseOrder) {
        for shard in self.users.iter() {
            for c in lock(shard).conns() {
                c.close(order(), false);
            }
        }
    }

    /// Heartbeat sweep: pings live connections and closes those silent since `deadline_ms`.
    /// Returns (pinged, timed out).
    pub fn sweep(&self, ping: &Bytes, deadline_ms: u64, timeout: &CloseOrder) -> (usize, usize) {
        let (mut pinged, mut dead) = (0, 0);
        for shard in self.users.iter() {
            for c in lock(shard).conns() {
                if c.last_seen_ms() < deadline_ms {
                    c.close(timeout.clone(), true);
                    dead += 1;
                } else if self.enqueue(c, ping, Stamp::NONE).is_ok() {
                    pinged += 1;
                }
            }
        }
        (pinged, dead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Hub {
        Hub::new(
            QueueLimits {
                max_frames: 8,
                max_bytes: 1024,
            },
            2,
            4,
            Bytes::new(),
            Framing::default(),
        )
    }

    fn conn(id: u64, user: &str) -> Arc<Conn> {
        Arc::new(Conn::new(id, user.into(), None, 0))
    }

    #[test]
    fn register_route_and_unregister_leave_nothing_behind() {
        let h = hub();
        let a1 = conn(1, "alice");
        let a2 = conn(2, "alice");
        let b = conn(3, "bob");
        for c in [&a1, &a2, &b] {
            h.register(c.clone()).unwrap();
        }
        assert_eq!(
            h.register(conn(4, "alice")),
            Err(ErrorCode::TOO_MANY_USER_CONNECTIONS)
        );
        assert!(h.join("lobby", &a1).unwrap());
        assert!(h.join("lobby", &b).unwrap());
        let f = Bytes::from_static(b"x");
        assert_eq!(h.send_user("alice", &f, Stamp::NONE).queued, 2);
        assert_eq!(h.send_room("lobby", &f, Stamp::NONE).queued, 2);
        assert_eq!(h.broadcast(&f, Stamp::NONE).queued, 3);
        assert_eq!(h.connection_count(), 3);
        for c in [&a1, &a2, &b] {
            h.unregister(c);
        }
        assert_eq!(h.connection_count(), 0);
        assert_eq!(h.user_count(), 0);
        assert_eq!(h.room_count(), 0);
    }

    #[test]
    fn server_side_membership() {
        let h = hub();
        let a = conn(1, "alice");
        h.register(a.clone()).unwrap();
        assert_eq!(h.join_user("alice", "r"), 1);
        assert_eq!(h.room_size("r"), 1);
        assert_eq!(h.leave_user("alice", "r"), 1);
        assert_eq!(h.room_count(), 0);
    }

    #[test]
    fn sweep_closes_silent_connections() {
        let h = hub();
        let a = conn(1, "alice");
        h.register(a.clone()).unwrap();
        a.touch(100);
        let order = CloseOrder {
            code: ErrorCode::HEARTBEAT_TIMEOUT,
            frame: Bytes::new(),
        };
        assert_eq!(h.sweep(&Bytes::from_static(b"p"), 50, &order), (1, 0));
        assert_eq!(h.sweep(&Bytes::from_static(b"p"), 150, &order), (0, 1));
        assert!(a.is_closing());
    }
}
