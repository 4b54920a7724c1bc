//! The committed state, block write sets and the order-independent state root.
//!
//! The state is split into [`PARTITIONS`] hash partitions. During a block every thread reads it
//! through `&CommittedState` (plain hash-map lookups, no locks); at block commit the write set is
//! applied with `&mut`, one group of partitions per thread.
//!
//! The root is a multiset hash (AdHash): the sum modulo 2^256 of `blake3(key ‖ len ‖ value)`
//! over every entry. It does not depend on the order of writes and is updated incrementally: a
//! write subtracts the old leaf (kept beside the value, so it is never recomputed) and adds the
//! new one. Two executions of the same blocks from the same genesis agree on the root exactly
//! when they agree on every key (up to hash collisions). It is meant for comparing executions,
//! not as an adversarial commitment: an additive hash over 2^256 is open to generalised-birthday
//! attacks, and a production chain should swap in LtHash or a Merkle tree behind the same API.

use crate::exec::WorkerPool;
use crate::key::{hex_encode, Key, KeyMap};
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Number of hash partitions of the committed state (a power of two).
pub const PARTITIONS: usize = 64;

/// Partition of a key. Bits 40..46 of the key hash: hash tables use the low bits for the
/// bucket and the top seven for the control byte, so these are free.
#[inline]
pub fn partition_of(key: &Key) -> usize {
    ((key.hash64() >> 40) as usize) & (PARTITIONS - 1)
}

/// A 256-bit accumulator of leaf hashes (four little-endian limbs).
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Acc([u64; 4]);

impl Acc {
    fn add(&mut self, o: &Acc) {
        let mut carry = 0u64;
        for i in 0..4 {
            let (s1, c1) = self.0[i].overflowing_add(o.0[i]);
            let (s2, c2) = s1.overflowing_add(carry);
            self.0[i] = s2;
            carry = (c1 as u64) + (c2 as u64);
        }
    }
    fn sub(&mut self, o: &Acc) {
        let mut borrow = 0u64;
        for i in 0..4 {
            let (d1, b1) = self.0[i].overflowing_sub(o.0[i]);
            let (d2, b2) = d1.overflowing_sub(borrow);
            self.0[i] = d2;
            borrow = (b1 as u64) + (b2 as u64);
        }
    }
    fn leaf(key: &Key, value: &Value) -> Acc {
        // One-shot hashing of a stack buffer: for the usual short value this is a single
        // blake3 compression, several times cheaper than the incremental hasher.
        const INLINE: usize = 32 + 4 + 64;
        let v = value.as_bytes();
        let d = if v.len() <= INLINE - 36 {
            let mut buf = [0u8; INLINE];
            buf[..32].copy_from_slice(&key.0);
            buf[32..36].copy_from_slice(&(v.len() as u32).to_le_bytes());
            buf[36..36 + v.len()].copy_from_slice(v);
            blake3::hash(&buf[..36 + v.len()])
        } else {
            let mut h = blake3::Hasher::new();
            h.update(&key.0);
            h.update(&(v.len() as u32).to_le_bytes());
            h.update(v);
            h.finalize()
        };
        let b = d.as_bytes();
        let mut limbs = [0u64; 4];
        for (i, l) in limbs.iter_mut().enumerate() {
            *l = u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        }
        Acc(limbs)
    }
    fn to_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for i in 0..4 {
            out[i * 8..i * 8 + 8].copy_from_slice(&self.0[i].to_le_bytes());
        }
        out
    }
}

/// The state root: `blake3("occam/state-root/v1" ‖ accumulator)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StateRoot(pub [u8; 32]);

impl StateRoot {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex_encode(&self.0)
    }
}

impl fmt::Display for StateRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for StateRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StateRoot({})", self.to_hex())
    }
}

