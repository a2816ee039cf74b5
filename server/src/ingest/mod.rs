//! RabbitMQ ingestion: consume a durable queue whose messages use the push API's JSON schema,
//! accept each durably, and only then acknowledge it to the broker.
//!
//! - Accepted (or a duplicate of an accepted id): `ack`, in runs (`acks`: one `multiple` ack
//!   for the accepted deliveries below the lowest still in progress).
//! - Can never be valid (bad JSON, bad field, too large): republished to the dead-letter
//!   exchange with an `x-push-reason` header, then `ack`ed, so it is never redelivered.
//! - Temporary failure (storage unavailable, overloaded, shutting down): `nack` with requeue
//!   after a short pause, so the broker redelivers it later.
//!
//! A crash between the durable accept and the `ack` makes the broker redeliver; the message's
//! id (the JSON `id`, else the AMQP `message_id`) makes the second accept a no-op.

mod acks;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{Mutex, Semaphore};

use acks::AckRuns;

use crate::config::AmqpConfig;
use crate::context::Ctx;
use crate::delivery::DeliveryError;
use crate::push_request::{validate, PushRequest};

/// Why one broker session ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IngestError {
    /// The broker or the connection failed.
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    /// The consumer was cancelled or the channel closed.
    #[error("consumer stream ended")]
    Ended,
}

