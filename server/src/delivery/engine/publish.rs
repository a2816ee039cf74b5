//! Accepting a publish: idempotency (memory first, disk once ids were evicted), position
//! assignment per stream, the writes and frames it stages for the next commit.

use super::*;

impl Engine {
    pub(super) fn lookup_idem(
        &mut self,
        key: &str,
        now: u64,
    ) -> Result<Option<Vec<Accepted>>, DeliveryError> {
        if let Some(v) = self.stage.idem.get(key) {
            return Ok(Some(v.clone()));
        }
        if let Some(v) = self.idem.get(key, now) {
            return Ok(Some(v));
        }
        // While memory holds every id of the window, a miss means a new id: no disk read on
        // the publish path. Once ids were evicted by count, they may still be on disk.
        if !self.idem.is_incomplete() {
            return Ok(None);
        }
        if let Some(v) = self.kv.get(&idem_key(key)).map_err(storage)? {
            let (at, list) = decode_accepted(&v).map_err(storage)?;
            if now.saturating_sub(at) <= self.cfg.idempotency_window_ms {
                return Ok(Some(accepted_from(list)));
            }
        }
        Ok(None)
    }

    pub(super) fn stage_publish(
        &mut self,
        target: &Target,
        msg: &Message,
    ) -> Result<(Vec<Accepted>, Sends), DeliveryError> {
        let now = self.now.unix_ms;
        if let Some(key) = &msg.key {
            if let Some(previous) = self.lookup_idem(key, now)? {
                self.stats.inc(&self.stats.duplicates);
                let dup = previous
                    .into_iter()
                    .map(|a| Accepted {
                        duplicate: true,
                        queued: 0,
                        ..a
                    })
                    .collect();
                return Ok((dup, Vec::new()));
            }
        }
        let id = self.ids.next();
        let rec = Record {
            id,
            timestamp_ms: now,
            failed: false,
            recalled: false,
            retries: 0,
            updated_ms: now,
            expires_ms: msg.ttl_ms.map_or(0, |t| now.saturating_add(t)),
            kind: msg.kind.clone(),
            format: msg.format,
            payload: msg.payload.clone(),
        };
        let encoded = rec.encode();
        let streams = target.streams();
        let mut accepted = Vec::with_capacity(streams.len());
        let mut sends = Vec::with_capacity(streams.len());
        for stream in streams {
            let mut meta = self.meta(&stream);
            meta.tail += 1;
            let position = meta.tail;
            self.stage
                .ops
                .push(Op::Put(record_key(&stream, position), encoded.clone()));
            self.set_meta(&stream, meta);
            if let Some(frame) = self.encode_push(id, &stream, position, &rec) {
                sends.push((stream.clone(), frame));
            }
            accepted.push(Accepted {
                id,
                stream,
                position,
                queued: 0,
                duplicate: false,
            });
        }
        if let Some(key) = &msg.key {
            let list: Vec<(MessageId, String, u64)> = accepted
                .iter()
                .map(|a| (a.id, a.stream.name(), a.position))
                .collect();
            self.stage
                .ops
                .push(Op::Put(idem_key(key), encode_accepted(now, &list)));
            self.stage.idem.insert(key.clone(), accepted.clone());
        }
        Ok((accepted, sends))
    }
}

/// The acceptances an idempotency entry recorded (entries naming no known stream are skipped).
pub(super) fn accepted_from(list: Vec<(MessageId, String, u64)>) -> Vec<Accepted> {
    list.into_iter()
        .filter_map(|(id, name, position)| {
            Some(Accepted {
                id,
                stream: StreamKey::parse(&name)?,
                position,
                queued: 0,
                duplicate: false,
            })
        })
        .collect()
}
