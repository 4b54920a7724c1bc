//! Cross-shard transactions: the coordinator, which runs them in rounds of a read exchange, and
//! each participant shard leader's side of it ([`CrossSide`]). Every decision goes through a
//! Raft log, so a round survives the death of its coordinator and of any participant's leader.
//!
//! A round, as the shards' logs record it ([`CrossStep`], records in [`super::system`]):
//!
//! 1. **Start** (shard 0's log): the coordinator, which runs on whichever node leads shard 0,
//!    takes a batch of cross-shard transactions off its mempool (verifying their signatures)
//!    and logs the round's start with its participant shards. The round's id is the height of
//!    that block, so ids grow across coordinators.
//! 2. **Prepare** (each participant's log): asked for the round's keys, a participant's leader
//!    logs a block that locks its shard for the round. Once that block is applied the values of
//!    the keys are final: a locked shard applies no transactions (its leader proposes none, and
//!    a block applied while it is locked has its transactions refused), so any replica that
//!    leads it later answers the same values. The leader sends them to the coordinator.
//! 3. **Decide** (shard 0's log): with every participant's values in, the coordinator executes
//!    the round's transactions in order over exactly those values, and logs the outcome with
//!    each participant's writes before anyone learns it. A round whose reads do not all come in
//!    within [`ROUND_TIMEOUT`] is decided aborted.
//! 4. **Apply** (each participant's log): the participant's leader logs the writes (none for an
//!    abort) at the head of its next block, which unlocks the shard; once that block is
//!    certified, the coordinator gets its certificate and the acknowledgement.
//! 5. Receipts go out from the coordinator when every participant has acknowledged: each
//!    transaction's carries the certificate of the block that applied the round on its signer's
//!    shard (where its nonce and debit are).
//!
//! A newly elected shard-0 leader reads the round record: a round that was started and not
//! decided is decided aborted; a decided one has its outcome sent again until every participant
//! acknowledges. A participant applies a round's outcome only while it is locked for that round,
//! so an outcome sent twice (or to two successive leaders) lands once, and a prepare that comes
//! after its round was finished is refused. A round lands on every participant or on none.

use super::batch::{drop_pending, ready, send_receipts, status_of, take, turn, Mempool};
use super::system::{self, CrossOutcome};
use super::{GroupHandle, Origin, Shared};
use crate::metrics::ShardMetrics;
use crate::raft::{RaftRequest, RaftResponse};
use crate::wire::{CrossStep, Message, Proposal, TxStatus};
use crossbeam_channel::{Receiver, Sender};
use occam_engine::exec::BlockExecutor;
use occam_engine::key::Key;
use occam_engine::native::signed::{nonce_key, signed_keys, SignedTx, SignedVm, VerifiedTx};
use occam_engine::state::CommittedState;
use occam_shard::partition::Partitioner;
use occam_shard::protocol::{Entries, Message as CrossMessage};
use occam_shard::Certificate;
use parking_lot::RwLock;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// The coordinator sends a request again to a participant that has not answered after this
/// long (to the leader it knows of by then).
const RESEND_AFTER: Duration = Duration::from_millis(500);
/// A round whose reads are not all in after this long is decided aborted (a participant shard
/// without a leader must not hold the others locked).
pub(super) const ROUND_TIMEOUT: Duration = Duration::from_secs(5);
/// Once every participant acknowledged a round, its receipts wait at most this long for the
/// certificates not yet in.
const CERT_PATIENCE: Duration = Duration::from_secs(5);
/// The most participant certificates the coordinator holds for the round in progress.
const MAX_HELD_CERTIFICATES: usize = 4096;

