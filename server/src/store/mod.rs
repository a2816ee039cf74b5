//! Durable storage behind a small key-value trait of our own, so the rest of the server never
//! sees sled's or redb's types.
//!
//! One ordered keyspace; the first key byte says what a key holds (see `keys`). Every write
//! goes through [`Kv::apply`]: one atomic batch, durable when it returns (group commit happens
//! above, in the delivery engine).

mod epoch;
mod keys;
mod mem_kv;
mod record;
mod redb_kv;
mod reopen;
mod sled_kv;

use std::path::Path;

pub use epoch::{load_epoch, new_epoch};
pub use keys::{
    idem_key, meta_key, position_of as keys_position, record_key, record_range, IDEM_PREFIX,
    META_PREFIX,
};
pub use record::{decode_accepted, encode_accepted, Meta, Record};

/// Bytes the files under `dir` take (the store's size on disk, for `push_storage_bytes`).
pub fn disk_bytes(dir: &Path) -> u64 {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => std::fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| disk_bytes(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

/// A storage failure: the request is refused with a reason, never dropped silently.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend reported an error (disk full, I/O error, corruption).
    #[error("storage error: {0}")]
    Backend(String),
    /// A stored value could not be decoded.
    #[error("corrupt stored value: {0}")]
    Corrupt(&'static str),
}

/// Key-value pairs read by a scan.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// One write in a batch.
#[derive(Debug, Clone)]
pub enum Op {
    /// Insert or overwrite.
    Put(Vec<u8>, Vec<u8>),
    /// Remove if present.
    Delete(Vec<u8>),
}

/// The storage interface the delivery engine needs.
pub trait Kv: Send + 'static {
    /// Applies every op atomically and durably.
    fn apply(&self, ops: &[Op]) -> Result<(), StoreError>;
    /// Reads one key.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Reads up to `limit` entries with `from <= key < to`, in key order.
    fn scan(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Rows, StoreError>;
    /// Backend name for logs.
    fn name(&self) -> &'static str;
}

/// Which backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// sled 0.34 (the customer's choice).
    Sled,
    /// redb (stable file format, durable commits).
    Redb,
    /// In memory only: nothing survives a restart (tests, throwaway deployments).
    Memory,
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sled" => Ok(Backend::Sled),
            "redb" => Ok(Backend::Redb),
            "memory" => Ok(Backend::Memory),
            other => Err(format!("unknown store {other:?}: use sled, redb or memory")),
        }
    }
}

/// Opens (creating if needed) the store of `backend` under `dir`; after a failed write it
/// reopens itself from disk on a later request (`reopen`), so service resumes once the cause
/// (a full disk, say) is gone.
pub fn open(backend: Backend, dir: &Path) -> Result<Box<dyn Kv>, StoreError> {
    if backend == Backend::Memory {
        return Ok(Box::new(mem_kv::MemKv::default()));
    }
    let kv = open_backend(backend, dir)?;
    Ok(Box::new(reopen::Reopening::new(
        backend,
        dir.to_path_buf(),
        kv,
    )))
}

fn open_backend(backend: Backend, dir: &Path) -> Result<Box<dyn Kv>, StoreError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", dir.display())))?;
    Ok(match backend {
        Backend::Sled => Box::new(sled_kv::SledKv::open(&dir.join("sled"))?),
        Backend::Redb => Box::new(redb_kv::RedbKv::open(&dir.join("push.redb"))?),
        Backend::Memory => Box::new(mem_kv::MemKv::default()),
    })
}

/// Bytes used on disk under `dir` (for metrics and the bounded-disk test).
pub fn disk_usage(dir: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => std::fs::read_dir(p)
                .map(|rd| rd.flatten().map(|e| walk(&e.path())).sum())
                .unwrap_or(0),
            Ok(m) => m.len(),
            Err(_) => 0,
        }
    }
    walk(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(kv: &dyn Kv) {
        kv.apply(&[
            Op::Put(b"a1".to_vec(), b"x".to_vec()),
            Op::Put(b"a2".to_vec(), b"y".to_vec()),
            Op::Put(b"b1".to_vec(), b"z".to_vec()),
        ])
        .unwrap();
        assert_eq!(kv.get(b"a2").unwrap().as_deref(), Some(&b"y"[..]));
        let got = kv.scan(b"a", b"b", 10).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(kv.scan(b"a", b"c", 1).unwrap().len(), 1);
        kv.apply(&[Op::Delete(b"a1".to_vec())]).unwrap();
        assert_eq!(kv.get(b"a1").unwrap(), None);
        assert_eq!(kv.scan(b"a", b"b", 10).unwrap().len(), 1);
    }

    #[test]
    fn the_memory_backend_behaves_like_the_others() {
        let kv = open(Backend::Memory, Path::new("/nonexistent")).unwrap();
        exercise(kv.as_ref());
        assert_eq!(kv.scan(b"b", b"a", 10).unwrap().len(), 0, "empty range");
    }

    #[test]
    fn both_backends_behave_alike() {
        for backend in [Backend::Sled, Backend::Redb] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("store");
            {
                let kv = open(backend, &dir).unwrap();
                exercise(kv.as_ref());
            }
            // Reopen: data survives. sled releases its file lock from a background thread,
            // so an immediate reopen may briefly find it held (the server's reopen retries too).
            let mut kv = open(backend, &dir);
            for _ in 0..100 {
                if kv.is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
                kv = open(backend, &dir);
            }
            let kv = kv.unwrap();
            assert_eq!(
                kv.get(b"b1").unwrap().as_deref(),
                Some(&b"z"[..]),
                "{backend:?}"
            );
            drop(kv);
        }
    }
}
