//! Cluster mode keeps a user's actor running only while it has work: an idle connected user
//! costs a few numbers on its node, and the next message, acknowledgement or connection wakes
//! the actor where it stopped (no replay of what was acknowledged, no position skipped).

mod common;

use common::cluster::*;
use common::*;

/// (awake, asleep) user actors on a node.
fn actors(server: &TestServer) -> (usize, usize) {
    server.ctx.gauges().user_actors.expect("a cluster node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_user_actors_sleep_and_wake_where_they_stopped() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let (a, b) = (node(&nats, "s1").await, node(&nats, "s1").await);
    let mut c = connect(a.tcp_addr, "sam").await;
    until("the idle actor sleeps", async || actors(&a) == (0, 1)).await;
    for i in 1..=3 {
        push_user(&b, "sam", &format!("m{i}")).await;
        assert_eq!(next_text(&mut c).await, (i, format!("m{i}")));
        // Awake until the message is acknowledged (it would be resent otherwise).
        ack(&mut c, i).await;
        until("asleep again once acknowledged", async || {
            actors(&a) == (0, 1)
        })
        .await;
    }
    // A second device wakes the actor: it replays nothing acknowledged, and both devices get
    // the next position.
    let mut d = connect(a.tcp_addr, "sam").await;
    push_user(&b, "sam", "m4").await;
    for conn in [&mut c, &mut d] {
        assert_eq!(next_text(conn).await, (4, "m4".into()));
    }
    // The user leaves: the actor retires (woken by the departure, it purges and ends).
    drop((c, d));
    until("the actor retires", async || actors(&a) == (0, 0)).await;
    // And a node that never had the user holds nothing for them.
    assert_eq!(actors(&b), (0, 0));
    // A message stored while the user has no actor here: the user's next connection here
    // gets it at once (the node's tail cache followed it), not at the next periodic check.
    push_user(&b, "sam", "m5").await;
    let mut e = connect(a.tcp_addr, "sam").await;
    assert_eq!(
        next_text(&mut e).await,
        (4, "m4".into()),
        "never acknowledged"
    );
    assert_eq!(next_text(&mut e).await, (5, "m5".into()));
}

/// The periodic check purges what a connected user acknowledged, keeping only the last
/// message (the next compare-and-set stands on it), again and again while the actor sleeps
/// between checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_checks_keep_only_the_last_acknowledged_message() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let mut cluster = cluster_config(&nats, "s2", 2000);
    cluster.tail_check_ms = 200;
    let a = start(push_server::Config {
        cluster: Some(cluster),
        ..config()
    })
    .await;
    let mut c = connect(a.tcp_addr, "pia").await;
    for i in 1..=4 {
        push_user(&a, "pia", &format!("m{i}")).await;
        assert_eq!(next_text(&mut c).await, (i, format!("m{i}")));
        ack(&mut c, i).await;
        until("only the last message is kept", async || {
            let h = user_history(a.http_addr, "pia", "").await;
            let kept: Vec<u64> = h["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["position"].as_u64().unwrap())
                .collect();
            kept == [i]
        })
        .await;
    }
}
