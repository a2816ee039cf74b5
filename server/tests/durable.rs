//! Durable delivery against a real server: persist first, replay in order, acks, retries and
//! failed state, idempotency, room resume and retention, restart, bounded disk, history.
//! Every scenario runs on both storage backends.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use push_client::protocol::{Frame, Join, PayloadFormat, Stream, StreamPos};
use push_client::{ConnectOptions, Connection};
use push_server::clock::ManualClock;
use push_server::delivery::{Message, Target};
use push_server::store::Backend;
use push_server::stream::StreamKey;
use push_server::Config;

const BACKENDS: [Backend; 2] = [Backend::Sled, Backend::Redb];
/// For scenarios that never restart the server: the in-memory store must behave the same.
const ALL_STORES: [Backend; 3] = [Backend::Sled, Backend::Redb, Backend::Memory];
/// Far beyond any interval the tests configure, so whatever is scheduled is due after it.
const LATER: Duration = Duration::from_secs(3600);

fn cfg(backend: Backend) -> Config {
    Config {
        store: backend,
        ..config()
    }
}

fn msg(text: &str) -> Message {
    Message {
        key: None,
        kind: "t".into(),
        format: PayloadFormat::OPAQUE,
        payload: Bytes::from(text.to_string()),
        ttl_ms: None,
        high_priority: false,
        transient: false,
        trace: None,
    }
}

fn keyed(text: &str, key: &str) -> Message {
    Message {
        key: Some(key.into()),
        ..msg(text)
    }
}

async fn connect_resume(
    addr: std::net::SocketAddr,
    user: &str,
    resume: Vec<StreamPos>,
) -> Connection {
    Connection::connect(
        addr,
        &ConnectOptions {
            token: token(user),
            resume,
            ..ConnectOptions::default()
        },
    )
    .await
    .unwrap()
}

async fn ack(c: &mut Connection, stream: Stream, position: u64) {
    c.send(Frame::Ack(vec![StreamPos { stream, position }]))
        .await
        .unwrap();
}

#[tokio::test]
async fn offline_user_gets_everything_in_order_and_acked_messages_are_not_redelivered() {
    for backend in BACKENDS {
        let server = start(cfg(backend)).await;
        for i in 1..=20 {
            let a = server
                .ctx
                .delivery
                .publish(&Target::Users(vec!["carol".into()]), msg(&format!("m{i}")))
                .await
                .unwrap();
            assert_eq!((a[0].position, a[0].queued), (i, 0), "{backend:?}");
        }
        let mut c = connect(server.tcp_addr, "carol").await;
        for i in 1..=20u64 {
            let p = expect_push(c.next_timeout(WAIT).await.unwrap());
            assert_eq!(
                (p.position, &p.payload[..]),
                (i, format!("m{i}").as_bytes())
            );
        }
        ack(&mut c, Stream::User, 15).await;
        // Acks are processed in order with the next request; a JOIN round trip proves it.
        c.request(Frame::Join(Join {
            room: "x".into(),
            resume_after: None,
        }))
        .await
        .unwrap();
        c.close().await.unwrap();
        let mut c = connect(server.tcp_addr, "carol").await;
        for i in 16..=20u64 {
            assert_eq!(
                expect_push(c.next_timeout(WAIT).await.unwrap()).position,
                i,
                "{backend:?}"
            );
        }
        // Nothing else: the next frame is the reply to this request.
        let (reply, others) = c
            .request(Frame::Join(Join {
                room: "x".into(),
                resume_after: None,
            }))
            .await
            .unwrap();
        assert!(others.is_empty(), "{backend:?}: {others:?}");
        assert!(matches!(reply.frame, Frame::Ok(_)));
    }
}

