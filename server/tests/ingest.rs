//! RabbitMQ ingestion against a real broker: accept then ack, idempotent redelivery, dead
//! letters with a reason.

mod common;

use common::*;
use push_client::protocol::{Frame, Stream};

#[tokio::test]
async fn queue_messages_are_delivered_acked_and_deduplicated() {
    let Some(amqp::Consuming {
        server,
        cfg,
        conn,
        ch,
        ..
    }) = amqp::consuming("accept").await
    else {
        return;
    };
    let queue = cfg.queue;
    let mut c = connect(server.tcp_addr, "q-user").await;
    let body = br#"{"to":{"users":["q-user"]},"kind":"password_changed","title":"Password changed","content":"Log in again","level":"warning"}"#;
    amqp::publish(&ch, &queue, body, Some("pw-change-7")).await;
    match c.next_timeout(WAIT).await.unwrap().frame {
        Frame::Push(p) => {
            assert_eq!(
                (p.stream, p.kind.as_str()),
                (Stream::User, "password_changed")
            )
        }
        other => panic!("{other:?}"),
    }
    // The same id again (a redelivery after a crash looks like this): acked, not delivered.
    amqp::publish(&ch, &queue, body, Some("pw-change-7")).await;
    let ctx = server.ctx.clone();
    eventually("both deliveries acked", || {
        push_server::stats::Stats::get(&ctx.stats.ingest_duplicates) == 1
    })
    .await;
    assert_eq!(
        amqp::depth(&conn, &queue).await,
        0,
        "nothing left unacked in the queue"
    );
    let page = server
        .ctx
        .delivery
        .history(&push_server::stream::StreamKey::user("q-user"), 0, 10)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1, "stored once");
    let (s, body) = http(server.http_addr, "GET", "/readyz", None, "").await;
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("connected"), "{body}");
}

#[tokio::test]
async fn invalid_messages_go_to_the_dead_letter_queue_with_a_reason() {
    let Some(amqp::Consuming {
        server,
        cfg,
        conn,
        ch,
        ..
    }) = amqp::consuming("invalid").await
    else {
        return;
    };
    let (queue, dlq) = (cfg.queue, cfg.dead_letter_queue);
    amqp::publish(&ch, &queue, b"{not json", None).await;
    amqp::publish(
        &ch,
        &queue,
        br#"{"to":{"room":"bad room"},"kind":"k","payload":"p"}"#,
        None,
    )
    .await;
    let mut reasons = Vec::new();
    for _ in 0..2 {
        let m = amqp::get(&ch, &dlq).await;
        let headers = m.delivery.properties.headers().clone().unwrap_or_default();
        let reason = match headers.inner().get("x-push-reason") {
            Some(lapin::types::AMQPValue::LongString(s)) => {
                String::from_utf8_lossy(s.as_bytes()).to_string()
            }
            other => panic!("x-push-reason header missing: {other:?}"),
        };
        reasons.push(reason);
    }
    assert!(
        reasons.iter().any(|r| r.contains("invalid JSON")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("to.room")), "{reasons:?}");
    assert_eq!(amqp::depth(&conn, &queue).await, 0, "not requeued forever");
    assert_eq!(
        push_server::stats::Stats::get(&server.ctx.stats.ingest_dead_lettered),
        2
    );
}
