//! One hosted shard replica: its Raft group, the applier Raft drives, and the replica's thread,
//! which proposes blocks while this node leads the group and certifies every applied block.
//!
//! The life of a block:
//!
//! 1. **Proposal** (leader): the group thread takes pending transactions off its mempool
//!    (their signatures were checked before they entered it: the one check a leader makes, see
//!    `admission`), aggregates them into one block signature and hands the encoded block to
//!    Raft (`client_write`). The payload's
//!    hash goes into `verified`, so this node's applier does not check the same signatures
//!    again. Up to `limits.pipeline` blocks may be in Raft and not yet applied.
//! 2. **Ordering**: Raft replicates the entry to a majority of the group and commits it.
//! 3. **Apply** (every replica, [`NodeApplier`], on Raft's state machine task): decode; a
//!    follower verifies the block's aggregate signature (a block that fails is applied as a
//!    block without transactions, so an honest follower's root departs from a lying leader's
//!    and the leader gets no certificate); execute with the parallel executor; persist the
//!    state changes, the block and the applied point in one write batch (`occam-store`).
//! 4. **Vote** (after persisting): the replica signs `(chain, shard, epoch, height, block
//!    hash, root)` and sends the vote to the group's current leader, again every
//!    [`VOTE_RESEND`] until the height is certified (votes are lost when leaders change). The
//!    epoch is that of the group's membership when the block was applied: the Raft membership
//!    names the validators (a replica that is no voter, such as a learner catching up, does
//!    not vote), and the cluster file their keys ([`Sets`]).
//! 5. **Certificate**: the node that collects a quorum of matching votes stores the certificate
//!    with the block and sends it to the other members, which check it against their own vote
//!    and store it. A vote that names another block or root is reported, never counted.
//! 6. **Receipts**: the node that admitted the block's transactions sends each client its
//!    receipts with the certificate once the block is certified, never before.
//!
//! After a restart, the heights that have a block but no certificate are voted for again from
//! the stored block (which keeps its hash and root), so their certificates form once a quorum
//! is back.

use super::batch::{aggregate, drop_pending, ready, send_receipts, status_of, take, turn, Mempool, SigCheck};
use super::coordinator::CrossSide;
use super::system::{self, CrossOutcome};
use super::{Origin, Shared, SnapshotReply};
use crate::metrics::ShardMetrics;
use crate::raft::state_machine::{AppliedBlock, BlockApplier, BlockInput};
use crate::raft::{RaftRequest, TypeConfig};
use crate::wire::{CrossStep, Message, Proposal, TxStatus};
use crossbeam_channel::Sender;
use occam_engine::crypto::SecretKey;
use occam_engine::exec::BlockExecutor;
use occam_engine::exec::MAX_BLOCK_TXS;
use occam_engine::key::Key;
use occam_engine::native::signed::{next_nonce, nonce_signer, SignedTx, SignedVm, VerifiedTx};
use occam_engine::prelude::StateRoot;
use occam_engine::state::{CommittedState, WriteSet};
use occam_engine::value::Value;
use occam_shard::protocol::Message as CrossMessage;
use occam_shard::{Certificate, QuorumCollector, SignedVote, ValidatorSet, Vote};
use occam_store::{AppliedPoint, GroupId, Store};
use openraft::Raft;
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, error, warn};

/// A replica sends its vote for a height again this long after the last time, until the height
/// is certified.
pub(super) const VOTE_RESEND: Duration = Duration::from_millis(300);
/// The most own votes a replica keeps for heights not yet certified; older ones are dropped
/// (after a restart they are signed again from the stored blocks).
const OWN_VOTES: usize = 4096;
/// The most votes held for heights this replica has not applied yet.
const EARLY_VOTES: usize = 4096;
/// Blocks this node proposed and has not seen applied are forgotten after this long (the entry
/// was lost with a leader change); their clients get no receipt from here.
const PROPOSED_TTL: Duration = Duration::from_secs(60);
/// Votes a replica sends (again) in one turn of its loop.
const VOTES_PER_TURN: usize = 256;
/// Room left in a Raft entry for the envelope around a block (an AppendEntries request's vote,
/// log ids and lengths), so that one entry always fits in one frame.
const ENTRY_MARGIN: usize = 64 << 10;
/// Heights a restarted replica votes for again, oldest first.
const REVOTE_ON_START: usize = 1024;
/// Bytes of a stored block before its payload: the block hash, the state root after it, and
/// the validator-set epoch it was applied in (u64 LE).
const STORED_BLOCK_HEADER: usize = 72;
/// Validator sets a replica keeps built (one per epoch it met recently).
const CACHED_SETS: usize = 16;

/// What a group's thread handles.
pub(super) enum GroupEvent {
    /// Admitted transactions (this node led the group when they were admitted).
    Submit(Vec<(SignedTx, Origin)>, Instant),
    /// A client's read of keys of this shard.
    Read { conn: u64, id: u64, keys: Vec<Key> },
    /// A cross-shard request from the coordinator at node `from`.
    Cross { from: u32, message: CrossMessage },
    /// A replica's vote, sent by node `from`.
    Vote { from: u32, vote: Box<SignedVote> },
    /// A certificate formed elsewhere.
    Commit(Box<Certificate>),
    /// This replica applied and persisted a block.
    Applied(Box<AppliedInfo>),
    /// The state was replaced (opened, or a snapshot installed) at this point.
    Restored(AppliedPoint),
    /// The replica's whole state, for [`super::Node::snapshot`].
    Snapshot(SnapshotReply),
}