#[tokio::test]
async fn a_client_that_reports_progress_in_hello_is_not_sent_it_again() {
    let server = start(cfg(Backend::Redb)).await;
    for i in 1..=5 {
        server
            .ctx
            .delivery
            .publish(&Target::Users(vec!["dan".into()]), msg(&format!("m{i}")))
            .await
            .unwrap();
    }
    let mut c = connect_resume(
        server.tcp_addr,
        "dan",
        vec![StreamPos {
            stream: Stream::User,
            position: 3,
        }],
    )
    .await;
    assert_eq!(expect_push(c.next_timeout(WAIT).await.unwrap()).position, 4);
    assert_eq!(expect_push(c.next_timeout(WAIT).await.unwrap()).position, 5);
}

#[tokio::test]
async fn unacked_messages_are_retried_then_failed_then_delivered_on_reconnect() {
    for backend in ALL_STORES {
        let (server, clock) = start_clocked(Config {
            retry_interval_ms: 50,
            max_retries: 2,
            ..cfg(backend)
        })
        .await;
        let mut c = connect(server.tcp_addr, "erin").await;
        let a = server
            .ctx
            .delivery
            .publish(&Target::Users(vec!["erin".into()]), msg("important"))
            .await
            .unwrap();
        let first = expect_push(c.next_timeout(WAIT).await.unwrap());
        assert_eq!(first.id, a[0].id);
        // Never acked: the same message comes again (retries 1 and 2).
        for _ in 0..2 {
            pass(&server, &clock, LATER).await;
            let again = expect_push(c.next_timeout(WAIT).await.unwrap());
            assert_eq!(
                (again.id, again.position),
                (first.id, first.position),
                "{backend:?}"
            );
        }
        // Then it is marked failed, as the history API shows.
        pass(&server, &clock, LATER).await;
        let v = user_history(server.http_addr, "erin", "").await;
        assert_eq!(v["messages"][0]["state"], "failed", "{backend:?}");
        assert!(v["messages"][0]["retries"].as_u64().unwrap() >= 2);
        drop(c);
        // Failed messages are still delivered on the next connect.
        let mut c = connect(server.tcp_addr, "erin").await;
        let p = expect_push(c.next_timeout(WAIT).await.unwrap());
        assert_eq!(p.id, first.id);
        ack(&mut c, Stream::User, p.position).await;
    }
}

#[tokio::test]
async fn duplicate_publishes_are_stored_and_delivered_once_even_across_restarts() {
    for backend in BACKENDS {
        let dir = data_dir();
        let server = start(Config {
            data_dir: dir.clone(),
            ..cfg(backend)
        })
        .await;
        let mut c = connect(server.tcp_addr, "finn").await;
        let a = server
            .ctx
            .delivery
            .publish(
                &Target::Users(vec!["finn".into()]),
                keyed("once", "order-42"),
            )
            .await
            .unwrap();
        let b = server
            .ctx
            .delivery
            .publish(
                &Target::Users(vec!["finn".into()]),
                keyed("once", "order-42"),
            )
            .await
            .unwrap();
        assert!(!a[0].duplicate && b[0].duplicate);
        assert_eq!((a[0].id, a[0].position), (b[0].id, b[0].position));
        assert_eq!(expect_push(c.next_timeout(WAIT).await.unwrap()).id, a[0].id);
        drop(c);
        server.shutdown();
        // The data directory stays until the end of the test: the restart reuses it.
        let _data = server.wait().await;
        // After a restart the key is still known.
        let server = start(Config {
            data_dir: dir,
            ..cfg(backend)
        })
        .await;
        let again = server
            .ctx
            .delivery
            .publish(
                &Target::Users(vec!["finn".into()]),
                keyed("once", "order-42"),
            )
            .await
            .unwrap();
        assert!(again[0].duplicate, "{backend:?}");
        assert_eq!(again[0].id, a[0].id);
        let fresh = server
            .ctx
            .delivery
            .publish(&Target::Users(vec!["finn".into()]), msg("new"))
            .await
            .unwrap();
        assert_eq!(fresh[0].position, 2, "positions continue after a restart");
    }
}

