//! Recovery from storage failures: after an error both sled and redb refuse further work
//! (sled keeps a global error, redb answers `PreviousIo`), so a disk that fills up and then
//! frees space would keep the server failing forever. This wrapper closes the backend after a
//! failed write and reopens it from disk, at most once per interval, on the next request. What
//! was committed before the failure is on disk and comes back with the reopen; the failed batch
//! was refused to its publishers, so nothing acknowledged is lost.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Backend, Kv, Op, Rows, StoreError};

/// Shortest time between two reopen attempts.
const RETRY: Duration = Duration::from_millis(500);

struct State {
    kv: Option<Box<dyn Kv>>,
    /// Set after a failed write: the backend must be reopened before it is trusted again.
    broken: Option<String>,
    next_try: Instant,
}

/// A backend that reopens itself after failures.
pub(super) struct Reopening {
    backend: Backend,
    dir: PathBuf,
    name: &'static str,
    state: Mutex<State>,
}

impl Reopening {
    /// Wraps an open backend.
    pub(super) fn new(backend: Backend, dir: PathBuf, kv: Box<dyn Kv>) -> Self {
        Reopening {
            backend,
            dir,
            name: kv.name(),
            state: Mutex::new(State {
                kv: Some(kv),
                broken: None,
                next_try: Instant::now(),
            }),
        }
    }

    /// Runs `f` on a healthy backend, reopening it first if a failure left it broken.
    fn with<T>(
        &self,
        write: bool,
        f: impl FnOnce(&dyn Kv) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cause) = st.broken.clone() {
            if Instant::now() < st.next_try {
                return Err(StoreError::Backend(format!(
                    "storage unavailable since: {cause}; retrying"
                )));
            }
            st.next_try = Instant::now() + RETRY;
            // Close first: both backends lock their files.
            st.kv = None;
            match super::open_backend(self.backend, &self.dir) {
                Ok(kv) => {
                    tracing::warn!(backend = self.name, "storage reopened after: {cause}");
                    st.kv = Some(kv);
                    st.broken = None;
                }
                Err(e) => {
                    return Err(StoreError::Backend(format!(
                        "storage unavailable since: {cause}; reopening failed: {e}"
                    )))
                }
            }
        }
        let Some(kv) = st.kv.as_deref() else {
            return Err(StoreError::Backend("storage closed".into()));
        };
        let result = f(kv);
        if let Err(e) = &result {
            if write {
                tracing::warn!(
                    backend = self.name,
                    "write failed, will reopen storage: {e}"
                );
                st.broken = Some(e.to_string());
                st.next_try = Instant::now() + RETRY;
            }
        }
        result
    }
}

impl Kv for Reopening {
    fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        self.with(true, |kv| kv.apply(ops))
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(false, |kv| kv.get(key))
    }

    fn scan(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Rows, StoreError> {
        self.with(false, |kv| kv.scan(from, to, limit))
    }

    fn name(&self) -> &'static str {
        self.name
    }
}