/// A block this replica applied and persisted.
pub(super) struct AppliedInfo {
    height: u64,
    block_hash: [u8; 32],
    root: [u8; 32],
    /// BLAKE3 of the Raft entry's payload: how the proposer finds its block again.
    key: [u8; 32],
    statuses: Vec<TxStatus>,
    /// What the block's cross-shard step did.
    cross: Option<CrossOutcome>,
    took: Duration,
    /// The validator-set epoch it was applied in, and that epoch's members.
    epoch: u64,
    members: Vec<u32>,
}

/// Why a block could not be applied at all (the group's Raft node stops).
#[derive(Debug, thiserror::Error)]
#[error("shard {shard}: {detail}")]
pub struct ApplyError {
    shard: u32,
    detail: String,
}

/// The node's [`BlockApplier`]: verifies (unless this node admitted the block), executes with
/// the parallel executor, and reports each persisted block to the group's thread.
pub(super) struct NodeApplier {
    pub shard: u32,
    pub state: Arc<RwLock<CommittedState>>,
    pub exec: Mutex<Box<dyn BlockExecutor<SignedVm>>>,
    /// The VM it executes (signers' numbers and keys: `check.registry`).
    pub vm: SignedVm,
    pub check: SigCheck,
    /// Payload hashes of blocks whose signatures this node verified at admission.
    pub verified: Arc<Mutex<HashSet<[u8; 32]>>>,
    pub events: Sender<GroupEvent>,
    pub store: Store,
    pub metrics: Arc<ShardMetrics>,
    /// Times each block's write batch (the node's histogram).
    pub store_write_seconds: prometheus::Histogram,
    pub last: Option<AppliedInfo>,
    /// The epoch and members of the block being applied.
    pub epoch: (u64, Vec<u32>),
}

/// A stored block's header.
struct StoredHeader {
    hash: [u8; 32],
    root: [u8; 32],
    epoch: u64,
}

/// Splits a stored block into its header and payload.
fn split_stored(bytes: &[u8]) -> Option<(StoredHeader, &[u8])> {
    if bytes.len() < STORED_BLOCK_HEADER {
        return None;
    }
    let hash = bytes[..32].try_into().ok()?;
    let root = bytes[32..64].try_into().ok()?;
    let epoch = u64::from_le_bytes(bytes[64..72].try_into().ok()?);
    Some((StoredHeader { hash, root, epoch }, &bytes[STORED_BLOCK_HEADER..]))
}

/// The validator sets of a group's epochs: an epoch's members are what its membership entry
/// recorded in the store (or what the applier reports with a block), their keys what the
/// cluster file lists.
pub(super) struct Sets {
    shard: u32,
    cache: BTreeMap<u64, ValidatorSet>,
    /// Epochs whose set could not be built, already reported.
    reported: HashSet<u64>,
}

impl Sets {
    pub(super) fn new(shard: u32) -> Sets {
        Sets { shard, cache: BTreeMap::new(), reported: HashSet::new() }
    }

    /// The set of `epoch` if it is built already.
    fn known(&self, epoch: u64) -> Option<&ValidatorSet> {
        self.cache.get(&epoch)
    }

    /// The set of `epoch`, with `members` if the caller knows them (else from the store);
    /// `None` (logged) if the members are not known or a member is not in the cluster file.
    fn get(&mut self, epoch: u64, members: Option<&[u32]>, store: &Store, shared: &Shared) -> Option<ValidatorSet> {
        if let Some(set) = self.cache.get(&epoch) {
            return Some(set.clone());
        }
        let shard = self.shard;
        let members: Vec<u32> = match members {
            Some(m) => m.to_vec(),
            None => match crate::raft::state_machine::epoch_members(store, shard, epoch) {
                Ok(Some(m)) => m.into_iter().filter_map(|id| u32::try_from(id).ok()).collect(),
                Ok(None) => {
                    debug!(shard, epoch, "validator-set epoch not known here");
                    return None;
                }
                Err(e) => {
                    error!(shard, epoch, "reading the validator-set epoch: {e}");
                    return None;
                }
            },
        };
        let set = match shared.roster().validator_set(epoch, &members) {
            Ok(set) => set,
            Err(e) => {
                if self.reported.len() < CACHED_SETS && self.reported.insert(epoch) {
                    error!(shard, epoch, "the validators of epoch {epoch}: {e} (is the cluster file up to date?)");
                }
                return None;
            }
        };
        if self.cache.len() >= CACHED_SETS {
            self.cache.pop_first();
        }
        self.cache.insert(epoch, set.clone());
        Some(set)
    }
}

/// The transactions a block commits, found from the nonces it spends: a signer whose next
/// nonce the block moves from `a` to `b` committed its transactions with nonces `a..b`, whether
/// they were the block's own or a cross-shard round's (whose writes carry the nonces spent).
/// This is what a status read by (signer, nonce) finds (see [`super::fate`]).
#[derive(Default)]
struct Spent {
    /// Each signer's next nonce before the block.
    before: BTreeMap<u32, u64>,
}

