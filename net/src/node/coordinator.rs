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

use super::batch::{drop_pending, ready, release_origins, send_receipts, status_of, take_verified, turn, Mempool, SigCheck};
use super::system::{self, CrossOutcome};
use super::{GroupHandle, Origin, Shared};
use crate::metrics::ShardMetrics;
use crate::raft::{RaftRequest, RaftResponse};
use crate::wire::{CrossStep, Message, Proposal, TxStatus};
use crossbeam_channel::{Receiver, Sender};
use occam_engine::exec::BlockExecutor;
use occam_engine::key::Key;
use occam_engine::native::signed::{nonce_key, SignedVm, VerifiedTx};
use occam_engine::native::NativeVm;
use occam_engine::state::CommittedState;
use occam_engine::vm::Vm;
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
/// A prepare this leader logged and has not seen applied for this long was lost (its entry
/// did not commit under this leader): blocks are proposed again.
const PREPARE_TTL: Duration = Duration::from_secs(2);

/// What the coordinator's thread handles.
pub(super) enum CoordEvent {
    /// Admitted cross-shard transactions.
    Submit(Vec<(occam_engine::native::signed::RawSignedTx, Origin)>, Instant),
    /// A participant's reply or acknowledgement, from node `from`.
    Cross { from: u32, message: CrossMessage },
    /// A certificate from node `from` (a participant leader sends the one of the block that
    /// applied a round just before the round's acknowledgement, on the same link).
    Commit { from: u32, certificate: Box<Certificate> },
    /// A step this coordinator proposed to shard 0's log was applied (with the height and root
    /// after it), or not committed under this leader.
    Logged(Result<RaftResponse, String>),
}

/// What the coordinator executes with.
pub(super) struct CoordCtx {
    pub exec: Box<dyn BlockExecutor<SignedVm>>,
    pub check: SigCheck,
    pub metrics: Arc<ShardMetrics>,
    /// This node's replica of shard 0.
    pub group: GroupHandle,
    pub runtime: tokio::runtime::Handle,
    /// Where [`CoordEvent::Logged`] answers go (the coordinator's own queue).
    pub events: Sender<CoordEvent>,
}

/// A leader's part in cross-shard rounds, for one shard. The lock and the rounds done are in
/// the replicated state; this holds only what the leader is about to log and whom to answer.
pub(super) struct CrossSide {
    /// The step for the next block (a prepare, or a round's outcome).
    next: Option<CrossStep>,
    /// A prepare handed to Raft and not yet applied here, and when: no block follows it until
    /// it is applied (or, if it was lost, for [`PREPARE_TTL`]).
    preparing: Option<(u64, Instant)>,
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

    /// The state was replaced (opened, or a snapshot installed): read the lock again.
    pub(super) fn restored(&mut self, state: &RwLock<CommittedState>) {
        self.locked = system::lock(&state.read());
    }

