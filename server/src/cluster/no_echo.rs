//! The room messages a node's connections published with `no_echo` (SPEC.md §5.1.2): a room
//! actor notes the position the PUBLISH got and, when that message comes back from the stream,
//! delivers it to every member but its publisher.

use std::collections::VecDeque;

/// Positions noted and not yet delivered, at most; the oldest is forgotten beyond (its
/// publisher then gets its own message, as without the option).
const MAX_NOTED: usize = 1024;

/// Publishers to skip, by the position of their message.
#[derive(Debug, Default)]
pub(super) struct OwnPublishes {
    noted: VecDeque<(u64, u64)>,
}

impl OwnPublishes {
    /// Connection `conn` published the message at `position` and wants no echo.
    pub(super) fn note(&mut self, position: u64, conn: u64) {
        if self.noted.len() == MAX_NOTED {
            self.noted.pop_front();
        }
        self.noted.push_back((position, conn));
    }

    /// The connection to skip for the message at `position`; forgets it and every older one
    /// (positions are delivered in order, so those will not come again).
    pub(super) fn take(&mut self, position: u64) -> Option<u64> {
        let mut skip = None;
        while let Some(&(p, conn)) = self.noted.front() {
            if p > position {
                break;
            }
            self.noted.pop_front();
            if p == position {
                skip = Some(conn);
            }
        }
        skip
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_noted_position_skips_its_publisher_once() {
        let mut own = OwnPublishes::default();
        own.note(5, 9);
        own.note(7, 3);
        assert_eq!(own.take(4), None);
        assert_eq!(own.take(5), Some(9));
        assert_eq!(own.take(5), None);
        assert_eq!(own.take(8), None, "7 was passed over and is forgotten");
        assert!(own.noted.is_empty());
    }

    #[test]
    fn it_stays_bounded() {
        let mut own = OwnPublishes::default();
        for p in 0..(MAX_NOTED as u64 + 10) {
            own.note(p, 1);
        }
        assert_eq!(own.noted.len(), MAX_NOTED);
        assert_eq!(own.take(5), None, "the oldest were forgotten");
    }
}
