//! Epochs (protocol version 2, SPEC.md §5.2): every stream a server holds is in one epoch,
//! named in AUTH_OK; a client resuming with positions of another epoch (a store recreated, a
//! cluster rebuilt, a backup restored and started with `new_epoch`) gets a GAP per position
//! and loses nothing, where a version-1 resume would take its old positions as
//! acknowledgements of new messages.

mod common;

use common::cluster::node;
use common::ws::WsClient;
use common::*;
use push_client::protocol::{Frame, Gap, HelloOptions, Stream, StreamPos};
use push_client::{Client, ClientConfig, ConnectOptions, Connection, Event};
use serde_json::json;

fn at(stream: Stream, position: u64) -> StreamPos {
    StreamPos { stream, position }
}

async fn resume(
    server: &TestServer,
    user: &str,
    epoch: u64,
    positions: Vec<StreamPos>,
) -> Connection {
    Connection::connect(
        server.tcp_addr,
        &ConnectOptions {
            token: token(user),
            resume: positions,
            hello_options: HelloOptions {
                epoch,
                ..HelloOptions::default()
            },
            ..ConnectOptions::default()
        },
    )
    .await
    .unwrap()
}

/// Frames until `n` PUSH frames have arrived: GAPs and pushes as text.
async fn frames(c: &mut Connection, pushes: usize) -> Vec<String> {
    let mut got = Vec::new();
    let mut seen = 0;
    while seen < pushes {
        let p = c
            .next_timeout(WAIT)
            .await
            .unwrap_or_else(|e| panic!("frames in time: {e}; so far {got:?}"));
        match p.frame {
            Frame::Push(m) => {
                seen += 1;
                got.push(format!("push {:?} {}", m.stream, m.position));
            }
            Frame::Gap(Gap {
                stream,
                requested_after,
                first_available,
            }) => got.push(format!(
                "gap {stream:?} {requested_after} {first_available}"
            )),
            _ => {}
        }
    }
    got
}