impl Spent {
    /// Notes the next nonces of `signers` before the block changes them (a signer already
    /// noted keeps its first value).
    fn before(&mut self, state: &CommittedState, signers: impl Iterator<Item = u32>) {
        for s in signers {
            self.before.entry(s).or_insert_with(|| next_nonce(state, s));
        }
    }

    /// The `(signer, nonce)` pairs spent between the notes and `state`, in order; at most
    /// [`MAX_BLOCK_TXS`] per signer (no block spends more).
    fn after(self, state: &CommittedState) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        for (s, a) in self.before {
            let b = next_nonce(state, s);
            out.extend((a..b.min(a.saturating_add(MAX_BLOCK_TXS as u64))).map(|n| (s, n)));
        }
        out
    }
}

impl NodeApplier {
    /// Records what the group's thread learns of an applied block and returns what the state
    /// machine persists.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        p: &Proposal,
        bytes: &[u8],
        key: [u8; 32],
        height: u64,
        statuses: Vec<TxStatus>,
        cross: Option<CrossOutcome>,
        writes: WriteSet,
        txs: Vec<(u32, u64)>,
        root: [u8; 32],
        started: Instant,
    ) -> AppliedBlock {
        let block_hash = p.hash();
        let (epoch, members) = self.epoch.clone();
        let mut stored = Vec::with_capacity(STORED_BLOCK_HEADER + bytes.len());
        stored.extend_from_slice(&block_hash);
        stored.extend_from_slice(&root);
        stored.extend_from_slice(&epoch.to_le_bytes());
        stored.extend_from_slice(bytes);
        self.last = Some(AppliedInfo { height, block_hash, root, key, statuses, cross, took: started.elapsed(), epoch, members });
        AppliedBlock { writes, block_hash, root: StateRoot(root), block: Some(stored), txs }
    }
}

impl BlockApplier for NodeApplier {
    type Error = ApplyError;

    fn wrote(&mut self, _group: GroupId, took: Duration) {
        self.store_write_seconds.observe(took.as_secs_f64());
    }

    fn installed(&mut self, _group: GroupId, _point: &AppliedPoint) {
        self.metrics.snapshot_installs.inc();
    }

    fn restore(&mut self, _group: GroupId, state: CommittedState, point: AppliedPoint) {
        *self.state.write() = state;
        self.metrics.raise_height(point.height);
        let _ = self.events.send(GroupEvent::Restored(point));
    }

    fn apply(&mut self, input: BlockInput<'_>) -> Result<Option<AppliedBlock>, ApplyError> {
        let started = Instant::now();
        if self.epoch.0 != input.epoch || self.epoch.1.is_empty() {
            self.epoch = (input.epoch, input.members.iter().filter_map(|&m| u32::try_from(m).ok()).collect());
        }
        let bytes = &input.request.bytes;
        let key = *blake3::hash(bytes).as_bytes();
        let height = input.parent.height + 1;
        // Every replica decodes the same bytes the same way: a payload that is no block of this
        // shard becomes an empty block everywhere.
        let mut p = match Proposal::decode_entry(bytes) {
            Ok(p) if p.shard == self.shard => p,
            other => {
                let why = other.map_or_else(|e| e.to_string(), |p| format!("a block of shard {}", p.shard));
                warn!(shard = self.shard, height, "a Raft entry that is no block of this shard ({why}); applied as an empty block");
                Proposal { shard: self.shard, height: 0, parent: [0; 32], cross: None, block: None }
            }
        };
        p.height = height;
        p.parent = input.parent.block_hash;
        let admitted_here = self.verified.lock().remove(&key);
        if !admitted_here {
            if let Some(block) = &p.block {
                if let Err(e) = block.verify_on(&self.check.registry, self.check.chain_id, &self.check.verifier) {
                    error!(shard = self.shard, height, "the leader's block does not verify: {e}; applied without its transactions");
                    p.block = None;
                }
            }
        }
        let mut state = self.state.write();
        // The nonces this block spends, by the round's writes or its transactions, as each
        // signer's next nonce before the block (indexed once the block is applied).
        let mut spent = Spent::default();
        // The cross-shard step first: its records (and a round's writes) are applied before the
        // block's transactions.
        let (cross, outcome) = match &p.cross {
            Some(step) => {
                let (writes, outcome) = system::apply_step(&state, self.shard, height, step);
                spent.before(&state, writes.iter().filter_map(|(k, _)| nonce_signer(k)));
                let w = WriteSet::from_entries(writes);
                state.apply(&w, None);
                (Some(w).filter(|w| !w.is_empty()), Some(outcome))
            }
            None => (None, None),
        };
        // A locked shard applies no transactions: the values a cross-shard round read must stand
        // until its outcome lands. (Its leader proposes none; a block that reaches the log
        // anyway, from a leader that had not applied the lock yet, is refused whole.)
        if p.block.is_some() && system::lock(&state).is_some() {
            warn!(shard = self.shard, height, "a block of transactions while the shard is locked for a cross-shard round; refused");
            let n = p.txs();
            p.block = None;
            let root = state.root().0;
            let txs = spent.after(&state);
            drop(state);
            return Ok(Some(self.finish(
                &p,
                bytes,
                key,
                height,
                vec![TxStatus::Aborted; n],
                outcome,
                cross.unwrap_or_default(),
                txs,
                root,
                started,
            )));
        }
        let (statuses, block_writes) = match &p.block {
            Some(block) => {
                spent.before(&state, block.headers.iter().map(|h| h.signer));
                let txs: Vec<VerifiedTx> = block.headers.iter().map(|h| VerifiedTx { header: h.clone(), signature_ok: true }).collect();
                let out = self
                    .exec
                    .get_mut()
                    .execute_and_commit(&self.vm, &mut state, &txs)
                    .map_err(|e| ApplyError { shard: self.shard, detail: format!("executing block {height}: {e}") })?;
                (out.outputs.iter().map(status_of).collect(), Some(out.write_set))
            }
            None => (Vec::new(), None),
        };
        // What to persist: the block's write set as the executor made it; only a block that
        // also carries cross-shard writes needs the two merged (block writes last, each key once).
        let writes = match (cross, block_writes) {
            (Some(c), Some(b)) => {
                let mut merged: BTreeMap<Key, Option<Value>> = c.iter().cloned().collect();
                merged.extend(b.iter().cloned());
                WriteSet::from_entries(merged.into_iter().collect())
            }
            (Some(w), None) | (None, Some(w)) => w,
            (None, None) => WriteSet::default(),
        };
        let root = state.root().0;
        let txs = spent.after(&state);
        drop(state);
        Ok(Some(self.finish(&p, bytes, key, height, statuses, outcome, writes, txs, root, started)))
    }

