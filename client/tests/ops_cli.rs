//! `push-cli`'s operator commands against a real server: presence, room, history, stats and
//! kick, as text and as `--json`, and a refused key reported with the server's reason.

use std::net::SocketAddr;

use push_client::protocol::{Frame, Join};
use push_client::{ConnectOptions, Connection};
use push_test_support::{config, http, start, token, until, API_TOKEN, WAIT};

/// Runs `push-cli ARGS --http ADDR --api-token KEY`; returns (success, stdout, stderr).
async fn cli(http_addr: SocketAddr, key: &str, args: &[&str]) -> (bool, String, String) {
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_push-cli"))
            .args(args)
            .args(["--http", &http_addr.to_string(), "--api-token", key])
            .output(),
    )
    .await
    .expect("push-cli finishes in time")
    .expect("push-cli runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The command's text output, which must succeed.
async fn text(http_addr: SocketAddr, args: &[&str]) -> String {
    let (ok, out, err) = cli(http_addr, API_TOKEN, args).await;
    assert!(ok, "push-cli {args:?} failed: {err}");
    out
}

/// The command's `--json` output, parsed.
async fn json(http_addr: SocketAddr, args: &[&str]) -> serde_json::Value {
    let mut with = args.to_vec();
    with.push("--json");
    let out = text(http_addr, &with).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("push-cli {args:?} --json: {e}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_look_up_users_rooms_history_and_figures_and_kick() {
    let server = start(config()).await;
    let h = server.http_addr;
    let mut ann = Connection::connect(
        server.tcp_addr,
        &ConnectOptions {
            token: token("ann"),
            ..ConnectOptions::default()
        },
    )
    .await
    .unwrap();
    let (ok, _) = ann
        .request(Frame::Join(Join {
            room: "lobby".into(),
            resume_after: None,
        }))
        .await
        .unwrap();
    assert!(matches!(ok.frame, Frame::Ok(_)), "{ok:?}");
    let body = r#"{"to":{"room":"lobby"},"kind":"chat","payload":"hello lobby"}"#;
    let (status, answer) = http(h, "POST", "/api/v1/push", Some(API_TOKEN), body).await;
    assert_eq!(status, 200, "{answer}");

    let presence = text(h, &["presence", "ann"]).await;
    assert!(
        presence.starts_with("ann: online, 1 connection\n"),
        "{presence}"
    );
    assert!(
        presence.contains("\n  tcp v") && presence.contains(" s ago"),
        "{presence}"
    );
    assert_eq!(json(h, &["presence", "ann"]).await["connections"], 1);
    assert_eq!(text(h, &["presence", "bob"]).await, "bob: offline\n");

    let room = text(h, &["room", "lobby"]).await;
    assert_eq!(
        room,
        "room lobby: 1 members, tail position 1, oldest retained 1\n"
    );

    let history = text(h, &["history", "room", "lobby"]).await;
    assert!(history.starts_with("room:lobby: tail 1"), "{history}");
    assert!(
        history.contains("#1 ") && history.contains("chat       hello lobby"),
        "{history}"
    );
    let page = json(h, &["history", "room", "lobby", "--limit", "1"]).await;
    assert_eq!(page["messages"][0]["payload"], "hello lobby");
    let (ok, _, err) = cli(h, API_TOKEN, &["history", "room"]).await;
    assert!(
        !ok && err.contains("give the user id or room name"),
        "{err}"
    );

    let stats = text(h, &["stats"]).await;
    assert!(
        stats.starts_with("connections  1 (tcp 1, websocket 0, long-poll 0), 1 rooms"),
        "{stats}"
    );
    let room_row = stats
        .lines()
        .find(|l| l.starts_with("room "))
        .expect("room row");
    let cells: Vec<&str> = room_row.split_whitespace().collect();
    assert_eq!(&cells[1..5], ["1", "0", "0", "1"], "{stats}");
    let figures = json(h, &["stats"]).await;
    assert_eq!(figures["total"]["scenarios"]["room"]["deliveries"], 1);
    assert!(
        figures["total"]["storage"]["bytes"].as_u64() > Some(0),
        "{figures}"
    );

    // A key the server does not know: the command fails with the server's reason.
    let (ok, _, err) = cli(h, "not-a-key-at-all", &["kick", "ann"]).await;
    assert!(!ok && err.contains("HTTP 401"), "{err}");
    assert_eq!(
        text(h, &["kick", "ann"]).await,
        "ann: closed 1 connection\n"
    );
    until("ann is offline", async || {
        text(h, &["presence", "ann"]).await == "ann: offline\n"
    })
    .await;
}
