//! The state machine of one group: openraft's `RaftStateMachine` over the node's [`Store`].
//!
//! Committed entries are applied in order. A normal entry's block goes to a pluggable
//! [`BlockApplier`] (the node's verify-and-execute; a test applier in the tests), and its
//! effect is persisted as **one** write batch: the state changes, the block, the new
//! [`AppliedPoint`] and the Raft [`AppliedState`] (last applied log id and membership), so the
//! Raft view and the state never disagree after a crash. Blank and membership entries change
//! only the Raft record, written alone at the end of the batch of entries being applied.
//!
//! A snapshot is the group's whole state with its applied point and Raft record
//! ([`StateSnapshot`]); installing one goes through [`Store::install_snapshot`], which refuses
//! entries that do not hash to the root the snapshot claims, and then hands the new state to
//! the applier. The last built or installed snapshot is kept in memory for
//! `get_current_snapshot`; after a restart openraft builds a new one when it needs it (when
//! the log has been purged).
//!
//! Store I/O and block execution run on tokio's blocking pool, one batch of entries per
//! hop; openraft awaits each call, so the state machine sees one operation at a time (the
//! snapshot builder, which runs beside it, takes the same lock while it scans the state).

// openraft's `StorageError` (224 bytes) is what every storage trait method returns; the
// helpers here return it too rather than box it on paths that are rare and fatal.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::Arc;

use occam_engine::prelude::{CommittedState, StateRoot, WriteSet};
use occam_store::{AppliedPoint, BlockCommit, GroupId, Store, StoreError};
use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use parking_lot::Mutex;

