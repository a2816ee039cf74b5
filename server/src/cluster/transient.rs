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
                let tracer = engine.stats.tracer.as_deref();
                let parent = tracer.and(h.get(names::TRACEPARENT));
                let parent = parent.and_then(|p| parse_traceparent(p.as_str()));
                let send = |stamp| {
                    engine
                        .hub
                        .send_transient(&stream, &msg.payload, stamp, None)
                };
                let fan =
                    crate::trace::fan_out(tracer, parent.as_ref(), &stream, 0, Stamp::NONE, send);
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
