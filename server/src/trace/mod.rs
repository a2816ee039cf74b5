//! Message tracing: a publish's path as OpenTelemetry spans, sent to a collector over
//! OTLP/HTTP when `[tracing]` is configured.
//!
//! `push.accept` (the API request or queue message, child of the caller's `traceparent`)
//! has two children: `push.commit` (until the message is durable) and `push.fanout` (queueing
//! it to the stream's connections); each connection's socket write is a `push.write` under
//! the fan-out, and on user streams the device's ACK is a `push.ack` under its write. The
//! spans cross the HTTP task, the storage thread and every receiving connection's task, so
//! they are built with explicit start and end times. With tracing off nothing here runs:
//! a stamp's trace slot is 0 and a `traceparent` header is not read.

mod export;
mod fanouts;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, Span,
};
use opentelemetry_sdk::Resource;

use crate::config::TracingConfig;
use crate::delivery::Accepted;
use crate::hub::{Conn, FanOut, Stamp};
use crate::stats::TRANSPORTS;
use crate::stream::StreamKey;
use fanouts::Fanouts;

/// Why tracing cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The exporter could not be built from the settings.
    #[error("tracing exporter: {0}")]
    Exporter(String),
    /// Tracing needs the server's runtime to send spans.
    #[error("tracing must be started inside the server's tokio runtime")]
    NoRuntime,
}

/// The tracer of one server.
pub struct Tracer {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// False when only publishes carrying a `traceparent` can be traced.
    roots: bool,
    fanouts: Fanouts,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("roots", &self.roots)
            .finish()
    }
}

/// A `push.accept` span in progress; its context travels with the message.
pub struct AcceptSpan {
    span: Span,
}

/// A `push.fanout` span in progress and the slot its frames' stamps carry.
struct FanoutSpan {
    span: Span,
    slot: u32,
}

/// The wall-clock time of `at`.
fn wall(at: Instant) -> SystemTime {
    SystemTime::now()
        .checked_sub(at.elapsed())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// One header as the propagator's input.
struct OneHeader<'a>(&'a str);

impl Extractor for OneHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// The propagator's output, keeping `traceparent` only.
struct TakeParent(Option<String>);

impl Injector for TakeParent {
    fn set(&mut self, key: &str, value: String) {
        if key == "traceparent" {
            self.0 = Some(value);
        }
    }
}

/// Parses a W3C `traceparent` value; `None` when it is malformed.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let cx = TraceContextPropagator::new().extract(&OneHeader(value));
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The W3C `traceparent` value naming `sc` as the parent.
pub fn traceparent(sc: &SpanContext) -> Option<String> {
    let cx = Context::new().with_remote_span_context(sc.clone());
    let mut out = TakeParent(None);
    TraceContextPropagator::new().inject_context(&cx, &mut out);
    out.0
}

