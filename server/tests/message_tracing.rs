//! Message tracing (`[tracing]`): a publish's spans reach an in-process OTLP/HTTP receiver
//! with the right parent/child chain, in both encodings, within the configured limits.

mod common;

use common::otlp::{push_traced, Collector, Span};
use common::*;
use push_client::protocol::{Frame, Stream, StreamPos};
use push_client::Connection;
use push_server::config::OtlpProtocol;
use push_server::Config;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

/// Receives the next PUSH and acknowledges it on the user stream.
async fn receive_and_ack(c: &mut Connection) -> u64 {
    let p = expect_push(c.next_timeout(WAIT).await.unwrap());
    c.send(Frame::Ack(vec![StreamPos {
        stream: Stream::User,
        position: p.position,
    }]))
    .await
    .unwrap();
    p.position
}

#[tokio::test]
async fn a_user_push_is_traced_from_accept_to_each_devices_ack() {
    let mut collector = Collector::start().await;
    let server = start(collector.config(config(), |_| {})).await;
    let mut phone = connect(server.tcp_addr, "alice").await;
    let mut laptop = connect(server.tcp_addr, "alice").await;
    let body = r#"{"to":{"users":["alice"]},"kind":"k","payload":"p"}"#;
    // Neither of these is traced: no header (and no sampling of roots), and a caller that
    // decided not to sample.
    push_traced(&server, None, body).await;
    let unsampled = format!("00-{}-{CALLER}-00", "1".repeat(32));
    push_traced(&server, Some(&unsampled), body).await;
    for c in [&mut phone, &mut laptop] {
        assert_eq!(receive_and_ack(c).await, 1);
        assert_eq!(receive_and_ack(c).await, 2);
    }
    push_traced(&server, Some(&format!("00-{TRACE}-{CALLER}-01")), body).await;
    for c in [&mut phone, &mut laptop] {
        assert_eq!(receive_and_ack(c).await, 3);
    }
    // An ACK can come back before the accept span (which ends with the HTTP answer) is out.
    let count = |s: &[Span], name: &str| s.iter().filter(|s| s.name == name).count();
    let all = |s: &[Span]| count(s, "push.ack") == 2 && count(s, "push.accept") == 1;
    collector.until(WAIT, all).await;

    let accept = collector.one(TRACE, "push.accept");
    assert_eq!(accept.parent, CALLER, "the caller's span is the parent");
    assert_eq!(accept.attrs["push.source"], "http");
    assert_eq!(accept.attrs["push.streams"], "user:alice");
    assert_eq!(accept.attrs["push.queued"], "2");
    assert_eq!(accept.encoding, "application/x-protobuf");
    let commit = collector.one(TRACE, "push.commit");
    assert_eq!(commit.parent, accept.id);
    assert!(commit.start_ns <= commit.end_ns && commit.end_ns <= accept.end_ns);
    let fanout = collector.one(TRACE, "push.fanout");
    assert_eq!(fanout.parent, accept.id);
    assert_eq!(fanout.attrs["push.position"], "3");
    assert_eq!(fanout.attrs["push.queued"], "2");
    assert!(fanout.start_ns >= commit.end_ns, "fan-out after the commit");
    let writes = collector.named(TRACE, "push.write");
    assert_eq!(writes.len(), 2, "one write per device: {writes:#?}");
    let mut conns: Vec<&str> = writes.iter().map(|w| &w.attrs["push.conn"][..]).collect();
    conns.dedup();
    assert_eq!(conns.len(), 2);
    for w in &writes {
        assert_eq!(w.parent, fanout.id);
        assert_eq!(w.attrs["push.transport"], "tcp");
        let ack = collector
            .spans
            .iter()
            .find(|a| a.name == "push.ack" && a.parent == w.id)
            .expect("each write has its ack");
        assert_eq!(ack.trace, TRACE);
        assert_eq!(ack.attrs["push.conn"], w.attrs["push.conn"]);
        assert!(ack.start_ns >= w.end_ns);
    }

    server.shutdown();
    server.wait().await;
    collector.drain();
    let others: Vec<&Span> = collector
        .spans
        .iter()
        .filter(|s| s.trace != TRACE)
        .collect();
    assert!(
        others.is_empty(),
        "untraced publishes made spans: {others:#?}"
    );
}

