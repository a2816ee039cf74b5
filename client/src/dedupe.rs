//! A bounded set of recently seen message ids, so the application never sees one id twice.

use std::collections::{HashSet, VecDeque};

use push_protocol::MessageId;

/// Remembers the last `capacity` ids.
#[derive(Debug)]
pub struct Dedupe {
    set: HashSet<MessageId>,
    order: VecDeque<MessageId>,
    capacity: usize,
}

impl Dedupe {
    /// An empty window of `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        Dedupe {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `id`; false when it was already in the window.
    pub fn insert(&mut self, id: MessageId) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_repeats_within_the_window() {
        let mut d = Dedupe::new(2);
        let id = |n| MessageId([n; 16]);
        assert!(d.insert(id(1)));
        assert!(!d.insert(id(1)));
        assert!(d.insert(id(2)));
        assert!(d.insert(id(3)));
        assert!(d.insert(id(1)), "evicted from a window of 2");
    }
}