    /// Handles a coordinator's request from node `from`, as this shard's leader.
    pub(super) fn on_request(&mut self, shard: u32, from: u32, m: CrossMessage, state: &RwLock<CommittedState>, shared: &Shared) {
        let state = state.read();
        let lock = system::lock(&state);
        let (done, done_at) = system::done(&state);
        match m {
            CrossMessage::ReadRequest { block: round, keys } => {
                if lock == Some(round) {
                    // Prepared already (perhaps under an earlier leader): the values are final.
                    let values = keys.iter().map(|k| (*k, state.get(k).cloned())).collect();
                    drop(state);
                    shared.send_to_node(
                        from,
                        &Message::Cross { shard, message: CrossMessage::ReadReply { block: round, from: shard, values } },
                    );
                } else if lock.is_none() && round > done && self.preparing().is_none() {
                    self.next = Some(CrossStep::Prepare { round, keys: keys.clone() });
                    self.reads = Some((round, keys, from));
                } else {
                    debug!(shard, round, ?lock, done, "a read request not taken now (the coordinator asks again)");
                }
            }
            CrossMessage::Apply { block: round, writes } => {
                if round == done && done_at > 0 {
                    // Applied already: acknowledge with that block's certificate, now or once
                    // it forms.
                    drop(state);
                    self.acks.insert(done_at, (round, from));
                    if let Ok(Some(c)) = shared.certificate(shard, done_at) {
                        self.acknowledge(shard, done_at, &c, shared);
                    }
                } else if lock == Some(round) || (lock.is_none() && round > done && writes.is_empty()) {
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
                    let state = state.read();
                    let values = keys.iter().map(|k| (*k, state.get(k).cloned())).collect();
                    drop(state);
                    shared.send_to_node(to, &Message::Cross { shard, message: CrossMessage::ReadReply { block: r, from: shard, values } });
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
    /// log (the coordinator asks it again).
    pub(super) fn step_down(&mut self) {
        *self = CrossSide { locked: self.locked, ..CrossSide::new() };
    }

    fn acknowledge(&mut self, shard: u32, height: u64, certificate: &Certificate, shared: &Shared) {
        if let Some((round, to)) = self.acks.remove(&height) {
            shared.send_to_node(to, &Message::Commit(certificate.clone()));
            shared.send_to_node(to, &Message::Cross { shard, message: CrossMessage::Applied { block: round, from: shard } });
        }
    }

    /// The round of the prepare in flight, if it is not older than [`PREPARE_TTL`].
    fn preparing(&self) -> Option<u64> {
        self.preparing.filter(|(_, at)| at.elapsed() < PREPARE_TTL).map(|(r, _)| r)
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
    /// prepare: they would be applied while the shard is locked).
    pub(super) fn take_step(&mut self) -> (Option<CrossStep>, bool) {
        match self.next.take() {
            Some(CrossStep::Prepare { round, keys }) => {
                self.preparing = Some((round, Instant::now()));
                (Some(CrossStep::Prepare { round, keys }), false)
            }
            other => (other, true),
        }
    }

    /// The block at `height` is certified.
    pub(super) fn certified(&mut self, shard: u32, height: u64, certificate: &Certificate, shared: &Shared) {
        self.acknowledge(shard, height, certificate, shared);
    }
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
    origins: Vec<Origin>,
    values: BTreeMap<u32, Entries>,
    statuses: Vec<TxStatus>,
    aborted: bool,
    writes: BTreeMap<u32, Entries>,
    /// The certificate of each participant's block that applied the round.
    certificates: HashMap<u32, Certificate>,
    /// Requests sent to each participant without an answer (the next one goes elsewhere if the
    /// leader is unknown).
    attempts: HashMap<u32, u32>,
    started: Instant,
    sent_at: Instant,
}

impl Round {
    fn new(participants: Vec<u32>, reads: BTreeMap<u32, Vec<Key>>, txs: Vec<VerifiedTx>, origins: Vec<Origin>) -> Round {
        Round {
            round: 0,
            phase: Phase::Starting,
            participants,
            reads,
            txs,
            origins,
            values: BTreeMap::new(),
            statuses: Vec::new(),
            aborted: false,
            writes: BTreeMap::new(),
            certificates: HashMap::new(),
            attempts: HashMap::new(),
            started: Instant::now(),
            sent_at: Instant::now(),
        }
    }
}

/// Proposes `step` to shard 0's log; the answer comes back as [`CoordEvent::Logged`].
fn log_step(ctx: &CoordCtx, step: CrossStep) {
    let bytes = Proposal { shard: 0, height: 0, parent: [0; 32], cross: Some(step), block: None }.encode_entry();
    let raft = ctx.group.raft.clone();
    let events = ctx.events.clone();
    ctx.runtime.spawn(async move {
        let answer = raft.client_write(RaftRequest::new(bytes)).await.map(|r| r.data).map_err(|e| e.to_string());
        let _ = events.send(CoordEvent::Logged(answer));
    });
}

/// The cross-shard coordinator of one node: active while this node's replica of shard 0 leads
/// its group and has applied an entry of its own term, idle otherwise (its mempool is dropped
/// when it stops leading; clients send again to the new leader). One round at a time; a round
/// it has in progress when it stops leading (or a new term starts) is the next coordinator's
/// to finish, from shard 0's record.
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
    // The term this coordinator became active in (it resumes from shard 0's record then).
    let mut active: Option<u64> = None;
    // The latest certificate each participant leader sent; it sends the one of the block that
    // applied a round just before the round's acknowledgement, on the same ordered link.
    let mut last_cert: HashMap<(u32, u32), Certificate> = HashMap::new();
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
            // The next coordinator finishes the round; its clients learn the outcome from the
            // shards (their quotas here are released).
            if let Some(r) = round.take() {
                release_origins(&shared, &r.origins);
            }
            last_cert.clear();
            active = None;
        }
        for event in events {
            match event {
                CoordEvent::Submit(txs, at) => mempool.extend(txs.into_iter().map(|(t, o)| (t, o, at))),
                CoordEvent::Commit { from, certificate } => {
                    if round.is_some() {
                        last_cert.insert((certificate.vote.shard, from), *certificate);
                    }
                }
                CoordEvent::Cross { from: node, message } => {
                    let Some(r) = round.as_mut() else { continue };
                    match message {
                        CrossMessage::ReadReply { block, from, values }
                            if block == r.round && matches!(r.phase, Phase::Reading) && r.participants.contains(&from) =>
                        {
                            r.values.entry(from).or_insert(values);
                            r.attempts.remove(&from);
                        }
                        CrossMessage::Applied { block, from } if block == r.round && matches!(r.phase, Phase::Applying) => {
                            if let Some(c) = last_cert.remove(&(from, node)) {
                                r.certificates.entry(from).or_insert(c);
                                r.attempts.remove(&from);
                            }
                        }
                        _ => {}
                    }
                }
                CoordEvent::Logged(answer) => {
                    let Some(r) = round.as_mut() else { continue };
                    let height = answer.as_ref().map_or(0, |a| a.height);
                    let record = answer.ok().and_then(|_| system::round(&ctx.group.state.read()));
                    match r.phase {
                        Phase::Starting => match record.filter(|rec| rec.round == height && !rec.decided()) {
                            Some(_) => {
                                r.round = height;
                                r.phase = Phase::Reading;
                                r.sent_at = Instant::now() - RESEND_AFTER;
                            }
                            None => {
                                // Not logged under this leader: if the entry commits later, the
                                // next coordinator finds it undecided and aborts it.
                                warn!("a cross-shard round could not start; its transactions are aborted");
                                if let Some(r) = round.take() {
                                    send_receipts(&shared, None, r.origins.into_iter().map(|o| (o, TxStatus::Aborted)).collect());
                                }
                                continue;
                            }
                        },
                        Phase::Deciding => match record.filter(|rec| rec.round == r.round && rec.decided()) {
                            Some(rec) => {
                                r.aborted = rec.aborted == Some(true);
                                r.phase = Phase::Applying;
                                r.sent_at = Instant::now() - RESEND_AFTER;
                            }
                            None => {
                                // Not logged under this leader, or the record moved on: start
                                // over from the record (the next turn resumes from it).
                                warn!(round = r.round, "the round's outcome was not logged here; resuming from shard 0's record");
                                if let Some(r) = round.take() {
                                    release_origins(&shared, &r.origins);
                                }
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
            // Elected: finish what the previous coordinator left.
            active = Some(term);
            round = resume(&ctx);
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
                    decide(&ctx, r);
                } else if r.started.elapsed() >= ROUND_TIMEOUT {
                    warn!(
                        round = r.round,
                        missing = r.participants.len() - r.values.len(),
                        "cross-shard reads timed out; the round is aborted"
                    );
                    r.aborted = true;
                    r.writes.clear();
                    decide(&ctx, r);
                }
            }
        }
        // Finish a round applied and certified everywhere.
        if round
            .as_ref()
            .is_some_and(|r| matches!(r.phase, Phase::Applying) && r.participants.iter().all(|s| r.certificates.contains_key(s)))
        {
            let r = round.take().expect("checked");
            finish(&ctx, &*partitioner, r, &shared);
            last_cert.clear();
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
            let good = take_verified(&ctx.check, &mut mempool, &depth, block_txs, &shared);
            if !good.is_empty() {
                let mut reads: BTreeMap<u32, Vec<Key>> = BTreeMap::new();
                let mut keys = Vec::new();
                for (tx, _) in &good {
                    keys.clear();
                    keys.push(nonce_key(tx.header.signer));
                    NativeVm.declared_keys(&tx.header.body, &mut keys);
                    for k in &keys {
                        reads.entry(partitioner.shard_of(k)).or_default().push(*k);
                    }
                }
                for ks in reads.values_mut() {
                    ks.sort_unstable();
                    ks.dedup();
                }
                let participants: Vec<u32> = reads.keys().copied().collect();
                let (txs, origins) = good.into_iter().map(|(t, o)| (VerifiedTx { header: t.header, signature_ok: true }, o)).unzip();
                log_step(&ctx, CrossStep::Start { participants: participants.clone() });
                round = Some(Round::new(participants, reads, txs, origins));
            }
        }
        ctx.metrics.mempool.store(depth.load(Ordering::Relaxed) as u64, Ordering::Relaxed);
    }
}

/// The round a newly elected coordinator must finish, from shard 0's record: an undecided one
/// is decided aborted, a decided one has its outcome sent again (participants that applied it
/// acknowledge with their certificate).
fn resume(ctx: &CoordCtx) -> Option<Round> {
    let state = ctx.group.state.read();
    let rec = system::round(&state)?;
    let mut r = Round::new(rec.participants.clone(), BTreeMap::new(), Vec::new(), Vec::new());
    r.round = rec.round;
    match rec.aborted {
        None => {
            drop(state);
            info!(round = r.round, "a cross-shard round left undecided by the previous coordinator is aborted");
            r.aborted = true;
            decide(ctx, &mut r);
        }
        Some(aborted) => {
            r.aborted = aborted;
            if !aborted {
                r.writes = rec.participants.iter().map(|&s| (s, system::decided_writes(&state, &rec, s))).collect();
            }
            r.phase = Phase::Applying;
            r.sent_at = Instant::now() - RESEND_AFTER;
            debug!(round = r.round, aborted, "sending the last round's outcome again");
        }
    }
    Some(r)
}

/// Logs the round's outcome (its writes, or its abort).
fn decide(ctx: &CoordCtx, r: &mut Round) {
    r.phase = Phase::Deciding;
    let writes =
        if r.aborted { Vec::new() } else { r.participants.iter().map(|s| (*s, r.writes.get(s).cloned().unwrap_or_default())).collect() };
    log_step(ctx, CrossStep::Decide { round: r.round, aborted: r.aborted, writes });
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
            Phase::Applying if !r.certificates.contains_key(&s) => CrossMessage::Apply {
                block: r.round,
                writes: if r.aborted { Vec::new() } else { r.writes.get(&s).cloned().unwrap_or_default() },
            },
            _ => continue,
        };
        let attempt = r.attempts.entry(s).or_default();
        let to = match shared.known_leader(s) {
            Some(l) if *attempt < 2 => l,
            _ => shared.cluster.node_of(s, *attempt % shared.cluster.replicas as u32),
        };
        *attempt += 1;
        shared.send_to_node(to, &Message::Cross { shard: s, message });
    }
}

/// Sends a finished round's receipts: each transaction's with the certificate of the block that
/// applied the round on its signer's shard (none for an aborted round).
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
    let out = ctx.exec.execute(&SignedVm, &state, txs).map_err(|e| e.to_string())?;
    let mut writes: BTreeMap<u32, Entries> = BTreeMap::new();
    for (k, v) in out.write_set.sorted() {
        writes.entry(partitioner.shard_of(&k)).or_default().push((k, v));
    }
    Ok((out.outputs.iter().map(status_of).collect(), writes))
}
