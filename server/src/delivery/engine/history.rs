//! Pages of a stream's stored messages with their delivery state.

use super::*;

impl Engine {
    pub(super) fn history(
        &self,
        stream: &StreamKey,
        after: u64,
        limit: usize,
    ) -> Result<HistoryPage, DeliveryError> {
        let meta = self.meta(stream);
        let first = after.saturating_add(1).max(meta.first);
        let items = if first > meta.tail {
            Vec::new()
        } else {
            let (from, to) = crate::store::record_range(stream, first, meta.tail);
            self.kv
                .scan(&from, &to, limit)
                .map_err(storage)?
                .into_iter()
                .filter_map(|(k, v)| {
                    let position = crate::store::keys_position(&k)?;
                    let rec = Record::decode(&v).ok()?;
                    let state = if rec.recalled {
                        "recalled"
                    } else if stream.as_user().is_none() {
                        "stored"
                    } else if position <= meta.acked {
                        "sent"
                    } else if rec.expired(self.now.unix_ms) {
                        "expired"
                    } else if rec.failed {
                        "failed"
                    } else {
                        "pending"
                    };
                    Some(HistoryItem {
                        position,
                        record: rec,
                        state,
                    })
                })
                .collect()
        };
        Ok(HistoryPage {
            stream: stream.clone(),
            first_retained: meta.first,
            tail: meta.tail,
            acked: meta.acked,
            items,
        })
    }
}
