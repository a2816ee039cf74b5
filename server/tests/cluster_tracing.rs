//! Message tracing in cluster mode, against a real three-node NATS JetStream cluster: the
//! trace context travels with the stored message, so a push accepted by one node is
//! fanned out, written and acknowledged on another under the same trace.

mod common;

use common::cluster::*;
use common::otlp::{push_traced, Collector, Span};
use common::*;

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER: &str = "b7ad6b7169203331";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_accepted_on_one_node_is_traced_to_the_ack_on_another() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let mut collector = Collector::start().await;
    let a = node_with(&nats, "tr", collector.config(config(), |_| {})).await;
    let b = node_with(&nats, "tr", collector.config(config(), |_| {})).await;
    let mut dana = connect(a.tcp_addr, "dana").await;
    let body = r#"{"to":{"users":["dana"]},"kind":"k","payload":"across"}"#;
    push_traced(&b, Some(&format!("00-{TRACE}-{CALLER}-01")), body).await;
    let (position, text) = next_text(&mut dana).await;
    assert_eq!((position, text.as_str()), (1, "across"));
    ack(&mut dana, position).await;
    let count = |s: &[Span], name: &str| s.iter().filter(|s| s.name == name).count();
    let all = |s: &[Span]| {
        [
            "push.accept",
            "push.commit",
            "push.fanout",
            "push.write",
            "push.ack",
        ]
        .iter()
        .all(|n| count(s, n) >= 1)
    };
    collector.until(WAIT, all).await;

    let accept = collector.one(TRACE, "push.accept");
    assert_eq!(accept.parent, CALLER);
    let on = |s: &TestServer| format!(":{}", s.tcp_addr.port());
    assert!(
        accept.instance.ends_with(&on(&b)),
        "accepted on B: {accept:?}"
    );
    let commit = collector.one(TRACE, "push.commit");
    assert_eq!(
        commit.parent, accept.id,
        "stored in JetStream under the accept"
    );
    // Node A fans out (node B has no connection of dana's: its fan-out, if any, queued 0).
    let fanouts = collector.named(TRACE, "push.fanout");
    let fanout = fanouts
        .iter()
        .find(|f| f.attrs["push.queued"] == "1")
        .expect("the fan-out that reached dana");
    assert_eq!(fanout.parent, accept.id);
    assert_eq!(fanout.attrs["push.position"], "1");
    assert!(
        fanout.instance.ends_with(&on(&a)),
        "fanned out on A: {fanout:?}"
    );
    let write = collector.one(TRACE, "push.write");
    assert_eq!(write.parent, fanout.id);
    assert_eq!(write.attrs["push.user"], "dana");
    assert_eq!(collector.one(TRACE, "push.ack").parent, write.id);
}
