//! Pages of a stream's stored messages in cluster mode, read from JetStream with their state:
//! for a user stream `sent` (acknowledged), `expired` or `pending`; for rooms and broadcast
//! `stored`.

use async_nats::HeaderMap;
use push_protocol::{MessageId, PayloadFormat};

use super::engine::{unavailable, ClusterEngine};
use super::js::{last_for_subject, next_for_subject};
use super::names::{self, stream_token};
use super::names::{header_u64, parse_id};
use crate::delivery::{DeliveryError, HistoryItem, HistoryPage};
use crate::store::Record;
use crate::stream::StreamKey;

fn record(h: &HeaderMap, payload: bytes::Bytes) -> Record {
    let ts = header_u64(h, names::TIMESTAMP).unwrap_or(0);
    Record {
        id: h
            .get(names::ID)
            .and_then(|v| parse_id(v.as_str()))
            .unwrap_or(MessageId([0; 16])),
        timestamp_ms: ts,
        failed: false,
        recalled: false,
        retries: 0,
        updated_ms: ts,
        expires_ms: header_u64(h, names::EXPIRES).unwrap_or(0),
        kind: h
            .get(names::KIND)
            .map(|k| k.as_str().to_string())
            .unwrap_or_default(),
        format: PayloadFormat(header_u64(h, names::FORMAT).unwrap_or(0) as u8),
        payload,
    }
}

impl ClusterEngine {
    /// Up to `limit` stored messages of `key` after position `after`.
    pub async fn history(
        &self,
        key: &StreamKey,
        after: u64,
        limit: usize,
    ) -> Result<HistoryPage, DeliveryError> {
        let (js_stream, subject) = match key {
            StreamKey::User(u) => (&self.stream, self.names.user(u)),
            _ => (&self.rooms, self.names.room(&stream_token(key))),
        };
        let ack = match key {
            StreamKey::User(u) => self.stored_ack(u).await.map_err(unavailable)?,
            _ => Default::default(),
        };
        let acked = ack.acked;
        let tail = match last_for_subject(js_stream, &subject)
            .await
            .map_err(unavailable)?
        {
            Some(m) => header_u64(&m.headers, names::POSITION).unwrap_or(0),
            None => 0,
        };
        let now = self.clock.now().unix_ms;
        let mut items = Vec::new();
        let mut first_retained = tail + 1;
        let mut next = 1u64;
        loop {
            let Some(m) = next_for_subject(js_stream, &subject, Some(next))
                .await
                .map_err(unavailable)?
            else {
                break;
            };
            next = m.sequence + 1;
            // A recall's tombstone lists the withdrawn message where it was.
            let recalled = header_u64(&m.headers, super::recall::RECALLED);
            let Some(position) = recalled.or(header_u64(&m.headers, names::POSITION)) else {
                continue;
            };
            first_retained = first_retained.min(position);
            if position <= after {
                continue;
            }
            let mut rec = record(&m.headers, m.payload);
            rec.recalled = recalled.is_some();
            let state = if rec.recalled {
                "recalled"
            } else if key.as_user().is_none() {
                "stored"
            } else if position <= acked {
                "sent"
            } else if rec.expired(now) {
                "expired"
            } else if position <= ack.failed {
                "failed"
            } else {
                "pending"
            };
            items.push(HistoryItem {
                position,
                record: rec,
                state,
            });
            if items.len() >= limit {
                break;
            }
        }
        // Tombstones sit where they were appended; the page is in position order.
        items.sort_by_key(|i| i.position);
        Ok(HistoryPage {
            stream: key.clone(),
            first_retained,
            tail,
            acked,
            items,
        })
    }
}
