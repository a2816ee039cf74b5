//! Spawns worker processes (one process holds at most ~19,000 sockets here) and gathers their
//! JSON-line events.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::spec::{Event, WorkerSpec};

/// Running workers.
pub(crate) struct Workers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    events: mpsc::UnboundedReceiver<(usize, Event)>,
    /// Latest received count per worker.
    pub received: Vec<u64>,
    /// Done events that arrived before `stop` (workers with a fixed run time, like churn).
    early_done: Vec<Event>,
    /// Other final events that arrived before `stop`.
    early_other: Vec<Event>,
}

/// Sum of the workers' Ready events.
#[derive(Debug, Default)]
pub(crate) struct Ready {
    /// Authenticated connections.
    pub ok: usize,
    /// Failed attempts.
    pub failed: usize,
    /// Slowest worker's time to open its share.
    pub elapsed: Duration,
    /// First error reported.
    pub error: Option<String>,
}

impl Workers {
    /// Starts one process per spec.
    pub(crate) fn spawn(specs: Vec<WorkerSpec>) -> std::io::Result<Workers> {
        let exe = std::env::current_exe()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let mut child = Command::new(&exe)
                .arg("worker")
                .arg(serde_json::to_string(spec).expect("spec serializes"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            stdins.push(child.stdin.take().expect("piped stdin"));
            let stdout = child.stdout.take().expect("piped stdout");
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<Event>(&line) {
                        Ok(e) => {
                            let _ = tx.send((i, e));
                        }
                        Err(_) => eprintln!("worker {i}: {line}"),
                    }
                }
            });
            children.push(child);
        }
        let n = children.len();
        Ok(Workers {
            children,
            stdins,
            events: rx,
            received: vec![0; n],
            early_done: Vec::new(),
            early_other: Vec::new(),
        })
    }

    /// Waits until every worker has reported Ready.
    pub(crate) async fn wait_ready(&mut self, timeout: Duration) -> Ready {
        let mut ready = Ready::default();
        let mut seen = 0;
        let deadline = Instant::now() + timeout;
        while seen < self.children.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some((
                    _,
                    Event::Ready {
                        ok,
                        failed,
                        elapsed_ms,
                        error,
                    },
                ))) => {
                    seen += 1;
                    ready.ok += ok;
                    ready.failed += failed;
                    ready.elapsed = ready.elapsed.max(Duration::from_millis(elapsed_ms));
                    if ready.error.is_none() {
                        ready.error = error;
                    }
                }
                Ok(Some((i, Event::Progress { received }))) => self.received[i] = received,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    ready
                        .error
                        .get_or_insert_with(|| "workers did not get ready in time".into());
                    break;
                }
            }
        }
        ready
    }

    /// Total received so far according to progress events, waiting up to `wait` for news.
    pub(crate) async fn poll_received(&mut self, wait: Duration) -> u64 {
        if let Ok(Some((i, e))) = tokio::time::timeout(wait, self.events.recv()).await {
            self.note(i, e);
            while let Ok((i, e)) = self.events.try_recv() {
                self.note(i, e);
            }
        }
        self.received.iter().sum()
    }

    fn note(&mut self, i: usize, e: Event) {
        match e {
            Event::Progress { received } => self.received[i] = received,
            done @ Event::Done { .. } => self.early_done.push(done),
            other @ Event::Reconnects { .. } => self.early_other.push(other),
            Event::Ready { .. } => {}
        }
    }

    /// Tells every worker to stop and collects their `Done` events (followed by any
    /// `Reconnects` events).
    pub(crate) async fn stop(mut self) -> Vec<Event> {
        for stdin in &mut self.stdins {
            let _ = stdin.write_all(b"stop\n").await;
            let _ = stdin.flush().await;
        }
        let mut done = std::mem::take(&mut self.early_done);
        let mut other = std::mem::take(&mut self.early_other);
        let deadline = Instant::now() + Duration::from_secs(60);
        while done.len() < self.children.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some((_, e @ Event::Done { .. }))) => done.push(e),
                Ok(Some((_, e @ Event::Reconnects { .. }))) => other.push(e),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        done.extend(other);
        drop(self.stdins);
        for c in &mut self.children {
            let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
        }
        done
    }
}

/// Splits `total` connections over processes of at most `per_worker` each.
pub(crate) fn split(total: usize, per_worker: usize) -> Vec<(usize, usize)> {
    let workers = total.div_ceil(per_worker.max(1)).max(1);
    let base = total / workers;
    let extra = total % workers;
    let mut out = Vec::new();
    let mut first = 0;
    for w in 0..workers {
        let n = base + usize::from(w < extra);
        out.push((first, n));
        first += n;
    }
    out
}

impl Workers {
    /// Waits until `expected` deliveries have arrived, or until none arrived for `quiet`;
    /// returns how many did.
    pub(crate) async fn drain_received(&mut self, expected: u64, quiet: Duration) -> u64 {
        let mut received = 0;
        let mut last_change = std::time::Instant::now();
        while received < expected && last_change.elapsed() < quiet {
            let r = self.poll_received(Duration::from_millis(250)).await;
            if r != received {
                received = r;
                last_change = std::time::Instant::now();
            }
        }
        received
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_everything_within_the_cap() {
        let s = split(18_000, 9_000);
        assert_eq!(s, vec![(0, 9000), (9000, 9000)]);
        let s = split(10, 3);
        assert_eq!(s.iter().map(|x| x.1).sum::<usize>(), 10);
        assert!(s.iter().all(|x| x.1 <= 3));
    }
}
