//! A worker process: holds its share of connections on one thread and reports JSON lines.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use push_client::protocol::{Frame, Join, Stream, StreamPos};
use push_client::{ConnectOptions, Connection};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{watch, Semaphore};
use tokio::task::LocalSet;

use crate::peer::{Peer, PeerConn};
use crate::spec::{stamp_of, unix_micros, Event, Mode, WorkerSpec};

/// A connection the receive loop can read pushes from and acknowledge on.
pub(crate) trait PushSource {
    /// Joins a room and waits for the answer.
    async fn join(&mut self, room: String) -> Result<(), String>;
    /// The next frame that is not a heartbeat (heartbeats are answered).
    async fn next_frame(&mut self) -> Result<Frame, String>;
    /// Sends a frame.
    async fn send_frame(&mut self, frame: Frame) -> Result<(), String>;
}

impl PushSource for Connection {
    async fn join(&mut self, room: String) -> Result<(), String> {
        let join = Frame::Join(Join {
            room,
            resume_after: None,
        });
        self.request(join)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn next_frame(&mut self) -> Result<Frame, String> {
        self.next()
            .await
            .map(|p| p.frame)
            .map_err(|e| e.to_string())
    }

    async fn send_frame(&mut self, frame: Frame) -> Result<(), String> {
        self.send(frame)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Holds one connection: joins `room`, then counts (and with `record`, times and
/// acknowledges) every PUSH until told to stop.
async fn receive<S: PushSource>(
    mut conn: S,
    room: Option<String>,
    permit: tokio::sync::SemaphorePermit<'_>,
    mut stop: watch::Receiver<bool>,
    tally: Rc<Tally>,
    hist: Rc<RefCell<Histogram<u64>>>,
    record: bool,
) {
    if let Some(room) = room {
        if let Err(e) = conn.join(room).await {
            tally.failed.set(tally.failed.get() + 1);
            tally.note_error(e);
            return;
        }
    }
    drop(permit);
    tally.ok.set(tally.ok.get() + 1);
    let mut last: Option<(Stream, u64)> = None;
    loop {
        let frame = tokio::select! {
            _ = stop.changed() => return,
            f = conn.next_frame() => f,
        };
        let push = match frame {
            Ok(Frame::Push(push)) => push,
            Ok(_) => continue,
            Err(e) => {
                tally.lost.set(tally.lost.get() + 1);
                tally.note_error(e);
                return;
            }
        };
        if !record {
            continue;
        }
        let now = unix_micros();
        if let Some(ts) = stamp_of(&push.payload) {
            let _ = hist.borrow_mut().record(now.saturating_sub(ts).max(1));
        }
        // A transient message (position 0) has no place in its stream to check or acknowledge.
        let stored = push.position != 0;
        if stored && matches!(&last, Some((s, pos)) if *s == push.stream && push.position <= *pos) {
            tally.duplicates.set(tally.duplicates.get() + 1);
        }
        if stored && push.stream == Stream::User {
            // Acknowledge like the SDK does, so the server neither keeps nor resends what was
            // received.
            let ack = Frame::Ack(vec![StreamPos {
                stream: Stream::User,
                position: push.position,
            }]);
            if conn.send_frame(ack).await.is_err() {
                tally.lost.set(tally.lost.get() + 1);
                return;
            }
        }
        if stored {
            last = Some((push.stream, push.position));
        }
        tally.received.set(tally.received.get() + 1);
    }
}

/// Prints one event line.
pub(crate) fn emit(e: &Event) {
    println!("{}", serde_json::to_string(e).expect("event serializes"));
}

pub(crate) fn token(spec: &WorkerSpec, i: usize) -> String {
    crate::spec::bench_token(
        &spec.secret,
        format!("{}{}", spec.user_prefix, spec.first + i),
    )
}

async fn join_and_leave(c: &mut Connection, room: String) -> Result<(), push_client::ClientError> {
    c.request(Frame::Join(Join {
        room: room.clone(),
        resume_after: None,
    }))
    .await?;
    c.request(Frame::Leave(room)).await?;
    Ok(())
}

/// One set of TLS options per worker: its connections share the rustls configuration and
/// its session tickets, as one application's connections through the SDK do.
fn tls_options(spec: &WorkerSpec) -> Option<push_client::TlsOptions> {
    spec.tls.as_ref().map(|(name, pem)| {
        push_client::TlsOptions::new(name.clone())
            .with_ca_pem(pem.as_bytes())
            .expect("a CA certificate in --tls-ca")
    })
}

#[derive(Default)]
struct Tally {
    ok: Cell<usize>,
    failed: Cell<usize>,
    received: Cell<u64>,
    duplicates: Cell<u64>,
    lost: Cell<u64>,
    error: RefCell<Option<String>>,
}

impl Tally {
    fn note_error(&self, e: String) {
        let mut slot = self.error.borrow_mut();
        if slot.is_none() {
            *slot = Some(e);
        }
    }
}

/// Runs the worker described by `spec` until stdin says stop (or closes).
pub(crate) fn run(spec: WorkerSpec) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = LocalSet::new();
    local.block_on(&rt, async move {
        match spec.mode.clone() {
            Mode::Churn {
                rate,
                seconds,
                rooms,
            } => churn(spec, rate, seconds, rooms).await,
            Mode::Idle { room } | Mode::IdleWs { room } => hold(spec, room, false).await,
            Mode::ReceiveWs { room, .. } => hold(spec, room, true).await,
            Mode::Receive { room } | Mode::ReceiveResilient { room } => {
                hold(spec, room, true).await
            }
            Mode::Hostile { kind, rate, room } => {
                crate::hostile_worker::run(spec, kind, rate, room).await
            }
        }
    });
    Ok(())
}

pub(crate) async fn wait_for_stop() {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == "stop" {
            return;
        }
    }
}

async fn hold(spec: WorkerSpec, room: Option<String>, record: bool) {
    let Ok(addr) = spec.addr.parse() else {
        emit(&Event::Ready {
            ok: 0,
            failed: spec.count,
            elapsed_ms: 0,
            error: Some(format!("bad address {}", spec.addr)),
        });
        return;
    };
    let tally = Rc::new(Tally::default());
    let hist = Rc::new(RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds"),
    ));
    let sem = Rc::new(Semaphore::new(spec.concurrency.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let resilient = matches!(spec.mode, Mode::ReceiveResilient { .. });
    let reconnects = Rc::new(crate::resilient::Reconnects::default());
    let tls = tls_options(&spec);
    for i in 0..spec.count {
        let opts = ConnectOptions {
            token: token(&spec, i),
            timeout: Some(Duration::from_secs(30)),
            tls: tls.clone(),
            local_ip: spec.source_ip,
            ..ConnectOptions::default()
        };
        let (tally, hist, sem, room) = (tally.clone(), hist.clone(), sem.clone(), room.clone());
        let stop = stop_rx.clone();
        let ws = matches!(spec.mode, Mode::IdleWs { .. } | Mode::ReceiveWs { .. });
        let json = matches!(spec.mode, Mode::ReceiveWs { json: true, .. });
        let reconnects = reconnects.clone();
        let (peer, name) = (spec.peer, format!("{}{}", spec.user_prefix, spec.first + i));
        tokio::task::spawn_local(async move {
            let permit = sem.acquire().await.expect("semaphore open");
            let failure = if resilient {
                let (token, ip) = (opts.token.clone(), opts.local_ip);
                match crate::resilient::Resilient::connect(addr, token, ip, reconnects).await {
                    Ok(c) => return receive(c, room, permit, stop, tally, hist, record).await,
                    Err(e) => e,
                }
            } else if peer != Peer::Push {
                match PeerConn::connect(peer, addr, &name, opts.local_ip).await {
                    Ok(c) => return receive(c, room, permit, stop, tally, hist, record).await,
                    Err(e) => e.to_string(),
                }
            } else if ws {
                match crate::ws::WsConn::connect(addr, &opts.token, json).await {
                    Ok(c) => return receive(c, room, permit, stop, tally, hist, record).await,
                    Err(e) => e.to_string(),
                }
            } else {
                match Connection::connect(addr, &opts).await {
                    Ok(c) => return receive(c, room, permit, stop, tally, hist, record).await,
                    Err(e) => e.to_string(),
                }
            };
            tally.failed.set(tally.failed.get() + 1);
            tally.note_error(failure);
        });
    }
    while tally.ok.get() + tally.failed.get() < spec.count {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    emit(&Event::Ready {
        ok: tally.ok.get(),
        failed: tally.failed.get(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        error: tally.error.borrow().clone(),
    });
    let progress = {
        let tally = tally.clone();
        tokio::task::spawn_local(async move {
            let mut last = u64::MAX;
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let r = tally.received.get();
                if r != last {
                    emit(&Event::Progress { received: r });
                    last = r;
                }
            }
        })
    };
    wait_for_stop().await;
    progress.abort();
    let _ = stop_tx.send(true);
    let hist = hist.borrow();
    if resilient {
        emit(&Event::Reconnects {
            count: reconnects.count.get(),
            gaps: reconnects.gaps.get(),
            last_us: reconnects.last_us.get(),
        });
    }
    emit(&Event::Done {
        received: tally.received.get(),
        duplicates: tally.duplicates.get(),
        lost_connections: tally.lost.get(),
        cycles_ok: 0,
        cycles_failed: 0,
        hist: hist
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect(),
        error: tally.error.borrow().clone(),
    });
}

async fn churn(spec: WorkerSpec, rate: f64, seconds: f64, rooms: bool) {
    let Ok(addr) = spec.addr.parse() else {
        return;
    };
    emit(&Event::Ready {
        ok: 0,
        failed: 0,
        elapsed_ms: 0,
        error: None,
    });
    let tally = Rc::new(Tally::default());
    let sem = std::sync::Arc::new(Semaphore::new(spec.concurrency.max(1)));
    let hist = Rc::new(RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds"),
    ));
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut i = 0usize;
    let tls = tls_options(&spec);
    while Instant::now() < end {
        tick.tick().await;
        let permit = sem.clone().acquire_owned().await.expect("semaphore open");
        let opts = ConnectOptions {
            token: token(&spec, i % spec.count.max(1)),
            timeout: Some(Duration::from_secs(10)),
            tls: tls.clone(),
            local_ip: spec.source_ip,
            ..ConnectOptions::default()
        };
        i += 1;
        let (tally, hist) = (tally.clone(), hist.clone());
        tokio::task::spawn_local(async move {
            let t = Instant::now();
            match Connection::connect(addr, &opts).await {
                Ok(mut c) => {
                    let _ = hist
                        .borrow_mut()
                        .record(t.elapsed().as_micros().max(1) as u64);
                    let room = format!("churn-{}", i % 16);
                    let joined = !rooms || join_and_leave(&mut c, room).await.is_ok();
                    let _ = c.close().await;
                    if joined {
                        tally.ok.set(tally.ok.get() + 1);
                    } else {
                        tally.failed.set(tally.failed.get() + 1);
                    }
                }
                Err(e) => {
                    tally.failed.set(tally.failed.get() + 1);
                    tally.note_error(e.to_string());
                }
            }
            drop(permit);
        });
    }
    // Let in-flight cycles finish.
    let _ = sem.acquire_many(spec.concurrency.max(1) as u32).await;
    let hist_pairs: Vec<(u64, u64)> = hist
        .borrow()
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect();
    emit(&Event::Done {
        received: 0,
        duplicates: 0,
        lost_connections: 0,
        cycles_ok: tally.ok.get() as u64,
        cycles_failed: tally.failed.get() as u64,
        hist: hist_pairs,
        error: tally.error.borrow().clone(),
    });
    wait_for_stop().await;
}
