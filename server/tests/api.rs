//! The service API beyond push: scoped keys, rate limits, presence, disconnect, server-side
//! room membership, metrics, readiness, per-address handshake limits.

mod common;

use common::*;
use push_client::protocol::{ErrorCode, Frame, Stream};
use push_client::token::{mint, Claims};
use push_client::{ClientError, ConnectOptions, Connection};
use push_server::config::{ApiKey, Scope};
use push_server::Config;

fn keyed_config() -> Config {
    Config {
        api_keys: vec![
            ApiKey {
                name: "alerts".into(),
                token: "alerts-token-1".into(),
                scopes: vec![Scope::Users],
                rate_per_sec: 1000.0,
                burst: 1000.0,
                allow_from: vec![],
            },
            ApiKey {
                name: "limited".into(),
                token: "limited-token".into(),
                scopes: Scope::ALL.to_vec(),
                rate_per_sec: 0.5,
                burst: 2.0,
                allow_from: vec![],
            },
            ApiKey {
                name: "office".into(),
                token: "office-token-1".into(),
                scopes: Scope::ALL.to_vec(),
                rate_per_sec: 1000.0,
                burst: 1000.0,
                allow_from: vec!["10.0.0.0/8".parse().unwrap()],
            },
            ApiKey {
                name: "loopback".into(),
                token: "loopback-token-1".into(),
                scopes: Scope::ALL.to_vec(),
                rate_per_sec: 1000.0,
                burst: 1000.0,
                allow_from: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            },
        ],
        ..config()
    }
}

const TO_USER: &str = r#"{"to":{"users":["u1"]},"kind":"k","payload":"p"}"#;
const TO_ALL: &str = r#"{"to":{"broadcast":true},"kind":"k","payload":"p"}"#;

#[tokio::test]
async fn keys_are_scoped_and_rate_limited() {
    let server = start(keyed_config()).await;
    let a = server.http_addr;
    let (s, _) = http(a, "POST", "/api/v1/push", Some("alerts-token-1"), TO_USER).await;
    assert_eq!(s, 200);
    let (s, body) = http(a, "POST", "/api/v1/push", Some("alerts-token-1"), TO_ALL).await;
    assert_eq!(s, 403, "{body}");
    assert!(
        body.contains("broadcast") && body.contains("alerts"),
        "{body}"
    );
    let (s, _) = http(
        a,
        "GET",
        "/api/v1/history/users/u1",
        Some("alerts-token-1"),
        "",
    )
    .await;
    assert_eq!(s, 403, "no read scope");
    // 2 requests of burst, then 429 with Retry-After.
    for _ in 0..2 {
        let (s, _) = http(a, "POST", "/api/v1/push", Some("limited-token"), TO_USER).await;
        assert_eq!(s, 200);
    }
    let (s, head, body) =
        http_full(a, "POST", "/api/v1/push", Some("limited-token"), TO_USER).await;
    assert_eq!(s, 429, "{body}");
    let retry = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("retry-after: ")
                .or_else(|| l.strip_prefix("Retry-After: "))
        })
        .expect("Retry-After header");
    assert!(retry.parse::<u64>().unwrap() >= 1);
    // The plain api_tokens key still has every scope.
    let (s, _) = push(&server, TO_ALL).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn presence_rooms_and_disconnect() {
    let server = start(config()).await;
    let device_token = mint(
        SECRET.as_bytes(),
        &Claims {
            sub: "pat".into(),
            exp: now_secs() + 600,
            device: Some("phone".into()),
            rooms: Vec::new(),
        },
    );
    let mut c = Connection::connect(
        server.tcp_addr,
        &ConnectOptions {
            token: device_token,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let a = server.http_addr;
    let (s, body) = http(a, "GET", "/api/v1/users/pat/presence", Some(API_TOKEN), "").await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["online"].as_bool(), v["connections"].as_u64()),
        (Some(true), Some(1))
    );
    assert_eq!(v["devices"][0], "phone");
    // Server-side membership, then a room push reaches the client.
    let (s, body) = http(
        a,
        "PUT",
        "/api/v1/rooms/ops/members/pat",
        Some(API_TOKEN),
        "",
    )
    .await;
    assert_eq!((s, body.contains("\"joined\":1")), (200, true), "{body}");
    let (_, body) = http(a, "GET", "/api/v1/rooms/ops", Some(API_TOKEN), "").await;
    assert!(body.contains("\"members\":1"), "{body}");
    push(
        &server,
        r#"{"to":{"room":"ops"},"kind":"k","payload":"hello ops"}"#,
    )
    .await;
    match c.next_timeout(WAIT).await.unwrap().frame {
        Frame::Push(p) => assert_eq!(p.stream, Stream::Room("ops".into())),
        other => panic!("{other:?}"),
    }
    let (s, body) = http(
        a,
        "DELETE",
        "/api/v1/rooms/ops/members/pat",
        Some(API_TOKEN),
        "",
    )
    .await;
    assert_eq!((s, body.contains("\"left\":1")), (200, true), "{body}");
    // Disconnect: CLOSE KICKED without a reconnect hint.
    let (s, body) = http(
        a,
        "DELETE",
        "/api/v1/users/pat/connections",
        Some(API_TOKEN),
        "",
    )
    .await;
    assert_eq!((s, body.contains("\"closed\":1")), (200, true), "{body}");
    match c.next_timeout(WAIT).await {
        Err(ClientError::Closed {
            code, reconnect_ms, ..
        }) => {
            assert_eq!(code, ErrorCode::KICKED);
            assert_eq!(reconnect_ms, None);
        }
        other => panic!("{other:?}"),
    }
    let (_, body) = http(a, "GET", "/api/v1/users/pat/presence", Some(API_TOKEN), "").await;
    assert!(body.contains("\"online\":false"), "{body}");
}

