//! A node killed under load (`--kill-pid` with `--resilient` receivers): the SIGKILL at a set
//! time, and the reconnect storm that follows, measured from the receivers' reports.

use serde::Serialize;

use crate::spec::{unix_micros, Event};

/// SIGKILLs `pid` `after` seconds from now; answers when (µs since the Unix epoch).
pub(crate) fn kill_later(pid: u32, after: f64) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs_f64(after)).await;
        let at = unix_micros();
        let status = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        match status {
            Ok(s) if s.success() => eprintln!("\n  killed node {pid}"),
            other => eprintln!("\n  could not kill {pid}: {other:?}"),
        }
        at
    })
}

/// What the receivers went through after the kill.
#[derive(Debug, Serialize)]
pub(crate) struct Storm {
    /// The process killed.
    pub killed_pid: u32,
    /// Receivers' sessions established again, all together.
    pub reconnects: u64,
    /// GAP notices the receivers got (history no longer available).
    pub gaps: u64,
    /// From the kill to the last reconnect, s.
    pub all_reconnected_after_s: f64,
    /// Reconnects per second over that time.
    pub reconnects_per_second: f64,
}

impl Storm {
    /// Sums the workers' `Reconnects` events against the kill time.
    pub(crate) fn of(killed_pid: u32, killed_us: u64, events: &[Event]) -> Storm {
        let (mut count, mut gaps, mut last) = (0, 0, 0);
        for e in events {
            if let Event::Reconnects {
                count: c,
                gaps: g,
                last_us,
            } = e
            {
                count += c;
                gaps += g;
                last = last.max(*last_us);
            }
        }
        let span = last.saturating_sub(killed_us) as f64 / 1e6;
        Storm {
            killed_pid,
            reconnects: count,
            gaps,
            all_reconnected_after_s: (span * 1000.0).round() / 1000.0,
            reconnects_per_second: if span > 0.0 {
                (count as f64 / span).round()
            } else {
                0.0
            },
        }
    }
}
