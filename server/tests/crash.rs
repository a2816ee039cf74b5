//! SIGKILL the real server binary while publishers stream messages with ids, restart it, and
//! check that every acknowledged message reaches its user exactly once (application view).
//!
//! Scale with CRASH_MESSAGES, CRASH_KILLS, CRASH_PUBLISHERS, CRASH_KILL_MS_MAX (longest time a
//! server lives before its SIGKILL) and CRASH_STORE (sled|redb); the defaults are a small CI
//! run. The figures are printed.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{free_addrs, spawn, wait_up};
use common::*;
use push_client::{Client, ClientConfig};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn random_ms(lo: u64, hi: u64) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    lo + RandomState::new().hash_one(Instant::now()) % (hi - lo).max(1)
}

/// POSTs a push with a short timeout; `None` when the outcome is unknown (server died).
async fn try_push(http: SocketAddr, body: &str) -> Option<u16> {
    common::try_http(
        http,
        "POST",
        "/api/v1/push",
        Some(API_TOKEN),
        body,
        Duration::from_secs(5),
    )
    .await
    .map(|(status, _, _)| status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_message_and_delivers_none_twice() {
    let total = env_or("CRASH_MESSAGES", 3000);
    let kills = env_or("CRASH_KILLS", 2);
    let publishers = env_or("CRASH_PUBLISHERS", 4);
    let store = std::env::var("CRASH_STORE").unwrap_or_else(|_| "redb".into());
    let users = ["crash-a", "crash-b", "crash-c"];
    let tmp = temp_dir();
    let dir = tmp.path().to_path_buf();
    let (tcp, http) = free_addrs();

    // Ids whose publish got a 200: these must all arrive.
    let acked: Arc<Mutex<HashMap<String, &'static str>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Ids whose outcome is unknown (the server died mid-request); retried with the same id.
    let unknown: Arc<Mutex<Vec<usize>>> = Arc::default();
    let started = Instant::now();
    let mut killed = 0;
    while killed <= kills {
        // Keep every unacknowledged message however long the run (the default bound of 10,000
        // per user would drop the oldest of a large run by design, with a GAP).
        let mut child = spawn(tcp, http, &dir, &store, "user_max_pending = 100000000\n");
        wait_up(http).await;
        let last_round = killed == kills;
        let mut tasks = Vec::new();
        for _ in 0..publishers {
            let (acked, next, unknown) = (acked.clone(), next.clone(), unknown.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let retry = unknown.lock().unwrap().pop();
                    let n = match retry {
                        Some(n) => n,
                        None => {
                            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if n >= total {
                                return;
                            }
                            n
                        }
                    };
                    let user = users[n % users.len()];
                    let body = format!(
                        r#"{{"to":{{"users":["{user}"]}},"kind":"crash","payload":"m{n}","id":"m{n}"}}"#
                    );
                    match try_push(http, &body).await {
                        Some(200) => {
                            acked.lock().unwrap().insert(format!("m{n}"), user);
                        }
                        _ => {
                            unknown.lock().unwrap().push(n);
                            return;
                        }
                    }
                }
            }));
        }
        if last_round {
            for t in tasks {
                t.await.unwrap();
            }
            // Drain anything left unknown from earlier rounds against the live server.
            loop {
                let Some(n) = unknown.lock().unwrap().pop() else {
                    break;
                };
                let user = users[n % users.len()];
                let body = format!(
                    r#"{{"to":{{"users":["{user}"]}},"kind":"crash","payload":"m{n}","id":"m{n}"}}"#
                );
                assert_eq!(try_push(http, &body).await, Some(200));
                acked.lock().unwrap().insert(format!("m{n}"), user);
            }
            // Receive as each user through the SDK (auto-ack, dedupe by id).
            let acked = acked.lock().unwrap().clone();
            let mut received: HashMap<String, usize> = HashMap::new();
            for user in users {
                let want: HashSet<&String> = acked
                    .iter()
                    .filter(|(_, u)| **u == user)
                    .map(|(id, _)| id)
                    .collect();
                let mut client = Client::connect(ClientConfig::new(tcp, token(user)))
                    .await
                    .unwrap();
                let mut got = 0;
                while got < want.len() {
                    let m = tokio::time::timeout(WAIT, client.next_message())
                        .await
                        .unwrap_or_else(|_| panic!("{user}: {got}/{} received", want.len()))
                        .unwrap();
                    let id = String::from_utf8_lossy(&m.payload).to_string();
                    *received.entry(id.clone()).or_default() += 1;
                    if want.contains(&id) {
                        got += 1;
                    }
                }
                client.close();
            }
            let lost = acked
                .keys()
                .filter(|id| !received.contains_key(*id))
                .count();
            let twice = received.values().filter(|c| **c > 1).count();
            eprintln!(
                "crash test ({store}): {} messages acknowledged over {kills} SIGKILLs in {:.1} s, {} received, lost {lost}, delivered twice to the application {twice}",
                acked.len(),
                started.elapsed().as_secs_f64(),
                received.len()
            );
            assert_eq!(lost, 0, "acknowledged messages lost");
            assert_eq!(twice, 0, "messages delivered twice to the application");
            assert_eq!(acked.len(), total);
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        let max_ms = env_or("CRASH_KILL_MS_MAX", 300) as u64;
        tokio::time::sleep(Duration::from_millis(random_ms(max_ms / 6, max_ms))).await;
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        killed += 1;
        eprintln!(
            "SIGKILL {killed}: {} acknowledged so far",
            acked.lock().unwrap().len()
        );
        for t in tasks {
            t.await.unwrap();
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