    fn check_snapshot(&mut self, group: GroupId, point: &AppliedPoint) -> Result<(), ApplyError> {
        // A certificate this replica holds for the snapshot's height must name its root.
        let stored = self.store.certificate(group, point.height).map_err(|e| ApplyError { shard: self.shard, detail: e.to_string() })?;
        if let Some(bytes) = stored {
            let c =
                Certificate::decode(&bytes).map_err(|e| ApplyError { shard: self.shard, detail: format!("stored certificate: {e}") })?;
            if c.vote.state_root != point.root.0 || c.vote.block_hash != point.block_hash {
                return Err(ApplyError {
                    shard: self.shard,
                    detail: format!("a snapshot at height {} whose root is not the certified one", point.height),
                });
            }
        }
        Ok(())
    }

    fn persisted(&mut self, _group: GroupId, point: &AppliedPoint) {
        if let Some(info) = self.last.take() {
            debug_assert_eq!(info.height, point.height);
            let _ = self.events.send(GroupEvent::Applied(Box::new(info)));
        }
    }
}

/// A hosted replica's handle, kept by the node for routing.
#[derive(Clone)]
pub(super) struct GroupHandle {
    pub events: Sender<GroupEvent>,
    /// Transactions admitted and not yet taken into a block.
    pub depth: Arc<AtomicUsize>,
    pub raft: Raft<TypeConfig>,
    pub state: Arc<RwLock<CommittedState>>,
}

impl GroupHandle {
    /// The group's leader as this replica knows it.
    pub fn leader(&self) -> Option<u32> {
        self.raft.metrics().borrow().current_leader.map(|n| n as u32)
    }

    /// The term in which `node` (this replica's node) leads the group, once it has applied an
    /// entry of that term (so every entry an earlier leader logged is applied here too).
    pub fn caught_up_term(&self, node: u32) -> Option<u64> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let caught_up = m.current_leader == Some(u64::from(node)) && m.last_applied.is_some_and(|l| l.leader_id.term == m.current_term);
        caught_up.then_some(m.current_term)
    }
}

/// Everything a group's thread owns.
pub(super) struct GroupCtx {
    pub shard: u32,
    /// This node's index among the shard's replicas (its signer index).
    pub replica: u32,
    pub handle: GroupHandle,
    pub store: Store,
    pub bls: SecretKey,
    pub check: SigCheck,
    pub metrics: Arc<ShardMetrics>,
    pub verified: Arc<Mutex<HashSet<[u8; 32]>>>,
    pub block_txs: usize,
    pub block_time: Duration,
    pub pipeline: usize,
    pub runtime: tokio::runtime::Handle,
}

/// A block this node proposed, until it is applied (or forgotten).
struct Proposed {
    origins: Vec<Origin>,
    at: Instant,
}

/// Receipts waiting for a height's certificate.
struct Awaiting {
    entries: Vec<(Origin, TxStatus)>,
    started: Instant,
}

/// Votes and certificates of one group, on one replica.
struct Certifier {
    chain_id: u64,
    shard: u32,
    /// This replica's node: its signer index in each epoch's set is its rank among the members.
    node: u32,
    /// This replica's votes for heights not known to be certified, with when each was last sent.
    own: BTreeMap<u64, (SignedVote, Option<Instant>)>,
    /// Collections of votes for heights this replica applied.
    collectors: BTreeMap<u64, QuorumCollector>,
    /// Votes for heights this replica has not applied yet, with their senders.
    early: BTreeMap<u64, Vec<(u32, SignedVote)>>,
    early_count: usize,
    /// Blocks applied in an epoch whose set could not be built yet (a member the cluster file
    /// does not list yet): voted for once it can.
    unvoted: BTreeMap<u64, Unvoted>,
}

