//! Floods of valid frames from one authenticated client (issue 12): what the server queues for
//! its delivery engine stays bounded, the flooder is paused (and closed with RATE_LIMITED when
//! it keeps going), and a bystander keeps receiving in order throughout. The figures at scale
//! are `push-bench hostile --flood` (BENCHMARKS.md).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use push_client::protocol::{
    encode_to_bytes, EncodeOptions, ErrorCode, Frame, Hello, Join, Packet, PayloadFormat, Publish,
    Stream, StreamPos, MAX_VERSION, MIN_VERSION,
};
use push_client::{ClientError, Connection};
use push_server::stats::Stats;
use push_server::{Config, ServerHandle};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn wire(frames: impl IntoIterator<Item = Frame>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in frames.into_iter().enumerate() {
        let p = Packet::new(i as u32 + 2, f);
        out.extend_from_slice(&encode_to_bytes(&p, &EncodeOptions::default()).unwrap());
    }
    out
}

/// ACK of the user's stream at position 0: valid whatever the stream holds.
fn ack0() -> Frame {
    Frame::Ack(vec![StreamPos {
        stream: Stream::User,
        position: 0,
    }])
}

fn join(room: &str, resume_after: Option<u64>) -> Frame {
    Frame::Join(Join {
        room: room.into(),
        resume_after,
    })
}

fn queued_max(server: &ServerHandle) -> u64 {
    Stats::get(&server.ctx.stats.engine_queued_max)
}

/// Opens a raw authenticated socket whose replies are read and thrown away, and writes
/// `chunk` to it over and over until `stop` is set.
async fn flood_until(server: &ServerHandle, user: &str, chunk: Vec<u8>, stop: Arc<AtomicBool>) {
    let s = TcpStream::connect(server.tcp_addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let (mut r, mut w) = s.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut r, &mut tokio::io::sink()).await;
    });
    let hello = Frame::Hello(Hello {
        min_version: MIN_VERSION,
        max_version: MAX_VERSION,
        token: token(user),
        device: String::new(),
        resume: vec![],
        options: Default::default(),
    });
    let hello = encode_to_bytes(&Packet::new(1, hello), &EncodeOptions::default()).unwrap();
    w.write_all(&hello).await.unwrap();
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            if w.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
}

async fn push_room(server: &ServerHandle, room: &str, n: usize) {
    for i in 0..n {
        let body = json!({"to": {"room": room}, "kind": "k", "payload": format!("r{i}")});
        assert_eq!(push(server, &body.to_string()).await.0, 200);
    }
}

/// A connection of `user` that has joined `room`.
async fn member_of(server: &ServerHandle, user: &str, room: &str) -> Connection {
    let mut c = connect(server.tcp_addr, user).await;
    let seq = c.send(join(room, None)).await.unwrap();
    assert_eq!(until_reply(&mut c, seq).await.0, Frame::Ok(Some(0)));
    c
}

/// Reads until the reply to `seq`; returns it with the PUSH frames that came before it.
async fn until_reply(c: &mut Connection, seq: u32) -> (Frame, usize) {
    let mut pushes = 0;
    loop {
        let p = c.next_timeout(WAIT).await.expect("a reply");
        match p.frame {
            Frame::Push(_) => pushes += 1,
            f if p.seq == seq => return (f, pushes),
            _ => {}
        }
    }
}

#[tokio::test]
async fn an_ack_flood_is_coalesced_and_bounded_and_the_bystander_is_served() {
    let server = start(Config {
        max_frames_per_sec: 0,
        max_requests_in_flight: 4,
        ..config()
    })
    .await;
    let mut b = bystander(&server).await;
    let stop = Arc::new(AtomicBool::new(false));
    flood_until(
        &server,
        "acker",
        wire((0..20_000).map(|_| ack0())),
        stop.clone(),
    )
    .await;
    until("the flood to reach the server", async || {
        Stats::get(&server.ctx.stats.frames_in) > 200_000
    })
    .await;
    for n in 1..=20 {
        still_served(&server, &mut b, n).await;
    }
    stop.store(true, Ordering::Relaxed);
    // One ACK request per read at most, at most the in-flight limit (+1) per connection; each
    // ACK frame its own request (the defect) would queue thousands.
    let max = queued_max(&server);
    assert!(max <= 16, "engine queue reached {max}");
}

#[tokio::test]
async fn a_connection_over_the_frame_rate_is_paused_and_resumes() {
    let server = start(Config {
        max_frames_per_sec: 100,
        rate_limit_close_after_sec: 10,
        ..config()
    })
    .await;
    let mut c = connect(server.tcp_addr, "eager").await;
    // 250 frames: over the limit in this window and the next; the JOIN behind them is
    // answered once the pauses are over, and the connection stays open.
    let mut frames: Vec<Frame> = (0..250).map(|_| ack0()).collect();
    frames.push(join("after-the-pause", None));
    let join_seq = frames.len() as u32 + 1;
    c.send_raw(&wire(frames)).await.unwrap();
    let (reply, _) = until_reply(&mut c, join_seq).await;
    assert_eq!(reply, Frame::Ok(Some(0)));
    assert!(Stats::get(&server.ctx.stats.paused_for_rate) >= 2);
    assert_eq!(Stats::get(&server.ctx.stats.rate_limited_closes), 0);
    assert_eq!(server.ctx.hub.room_size("after-the-pause"), 1);
}

