//! The admin API in cluster mode, against a real three-node NATS JetStream cluster and two
//! push-server nodes: presence (with each connection's node and transport), room member
//! counts, server-side room membership, stats and disconnecting a user work from any node.

mod common;

use common::cluster::*;
use common::*;
use push_client::protocol::{Frame, Join, Stream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_room_counts_membership_and_kick_work_from_any_node() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let (a, b) = (node(&nats, "t7").await, node(&nats, "t7").await);
    let api = |s: &TestServer, method: &'static str, path: String| {
        let addr = s.http_addr;
        async move {
            let (status, body) = http(addr, method, &path, Some(API_TOKEN), "").await;
            assert_eq!(status, 200, "{method} {path}: {body}");
            serde_json::from_str::<serde_json::Value>(&body).unwrap()
        }
    };
    let mut pat_a = connect(a.tcp_addr, "pat").await;
    let mut pat_b = connect(b.tcp_addr, "pat").await;
    let mut quinn_b = connect(b.tcp_addr, "quinn").await;
    let v = api(&a, "GET", "/api/v1/users/pat/presence".into()).await;
    assert_eq!(
        (v["online"].clone(), v["connections"].clone()),
        (true.into(), 2.into()),
        "{v}"
    );
    // One connection on each node, named by host and port.
    let port = |s: &TestServer| format!(":{}", s.tcp_addr.port());
    let nodes = v["nodes"].as_object().expect("nodes in cluster mode");
    let mut held: Vec<(bool, bool, u64)> = nodes
        .iter()
        .map(|(name, n)| {
            (
                name.ends_with(&port(&a)),
                name.ends_with(&port(&b)),
                n.as_u64().unwrap(),
            )
        })
        .collect();
    held.sort();
    assert_eq!(held, [(false, true, 1), (true, false, 1)], "{v}");
    // Each connection described, with the node that holds it.
    let mut sessions: Vec<(String, bool)> = v["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| {
            let node = s["node"].as_str().unwrap();
            (
                s["transport"].as_str().unwrap().to_string(),
                node.ends_with(&port(&a)),
            )
        })
        .collect();
    sessions.sort();
    assert_eq!(
        sessions,
        [("tcp".into(), false), ("tcp".into(), true)],
        "{v}"
    );

    let join = Frame::Join(Join {
        room: "ops".into(),
        resume_after: None,
    });
    quinn_b.request(join).await.unwrap();
    let v = api(&a, "GET", "/api/v1/rooms/ops".into()).await;
    assert_eq!(v["members"], 1, "{v}");
    // Server-side membership through node A reaches pat's connections on both nodes.
    let v = api(&a, "PUT", "/api/v1/rooms/ops/members/pat".into()).await;
    assert_eq!(v["joined"], 2, "{v}");
    let v = api(&b, "GET", "/api/v1/rooms/ops".into()).await;
    assert_eq!(v["members"], 3, "{v}");
    let (s, _) = push(&b, r#"{"to":{"room":"ops"},"kind":"k","payload":"o1"}"#).await;
    assert_eq!(s, 200);
    for c in [&mut pat_a, &mut pat_b, &mut quinn_b] {
        let p = c.next_timeout(WAIT).await.unwrap();
        assert_eq!(room_push(p), (Stream::Room("ops".into()), 1, "o1".into()));
    }

    // Stats through node A: one entry per node, added up in the total.
    let v = api(&a, "GET", "/api/v1/stats".into()).await;
    let nodes = v["nodes"].as_array().expect("nodes");
    let mut per_node: Vec<(bool, u64)> = nodes
        .iter()
        .map(|n| {
            let name = n["node"].as_str().unwrap();
            (
                name.ends_with(&port(&a)),
                n["connections"]["total"].as_u64().unwrap(),
            )
        })
        .collect();
    per_node.sort();
    assert_eq!(per_node, [(false, 2), (true, 1)], "{v}");
    assert_eq!(v["total"]["connections"]["total"], 3, "{v}");
    assert_eq!(v["total"]["scenarios"]["room"]["deliveries"], 3, "{v}");
    // Each delivery's accept-to-write latency, measured on the node that wrote it.
    let written: u64 = v["total"]["scenarios"]["room"]["accept_to_write_buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(written, 3, "{v}");
    assert_eq!(v["cluster"], true);

    // Kick through node B closes pat's connections on both nodes.
    let v = api(&b, "DELETE", "/api/v1/users/pat/connections".into()).await;
    assert_eq!(v["closed"], 2, "{v}");
    for c in [&mut pat_a, &mut pat_b] {
        match c.next_timeout(WAIT).await {
            Err(push_client::ClientError::Closed { code, .. }) => {
                assert_eq!(code, push_client::protocol::ErrorCode::KICKED)
            }
            other => panic!("expected CLOSE KICKED, got {other:?}"),
        }
    }
    until("pat is offline everywhere", async || {
        api(&b, "GET", "/api/v1/users/pat/presence".into()).await["connections"] == 0
    })
    .await;
}
