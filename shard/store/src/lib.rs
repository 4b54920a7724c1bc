//! Occam's durable store: one RocksDB database per node.
//!
//! A node hosts replicas of several shards (and, later, other Raft groups); each is a
//! [`GroupId`]. The database keeps one column family per concern, every key prefixed by its
//! group:
//!
//! | column family | key | value |
//! | --- | --- | --- |
//! | `meta` | fixed names | the store's identity (chain, node, schema version) |
//! | `raft_log` | group ‖ index | one Raft log entry, opaque bytes |
//! | `raft_meta` | group ‖ name | Raft metadata (vote, committed index, purge point), opaque bytes |
//! | `blocks` | group ‖ height | a block, opaque bytes |
//! | `certs` | group ‖ height | the block's certificate, opaque bytes |
//! | `state` | group ‖ key | the value of a state key |
//! | `applied` | group | [`AppliedPoint`]: height, log index, block hash and state root |
//! | `txs` | group ‖ signer ‖ nonce | the height of the block that committed it |
//!
//! The one rule that makes recovery simple: **applying a block is one write batch** holding its
//! state changes, the block itself, its transactions' index entries and the new applied point, so a crash leaves the state of a
//! prefix of the chain and the applied point always describes exactly that state. Certificates
//! are written when they form, without a sync: a restarted node collects the ones it lacks again.
//!
//! The rest of Occam never names a RocksDB type: this crate's API speaks in groups, heights,
//! [`Key`]s and [`Value`]s, and takes Raft entries, blocks and certificates as bytes encoded by
//! their owners.

#![forbid(unsafe_code)]

mod layout;

use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use occam_engine::prelude::{CommittedState, Key, StateRoot, Value, WriteSet};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB};

use layout::{
    group_prefix, group_upper, log_key, meta_name_key, state_key, tx_key, CF_APPLIED, CF_BLOCKS, CF_CERTS, CF_META, CF_RAFT_LOG,
    CF_RAFT_META, CF_STATE, CF_TXS, COLUMN_FAMILIES, META_IDENTITY,
};
pub use layout::{AppliedPoint, StoreIdentity, SCHEMA_VERSION};

/// A Raft group hosted by a node: a shard's replica, or another replicated log.
pub type GroupId = u32;

/// Errors of the store. Each says what is wrong and where, so an operator can act on it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB refused an operation (I/O error, corruption it detected, a lock held by another
    /// process).
    #[error("store at {path}: {source}")]
    Rocks {
        /// The store's directory.
        path: PathBuf,
        /// RocksDB's error.
        #[source]
        source: rocksdb::Error,
    },
    /// The directory holds files but no RocksDB database: it was truncated, or it is not a
    /// store. Nothing in it was touched.
    #[error("{path} is not an Occam store: it holds files but no RocksDB database (no CURRENT file); refusing to create one over them")]
    NotAStore {
        /// The directory.
        path: PathBuf,
    },
    /// A RocksDB database without Occam's identity record (or with one that does not decode).
    #[error("{path}: the database has no valid Occam identity record ({detail}); it is not this node's store, or it is damaged")]
    NoIdentity {
        /// The directory.
        path: PathBuf,
        /// What was missing or malformed.
        detail: String,
    },
    /// The store belongs to another chain, another node, or another schema version.
    #[error("{path} belongs to {found}, but this node is {expected}; refusing to start on another's data")]
    WrongIdentity {
        /// The directory.
        path: PathBuf,
        /// What the store says it is.
        found: StoreIdentity,
        /// What the caller expected.
        expected: StoreIdentity,
    },
    /// A stored record does not decode (damage, or a bug): names the column family and key.
    #[error("store at {path}: malformed {what}")]
    Malformed {
        /// The directory.
        path: PathBuf,
        /// The record.
        what: String,
    },
    /// The state loaded for a group does not hash to the root its applied point records.
    #[error("store at {path}: group {group}'s state hashes to {computed} but its applied point (height {height}) records {recorded}; the store is damaged")]
    RootMismatch {
        /// The directory.
        path: PathBuf,
        /// The group.
        group: GroupId,
        /// The applied height.
        height: u64,
        /// The root the applied point records.
        recorded: StateRoot,
        /// The root of the state actually stored.
        computed: StateRoot,
    },
    /// A block applied out of order: blocks apply at exactly one above the applied height.
    #[error("group {group}: block at height {height} applied on top of height {applied}; blocks apply in order")]
    OutOfOrder {
        /// The group.
        group: GroupId,
        /// The block's height.
        height: u64,
        /// The group's applied height.
        applied: u64,
    },
    /// A snapshot whose entries do not hash to the root it claims.
    #[error("group {group}: snapshot at height {height} claims root {claimed} but its entries hash to {computed}; not installed")]
    SnapshotRoot {
        /// The group.
        group: GroupId,
        /// The snapshot's height.
        height: u64,
        /// The root it claims.
        claimed: StateRoot,
        /// The root of its entries.
        computed: StateRoot,
    },
}

