//! The Grafana dashboard and the Prometheus alert rules in `deploy/` name only metrics the
//! server exports, so neither can drift from the code: every `push_*` name they use must be a
//! sample name in `/metrics` of a server that exports every family (the binary for the
//! allocator and storage figures; a cluster node consuming RabbitMQ for the cluster and broker
//! families).

mod common;

use std::collections::BTreeSet;

use common::process::{free_addrs, spawn, wait_up};
use common::*;
use push_server::Config;

/// Every `push_...` identifier in `text`.
fn names_used(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("push_") {
        let preceded = rest[..at]
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// The sample names (`name{...} value` or `name value`) of a `/metrics` text.
fn names_exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

fn deploy_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn metrics_text(addr: std::net::SocketAddr) -> String {
    let (status, text) = http(addr, "GET", "/metrics", None, "").await;
    assert_eq!(status, 200, "{text}");
    text
}

#[test]
fn names_are_read_whole() {
    let used = names_used(
        r#"sum(rate(push_x_total{a="b"}[5m])) / push_y + label_values(push_z, instance) my_push_w"#,
    );
    let want: BTreeSet<String> = ["push_x_total", "push_y", "push_z"]
        .map(String::from)
        .into();
    assert_eq!(used, want);
    let exported = names_exported("# HELP push_a x\npush_a{k=\"v\"} 1\npush_b 2\n");
    assert_eq!(exported, ["push_a", "push_b"].map(String::from).into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_dashboard_and_the_alerts_is_exported() {
    let Some(amqp_url) = common::amqp::url() else {
        return;
    };
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    // The binary: allocator figures and the store's size on disk.
    let (tcp, http_addr) = free_addrs();
    let dir = data_dir();
    let mut binary = spawn(tcp, http_addr, &dir, "sled", "");
    wait_up(http_addr).await;
    let mut exported = names_exported(&metrics_text(http_addr).await);
    let _ = binary.kill();
    let _ = binary.wait();
    // A cluster node with a broker: the cluster and ingestion families.
    let node = common::cluster::node_with(
        &nats,
        "dash",
        Config {
            amqp: Some(common::amqp::config(&amqp_url, "dashboards")),
            ..config()
        },
    )
    .await;
    exported.extend(names_exported(&metrics_text(node.http_addr).await));
    for file in ["grafana-dashboard.json", "prometheus-alerts.yml"] {
        let used = names_used(&deploy_file(file));
        assert!(used.len() >= 5, "{file} names only {used:?}");
        let missing: Vec<&String> = used.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "deploy/{file} uses metrics the server does not export: {missing:?}\nexported: {exported:?}"
        );
    }
}
