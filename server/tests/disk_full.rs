//! Disk full (issue 8): the data directory is a small tmpfs the test mounts (root needed, as on
//! CI). Publishes fail with 503 and a reason while it is full, nothing acknowledged is lost,
//! and service resumes by itself once space returns (the store reopens after a failed write).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::{free_addrs, spawn, wait_up};
use common::*;
use push_client::{Client, ClientConfig};

/// A mounted tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = data_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "the disk-full test mounts a tmpfs and must run as root (as scripts/test.sh does on CI)"
        );
        Tmpfs(dir)
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount {size}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn body(n: usize) -> String {
    // 1 KB of text that differs per message.
    let filler: String = (0..1000)
        .map(|i| char::from(b'a' + ((i * 7 + n) % 26) as u8))
        .collect();
    format!(r#"{{"to":{{"users":["full"]}},"kind":"k","payload":"{n}:{filler}","id":"m{n}"}}"#)
}

async fn publish(http: std::net::SocketAddr, n: usize) -> (u16, String) {
    let (status, _, text) = try_http(
        http,
        "POST",
        "/api/v1/push",
        Some(API_TOKEN),
        &body(n),
        WAIT,
    )
    .await
    .expect("the server answers while the disk is full");
    (status, text)
}

/// Every acknowledged message id, read back through the history API.
async fn stored_ids(http: std::net::SocketAddr) -> HashMap<u64, String> {
    let mut out = HashMap::new();
    let mut after = 0;
    loop {
        let v = user_history(http, "full", &format!("after={after}&limit=1000")).await;
        let items = v["messages"].as_array().unwrap();
        if items.is_empty() {
            return out;
        }
        for m in items {
            let pos = m["position"].as_u64().unwrap();
            let payload = m["payload"].as_str().unwrap();
            out.insert(pos, payload.split(':').next().unwrap().to_string());
            after = pos;
        }
    }
}

async fn run(store: &str) {
    let fs = Tmpfs::mount("3m");
    let dir = fs.0.join("data");
    let (tcp, http) = free_addrs();
    let mut child = spawn(tcp, http, &dir, store, "");
    wait_up(http).await;

    // Fill the disk: every 200 is a message the server promised to keep.
    let mut accepted: HashMap<u64, String> = HashMap::new();
    let mut n = 0;
    let refusal = loop {
        n += 1;
        assert!(n < 50_000, "{store}: the 3 MB disk never filled");
        let (status, text) = publish(http, n).await;
        if status != 200 {
            break (status, text);
        }
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        accepted.insert(
            v["accepted"][0]["position"].as_u64().unwrap(),
            n.to_string(),
        );
    };
    assert_eq!(refusal.0, 503, "{store}: {}", refusal.1);
    assert!(refusal.1.contains("storage"), "{store}: {}", refusal.1);
    // Still full: still refused, still alive.
    for _ in 0..3 {
        let (status, _) = publish(http, n).await;
        assert_eq!(status, 503);
    }
    let (status, _) = common::http(http, "GET", "/healthz", None, "").await;
    assert_eq!(status, 200, "alive");
    let (status, text) = common::http(http, "GET", "/readyz", None, "").await;
    assert_eq!(status, 503, "not ready while storage fails: {text}");
    assert!(text.contains("storage"), "{text}");

    // Space returns: service resumes without a restart.
    fs.resize("64m");
    let started = Instant::now();
    loop {
        let (status, text) = publish(http, n).await;
        if status == 200 {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            accepted.insert(
                v["accepted"][0]["position"].as_u64().unwrap(),
                n.to_string(),
            );
            break;
        }
        assert!(started.elapsed() < WAIT, "{store}: no recovery: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resumed_after = started.elapsed();
    let (status, text) = common::http(http, "GET", "/readyz", None, "").await;
    assert_eq!(status, 200, "ready again: {text}");

    // Nothing acknowledged was lost, now or after a SIGKILL and restart.
    assert_eq!(
        stored_ids(http).await,
        accepted,
        "{store}: stored = acknowledged"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let mut child = spawn(tcp, http, &dir, store, "");
    wait_up(http).await;
    assert_eq!(stored_ids(http).await, accepted, "{store}: after restart");
    // And the user receives every one of them, once.
    let mut client = Client::connect(ClientConfig::new(tcp, token("full")))
        .await
        .unwrap();
    let mut got: HashMap<String, usize> = HashMap::new();
    while got.len() < accepted.len() {
        let m = tokio::time::timeout(WAIT, client.next_message())
            .await
            .expect("replay in time")
            .unwrap();
        let text = String::from_utf8_lossy(&m.payload).to_string();
        *got.entry(text.split(':').next().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(got.values().all(|&c| c == 1));
    client.close();
    eprintln!(
        "disk full ({store}): {} messages acknowledged before the 3 MB disk filled, refused with 503 \
         ({}), resumed {} ms after space returned, lost 0",
        accepted.len() - 1,
        refusal.1.chars().take(120).collect::<String>(),
        resumed_after.as_millis()
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn disk_full_sled() {
    run("sled").await;
}

#[tokio::test]
async fn disk_full_redb() {
    run("redb").await;
}
