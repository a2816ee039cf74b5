//! The redb backend: one table, one write transaction per batch (durable on commit).

use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition};

use super::{Kv, Op, Rows, StoreError};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

/// redb database.
pub(super) struct RedbKv {
    db: Database,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("redb: {e}"))
}

impl RedbKv {
    /// Opens or creates the database at `path`.
    pub(super) fn open(path: &Path) -> Result<RedbKv, StoreError> {
        let db = Database::create(path).map_err(err)?;
        // Create the table so that readers never see it missing.
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(TABLE).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(RedbKv { db })
    }
}

impl Kv for RedbKv {
    fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut table = tx.open_table(TABLE).map_err(err)?;
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        table.insert(k.as_slice(), v.as_slice()).map_err(err)?;
                    }
                    Op::Delete(k) => {
                        table.remove(k.as_slice()).map_err(err)?;
                    }
                }
            }
        }
        tx.commit().map_err(err)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(TABLE).map_err(err)?;
        Ok(table.get(key).map_err(err)?.map(|v| v.value().to_vec()))
    }

    fn scan(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Rows, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(TABLE).map_err(err)?;
        let mut out = Vec::new();
        for item in table.range(from..to).map_err(err)?.take(limit) {
            let (k, v) = item.map_err(err)?;
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn name(&self) -> &'static str {
        "redb"
    }
}