/// A server keeping 5 messages per room (compaction due every 20 ms of its clock), with
/// `count` messages published to `room`.
async fn retained_room(
    backend: Backend,
    room: &str,
    count: usize,
) -> (TestServer, Arc<ManualClock>) {
    let (server, clock) = start_clocked(Config {
        room_retention_count: 5,
        compaction_interval_ms: 20,
        ..cfg(backend)
    })
    .await;
    for i in 1..=count {
        server
            .ctx
            .delivery
            .publish(&Target::Room(room.into()), msg(&format!("m{i}")))
            .await
            .unwrap();
    }
    (server, clock)
}

#[tokio::test]
async fn room_resume_within_and_beyond_retention() {
    for backend in ALL_STORES {
        let (server, clock) = retained_room(backend, "r", 10).await;
        // Compaction applies the retention.
        pass(&server, &clock, LATER).await;
        let page = server
            .ctx
            .delivery
            .history(&StreamKey::room("r"), 0, 100)
            .await
            .unwrap();
        assert_eq!(
            page.first_retained, 6,
            "{backend:?}: room retention applied"
        );
        let mut c = connect(server.tcp_addr, "gus").await;
        // Within retention: exactly what follows, no gap.
        let (ok, others) = c
            .request(Frame::Join(Join {
                room: "r".into(),
                resume_after: Some(7),
            }))
            .await
            .unwrap();
        assert_eq!(ok.frame, Frame::Ok(Some(10)));
        let got: Vec<u64> = others
            .into_iter()
            .map(|p| expect_push(p).position)
            .collect();
        assert_eq!(got, vec![8, 9, 10]);
        c.request(Frame::Leave("r".into())).await.unwrap();
        // Beyond retention: told explicitly, then what is left.
        let (_, others) = c
            .request(Frame::Join(Join {
                room: "r".into(),
                resume_after: Some(2),
            }))
            .await
            .unwrap();
        match &others[0].frame {
            Frame::Gap(g) => {
                assert_eq!(
                    (g.requested_after, g.first_available),
                    (2, 6),
                    "{backend:?}"
                )
            }
            other => panic!("expected GAP, got {other:?}"),
        }
        let got: Vec<u64> = others[1..]
            .iter()
            .map(|p| expect_push(p.clone()).position)
            .collect();
        assert_eq!(got, vec![6, 7, 8, 9, 10]);
    }
}