use super::codec::{AppliedState, CodecError, RaftCodec, StateSnapshot, StateSnapshotWriter};
use super::{Entry, LogId, NodeId, RaftRequest, RaftResponse, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

/// The `raft_meta` record of the state machine's [`AppliedState`].
pub const META_APPLIED: &[u8] = b"sm_applied";
/// The prefix of the `raft_meta` records of the group's validator-set epochs (then the epoch,
/// u64 big-endian): each epoch's members, as [`encode_members`] writes them.
pub const META_EPOCH: &[u8] = b"epoch/";

/// The validator-set epoch a membership starts, and its members.
///
/// The epoch is the log index of the membership's entry (0 for the group's first), so every
/// replica that applies the entry names it alike. The members are the voters of every config
/// the membership holds (both during a joint change), ascending; learners are not members.
pub fn epoch_of(m: &StoredMembership) -> (u64, Vec<NodeId>) {
    let members: std::collections::BTreeSet<NodeId> = m.membership().voter_ids().collect();
    (m.log_id().map_or(0, |l| l.index), members.into_iter().collect())
}

/// The `raft_meta` record name of `epoch`'s members.
pub fn epoch_record(epoch: u64) -> Vec<u8> {
    let mut name = META_EPOCH.to_vec();
    name.extend_from_slice(&epoch.to_be_bytes());
    name
}

/// Encodes an epoch's members: each node id as u64 little-endian.
pub fn encode_members(members: &[NodeId]) -> Vec<u8> {
    members.iter().flat_map(|m| m.to_le_bytes()).collect()
}

/// Decodes [`encode_members`]; `None` if the length is not a whole number of ids.
pub fn decode_members(bytes: &[u8]) -> Option<Vec<NodeId>> {
    bytes.len().is_multiple_of(8).then(|| bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
}

/// The members of `group`'s validator-set `epoch`, as recorded when its membership entry was
/// applied or its snapshot installed (`None`: this replica never saw that epoch).
pub fn epoch_members(store: &Store, group: GroupId, epoch: u64) -> Result<Option<Vec<NodeId>>, StoreError> {
    Ok(store.raft_meta(group, &epoch_record(epoch))?.as_deref().and_then(decode_members))
}

/// A committed normal entry, as the applier sees it.
#[derive(Clone, Copy, Debug)]
pub struct BlockInput<'a> {
    /// The group.
    pub group: GroupId,
    /// The entry's log id.
    pub log_id: LogId,
    /// The group's applied point before this entry (the block, if any, gets height
    /// `parent.height + 1`).
    pub parent: AppliedPoint,
    /// The validator-set epoch the block is applied in: that of the last membership applied
    /// before it ([`epoch_of`]).
    pub epoch: u64,
    /// That epoch's members.
    pub members: &'a [NodeId],
    /// The entry's payload.
    pub request: &'a RaftRequest,
}

/// What applying a block produced, for the state machine to persist in one batch.
#[derive(Clone, Debug)]
pub struct AppliedBlock {
    /// The block's resolved state changes.
    pub writes: WriteSet,
    /// The block's hash.
    pub block_hash: [u8; 32],
    /// The state root after the block.
    pub root: StateRoot,
    /// The bytes to store as the block at its height (`None`: not kept).
    pub block: Option<Vec<u8>>,
    /// The transactions the block committed, as `(signer, nonce)`, indexed under its height
    /// in the same batch (see [`occam_store::Store::tx_height`]).
    pub txs: Vec<(u32, u64)>,
}

/// Verifies and executes the blocks of committed entries: the node's part of applying.
///
/// The applier keeps whatever in-memory state it executes on; the state machine hands it
/// the persisted state at open and after a snapshot ([`BlockApplier::restore`]), and persists
/// what [`BlockApplier::apply`] returns. Applying must be deterministic: every replica applies
/// the same entries to the same state. A block whose transactions fail verification is still
/// applied (as a block with fewer writes, or as no block); an error is for what makes the
/// group unable to go on (a bug, a broken invariant), and stops its Raft node.
pub trait BlockApplier: Send + Sync + 'static {
    /// Why an entry could not be applied at all.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Replaces the applier's state with `state`, which stands at `point` (at open, and after
    /// a snapshot was installed).
    fn restore(&mut self, group: GroupId, state: CommittedState, point: AppliedPoint);

    /// Applies the block carried by a committed entry on top of `input.parent`, updating the
    /// applier's state and returning what to persist; `None`: the entry is no block (the
    /// applied height does not move).
    ///
    /// If persisting then fails, the state machine stops (openraft treats a storage error as
    /// fatal); it must be opened again, which restores the applier from the store.
    fn apply(&mut self, input: BlockInput<'_>) -> Result<Option<AppliedBlock>, Self::Error>;

    /// Checks a snapshot's applied point before it is installed (the node checks its root
    /// against the certified root at its height); the store then checks the entries against
    /// the root. The default accepts it.
    fn check_snapshot(&mut self, _group: GroupId, _point: &AppliedPoint) -> Result<(), Self::Error> {
        Ok(())
    }

    /// The block [`BlockApplier::apply`] last returned is durable at `point` (its write batch
    /// is in the store): the place to act on it outside the store, such as signing a vote,
    /// which must never precede persistence. The default does nothing.
    fn persisted(&mut self, _group: GroupId, _point: &AppliedPoint) {}

    /// The write batch of the block just persisted took `took` (for metrics). The default
    /// does nothing.
    fn wrote(&mut self, _group: GroupId, _took: std::time::Duration) {}

    /// A snapshot was installed, leaving the state at `point` (after [`BlockApplier::restore`]).
    /// The default does nothing.
    fn installed(&mut self, _group: GroupId, _point: &AppliedPoint) {}
}

/// Why a state machine could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The store refused (I/O, damage, a state that does not hash to its recorded root).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The group has no applied point: its genesis must be written first
    /// ([`Store::write_genesis`]).
    #[error("group {group} has no genesis in the store; write it before opening its state machine")]
    NoGenesis {
        /// The group.
        group: GroupId,
    },
    /// The state machine's Raft record does not decode, or contradicts the applied point.
    #[error("group {group}: the state machine's Raft record is damaged: {detail}")]
    Record {
        /// The group.
        group: GroupId,
        /// What is wrong.
        detail: String,
    },
}

/// A snapshot kept for `get_current_snapshot`.
#[derive(Clone, Debug)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// Everything the state machine owns, behind one lock shared with its snapshot builders.
#[derive(Debug)]
struct Core<A> {
    store: Store,
    group: GroupId,
    applier: A,
    point: AppliedPoint,
    applied: AppliedState,
    /// The epoch and members of `applied.membership` ([`epoch_of`]).
    epoch: (u64, Vec<NodeId>),
    current: Option<StoredSnapshot>,
    snapshots_built: u64,
}

/// The state machine of one group. Its snapshot builder shares its state, so it is a cheap
/// handle; openraft owns one per group.
pub struct StateMachine<A> {
    core: Arc<Mutex<Core<A>>>,
}

impl<A> std::fmt::Debug for StateMachine<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.core.try_lock() {
            Some(c) => {
                f.debug_struct("StateMachine").field("group", &c.group).field("point", &c.point).field("applied", &c.applied).finish()
            }
            None => f.write_str("StateMachine(busy)"),
        }
    }
}

/// Builds a snapshot of a [`StateMachine`] (openraft runs it beside the state machine).
pub struct SnapshotBuilder<A> {
    core: Arc<Mutex<Core<A>>>,
}

