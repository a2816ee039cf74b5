//! Publishing to users: one atomic batch per publish, an idempotency record that must not
//! exist yet and, per user, a message written on top of the user's last one with
//! compare-and-set, so positions stay contiguous whichever node writes. A publish whose
//! outcome is unknown (timeout, leader change) is retried and recognised by its own record.

use std::time::Duration;

use async_nats::jetstream::stream;
use bytes::Bytes;
use push_protocol::MessageId;
use serde::{Deserialize, Serialize};

use super::engine::{unavailable, ClusterEngine, Tail};
use super::js::{last_for_subject, JsError, Outbound};
use super::names::{message_headers, parse_id};
use crate::delivery::{Accepted, DeliveryError, Message};
use crate::stream::StreamKey;

/// Attempts at one publish before it is refused (lost races and unavailable engine alike).
pub(crate) const MAX_ATTEMPTS: usize = 8;

/// What an idempotency record holds: the publish's result (for rooms and broadcast, one
/// entry named by the room, or empty for broadcast).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct IdemRecord {
    pub(crate) id: String,
    pub(crate) users: Vec<(String, u64)>,
}

/// Reads an idempotency record.
pub(crate) async fn read_record(
    stream: &stream::Stream,
    subject: &str,
) -> Result<Option<IdemRecord>, JsError> {
    let Some(m) = last_for_subject(stream, subject).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&m.payload).ok())
}

/// The acceptances a record describes, each entry's name made a stream by `key`.
pub(crate) fn accepted(
    rec: IdemRecord,
    duplicate: bool,
    key: impl Fn(String) -> StreamKey,
) -> Vec<Accepted> {
    let id = parse_id(&rec.id).unwrap_or(MessageId([0; 16]));
    rec.users
        .into_iter()
        .map(|(name, position)| Accepted {
            id,
            stream: key(name),
            position,
            queued: 0,
            duplicate,
        })
        .collect()
}

impl ClusterEngine {
    async fn idem_record(&self, key: &str) -> Result<Option<IdemRecord>, JsError> {
        read_record(&self.stream, &self.names.idem(key)).await
    }

    /// The idempotency record of a publish: stored only if absent, forgotten after the
    /// window when the client gave the key (`client_key`). A publish without one keeps its
    /// record only as long as its own retries may need it (every attempt's timeout and
    /// backoff, plus a minute): a record per publish for the whole window (24 h) grew NATS's
    /// storage and memory without bound in the cluster soak (BENCHMARKS.md).
    pub(crate) fn idem_message(
        &self,
        subject: String,
        rec: &IdemRecord,
        client_key: bool,
    ) -> Result<Outbound, DeliveryError> {
        let bytes = serde_json::to_vec(rec).map_err(unavailable)?;
        let mut idem = Outbound::new(subject, Bytes::from(bytes)).expect_last_subject_sequence(0);
        let own = (self.settings.request_timeout + Duration::from_secs(1)) * MAX_ATTEMPTS as u32
            + Duration::from_secs(60);
        let window = if client_key {
            self.settings.idempotency_window
        } else {
            own.min(self.settings.idempotency_window)
        };
        let ttl = window.as_secs().max(1);
        idem.headers.insert("Nats-TTL", format!("{ttl}s").as_str());
        Ok(idem)
    }

    fn accepted_of(rec: IdemRecord, duplicate: bool) -> Vec<Accepted> {
        accepted(rec, duplicate, StreamKey::User)
    }

    /// Stores a message for `users` (sorted, deduplicated) durably on a majority of the
    /// replicas; answers with each user's position. A key given before within the window
    /// answers the first result with `duplicate: true`; a publish retried after an unknown
    /// outcome (timeout, leader change) is recognised by its own record and stored once.
    pub async fn publish_users(
        &self,
        users: &[String],
        msg: &Message,
    ) -> Result<Vec<Accepted>, DeliveryError> {
        let keys: Vec<String> = users.iter().map(|u| format!("u/{u}")).collect();
        let guards = self.lock_writers(&keys).await;
        let r = self.publish_users_locked(users, msg).await;
        self.unlock_writers(&keys, guards);
        r
    }

    async fn publish_users_locked(
        &self,
        users: &[String],
        msg: &Message,
    ) -> Result<Vec<Accepted>, DeliveryError> {
        let id = self.ids.next();
        let key = msg.key.clone().unwrap_or_else(|| format!("~{id}"));
        let now = self.clock.now().unix_ms;
        let mut last_error = String::new();
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                // The previous attempt's outcome may be unknown: our own record says.
                match self.idem_record(&key).await {
                    Ok(Some(rec)) => {
                        let ours = rec.id == id.to_string();
                        if !ours {
                            self.stats.inc(&self.stats.duplicates);
                        }
                        return Ok(Self::accepted_of(rec, !ours));
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!("reading idempotency record {key:?}: {e}"),
                }
                let backoff = Duration::from_millis(20 << attempt.min(5));
                tokio::time::sleep(backoff).await;
            } else if msg.key.is_some() {
                if let Ok(Some(rec)) = self.idem_record(&key).await {
                    self.stats.inc(&self.stats.duplicates);
                    return Ok(Self::accepted_of(rec, true));
                }
            }
            let mut tails = Vec::with_capacity(users.len());
            let mut failed = None;
            for u in users {
                match self.tail_from(u, attempt > 0).await {
                    Ok(t) => tails.push(t),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                last_error = e.to_string();
                continue;
            }
            let rec = IdemRecord {
                id: id.to_string(),
                users: users
                    .iter()
                    .zip(&tails)
                    .map(|(u, t)| (u.clone(), t.pos + 1))
                    .collect(),
            };
            let mut batch =
                vec![self.idem_message(self.names.idem(&key), &rec, msg.key.is_some())?];
            for (u, t) in users.iter().zip(&tails) {
                let m = Outbound::new(self.names.user(u), msg.payload.clone())
                    .expect_last_subject_sequence(t.seq);
                batch.push(message_headers(m, id, t.pos + 1, msg, now));
            }
            let result = self.commit_users.commit(batch).await;
            match result {
                Ok(ack) => {
                    let first = ack.sequence + 1 - (users.len() as u64 + 1);
                    for (i, (u, t)) in users.iter().zip(&tails).enumerate() {
                        let seq = first + 1 + i as u64;
                        self.note_tail(
                            u,
                            Tail {
                                seq,
                                pos: t.pos + 1,
                            },
                        );
                    }
                    return Ok(Self::accepted_of(rec, false));
                }
                Err(e @ (JsError::WrongLastSequence(_) | JsError::Unavailable(_))) => {
                    last_error = e.to_string();
                    self.forget_tails(users);
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(unavailable(format!(
            "not stored after {MAX_ATTEMPTS} attempts: {last_error}"
        )))
    }
}