/// A block this replica applied and has not voted for yet.
struct Unvoted {
    epoch: u64,
    members: Vec<u32>,
    hash: [u8; 32],
    root: [u8; 32],
}

impl Certifier {
    /// Records this replica's own vote for a block applied in `set`'s epoch; returns the
    /// certificate if the votes already held complete a quorum. A replica that is not a member
    /// of the set does not vote.
    fn applied(&mut self, set: &ValidatorSet, bls: &SecretKey, height: u64, block_hash: [u8; 32], root: [u8; 32]) -> Option<Certificate> {
        let signer = set.index_of_id(self.node)?;
        let vote = Vote { chain_id: self.chain_id, shard: self.shard, epoch: set.epoch(), height, block_hash, state_root: root };
        let signed = SignedVote::sign(vote, signer, bls);
        if self.own.len() >= OWN_VOTES {
            self.own.pop_first();
        }
        self.own.insert(height, (signed, None));
        let mut collector = QuorumCollector::new(set.clone(), vote);
        let mut certificate = collector.add(signed).ok().flatten();
        if let Some(votes) = self.early.remove(&height) {
            self.early_count -= votes.len();
            for (_, v) in votes {
                certificate = certificate.or_else(|| self.add(&mut collector, v));
            }
        }
        if self.collectors.len() >= OWN_VOTES {
            self.collectors.pop_first();
        }
        self.collectors.insert(height, collector);
        certificate
    }

    fn add(&self, collector: &mut QuorumCollector, v: SignedVote) -> Option<Certificate> {
        match collector.add(v) {
            Ok(c) => c,
            Err(occam_shard::CertificateError::VoteMismatch { signer }) => {
                error!(
                    shard = self.shard,
                    height = v.vote.height,
                    signer,
                    "replica {signer} diverged: its vote names another block or state root than this replica's; not counted"
                );
                None
            }
            Err(e) => {
                debug!(shard = self.shard, "vote ignored: {e}");
                None
            }
        }
    }

    /// A vote from another replica, sent by node `from`.
    fn on_vote(&mut self, from: u32, v: SignedVote) -> Option<Certificate> {
        let h = v.vote.height;
        if let Some(mut c) = self.collectors.remove(&h) {
            let out = self.add(&mut c, v);
            self.collectors.insert(h, c);
            return out;
        }
        // Held by sender and signer, unchecked until the height is applied here: a vote a
        // sender makes up under another's index does not push out the real one.
        if self.early_count < EARLY_VOTES {
            let held = self.early.entry(h).or_default();
            if !held.iter().any(|(f, e)| *f == from && e.signer == v.signer) {
                held.push((from, v));
                self.early_count += 1;
            }
        }
        None
    }

    /// The height is certified: nothing more to collect or send for it.
    fn done(&mut self, height: u64) {
        self.own.remove(&height);
        self.collectors.remove(&height);
        if let Some(v) = self.early.remove(&height) {
            self.early_count -= v.len();
        }
    }

    /// Forgets held votes for heights up to `height` that this replica will not apply (it
    /// applied past them, or installed a snapshot beyond them).
    fn prune_early(&mut self, height: u64) {
        while let Some(entry) = self.early.first_entry() {
            if *entry.key() > height {
                break;
            }
            self.early_count -= entry.remove().len();
        }
    }

    /// This replica's vote for `height`, if it holds one.
    fn own_vote(&self, height: u64) -> Option<&SignedVote> {
        self.own.get(&height).map(|(v, _)| v)
    }
}

/// `c`, if it certifies the block this replica stored at its height (hash, root and epoch)
/// and verifies against that epoch's set; a certificate for another block is reported.
fn certifies_stored(store: &Store, shard: u32, c: Certificate, sets: &mut Sets, shared: &Shared) -> Option<Certificate> {
    let h = c.vote.height;
    let bytes = store.block(shard, h).ok().flatten()?;
    let (b, _) = split_stored(&bytes)?;
    if (b.hash, b.root, b.epoch) != (c.vote.block_hash, c.vote.state_root, c.vote.epoch) {
        error!(shard, height = h, "this replica diverged: the certified block or state root is not the one it stored");
        return None;
    }
    let set = sets.get(b.epoch, None, store, shared)?;
    match c.verify(&set) {
        Ok(()) => Some(c),
        Err(e) => {
            warn!(shard, height = h, "a certificate that does not verify: {e}");
            None
        }
    }
}