impl<A: BlockApplier> StateMachine<A> {
    /// Opens the state machine of `group`: loads its state (checked against its applied
    /// point's root), reads its Raft record, and restores `applier` to that state. The group
    /// must have a genesis ([`Store::write_genesis`]).
    pub fn open(store: Store, group: GroupId, mut applier: A) -> Result<Self, OpenError> {
        let (state, point) = store.load_state(group)?;
        let point = point.ok_or(OpenError::NoGenesis { group })?;
        let applied = match store.raft_meta(group, META_APPLIED)? {
            None => AppliedState::default(),
            Some(bytes) => AppliedState::decode(&bytes).map_err(|e| OpenError::Record { group, detail: e.to_string() })?,
        };
        // Pair assertion with `apply`: the record is written with every block, so it names
        // the block's entry or a later one.
        let consistent = match applied.last_applied {
            None => point.height == 0,
            Some(id) => id.index >= point.log_index,
        };
        if !consistent {
            let detail = format!(
                "last applied {:?} but the applied point is height {} at log index {}",
                applied.last_applied, point.height, point.log_index
            );
            return Err(OpenError::Record { group, detail });
        }
        applier.restore(group, state, point);
        let epoch = epoch_of(&applied.membership);
        let core = Core { store, group, applier, point, applied, epoch, current: None, snapshots_built: 0 };
        Ok(StateMachine { core: Arc::new(Mutex::new(core)) })
    }

    /// The group.
    pub fn group(&self) -> GroupId {
        self.core.lock().group
    }

    /// The group's applied point (height, log index, block hash, root).
    pub fn applied_point(&self) -> AppliedPoint {
        self.core.lock().point
    }

    /// The last applied log id and membership.
    pub fn applied(&self) -> AppliedState {
        self.core.lock().applied.clone()
    }

    /// Runs `f` on the applier (for reads of its state), holding the state machine's lock.
    pub fn with_applier<T>(&self, f: impl FnOnce(&A) -> T) -> T {
        f(&self.core.lock().applier)
    }
}

/// Runs `f` on the core, on tokio's blocking pool (store I/O and execution block).
async fn run<A, T, F>(core: &Arc<Mutex<Core<A>>>, f: F) -> Result<T, StorageError>
where
    A: Send + 'static,
    T: Send + 'static,
    F: FnOnce(&mut Core<A>) -> Result<T, StorageError> + Send + 'static,
{
    let core = core.clone();
    match tokio::task::spawn_blocking(move || f(&mut core.lock())).await {
        Ok(res) => res,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(join) => Err(StorageIOError::write_state_machine(AnyError::error(format!("state machine task cancelled: {join}"))).into()),
    }
}

fn sm_write_error(e: &StoreError) -> StorageError {
    StorageIOError::write_state_machine(AnyError::new(e)).into()
}

impl<A: BlockApplier> Core<A> {
    fn response(&self) -> RaftResponse {
        RaftResponse { height: self.point.height, root: self.point.root }
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<Vec<RaftResponse>, StorageError> {
        let mut replies = Vec::with_capacity(entries.len());
        // The Raft record changed without a block carrying it: write it at the end.
        let mut record_dirty = false;
        for entry in entries {
            let log_id = entry.log_id;
            if let Some(last) = self.applied.last_applied {
                // openraft applies each entry once, in order.
                assert!(log_id.index > last.index, "entry {log_id} applied after {last}");
            }
            match entry.payload {
                EntryPayload::Blank => {
                    self.applied.last_applied = Some(log_id);
                    record_dirty = true;
                }
                EntryPayload::Membership(m) => {
                    self.applied.last_applied = Some(log_id);
                    self.applied.membership = StoredMembership::new(Some(log_id), m);
                    // The epoch's members first: the applied record that names the epoch comes
                    // after it (written again if a crash comes between).
                    self.epoch = epoch_of(&self.applied.membership);
                    self.store
                        .put_raft_meta(self.group, &epoch_record(self.epoch.0), &encode_members(&self.epoch.1))
                        .map_err(|e| sm_write_error(&e))?;
                    record_dirty = true;
                }
                EntryPayload::Normal(ref request) => {
                    let input =
                        BlockInput { group: self.group, log_id, parent: self.point, epoch: self.epoch.0, members: &self.epoch.1, request };
                    let block = self.applier.apply(input).map_err(|e| StorageIOError::apply(log_id, AnyError::new(&e)))?;
                    self.applied.last_applied = Some(log_id);
                    match block {
                        None => record_dirty = true,
                        Some(b) => {
                            let point = AppliedPoint {
                                height: self.point.height + 1,
                                log_index: log_id.index,
                                block_hash: b.block_hash,
                                root: b.root,
                            };
                            let record = self.applied.encode();
                            let commit = BlockCommit {
                                point,
                                writes: &b.writes,
                                block: b.block.as_deref(),
                                meta: &[(META_APPLIED, &record)],
                                txs: &b.txs,
                            };
                            let started = std::time::Instant::now();
                            self.store
                                .apply_block(self.group, commit)
                                .map_err(|e| StorageError::from(StorageIOError::apply(log_id, AnyError::new(&e))))?;
                            self.applier.wrote(self.group, started.elapsed());
                            self.point = point;
                            self.applier.persisted(self.group, &point);
                            record_dirty = false;
                        }
                    }
                }
            }
            replies.push(self.response());
        }
        if record_dirty {
            self.store.put_raft_meta(self.group, META_APPLIED, &self.applied.encode()).map_err(|e| sm_write_error(&e))?;
        }
        Ok(replies)
    }

    fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let mut w = StateSnapshotWriter::new(&self.applied, &self.point);
        let mut bad: Option<CodecError> = None;
        self.store
            .for_each_state(self.group, |k, v| {
                if bad.is_none() {
                    bad = w.push(&k, &v).err();
                }
            })
            .map_err(|e| StorageError::from(StorageIOError::read_state_machine(AnyError::new(&e))))?;
        if let Some(e) = bad {
            return Err(StorageIOError::read_state_machine(AnyError::error(format!(
                "group {}: state cannot be snapshotted: {e}",
                self.group
            )))
            .into());
        }
        self.snapshots_built += 1;
        let id = match self.applied.last_applied {
            Some(l) => format!(
                "g{}-t{}-n{}-i{}-h{}-{}",
                self.group, l.leader_id.term, l.leader_id.node_id, l.index, self.point.height, self.snapshots_built
            ),
            None => format!("g{}-empty-h{}-{}", self.group, self.point.height, self.snapshots_built),
        };
        let meta =
            SnapshotMeta { last_log_id: self.applied.last_applied, last_membership: self.applied.membership.clone(), snapshot_id: id };
        let data = w.finish();
        let snapshot = Snapshot { meta: meta.clone(), snapshot: Box::new(Cursor::new(data.clone())) };
        self.current = Some(StoredSnapshot { meta, data });
        Ok(snapshot)
    }

