//! Multi-version memory: for every key, the writes of the block's transactions, by index.
//!
//! A read by transaction `j` sees the write of the highest index below `j`, resolving any
//! commutative `Add`s on the way down to a full value or the committed state. An entry marked
//! as an *estimate* belongs to a transaction being re-executed: a reader that meets it stops and
//! waits for that transaction instead of running on data that is about to change.
//!
//! The map is split into lock-protected shards (a key's shard comes from its hash, computed
//! once per access). Shards keep their capacity across blocks: [`MvMemory::drain_shard`] empties
//! one while collecting the final writes, so the next block reuses the allocation.

use crate::key::{Key, KeyMap};
use crate::sync::Mutex;
use crate::value::{apply_add, Value, WriteOp};
use crate::vm::TxIndex;
use crossbeam_utils::CachePadded;

/// Incarnation number of a transaction execution.
pub type Incarnation = u32;

#[derive(Clone, Debug)]
struct Entry {
    txn: TxIndex,
    incarnation: Incarnation,
    estimate: bool,
    op: WriteOp,
}

/// Where a read's value came from; validation re-reads and compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOrigin {
    /// The committed state (no entry below the reader).
    Storage,
    /// A full write (`Put`/`Delete`) of this version.
    Version(TxIndex, Incarnation),
    /// A value assembled from one or more `Add`s (validated by value).
    Resolved(Option<Value>),
}

/// The outcome of a multi-version read.
#[derive(Debug)]
pub enum MvRead {
    /// No entry below the reader: read the committed state.
    Storage,
    /// A full write.
    Version(TxIndex, Incarnation, Option<Value>),
    /// `Add`s summing to this delta over the committed state's value.
    DeltaOverStorage(u64),
    /// `Add`s over a full write, resolved.
    Resolved(Option<Value>),
    /// An estimate of this transaction is in the way.
    Blocked(TxIndex),
}

/// Versions of one key. Most keys get one write per block: keep it inline.
type Versions = smallvec::SmallVec<[Entry; 1]>;

/// Everything the memory knows about one key in this block.
#[derive(Default)]
struct KeyState {
    /// Highest transaction index that read this key while executing (0: none yet; a read by
    /// transaction 0 can never be invalidated by a write, so 0 doubles as "nobody").
    max_reader: TxIndex,
    versions: Versions,
}

type Shard = KeyMap<KeyState>;

/// The multi-version memory of one block.
pub struct MvMemory {
    /// Each shard on its own cache lines, so that workers locking neighbouring shards do not
    /// contend for one line.
    shards: Vec<CachePadded<Mutex<Shard>>>,
    mask: usize,
}

impl MvMemory {
    /// A memory with `shards` shards (rounded up to a power of two).
    pub fn new(shards: usize) -> Self {
        let n = shards.max(1).next_power_of_two();
        MvMemory { shards: (0..n).map(|_| CachePadded::new(Mutex::new(Shard::default()))).collect(), mask: n - 1 }
    }