/// Runs a group's thread until the node stops.
pub(super) fn run_group(ctx: GroupCtx, rx: crossbeam_channel::Receiver<GroupEvent>, shared: Arc<Shared>) {
    let shard = ctx.shard;
    let node = shared.node;
    let mut mempool: Mempool = Mempool::new();
    let mut proposed: HashMap<[u8; 32], Proposed> = HashMap::new();
    let mut awaiting: BTreeMap<u64, Awaiting> = BTreeMap::new();
    // Blocks handed to Raft and not yet applied here (or refused).
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut cross = CrossSide::new();
    let mut point = AppliedPoint { height: 0, log_index: 0, block_hash: [0; 32], root: StateRoot([0; 32]) };
    let mut sets = Sets::new(shard);
    let mut cert = Certifier {
        chain_id: ctx.check.chain_id,
        shard,
        node,
        own: BTreeMap::new(),
        collectors: BTreeMap::new(),
        early: BTreeMap::new(),
        early_count: 0,
        unvoted: BTreeMap::new(),
    };
    let mut unvoted_tried = Instant::now();
    // Vote again for what a previous run applied but saw no certificate for.
    match ctx.store.uncertified(shard, REVOTE_ON_START) {
        Ok(heights) => {
            for h in heights {
                let stored = ctx.store.block(shard, h).ok().flatten();
                match stored.as_deref().and_then(split_stored) {
                    Some((b, _)) => {
                        if let Some(set) = sets.get(b.epoch, None, &ctx.store, &shared) {
                            let _ = cert.applied(&set, &ctx.bls, h, b.hash, b.root);
                        }
                    }
                    None => warn!(shard, height = h, "a stored block without its hash and root; not voted for again"),
                }
            }
        }
        Err(e) => error!(shard, "reading the uncertified heights: {e}"),
    }
    // A certificate this replica holds: store it, tell the others (when it formed here), send
    // the receipts it was waiting for, and acknowledge a cross-shard round it carried.
    let certified =
        |c: Certificate, formed_here: bool, cert: &mut Certifier, awaiting: &mut BTreeMap<u64, Awaiting>, cross: &mut CrossSide| {
            let h = c.vote.height;
            cert.done(h);
            if let Err(e) = ctx.store.put_certificate(shard, h, &c.encode()) {
                error!(shard, height = h, "storing a certificate: {e}");
            }
            shared.set_certified(shard, h);
            if formed_here {
                // To the set's members and to the group's learners (a node catching up, which
                // stores the certificates of the blocks it applies).
                let learners: Vec<u32> = ctx
                    .handle
                    .raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .learner_ids()
                    .filter_map(|id| u32::try_from(id).ok())
                    .collect();
                for &m in c.members.iter().chain(&learners).filter(|&&m| m != node) {
                    shared.send_to_node(m, &Message::Commit(c.clone()));
                }
            }
            // The node that proposed the block counts it (once per cluster) and answers its clients.
            let entries = match awaiting.remove(&h) {
                Some(a) => {
                    ctx.metrics.certified(h, a.entries.len() as u64, a.started.elapsed());
                    a.entries
                }
                None => {
                    ctx.metrics.raise_height(h);
                    Vec::new()
                }
            };
            cross.certified(shard, h, &c, &shared);
            if !entries.is_empty() {
                send_receipts(&shared, Some(c), entries);
            }
        };
    let mut was_leading = false;
    // The last leader this replica knew of (a change to another one is counted).
    let mut last_leader = None;
    // The height this replica had applied when it last became leader.
    let mut led_from = 0;
    // The term in which this replica, leading, last read the cross-shard lock from its state.
    let mut lock_read_in: Option<u64> = None;
    // Payload hashes of blocks this node proposed that Raft did not commit under its leadership
    // (filled by the proposing tasks; never dropped, unlike a message on a full queue).
    let not_committed: Arc<Mutex<Vec<[u8; 32]>>> = Arc::default();
    while !shared.stopping.load(Ordering::Relaxed) {
        let Some(batch) = turn(&rx) else { break };
        for key in std::mem::take(&mut *not_committed.lock()) {
            cross.not_committed(key);
        }
        let leader = ctx.handle.leader();
        if leader.is_some() && leader != last_leader {
            if last_leader.is_some() {
                ctx.metrics.leader_changes.inc();
            }
            last_leader = leader;
        }
        let leading = leader == Some(node);
        if leading && !was_leading {
            // Clients learn of a new leader from it at once (the old one may be dead).
            shared.announce();
            led_from = point.height;
        }
        was_leading = leading;
        // A new leader proposes only once it has applied an entry of its own term: then every
        // entry committed before it is applied here too.
        let caught_up_in = if leading { ctx.handle.caught_up_term(node) } else { None };
        let caught_up = caught_up_in.is_some();
        if caught_up_in.is_some() && caught_up_in != lock_read_in {
            // The applied-block events may lag the state (they queue behind others): read the
            // lock from the state once per term, so that a lock logged under an earlier leader
            // is known before this one proposes.
            cross.restored(&ctx.handle.state);
            lock_read_in = caught_up_in;
        }
        for event in batch {
            match event {
                GroupEvent::Submit(txs, at) => {
                    mempool.extend(txs.into_iter().map(|(t, o)| (t, o, at)));
                }
                GroupEvent::Read { conn, id, keys } => {
                    let state = ctx.handle.state.read();
                    let values = keys.iter().map(|k| (*k, state.get(k).cloned())).collect();
                    drop(state);
                    shared.send_to_client(conn, &Message::Values { id, values });
                    shared.read_done(conn);
                }
                GroupEvent::Cross { from, message } => {
                    if leading {
                        cross.on_request(shard, from, message, &ctx.handle.state, &shared);
                    }
                }
                GroupEvent::Vote { from, vote: v } => {
                    // A vote speaks for its sender: where this replica knows the epoch's set,
                    // the signer index must name the sender.
                    if sets.known(v.vote.epoch).is_some_and(|set| set.ids().get(v.signer as usize) != Some(&from)) {
                        debug!(shard, from, signer = v.signer, "a vote sent for another replica; ignored");
                        continue;
                    }
                    let h = v.vote.height;
                    if h <= point.height && cert.own_vote(h).is_none() {
                        // Certified here already: the voter missed the certificate; send it.
                        if let Ok(Some(bytes)) = ctx.store.certificate(shard, h) {
                            if let Ok(c) = Certificate::decode(&bytes) {
                                if let Some(&voter) = c.members.get(v.signer as usize).filter(|_| c.vote.epoch == v.vote.epoch) {
                                    shared.send_to_node(voter, &Message::Commit(c));
                                }
                            }
                            continue;
                        }
                        // Not certified and this replica's vote is gone (evicted, or the block
                        // came before a snapshot): vote again from the stored block.
                        let Some((b, _)) = ctx.store.block(shard, h).ok().flatten().as_deref().and_then(split_stored) else { continue };
                        let Some(set) = sets.get(b.epoch, None, &ctx.store, &shared) else { continue };
                        if let Some(c) = cert.applied(&set, &ctx.bls, h, b.hash, b.root) {
                            certified(c, true, &mut cert, &mut awaiting, &mut cross);
                        }
                    }
                    if let Some(c) = cert.on_vote(from, *v) {
                        certified(c, true, &mut cert, &mut awaiting, &mut cross);
                    }
                }
                GroupEvent::Commit(c) => {
                    let h = c.vote.height;
                    let Some(own) = cert.own_vote(h).copied() else {
                        // No vote of this replica for it (it applied the block as a learner, or
                        // its vote is gone): stored if it certifies the block stored here.
                        if h <= point.height && matches!(ctx.store.certificate(shard, h), Ok(None)) {
                            if let Some(c) = certifies_stored(&ctx.store, shard, *c, &mut sets, &shared) {
                                certified(c, false, &mut cert, &mut awaiting, &mut cross);
                            }
                        }
                        continue;
                    };
                    let Some(set) = sets.get(own.vote.epoch, None, &ctx.store, &shared) else { continue };
                    if let Err(e) = c.verify(&set) {
                        warn!(shard, height = h, "a certificate that does not verify: {e}");
                        continue;
                    }
                    if own.vote != c.vote {
                        error!(shard, height = h, "this replica diverged: the certified block or state root is not the one it applied");
                        continue;
                    }
                    certified(*c, false, &mut cert, &mut awaiting, &mut cross);
                }
                GroupEvent::Applied(info) => {
                    point.height = info.height;
                    point.block_hash = info.block_hash;
                    point.root = StateRoot(info.root);
                    ctx.metrics.executed(info.height, info.statuses.len() as u64, info.took);
                    if let Some(p) = proposed.remove(&info.key) {
                        let entries: Vec<_> = p.origins.into_iter().zip(info.statuses.iter().copied()).collect();
                        awaiting.insert(info.height, Awaiting { entries, started: p.at });
                    }
                    if let Some(outcome) = &info.cross {
                        cross.applied(shard, info.height, outcome, leading, &ctx.handle.state, &shared);
                    }
                    match sets.get(info.epoch, Some(&info.members), &ctx.store, &shared) {
                        Some(set) => {
                            if let Some(c) = cert.applied(&set, &ctx.bls, info.height, info.block_hash, info.root) {
                                certified(c, true, &mut cert, &mut awaiting, &mut cross);
                            }
                        }
                        None if cert.unvoted.len() < OWN_VOTES => {
                            let u = Unvoted { epoch: info.epoch, members: info.members.clone(), hash: info.block_hash, root: info.root };
                            cert.unvoted.insert(info.height, u);
                        }
                        None => warn!(shard, height = info.height, "too many blocks wait for their validator set; not voted for"),
                    }
                    cert.prune_early(info.height);
                    shared.set_position(shard, info.height, info.root);
                }
                GroupEvent::Restored(p) => {
                    point = p;
                    cross.restored(&ctx.handle.state);
                    cert.prune_early(p.height);
                    shared.set_position(shard, p.height, p.root.0);
                }
                GroupEvent::Snapshot(reply) => {
                    let _ = reply.send(ctx.handle.state.read().sorted_entries());
                }
            }
        }
        // Blocks whose set could not be built: try again once a second (the cluster file may
        // list the new member by now).
        if !cert.unvoted.is_empty() && unvoted_tried.elapsed() >= Duration::from_secs(1) {
            unvoted_tried = Instant::now();
            for (h, u) in std::mem::take(&mut cert.unvoted) {
                match sets.get(u.epoch, Some(&u.members), &ctx.store, &shared) {
                    Some(set) => {
                        if let Some(c) = cert.applied(&set, &ctx.bls, h, u.hash, u.root) {
                            certified(c, true, &mut cert, &mut awaiting, &mut cross);
                        }
                    }
                    None => {
                        cert.unvoted.insert(h, u);
                    }
                }
            }
        }
        // Votes not yet answered by a certificate go (again) to the leader, at most
        // VOTES_PER_TURN a turn, the least recently sent first. On the leader, such a vote
        // for a block it applied before it led (certified while this node was away, replayed
        // from the log) goes to the epoch's other members, and any that holds the certificate
        // answers with it (the late-vote branch above), so a new leader does not stay without
        // the certificates of what it applied. Its own blocks it certifies from the votes it
        // receives: their votes stay here.
        if let Some(l) = leader {
            let now = Instant::now();
            let mut due: Vec<(Option<Instant>, u64)> = cert
                .own
                .iter()
                .filter(|(_, (_, sent))| sent.is_none_or(|t| now.duration_since(t) >= VOTE_RESEND))
                .map(|(h, (_, t))| (*t, *h))
                .collect();
            due.sort_unstable();
            for (_, h) in due.into_iter().take(VOTES_PER_TURN) {
                if let Some((v, sent)) = cert.own.get_mut(&h) {
                    *sent = Some(now);
                    if l != node {
                        shared.send_to_node(l, &Message::Vote(*v));
                    } else if let Some(set) = sets.known(v.vote.epoch).filter(|_| h <= led_from) {
                        for &m in set.ids().iter().filter(|&&m| m != node) {
                            shared.send_to_node(m, &Message::Vote(*v));
                        }
                    }
                }
            }
        }
        proposed.retain(|key, p| {
            let keep = p.at.elapsed() < PROPOSED_TTL;
            if !keep {
                ctx.verified.lock().remove(key);
                // Lost with a leader change: no receipt comes from here; give the clients'
                // quotas back.
                shared.release(p.origins.iter().copied());
            }
            keep
        });
        if !leading {
            if !mempool.is_empty() {
                debug!(shard, dropped = mempool.len(), "no longer leading; pending transactions dropped");
                drop_pending(&mut mempool, &ctx.handle.depth, &shared);
            }
            // A cross-shard step about to be logged here is the next leader's to log (the
            // coordinator asks it again).
            cross.step_down();
            continue;
        }
        // Blocks proposed and not yet certified are bounded by the pipeline (a shard whose
        // certificates stall, say with a replica down where the quorum needs it, stops
        // proposing instead of piling up receipts). A new leader proposes nothing before it has
        // applied an entry of its own term: then it knows every lock the log holds.
        while caught_up && in_flight.load(Ordering::Relaxed) + awaiting.len() < ctx.pipeline {
            let open = cross.open();
            if !(cross.has_step() || (open && ready(&mempool, ctx.block_txs, ctx.block_time))) {
                break;
            }
            let (step, with_txs) = cross.take_step();
            let good = match open && with_txs {
                true => take(&mut mempool, &ctx.handle.depth, ctx.block_txs),
                false => Vec::new(),
            };
            let (block, origins) = match aggregate(ctx.check.chain_id, good) {
                Ok(b) => b,
                Err(dropped) => {
                    error!(shard, "the block's signatures do not aggregate; dropped");
                    send_receipts(&shared, None, dropped);
                    continue;
                }
            };
            if block.is_none() && step.is_none() {
                continue;
            }
            let p = Proposal { shard, height: 0, parent: [0; 32], cross: step, block };
            let bytes = p.encode_entry();
            if bytes.len() > crate::raft::codec::MAX_PAYLOAD_BYTES - ENTRY_MARGIN {
                error!(shard, "a block too large for one entry; its transactions are dropped");
                send_receipts(&shared, None, origins.into_iter().map(|o| (o, TxStatus::Aborted)).collect());
                continue;
            }
            let key = *blake3::hash(&bytes).as_bytes();
            if let Some(CrossStep::Prepare { round, .. }) = &p.cross {
                cross.prepare_proposed(*round, key);
            }
            ctx.verified.lock().insert(key);
            proposed.insert(key, Proposed { origins, at: Instant::now() });
            in_flight.fetch_add(1, Ordering::Relaxed);
            // Handed to Raft here, in proposal order (Raft appends entries in the order its
            // core receives them: a task per proposal could reorder two blocks, putting a
            // block of transactions behind a prepare, or a signer's later nonce first); only
            // the wait for the answer runs on the runtime.
            let answer = ctx.runtime.block_on(ctx.handle.raft.client_write_ff(RaftRequest::new(bytes)));
            let done = in_flight.clone();
            let lost = not_committed.clone();
            ctx.runtime.spawn(async move {
                // Answered once the entry is applied here, or refused (this node stopped
                // leading; the entry may still commit under the next leader, and its receipts
                // then go out from here when its certificate arrives).
                let committed = match answer {
                    Ok(rx) => match rx.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("the Raft core dropped the request".to_string()),
                    },
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = committed {
                    debug!(shard, "proposal not committed under this leader: {e}");
                    lost.lock().push(key);
                }
                done.fetch_sub(1, Ordering::Relaxed);
            });
        }
        ctx.metrics.mempool.set(ctx.handle.depth.load(Ordering::Relaxed) as i64);
    }
    debug!(shard, uncertified = awaiting.len(), pending = mempool.len(), "group stopped");
}
