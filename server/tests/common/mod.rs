//! Helpers of the server's integration tests: what every crate's tests share comes from
//! `push-test-support` (server, config, tokens, waiting, HTTP); here are the client
//! connections, pushes through the API, and the RabbitMQ, WebSocket and process helpers.

#![allow(dead_code)]

pub(crate) mod amqp;
pub(crate) mod cluster;
pub(crate) mod otlp;
pub(crate) mod process;
pub(crate) mod ws;

pub(crate) use push_test_support::*;

use std::net::SocketAddr;

use push_client::protocol::{Frame, Hello, Join, Stream, StreamPos};
use push_client::{ClientError, ConnectOptions, Connection};
use push_server::ServerHandle;

pub(crate) async fn connect(addr: SocketAddr, user: &str) -> Connection {
    try_connect(addr, &token(user)).await.expect("connects")
}

pub(crate) async fn try_connect(addr: SocketAddr, token: &str) -> Result<Connection, ClientError> {
    Connection::connect(
        addr,
        &ConnectOptions {
            token: token.into(),
            ..ConnectOptions::default()
        },
    )
    .await
}

pub(crate) async fn push(server: &ServerHandle, body: &str) -> (u16, serde_json::Value) {
    let (status, text) = http(
        server.http_addr,
        "POST",
        "/api/v1/push",
        Some(API_TOKEN),
        body,
    )
    .await;
    let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, v)
}

/// A user's stream from the history API (`query` like `after=0&limit=10`, or empty).
pub(crate) async fn user_history(addr: SocketAddr, user: &str, query: &str) -> serde_json::Value {
    let path = format!("/api/v1/history/users/{user}?{query}");
    let (status, body) = http(addr, "GET", &path, Some(API_TOKEN), "").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A connected, authenticated client that stays quiet and must keep receiving.
pub(crate) async fn bystander(server: &ServerHandle) -> Connection {
    connect(server.tcp_addr, "bystander").await
}

/// Pushes one message to the bystander and checks it arrives (heartbeats answered meanwhile).
pub(crate) async fn still_served(server: &ServerHandle, b: &mut Connection, n: u64) {
    let body = serde_json::json!({"to": {"users": ["bystander"]}, "kind": "k", "payload": format!("m{n}")});
    let (status, _) = push(server, &body.to_string()).await;
    assert_eq!(status, 200);
    loop {
        let p = b
            .next_timeout(WAIT)
            .await
            .expect("the bystander is still served");
        if let Frame::Push(push) = p.frame {
            assert_eq!(push.position, n);
            b.send(Frame::Ack(vec![StreamPos {
                stream: Stream::User,
                position: n,
            }]))
            .await
            .unwrap();
            return;
        }
    }
}

/// The test config with upstream PUBLISH allowed.
pub(crate) fn publishing() -> push_server::Config {
    push_server::Config {
        allow_client_publish: true,
        ..config()
    }
}

/// A version-1 session (HELLO 1..=1) of `user`, authenticated.
pub(crate) async fn version_1(server: &ServerHandle, user: &str) -> Connection {
    let tcp = tokio::net::TcpStream::connect(server.tcp_addr)
        .await
        .unwrap();
    let mut c = Connection::from_stream(tcp);
    c.send(Frame::Hello(Hello {
        min_version: 1,
        max_version: 1,
        token: token(user),
        device: String::new(),
        resume: vec![],
        options: Default::default(),
    }))
    .await
    .unwrap();
    let p = c.next_timeout(WAIT).await.unwrap();
    assert!(
        matches!(p.frame, Frame::AuthOk(ref a) if a.version == 1),
        "{p:?}"
    );
    c
}

/// JOINs `room` and checks the OK.
pub(crate) async fn join(c: &mut Connection, room: &str) {
    let (ok, _) = c
        .request(Frame::Join(Join {
            room: room.into(),
            resume_after: None,
        }))
        .await
        .unwrap();
    assert!(matches!(ok.frame, Frame::Ok(_)), "{ok:?}");
}