async fn push_to(server: &TestServer, to: serde_json::Value, n: usize) {
    for i in 0..n {
        let body = json!({"to": to, "kind": "k", "payload": format!("m{i}")});
        assert_eq!(push(server, &body.to_string()).await.0, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_of_another_epoch_get_gaps_and_lose_nothing() {
    // The first life of the store: the client saw user@3 and lobby@2 in epoch `old`.
    let first = start(config()).await;
    let c = connect(first.tcp_addr, "eve").await;
    let old = c.auth.epoch;
    assert_ne!(old, 0, "a version-2 session is told the epoch");
    drop(c);

    // The store is recreated (a fresh data directory): new messages take positions 1.. again.
    let dir = data_dir();
    let second = start(push_server::Config {
        data_dir: dir.clone(),
        ..config()
    })
    .await;
    push_to(&second, json!({"users": ["eve"]}), 5).await;
    push_to(&second, json!({"room": "lobby"}), 2).await;
    let mut c = resume(
        &second,
        "eve",
        old,
        vec![at(Stream::User, 3), at(Stream::Room("lobby".into()), 2)],
    )
    .await;
    assert_ne!(c.auth.epoch, old);
    let got = frames(&mut c, 7).await;
    let of = |s: &str| -> Vec<String> { got.iter().filter(|l| l.contains(s)).cloned().collect() };
    assert_eq!(
        of("User"),
        [
            "gap User 3 1",
            "push User 1",
            "push User 2",
            "push User 3",
            "push User 4",
            "push User 5"
        ],
        "every new message, none taken as acknowledged: {got:?}"
    );
    assert_eq!(
        of("lobby"),
        [
            "gap Room(\"lobby\") 2 1",
            "push Room(\"lobby\") 1",
            "push Room(\"lobby\") 2"
        ]
    );
    drop(c);

    // JSON mode: the epoch in `hello` and `welcome`, the GAP as a `gap` message.
    let mut ws = WsClient::connect(second.http_addr, "/ws", &["push.v1.json"], &[])
        .await
        .unwrap_or_else(|_| panic!("upgrade"));
    ws.send_json(
        json!({"op": "hello", "token": token("eve"), "epoch": old, "resume": {"user": 3}}),
    )
    .await;
    let welcome = ws.recv_json().await;
    assert!(
        welcome["epoch"]
            .as_u64()
            .is_some_and(|e| e != old && e != 0),
        "{welcome}"
    );
    let gap = ws.recv_json().await;
    assert_eq!(
        (&gap["op"], &gap["requested_after"], &gap["first_available"]),
        (&json!("gap"), &json!(3), &json!(1)),
        "{gap}"
    );
    drop(ws);

    // Long-poll: the same, with `epoch` in the query and the server's in the answer.
    let path = format!("/api/v1/poll?after=3&epoch={old}&wait_ms=0");
    let (status, body) = http(second.http_addr, "GET", &path, Some(&token("eve")), "").await;
    assert_eq!(status, 200, "{body}");
    let poll: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(poll["gaps"][0]["first_available"], 1, "{poll}");
    assert_eq!(poll["messages"].as_array().map(Vec::len), Some(5), "{poll}");
    assert_ne!(poll["epoch"], json!(old));

    // Without the epoch (a version-1 resume) the same position is an acknowledgement: what
    // epochs prevent.
    let mut legacy = resume(&second, "eve", 0, vec![at(Stream::User, 3)]).await;
    assert_eq!(frames(&mut legacy, 2).await, ["push User 4", "push User 5"]);

    // The same epoch across a restart; a new one when the operator says so (a backup
    // restored), and it is kept after that.
    let epoch = legacy.auth.epoch;
    drop(legacy);
    let restart = |dir: std::path::PathBuf, new_epoch| push_server::Config {
        data_dir: dir,
        new_epoch,
        ..config()
    };
    second.shutdown();
    let _keep = second.wait().await;
    let again = start(restart(dir.clone(), false)).await;
    assert_eq!(connect(again.tcp_addr, "eve").await.auth.epoch, epoch);
    again.shutdown();
    let _keep2 = again.wait().await;
    let renewed = start(restart(dir.clone(), true)).await;
    let new = connect(renewed.tcp_addr, "eve").await.auth.epoch;
    assert_ne!(new, epoch);
    renewed.shutdown();
    let _keep3 = renewed.wait().await;
    let after = start(restart(dir, false)).await;
    assert_eq!(connect(after.tcp_addr, "eve").await.auth.epoch, new);
    drop(first);
}

/// The SDK keeps the epoch with its positions: after moving to a server of another epoch it
/// reports a GAP for each room and re-joins it from the start of what the room retains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_starts_over_in_a_new_epoch() {
    let first = start(config()).await;
    let second = start(config()).await;
    push_to(&first, json!({"room": "news"}), 2).await;
    push_to(&second, json!({"room": "news"}), 1).await;
    let mut cfg = ClientConfig::new(first.tcp_addr, token("sid"));
    cfg.fallback = vec![second.tcp_addr];
    cfg.backoff_min = std::time::Duration::from_millis(10);
    let mut client = Client::start(cfg);
    let mut events = Vec::new();
    assert!(matches!(
        next_event(&mut client).await,
        Event::Connected { .. }
    ));
    client.join("news").await.unwrap();
    push_to(&first, json!({"room": "news"}), 1).await;
    let m = tokio::time::timeout(WAIT, client.next_message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (m.stream.clone(), m.position),
        (Stream::Room("news".into()), 3)
    );

    first.shutdown();
    loop {
        match next_event(&mut client).await {
            Event::Message(m) => {
                events.push(format!("message {:?} {}", m.stream, m.position));
                break;
            }
            Event::Gap {
                stream,
                first_available,
            } => events.push(format!("gap {stream:?} {first_available}")),
            _ => {}
        }
    }
    assert_eq!(
        events,
        ["gap Room(\"news\") 1", "message Room(\"news\") 1"],
        "the room starts over in the new epoch"
    );
}

async fn next_event(client: &mut Client) -> Event {
    tokio::time::timeout(WAIT, client.next_event())
        .await
        .expect("an event in time")
        .expect("client running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_has_one_epoch_and_a_new_deployment_another() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let a = node(&nats, "ep1").await;
    let b = node(&nats, "ep1").await;
    let other = node(&nats, "ep2").await;
    let epoch = connect(a.tcp_addr, "ann").await.auth.epoch;
    assert_ne!(epoch, 0);
    assert_eq!(connect(b.tcp_addr, "ann").await.auth.epoch, epoch);
    assert_ne!(connect(other.tcp_addr, "ann").await.auth.epoch, epoch);
    // Positions from the other deployment get GAPs here too.
    push_to(&b, json!({"users": ["ann"]}), 1).await;
    let mut c = resume(&a, "ann", epoch + 1, vec![at(Stream::User, 4)]).await;
    assert_eq!(frames(&mut c, 1).await, ["gap User 4 1", "push User 1"]);
}
