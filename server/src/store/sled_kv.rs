//! The sled backend: one tree, batches applied atomically, then `flush` for durability.

use std::path::Path;

use super::{Kv, Op, Rows, StoreError};

/// sled database.
pub(super) struct SledKv {
    db: sled::Db,
}

fn err(e: sled::Error) -> StoreError {
    StoreError::Backend(format!("sled: {e}"))
}

impl SledKv {
    /// Opens or creates the database at `path`.
    pub(super) fn open(path: &Path) -> Result<SledKv, StoreError> {
        let db = sled::Config::new()
            .path(path)
            // Durability comes from the explicit flush after each group commit.
            .flush_every_ms(None)
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .map_err(err)?;
        Ok(SledKv { db })
    }
}

impl Kv for SledKv {
    fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                Op::Put(k, v) => batch.insert(k.as_slice(), v.as_slice()),
                Op::Delete(k) => batch.remove(k.as_slice()),
            }
        }
        self.db.apply_batch(batch).map_err(err)?;
        self.db.flush().map_err(err)?;
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key).map_err(err)?.map(|v| v.to_vec()))
    }

    fn scan(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Rows, StoreError> {
        let mut out = Vec::new();
        for item in self.db.range(from..to).take(limit) {
            let (k, v) = item.map_err(err)?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn name(&self) -> &'static str {
        "sled"
    }
}
