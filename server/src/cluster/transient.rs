//! Transient messages across nodes (SPEC.md §5.4): the node that accepts one queues it to its
//! own connections, then hands the encoded PUSH to every other node over NATS core (not
//! JetStream: nothing is stored, at most once); each node queues it to the version-2
//! connections it has for the stream.

use std::sync::Arc;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_lite::StreamExt;

use super::engine::ClusterEngine;
use super::names::{self, header_u64};
use crate::hub::Stamp;
use crate::stream::StreamKey;
use crate::trace::parse_traceparent;
use opentelemetry::trace::SpanContext;

/// The node that published the message (it has delivered it itself).
const ORIGIN: &str = "Push-Origin";
/// The stream's name (`user:<id>`, `room:<name>`, `broadcast`).
const STREAM: &str = "Push-Stream";

impl ClusterEngine {
    /// Hands a transient message, already queued on this node, to the other nodes.
    pub(crate) async fn publish_transient(
        &self,
        stream: &StreamKey,
        frame: Bytes,
        trace: Option<&SpanContext>,
    ) -> Result<(), async_nats::PublishError> {
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, self.origin.to_string().as_str());
        headers.insert(STREAM, stream.name().as_str());
        if let Some(tp) = trace.and_then(crate::trace::traceparent) {
            headers.insert(names::TRACEPARENT, tp.as_str());
        }
        self.client
            .publish_with_headers(self.names.transient(), headers, frame)
            .await
    }

    /// Delivers the transient messages other nodes publish (one subscription per node).
    pub(crate) async fn start_transient(
        self: &Arc<Self>,
    ) -> Result<(), async_nats::SubscribeError> {
        let mut sub = self.client.subscribe(self.names.transient()).await?;
        let engine = self.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(h) = msg.headers.as_ref() else {
                    continue;
                };
                if header_u64(h, ORIGIN) == Some(engine.origin) {
                    continue;
                }
                let Some(stream) = h.get(STREAM).and_then(|s| StreamKey::parse(s.as_str())) else {
                    continue;
                };
                let span = engine.stats.tracer.as_ref().and_then(|t| {
                    let parent = parse_traceparent(h.get(names::TRACEPARENT)?.as_str())?;
                    Some(t.fanout(&parent, &stream, 0))
                });
                let stamp = Stamp {
                    trace: span.as_ref().map_or(0, |s| s.slot),
                    ..Stamp::NONE
                };
                let fan = engine
                    .hub
                    .send_transient(&stream, &msg.payload, stamp, None);
                if let Some(span) = span {
                    span.finish(fan.queued, fan.slow);
                }
                let scenario = stream.scenario();
                engine
                    .stats
                    .add(&engine.stats.queued_by[scenario], fan.queued as u64);
                engine
                    .stats
                    .add(&engine.stats.slow_consumers, fan.slow as u64);
            }
        });
        Ok(())
    }
}