#[tokio::test]
async fn sampled_roots_cap_write_spans_per_message_and_export_as_json() {
    let mut collector = Collector::start().await;
    let server = start(collector.config(config(), |t| {
        t.protocol = OtlpProtocol::Json;
        t.sample_ratio = 1.0;
        t.max_write_spans = 2;
    }))
    .await;
    let mut members = Vec::new();
    for i in 0..3 {
        let mut c = connect(server.tcp_addr, &format!("m{i}")).await;
        join(&mut c, "lobby").await;
        members.push(c);
    }
    push_traced(
        &server,
        None,
        r#"{"to":{"room":"lobby"},"kind":"k","payload":"p"}"#,
    )
    .await;
    push_traced(
        &server,
        None,
        r#"{"to":{"users":["m0"]},"kind":"k","payload":"now","transient":true}"#,
    )
    .await;
    for c in &mut members {
        expect_push(c.next_timeout(WAIT).await.unwrap());
    }
    expect_push(members[0].next_timeout(WAIT).await.unwrap());
    let node = format!(":{}", server.tcp_addr.port());
    server.shutdown();
    server.wait().await;
    collector.until(WAIT, |s| s.len() >= 7).await;
    collector.drain();

    let room = collector
        .spans
        .iter()
        .find(|s| s.name == "push.accept" && s.attrs["push.streams"] == "room:lobby")
        .expect("the room publish is traced")
        .clone();
    assert_eq!(room.parent, "", "a root: no traceparent came with it");
    assert_eq!(room.encoding, "application/json");
    assert!(room.instance.ends_with(&node), "{room:?}");
    let fanout = collector.one(&room.trace, "push.fanout");
    assert_eq!(fanout.parent, room.id);
    assert_eq!(fanout.attrs["push.queued"], "3", "all three members");
    let writes = collector.named(&room.trace, "push.write");
    assert_eq!(writes.len(), 2, "capped at max_write_spans");
    assert!(writes.iter().all(|w| w.parent == fanout.id));
    assert!(
        collector.named(&room.trace, "push.ack").is_empty(),
        "room streams are not acked"
    );

    let transient = collector
        .spans
        .iter()
        .find(|s| s.name == "push.accept" && s.attrs["push.streams"] == "user:m0")
        .expect("the transient publish is traced")
        .clone();
    assert!(
        collector.named(&transient.trace, "push.commit").is_empty(),
        "nothing to commit for a transient message"
    );
    let fanout = collector.one(&transient.trace, "push.fanout");
    assert_eq!(fanout.attrs["push.position"], "0");
    let write = collector.one(&transient.trace, "push.write");
    assert_eq!(write.parent, fanout.id);
}

#[tokio::test]
async fn a_queue_message_is_traced_under_its_traceparent_header() {
    use lapin::types::{AMQPValue, FieldTable, LongString};
    let Some(url) = amqp::url() else { return };
    let mut collector = Collector::start().await;
    let queue = amqp::config(&url, "traced");
    let base = Config {
        amqp: Some(queue.clone()),
        ..config()
    };
    let server = start(collector.config(base, |_| {})).await;
    let (conn, ch) = amqp::channel(&url).await;
    amqp::wait_for_queue(&conn, &queue.queue).await;
    let mut bob = connect(server.tcp_addr, "bob").await;
    let mut headers = FieldTable::default();
    let parent = format!("00-{TRACE}-{CALLER}-01");
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(LongString::from(parent.as_str())),
    );
    let props = lapin::BasicProperties::default().with_headers(headers);
    let body = br#"{"to":{"users":["bob"]},"kind":"k","payload":"from the queue"}"#;
    amqp::publish_props(&ch, &queue.queue, body, props).await;
    assert_eq!(receive_and_ack(&mut bob).await, 1);
    let has = |s: &[Span], name: &str| s.iter().any(|s| s.name == name);
    collector
        .until(WAIT, |s| has(s, "push.ack") && has(s, "push.accept"))
        .await;
    let accept = collector.one(TRACE, "push.accept");
    assert_eq!(accept.parent, CALLER);
    assert_eq!(accept.attrs["push.source"], "amqp");
    let fanout = collector.one(TRACE, "push.fanout");
    assert_eq!(fanout.parent, accept.id);
    let write = collector.one(TRACE, "push.write");
    assert_eq!(write.parent, fanout.id);
    assert_eq!(collector.one(TRACE, "push.ack").parent, write.id);
}