/// When writes reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Every applied block, Raft log append and metadata write is fsynced before it returns
    /// (the node's setting: nothing a client holds a receipt for can be lost to a power cut).
    Sync,
    /// Writes go to RocksDB's write-ahead log without an fsync: they survive a crash of the
    /// process, not of the machine (for tests and benchmarks that say so).
    Buffered,
}

/// How to open a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// When writes reach the disk.
    pub durability: Durability,
    /// RocksDB's block cache and write buffer budget in bytes (shared by the column families).
    pub memory_budget_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { durability: Durability::Sync, memory_budget_bytes: 256 << 20 }
    }
}

/// One block's effect on a group, written as one atomic batch by [`Store::apply_block`].
#[derive(Clone, Copy, Debug)]
pub struct BlockCommit<'a> {
    /// The group's new applied point (its height must be one above the current one).
    pub point: AppliedPoint,
    /// The block's resolved writes.
    pub writes: &'a WriteSet,
    /// The block's encoding, stored under its height (`None`: not kept, as in the bench).
    pub block: Option<&'a [u8]>,
    /// The transactions the block committed, as `(signer, nonce)`: indexed under this height
    /// for [`Store::tx_height`] (empty where no index is kept, as in the bench).
    pub txs: &'a [(u32, u64)],
    /// Raft metadata records `(name, value)` of the group written in the same batch (the
    /// state machine's last applied log id and membership), so they never disagree with the
    /// state.
    pub meta: &'a [(&'a [u8], &'a [u8])],
}

/// A node's store. Cheap to clone (shared handle); every method takes `&self`, and RocksDB
/// serialises writers internally.
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
    path: PathBuf,
    identity: StoreIdentity,
    sync: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).field("identity", &self.identity).field("sync", &self.sync).finish()
    }
}

fn db_options(opts: &StoreOptions, create: bool) -> Options {
    let mut o = Options::default();
    o.create_if_missing(create);
    o.create_missing_column_families(create);
    o.set_compression_type(rocksdb::DBCompressionType::Lz4);
    o.set_max_background_jobs(2);
    o.set_keep_log_file_num(4);
    o.set_db_write_buffer_size(opts.memory_budget_bytes / 2);
    o.set_paranoid_checks(true);
    // The vector memtable (state) takes no concurrent writers; writes are one batch per block.
    o.set_allow_concurrent_memtable_write(false);
    o
}

fn cf_descriptors(opts: &StoreOptions) -> Vec<ColumnFamilyDescriptor> {
    COLUMN_FAMILIES
        .iter()
        .map(|name| {
            let mut o = Options::default();
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            if *name == CF_STATE {
                // A block writes thousands of state keys and the node reads state from memory,
                // not from here: an append-only vector memtable (sorted once, when flushed)
                // takes a block's batch several times faster than the default skip list.
                o.set_memtable_factory(rocksdb::MemtableFactory::Vector);
                o.set_write_buffer_size(opts.memory_budget_bytes / 4);
                let mut t = rocksdb::BlockBasedOptions::default();
                t.set_bloom_filter(10.0, false);
                t.set_block_cache(&rocksdb::Cache::new_lru_cache(opts.memory_budget_bytes / 2));
                o.set_block_based_table_factory(&t);
            }
            ColumnFamilyDescriptor::new(*name, o)
        })
        .collect()
}

/// True when `dir` holds at least one entry.
fn has_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false)
}

