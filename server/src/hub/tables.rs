//! The hub's tables, built for memory per connection: an entry is one pointer to the
//! connection, whose own fields are the keys (a `HashMap` keyed by user name or connection id
//! would store the key again beside it, and a user's list of connections: 40 and 16 bytes per
//! connection instead of 8), and a table shrinks when most of its entries are gone.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;

use super::Conn;

/// A table is shrunk when fewer than a quarter of its buckets are used and it has more than
/// this many.
const SHRINK_ABOVE: usize = 64;

/// Shrinks `table` when fewer than a quarter of its buckets are in use.
fn shrink_if_sparse<T>(table: &mut HashTable<T>, hash: impl Fn(&T) -> u64) {
    let (len, cap) = (table.len(), table.capacity());
    if cap > SHRINK_ABOVE && len * 4 < cap {
        table.shrink_to(len, hash);
    }
}

/// One shard of the user table: every connection of the shard's users, found by the hub
/// hasher's hash of the user name (`hash` arguments). A user's several connections are
/// several entries under the same hash, so an entry is one pointer and a user with one
/// connection needs no list.
#[derive(Debug, Default)]
pub(super) struct UserShard(HashTable<Arc<Conn>>);

impl UserShard {
    /// The connections of `user`.
    pub(super) fn devices<'a>(
        &'a self,
        hash: u64,
        user: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Conn>> + 'a {
        self.0.iter_hash(hash).filter(move |c| *c.user == *user)
    }

    /// Adds a connection (its user may have others already).
    pub(super) fn insert(&mut self, hash: u64, conn: Arc<Conn>, hasher: &RandomState) {
        self.0
            .insert_unique(hash, conn, |c| hasher.hash_one(&*c.user));
    }

    /// Removes connection `id` of `user`. Returns None when it was not there, else whether it
    /// was the user's last.
    pub(super) fn remove(
        &mut self,
        hash: u64,
        user: &str,
        id: u64,
        hasher: &RandomState,
    ) -> Option<bool> {
        let entry = self.0.find_entry(hash, |c| c.id == id).ok()?;
        entry.remove();
        shrink_if_sparse(&mut self.0, |c| hasher.hash_one(&*c.user));
        Some(self.devices(hash, user).next().is_none())
    }

    /// Distinct users in the shard (a walk over every connection).
    pub(super) fn user_count(&self, hasher: &RandomState) -> usize {
        self.0
            .iter()
            .filter(|c| {
                let first = self.devices(hasher.hash_one(&*c.user), &c.user).next();
                first.is_some_and(|f| Arc::ptr_eq(f, c))
            })
            .count()
    }

    /// Every connection in the shard.
    pub(super) fn conns(&self) -> impl Iterator<Item = &Arc<Conn>> {
        self.0.iter()
    }
}

/// A room's members, by connection id.
#[derive(Debug, Default)]
pub(super) struct Members(HashTable<Arc<Conn>>);

/// Connection ids are assigned by the server (sequential, never chosen by a client), so a
/// multiplicative hash is enough: the product's halves are folded so that both the low bits
/// (bucket index) and the high bits (hashbrown's tag) depend on every bit of the id.
fn id_hash(id: u64) -> u64 {
    let p = u128::from(id) * 0x9E37_79B9_7F4A_7C15;
    (p as u64) ^ ((p >> 64) as u64)
}

impl Members {
    /// Adds `conn`; false when it was already a member.
    pub(super) fn insert(&mut self, conn: &Arc<Conn>) -> bool {
        let hash = id_hash(conn.id);
        match self.0.entry(hash, |c| c.id == conn.id, |c| id_hash(c.id)) {
            hashbrown::hash_table::Entry::Occupied(_) => false,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(conn.clone());
                true
            }
        }
    }

    /// Removes connection `id`; false when it was not a member.
    pub(super) fn remove(&mut self, id: u64) -> bool {
        let Ok(entry) = self.0.find_entry(id_hash(id), |c| c.id == id) else {
            return false;
        };
        entry.remove();
        shrink_if_sparse(&mut self.0, |c| id_hash(c.id));
        true
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Arc<Conn>> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(id: u64, user: &str) -> Arc<Conn> {
        Arc::new(Conn::new(id, user.into(), None, 0))
    }

    #[test]
    fn users_are_found_by_name_and_removed_one_connection_at_a_time() {
        let hasher = RandomState::new();
        let mut shard = UserShard::default();
        let (a1, a2, b) = (conn(1, "alice"), conn(2, "alice"), conn(3, "bob"));
        let (ha, hb) = (hasher.hash_one("alice"), hasher.hash_one("bob"));
        shard.insert(ha, a1.clone(), &hasher);
        shard.insert(ha, a2.clone(), &hasher);
        shard.insert(hb, b.clone(), &hasher);
        assert_eq!(shard.devices(ha, "alice").count(), 2);
        assert_eq!(shard.devices(hb, "bob").count(), 1);
        assert_eq!(shard.user_count(&hasher), 2);
        assert_eq!(shard.conns().count(), 3);
        assert_eq!(shard.remove(ha, "alice", 4, &hasher), None);
        assert_eq!(shard.remove(ha, "alice", 1, &hasher), Some(false));
        let left: Vec<u64> = shard.devices(ha, "alice").map(|c| c.id).collect();
        assert_eq!(left, [2]);
        assert_eq!(shard.remove(ha, "alice", 2, &hasher), Some(true));
        assert_eq!(shard.devices(ha, "alice").count(), 0);
        assert_eq!(shard.user_count(&hasher), 1);
    }

    #[test]
    fn tables_shrink_when_most_entries_leave() {
        let hasher = RandomState::new();
        let mut shard = UserShard::default();
        let mut members = Members::default();
        let conns: Vec<_> = (0..4096).map(|i| conn(i, &format!("u{i}"))).collect();
        for c in &conns {
            shard.insert(hasher.hash_one(&*c.user), c.clone(), &hasher);
            assert!(members.insert(c));
        }
        assert!(!members.insert(&conns[7]));
        let (full_users, full_members) = (shard.0.capacity(), members.0.capacity());
        for c in &conns[10..] {
            let h = hasher.hash_one(&*c.user);
            assert_eq!(shard.remove(h, &c.user, c.id, &hasher), Some(true));
            assert!(members.remove(c.id));
        }
        assert!(!members.remove(conns[20].id));
        assert_eq!((shard.conns().count(), members.len()), (10, 10));
        assert!(
            shard.0.capacity() < full_users / 16,
            "{}",
            shard.0.capacity()
        );
        assert!(members.0.capacity() < full_members / 16);
        for c in &conns[..10] {
            assert_eq!(shard.devices(hasher.hash_one(&*c.user), &c.user).count(), 1);
            assert!(members.iter().any(|m| m.id == c.id));
        }
    }
}