#[tokio::test]
async fn a_connection_that_stays_over_the_rate_is_closed_with_rate_limited() {
    let server = start(Config {
        max_frames_per_sec: 100,
        rate_limit_close_after_sec: 2,
        ..config()
    })
    .await;
    let mut b = bystander(&server).await;
    let mut c = connect(server.tcp_addr, "flooder").await;
    c.send_raw(&wire((0..1000).map(|_| ack0()))).await.unwrap();
    let (code, reason) = loop {
        match c.next_timeout(WAIT).await {
            Ok(_) => continue,
            Err(ClientError::Closed { code, reason, .. }) => break (code, reason),
            Err(e) => panic!("connection ended without CLOSE: {e}"),
        }
    };
    assert_eq!(code, ErrorCode::RATE_LIMITED);
    assert!(reason.contains("rate limit"), "{reason}");
    assert_eq!(Stats::get(&server.ctx.stats.rate_limited_closes), 1);
    let (_, metrics) = http(server.http_addr, "GET", "/metrics", None, "").await;
    assert!(
        metrics.contains("push_rate_limited_total{kind=\"connection\"} 1\n"),
        "{metrics}"
    );
    let paused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("push_inbound_paused_total{reason=\"rate\"} "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap();
    assert!(paused >= 1, "{paused}");
    still_served(&server, &mut b, 1).await;
}

#[tokio::test]
async fn a_join_for_a_room_already_joined_does_not_replay_again() {
    let server = start(Config {
        max_room_ops_per_sec: 0,
        ..config()
    })
    .await;
    push_room(&server, "big", 30).await;
    let mut b = bystander(&server).await;
    let mut c = connect(server.tcp_addr, "joiner").await;
    let seq = c.send(join("big", Some(0))).await.unwrap();
    assert_eq!(until_reply(&mut c, seq).await, (Frame::Ok(Some(30)), 30));
    let seq = c.send(join("big", Some(0))).await.unwrap();
    assert_eq!(until_reply(&mut c, seq).await, (Frame::Ok(Some(30)), 0));
    // A flood of the same JOIN costs one OK each and no replay.
    let frames: Vec<Frame> = (0..500).map(|_| join("big", Some(0))).collect();
    c.send_raw(&wire(frames)).await.unwrap();
    let mut pushes = 0;
    let mut oks = 0;
    loop {
        let p = c.next_timeout(WAIT).await.expect("OK for every JOIN");
        match p.frame {
            Frame::Push(_) => pushes += 1,
            Frame::Ok(Some(30)) => oks += 1,
            other => panic!("unexpected {other:?}"),
        }
        // PUSH carries a server-chosen Sequence; only a reply echoes ours.
        if oks == 500 {
            break;
        }
    }
    assert_eq!((oks, pushes), (500, 0));
    still_served(&server, &mut b, 1).await;
}

#[tokio::test]
async fn leave_join_churn_is_paused_by_the_room_operation_limit() {
    let server = start(Config {
        max_room_ops_per_sec: 10,
        rate_limit_close_after_sec: 15,
        ..config()
    })
    .await;
    push_room(&server, "churn", 5).await;
    let mut b = bystander(&server).await;
    let mut c = connect(server.tcp_addr, "churner").await;
    let mut frames = Vec::new();
    for _ in 0..12 {
        frames.push(join("churn", Some(0)));
        frames.push(Frame::Leave("churn".into()));
    }
    c.send_raw(&wire(frames)).await.unwrap();
    let mut replies = 0;
    let mut pushes = 0;
    loop {
        let p = c.next_timeout(WAIT).await.expect("every request answered");
        match p.frame {
            Frame::Push(_) => pushes += 1,
            Frame::Ok(_) => replies += 1,
            other => panic!("unexpected {other:?}"),
        }
        if replies == 24 {
            break;
        }
    }
    // Every request is answered, but at 10 per second the 24 take three windows.
    assert_eq!((replies, pushes), (24, 12 * 5));
    assert!(Stats::get(&server.ctx.stats.paused_for_rate) >= 2);
    still_served(&server, &mut b, 1).await;
}

fn publish(room: &str, i: usize) -> Frame {
    Frame::Publish(Publish {
        room: room.into(),
        key: String::new(),
        kind: "k".into(),
        format: PayloadFormat::OPAQUE,
        payload: Bytes::from(format!("p{i}")),
        transient: false,
    })
}

#[tokio::test]
async fn a_publish_flood_is_paced_by_the_in_flight_limit_and_loses_nothing() {
    let server = start(Config {
        allow_client_publish: true,
        max_requests_in_flight: 4,
        ..config()
    })
    .await;
    let mut member = member_of(&server, "member", "chat").await;
    let mut c = member_of(&server, "publisher", "chat").await;
    let n = 500;
    let mut frames = vec![];
    for i in 0..n {
        frames.push(publish("chat", i));
    }
    // Sequence numbers 2..=n+1; the publisher's JOIN used 2 already, which is fine: replies
    // are matched by kind here.
    c.send_raw(&wire(frames)).await.unwrap();
    let mut acks = 0;
    while acks < n {
        let p = c
            .next_timeout(WAIT)
            .await
            .expect("a PUBLISH_ACK for every PUBLISH");
        match p.frame {
            Frame::PublishAck(_) => acks += 1,
            Frame::Push(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    for position in 1..=n as u64 {
        let p = member.next_timeout(WAIT).await.unwrap();
        let Frame::Push(push) = p.frame else {
            panic!("{p:?}")
        };
        assert_eq!(push.position, position);
    }
    let max = queued_max(&server);
    assert!(max <= 16, "engine queue reached {max}");
}

#[tokio::test]
async fn client_publishes_count_against_max_pending_publishes() {
    let server = start(Config {
        allow_client_publish: true,
        max_pending_publishes: 1,
        ..config()
    })
    .await;
    let mut c = member_of(&server, "publisher", "chat").await;
    let n = 200;
    c.send_raw(&wire((0..n).map(|i| publish("chat", i))))
        .await
        .unwrap();
    let (mut acked, mut refused) = (0, 0);
    while acked + refused < n {
        let p = c
            .next_timeout(WAIT)
            .await
            .expect("an answer to every PUBLISH");
        match p.frame {
            Frame::PublishAck(_) => acked += 1,
            Frame::Error(e) => {
                assert_eq!(e.code, ErrorCode::STORAGE_UNAVAILABLE);
                assert!(e.reason.contains("too many publishes"), "{}", e.reason);
                refused += 1;
            }
            _ => {}
        }
    }
    assert!(
        acked >= 1 && refused >= 1,
        "acked {acked}, refused {refused}"
    );
    assert_eq!(Stats::get(&server.ctx.stats.failed_by[1]), refused as u64);
}

#[tokio::test]
async fn publishes_over_their_own_rate_are_paced_and_all_answered() {
    let server = start(Config {
        allow_client_publish: true,
        max_publishes_per_sec: 50,
        ..config()
    })
    .await;
    let mut c = member_of(&server, "chatty", "chat").await;
    // 5 per 100 ms slice: 30 take six slices, each PUBLISH answered, none refused.
    c.send_raw(&wire((0..30).map(|i| publish("chat", i))))
        .await
        .unwrap();
    let mut acks = 0;
    while acks < 30 {
        match c.next_timeout(WAIT).await.expect("an answer").frame {
            Frame::PublishAck(_) => acks += 1,
            Frame::Push(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(Stats::get(&server.ctx.stats.paused_for_rate) >= 5);
    assert_eq!(Stats::get(&server.ctx.stats.rate_limited_closes), 0);
}

/// JOIN, LEAVE and PUBLISH take effect in the order a connection sent them, even pipelined in
/// one write (the membership check for PUBLISH happens in order with the JOIN and LEAVE).
#[tokio::test]
async fn pipelined_room_requests_take_effect_in_order() {
    let server = start(Config {
        allow_client_publish: true,
        ..config()
    })
    .await;
    let mut c = connect(server.tcp_addr, "orderly").await;
    // Sequences 2..=5: JOIN, PUBLISH (accepted), LEAVE, PUBLISH (refused).
    let frames = vec![
        join("ordered", None),
        publish("ordered", 1),
        Frame::Leave("ordered".into()),
        publish("ordered", 2),
    ];
    c.send_raw(&wire(frames)).await.unwrap();
    let mut replies = Vec::new();
    while replies.len() < 4 {
        let p = c.next_timeout(WAIT).await.expect("every request answered");
        match p.frame {
            Frame::Push(_) => {}
            f => replies.push((p.seq, f)),
        }
    }
    // A PUBLISH_ACK waits for the commit, so it may arrive after later replies.
    replies.sort_by_key(|(seq, _)| *seq);
    assert_eq!(replies[0], (2, Frame::Ok(Some(0))));
    assert!(
        matches!(replies[1], (3, Frame::PublishAck(_))),
        "{replies:?}"
    );
    assert_eq!(replies[2], (4, Frame::Ok(None)));
    assert!(
        matches!(&replies[3], (5, Frame::Error(e)) if e.code == ErrorCode::FORBIDDEN),
        "{replies:?}"
    );
    assert_eq!(server.ctx.hub.room_size("ordered"), 0);
}
