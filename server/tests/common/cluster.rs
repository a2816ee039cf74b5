//! Helpers of the cluster-mode tests: push nodes on a test NATS cluster, user pushes and
//! reading them back.

use push_client::protocol::{Frame, Stream, StreamPos};
use push_client::Connection;
use push_server::config::ClusterConfig;
use push_server::Config;

use super::*;

/// Cluster settings on `nats` under `prefix` (one deployment per test).
pub(crate) fn cluster_config(nats: &NatsCluster, prefix: &str, timeout_ms: u64) -> ClusterConfig {
    ClusterConfig {
        nats_urls: nats.urls(),
        node_name: None,
        prefix: prefix.into(),
        replicas: 3,
        request_timeout_ms: timeout_ms,
        max_inflight_batches: 16,
        tail_check_ms: 30_000,
    }
}

pub(crate) async fn node(nats: &NatsCluster, prefix: &str) -> TestServer {
    node_with(nats, prefix, config()).await
}

/// A node with `base`'s settings in cluster mode.
pub(crate) async fn node_with(nats: &NatsCluster, prefix: &str, base: Config) -> TestServer {
    start(Config {
        cluster: Some(cluster_config(nats, prefix, 2000)),
        // These tests read what arrives without acknowledging every message at once; resends
        // (tested on their own in cluster.rs) would show up as repeats on the raw connection.
        retry_interval_ms: 600_000,
        ..base
    })
    .await
}

pub(crate) async fn push_user(server: &TestServer, user: &str, text: &str) -> serde_json::Value {
    let body = serde_json::json!({"to": {"users": [user]}, "kind": "k", "payload": text});
    let (status, v) = push(server, &body.to_string()).await;
    assert_eq!(status, 200, "{v}");
    v
}

pub(crate) async fn next_text(c: &mut Connection) -> (u64, String) {
    let p = expect_push(c.next_timeout(WAIT).await.expect("a PUSH in time"));
    assert_eq!(p.stream, Stream::User);
    (p.position, String::from_utf8_lossy(&p.payload).to_string())
}

pub(crate) async fn ack(c: &mut Connection, position: u64) {
    c.send(Frame::Ack(vec![StreamPos {
        stream: Stream::User,
        position,
    }]))
    .await
    .unwrap();
}

/// A PUSH frame's stream, position and payload text.
pub(crate) fn room_push(p: push_client::protocol::Packet) -> (Stream, u64, String) {
    let p = expect_push(p);
    (
        p.stream,
        p.position,
        String::from_utf8_lossy(&p.payload).to_string(),
    )
}