/// What the coordinator's thread handles.
pub(super) enum CoordEvent {
    /// Admitted cross-shard transactions.
    Submit(Vec<(SignedTx, Origin)>, Instant),
    /// A participant's reply or acknowledgement.
    Cross(CrossMessage),
    /// A certificate (a participant leader sends the one of the block that applied a round
    /// before the round's acknowledgement, which names that block's height).
    Commit(Box<Certificate>),
    /// A step this coordinator proposed to shard 0's log in `term` was applied (with the
    /// height and root after it), or not committed under this leader.
    Logged { term: u64, answer: Result<RaftResponse, String> },
}

/// What the coordinator executes with.
pub(super) struct CoordCtx {
    pub exec: Box<dyn BlockExecutor<SignedVm>>,
    /// The VM it executes.
    pub vm: SignedVm,
    pub metrics: Arc<ShardMetrics>,
    /// This node's replica of shard 0.
    pub group: GroupHandle,
    pub runtime: tokio::runtime::Handle,
    /// Where [`CoordEvent::Logged`] answers go (the coordinator's own queue).
    pub events: Sender<CoordEvent>,
}

/// A leader's part in cross-shard rounds, for one shard. The lock and the rounds done are in
/// the replicated state; this holds only what the leader is about to log and whom to answer.
#[derive(Debug)]
pub(super) struct CrossSide {
    /// The step for the next block (a prepare, or a round's outcome).
    next: Option<CrossStep>,
    /// A prepare handed to Raft and not yet applied here (its round and its entry's payload
    /// hash): no block of transactions follows it until it is applied, or Raft says it was not
    /// committed under this leader.
    preparing: Option<(u64, [u8; 32])>,
    /// Keys of the round being prepared, and the node to answer (the coordinator's).
    reads: Option<(u64, Vec<Key>, u32)>,
    /// Blocks that applied a round's outcome, by height: when certified, the coordinator at
    /// the node named gets the certificate and the acknowledgement.
    acks: HashMap<u64, (u64, u32)>,
    /// The node that last asked for a round's outcome to be applied.
    apply_from: Option<(u64, u32)>,
    /// The round the shard is locked for, as of the last block the group's thread saw applied
    /// (kept here so that deciding whether to propose does not wait on the state's lock while
    /// a block executes).
    locked: Option<u64>,
}

impl CrossSide {
    pub(super) fn new() -> CrossSide {
        CrossSide { next: None, preparing: None, reads: None, acks: HashMap::new(), apply_from: None, locked: None }
    }

    /// Reads the lock from the state itself: when it was replaced (opened, or a snapshot
    /// installed), and when this replica starts leading in a term (the applied-block events
    /// that keep [`CrossSide::locked`] may lag behind the state).
    pub(super) fn restored(&mut self, state: &RwLock<CommittedState>) {
        self.locked = system::lock(&state.read());
    }

    /// Handles a coordinator's request from node `from`, as this shard's leader.
    pub(super) fn on_request(&mut self, shard: u32, from: u32, m: CrossMessage, shared_state: &RwLock<CommittedState>, shared: &Shared) {
        let state = shared_state.read();
        let lock = system::lock(&state);
        let (done, done_at) = system::done(&state);
        match m {
            CrossMessage::ReadRequest { block: round, keys } => {
                if lock == Some(round) {
                    // Prepared already (perhaps under an earlier leader): the values are final.
                    drop(state);
                    send_values(shard, round, &keys, from, shared_state, shared);
                } else if lock.is_none() && round > done && self.preparing().is_none() {
                    debug!(shard, round, "preparing a cross-shard round");
                    self.next = Some(CrossStep::Prepare { round, keys: keys.clone() });
                    self.reads = Some((round, keys, from));
                } else {
                    debug!(shard, round, ?lock, done, "a read request not taken now (the coordinator asks again)");
                }
            }
            CrossMessage::Apply { block: round, writes } => {
                if round == done && done_at > 0 {
                    // Applied already: acknowledge with that block's certificate if this
                    // replica holds it; else say so without one (a replica that caught up by
                    // snapshot may never get it) and send it if it forms here.
                    drop(state);
                    self.acks.insert(done_at, (round, from));
                    match shared.certificate(shard, done_at) {
                        Ok(Some(c)) => self.acknowledge(shard, done_at, &c, shared),
                        _ => {
                            let applied = CrossMessage::Applied { block: round, from: shard, height: done_at };
                            shared.send_to_node(from, &Message::Cross { shard, message: applied });
                        }
                    }
                } else if lock == Some(round) || (lock.is_none() && round > done && writes.is_empty()) {
                    debug!(shard, round, ?lock, done, aborted = writes.is_empty(), "applying a cross-shard round's outcome");
                    self.next = Some(CrossStep::Apply { round, writes });
                    self.apply_from = Some((round, from));
                } else {
                    debug!(shard, round, ?lock, done, "an outcome not applicable here now");
                }
            }
            CrossMessage::ReadReply { .. } | CrossMessage::Applied { .. } => {}
        }
    }

