//! Hostile connections for `push-bench hostile`: slowloris (a header announcing 60 KB, then a
//! byte a second), never-reading room members, and garbage senders. Each reports how the
//! server treated it.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use push_client::protocol::{ErrorCode, Frame, Join};
use push_client::{ConnectOptions, Connection};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::spec::{Event, WorkerSpec};

/// What a hostile worker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Kind {
    /// Authenticate, announce a 60 KB frame, then send one byte a second.
    Slowloris,
    /// Authenticate with a 4 KB receive buffer, join the room, never read.
    NonReader,
    /// Connect, send garbage, expect a refusal; `rate` times a second.
    Garbage,
}

/// Counts shared by a worker's tasks.
#[derive(Default)]
struct Counts {
    up: Cell<usize>,
    failed: Cell<usize>,
    /// Connections the server ended, or garbage it refused with a documented code.
    handled: Cell<u64>,
    /// Garbage that got no documented answer.
    unanswered: Cell<u64>,
}

fn bump(c: &Cell<usize>) {
    c.set(c.get() + 1);
}

/// Runs one hostile worker until stdin says stop.
pub(crate) async fn run(spec: WorkerSpec, kind: Kind, rate: f64, room: String) {
    let Ok(addr) = spec.addr.parse() else { return };
    let counts = Rc::new(Counts::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    if kind == Kind::Garbage {
        let counts = counts.clone();
        let mut stop = stop_rx.clone();
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tick.tick() => {}
                }
                let counts = counts.clone();
                tokio::task::spawn_local(async move {
                    match garbage(addr).await {
                        Some(_) => counts.handled.set(counts.handled.get() + 1),
                        None => counts.unanswered.set(counts.unanswered.get() + 1),
                    }
                });
            }
        });
    } else {
        for i in 0..spec.count {
            let token = crate::worker::token(&spec, i);
            let (counts, mut stop, room) = (counts.clone(), stop_rx.clone(), room.clone());
            tokio::task::spawn_local(async move {
                let conn = match kind {
                    Kind::Slowloris => slowloris(addr, token).await,
                    _ => non_reader(addr, token, room).await,
                };
                let Some(mut conn) = conn else {
                    bump(&counts.failed);
                    return;
                };
                bump(&counts.up);
                if kind == Kind::NonReader {
                    // Never read; just hold the socket until told to stop.
                    let _ = stop.changed().await;
                    return;
                }
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tick.tick() => { let _ = conn.send_raw(b"x").await; }
                        r = conn.recv() => match r {
                            Ok(p) if matches!(p.frame, Frame::Ping) => continue,
                            _ => {
                                counts.handled.set(counts.handled.get() + 1);
                                return;
                            }
                        },
                    }
                }
            });
        }
        while counts.up.get() + counts.failed.get() < spec.count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    crate::worker::emit(&Event::Ready {
        ok: counts.up.get(),
        failed: counts.failed.get(),
        elapsed_ms: 0,
        error: None,
    });
    crate::worker::wait_for_stop().await;
    let _ = stop_tx.send(true);
    crate::worker::emit(&Event::Done {
        received: 0,
        duplicates: 0,
        lost_connections: 0,
        cycles_ok: counts.handled.get(),
        cycles_failed: counts.unanswered.get(),
        hist: Vec::new(),
        error: None,
    });
}

async fn slowloris(addr: std::net::SocketAddr, token: String) -> Option<Connection> {
    let opts = ConnectOptions {
        token,
        timeout: Some(Duration::from_secs(30)),
        ..ConnectOptions::default()
    };
    let mut c = Connection::connect(addr, &opts).await.ok()?;
    // A JOIN header announcing 60,000 bytes, then silence but for a byte a second.
    let mut h = b"PUSH\x00\x01\x00\x08".to_vec();
    h.extend_from_slice(&60_000u32.to_be_bytes());
    h.extend_from_slice(&1u32.to_be_bytes());
    c.send_raw(&h).await.ok()?;
    Some(c)
}

async fn non_reader(addr: std::net::SocketAddr, token: String, room: String) -> Option<Connection> {
    let sock = TcpSocket::new_v4().ok()?;
    sock.set_recv_buffer_size(4096).ok()?;
    let stream = sock.connect(addr).await.ok()?;
    let opts = ConnectOptions {
        token,
        ..ConnectOptions::default()
    };
    let mut c = Connection::handshake(stream, &opts).await.ok()?;
    c.request(Frame::Join(Join {
        room,
        resume_after: None,
    }))
    .await
    .ok()?;
    Some(c)
}

/// Sends garbage on a fresh connection; returns the refusal's code if one came.
async fn garbage(addr: std::net::SocketAddr) -> Option<ErrorCode> {
    let s = TcpStream::connect(addr).await.ok()?;
    let mut c = Connection::from_stream(s);
    c.send_raw(b"\x16\x03\x01 not a push frame at all....")
        .await
        .ok()?;
    match tokio::time::timeout(Duration::from_secs(5), c.recv()).await {
        Ok(Ok(p)) => match p.frame {
            Frame::AuthError(e) => Some(e.code),
            _ => None,
        },
        _ => None,
    }
}