impl Store {
    /// Opens the store in `dir` for `identity`, creating it if `dir` is missing or empty.
    ///
    /// An existing store is first opened read-only and checked (a RocksDB database, Occam's
    /// identity record, the same chain, node and schema version) before anything is written
    /// to it, so another node's or another chain's directory is refused untouched.
    pub fn open(dir: &Path, identity: StoreIdentity, options: &StoreOptions) -> Result<Store, StoreError> {
        let path = dir.to_path_buf();
        let rocks = |source| StoreError::Rocks { path: path.clone(), source };
        let fresh = !has_files(dir);
        if !fresh {
            if !dir.join("CURRENT").is_file() {
                return Err(StoreError::NotAStore { path });
            }
            let found = Self::read_identity(dir, options)?;
            if found != identity {
                return Err(StoreError::WrongIdentity { path, found, expected: identity });
            }
        }
        let db = DB::open_cf_descriptors(&db_options(options, fresh), dir, cf_descriptors(options)).map_err(rocks)?;
        let store = Store { db: Arc::new(db), path: path.clone(), identity, sync: options.durability == Durability::Sync };
        if fresh {
            let mut batch = WriteBatch::default();
            batch.put_cf(store.cf(CF_META), META_IDENTITY, identity.encode());
            store.write(batch, true)?;
        }
        Ok(store)
    }