    /// A block of this shard was applied here with this cross-shard outcome at `height`.
    pub(super) fn applied(
        &mut self,
        shard: u32,
        height: u64,
        outcome: &CrossOutcome,
        leading: bool,
        state: &RwLock<CommittedState>,
        shared: &Shared,
    ) {
        debug!(shard, height, ?outcome, "a cross-shard step applied");
        match *outcome {
            CrossOutcome::Prepared { round, ok } => {
                if ok {
                    self.locked = Some(round);
                }
                if self.preparing() == Some(round) {
                    self.preparing = None;
                }
                let Some((r, keys, to)) = self.reads.take_if(|(r, _, _)| *r == round) else { return };
                if ok && leading {
                    send_values(shard, r, &keys, to, state, shared);
                }
            }
            CrossOutcome::Applied { round, ok } => {
                if ok {
                    self.locked = None;
                }
                if let Some((r, to)) = self.apply_from.take_if(|(r, _)| *r == round) {
                    if ok {
                        self.acks.insert(height, (r, to));
                    }
                }
            }
            CrossOutcome::Started { .. } | CrossOutcome::Decided { .. } => {}
        }
    }

    /// This node no longer leads the shard: what it was about to log is the next leader's to
    /// log (the coordinator asks it again). A prepare already handed to Raft stays in flight
    /// until it is applied or Raft says it was not committed: if this node leads again before
    /// then, it must not put transactions after it.
    pub(super) fn step_down(&mut self) {
        *self = CrossSide { locked: self.locked, preparing: self.preparing, ..CrossSide::new() };
    }

    /// Sends the coordinator the certificate of the block at `height`, which applied a round,
    /// and then the round's acknowledgement naming that height (only if the certificate was
    /// queued: the coordinator pairs the two by shard and height).
    fn acknowledge(&mut self, shard: u32, height: u64, certificate: &Certificate, shared: &Shared) {
        if let Some((round, to)) = self.acks.remove(&height) {
            if shared.send_to_node(to, &Message::Commit(certificate.clone())) {
                let applied = CrossMessage::Applied { block: round, from: shard, height };
                shared.send_to_node(to, &Message::Cross { shard, message: applied });
            }
        }
    }

    /// The round of the prepare in flight, if any.
    fn preparing(&self) -> Option<u64> {
        self.preparing.map(|(r, _)| r)
    }

    /// The block carrying the prepare of `round` went to Raft as the entry whose payload hashes
    /// to `key`.
    pub(super) fn prepare_proposed(&mut self, round: u64, key: [u8; 32]) {
        self.preparing = Some((round, key));
    }

    /// The entry whose payload hashes to `key` was not committed under this leader: if it was
    /// the prepare, nothing is in flight any more.
    pub(super) fn not_committed(&mut self, key: [u8; 32]) {
        if self.preparing.is_some_and(|(_, k)| k == key) {
            self.preparing = None;
        }
    }

