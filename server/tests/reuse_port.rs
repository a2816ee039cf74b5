//! `reuse_port`: several servers bind the same TCP and HTTP ports (SO_REUSEPORT) and the
//! kernel spreads new connections across them; without the option the second bind fails.

mod common;

use common::*;
use push_server::{Config, StartError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_with_reuse_port_share_their_ports_and_the_connections() {
    let first = start(Config {
        reuse_port: true,
        ..config()
    })
    .await;
    let shared = |reuse_port| Config {
        reuse_port,
        listen: first.tcp_addr,
        http_listen: first.http_addr,
        ..config()
    };
    let second = start(shared(true)).await;
    assert_eq!(
        (second.tcp_addr, second.http_addr),
        (first.tcp_addr, first.http_addr)
    );
    match push_server::start(shared(false)).await {
        Err(StartError::Bind { addr, .. }) => assert_eq!(addr, first.tcp_addr),
        Err(e) => panic!("expected a bind error, got {e}"),
        Ok(_) => panic!("a server without reuse_port must not bind a port in use"),
    }

    // New connections land on both (the kernel hashes each connection's addresses: the chance
    // that 40 all land on one of two servers is 2^-39).
    let mut clients = Vec::new();
    for i in 0..40 {
        clients.push(connect(first.tcp_addr, &format!("u{i}")).await);
    }
    let held = || {
        (
            first.ctx.hub.connection_count(),
            second.ctx.hub.connection_count(),
        )
    };
    eventually("all 40 registered", || held().0 + held().1 == 40).await;
    let (a, b) = held();
    assert!(a > 0 && b > 0, "connections spread: {a} and {b}");
    // Both answer HTTP on the shared port.
    for _ in 0..10 {
        let (status, _) = http(first.http_addr, "GET", "/healthz", None, "").await;
        assert_eq!(status, 200);
    }
}
