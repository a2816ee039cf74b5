//! Recall in cluster mode (SPEC.md §5.12). A stored JetStream message cannot change, so a
//! recall appends a tombstone to the stream's subject, then deletes the original. The
//! tombstone names the withdrawn position and id (`Push-Recalled`, `Push-Id`) and carries the
//! stream's current tail as its `Push-Pos`, so "the subject's last message holds the tail" stays
//! true and positions are never reused; it is written with the same compare-and-set as a
//! publish (the user's subject, or the room's counter in one atomic batch), so it is ordered
//! with them. Reads skip tombstones; live, each node turns one into RECALL for the version-2
//! connections it has on the stream; history lists it as recalled.

use async_nats::HeaderMap;
use bytes::Bytes;
use push_protocol::{encode_to_bytes, Frame, MessageId, Packet, Recall, Stream};

use super::engine::{unavailable, ClusterEngine, Tail};
use super::js::{
    last_for_subject_from_leader, next_for_subject, publish_atomic, JsError, Outbound, Stored,
};
use super::names::{self, header_u64, parse_id, stream_token};
use super::publish::{accepted, read_record};
use crate::delivery::{DeliveryError, RecallTarget, Recalled};
use crate::stream::StreamKey;

/// Header of a tombstone: the position it withdraws.
pub(crate) const RECALLED: &str = "Push-Recalled";

/// Attempts at appending a tombstone when publishes keep winning the race.
const ATTEMPTS: usize = 8;

/// The RECALL a tombstone stands for, as `wire` names its stream to a connection.
pub(crate) fn recall_of(headers: &HeaderMap, wire: Stream) -> Option<Frame> {
    let position = header_u64(headers, RECALLED)?;
    let id = parse_id(headers.get(names::ID)?.as_str())?;
    Some(Frame::Recall(Recall {
        id,
        stream: wire,
        position,
    }))
}

/// True for a tombstone (not a message).
pub(crate) fn is_tombstone(headers: &HeaderMap) -> bool {
    headers.get(RECALLED).is_some()
}

impl ClusterEngine {
    /// Queues the RECALL a live tombstone stands for to the stream's version-2 connections
    /// here; false when `headers` are not a tombstone's.
    pub(crate) fn notify_recall(&self, key: &StreamKey, headers: &HeaderMap) -> bool {
        let Some(frame) = recall_of(headers, key.wire()) else {
            return is_tombstone(headers);
        };
        if let Ok(bytes) = encode_to_bytes(&Packet::new(0, frame), &self.options) {
            self.hub.send_version_2(key, &bytes);
        }
        true
    }

    /// Withdraws what `target` names.
    pub async fn recall(&self, target: &RecallTarget) -> Result<Vec<Recalled>, DeliveryError> {
        match target {
            RecallTarget::At {
                stream,
                position,
                id,
            } => Ok(vec![self.recall_at(stream, *position, *id).await?]),
            RecallTarget::Key { key, stream } => {
                let mut out = Vec::new();
                for a in self.publish_of(key, stream.as_ref()).await? {
                    out.push(self.recall_at(&a.0, a.1, Some(a.2)).await?);
                }
                Ok(out)
            }
        }
    }

