//! Inbound flow control as the connection carries it (SPEC.md §9.2): the count of its
//! requests waiting for the delivery engine, which wakes a paused reader, and the PUBLISH
//! count of the current rate slice.

use std::sync::atomic::Ordering;

use super::Conn;

/// Bit of `Conn::requests` set while the reader waits for the engine to catch up.
pub(super) const READER_WAITING: u32 = 1 << 31;

impl Conn {
    /// Counts a request handed to the delivery engine.
    pub fn begin_request(&self) {
        self.requests.fetch_add(1, Ordering::AcqRel);
    }

    /// The engine has handled one request; wakes the reader if it was waiting for credit.
    pub fn end_request(&self) {
        let prev = self.requests.fetch_sub(1, Ordering::AcqRel);
        if prev & READER_WAITING != 0 {
            self.requests.fetch_and(!READER_WAITING, Ordering::AcqRel);
            self.wake();
        }
    }

    /// Requests waiting for the engine.
    pub fn requests_in_flight(&self) -> u32 {
        self.requests.load(Ordering::Acquire) & !READER_WAITING
    }

    /// True when `limit` requests are waiting: the reader must pause, and is woken (through
    /// the outbox waker) when the engine handles the next one.
    pub fn must_wait_for_engine(&self, limit: u32) -> bool {
        if self.requests_in_flight() < limit {
            return false;
        }
        self.requests.fetch_or(READER_WAITING, Ordering::AcqRel);
        // The engine may have finished one between the check and the flag.
        self.requests_in_flight() >= limit
    }

    /// Counts one PUBLISH in rate slice `slice`; true while the slice holds at most
    /// `per_slice` of them.
    pub fn count_publish(&self, slice: u16, per_slice: u32) -> bool {
        let v = self.publishes.load(Ordering::Relaxed);
        let n = if (v >> 16) as u16 == slice {
            ((v & 0xFFFF) + 1).min(0xFFFF)
        } else {
            1
        };
        self.publishes
            .store((u32::from(slice) << 16) | n, Ordering::Relaxed);
        n <= per_slice
    }

    /// Wakes the connection's task (its outbox waker).
    pub fn wake(&self) {
        let waker = self.lock().waker.take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}