    /// May a block of transactions be proposed now? Not while a prepare is in flight or the
    /// shard is locked (unless the block carries the round's outcome).
    pub(super) fn open(&self) -> bool {
        if self.preparing().is_some() || matches!(self.next, Some(CrossStep::Prepare { .. })) {
            return false;
        }
        matches!(self.next, Some(CrossStep::Apply { .. })) || self.locked.is_none()
    }

    /// True if a step waits for the next block.
    pub(super) fn has_step(&self) -> bool {
        self.next.is_some()
    }

    /// The step for the next block, and whether transactions may ride in it (not with a
    /// prepare: they would be applied while the shard is locked). The caller reports a
    /// prepare's entry with [`CrossSide::prepare_proposed`].
    pub(super) fn take_step(&mut self) -> (Option<CrossStep>, bool) {
        match self.next.take() {
            Some(step @ CrossStep::Prepare { .. }) => (Some(step), false),
            other => (other, true),
        }
    }

    /// The block at `height` is certified.
    pub(super) fn certified(&mut self, shard: u32, height: u64, certificate: &Certificate, shared: &Shared) {
        self.acknowledge(shard, height, certificate, shared);
    }
}

/// Sends node `to` the values of `keys` as this replica's state holds them, for `round`'s read
/// (the shard is locked for it, so they are final).
fn send_values(shard: u32, round: u64, keys: &[Key], to: u32, state: &RwLock<CommittedState>, shared: &Shared) {
    let values = {
        let state = state.read();
        keys.iter().map(|k| (*k, state.get(k).cloned())).collect()
    };
    shared.send_to_node(to, &Message::Cross { shard, message: CrossMessage::ReadReply { block: round, from: shard, values } });
}

/// Where the round in progress stands.
enum Phase {
    /// The start is being logged.
    Starting,
    /// Waiting for the participants' values.
    Reading,
    /// The outcome is being logged.
    Deciding,
    /// Waiting for every participant's acknowledgement.
    Applying,
}

/// The round in progress at the coordinator.
struct Round {
    round: u64,
    phase: Phase,
    participants: Vec<u32>,
    reads: BTreeMap<u32, Vec<Key>>,
    txs: Vec<VerifiedTx>,
    /// The transactions as admitted (with their signatures), to queue them again if the round
    /// is abandoned before it is decided.
    signed: Vec<SignedTx>,
    origins: Vec<Origin>,
    values: BTreeMap<u32, Entries>,
    statuses: Vec<TxStatus>,
    aborted: bool,
    writes: BTreeMap<u32, Entries>,
    /// Each participant that acknowledged, with the height of its block that applied the round.
    acked: HashMap<u32, u64>,
    /// The certificate of each participant's block that applied the round.
    certificates: HashMap<u32, Certificate>,
    /// When the last acknowledgement came in (receipts wait at most [`CERT_PATIENCE`] more for
    /// certificates not yet in).
    all_acked_at: Option<Instant>,
    /// Requests sent to each participant without an answer (the next one goes elsewhere if the
    /// leader is unknown).
    attempts: HashMap<u32, u32>,
    started: Instant,
    sent_at: Instant,
}

impl Round {
    fn new(participants: Vec<u32>, reads: BTreeMap<u32, Vec<Key>>, txs: Vec<SignedTx>, origins: Vec<Origin>) -> Round {
        let verified = txs.iter().map(|t| VerifiedTx { header: t.header.clone(), signature_ok: true }).collect();
        Round {
            round: 0,
            phase: Phase::Starting,
            participants,
            reads,
            txs: verified,
            signed: txs,
            origins,
            values: BTreeMap::new(),
            statuses: Vec::new(),
            aborted: false,
            writes: BTreeMap::new(),
            acked: HashMap::new(),
            certificates: HashMap::new(),
            all_acked_at: None,
            attempts: HashMap::new(),
            started: Instant::now(),
            sent_at: Instant::now(),
        }
    }

