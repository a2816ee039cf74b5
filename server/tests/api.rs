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
            },
            ApiKey {
                name: "limited".into(),
                token: "limited-token".into(),
                scopes: Scope::ALL.to_vec(),
                rate_per_sec: 0.5,
                burst: 2.0,
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
        "# TYPE push_frames_out_total counter",
        "# TYPE push_bytes_in_total counter",
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