#[tokio::test]
async fn metrics_and_readiness() {
    let server = start(config()).await;
    let mut c = connect(server.tcp_addr, "m1").await;
    let (s, _) = push(
        &server,
        r#"{"to":{"users":["m1"]},"kind":"k","payload":"p"}"#,
    )
    .await;
    assert_eq!(s, 200);
    let p = match c.next_timeout(WAIT).await.unwrap().frame {
        Frame::Push(p) => p,
        other => panic!("{other:?}"),
    };
    c.send(Frame::Ack(vec![push_client::protocol::StreamPos {
        stream: Stream::User,
        position: p.position,
    }]))
    .await
    .unwrap();
    // A round trip through the engine so the ACK has been processed.
    c.request(Frame::Join(push_client::protocol::Join {
        room: "x".into(),
        resume_after: None,
    }))
    .await
    .unwrap();
    let _ = try_connect(server.tcp_addr, "bad-token").await;
    let (s, text) = http(server.http_addr, "GET", "/metrics", None, "").await;
    assert_eq!(s, 200);
    for needle in [
        "push_connections{transport=\"tcp\"} 1",
        "push_messages_accepted_total{scenario=\"user\"} 1",
        "push_deliveries_queued_total{scenario=\"user\"} 1",
        "push_handshakes_total{result=\"failed\",reason=\"TOKEN_INVALID\"} 1",
        "push_accept_to_queue_seconds_count{scenario=\"user\"} 1",
        "push_store_commit_seconds_bucket{le=\"+Inf\"}",
        "# TYPE push_publish_seconds histogram",
        "push_accept_to_ack_seconds_count 1",
        "push_accept_to_write_seconds_count{scenario=\"user\"} 1",
        "# TYPE push_frames_out counter",
        "# TYPE push_bytes_in counter",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let (s, body) = http(server.http_addr, "GET", "/readyz", None, "").await;
    assert_eq!(s, 200, "{body}");
}

#[tokio::test]
async fn an_address_with_too_many_failed_handshakes_is_refused() {
    let server = start(Config {
        failed_handshake_rate_per_ip: 0.001,
        failed_handshake_burst_per_ip: 3.0,
        ..config()
    })
    .await;
    for _ in 0..3 {
        assert!(try_connect(server.tcp_addr, "wrong").await.is_err());
    }
    match try_connect(server.tcp_addr, &token("good")).await {
        Err(ClientError::Rejected { code, .. }) => assert_eq!(code, ErrorCode::RATE_LIMITED),
        other => panic!("expected RATE_LIMITED, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn the_openapi_document_matches_the_real_routes() {
    let server = start(config()).await;
    let (s, body) = http(server.http_addr, "GET", "/api/v1/openapi.json", None, "").await;
    assert_eq!(s, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    let mut checked = 0;
    for (path, ops) in paths {
        let concrete = path.replace("{id}", "lobby").replace("{user}", "alice");
        for method in ops.as_object().unwrap().keys() {
            let verb = method.to_uppercase();
            let body = if verb == "POST" { TO_USER } else { "" };
            let (status, text) =
                http(server.http_addr, &verb, &concrete, Some(API_TOKEN), body).await;
            assert!(
                status != 404 && status != 405,
                "{verb} {path} is documented but the server answers {status}: {text}"
            );
            let documented = ops[method]["responses"]
                .as_object()
                .unwrap()
                .contains_key(&status.to_string());
            assert!(
                documented,
                "{verb} {path} answered {status}, which the document does not list"
            );
            checked += 1;
        }
    }
    assert!(checked >= 13, "{checked} operations checked");
    // And the check can fail: an undocumented route does not exist.
    let (s, _) = http(
        server.http_addr,
        "GET",
        "/api/v1/nothing-here",
        Some(API_TOKEN),
        "",
    )
    .await;
    assert_eq!(s, 404);
}

/// One sample of the /metrics text, by its full name with labels.
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

async fn metrics(server: &push_server::ServerHandle) -> String {
    let (s, head, text) = http_full(server.http_addr, "GET", "/metrics", None, "").await;
    assert_eq!(s, 200);
    assert!(
        head.to_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    text
}

/// The defects issue 12 found, each asserted by value: WebSocket and long-poll connections
/// were counted as TCP, the commit histogram was never observed, overload refusals were not
/// counted as failed publishes.
#[tokio::test]
async fn metrics_count_what_they_say() {
    let server = start(config()).await;
    let _tcp = connect(server.tcp_addr, "t1").await;
    let mut ws = common::ws::WsClient::connect(server.http_addr, "/ws", &["push.v1.json"], &[])
        .await
        .unwrap();
    ws.send_json(serde_json::json!({"op": "hello", "token": token("w1")}))
        .await;
    assert_eq!(ws.recv_json().await["op"], "welcome");
    let addr = server.http_addr;
    let poll = tokio::spawn(async move {
        let path = "/api/v1/poll?after=0&wait_ms=20000";
        http(addr, "GET", path, Some(&token("p1")), "").await
    });
    until("the three transports to be counted", async || {
        let m = metrics(&server).await;
        sample(&m, "push_connections{transport=\"long_poll\"}") == 1
    })
    .await;
    let m = metrics(&server).await;
    assert_eq!(sample(&m, "push_connections{transport=\"tcp\"}"), 1);
    assert_eq!(sample(&m, "push_connections{transport=\"websocket\"}"), 1);
    for i in 0..3 {
        let body = format!(r#"{{"to":{{"users":["t1"]}},"kind":"k","payload":"{i}"}}"#);
        assert_eq!(push(&server, &body).await.0, 200);
    }
    // The long-poll returns with the message pushed to p1 and is no longer counted.
    let body = r#"{"to":{"users":["p1"]},"kind":"k","payload":"x"}"#;
    assert_eq!(push(&server, body).await.0, 200);
    assert_eq!(poll.await.unwrap().0, 200);
    let m = metrics(&server).await;
    assert_eq!(sample(&m, "push_connections{transport=\"long_poll\"}"), 0);
    let commits = sample(&m, "push_store_commits_total");
    assert!(commits >= 4, "{commits}");
    assert_eq!(sample(&m, "push_store_commit_seconds_count"), commits);
    assert_eq!(
        sample(&m, "push_store_commit_seconds_bucket{le=\"+Inf\"}"),
        commits
    );
    drop(ws);
    drop(_tcp);
    until("closed connections to leave the gauge", async || {
        let m = metrics(&server).await;
        sample(&m, "push_connections{transport=\"tcp\"}") == 0
            && sample(&m, "push_connections{transport=\"websocket\"}") == 0
    })
    .await;

    // Over max_pending_publishes every publish is refused with 503, and counted as failed.
    let full = start(Config {
        max_pending_publishes: 0,
        ..config()
    })
    .await;
    let (status, _) = push(&full, r#"{"to":{"room":"r"},"kind":"k","payload":"p"}"#).await;
    assert_eq!(status, 503);
    let m = metrics(&full).await;
    assert_eq!(
        sample(&m, "push_messages_failed_total{scenario=\"room\"}"),
        1
    );
    assert_eq!(
        sample(&m, "push_messages_failed_total{scenario=\"user\"}"),
        0
    );
}

#[tokio::test]
async fn a_key_with_an_address_allow_list_is_refused_elsewhere() {
    let server = start(keyed_config()).await;
    let a = server.http_addr;
    let (s, body) = http(a, "POST", "/api/v1/push", Some("office-token-1"), TO_USER).await;
    assert_eq!(s, 403, "{body}");
    assert!(
        body.contains("office") && body.contains("127.0.0.1"),
        "{body}"
    );
    let (s, body) = http(a, "POST", "/api/v1/push", Some("loopback-token-1"), TO_USER).await;
    assert_eq!(s, 200, "{body}");
}
