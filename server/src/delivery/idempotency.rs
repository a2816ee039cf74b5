//! Remembers accepted publisher keys for a bounded count and time, so a retried publish is
//! acknowledged again without being delivered twice.

use std::collections::{HashMap, VecDeque};

/// Bounded map from idempotency key to what was accepted under it.
#[derive(Debug)]
pub struct IdempotencyCache<V> {
    map: HashMap<String, (V, u64)>,
    order: VecDeque<(String, u64)>,
    max_entries: usize,
    window_ms: u64,
    /// Set once a key still inside the window was dropped for room: from then on a miss here
    /// does not prove the key is new.
    incomplete: bool,
}

impl<V: Clone> IdempotencyCache<V> {
    /// A cache keeping at most `max_entries` keys for at most `window_ms`.
    pub fn new(max_entries: usize, window_ms: u64) -> Self {
        IdempotencyCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            max_entries,
            window_ms,
            incomplete: false,
        }
    }

    fn evict(&mut self, now_ms: u64) {
        while let Some((key, at)) = self.order.front() {
            let expired = now_ms.saturating_sub(*at) > self.window_ms;
            if !expired && self.order.len() <= self.max_entries {
                break;
            }
            // Only remove the map entry if it is the one this order slot refers to.
            if self.map.get(key).is_some_and(|(_, t)| t == at) {
                self.map.remove(key);
                if !expired {
                    self.incomplete = true;
                }
            }
            self.order.pop_front();
        }
    }

    /// What was accepted under `key`, if still remembered.
    pub fn get(&mut self, key: &str, now_ms: u64) -> Option<V> {
        self.evict(now_ms);
        self.map.get(key).map(|(v, _)| v.clone())
    }

    /// Remembers `value` under `key`.
    pub fn insert(&mut self, key: String, value: V, now_ms: u64) {
        self.order.push_back((key.clone(), now_ms));
        self.map.insert(key, (value, now_ms));
        self.evict(now_ms);
    }

    /// True when some key inside the window was evicted for room (or marked so by the caller),
    /// so a miss must be checked against durable storage.
    pub fn is_incomplete(&self) -> bool {
        self.incomplete
    }

    /// Records that keys inside the window exist that this cache does not hold.
    pub fn mark_incomplete(&mut self) {
        self.incomplete = true;
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_count_and_time() {
        let mut c = IdempotencyCache::new(2, 100);
        c.insert("a".into(), 1, 0);
        c.insert("b".into(), 2, 0);
        assert_eq!(c.get("a", 0), Some(1));
        assert!(!c.is_incomplete());
        c.insert("c".into(), 3, 0);
        assert_eq!(c.get("a", 0), None, "evicted by count");
        assert!(c.is_incomplete(), "a miss no longer proves a key is new");
        assert_eq!(c.get("b", 50), Some(2));
        assert_eq!(c.get("b", 101), None, "evicted by time");
        assert!(c.len() <= 2);
    }
}