/// Consumes until shutdown, reconnecting with backoff whenever the broker goes away.
pub(crate) async fn run(ctx: Arc<Ctx>, cfg: AmqpConfig) {
    let mut backoff = Duration::from_millis(100);
    let mut logged_down = false;
    loop {
        if ctx.shutdown.is_cancelled() {
            break;
        }
        let result = session(&ctx, &cfg).await;
        let was_up = ctx.broker_up.swap(false, Ordering::Relaxed);
        match result {
            Ok(()) => break,
            Err(e) => {
                ctx.stats.inc(&ctx.stats.broker_disconnects);
                // Logged once per state change (connected -> down), not once per attempt.
                if was_up || !logged_down {
                    tracing::warn!("message queue unavailable ({e}); reconnecting with backoff");
                    logged_down = true;
                }
            }
        }
        if was_up {
            backoff = Duration::from_millis(100);
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
    tracing::info!("message queue consumer stopped");
}

async fn session(ctx: &Arc<Ctx>, cfg: &AmqpConfig) -> Result<(), IngestError> {
    let conn = Connection::connect(&cfg.url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(cfg.prefetch, BasicQosOptions::default())
        .await?;
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    ch.exchange_declare(
        cfg.dead_letter_exchange.as_str().into(),
        ExchangeKind::Fanout,
        durable_exchange,
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(
        cfg.dead_letter_queue.as_str().into(),
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        cfg.dead_letter_queue.as_str().into(),
        cfg.dead_letter_exchange.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-dead-letter-exchange"),
        AMQPValue::LongString(LongString::from(cfg.dead_letter_exchange.as_str())),
    );
    ch.queue_declare(
        cfg.queue.as_str().into(),
        QueueDeclareOptions::durable(),
        args,
    )
    .await?;
    let mut consumer = ch
        .basic_consume(
            cfg.queue.as_str().into(),
            "push-server".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    ctx.broker_up.store(true, Ordering::Relaxed);
    tracing::info!(queue = %cfg.queue, prefetch = cfg.prefetch, "consuming from the message queue");
    let permits = Arc::new(Semaphore::new(cfg.concurrency));
    let acks = Arc::new(Mutex::new(AckRuns::default()));
    loop {
        let next = tokio::select! {
            _ = ctx.shutdown.cancelled() => {
                // Let in-flight deliveries finish their ack before the connection closes.
                let _ = permits.acquire_many(cfg.concurrency as u32).await;
                let _ = conn.close(200, "push server shutting down".into()).await;
                return Ok(());
            }
            d = consumer.next() => d,
        };
        let delivery = match next {
            None => return Err(IngestError::Ended),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(d)) => d,
        };
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| IngestError::Ended)?;
        acks.lock().await.delivered(delivery.delivery_tag);
        let (ctx, ch, cfg, acks) = (ctx.clone(), ch.clone(), cfg.clone(), acks.clone());
        tokio::spawn(async move {
            let tag = delivery.delivery_tag;
            let accepted = handle(&ctx, &ch, &cfg, delivery).await;
            finish(&ch, &acks, tag, accepted).await;
            drop(permit);
        });
    }
}

/// Parses a queue message into a publish, or says why it can never be valid.
pub(crate) fn parse(
    body: &[u8],
    message_id: Option<&str>,
    max_message_len: usize,
) -> Result<(crate::delivery::Target, crate::delivery::Message), String> {
    let mut req: PushRequest =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    if req.id.is_none() {
        req.id = message_id.map(str::to_string);
    }
    validate(req, max_message_len).map_err(|inv| format!("{}: {}", inv.field, inv.reason))
}

/// Publishes a queue message, traced under its `traceparent` header when tracing is on.
async fn publish_traced(
    ctx: &Ctx,
    delivery: &Delivery,
    target: &crate::delivery::Target,
    mut msg: crate::delivery::Message,
) -> Result<Vec<crate::delivery::Accepted>, DeliveryError> {
    let span = ctx.stats.tracer.as_ref().and_then(|t| {
        let headers = delivery.properties.headers().as_ref();
        let parent = headers.and_then(|h| match h.inner().get("traceparent") {
            Some(AMQPValue::LongString(s)) => std::str::from_utf8(s.as_bytes()).ok(),
            _ => None,
        });
        t.accept("amqp", parent)
    });
    msg.trace = span.as_ref().map(crate::trace::AcceptSpan::context);
    let result = ctx.delivery.publish(target, msg).await;
    if let Some(span) = span {
        span.finish(result.as_deref().map_err(ToString::to_string));
    }
    result
}

/// Ends delivery `tag`'s handling: acknowledges the run of accepted deliveries it completes.
/// The lock is held across the ack so that runs reach the broker in order.
async fn finish(ch: &Channel, acks: &Mutex<AckRuns>, tag: u64, accepted: bool) {
    let mut runs = acks.lock().await;
    if let Some(last) = runs.resolved(tag, accepted) {
        if let Err(e) = ch.basic_ack(last, BasicAckOptions { multiple: true }).await {
            // The broker will redeliver; idempotency absorbs the repeat.
            tracing::warn!("ack to the message queue failed: {e}");
        }
    }
}

/// Handles one delivery. True when it was accepted (its ack is left to the run); a
/// dead-lettered or requeued one is acknowledged or rejected here, by its own tag.
async fn handle(ctx: &Ctx, ch: &Channel, cfg: &AmqpConfig, delivery: Delivery) -> bool {
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|s| s.to_string());
    let parsed = if delivery.data.len() > ctx.config.max_api_body {
        Err(format!(
            "message of {} bytes exceeds the {} byte limit",
            delivery.data.len(),
            ctx.config.max_api_body
        ))
    } else {
        parse(
            &delivery.data,
            message_id.as_deref(),
            ctx.config.max_message_len,
        )
    };
    let outcome = match parsed {
        Err(reason) => Err(reason),
        Ok((target, msg)) => match publish_traced(ctx, &delivery, &target, msg).await {
            Ok(accepted) => Ok(accepted.first().is_some_and(|a| a.duplicate)),
            Err(DeliveryError::Encode(reason)) => Err(reason),
            Err(temporary) => {
                ctx.stats.inc(&ctx.stats.ingest_requeued);
                tracing::warn!("queue message not accepted yet ({temporary}); requeueing");
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await;
                return false;
            }
        },
    };
    match outcome {
        Ok(duplicate) => {
            let counter = if duplicate {
                &ctx.stats.ingest_duplicates
            } else {
                &ctx.stats.ingest_accepted
            };
            ctx.stats.inc(counter);
            true
        }
        Err(reason) => {
            ctx.stats.inc(&ctx.stats.ingest_dead_lettered);
            tracing::warn!(%reason, "queue message dead-lettered");
            let mut headers = delivery.properties.headers().clone().unwrap_or_default();
            headers.insert(
                ShortString::from("x-push-reason"),
                AMQPValue::LongString(LongString::from(reason.as_str())),
            );
            let props = BasicProperties::default().with_headers(headers);
            let published = ch
                .basic_publish(
                    cfg.dead_letter_exchange.as_str().into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    &delivery.data,
                    props,
                )
                .await;
            match published {
                Ok(_) => {
                    let _ = delivery.ack(BasicAckOptions::default()).await;
                }
                Err(e) => {
                    tracing::warn!("dead-lettering failed ({e}); requeueing");
                    let _ = delivery
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        })
                        .await;
                }
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_messages_use_the_api_schema_and_message_id() {
        let (_, m) = parse(
            br#"{"to":{"users":["a"]},"kind":"alarm","title":"t","content":"c"}"#,
            Some("amqp-id-1"),
            1024,
        )
        .unwrap();
        assert_eq!(m.key.as_deref(), Some("amqp-id-1"));
        assert!(parse(b"not json", None, 1024)
            .unwrap_err()
            .contains("invalid JSON"));
        let e = parse(
            br#"{"to":{"planet":"mars"},"kind":"k","payload":"p"}"#,
            None,
            1024,
        )
        .unwrap_err();
        assert!(e.contains("planet"), "{e}");
    }
}