/// The resolved writes of a block: each key at most once, `None` meaning deleted.
///
/// Stored as segments (typically one per worker) so that executors hand over what their
/// workers produced without a serial copy. The order of entries is whatever the executor
/// produced; [`WriteSet::sorted`] gives the canonical order for comparisons.
#[derive(Clone, Debug, Default)]
pub struct WriteSet {
    segments: Vec<Segment>,
    /// `Some(g)`: segment `s` holds only keys of commit group `s % g` (see [`group_of`]).
    groups: Option<usize>,
}

/// A run of resolved writes: `(key, new value or None for a deletion)`.
pub type Segment = Vec<(Key, Option<Value>)>;

/// The commit group of `key` when the partitions are split into `groups` contiguous groups
/// (one per committing thread).
#[inline]
pub fn group_of(key: &Key, groups: usize) -> usize {
    GROUP_OF[groups.clamp(1, PARTITIONS)][partition_of(key)] as usize
}

/// `GROUP_OF[groups][partition]`: `partition / ceil(PARTITIONS / groups)`, tabulated at compile
/// time because [`group_of`] runs once per written key and an integer division by a run-time
/// value costs more than the rest of it.
const GROUP_OF: [[u8; PARTITIONS]; PARTITIONS + 1] = {
    let mut t = [[0u8; PARTITIONS]; PARTITIONS + 1];
    let mut groups = 1;
    while groups <= PARTITIONS {
        let len = PARTITIONS.div_ceil(groups);
        let mut p = 0;
        while p < PARTITIONS {
            t[groups][p] = (p / len) as u8;
            p += 1;
        }
        groups += 1;
    }
    t
};

impl WriteSet {
    /// A write set of one segment.
    pub fn from_entries(entries: Vec<(Key, Option<Value>)>) -> Self {
        WriteSet { segments: vec![entries], groups: None }
    }

    /// A write set made of segments. No key may appear in two of them.
    pub fn from_segments(segments: Vec<Vec<(Key, Option<Value>)>>) -> Self {
        WriteSet { segments, groups: None }
    }

    /// A write set from per-worker segments already split by commit group: `parts[w][g]`
    /// holds only keys with `group_of(key, groups) == g`. A commit with `groups` threads then
    /// needs no bucketing round. No key may appear twice.
    pub fn from_grouped(parts: Vec<Vec<Segment>>, groups: usize) -> Self {
        debug_assert!(parts.iter().all(|p| p.len() == groups));
        WriteSet { segments: parts.into_iter().flatten().collect(), groups: Some(groups) }
    }

    /// Every `(key, value)` entry.
    pub fn iter(&self) -> impl Iterator<Item = &(Key, Option<Value>)> {
        self.segments.iter().flatten()
    }

    /// The segments.
    pub fn segments(&self) -> &[Vec<(Key, Option<Value>)>] {
        &self.segments
    }

    /// The entries sorted by key: the canonical form in which two write sets are compared.
    pub fn sorted(&self) -> Vec<(Key, Option<Value>)> {
        let mut v: Vec<_> = self.iter().cloned().collect();
        v.sort_unstable_by_key(|e| e.0);
        v
    }

    /// Number of keys written.
    pub fn len(&self) -> usize {
        self.segments.iter().map(Vec::len).sum()
    }

    /// True when the block wrote nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug)]
struct Entry {
    value: Value,
    leaf: Acc,
}

#[derive(Clone, Debug, Default)]
struct Partition {
    map: KeyMap<Entry>,
    acc: Acc,
}

impl Partition {
    fn apply(&mut self, key: &Key, value: Option<&Value>) {
        match value {
            Some(v) => {
                let leaf = Acc::leaf(key, v);
                self.acc.add(&leaf);
                // Most writes update an existing key: change it in place.
                if let Some(e) = self.map.get_mut(key) {
                    self.acc.sub(&e.leaf);
                    e.leaf = leaf;
                    e.value.clone_from(v);
                } else {
                    self.map.insert(*key, Entry { value: v.clone(), leaf });
                }
            }
            None => {
                if let Some(old) = self.map.remove(key) {
                    self.acc.sub(&old.leaf);
                }
            }
        }
    }
}

/// The in-memory committed state: read concurrently during a block, updated at commit.
#[derive(Clone, Debug)]
pub struct CommittedState {
    parts: Vec<Partition>,
}

impl Default for CommittedState {
    fn default() -> Self {
        Self::new()
    }
}

impl CommittedState {
    /// An empty state.
    pub fn new() -> Self {
        CommittedState { parts: vec![Partition::default(); PARTITIONS] }
    }

