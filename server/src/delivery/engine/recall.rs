//! Recall (protocol version 2, SPEC.md §5.12): a publisher withdraws a stored message. The
//! record keeps its place (positions are never reused) but loses its payload and is never
//! delivered, replayed or retried again; connections of the stream that are online get RECALL
//! (version 2 only), and a replay meets RECALL where the message was.

use bytes::Bytes;
use push_protocol::{MessageId, Recall};

use super::*;
use crate::delivery::{RecallTarget, Recalled};
use crate::store::record_key;

impl Engine {
    /// Queues RECALL to `conn` if it speaks version 2 (a version-1 client has no such frame).
    pub(super) fn send_recall(&self, conn: &Conn, id: MessageId, name: &StreamKey, position: u64) {
        if conn.version() >= 2 {
            self.send_frame(conn, 0, recall_frame(id, name, position));
        }
    }

    /// Withdraws what `target` names; durable when it returns.
    pub(super) fn recall(&mut self, target: &RecallTarget) -> Result<Vec<Recalled>, DeliveryError> {
        // A publish still waiting for its commit is stored first: it may be the one named.
        self.flush();
        match target {
            RecallTarget::At {
                stream,
                position,
                id,
            } => Ok(vec![self.recall_at(stream, *position, *id)?]),
            RecallTarget::Key { key, stream } => {
                let now = self.now.unix_ms;
                let accepted = self.lookup_idem(key, now)?.filter(|list| {
                    stream
                        .as_ref()
                        .is_none_or(|s| list.iter().all(|a| &a.stream == s))
                });
                let Some(accepted) = accepted else {
                    return Err(DeliveryError::NotFound(format!(
                        "no publish with this key{} within the idempotency window",
                        stream
                            .as_ref()
                            .map(|s| format!(" to {s}"))
                            .unwrap_or_default()
                    )));
                };
                accepted
                    .iter()
                    .map(|a| self.recall_at(&a.stream, a.position, Some(a.id)))
                    .collect()
            }
        }
    }

    fn recall_at(
        &mut self,
        name: &StreamKey,
        position: u64,
        id: Option<MessageId>,
    ) -> Result<Recalled, DeliveryError> {
        let not_found = || DeliveryError::NotFound(format!("{name} has no message at {position}"));
        let key = record_key(name, position);
        let stored = self.kv.get(&key).map_err(storage)?.ok_or_else(not_found)?;
        let mut rec = Record::decode(&stored).map_err(storage)?;
        if id.is_some_and(|id| id != rec.id) {
            return Err(DeliveryError::NotFound(format!(
                "the message at {name} {position} is not {}",
                id.unwrap_or_default()
            )));
        }
        let recalled = Recalled {
            id: rec.id,
            stream: name.clone(),
            position,
            already: rec.recalled,
        };
        if rec.recalled {
            return Ok(recalled);
        }
        rec.recalled = true;
        rec.payload = Bytes::new();
        rec.updated_ms = self.now.unix_ms;
        self.kv
            .apply(&[Op::Put(key, rec.encode())])
            .map_err(storage)?;
        if let Ok(frame) = encode_to_bytes(
            &Packet::new(0, recall_frame(rec.id, name, position)),
            &self.options,
        ) {
            self.hub.send_version_2(name, &frame);
        }
        tracing::info!(stream = %name, position, id = %rec.id, "message recalled");
        Ok(recalled)
    }
}

fn recall_frame(id: MessageId, name: &StreamKey, position: u64) -> Frame {
    Frame::Recall(Recall {
        id,
        stream: name.wire(),
        position,
    })
}
