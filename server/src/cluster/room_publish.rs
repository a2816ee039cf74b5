//! Publishing to a room or the broadcast stream across nodes: one atomic batch of the
//! publish's idempotency record (must be absent), the stream's position counter
//! (compare-and-set, so positions stay contiguous whichever node writes) and the message,
//! which carries a TTL of the room retention age; the stream keeps `room_retention_count`
//! messages per room.

use std::time::Duration;

use bytes::Bytes;

use super::engine::{unavailable, ClusterEngine, Tail};
use super::js::{JsError, Outbound};
use super::names::{message_headers, stream_token};
use super::publish::{accepted, read_record, IdemRecord, MAX_ATTEMPTS};
use crate::delivery::{Accepted, DeliveryError, Message};
use crate::stream::StreamKey;

impl ClusterEngine {
    /// Stores a message in a room or the broadcast stream; answers with its position.
    pub async fn publish_stream(
        &self,
        key: &StreamKey,
        msg: &Message,
    ) -> Result<Vec<Accepted>, DeliveryError> {
        let keys = [format!("r/{}", stream_token(key))];
        let guards = self.lock_writers(&keys).await;
        let r = self.publish_stream_locked(key, msg).await;
        self.unlock_writers(&keys, guards);
        r
    }

    async fn publish_stream_locked(
        &self,
        key: &StreamKey,
        msg: &Message,
    ) -> Result<Vec<Accepted>, DeliveryError> {
        let tok = stream_token(key);
        let id = self.ids.next();
        let idem_key = msg
            .key
            .clone()
            .map_or_else(|| format!("~{id}"), |k| format!("{tok}/{k}"));
        let idem_subject = self.names.room_idem(&idem_key);
        let name = match key {
            StreamKey::Room(r) => r.clone(),
            _ => String::new(),
        };
        let key_of = {
            let key = key.clone();
            move |_: String| key.clone()
        };
        let now = self.clock.now().unix_ms;
        let mut last_error = String::new();
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 || msg.key.is_some() {
                if let Ok(Some(rec)) = read_record(&self.rooms, &idem_subject).await {
                    let ours = rec.id == id.to_string();
                    if !ours {
                        self.stats.inc(&self.stats.duplicates);
                    }
                    return Ok(accepted(rec, !ours, key_of));
                }
            }
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(20 << attempt.min(5))).await;
            }
            let tail = match self.room_tail(&tok, attempt > 0).await {
                Ok(t) => t,
                Err(e) => {
                    last_error = e.to_string();
                    continue;
                }
            };
            let position = tail.pos + 1;
            let rec = IdemRecord {
                id: id.to_string(),
                users: vec![(name.clone(), position)],
            };
            let meta = Outbound::new(
                self.names.room_meta(&tok),
                Bytes::from(position.to_string()),
            )
            .expect_last_subject_sequence(tail.seq);
            let mut m = message_headers(
                Outbound::new(self.names.room(&tok), msg.payload.clone()),
                id,
                position,
                msg,
                now,
            );
            let ttl = self.settings.room_retention.as_secs().max(1);
            m.headers.insert("Nats-TTL", format!("{ttl}s").as_str());
            let batch = vec![
                self.idem_message(idem_subject.clone(), &rec, msg.key.is_some())?,
                meta,
                m,
            ];
            let result = self.commit_rooms.commit(batch).await;
            match result {
                Ok(ack) => {
                    // The counter is the batch's second message.
                    let meta_seq = ack.sequence - 1;
                    self.note_room_tail(
                        &tok,
                        Tail {
                            seq: meta_seq,
                            pos: position,
                        },
                    );
                    return Ok(accepted(rec, false, key_of));
                }
                Err(e @ (JsError::WrongLastSequence(_) | JsError::Unavailable(_))) => {
                    last_error = e.to_string();
                    self.lock_room_tails().remove(&tok);
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(unavailable(format!(
            "not stored after {MAX_ATTEMPTS} attempts: {last_error}"
        )))
    }

    fn lock_room_tails(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Tail>> {
        self.room_tails.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A room's counter: (its sequence, the last position assigned).
    pub(crate) async fn room_tail(&self, tok: &str, fresh: bool) -> Result<Tail, JsError> {
        if let Some(t) = self.lock_room_tails().get(tok) {
            return Ok(*t);
        }
        let subject = self.names.room_meta(tok);
        let last = super::js::last_for_subject_maybe_fresh(&self.rooms, &subject, fresh).await?;
        let t = match last {
            Some(m) => Tail {
                seq: m.sequence,
                pos: String::from_utf8_lossy(&m.payload).parse().unwrap_or(0),
            },
            None => Tail::default(),
        };
        self.note_room_tail(tok, t);
        Ok(t)
    }

    /// Forgets a room's cached counter (the next publish reads it).
    pub(crate) fn forget_room_tail(&self, tok: &str) {
        self.lock_room_tails().remove(tok);
    }

    pub(crate) fn note_room_tail(&self, tok: &str, t: Tail) {
        let mut tails = self.lock_room_tails();
        let e = tails.entry(tok.to_string()).or_default();
        if t.seq > e.seq {
            *e = t;
        }
    }
}
