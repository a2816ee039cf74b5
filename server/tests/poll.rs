//! Long-poll fallback against a real server: replay of everything unacknowledged, acks by
//! position, waiting for live messages, rooms and broadcast by position, refusals.

mod common;

use common::*;
use push_server::ServerHandle;
use serde_json::{json, Value};

async fn poll(server: &ServerHandle, user: &str, query: &str) -> (u16, Value) {
    let path = format!("/api/v1/poll?{query}");
    let (status, body) = http(server.http_addr, "GET", &path, Some(&token(user)), "").await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

async fn push_text(server: &ServerHandle, to: Value, text: &str) {
    let body = json!({"to": to, "kind": "text", "payload": text}).to_string();
    let (status, v) = push(server, &body).await;
    assert_eq!(status, 200, "{v}");
}

fn texts(v: &Value) -> Vec<String> {
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn unacknowledged_messages_come_back_until_the_next_poll_acks_them() {
    let server = start(config()).await;
    for t in ["a", "b", "c"] {
        push_text(&server, json!({"users": ["erin"]}), t).await;
    }
    let (status, v) = poll(&server, "erin", "after=0&wait_ms=0").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(texts(&v), ["a", "b", "c"]);
    assert_eq!(v["positions"]["user"], 3);
    // Not acknowledged yet: the same poll gets the same messages.
    let (_, again) = poll(&server, "erin", "after=0&wait_ms=0").await;
    assert_eq!(texts(&again), ["a", "b", "c"]);
    // after=2 acknowledges a and b.
    let (_, v) = poll(&server, "erin", "after=2&wait_ms=0&limit=10").await;
    assert_eq!(texts(&v), ["c"]);
    let h = user_history(server.http_addr, "erin", "").await;
    assert_eq!(h["acked"], 2, "{h}");
    // A limit returns a prefix; the rest follows on the next poll.
    let (_, v) = poll(&server, "erin", "after=0&wait_ms=0&limit=1").await;
    assert_eq!(texts(&v), ["c"], "after=0 does not undo the ack of 2");
}

#[tokio::test]
async fn a_poll_waits_for_a_live_message() {
    let server = start(config()).await;
    let waiting = {
        let addr = server.http_addr;
        tokio::spawn(async move {
            let path = "/api/v1/poll?after=0&wait_ms=8000";
            let (status, body) = http(addr, "GET", path, Some(&token("frank")), "").await;
            (status, serde_json::from_str::<Value>(&body).unwrap())
        })
    };
    until("the poll to be waiting", async || {
        let (_, p) = http(
            server.http_addr,
            "GET",
            "/api/v1/users/frank/presence",
            Some(API_TOKEN),
            "",
        )
        .await;
        p.contains("\"online\":true")
    })
    .await;
    push_text(&server, json!({"users": ["frank"]}), "live").await;
    let (status, v) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(texts(&v), ["live"]);
    // An empty wait returns an empty list with the positions unchanged.
    let (_, v) = poll(&server, "frank", "after=1&wait_ms=50").await;
    assert_eq!(texts(&v), Vec::<String>::new());
    assert_eq!(v["positions"]["user"], 1);
}

#[tokio::test]
async fn rooms_and_broadcast_resume_by_position() {
    let server = start(config()).await;
    push_text(&server, json!({"room": "news"}), "r1").await;
    push_text(&server, json!({"room": "news"}), "r2").await;
    push_text(&server, json!({"broadcast": true}), "b1").await;
    let (status, v) = poll(
        &server,
        "gina",
        "rooms=news:1&broadcast_after=0&wait_ms=2000",
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let mut got = texts(&v);
    got.sort();
    assert_eq!(got, ["b1", "r2"]);
    assert_eq!(v["positions"]["room:news"], 2);
    assert_eq!(v["positions"]["broadcast"], 1);
}

#[tokio::test]
async fn refusals_say_why() {
    let server = start(config()).await;
    let (status, body) = http(server.http_addr, "GET", "/api/v1/poll", None, "").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("token"));
    let (status, body) = http(
        server.http_addr,
        "GET",
        "/api/v1/poll?token=forged.token.here",
        None,
        "",
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let (status, v) = poll(&server, "hank", "rooms=nocolon").await;
    assert_eq!(status, 400);
    assert_eq!(v["field"], "rooms");
    let (status, _) = poll(&server, "hank", "after=-1").await;
    assert_eq!(status, 400);
    // Token minting is for development mode only; this server has its own secret.
    let (status, body) = http(
        server.http_addr,
        "POST",
        "/api/v1/dev/token?user=x",
        None,
        "",
    )
    .await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test]
async fn a_client_that_hangs_up_leaves_no_connection_behind() {
    use tokio::io::AsyncWriteExt;
    let server = start(config()).await;
    let presence = async || {
        let path = "/api/v1/users/ivan/presence";
        let (_, p) = http(server.http_addr, "GET", path, Some(API_TOKEN), "").await;
        p.contains("\"online\":true")
    };
    let mut s = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    let req = format!(
        "GET /api/v1/poll?wait_ms=30000 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\r\n",
        token("ivan")
    );
    s.write_all(req.as_bytes()).await.unwrap();
    until("the poll to be waiting", presence).await;
    drop(s);
    until("the poll's connection to be gone", async || {
        !presence().await
    })
    .await;
}
