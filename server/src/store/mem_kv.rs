//! The in-memory backend: an ordered map behind a mutex. Nothing survives the process; for
//! tests and for deployments that want no disk at all.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Kv, Op, Rows, StoreError};

/// Ordered in-memory key-value map.
#[derive(Debug, Default)]
pub(super) struct MemKv {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemKv {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        // Only the engine thread writes; a poisoned lock still holds consistent batches
        // because each batch is applied under one guard.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Kv for MemKv {
    fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        let mut map = self.map();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    map.insert(k.clone(), v.clone());
                }
                Op::Delete(k) => {
                    map.remove(k);
                }
            }
        }
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map().get(key).cloned())
    }

    fn scan(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Rows, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        Ok(self
            .map()
            .range(from.to_vec()..to.to_vec())
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
