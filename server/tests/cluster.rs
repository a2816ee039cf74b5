//! Cluster mode against a real three-node NATS JetStream cluster and two push-server nodes
//! (in this process, on their own ports): a user's devices on different nodes get the same
//! messages at the same positions whichever node accepted them; offline backlogs replay on
//! whichever node the user reconnects to; acknowledgements and idempotency keys hold
//! cluster-wide; concurrent publishes through both nodes keep positions contiguous; rooms and
//! broadcast reach members on every node, with JOIN resume, GAP and client PUBLISH; a node
//! cut off from NATS stops claiming presence and repairs what it missed when it returns. The
//! admin API across nodes is in cluster_admin.rs.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::cluster::*;
use common::*;
use push_client::protocol::{Frame, Join, Publish, Stream, StreamPos};
use push_client::Connection;
use push_server::config::ClusterConfig;
use push_server::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_on_two_nodes_get_the_same_messages_at_the_same_positions() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let (a, b) = (node(&nats, "t1").await, node(&nats, "t1").await);
    let mut on_a = connect(a.tcp_addr, "ann").await;
    let mut on_b = connect(b.tcp_addr, "ann").await;
    push_user(&a, "ann", "via a").await;
    push_user(&b, "ann", "via b").await;
    for c in [&mut on_a, &mut on_b] {
        assert_eq!(next_text(c).await, (1, "via a".into()));
        assert_eq!(next_text(c).await, (2, "via b".into()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_and_broadcast_reach_members_on_every_node_with_resume_and_gap() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let node = |retention: u64| {
        let nats = &nats;
        async move {
            start(Config {
                room_retention_count: retention,
                allow_client_publish: true,
                retry_interval_ms: 600_000,
                cluster: Some(cluster_config(nats, "t4", 2000)),
                ..config()
            })
            .await
        }
    };
    let (a, b) = (node(3).await, node(3).await);
    let lobby = Stream::Room("lobby".into());
    let join = |after: Option<u64>| {
        Frame::Join(Join {
            room: "lobby".into(),
            resume_after: after,
        })
    };
    let mut on_a = connect(a.tcp_addr, "ra").await;
    let mut on_b = connect(b.tcp_addr, "rb").await;
    assert_eq!(
        on_a.request(join(None)).await.unwrap().0.frame,
        Frame::Ok(Some(0))
    );
    assert_eq!(
        on_b.request(join(None)).await.unwrap().0.frame,
        Frame::Ok(Some(0))
    );

    // Through the API of node A: members on both nodes.
    let (s, v) = push(&a, r#"{"to":{"room":"lobby"},"kind":"k","payload":"r1"}"#).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["accepted"][0]["stream"], "room:lobby");
    for c in [&mut on_a, &mut on_b] {
        let p = c.next_timeout(WAIT).await.unwrap();
        assert_eq!(room_push(p), (lobby.clone(), 1, "r1".into()));
    }
    // A client PUBLISH on node B reaches the member on node A, position 2.
    let (ack, _) = on_b
        .request(Frame::Publish(Publish {
            room: "lobby".into(),
            kind: "chat".into(),
            format: push_client::protocol::PayloadFormat::OPAQUE,
            payload: "r2".into(),
            transient: false,
            key: String::new(),
        }))
        .await
        .unwrap();
    assert!(
        matches!(ack.frame, Frame::PublishAck(ref x) if x.position == 2),
        "{ack:?}"
    );
    let p = on_a.next_timeout(WAIT).await.unwrap();
    assert_eq!(room_push(p), (lobby.clone(), 2, "r2".into()));

    // Broadcast through node B reaches every connection on both nodes.
    let (s, _) = push(&b, r#"{"to":{"broadcast":true},"kind":"k","payload":"b1"}"#).await;
    assert_eq!(s, 200);
    let p = on_a.next_timeout(WAIT).await.unwrap();
    assert_eq!(room_push(p), (Stream::Broadcast, 1, "b1".into()));

    // Five more: the room keeps the last three (positions 5..7). A late joiner on node B
    // resuming after 1 is told about the gap, then gets what is left, then OK with the tail.
    for i in 3..=7 {
        let body = format!(r#"{{"to":{{"room":"lobby"}},"kind":"k","payload":"r{i}"}}"#);
        assert_eq!(push(&a, &body).await.0, 200);
    }
    let mut late = connect(b.tcp_addr, "late").await;
    let (ok, before) = late.request(join(Some(1))).await.unwrap();
    assert_eq!(ok.frame, Frame::Ok(Some(7)));
    match &before[0].frame {
        Frame::Gap(g) => assert_eq!((g.requested_after, g.first_available), (1, 5)),
        other => panic!("expected GAP, got {other:?}"),
    }
    let got: Vec<u64> = before[1..].iter().map(|p| room_push(p.clone()).1).collect();
    assert_eq!(got, vec![5, 6, 7]);
    let path = "/api/v1/history/rooms/lobby";
    let (s, body) = http(a.http_addr, "GET", path, Some(API_TOKEN), "").await;
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        (h["first_retained"].clone(), h["tail"].clone()),
        (5.into(), 7.into()),
        "{h}"
    );
    assert_eq!(h["messages"][0]["state"], "stored", "{h}");

    // A client resuming broadcast in HELLO on node A is replayed what it missed.
    let opts = push_client::ConnectOptions {
        token: token("back"),
        resume: vec![StreamPos {
            stream: Stream::Broadcast,
            position: 0,
        }],
        ..push_client::ConnectOptions::default()
    };
    let mut back = Connection::connect(a.tcp_addr, &opts).await.unwrap();
    let p = back.next_timeout(WAIT).await.unwrap();
    assert_eq!(room_push(p), (Stream::Broadcast, 1, "b1".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlogs_replay_on_any_node_and_acks_hold_cluster_wide() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let (a, b) = (node(&nats, "t2").await, node(&nats, "t2").await);
    for i in 1..=5 {
        push_user(&a, "bob", &format!("m{i}")).await;
    }
    // Offline until now: everything, in order, on node B.
    let mut c = connect(b.tcp_addr, "bob").await;
    for i in 1..=5 {
        assert_eq!(next_text(&mut c).await, (i, format!("m{i}")));
    }
    ack(&mut c, 5).await;
    // The ack is stored cluster-wide before the reconnect: wait on node B's record of it.
    until("the ack is stored", async || {
        ack_stored(&nats, "t2", "bob").await == Some(5)
    })
    .await;
    drop(c);
    // Node B's actor for bob retires with everything acknowledged: it purges positions 1-4
    // and keeps 5, which the next position is counted from.
    until("acknowledged messages are purged", async || {
        user_history(a.http_addr, "bob", "").await["messages"][0]["position"] == 5
    })
    .await;
    // On node A nothing acknowledged comes again; the next message is position 6.
    let mut c = connect(a.tcp_addr, "bob").await;
    push_user(&b, "bob", "m6").await;
    assert_eq!(next_text(&mut c).await, (6, "m6".into()));

    // An idempotency key holds across nodes.
    let body = r#"{"to":{"users":["bob"]},"kind":"k","payload":"once","id":"order-7"}"#;
    let (s1, v1) = push(&a, body).await;
    let (s2, v2) = push(&b, body).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(v1["accepted"][0]["position"], 7, "{v1}");
    assert_eq!(v2["accepted"][0]["position"], 7, "{v2}");
    assert_eq!(v2["accepted"][0]["duplicate"], true, "{v2}");
    assert_eq!(next_text(&mut c).await, (7, "once".into()));

    // History from either node: acknowledged messages are sent, the rest pending.
    let h = user_history(b.http_addr, "bob", "").await;
    assert_eq!(
        (h["acked"].clone(), h["tail"].clone()),
        (5.into(), 7.into()),
        "{h}"
    );
    let states: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["sent", "pending", "pending"]);
    let h = user_history(a.http_addr, "bob", "after=5&limit=1").await;
    assert_eq!(h["messages"][0]["payload"], "m6", "{h}");
}

/// The acknowledged position stored for `user` under `prefix`, read from JetStream.
async fn ack_stored(nats: &NatsCluster, prefix: &str, user: &str) -> Option<u64> {
    let client = async_nats::connect(nats.urls()).await.ok()?;
    let js = async_nats::jetstream::new(client);
    let names = push_server::cluster::names::Names::new(prefix);
    let stream = js.get_stream(&names.users_stream).await.ok()?;
    let m = push_server::cluster::js::last_for_subject(&stream, &names.ack(user))
        .await
        .ok()??;
    // The record is "acked" or "acked failed-up-to".
    let text = String::from_utf8_lossy(&m.payload).to_string();
    text.split_whitespace().next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_through_both_nodes_keep_positions_contiguous() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let (a, b) = (node(&nats, "t3").await, node(&nats, "t3").await);
    let mut c = connect(a.tcp_addr, "cy").await;
    let http = [a.http_addr, b.http_addr];
    let mut tasks = Vec::new();
    for (n, addr) in http.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                let body = serde_json::json!({"to": {"users": ["cy"]}, "kind": "k", "payload": format!("{n}-{i}")});
                let (s, v) = http_post_push(addr, &body.to_string()).await;
                assert_eq!(s, 200, "{v}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut texts = BTreeSet::new();
    for want in 1..=80u64 {
        let (pos, text) = next_text(&mut c).await;
        assert_eq!(pos, want, "positions arrive contiguous and in order");
        assert!(texts.insert(text), "no message twice");
    }
}

async fn http_post_push(addr: std::net::SocketAddr, body: &str) -> (u16, String) {
    http(addr, "POST", "/api/v1/push", Some(API_TOKEN), body).await
}

/// Publishes `text` to `user` through `server`, retrying with the same id until accepted;
/// returns how long it took.
async fn publish_until_accepted(server: &TestServer, user: &str, id: &str, text: &str) -> Duration {
    let body = serde_json::json!({"to": {"users": [user]}, "kind": "k", "payload": text, "id": id})
        .to_string();
    let started = std::time::Instant::now();
    loop {
        let r = try_http(
            server.http_addr,
            "POST",
            "/api/v1/push",
            Some(API_TOKEN),
            &body,
            WAIT,
        )
        .await;
        if r.is_some_and(|(s, _, _)| s == 200) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_leader_dies_and_nothing_acknowledged_is_lost() {
    let Some(mut nats) = NatsCluster::start(3).await else {
        return;
    };
    let (a, b) = (node(&nats, "t5").await, node(&nats, "t5").await);
    let mut c = connect(a.tcp_addr, "lee").await;
    // The users stream's leader, as JetStream reports it.
    let client = async_nats::connect(nats.urls()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let names = push_server::cluster::names::Names::new("t5");
    let mut stream = js.get_stream(&names.users_stream).await.unwrap();
    let leader = nats.leader_of(&mut stream).await;
    let mut longest = Duration::ZERO;
    for i in 1..=60u64 {
        if i == 20 {
            nats.kill(leader);
        }
        let took = publish_until_accepted(&b, "lee", &format!("lee-{i}"), &format!("m{i}")).await;
        longest = longest.max(took);
    }
    for i in 1..=60u64 {
        assert_eq!(next_text(&mut c).await, (i, format!("m{i}")));
    }
    eprintln!("longest publish (retries included) around the leader kill: {longest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_majority_publishes_get_503_and_connections_stay() {
    let Some(mut nats) = NatsCluster::start(3).await else {
        return;
    };
    let a = start(Config {
        retry_interval_ms: 600_000,
        cluster: Some(cluster_config(&nats, "t6", 500)),
        ..config()
    })
    .await;
    let mut c = connect(a.tcp_addr, "maj").await;
    push_user(&a, "maj", "before").await;
    assert_eq!(next_text(&mut c).await, (1, "before".into()));
    ack(&mut c, 1).await;
    nats.kill(1);
    nats.kill(2);
    let body = r#"{"to":{"users":["maj"]},"kind":"k","payload":"lost?","id":"maj-2"}"#;
    let (status, v) = push(&a, body).await;
    assert_eq!(status, 503, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("cluster engine"),
        "{v}"
    );
    nats.restart(1).await;
    // The same connection (never dropped) gets what is published once the majority is back;
    // retried with the same id, the refused publish is stored once, whatever became of it.
    publish_until_accepted(&a, "maj", "maj-2", "lost?").await;
    assert_eq!(next_text(&mut c).await, (2, "lost?".into()));
    push_user(&a, "maj", "after").await;
    assert_eq!(next_text(&mut c).await, (3, "after".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_are_resent_then_failed_then_delivered_on_reconnect() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let a = start(Config {
        retry_interval_ms: 200,
        max_retries: 2,
        cluster: Some(cluster_config(&nats, "t8", 2000)),
        ..config()
    })
    .await;
    let b = node(&nats, "t8").await;
    let mut c = connect(a.tcp_addr, "rita").await;
    push_user(&b, "rita", "important").await;
    assert_eq!(next_text(&mut c).await, (1, "important".into()));
    // Never acknowledged: node A sends it again, twice, then marks it failed.
    for _ in 0..2 {
        assert_eq!(next_text(&mut c).await, (1, "important".into()));
    }
    until("marked failed, as node B's history shows", async || {
        user_history(b.http_addr, "rita", "").await["messages"][0]["state"] == "failed"
    })
    .await;
    drop(c);
    // Failed messages are still delivered on the next connect, on any node.
    let mut c = connect(b.tcp_addr, "rita").await;
    assert_eq!(next_text(&mut c).await, (1, "important".into()));
    ack(&mut c, 1).await;
    until("acknowledged", async || {
        user_history(a.http_addr, "rita", "").await["messages"][0]["state"] == "sent"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_nats_stops_claiming_presence_and_repairs_its_gap_on_return() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let mut proxies = Vec::new();
    for i in 0..3 {
        proxies.push(Proxy::start(nats.addr(i)).await);
    }
    // Node A reaches NATS only through the proxies. Its periodic tail check is far away: what
    // repairs the gap below is the reconnect itself.
    let a = start(Config {
        cluster: Some(ClusterConfig {
            nats_urls: proxies.iter().map(Proxy::url).collect(),
            tail_check_ms: 600_000,
            ..cluster_config(&nats, "t9", 2000)
        }),
        retry_interval_ms: 600_000,
        ..config()
    })
    .await;
    let b = node(&nats, "t9").await;
    let presence = async |s: &TestServer| {
        let path = "/api/v1/users/ray/presence";
        let (status, body) = http(s.http_addr, "GET", path, Some(API_TOKEN), "").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["connections"].clone()
    };
    let mut ray = connect(a.tcp_addr, "ray").await;
    push_user(&b, "ray", "before").await;
    assert_eq!(next_text(&mut ray).await, (1, "before".into()));
    assert_eq!(presence(&b).await, 1);

    for p in &proxies {
        p.cut();
    }
    until("node A reports not ready", async || {
        http(a.http_addr, "GET", "/readyz", None, "").await.0 == 503
    })
    .await;
    until("node B no longer sees ray", async || {
        presence(&b).await == 0
    })
    .await;
    push_user(&b, "ray", "while cut 1").await;
    push_user(&b, "ray", "while cut 2").await;

    for p in &proxies {
        p.heal();
    }
    // Republished while A was away, so never received live: the reconnect's catch-up sends
    // them, in order, and the connection never noticed the outage.
    assert_eq!(next_text(&mut ray).await, (2, "while cut 1".into()));
    assert_eq!(next_text(&mut ray).await, (3, "while cut 2".into()));
    until("node B sees ray again", async || presence(&b).await == 1).await;
    push_user(&b, "ray", "after").await;
    assert_eq!(next_text(&mut ray).await, (4, "after".into()));
}