impl Tracer {
    /// Starts the exporter (on the current tokio runtime) for `cfg`.
    pub fn start(cfg: &TracingConfig) -> Result<Tracer, TraceError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| TraceError::NoRuntime)?;
        let exporter = export::exporter(cfg, runtime)?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(cfg.max_queued_spans)
            .with_max_export_batch_size(cfg.max_queued_spans.min(512))
            .with_scheduled_delay(Duration::from_millis(cfg.export_interval_ms))
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                cfg.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(cfg.service_name.clone())
                    .with_attributes(
                        cfg.instance
                            .clone()
                            .map(|i| KeyValue::new("service.instance.id", i)),
                    )
                    .build(),
            )
            .build();
        let tracer = provider.tracer("push-server");
        // Export failures and dropped spans are reported by the SDK itself (its internal
        // logs go through `tracing`, at warn and error).
        tracing::info!(
            endpoint = %cfg.otlp_endpoint,
            protocol = ?cfg.protocol,
            sample_ratio = cfg.sample_ratio,
            "tracing: sampled publishes are recorded as spans and exported over OTLP/HTTP"
        );
        Ok(Tracer {
            provider,
            tracer,
            roots: cfg.sample_ratio > 0.0,
            fanouts: Fanouts::new(
                cfg.max_traced_messages,
                cfg.max_write_spans,
                Duration::from_millis(cfg.ack_window_ms),
            ),
        })
    }

    fn child(&self, name: &'static str, parent: &SpanContext) -> (SpanBuilder, Context) {
        let cx = Context::new().with_remote_span_context(parent.clone());
        (SpanBuilder::from_name(name), cx)
    }

    /// Starts `push.accept` for a publish arriving through `source` ("http" or "amqp") with
    /// an optional `traceparent`; `None` when the publish is not to be traced.
    pub fn accept(&self, source: &'static str, traceparent: Option<&str>) -> Option<AcceptSpan> {
        let parent = traceparent.and_then(parse_traceparent);
        if parent.is_none() && !self.roots {
            return None;
        }
        let cx = parent.map_or_else(Context::new, |p| Context::new().with_remote_span_context(p));
        let kind = if source == "amqp" {
            SpanKind::Consumer
        } else {
            SpanKind::Server
        };
        let span = SpanBuilder::from_name("push.accept")
            .with_kind(kind)
            .with_attributes([KeyValue::new("push.source", source)])
            .start_with_context(&self.tracer, &cx);
        span.span_context()
            .is_sampled()
            .then_some(AcceptSpan { span })
    }

    /// Records `push.commit` under `parent`: from `staged` until now, `writes` writes in the
    /// batch it was committed with.
    pub fn commit(
        &self,
        parent: &SpanContext,
        staged: Instant,
        writes: usize,
        error: Option<&str>,
    ) {
        let (builder, cx) = self.child("push.commit", parent);
        let mut span = builder
            .with_kind(SpanKind::Internal)
            .with_start_time(wall(staged))
            .with_attributes([KeyValue::new("push.batch_writes", writes as i64)])
            .start_with_context(&self.tracer, &cx);
        if let Some(e) = error {
            span.set_status(Status::error(e.to_string()));
        }
        span.end();
    }

    /// Starts `push.fanout` of `stream` at `position` under `parent`; frames queued with
    /// the returned slot get `push.write` spans.
    fn fanout(&self, parent: &SpanContext, stream: &StreamKey, position: u64) -> FanoutSpan {
        let (builder, cx) = self.child("push.fanout", parent);
        let now = SystemTime::now();
        let span = builder
            .with_kind(SpanKind::Producer)
            .with_start_time(now)
            .with_attributes([
                KeyValue::new("push.stream", stream.name()),
                KeyValue::new("push.position", position as i64),
            ])
            .start_with_context(&self.tracer, &cx);
        let user = match stream {
            StreamKey::User(u) => Some(Arc::from(u.as_str())),
            _ => None,
        };
        let slot = self
            .fanouts
            .insert(span.span_context().clone(), now, user, position);
        FanoutSpan { span, slot }
    }

    /// A frame stamped with `slot` was handed to `conn`'s socket: `push.write`, from the
    /// fan-out until now.
    pub fn written(&self, slot: u32, conn: &Conn) {
        let Some(parent) = self.fanouts.write(slot) else {
            return;
        };
        let (builder, cx) = self.child("push.write", &parent.fanout);
        let transport = TRANSPORTS.get(conn.transport()).copied().unwrap_or("tcp");
        let mut span = builder
            .with_kind(SpanKind::Internal)
            .with_start_time(parent.queued)
            .with_attributes([
                KeyValue::new("push.conn", conn.id as i64),
                KeyValue::new("push.user", conn.user.to_string()),
                KeyValue::new("push.transport", transport),
            ])
            .start_with_context(&self.tracer, &cx);
        let now = SystemTime::now();
        span.end_with_timestamp(now);
        self.fanouts
            .written(slot, conn.id, span.span_context().clone(), now);
    }

    /// `conn` acknowledged its user stream up to `position`: `push.ack` for each traced
    /// message this settles, from its write until now.
    pub fn acked(&self, conn: &Conn, position: u64) {
        for a in self.fanouts.acked(&conn.user, conn.id, position) {
            let (builder, cx) = self.child("push.ack", &a.write);
            builder
                .with_kind(SpanKind::Internal)
                .with_start_time(a.written)
                .with_attributes([
                    KeyValue::new("push.conn", conn.id as i64),
                    KeyValue::new("push.position", a.position as i64),
                    KeyValue::new("push.acked_through", position as i64),
                ])
                .start_with_context(&self.tracer, &cx)
                .end();
        }
    }

    /// Sends what is finished and stops the exporter (at shutdown).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("tracing exporter did not shut down cleanly: {e}");
        }
    }
}

/// Runs a fan-out with `send`; when there is a tracer and a traced message (`parent`, its
/// `push.accept` span), inside a `push.fanout` span whose slot the frames' stamp carries.
pub fn fan_out(
    tracer: Option<&Tracer>,
    parent: Option<&SpanContext>,
    stream: &StreamKey,
    position: u64,
    stamp: Stamp,
    send: impl FnOnce(Stamp) -> FanOut,
) -> FanOut {
    let Some((tracer, parent)) = tracer.zip(parent) else {
        return send(stamp);
    };
    let span = tracer.fanout(parent, stream, position);
    let fan = send(Stamp {
        trace: span.slot,
        ..stamp
    });
    span.finish(fan.queued, fan.slow);
    fan
}

impl AcceptSpan {
    /// The context later spans hang under.
    pub fn context(&self) -> SpanContext {
        self.span.span_context().clone()
    }

    /// Ends the span with the publish's outcome.
    pub fn finish(mut self, outcome: Result<&[Accepted], String>) {
        match outcome {
            Ok(accepted) => {
                if let Some(a) = accepted.first() {
                    self.span
                        .set_attribute(KeyValue::new("push.message_id", a.id.to_string()));
                }
                let streams: Vec<_> = accepted.iter().map(|a| a.stream.name()).collect();
                self.span
                    .set_attribute(KeyValue::new("push.streams", streams.join(",")));
                let online: usize = accepted.iter().map(|a| a.queued).sum();
                self.span
                    .set_attribute(KeyValue::new("push.queued", online as i64));
                let duplicate = accepted.iter().any(|a| a.duplicate);
                self.span
                    .set_attribute(KeyValue::new("push.duplicate", duplicate));
            }
            Err(reason) => self.span.set_status(Status::error(reason)),
        }
        self.span.end();
    }
}

impl FanoutSpan {
    /// Ends the span with how many connections the message was queued to.
    fn finish(mut self, queued: usize, slow: usize) {
        self.span
            .set_attribute(KeyValue::new("push.queued", queued as i64));
        if slow > 0 {
            self.span
                .set_attribute(KeyValue::new("push.slow_consumers", slow as i64));
        }
        self.span.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_garbage() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = parse_traceparent(tp).expect("valid");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(traceparent(&sc).as_deref(), Some(tp));
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?}");
        }
    }
}
