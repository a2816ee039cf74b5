//! Server resource use read from /proc: resident memory and CPU time.

/// The server processes measured: one, or every node of a cluster (figures are summed; none
/// when a process cannot be read).
#[derive(Debug, Clone, Default)]
pub(crate) struct Servers(pub Vec<u32>);

impl Servers {
    fn sum<T: std::iter::Sum<T>>(&self, f: impl Fn(u32) -> Option<T>) -> Option<T> {
        if self.0.is_empty() {
            return None;
        }
        self.0.iter().map(|p| f(*p)).sum()
    }

    /// Resident memory of all of them, in bytes.
    pub(crate) fn rss_bytes(&self) -> Option<u64> {
        self.sum(rss_bytes)
    }

    /// Proportional set size of all of them, in bytes: pages shared between the nodes (the
    /// same binary's code, mapped by each) counted once, not once per process as RSS does.
    pub(crate) fn pss_bytes(&self) -> Option<u64> {
        self.sum(pss_bytes)
    }

    /// CPU seconds all of them consumed so far.
    pub(crate) fn cpu_seconds(&self) -> Option<f64> {
        self.sum(cpu_seconds)
    }

    /// Open descriptors of all of them.
    pub(crate) fn open_fds(&self) -> Option<usize> {
        self.sum(open_fds)
    }
}

/// Resident set size of `pid` in bytes.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Proportional set size of `pid` in bytes (shared pages divided among their sharers).
pub(crate) fn pss_bytes(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = rollup.lines().find(|l| l.starts_with("Pss:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User + system CPU seconds consumed by `pid` so far.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line: 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second())
}

fn ticks_per_second() -> f64 {
    // CLK_TCK is 100 on every Linux this runs on; getconf confirms it when available.
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Open file descriptors of `pid`.
pub(crate) fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(pss_bytes(pid).unwrap() > 0);
        assert!(cpu_seconds(pid).is_some());
        assert!(open_fds(pid).unwrap() > 0);
        let two = Servers(vec![pid, pid]);
        assert!(two.open_fds().unwrap() >= 2 * open_fds(pid).unwrap() - 2);
        assert!(Servers::default().rss_bytes().is_none());
        assert!(Servers(vec![pid, u32::MAX]).rss_bytes().is_none());
    }
}
