//! Column families, key layout and the store's own fixed-size records.
//!
//! Every key starts with its group as 4 big-endian bytes, so one group's records are one
//! contiguous range per column family; indexes and heights follow as 8 big-endian bytes, so
//! byte order is numeric order.

use std::fmt;

use occam_engine::key::KEY_LEN;
use occam_engine::prelude::{Key, StateRoot};

use crate::GroupId;

/// The layout version this build reads and writes (2: the `txs` index; 3: blocks and
/// certificates name their validator-set epoch). A store of another version is refused.
pub const SCHEMA_VERSION: u32 = 3;

pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_RAFT_LOG: &str = "raft_log";
pub(crate) const CF_RAFT_META: &str = "raft_meta";
pub(crate) const CF_BLOCKS: &str = "blocks";
pub(crate) const CF_CERTS: &str = "certs";
pub(crate) const CF_STATE: &str = "state";
pub(crate) const CF_APPLIED: &str = "applied";
/// Which block spent each (signer, nonce): the status read of a transaction.
pub(crate) const CF_TXS: &str = "txs";
pub(crate) const COLUMN_FAMILIES: [&str; 8] = [CF_META, CF_RAFT_LOG, CF_RAFT_META, CF_BLOCKS, CF_CERTS, CF_STATE, CF_APPLIED, CF_TXS];

pub(crate) const META_IDENTITY: &[u8] = b"identity";
const IDENTITY_MAGIC: &[u8; 12] = b"occam-store\0";
const APPLIED_VERSION: u8 = 1;

/// Whose store this is: checked on every open, so a node never starts on another's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreIdentity {
    /// The chain (cluster) id from `cluster.toml`.
    pub chain_id: u64,
    /// The node's id.
    pub node_id: u32,
    /// The layout version ([`SCHEMA_VERSION`] for a store this build writes).
    pub schema: u32,
}

impl StoreIdentity {
    /// The identity of `node_id`'s store on `chain_id`, at this build's schema version.
    pub fn new(chain_id: u64, node_id: u32) -> Self {
        StoreIdentity { chain_id, node_id, schema: SCHEMA_VERSION }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = IDENTITY_MAGIC.to_vec();
        v.extend_from_slice(&self.schema.to_be_bytes());
        v.extend_from_slice(&self.chain_id.to_be_bytes());
        v.extend_from_slice(&self.node_id.to_be_bytes());
        v
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        let rest = b.strip_prefix(IDENTITY_MAGIC.as_slice())?;
        if rest.len() != 16 {
            return None;
        }
        Some(StoreIdentity {
            schema: u32::from_be_bytes(rest[0..4].try_into().ok()?),
            chain_id: u64::from_be_bytes(rest[4..12].try_into().ok()?),
            node_id: u32::from_be_bytes(rest[12..16].try_into().ok()?),
        })
    }
}

impl fmt::Display for StoreIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chain {} node {} (store schema v{})", self.chain_id, self.node_id, self.schema)
    }
}

/// Where a group's applied state stands: written in the same batch as the state it describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppliedPoint {
    /// The height of the last applied block (0: genesis).
    pub height: u64,
    /// The Raft log index of the entry that carried it (0 where there is no log).
    pub log_index: u64,
    /// The hash of the last applied block (zeros at genesis).
    pub block_hash: [u8; 32],
    /// The state root after it.
    pub root: StateRoot,
}

impl AppliedPoint {
    pub(crate) const LEN: usize = 1 + 8 + 8 + 32 + 32;

    pub(crate) fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = APPLIED_VERSION;
        b[1..9].copy_from_slice(&self.height.to_be_bytes());
        b[9..17].copy_from_slice(&self.log_index.to_be_bytes());
        b[17..49].copy_from_slice(&self.block_hash);
        b[49..81].copy_from_slice(&self.root.0);
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != Self::LEN || b[0] != APPLIED_VERSION {
            return None;
        }
        Some(AppliedPoint {
            height: u64::from_be_bytes(b[1..9].try_into().ok()?),
            log_index: u64::from_be_bytes(b[9..17].try_into().ok()?),
            block_hash: b[17..49].try_into().ok()?,
            root: StateRoot(b[49..81].try_into().ok()?),
        })
    }
}

pub(crate) fn group_prefix(group: GroupId) -> [u8; 4] {
    group.to_be_bytes()
}

/// The first key past every key of `group`.
pub(crate) fn group_upper(group: GroupId) -> Vec<u8> {
    match group.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        // Longer than any key of the last group, and all 0xff: above all of them.
        None => vec![0xff; 4 + KEY_LEN + 1],
    }
}

pub(crate) fn log_key(group: GroupId, index: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&group_prefix(group));
    k[4..].copy_from_slice(&index.to_be_bytes());
    k
}

pub(crate) fn index_decode(k: &[u8]) -> Option<u64> {
    (k.len() == 12).then(|| u64::from_be_bytes(k[4..12].try_into().expect("8 bytes")))
}

/// A transaction's index key: group, signer, nonce (big-endian, so one signer's nonces are
/// contiguous and in order).
pub(crate) fn tx_key(group: GroupId, signer: u32, nonce: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&group_prefix(group));
    k[4..8].copy_from_slice(&signer.to_be_bytes());
    k[8..].copy_from_slice(&nonce.to_be_bytes());
    k
}

pub(crate) fn state_key(group: GroupId, key: &Key) -> [u8; 4 + KEY_LEN] {
    let mut k = [0u8; 4 + KEY_LEN];
    k[..4].copy_from_slice(&group_prefix(group));
    k[4..].copy_from_slice(&key.0);
    k
}

pub(crate) fn state_key_decode(k: &[u8]) -> Option<Key> {
    (k.len() == 4 + KEY_LEN).then(|| Key(k[4..].try_into().expect("32 bytes")))
}

pub(crate) fn meta_name_key(group: GroupId, name: &[u8]) -> Vec<u8> {
    let mut k = group_prefix(group).to_vec();
    k.extend_from_slice(name);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_damage() {
        let id = StoreIdentity::new(7, 3);
        assert_eq!(StoreIdentity::decode(&id.encode()), Some(id));
        let mut bad = id.encode();
        bad[0] ^= 1;
        assert_eq!(StoreIdentity::decode(&bad), None);
        assert_eq!(StoreIdentity::decode(&id.encode()[..20]), None);

        let p = AppliedPoint { height: 9, log_index: 12, block_hash: [5; 32], root: StateRoot([6; 32]) };
        assert_eq!(AppliedPoint::decode(&p.encode()), Some(p));
        assert_eq!(AppliedPoint::decode(&p.encode()[..80]), None);
    }

    #[test]
    fn keys_sort_by_group_then_index() {
        assert!(log_key(1, u64::MAX).as_slice() < group_upper(1).as_slice());
        assert!(log_key(1, 255) < log_key(1, 256));
        assert!(log_key(1, u64::MAX) < log_key(2, 0));
        assert!(tx_key(1, 2, u64::MAX) < tx_key(1, 3, 0));
        assert!(tx_key(1, u32::MAX, u64::MAX).as_slice() < group_upper(1).as_slice());
        assert!(state_key(u32::MAX, &Key([0xff; 32])).as_slice() < group_upper(u32::MAX).as_slice());
    }
}
