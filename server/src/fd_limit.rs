//! The process's open-file limit, which bounds connections before any setting does: a server
//! allowed more connections than descriptors fails `accept` with EMFILE, which stalls every
//! new connection, instead of refusing the extra ones with TOO_MANY_CONNECTIONS.

/// Descriptors kept for listeners, storage files, NATS, logs and the like.
const RESERVE: usize = 1000;

/// The soft "Max open files" limit from the text of `/proc/self/limits`.
fn soft_nofile(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `max_connections` lowered to what the descriptor limit `soft` allows, if it is lower.
fn capped(max_connections: usize, soft: Option<usize>) -> usize {
    match soft {
        Some(soft) => max_connections.min(soft.saturating_sub(RESERVE).max(1)),
        None => max_connections,
    }
}

/// `max_connections`, lowered (with a warning) when this process may not open that many
/// sockets.
pub(crate) fn cap_connections(max_connections: usize) -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| soft_nofile(&t));
    let effective = capped(max_connections, soft);
    if effective < max_connections {
        tracing::warn!(
            configured = max_connections,
            effective,
            open_files_limit = soft,
            "max_connections lowered to fit the open-file limit (raise `ulimit -n` for more)"
        );
    }
    effective
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_soft_limit_and_caps() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max cpu time              unlimited            unlimited            seconds\n\
                    Max open files            20000                20000                files\n";
        assert_eq!(soft_nofile(text), Some(20000));
        assert_eq!(
            soft_nofile("Max open files unlimited unlimited files"),
            None
        );
        assert_eq!(capped(100_000, Some(20_000)), 19_000);
        assert_eq!(capped(5_000, Some(20_000)), 5_000);
        assert_eq!(capped(100_000, None), 100_000);
        assert_eq!(capped(100, Some(10)), 1);
        // This process has a limit, and the cap never exceeds the setting.
        assert!(cap_connections(100_000) <= 100_000);
    }
}