    /// Every participant applied the round, and its receipts can go: with every certificate,
    /// or without those that did not come within [`CERT_PATIENCE`] (a participant's leader that
    /// caught up by snapshot may not hold its block's certificate), or at once if no client
    /// waits here (a round resumed from the record).
    fn finished(&self) -> bool {
        matches!(self.phase, Phase::Applying)
            && self.participants.iter().all(|s| self.acked.contains_key(s))
            && (self.origins.is_empty()
                || self.participants.iter().all(|s| self.certificates.contains_key(s))
                || self.all_acked_at.is_some_and(|t| t.elapsed() >= CERT_PATIENCE))
    }

    /// Takes certificates of the participants' acknowledged blocks from those received.
    fn attach(&mut self, certs: &HashMap<(u32, u64), Certificate>) {
        for (s, h) in &self.acked {
            if !self.certificates.contains_key(s) {
                if let Some(c) = certs.get(&(*s, *h)) {
                    self.certificates.insert(*s, c.clone());
                }
            }
        }
    }
}

/// Proposes `step` to shard 0's log in `term`; the answer comes back as [`CoordEvent::Logged`].
fn log_step(ctx: &CoordCtx, term: u64, step: CrossStep) {
    let bytes = Proposal { shard: 0, height: 0, parent: [0; 32], cross: Some(step), block: None }.encode_entry();
    let raft = ctx.group.raft.clone();
    let events = ctx.events.clone();
    ctx.runtime.spawn(async move {
        let answer = raft.client_write(RaftRequest::new(bytes)).await.map(|r| r.data).map_err(|e| e.to_string());
        let _ = events.send(CoordEvent::Logged { term, answer });
    });
}

/// Puts the transactions of a round abandoned before it was decided back at the head of the
/// mempool, in their order: they run in a later round. (Aborting them would make every later
/// transaction of their signers, already sent, fail for its nonce.)
fn requeue(mempool: &mut Mempool, depth: &AtomicUsize, r: Round) {
    depth.fetch_add(r.signed.len(), Ordering::Relaxed);
    let now = Instant::now();
    for (t, o) in r.signed.into_iter().zip(r.origins).rev() {
        mempool.push_front((t, o, now));
    }
}