#[tokio::test]
async fn acknowledged_messages_survive_a_restart_and_are_replayed() {
    for backend in BACKENDS {
        let dir = data_dir();
        let server = start(Config {
            data_dir: dir.clone(),
            ..cfg(backend)
        })
        .await;
        let (status, body) = push(
            &server,
            r#"{"to":{"users":["hana"]},"kind":"alarm","title":"T","content":"C","level":"error"}"#,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        server.shutdown();
        // The data directory stays until the end of the test: the restart reuses it.
        let _data = server.wait().await;
        let server = start(Config {
            data_dir: dir,
            ..cfg(backend)
        })
        .await;
        let mut c = connect(server.tcp_addr, "hana").await;
        let p = expect_push(c.next_timeout(WAIT).await.unwrap());
        assert_eq!(
            p.id.to_string(),
            body["accepted"][0]["id"].as_str().unwrap()
        );
        assert_eq!(p.format, PayloadFormat::NOTICE);
    }
}

#[tokio::test]
async fn acks_for_positions_never_sent_are_refused() {
    let server = start(cfg(Backend::Redb)).await;
    let mut c = connect(server.tcp_addr, "ivy").await;
    let seq = c
        .send(Frame::Ack(vec![StreamPos {
            stream: Stream::User,
            position: 99,
        }]))
        .await
        .unwrap();
    let p = c.next_timeout(WAIT).await.unwrap();
    assert_eq!(p.seq, seq);
    match p.frame {
        Frame::Error(e) => assert_eq!(e.code, push_client::protocol::ErrorCode::INVALID_ACK),
        other => panic!("{other:?}"),
    }
    let page = server
        .ctx
        .delivery
        .history(&StreamKey::user("ivy"), 0, 10)
        .await
        .unwrap();
    assert_eq!(page.acked, 0, "nothing changed");
}

#[tokio::test]
async fn disk_use_stays_bounded_under_steady_publish_and_ack() {
    for backend in BACKENDS {
        let dir = data_dir();
        let (server, clock) = start_clocked(Config {
            data_dir: dir.clone(),
            compaction_interval_ms: 20,
            room_retention_count: 50,
            ..cfg(backend)
        })
        .await;
        let mut c = connect(server.tcp_addr, "jo").await;
        c.request(Frame::Join(Join {
            room: "steady".into(),
            resume_after: None,
        }))
        .await
        .unwrap();
        let payload = "x".repeat(2000);
        let mut sizes = Vec::new();
        for round in 0..10 {
            for _ in 0..100 {
                server
                    .ctx
                    .delivery
                    .publish(&Target::Users(vec!["jo".into()]), msg(&payload))
                    .await
                    .unwrap();
                server
                    .ctx
                    .delivery
                    .publish(&Target::Room("steady".into()), msg(&payload))
                    .await
                    .unwrap();
            }
            let mut last = 0;
            for _ in 0..200 {
                let p = expect_push(c.next_timeout(WAIT).await.unwrap());
                if p.stream == Stream::User {
                    last = p.position;
                }
            }
            ack(&mut c, Stream::User, last).await;
            until("the ack is applied", async || {
                let jo = StreamKey::user("jo");
                let page = server.ctx.delivery.history(&jo, 0, 1).await;
                page.unwrap().acked == last
            })
            .await;
            pass(&server, &clock, LATER).await;
            sizes.push(push_server::store::disk_usage(&dir));
            let _ = round;
        }
        let page = server
            .ctx
            .delivery
            .history(&StreamKey::user("jo"), 0, 10)
            .await
            .unwrap();
        assert_eq!(page.acked, 1000);
        assert!(
            page.first_retained > 900,
            "{backend:?}: acked messages compacted"
        );
        // 2,000 messages of 2 KB went through; the store must not grow with them.
        let early = sizes[3];
        let late = *sizes.last().unwrap();
        eprintln!("{backend:?} disk use per round: {sizes:?}");
        assert!(
            late <= early * 2 + 1024 * 1024,
            "{backend:?}: disk grew from {early} to {late} bytes"
        );
    }
}

#[tokio::test]
async fn a_backlog_larger_than_the_queue_is_replayed_in_steps_without_reordering() {
    for backend in BACKENDS {
        let server = start(Config {
            queue_max_frames: 64,
            ..cfg(backend)
        })
        .await;
        for i in 1..=500 {
            server
                .ctx
                .delivery
                .publish(&Target::Users(vec!["kai".into()]), msg(&format!("m{i}")))
                .await
                .unwrap();
        }
        let mut c = connect(server.tcp_addr, "kai").await;
        // Live messages published while the replay is under way must not overtake it.
        let delivery = server.ctx.delivery.clone();
        let live = tokio::spawn(async move {
            for i in 501..=600 {
                delivery
                    .publish(&Target::Users(vec!["kai".into()]), msg(&format!("m{i}")))
                    .await
                    .unwrap();
            }
        });
        for i in 1..=600u64 {
            let p = expect_push(c.next_timeout(WAIT).await.unwrap());
            assert_eq!(p.position, i, "{backend:?}");
        }
        live.await.unwrap();
        assert_eq!(
            server.ctx.hub.user_connections("kai").len(),
            1,
            "never dropped as a slow consumer"
        );
    }
}

#[tokio::test]
async fn expired_messages_are_not_replayed() {
    let (server, clock) = start_clocked(cfg(Backend::Redb)).await;
    let (s, body) = push(
        &server,
        r#"{"to":{"users":["tess"]},"kind":"otp","payload":"code 1234","ttl_seconds":1}"#,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (s, _) = push(
        &server,
        r#"{"to":{"users":["tess"]},"kind":"news","payload":"kept"}"#,
    )
    .await;
    assert_eq!(s, 200);
    // Let the one-second TTL run out while the user is offline.
    clock.advance(Duration::from_millis(1200));
    let mut c = connect(server.tcp_addr, "tess").await;
    let p = expect_push(c.next_timeout(WAIT).await.unwrap());
    assert_eq!((p.position, &p.payload[..]), (2, &b"kept"[..]));
    let v = user_history(server.http_addr, "tess", "").await;
    assert_eq!(v["messages"][0]["state"], "expired", "{v}");
    let (s, body) = push(
        &server,
        r#"{"to":{"users":["tess"]},"kind":"k","payload":"p","ttl_seconds":0}"#,
    )
    .await;
    assert_eq!((s, body["field"].as_str()), (400, Some("ttl_seconds")));
}

#[tokio::test]
async fn broadcast_resumes_from_the_position_given_in_hello() {
    let (server, clock) = start_clocked(Config {
        room_retention_count: 3,
        compaction_interval_ms: 20,
        ..cfg(Backend::Sled)
    })
    .await;
    for i in 1..=6 {
        server
            .ctx
            .delivery
            .publish(&Target::Broadcast, msg(&format!("b{i}")))
            .await
            .unwrap();
    }
    // Within retention: positions after 4.
    let mut c = connect_resume(
        server.tcp_addr,
        "liv",
        vec![StreamPos {
            stream: Stream::Broadcast,
            position: 4,
        }],
    )
    .await;
    for want in [5, 6] {
        let p = expect_push(c.next_timeout(WAIT).await.unwrap());
        assert_eq!((p.stream, p.position), (Stream::Broadcast, want));
    }
    drop(c);
    // Retention (3 messages) drops positions 1..=3.
    pass(&server, &clock, LATER).await;
    let page = server
        .ctx
        .delivery
        .history(&StreamKey::Broadcast, 0, 10)
        .await;
    assert_eq!(
        page.unwrap().first_retained,
        4,
        "broadcast retention applied"
    );
    let mut c = connect_resume(
        server.tcp_addr,
        "liv",
        vec![StreamPos {
            stream: Stream::Broadcast,
            position: 1,
        }],
    )
    .await;
    match c.next_timeout(WAIT).await.unwrap().frame {
        Frame::Gap(g) => assert_eq!(
            (g.stream, g.requested_after, g.first_available),
            (Stream::Broadcast, 1, 4)
        ),
        other => panic!("expected GAP, got {other:?}"),
    }
    for want in [4, 5, 6] {
        assert_eq!(
            expect_push(c.next_timeout(WAIT).await.unwrap()).position,
            want
        );
    }
}

/// A compaction pass with a long backlog deletes it a slice at a time, each slice in a commit
/// of its own between the engine's other work (one pass in one commit held publishers for
/// 160 ms), and still deletes all of it.
#[tokio::test]
async fn a_long_compaction_backlog_is_deleted_in_slices() {
    for backend in ALL_STORES {
        let (server, clock) = retained_room(backend, "long", 1000).await;
        let stats = server.ctx.stats.clone();
        let commits_before = stats.store_commits.load(Ordering::Relaxed);
        // The engine's own housekeeping tick starts the pass once the clock says it is due.
        clock.advance(LATER);
        until("the room trimmed to its retention", async || {
            let page = server
                .ctx
                .delivery
                .history(&StreamKey::room("long"), 0, 10)
                .await
                .unwrap();
            page.first_retained == 996
        })
        .await;
        let commits = stats.store_commits.load(Ordering::Relaxed) - commits_before;
        // 995 deletes in slices of at most 128 records.
        assert!(commits >= 8, "{backend:?}: {commits} commits");
    }
}