    /// A state holding `entries` (later duplicates win).
    pub fn from_entries(entries: impl IntoIterator<Item = (Key, Value)>) -> Self {
        let mut s = Self::new();
        for (k, v) in entries {
            s.parts[partition_of(&k)].apply(&k, Some(&v));
        }
        s
    }

    /// The committed value of `key`.
    #[inline]
    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.parts[partition_of(key)].map.get(key).map(|e| &e.value)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.map.len()).sum()
    }

    /// True when no key is set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, sorted by key (for recordings and tests; allocates).
    pub fn sorted_entries(&self) -> Vec<(Key, Value)> {
        let mut v: Vec<(Key, Value)> = self.parts.iter().flat_map(|p| p.map.iter().map(|(k, e)| (*k, e.value.clone()))).collect();
        v.sort_unstable_by_key(|e| e.0);
        v
    }

    /// The current state root.
    pub fn root(&self) -> StateRoot {
        Self::combined_root([self])
    }

    /// The root of the union of `states`, which must hold disjoint keys (the shards of one
    /// state): the same value as the root of one state holding all their entries, because the
    /// accumulator is a sum over entries.
    pub fn combined_root<'a>(states: impl IntoIterator<Item = &'a CommittedState>) -> StateRoot {
        let mut acc = Acc::default();
        for s in states {
            for p in &s.parts {
                acc.add(&p.acc);
            }
        }
        let mut h = blake3::Hasher::new();
        h.update(b"occam/state-root/v1");
        h.update(&acc.to_bytes());
        StateRoot(*h.finalize().as_bytes())
    }

    /// Applies a block's write set. With a pool, the work is split over its threads in two
    /// rounds: each thread sorts a share of the entries into buckets by partition group, then
    /// each thread applies one group's buckets. No thread looks at every entry. The result is
    /// identical either way.
    pub fn apply(&mut self, writes: &WriteSet, pool: Option<&WorkerPool>) {
        let threads = pool.map_or(1, |p| p.threads()).clamp(1, PARTITIONS);
        let total = writes.len();
        let Some(pool) = pool.filter(|_| threads > 1 && total >= 1024) else {
            for (k, v) in writes.iter() {
                self.parts[partition_of(k)].apply(k, v.as_ref());
            }
            return;
        };
        let group_len = PARTITIONS.div_ceil(threads);
        let groups = PARTITIONS.div_ceil(group_len);
        if writes.groups == Some(threads) && groups == threads {
            // Already split by group: each worker applies the segments of its group.
            self.apply_groups(pool, group_len, |g, parts| {
                for seg in writes.segments.iter().skip(g).step_by(threads) {
                    for (k, v) in seg {
                        parts[partition_of(k) - g * group_len].apply(k, v.as_ref());
                    }
                }
            });
            return;
        }
        // Work units: pieces of segments of about total/threads entries.
        let piece = total.div_ceil(threads).max(1);
        let mut units = Vec::new();
        for (s, seg) in writes.segments.iter().enumerate() {
            let mut at = 0;
            while at < seg.len() {
                units.push((s as u32, at as u32, (at + piece).min(seg.len()) as u32));
                at += piece;
            }
        }
        let buckets: Vec<Vec<Vec<(u32, u32)>>> = pool.run(|w, workers| {
            let mut mine: Vec<Vec<(u32, u32)>> = vec![Vec::new(); groups];
            for &(s, lo, hi) in units.iter().skip(w).step_by(workers) {
                for (i, (k, _)) in writes.segments[s as usize][lo as usize..hi as usize].iter().enumerate() {
                    mine[partition_of(k) / group_len].push((s, lo + i as u32));
                }
            }
            mine
        });
        self.apply_groups(pool, group_len, |g, parts| {
            for &(s, i) in buckets.iter().flat_map(|b| &b[g]) {
                let (k, v) = &writes.segments[s as usize][i as usize];
                parts[partition_of(k) - g * group_len].apply(k, v.as_ref());
            }
        });
    }

    /// Runs `f(group, partitions of the group)` for every group of `group_len` partitions, one
    /// group per worker of `pool`.
    fn apply_groups(&mut self, pool: &WorkerPool, group_len: usize, f: impl Fn(usize, &mut [Partition]) + Sync) {
        let groups: Vec<parking_lot::Mutex<&mut [Partition]>> = self.parts.chunks_mut(group_len).map(parking_lot::Mutex::new).collect();
        pool.run(|w, workers| {
            for g in (w..groups.len()).step_by(workers) {
                f(g, &mut groups[g].lock());
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(entries: &[(u64, Option<u64>)]) -> WriteSet {
        // Three segments, to exercise the segment handling of `apply`.
        let all: Vec<_> = entries.iter().map(|&(k, v)| (Key::from_parts(1, k, 0), v.map(Value::from_u64))).collect();
        let third = all.len() / 3;
        WriteSet::from_segments(vec![all[..third].to_vec(), all[third..2 * third].to_vec(), all[2 * third..].to_vec()])
    }

    #[test]
    fn root_is_independent_of_write_order_and_history() {
        let mut a = CommittedState::new();
        a.apply(&ws(&[(1, Some(10)), (2, Some(20)), (3, Some(30))]), None);
        a.apply(&ws(&[(3, None), (1, Some(11))]), None);
        let b = CommittedState::from_entries([
            (Key::from_parts(1, 2, 0), Value::from_u64(20)),
            (Key::from_parts(1, 1, 0), Value::from_u64(11)),
        ]);
        assert_eq!(a.root(), b.root());
        assert_eq!(a.sorted_entries(), b.sorted_entries());
        assert_ne!(a.root(), CommittedState::new().root());
    }

    #[test]
    fn combined_root_of_disjoint_parts_is_the_root_of_their_union() {
        let entries: Vec<(Key, Value)> = (0..1000).map(|i| (Key::from_parts(1, i, 0), Value::from_u64(i * 3))).collect();
        let whole = CommittedState::from_entries(entries.clone());
        let (even, odd): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(k, _)| k.0[16] % 2 == 0);
        let parts = [CommittedState::from_entries(even), CommittedState::from_entries(odd)];
        assert_eq!(CommittedState::combined_root(&parts), whole.root());
        assert_ne!(parts[0].root(), whole.root());
    }

    #[test]
    fn parallel_apply_matches_serial_apply() {
        let entries: Vec<(u64, Option<u64>)> = (0..5000).map(|i| (i * 7 % 3001, (i % 5 != 0).then_some(i))).collect();
        // Later entries for the same key must not appear in one write set: dedupe first.
        let mut seen = std::collections::HashSet::new();
        let entries: Vec<_> = entries.into_iter().filter(|e| seen.insert(e.0)).collect();
        let pool = WorkerPool::new(4).unwrap();
        let mut serial = CommittedState::from_entries((0..3001).map(|i| (Key::from_parts(1, i, 0), Value::from_u64(1))));
        let mut parallel = serial.clone();
        serial.apply(&ws(&entries), None);
        parallel.apply(&ws(&entries), Some(&pool));
        assert_eq!(serial.root(), parallel.root());
        assert_eq!(serial.sorted_entries(), parallel.sorted_entries());
    }
}