    #[inline]
    fn shard(&self, key: &Key) -> &Mutex<Shard> {
        // Bits 48.. of the hash: hashbrown inside the shard uses the low and top bits.
        &self.shards[((key.hash64() >> 48) as usize) & self.mask]
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Records (or replaces) `txn`'s write of `key`. Returns true if a higher transaction has
    /// already read `key` while executing: only then can this write have made an
    /// already-validated read stale (the scheduler then re-validates the suffix).
    pub fn write(&self, key: Key, txn: TxIndex, incarnation: Incarnation, op: WriteOp) -> bool {
        let mut shard = self.shard(&key).lock();
        let state = shard.entry(key).or_default();
        let read_above = state.max_reader > txn;
        let versions = &mut state.versions;
        let entry = Entry { txn, incarnation, estimate: false, op };
        // Sorted by index; transactions mostly finish in index order, so this is usually a push.
        let at = if versions.last().is_none_or(|e| e.txn < txn) { versions.len() } else { versions.partition_point(|e| e.txn < txn) };
        match versions.get_mut(at) {
            Some(e) if e.txn == txn => *e = entry,
            _ => versions.insert(at, entry),
        }
        read_above
    }

    /// Removes `txn`'s write of `key` (its new incarnation no longer writes it).
    pub fn remove(&self, key: &Key, txn: TxIndex) {
        let mut shard = self.shard(key).lock();
        if let Some(state) = shard.get_mut(key) {
            let versions = &mut state.versions;
            let at = versions.partition_point(|e| e.txn < txn);
            if versions.get(at).is_some_and(|e| e.txn == txn) {
                versions.remove(at);
            }
        }
    }

    /// Marks `txn`'s write of `key` as an estimate.
    pub fn mark_estimate(&self, key: &Key, txn: TxIndex) {
        let mut shard = self.shard(key).lock();
        if let Some(state) = shard.get_mut(key) {
            let versions = &mut state.versions;
            let at = versions.partition_point(|e| e.txn < txn);
            if let Some(e) = versions.get_mut(at).filter(|e| e.txn == txn) {
                e.estimate = true;
            }
        }
    }

    /// What transaction `txn` reads at `key`, without recording the read (validation, and
    /// the sequential tail after a halt).
    pub fn read(&self, key: &Key, txn: TxIndex) -> MvRead {
        let shard = self.shard(key).lock();
        match shard.get(key) {
            Some(state) => Self::resolve(&state.versions, txn),
            None => MvRead::Storage,
        }
    }

    /// What transaction `txn` reads at `key` while executing; recorded, so that a later write
    /// below `txn` knows it must trigger re-validation.
    pub fn read_for_execution(&self, key: &Key, txn: TxIndex) -> MvRead {
        let mut shard = self.shard(key).lock();
        let state = shard.entry(*key).or_default();
        state.max_reader = state.max_reader.max(txn);
        Self::resolve(&state.versions, txn)
    }

    fn resolve(versions: &[Entry], txn: TxIndex) -> MvRead {
        let mut delta: Option<u64> = None;
        let below = versions.partition_point(|e| e.txn < txn);
        for e in versions[..below].iter().rev() {
            if e.estimate {
                return MvRead::Blocked(e.txn);
            }
            match &e.op {
                WriteOp::Add(d) => delta = Some(delta.unwrap_or(0).wrapping_add(*d)),
                full => {
                    let value = full.resolve(None);
                    return match delta {
                        None => MvRead::Version(e.txn, e.incarnation, value),
                        Some(d) => MvRead::Resolved(Some(apply_add(value.as_ref(), d))),
                    };
                }
            }
        }
        match delta {
            None => MvRead::Storage,
            Some(d) => MvRead::DeltaOverStorage(d),
        }
    }

    /// Empties shard `i`, calling `f(key, value)` with each key's value as of the end of the
    /// first `below` transactions (`None` inside `Some` is a deletion); keys with no write
    /// below `below` are skipped. `storage` supplies the base for trailing `Add`s.
    pub fn drain_shard(&self, i: usize, below: TxIndex, storage: impl Fn(&Key) -> Option<Value>, mut f: impl FnMut(Key, Option<Value>)) {
        let mut shard = self.shards[i].lock();
        for (key, KeyState { versions, .. }) in shard.drain() {
            let mut delta: Option<u64> = None;
            let mut resolved = None;
            let end = versions.partition_point(|e| e.txn < below);
            for e in versions[..end].iter().rev() {
                match &e.op {
                    WriteOp::Add(d) => delta = Some(delta.unwrap_or(0).wrapping_add(*d)),
                    full => {
                        let v = full.resolve(None);
                        resolved = Some(match delta {
                            None => v,
                            Some(d) => Some(apply_add(v.as_ref(), d)),
                        });
                        break;
                    }
                }
            }
            let value = match (resolved, delta) {
                (Some(v), _) => v,
                (None, Some(d)) => Some(apply_add(storage(&key).as_ref(), d)),
                (None, None) => continue,
            };
            f(key, value);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn k(i: u64) -> Key {
        Key::from_parts(1, i, 0)
    }

    #[test]
    fn reads_see_the_highest_lower_version_and_resolve_adds() {
        let mv = MvMemory::new(4);
        mv.write(k(1), 5, 0, WriteOp::Put(Value::from_u64(100)));
        mv.write(k(1), 2, 0, WriteOp::Put(Value::from_u64(50)));
        mv.write(k(1), 7, 1, WriteOp::Add(3));
        mv.write(k(1), 8, 0, WriteOp::Add(4));
        assert!(matches!(mv.read(&k(1), 2), MvRead::Storage));
        assert!(matches!(mv.read(&k(1), 3), MvRead::Version(2, 0, Some(_))));
        assert!(matches!(mv.read(&k(1), 6), MvRead::Version(5, 0, _)));
        match mv.read(&k(1), 9) {
            MvRead::Resolved(Some(v)) => assert_eq!(v.as_u64(), Some(107)),
            other => panic!("{other:?}"),
        }
        mv.mark_estimate(&k(1), 7);
        assert!(matches!(mv.read(&k(1), 9), MvRead::Blocked(7)));
        mv.remove(&k(1), 7);
        mv.remove(&k(1), 5);
        match mv.read(&k(1), 9) {
            MvRead::Resolved(Some(v)) => assert_eq!(v.as_u64(), Some(54)),
            other => panic!("{other:?}"),
        }
        mv.write(k(2), 1, 0, WriteOp::Add(9));
        assert!(matches!(mv.read(&k(2), 2), MvRead::DeltaOverStorage(9)));
    }

    #[test]
    fn drain_resolves_final_values_below_a_bound() {
        let mv = MvMemory::new(1);
        mv.write(k(1), 0, 0, WriteOp::Add(2));
        mv.write(k(1), 3, 0, WriteOp::Delete);
        mv.write(k(2), 4, 0, WriteOp::Put(Value::from_u64(1)));
        let mut out = Vec::new();
        mv.drain_shard(0, 3, |_| Some(Value::from_u64(40)), |key, v| out.push((key, v)));
        assert_eq!(out, vec![(k(1), Some(Value::from_u64(42)))]);
        let mut again = Vec::new();
        mv.drain_shard(0, 10, |_| None, |key, v| again.push((key, v)));
        assert!(again.is_empty(), "drain empties the shard");
    }
}