    fn install_snapshot(&mut self, meta: &SnapshotMeta, data: Vec<u8>) -> Result<(), StorageError> {
        let fail = |msg: String| -> StorageError { StorageIOError::write_snapshot(Some(meta.signature()), AnyError::error(msg)).into() };
        let snap = StateSnapshot::decode(&data)
            .map_err(|e| fail(format!("group {}: snapshot {} does not decode: {e}", self.group, meta.snapshot_id)))?;
        // Pair assertion: the snapshot's bytes cover what its metadata says.
        if snap.applied.last_applied != meta.last_log_id || snap.applied.membership != meta.last_membership {
            return Err(fail(format!(
                "group {}: snapshot {} holds state at {:?}, but its metadata says {:?}",
                self.group, meta.snapshot_id, snap.applied.last_applied, meta.last_log_id
            )));
        }
        self.applier
            .check_snapshot(self.group, &snap.point)
            .map_err(|e| StorageError::from(StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e))))?;
        let record = snap.applied.encode();
        let epoch = epoch_of(&snap.applied.membership);
        let members = encode_members(&epoch.1);
        let epoch_name = epoch_record(epoch.0);
        let state = self
            .store
            .install_snapshot(self.group, snap.point, &snap.entries, &[(META_APPLIED, &record), (&epoch_name, &members)])
            .map_err(|e| StorageError::from(StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e))))?;
        self.applier.restore(self.group, state, snap.point);
        self.applier.installed(self.group, &snap.point);
        self.point = snap.point;
        self.applied = snap.applied;
        self.epoch = epoch;
        self.current = Some(StoredSnapshot { meta: meta.clone(), data });
        Ok(())
    }
}

impl<A: BlockApplier> RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder<A> {
    /// Scans the group's state under the state machine's lock (so the snapshot is exactly
    /// the state at its applied point), encodes it, and keeps it as the current snapshot.
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        run(&self.core, |core| core.build_snapshot()).await
    }
}

impl<A: BlockApplier> RaftStateMachine<TypeConfig> for StateMachine<A> {
    type SnapshotBuilder = SnapshotBuilder<A>;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        run(&self.core, |core| Ok((core.applied.last_applied, core.applied.membership.clone()))).await
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<RaftResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        run(&self.core, move |core| core.apply(entries)).await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { core: self.core.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Box<Cursor<Vec<u8>>>) -> Result<(), StorageError> {
        let meta = meta.clone();
        let data = snapshot.into_inner();
        run(&self.core, move |core| core.install_snapshot(&meta, data)).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        run(&self.core, |core| {
            Ok(core.current.as_ref().map(|s| Snapshot { meta: s.meta.clone(), snapshot: Box::new(Cursor::new(s.data.clone())) }))
        })
        .await
    }
}