    /// What a publish with idempotency `key` stored: users' and broadcast publishes are found
    /// by the key alone, a room's with its stream (room records are kept per room).
    async fn publish_of(
        &self,
        key: &str,
        stream: Option<&StreamKey>,
    ) -> Result<Vec<(StreamKey, u64, MessageId)>, DeliveryError> {
        let found = match stream {
            Some(s @ (StreamKey::Room(_) | StreamKey::Broadcast)) => {
                let subject = self.names.room_idem(&format!("{}/{key}", stream_token(s)));
                let s = s.clone();
                read_record(&self.rooms, &subject)
                    .await
                    .map_err(unavailable)?
                    .map(|r| accepted(r, false, move |_| s.clone()))
            }
            _ => {
                let users = read_record(&self.stream, &self.names.idem(key))
                    .await
                    .map_err(unavailable)?;
                match users {
                    Some(r) => Some(accepted(r, false, StreamKey::User)),
                    None if stream.is_none() => {
                        let subject = self.names.room_idem(&format!("_b/{key}"));
                        read_record(&self.rooms, &subject)
                            .await
                            .map_err(unavailable)?
                            .map(|r| accepted(r, false, |_| StreamKey::Broadcast))
                    }
                    None => None,
                }
            }
        };
        let list: Vec<_> = found
            .unwrap_or_default()
            .into_iter()
            .filter(|a| stream.is_none_or(|s| &a.stream == s))
            .map(|a| (a.stream, a.position, a.id))
            .collect();
        if list.is_empty() {
            return Err(DeliveryError::NotFound(format!(
                "no publish with this key{} within the idempotency window (in cluster mode a \
                 room publish is found by its key together with its stream)",
                stream.map(|s| format!(" to {s}")).unwrap_or_default()
            )));
        }
        Ok(list)
    }

    async fn recall_at(
        &self,
        key: &StreamKey,
        position: u64,
        id: Option<MessageId>,
    ) -> Result<Recalled, DeliveryError> {
        let (js, subject) = match key {
            StreamKey::User(u) => (&self.stream, self.names.user(u)),
            _ => (&self.rooms, self.names.room(&stream_token(key))),
        };
        let not_found = || DeliveryError::NotFound(format!("{key} has no message at {position}"));
        let found = find_position(js, &subject, position)
            .await
            .map_err(unavailable)?;
        let Some(original) = found else {
            // Recalled before: its tombstone says so.
            return match find_tombstone(js, &subject, position)
                .await
                .map_err(unavailable)?
            {
                Some(t) => Ok(Recalled {
                    id: parse_id(t.headers.get(names::ID).map_or("", |v| v.as_str()))
                        .unwrap_or_default(),
                    stream: key.clone(),
                    position,
                    already: true,
                }),
                None => Err(not_found()),
            };
        };
        let original_id = original
            .headers
            .get(names::ID)
            .and_then(|v| parse_id(v.as_str()))
            .ok_or_else(not_found)?;
        if id.is_some_and(|id| id != original_id) {
            return Err(DeliveryError::NotFound(format!(
                "the message at {key} {position} is not {}",
                id.unwrap_or_default()
            )));
        }
        let writer = [match key {
            StreamKey::User(u) => format!("u/{u}"),
            _ => format!("r/{}", stream_token(key)),
        }];
        let guards = self.lock_writers(&writer).await;
        let appended = self
            .append_tombstone(key, &subject, position, original_id)
            .await;
        self.unlock_writers(&writer, guards);
        appended.map_err(unavailable)?;
        js.delete_message(original.sequence)
            .await
            .map_err(unavailable)?;
        tracing::info!(stream = %key, position, id = %original_id, "message recalled");
        Ok(Recalled {
            id: original_id,
            stream: key.clone(),
            position,
            already: false,
        })
    }

