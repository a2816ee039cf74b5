//! Stored messages read back as PUSH frames: the replay, gap filling and resends of user,
//! room and broadcast streams all go through here.

use async_nats::HeaderMap;
use bytes::Bytes;
use push_protocol::{encode_to_bytes, Frame, Packet, PayloadFormat, Push, Stream};

use super::engine::ClusterEngine;
use super::js::{next_for_subject, JsError};
use super::names;
use super::names::{header_u64, parse_id};
use crate::hub::{FanOut, Stamp};
use crate::stream::StreamKey;
use crate::trace::parse_traceparent;

impl ClusterEngine {
    /// The PUSH frame of a stored message, as `stream` on the wire, with its position.
    pub(crate) fn push_frame(
        &self,
        headers: &HeaderMap,
        payload: Bytes,
        stream: &Stream,
    ) -> Option<(u64, Bytes)> {
        let position = header_u64(headers, names::POSITION)?;
        let id = parse_id(headers.get(names::ID)?.as_str())?;
        let frame = Frame::Push(Push {
            id,
            stream: stream.clone(),
            position,
            timestamp_ms: header_u64(headers, names::TIMESTAMP).unwrap_or(0),
            kind: headers
                .get(names::KIND)
                .map(|k| k.as_str().to_string())
                .unwrap_or_default(),
            format: PayloadFormat(header_u64(headers, names::FORMAT).unwrap_or(0) as u8),
            payload,
        });
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let bytes = encode_to_bytes(&Packet::new(seq, frame), &self.options).ok()?;
        Some((position, bytes))
    }

    /// The stamp of a live message of `scenario` for the latency histograms: its acceptance time
    /// (the accepting node's wall clock, in its header, millisecond resolution) moved onto this
    /// hub's clock, so accept-to-write spans nodes; clock skew between hosts adds to it.
    fn live_stamp(&self, headers: &HeaderMap, scenario: usize) -> Stamp {
        let age_ms = header_u64(headers, names::TIMESTAMP)
            .map_or(0, |ts| self.clock.now().unix_ms.saturating_sub(ts));
        Stamp {
            // 0 means "not a message": a hub younger than the message still gets a stamp.
            accepted_us: self.hub.now_us().saturating_sub(age_ms * 1000).max(1),
            ..Stamp::delivery(scenario)
        }
    }

    /// Queues a live message of `scenario` with `send` and counts it: stamped for the latency
    /// histograms and, when its headers carry a sampled `traceparent`, followed by a
    /// `push.fanout` span of this node (`key` names the stream for it).
    pub(crate) fn deliver_live(
        &self,
        headers: &HeaderMap,
        scenario: usize,
        key: impl FnOnce() -> StreamKey,
        send: impl FnOnce(Stamp) -> FanOut,
    ) {
        let stamp = self.live_stamp(headers, scenario);
        let tracer = self.stats.tracer.as_deref();
        let parent = tracer.and(headers.get(names::TRACEPARENT));
        let fan = match parent.and_then(|p| parse_traceparent(p.as_str())) {
            Some(p) => {
                let position = header_u64(headers, names::POSITION).unwrap_or(0);
                crate::trace::fan_out(tracer, Some(&p), &key(), position, stamp, send)
            }
            None => send(stamp),
        };
        self.count_delivered(scenario, fan);
    }

    /// Counts a live fan-out of `scenario` in the deliveries metric.
    pub(crate) fn count_delivered(&self, scenario: usize, fan: FanOut) {
        if let Some(c) = self.stats.queued_by.get(scenario) {
            self.stats.add(c, fan.queued as u64);
        }
    }

    pub(crate) fn expired(&self, headers: &HeaderMap) -> bool {
        header_u64(headers, names::EXPIRES).is_some_and(|e| e <= self.clock.now().unix_ms)
    }

    /// The messages of `subject` in `js_stream` after stream sequence `after_seq` with
    /// positions up to `upto`, at most `limit`, unexpired, as PUSH frames for `wire`.
    pub(crate) async fn read_subject_after(
        &self,
        js_stream: &async_nats::jetstream::stream::Stream,
        subject: &str,
        wire: &Stream,
        after_seq: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64, Bytes)>, JsError> {
        let mut out = Vec::new();
        let mut next = after_seq + 1;
        while out.len() < limit {
            let Some(m) = next_for_subject(js_stream, subject, Some(next)).await? else {
                break;
            };
            next = m.sequence + 1;
            let Some(pos) = header_u64(&m.headers, names::POSITION) else {
                continue;
            };
            if pos > upto {
                break;
            }
            // A recall's tombstone (its position is the tail it was appended at).
            if super::recall::is_tombstone(&m.headers) {
                continue;
            }
            if self.expired(&m.headers) {
                continue;
            }
            if let Some((pos, frame)) = self.push_frame(&m.headers, m.payload, wire) {
                out.push((m.sequence, pos, frame));
            }
        }
        Ok(out)
    }
}

impl ClusterEngine {
    /// The user's stored messages after stream sequence `after_seq` with positions up to
    /// `upto`, at most `limit` of them, in order: (sequence, position, frame).
    pub(crate) async fn read_after(
        &self,
        user: &str,
        after_seq: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64, Bytes)>, JsError> {
        let subject = self.names.user(user);
        self.read_subject_after(
            &self.stream,
            &subject,
            &Stream::User,
            after_seq,
            upto,
            limit,
        )
        .await
    }

    /// The sequence of the user's stored message just before position `pos` (0: none), found
    /// by walking from the start of the subject; used to start a replay.
    pub(crate) async fn seq_before(&self, user: &str, pos: u64) -> Result<u64, JsError> {
        let subject = self.names.user(user);
        let mut prev = 0;
        let mut next = 1;
        loop {
            let Some(m) = next_for_subject(&self.stream, &subject, Some(next)).await? else {
                return Ok(prev);
            };
            if header_u64(&m.headers, names::POSITION).unwrap_or(0) >= pos {
                return Ok(prev);
            }
            prev = m.sequence;
            next = m.sequence + 1;
        }
    }
}