/// The cross-shard coordinator of one node: active while this node's replica of shard 0 leads
/// its group and has applied an entry of its own term, idle otherwise (its mempool is dropped
/// when it stops leading; clients send again to the new leader). One round at a time. On
/// becoming active (also when this node leads again in a newer term) it first settles the round
/// shard 0's record holds, merged with the one it had in progress if that is the same round.
pub(super) fn run_coordinator(
    mut ctx: CoordCtx,
    rx: Receiver<CoordEvent>,
    depth: Arc<AtomicUsize>,
    block_txs: usize,
    block_time: Duration,
    shared: Arc<Shared>,
) {
    let partitioner = shared.partitioner.clone();
    let mut mempool: Mempool = Mempool::new();
    let mut round: Option<Round> = None;
    // The term this coordinator became active in.
    let mut active: Option<u64> = None;
    // Certificates participants' leaders sent, by shard and height (bounded; cleared with each
    // round): an acknowledgement names the height of the block that applied the round.
    let mut certs: HashMap<(u32, u64), Certificate> = HashMap::new();
    while !shared.stopping.load(Ordering::Relaxed) {
        let Some(events) = turn(&rx) else { break };
        let (leading, term, caught_up) = {
            let m = ctx.group.raft.metrics();
            let m = m.borrow();
            let leading = m.current_leader == Some(u64::from(shared.node));
            (leading, m.current_term, leading && m.last_applied.is_some_and(|l| l.leader_id.term == m.current_term))
        };
        if active.is_some_and(|t| !leading || t != term) {
            info!("no longer leading shard 0 in the term it started in: the coordinator stops");
            if !leading {
                // The next coordinator finishes the round; its clients learn the outcome from
                // the shards (their quotas here are released).
                if let Some(r) = round.take() {
                    shared.release(r.origins.iter().copied());
                }
            }
            // Still leading, in a newer term: the round is kept, and settled with the record.
            certs.clear();
            active = None;
        }
        for event in events {
            match event {
                CoordEvent::Submit(txs, at) => mempool.extend(txs.into_iter().map(|(t, o)| (t, o, at))),
                CoordEvent::Commit(certificate) => {
                    if round.is_some() && certs.len() < MAX_HELD_CERTIFICATES {
                        certs.insert((certificate.vote.shard, certificate.vote.height), *certificate);
                    }
                }
                CoordEvent::Cross(message) => {
                    let Some(r) = round.as_mut() else { continue };
                    match message {
                        CrossMessage::ReadReply { block, from, values }
                            if block == r.round && matches!(r.phase, Phase::Reading) && r.participants.contains(&from) =>
                        {
                            r.values.entry(from).or_insert(values);
                            r.attempts.remove(&from);
                        }
                        CrossMessage::Applied { block, from, height }
                            if block == r.round && matches!(r.phase, Phase::Applying) && r.participants.contains(&from) =>
                        {
                            r.acked.insert(from, height);
                            r.attempts.remove(&from);
                            if r.all_acked_at.is_none() && r.participants.iter().all(|s| r.acked.contains_key(s)) {
                                r.all_acked_at = Some(Instant::now());
                            }
                        }
                        _ => {}
                    }
                }
                CoordEvent::Logged { term: t, answer } => {
                    if active != Some(t) {
                        continue;
                    }
                    let Some(r) = round.as_mut() else { continue };
                    let height = answer.as_ref().map_or(0, |a| a.height);
                    let state = ctx.group.state.read();
                    let record = answer.ok().and_then(|_| system::round(&state));
                    match r.phase {
                        Phase::Starting => match record.filter(|rec| rec.round == height && !rec.decided()) {
                            Some(_) => {
                                r.round = height;
                                r.phase = Phase::Reading;
                                r.sent_at = Instant::now() - RESEND_AFTER;
                            }
                            None => {
                                // Not logged under this leader: if the entry commits later, the
                                // next coordinator finds it undecided and aborts it. Its
                                // transactions run in a later round.
                                drop(state);
                                warn!("a cross-shard round could not start; its transactions wait for the next");
                                if let Some(r) = round.take() {
                                    requeue(&mut mempool, &depth, r);
                                }
                                continue;
                            }
                        },
                        Phase::Deciding => match record.filter(|rec| rec.round == r.round && rec.decided()) {
                            Some(rec) => {
                                // The outcome as the log holds it.
                                r.aborted = rec.aborted == Some(true);
                                r.writes = rec.participants.iter().map(|&s| (s, system::decided_writes(&state, &rec, s))).collect();
                                r.phase = Phase::Applying;
                                r.sent_at = Instant::now() - RESEND_AFTER;
                            }
                            None => {
                                // Not logged under this leader, or the record moved on: settle
                                // it again from the record (next turn).
                                drop(state);
                                warn!(round = r.round, "the round's outcome was not logged here; settling it from shard 0's record");
                                active = None;
                                continue;
                            }
                        },
                        Phase::Reading | Phase::Applying => {}
                    }
                }
            }
        }
        if !leading {
            if !mempool.is_empty() {
                drop_pending(&mut mempool, &depth, &shared);
            }
            continue;
        }
        // A new leader waits (keeping what it admitted) until it has applied an entry of its own
        // term: then shard 0's record is current.
        if !caught_up {
            continue;
        }
        if active.is_none() {
            active = Some(term);
            round = settle(&ctx, term, round.take(), &mut mempool, &depth);
        }
        if let Some(r) = round.as_mut() {
            // All values in: execute and log the outcome. Reads that do not come in abort it.
            if matches!(r.phase, Phase::Reading) {
                if r.values.len() == r.participants.len() {
                    match execute_cross(&mut ctx, &*partitioner, &r.txs, std::mem::take(&mut r.values)) {
                        Ok((statuses, writes)) => {
                            r.statuses = statuses;
                            r.writes = writes;
                        }
                        Err(e) => {
                            error!(round = r.round, "cross-shard execution failed; the round is aborted: {e}");
                            r.aborted = true;
                        }
                    }
                    decide(&ctx, term, r);
                } else if r.started.elapsed() >= ROUND_TIMEOUT {
                    warn!(
                        round = r.round,
                        missing = r.participants.len() - r.values.len(),
                        "cross-shard reads timed out; the round is aborted"
                    );
                    r.aborted = true;
                    r.writes.clear();
                    decide(&ctx, term, r);
                }
            }
            r.attach(&certs);
        }
        // Finish a round applied everywhere.
        if round.as_ref().is_some_and(Round::finished) {
            let r = round.take().expect("checked");
            finish(&ctx, &*partitioner, r, &shared);
            certs.clear();
        }
        // Send requests, and again those not answered.
        if let Some(r) = round.as_mut() {
            if r.sent_at.elapsed() >= RESEND_AFTER {
                r.sent_at = Instant::now();
                send_requests(r, &shared);
            }
        }
        // Start the next round.
        if round.is_none() && ready(&mempool, block_txs, block_time) {
            let good = take(&mut mempool, &depth, block_txs);
            if !good.is_empty() {
                let mut reads: BTreeMap<u32, Vec<Key>> = BTreeMap::new();
                let mut keys = Vec::new();
                for (tx, _) in &good {
                    keys.clear();
                    signed_keys(&tx.header, &mut keys);
                    for k in &keys {
                        reads.entry(partitioner.shard_of(k)).or_default().push(*k);
                    }
                }
                for ks in reads.values_mut() {
                    ks.sort_unstable();
                    ks.dedup();
                }
                let participants: Vec<u32> = reads.keys().copied().collect();
                let (txs, origins) = good.into_iter().unzip();
                log_step(&ctx, term, CrossStep::Start { participants: participants.clone() });
                round = Some(Round::new(participants, reads, txs, origins));
            }
        }
        ctx.metrics.mempool.set(depth.load(Ordering::Relaxed) as i64);
    }
}