    async fn append_tombstone(
        &self,
        key: &StreamKey,
        subject: &str,
        position: u64,
        id: MessageId,
    ) -> Result<(), JsError> {
        let mut last_error = JsError::Unavailable("no attempt".into());
        for _ in 0..ATTEMPTS {
            let tomb = |tail: u64| {
                let mut m = Outbound::new(subject.to_string(), Bytes::new());
                m.headers.insert(names::POSITION, tail.to_string().as_str());
                m.headers.insert(RECALLED, position.to_string().as_str());
                m.headers.insert(names::ID, id.to_string().as_str());
                m
            };
            let done = match key {
                StreamKey::User(user) => {
                    let last = last_for_subject_from_leader(&self.stream, subject).await?;
                    let (seq, tail) = last.map_or((0, 0), |m| {
                        (
                            m.sequence,
                            header_u64(&m.headers, names::POSITION).unwrap_or(0),
                        )
                    });
                    let r = publish_atomic(
                        &self.client,
                        vec![tomb(tail).expect_last_subject_sequence(seq)],
                        self.settings.request_timeout,
                    )
                    .await;
                    if let Ok(ack) = &r {
                        self.note_tail(
                            user,
                            Tail {
                                seq: ack.sequence,
                                pos: tail,
                            },
                        );
                    }
                    r
                }
                _ => {
                    let tok = stream_token(key);
                    let t = self.room_tail(&tok, true).await?;
                    // The counter is rewritten unchanged: no room publish can come between.
                    let meta = Outbound::new(self.names.room_meta(&tok), t.pos.to_string().into())
                        .expect_last_subject_sequence(t.seq);
                    let mut m = tomb(t.pos);
                    let ttl = self.settings.room_retention.as_secs().max(1);
                    m.headers.insert("Nats-TTL", format!("{ttl}s").as_str());
                    let r = self.commit_rooms.commit(vec![meta, m]).await;
                    if let Ok(ack) = &r {
                        self.note_room_tail(
                            &tok,
                            Tail {
                                seq: ack.sequence - 1,
                                pos: t.pos,
                            },
                        );
                    }
                    r
                }
            };
            match done {
                Ok(_) => return Ok(()),
                Err(e @ JsError::WrongLastSequence(_)) => {
                    if let StreamKey::Room(_) | StreamKey::Broadcast = key {
                        self.forget_room_tail(&stream_token(key));
                    }
                    last_error = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error)
    }
}

/// The message stored at `position` of `subject` (not a tombstone), by a binary search over
/// stream sequences: positions grow with sequences on a subject.
async fn find_position(
    js: &async_nats::jetstream::stream::Stream,
    subject: &str,
    position: u64,
) -> Result<Option<Stored>, JsError> {
    let Some(lo) = find_place(js, subject, position).await? else {
        return Ok(None);
    };
    let m = next_for_subject(js, subject, Some(lo)).await?;
    Ok(m.filter(|m| {
        !is_tombstone(&m.headers) && header_u64(&m.headers, names::POSITION) == Some(position)
    }))
}

/// The smallest stream sequence from which the subject's next message has a position of at
/// least `position` (`None` for an empty subject).
async fn find_place(
    js: &async_nats::jetstream::stream::Stream,
    subject: &str,
    position: u64,
) -> Result<Option<u64>, JsError> {
    let Some(last) = last_for_subject_from_leader(js, subject).await? else {
        return Ok(None);
    };
    let (mut lo, mut hi) = (1u64, last.sequence);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let at = next_for_subject(js, subject, Some(mid)).await?;
        let p = at
            .as_ref()
            .and_then(|m| header_u64(&m.headers, names::POSITION));
        match p {
            Some(p) if p >= position => hi = mid,
            _ => lo = mid + 1,
        }
    }
    Ok(Some(lo))
}

/// Messages looked at for the tombstone of a position recalled before.
const TOMBSTONE_SCAN: usize = 1000;

/// The tombstone of `position` on `subject`: appended after the message it withdraws, so it
/// is looked for among the [`TOMBSTONE_SCAN`] messages after where that one was.
async fn find_tombstone(
    js: &async_nats::jetstream::stream::Stream,
    subject: &str,
    position: u64,
) -> Result<Option<Stored>, JsError> {
    let Some(mut at) = find_place(js, subject, position).await? else {
        return Ok(None);
    };
    for _ in 0..TOMBSTONE_SCAN {
        let Some(m) = next_for_subject(js, subject, Some(at)).await? else {
            break;
        };
        at = m.sequence + 1;
        if header_u64(&m.headers, RECALLED) == Some(position) {
            return Ok(Some(m));
        }
    }
    Ok(None)
}
