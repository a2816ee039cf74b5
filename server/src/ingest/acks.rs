//! Acknowledging accepted queue messages in runs: one `basic.ack` with `multiple` for every
//! accepted delivery below the lowest one still being handled, instead of one ack per message
//! (the broker's per-ack work was a large share of ingestion's CPU on a shared machine).
//!
//! A message is still acknowledged only after it was accepted durably; a delivery handled out
//! of order waits for the ones before it, so no `multiple` ack covers a message in progress.
//! Dead-lettered and requeued deliveries are resolved on their own (ack or nack by tag) and
//! only release the run.

use std::collections::BTreeSet;

/// Deliveries of one channel: the ones in progress and the accepted ones not yet acknowledged.
#[derive(Debug, Default)]
pub(crate) struct AckRuns {
    in_progress: BTreeSet<u64>,
    accepted: BTreeSet<u64>,
}

impl AckRuns {
    /// Notes a delivery handed to a handler.
    pub(crate) fn delivered(&mut self, tag: u64) {
        self.in_progress.insert(tag);
    }

    /// Notes the end of delivery `tag`'s handling (`accepted`: it is to be acknowledged by the
    /// run). Returns the tag to acknowledge with `multiple` now, if the run grew.
    pub(crate) fn resolved(&mut self, tag: u64, accepted: bool) -> Option<u64> {
        self.in_progress.remove(&tag);
        if accepted {
            self.accepted.insert(tag);
        }
        let lowest = self.in_progress.first().copied().unwrap_or(u64::MAX);
        let last = self.accepted.range(..lowest).next_back().copied()?;
        // Everything up to `last` is acknowledged by one frame; later ones wait for their run.
        self.accepted = self.accepted.split_off(&(last + 1));
        Some(last)
    }

    /// Deliveries handed out and not resolved yet.
    #[cfg(test)]
    fn in_progress(&self) -> usize {
        self.in_progress.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_acknowledged_once_nothing_before_it_is_in_progress() {
        let mut a = AckRuns::default();
        for tag in 1..=5 {
            a.delivered(tag);
        }
        // 2 and 3 are done before 1: nothing may be acknowledged with `multiple` yet.
        assert_eq!(a.resolved(2, true), None);
        assert_eq!(a.resolved(3, true), None);
        // 1 ends: 1-3 in one ack.
        assert_eq!(a.resolved(1, true), Some(3));
        // 5 is done but 4 is not.
        assert_eq!(a.resolved(5, true), None);
        // 4 was dead-lettered (acknowledged on its own): it releases 5.
        assert_eq!(a.resolved(4, false), Some(5));
        assert_eq!(a.in_progress(), 0);
    }

    #[test]
    fn a_requeued_delivery_is_never_covered_by_a_run() {
        let mut a = AckRuns::default();
        for tag in 1..=3 {
            a.delivered(tag);
        }
        assert_eq!(a.resolved(1, true), Some(1));
        // 2 was requeued (nacked by tag); the run then covers 3 only, up to 3.
        assert_eq!(a.resolved(2, false), None);
        assert_eq!(a.resolved(3, true), Some(3));
        // Nothing accepted is left to acknowledge.
        a.delivered(4);
        assert_eq!(a.resolved(4, false), None);
    }
}