/// What a coordinator that became active must finish first, from shard 0's record: a round
/// started and not decided is decided aborted; a decided one has its outcome sent again
/// (participants that applied it acknowledge). `kept` is the round this node had in progress
/// (it leads again, in a newer term): if the record holds it decided, it goes on with its
/// clients' receipts; if not decided (or not logged at all), its transactions go back to the
/// mempool for a later round.
fn settle(ctx: &CoordCtx, term: u64, kept: Option<Round>, mempool: &mut Mempool, depth: &AtomicUsize) -> Option<Round> {
    let state = ctx.group.state.read();
    let rec = system::round(&state);
    let (mine, other) = match kept {
        Some(k) if k.round != 0 && rec.as_ref().is_some_and(|rec| rec.round == k.round && rec.decided()) => (Some(k), None),
        k => (None, k),
    };
    if let Some(k) = other {
        requeue(mempool, depth, k);
    }
    let rec = rec?;
    let mut r = mine.unwrap_or_else(|| Round::new(rec.participants.clone(), BTreeMap::new(), Vec::new(), Vec::new()));
    r.round = rec.round;
    r.participants = rec.participants.clone();
    match rec.aborted {
        None => {
            drop(state);
            info!(
                round = r.round,
                "a cross-shard round left undecided is aborted (its transactions, if they were admitted here, run later)"
            );
            r.aborted = true;
            decide(ctx, term, &mut r);
        }
        Some(aborted) => {
            r.aborted = aborted;
            r.writes = rec.participants.iter().map(|&s| (s, system::decided_writes(&state, &rec, s))).collect();
            r.phase = Phase::Applying;
            r.sent_at = Instant::now() - RESEND_AFTER;
            debug!(round = r.round, aborted, "sending the last round's outcome again");
        }
    }
    Some(r)
}