    /// Reads the identity of the store in `dir` without writing to it (a read-only open).
    pub fn read_identity(dir: &Path, options: &StoreOptions) -> Result<StoreIdentity, StoreError> {
        let path = dir.to_path_buf();
        if !dir.join("CURRENT").is_file() {
            return Err(StoreError::NotAStore { path });
        }
        let names = DB::list_cf(&Options::default(), dir).map_err(|source| StoreError::Rocks { path: path.clone(), source })?;
        if !names.iter().any(|n| n == CF_META) {
            return Err(StoreError::NoIdentity { path, detail: "no `meta` column family".into() });
        }
        let db = DB::open_cf_descriptors_read_only(
            &db_options(options, false),
            dir,
            cf_descriptors(options).into_iter().filter(|d| names.iter().any(|n| n == d.name())),
            false,
        )
        .map_err(|source| StoreError::Rocks { path: path.clone(), source })?;
        let meta = db.cf_handle(CF_META).expect("listed above");
        let raw = db.get_cf(meta, META_IDENTITY).map_err(|source| StoreError::Rocks { path: path.clone(), source })?;
        match raw {
            None => Err(StoreError::NoIdentity { path, detail: "no identity record".into() }),
            Some(bytes) => StoreIdentity::decode(&bytes).ok_or_else(|| StoreError::NoIdentity {
                path,
                detail: format!("identity record of {} bytes does not decode", bytes.len()),
            }),
        }
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whose store this is.
    pub fn identity(&self) -> StoreIdentity {
        self.identity
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db.cf_handle(name).expect("every column family is created at open")
    }

    fn rocks(&self, source: rocksdb::Error) -> StoreError {
        StoreError::Rocks { path: self.path.clone(), source }
    }

    fn malformed(&self, what: String) -> StoreError {
        StoreError::Malformed { path: self.path.clone(), what }
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(batch, &wo).map_err(|e| self.rocks(e))
    }

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.cf(cf), key).map_err(|e| self.rocks(e))
    }

    /// Iterates `cf` over the keys of `group` in `[from, to)` (full keys), calling `f` with the
    /// key and value until it returns `false`.
    fn scan(
        &self,
        cf: &str,
        from: Vec<u8>,
        to: Vec<u8>,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(to);
        for item in self.db.iterator_cf_opt(self.cf(cf), ro, IteratorMode::From(&from, Direction::Forward)) {
            let (k, v) = item.map_err(|e| self.rocks(e))?;
            if !f(&k, &v)? {
                break;
            }
        }
        Ok(())
    }

    // ---- applied blocks and state ------------------------------------------------------

    /// The group's applied point, or `None` before its first block (or snapshot).
    pub fn applied(&self, group: GroupId) -> Result<Option<AppliedPoint>, StoreError> {
        match self.get(CF_APPLIED, &group_prefix(group))? {
            None => Ok(None),
            Some(b) => AppliedPoint::decode(&b).map(Some).ok_or_else(|| self.malformed(format!("applied point of group {group}"))),
        }
    }

    /// Writes the group's genesis: its state entries at height 0 with their root, in one batch.
    /// Refused (as [`StoreError::OutOfOrder`]) if the group already has an applied point.
    pub fn write_genesis(&self, group: GroupId, entries: &[(Key, Value)]) -> Result<AppliedPoint, StoreError> {
        if let Some(p) = self.applied(group)? {
            return Err(StoreError::OutOfOrder { group, height: 0, applied: p.height });
        }
        let root = CommittedState::from_entries(entries.iter().cloned()).root();
        let point = AppliedPoint { height: 0, log_index: 0, block_hash: [0; 32], root };
        let mut batch = WriteBatch::default();
        let state = self.cf(CF_STATE);
        for (k, v) in entries {
            batch.put_cf(state, state_key(group, k), v.as_bytes());
        }
        batch.put_cf(self.cf(CF_APPLIED), group_prefix(group), point.encode());
        self.write(batch, self.sync)?;
        Ok(point)
    }

    /// Applies one block to a group as one atomic write: its state changes, the block (if
    /// given) and the new applied point. The block's height must be one above the applied
    /// height (or 1 for a group without one). Synced under [`Durability::Sync`].
    pub fn apply_block(&self, group: GroupId, commit: BlockCommit<'_>) -> Result<(), StoreError> {
        self.apply_blocks(group, std::slice::from_ref(&commit))
    }

    /// Applies consecutive blocks to a group as one atomic write (group commit: one sync for
    /// all of them): the store moves from the state before the first to the state after the
    /// last, never to one in between. Heights must follow the applied height one by one.
    pub fn apply_blocks(&self, group: GroupId, commits: &[BlockCommit<'_>]) -> Result<(), StoreError> {
        let mut applied = self.applied(group)?.map_or(0, |p| p.height);
        let mut batch = WriteBatch::default();
        let state = self.cf(CF_STATE);
        for commit in commits {
            if commit.point.height != applied + 1 {
                return Err(StoreError::OutOfOrder { group, height: commit.point.height, applied });
            }
            applied = commit.point.height;
            // A batch applies in order: a key written by two of the blocks ends with the later value.
            for (k, v) in commit.writes.iter() {
                match v {
                    Some(v) => batch.put_cf(state, state_key(group, k), v.as_bytes()),
                    None => batch.delete_cf(state, state_key(group, k)),
                }
            }
            if let Some(block) = commit.block {
                batch.put_cf(self.cf(CF_BLOCKS), log_key(group, commit.point.height), block);
            }
            let height = commit.point.height.to_be_bytes();
            for &(signer, nonce) in commit.txs {
                batch.put_cf(self.cf(CF_TXS), tx_key(group, signer, nonce), height);
            }
            self.put_meta_records(&mut batch, group, commit.meta);
        }
        let Some(last) = commits.last() else { return Ok(()) };
        batch.put_cf(self.cf(CF_APPLIED), group_prefix(group), last.point.encode());
        self.write(batch, self.sync)
    }

    fn put_meta_records(&self, batch: &mut WriteBatch, group: GroupId, records: &[(&[u8], &[u8])]) {
        let cf = self.cf(CF_RAFT_META);
        for (name, value) in records {
            batch.put_cf(cf, meta_name_key(group, name), value);
        }
    }

    /// The stored value of `key` in `group`.
    pub fn value(&self, group: GroupId, key: &Key) -> Result<Option<Value>, StoreError> {
        Ok(self.get(CF_STATE, &state_key(group, key))?.map(|b| Value::from_slice(&b)))
    }

    /// Calls `f` with every `(key, value)` of the group's state, in key order.
    pub fn for_each_state(&self, group: GroupId, mut f: impl FnMut(Key, Value)) -> Result<(), StoreError> {
        self.scan(CF_STATE, group_prefix(group).to_vec(), group_upper(group), |k, v| {
            let key =
                layout::state_key_decode(k).ok_or_else(|| self.malformed(format!("state key of {} bytes in group {group}", k.len())))?;
            f(key, Value::from_slice(v));
            Ok(true)
        })
    }

    /// Loads a group's state and checks it against its applied point: the state's root must
    /// equal the recorded root, or the store is refused ([`StoreError::RootMismatch`]).
    /// Returns the empty state and `None` for a group never written.
    pub fn load_state(&self, group: GroupId) -> Result<(CommittedState, Option<AppliedPoint>), StoreError> {
        let point = self.applied(group)?;
        let mut entries = Vec::new();
        self.for_each_state(group, |k, v| entries.push((k, v)))?;
        let state = CommittedState::from_entries(entries);
        if let Some(p) = point {
            let computed = state.root();
            if computed != p.root {
                return Err(StoreError::RootMismatch { path: self.path.clone(), group, height: p.height, recorded: p.root, computed });
            }
        } else if !state.is_empty() {
            return Err(self.malformed(format!("group {group} holds state but no applied point")));
        }
        Ok((state, point))
    }

    /// Replaces a group's state with a snapshot's entries at `point`, in one batch, after
    /// checking that the entries hash to `point.root` ([`StoreError::SnapshotRoot`] if not:
    /// nothing is written). Blocks and certificates above the snapshot are kept; `meta`
    /// records (as in [`BlockCommit::meta`]) are written in the same batch.
    pub fn install_snapshot(
        &self,
        group: GroupId,
        point: AppliedPoint,
        entries: &[(Key, Value)],
        meta: &[(&[u8], &[u8])],
    ) -> Result<CommittedState, StoreError> {
        let state = CommittedState::from_entries(entries.iter().cloned());
        let computed = state.root();
        if computed != point.root || state.len() != entries.len() {
            return Err(StoreError::SnapshotRoot { group, height: point.height, claimed: point.root, computed });
        }
        let mut batch = WriteBatch::default();
        let cf = self.cf(CF_STATE);
        batch.delete_range_cf(cf, group_prefix(group).as_slice(), group_upper(group).as_slice());
        for (k, v) in entries {
            batch.put_cf(cf, state_key(group, k), v.as_bytes());
        }
        batch.put_cf(self.cf(CF_APPLIED), group_prefix(group), point.encode());
        self.put_meta_records(&mut batch, group, meta);
        self.write(batch, self.sync)?;
        Ok(state)
    }

    // ---- blocks and certificates -------------------------------------------------------

    /// The stored block of `group` at `height`.
    pub fn block(&self, group: GroupId, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(CF_BLOCKS, &log_key(group, height))
    }

    /// Stores the certificate of `group`'s block at `height` (not synced: a lost certificate
    /// is collected again).
    pub fn put_certificate(&self, group: GroupId, height: u64, certificate: &[u8]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_CERTS), log_key(group, height), certificate);
        self.write(batch, false)
    }

    /// The stored certificate of `group`'s block at `height`.
    pub fn certificate(&self, group: GroupId, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(CF_CERTS, &log_key(group, height))
    }

    /// The height of `group`'s block that committed `signer`'s transaction with `nonce`, if this
    /// store applied it. The index is never pruned with the blocks, and covers the blocks this
    /// store applied (not those a snapshot stood in for).
    pub fn tx_height(&self, group: GroupId, signer: u32, nonce: u64) -> Result<Option<u64>, StoreError> {
        match self.get(CF_TXS, &tx_key(group, signer, nonce))? {
            None => Ok(None),
            Some(b) => match <[u8; 8]>::try_from(b.as_slice()) {
                Ok(h) => Ok(Some(u64::from_be_bytes(h))),
                Err(_) => Err(self.malformed(format!("transaction index entry of {} bytes in group {group}", b.len()))),
            },
        }
    }

    /// The highest height of `group` with a stored certificate.
    pub fn last_certified(&self, group: GroupId) -> Result<Option<u64>, StoreError> {
        self.last_index(CF_CERTS, group)
    }

    /// Heights in `1..=applied` of `group` that have a block but no certificate (oldest
    /// first, at most `limit`): what a restarted node must collect again.
    pub fn uncertified(&self, group: GroupId, limit: usize) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        self.scan(CF_BLOCKS, group_prefix(group).to_vec(), group_upper(group), |k, _| {
            let h = layout::index_decode(k).ok_or_else(|| self.malformed(format!("block key in group {group}")))?;
            if self.get(CF_CERTS, k)?.is_none() {
                out.push(h);
            }
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// Deletes the blocks and certificates of `group` below `height` (retention).
    pub fn prune_blocks(&self, group: GroupId, below: u64) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for cf in [CF_BLOCKS, CF_CERTS] {
            batch.delete_range_cf(self.cf(cf), log_key(group, 0), log_key(group, below));
        }
        self.write(batch, false)
    }

    // ---- the Raft log and its metadata -------------------------------------------------

    fn last_index(&self, cf: &str, group: GroupId) -> Result<Option<u64>, StoreError> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(group_prefix(group).to_vec());
        let upper = group_upper(group);
        let mut it = self.db.iterator_cf_opt(self.cf(cf), ro, IteratorMode::From(&upper, Direction::Reverse));
        match it.next() {
            None => Ok(None),
            Some(item) => {
                let (k, _) = item.map_err(|e| self.rocks(e))?;
                layout::index_decode(&k).map(Some).ok_or_else(|| self.malformed(format!("{cf} key in group {group}")))
            }
        }
    }

    /// Appends Raft log entries `(index, bytes)` to `group`'s log in one batch (synced under
    /// [`Durability::Sync`]); an entry at an index already present replaces it.
    pub fn append_log<'a>(&self, group: GroupId, entries: impl IntoIterator<Item = (u64, &'a [u8])>) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let cf = self.cf(CF_RAFT_LOG);
        for (index, bytes) in entries {
            batch.put_cf(cf, log_key(group, index), bytes);
        }
        self.write(batch, self.sync)
    }

    /// The entries of `group`'s log with indexes in `range`, in order, up to `limit` of them.
    pub fn log_entries(&self, group: GroupId, range: impl RangeBounds<u64>, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        use std::ops::Bound::*;
        let from = match range.start_bound() {
            Included(&i) => i,
            Excluded(&i) => i.saturating_add(1),
            Unbounded => 0,
        };
        let to = match range.end_bound() {
            Included(&i) => log_key(group, i).into_iter().chain([0]).collect(),
            Excluded(&i) => log_key(group, i).to_vec(),
            Unbounded => group_upper(group),
        };
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.scan(CF_RAFT_LOG, log_key(group, from).to_vec(), to, |k, v| {
            let i = layout::index_decode(k).ok_or_else(|| self.malformed(format!("raft log key in group {group}")))?;
            out.push((i, v.to_vec()));
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// The last index in `group`'s log, if any.
    pub fn last_log_index(&self, group: GroupId) -> Result<Option<u64>, StoreError> {
        self.last_index(CF_RAFT_LOG, group)
    }

    /// Deletes `group`'s log entries at `from` and above (a follower's conflicting suffix).
    /// Synced, so a truncated entry never comes back after a crash.
    pub fn truncate_log(&self, group: GroupId, from: u64) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_RAFT_LOG), log_key(group, from).as_slice(), group_upper(group).as_slice());
        self.write(batch, self.sync)
    }

    /// Deletes `group`'s log entries up to and including `upto` (compaction), and records
    /// `purged` (the caller's encoding of the last purged log id) in the same batch.
    pub fn purge_log(&self, group: GroupId, upto: u64, purged: &[u8]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_RAFT_LOG), log_key(group, 0), log_key(group, upto.saturating_add(1)));
        batch.put_cf(self.cf(CF_RAFT_META), meta_name_key(group, b"purged"), purged);
        self.write(batch, self.sync)
    }

    /// Writes a named Raft metadata record of `group` (`vote`, `committed`, `purged`, …).
    pub fn put_raft_meta(&self, group: GroupId, name: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        self.put_meta_records(&mut batch, group, &[(name, value)]);
        self.write(batch, self.sync)
    }

    /// Reads a named Raft metadata record of `group`.
    pub fn raft_meta(&self, group: GroupId, name: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(CF_RAFT_META, &meta_name_key(group, name))
    }

    /// Flushes RocksDB's write-ahead log to disk (for [`Durability::Buffered`] stores at a
    /// checkpoint of the caller's choosing).
    pub fn sync_wal(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true).map_err(|e| self.rocks(e))
    }

    /// Bytes the store occupies on disk (SST files and write-ahead log), as RocksDB reports.
    pub fn disk_bytes(&self) -> u64 {
        let sst: u64 = COLUMN_FAMILIES
            .iter()
            .filter_map(|name| self.db.property_int_value_cf(self.cf(name), "rocksdb.total-sst-files-size").ok().flatten())
            .sum();
        let wal = std::fs::read_dir(&self.path)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        sst + wal
    }
}

#[cfg(test)]
mod tests;
