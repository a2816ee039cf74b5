//! The store's epoch (SPEC.md §5.2): one number for every stream the store holds, made when the
//! store is created, or anew when an operator says the data directory was restored from a
//! backup. Positions compare only within one epoch: a client resuming with positions of
//! another one gets GAPs instead of having them taken as acknowledgements.

use super::keys::EPOCH_KEY;
use super::{Kv, Op, StoreError};

/// Largest epoch: exact as a JSON number in every implementation (2^53 - 1).
const MAX_EPOCH: u64 = (1 << 53) - 1;

/// A fresh epoch: random, nonzero, at most 2^53 - 1.
pub fn new_epoch() -> u64 {
    (crate::delivery::ids::random_u64() & MAX_EPOCH).max(1)
}

/// The store's epoch, created on first use; replaced by a fresh one when `renew`.
pub fn load_epoch(kv: &dyn Kv, renew: bool) -> Result<u64, StoreError> {
    if !renew {
        if let Some(v) = kv.get(EPOCH_KEY)? {
            let bytes: [u8; 8] = v
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt("epoch"))?;
            return Ok(u64::from_be_bytes(bytes));
        }
    }
    let epoch = new_epoch();
    kv.apply(&[Op::Put(EPOCH_KEY.to_vec(), epoch.to_be_bytes().to_vec())])?;
    Ok(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{open, Backend};

    #[test]
    fn an_epoch_is_kept_until_renewed() {
        let kv = open(Backend::Memory, std::path::Path::new("unused")).unwrap();
        let first = load_epoch(&*kv, false).unwrap();
        assert!((1..=MAX_EPOCH).contains(&first));
        assert_eq!(load_epoch(&*kv, false).unwrap(), first);
        let renewed = load_epoch(&*kv, true).unwrap();
        assert_ne!(renewed, first);
        assert_eq!(load_epoch(&*kv, false).unwrap(), renewed);
    }
}