/// Logs the round's outcome (its writes, or its abort).
fn decide(ctx: &CoordCtx, term: u64, r: &mut Round) {
    r.phase = Phase::Deciding;
    let writes =
        if r.aborted { Vec::new() } else { r.participants.iter().map(|s| (*s, r.writes.get(s).cloned().unwrap_or_default())).collect() };
    log_step(ctx, term, CrossStep::Decide { round: r.round, aborted: r.aborted, writes });
}

/// Sends each participant that has not answered the request of the round's phase: to the
/// shard's leader as this node knows it, or, with no leader known or after an unanswered
/// request, to its replicas in turn (a replica that does not lead drops it).
fn send_requests(r: &mut Round, shared: &Shared) {
    for &s in &r.participants {
        let message = match r.phase {
            Phase::Reading if !r.values.contains_key(&s) => {
                CrossMessage::ReadRequest { block: r.round, keys: r.reads.get(&s).cloned().unwrap_or_default() }
            }
            Phase::Applying if !r.acked.contains_key(&s) => CrossMessage::Apply {
                block: r.round,
                writes: if r.aborted { Vec::new() } else { r.writes.get(&s).cloned().unwrap_or_default() },
            },
            _ => continue,
        };
        let attempt = r.attempts.entry(s).or_default();
        let to = match shared.known_leader(s) {
            Some(l) if *attempt < 2 => l,
            _ => shared.roster().node_of(s, *attempt % shared.cluster.replicas as u32),
        };
        *attempt += 1;
        shared.send_to_node(to, &Message::Cross { shard: s, message });
    }
}

/// Sends a finished round's receipts: each transaction's with the certificate of the block that
/// applied the round on its signer's shard (none for an aborted round, or where that
/// certificate did not come).
fn finish(ctx: &CoordCtx, partitioner: &dyn Partitioner, r: Round, shared: &Shared) {
    ctx.metrics.certified(r.round, r.txs.len() as u64, r.started.elapsed());
    if r.origins.is_empty() {
        return;
    }
    let statuses = if r.aborted || r.statuses.len() != r.txs.len() { vec![TxStatus::Aborted; r.txs.len()] } else { r.statuses };
    let mut by_shard: HashMap<u32, Vec<(Origin, TxStatus)>> = HashMap::new();
    for ((tx, origin), status) in r.txs.iter().zip(r.origins).zip(statuses) {
        let home = partitioner.shard_of(&nonce_key(tx.header.signer));
        by_shard.entry(home).or_default().push((origin, status));
    }
    for (home, entries) in by_shard {
        let certificate = if r.aborted { None } else { r.certificates.get(&home).cloned() };
        if certificate.is_none() && !r.aborted {
            warn!(round = r.round, shard = home, "receipts of a cross-shard round without the certificate of that shard's block");
        }
        send_receipts(shared, certificate, entries);
    }
}

/// Executes a round's transactions in order over exactly the values read; returns their
/// statuses and the writes split by owning shard.
fn execute_cross(
    ctx: &mut CoordCtx,
    partitioner: &dyn Partitioner,
    txs: &[VerifiedTx],
    values: BTreeMap<u32, Entries>,
) -> Result<(Vec<TxStatus>, BTreeMap<u32, Entries>), String> {
    let state = CommittedState::from_entries(values.into_values().flatten().filter_map(|(k, v)| v.map(|v| (k, v))));
    let out = ctx.exec.execute(&ctx.vm, &state, txs).map_err(|e| e.to_string())?;
    let mut writes: BTreeMap<u32, Entries> = BTreeMap::new();
    for (k, v) in out.write_set.sorted() {
        writes.entry(partitioner.shard_of(&k)).or_default().push((k, v));
    }
    Ok((out.outputs.iter().map(status_of).collect(), writes))
}
