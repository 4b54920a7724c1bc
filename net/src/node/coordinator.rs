//! Cross-shard transactions: the coordinator, which runs them in rounds of the read-exchange
//! protocol (`occam_shard::protocol`), and each shard leader's side of it ([`CrossSide`]).
//!
//! The coordinator runs on the node hosting replica 0 of shard 0 and talks to each
//! participant shard's current Raft leader. A participant answers a round's reads from its
//! applied state once every block it proposed before is applied (so the values read are final),
//! then proposes nothing until the round's writes arrive, and puts them at the head of its next
//! block; that block's certificate goes to the coordinator with the acknowledgement.
//!
//! Not yet crash-safe (the Raft issue's item 6): the coordinator's decisions are not in a Raft
//! log, so a coordinator that dies mid-round, or a participant leader that changes mid-round,
//! leaves that round unfinished.

use super::batch::{ready, send_receipts, status_of, take_verified, turn, Mempool, SigCheck};
use super::{Origin, Shared};
use crate::metrics::ShardMetrics;
use crate::wire::{Message, TxStatus};
use crossbeam_channel::Receiver;
use occam_engine::exec::BlockExecutor;
use occam_engine::key::Key;
use occam_engine::native::signed::{nonce_key, RawSignedTx, SignedVm, VerifiedTx};
use occam_engine::native::NativeVm;
use occam_engine::state::CommittedState;
use occam_engine::vm::Vm;
use occam_shard::partition::Partitioner;
use occam_shard::protocol::{Action, Address, Coordinator, Entries, Envelope, Message as CrossMessage, Participant, Step};
use occam_shard::Certificate;
use parking_lot::RwLock;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{error, warn};

/// The coordinator resends requests that have not been answered after this long.
const RESEND_AFTER: Duration = Duration::from_millis(500);

/// What the coordinator's thread handles.
pub(super) enum CoordEvent {
    /// Admitted cross-shard transactions.
    Submit(Vec<(RawSignedTx, Origin)>, Instant),
    /// A participant's reply or acknowledgement, from node `from`.
    Cross { from: u32, message: CrossMessage },
    /// A certificate from node `from` (a participant leader sends the one of the block that
    /// carries a round's writes just before the round's acknowledgement, on the same link).
    Commit { from: u32, certificate: Box<Certificate> },
}

/// What the coordinator executes with.
pub(super) struct CoordCtx {
    pub exec: Box<dyn BlockExecutor<SignedVm>>,
    pub check: SigCheck,
    pub metrics: Arc<ShardMetrics>,
}

/// Cross-shard rounds whose certificates a participant leader remembers, to send them again
/// when the coordinator asks again.
const DONE_ROUNDS: usize = 64;

/// A leader's part in the cross-shard protocol.
pub(super) struct CrossSide {
    participant: Participant,
    /// A read request that waits until every block this leader proposed is applied.
    deferred: Option<CrossMessage>,
    /// A read was answered for this round and its writes are not yet in a block: no block
    /// may be proposed, or the values read could change.
    barrier: Option<u64>,
    /// Writes to put at the head of the next block, with their round.
    writes: Option<(u64, Entries)>,
    /// Blocks carrying a round's writes, by height: when certified, the coordinator gets the
    /// certificate and the round's acknowledgement.
    acks: HashMap<u64, u64>,
    /// The last rounds applied and certified here, with their blocks' certificates.
    done: VecDeque<(u64, Certificate)>,
}

impl CrossSide {
    pub(super) fn new(shard: u32) -> CrossSide {
        CrossSide {
            participant: Participant::new(shard),
            deferred: None,
            barrier: None,
            writes: None,
            acks: HashMap::new(),
            done: VecDeque::new(),
        }
    }

    /// Handles a request of the coordinator; `in_flight` blocks this leader proposed are not
    /// yet applied (a read waits for them).
    pub(super) fn on_message(&mut self, shard: u32, m: CrossMessage, state: &RwLock<CommittedState>, in_flight: usize, shared: &Shared) {
        if matches!(m, CrossMessage::ReadRequest { .. }) && in_flight > 0 {
            self.deferred = Some(m);
            return;
        }
        let state = state.read();
        let round = match &m {
            CrossMessage::ReadRequest { block, .. } | CrossMessage::Apply { block, .. } => *block,
            _ => return,
        };
        let actions = match self.participant.on_message(&m, |k| state.get(k).cloned()) {
            Ok(a) => a,
            Err(e) => {
                warn!(shard, "cross-shard message refused: {e}");
                return;
            }
        };
        drop(state);
        let coordinator = shared.coordinator_node();
        for action in actions {
            match action {
                Action::ApplyWrites(w) => self.writes = Some((round, w)),
                Action::Send(Envelope { message: CrossMessage::Applied { .. }, .. }) => {
                    // An acknowledgement goes out with the certificate of the block that
                    // carries the round's writes: now if that block is certified (a repeated
                    // request), else when it is.
                    if let Some((_, c)) = self.done.iter().find(|(r, _)| *r == round) {
                        let c = c.clone();
                        self.acknowledge(shard, round, c, shared);
                    }
                }
                Action::Send(Envelope { message, to: Address::Coordinator }) => {
                    if matches!(message, CrossMessage::ReadReply { .. }) {
                        self.barrier = Some(round);
                    }
                    shared.send_to_node(coordinator, &Message::Cross { shard, message });
                }
                Action::Send(_) => {}
            }
        }
    }

    /// This node no longer leads the shard: forget the round in progress (the coordinator asks
    /// the next leader again).
    pub(super) fn step_down(&mut self) {
        self.deferred = None;
        self.barrier = None;
        self.writes = None;
        self.acks.clear();
    }

    /// Answers a deferred read once nothing this leader proposed is unapplied.
    pub(super) fn poll(&mut self, shard: u32, state: &RwLock<CommittedState>, in_flight: usize, shared: &Shared) {
        if in_flight == 0 {
            if let Some(m) = self.deferred.take() {
                self.on_message(shard, m, state, 0, shared);
            }
        }
    }

    fn acknowledge(&self, shard: u32, round: u64, certificate: Certificate, shared: &Shared) {
        let coordinator = shared.coordinator_node();
        shared.send_to_node(coordinator, &Message::Commit(certificate));
        shared.send_to_node(coordinator, &Message::Cross { shard, message: CrossMessage::Applied { block: round, from: shard } });
    }

    /// May a block be proposed now?
    pub(super) fn open(&self) -> bool {
        self.deferred.is_none() && (self.barrier.is_none() || self.writes.is_some())
    }

    /// True if a round's writes wait for the next block.
    pub(super) fn has_writes(&self) -> bool {
        self.writes.is_some()
    }

    /// The writes for the next block and their round (lifting the barrier).
    pub(super) fn take_writes(&mut self) -> (Option<u64>, Entries) {
        match self.writes.take() {
            Some((round, writes)) => {
                self.barrier = None;
                (Some(round), writes)
            }
            None => (None, Vec::new()),
        }
    }

    /// The block at `height` carries `round`'s writes.
    pub(super) fn carried(&mut self, height: u64, round: u64) {
        self.acks.insert(height, round);
    }

    /// The block at `height` is certified.
    pub(super) fn certified(&mut self, shard: u32, height: u64, certificate: &Certificate, shared: &Shared) {
        if let Some(round) = self.acks.remove(&height) {
            self.acknowledge(shard, round, certificate.clone(), shared);
            if self.done.len() == DONE_ROUNDS {
                self.done.pop_front();
            }
            self.done.push_back((round, certificate.clone()));
        }
    }
}

/// One cross-shard round in progress at the coordinator.
struct Round {
    coordinator: Coordinator,
    participants: Vec<u32>,
    txs: Vec<VerifiedTx>,
    origins: Vec<Origin>,
    statuses: Vec<TxStatus>,
    writes: BTreeMap<u32, Entries>,
    /// The certificate of each participant's block carrying the round's writes.
    certificates: HashMap<u32, Certificate>,
    /// Aborted: nothing was applied anywhere and no certificate is awaited.
    aborted: bool,
    sent_at: Instant,
}

impl Round {
    fn finished(&self) -> bool {
        self.coordinator.is_done() && (self.aborted || self.participants.iter().all(|s| self.certificates.contains_key(s)))
    }
}

/// The cross-shard coordinator: orders cross-shard transactions into rounds and runs each
/// round of the deterministic read exchange (`occam_shard::protocol`) with the participant
/// shards' leaders. One round at a time; a round's transactions run in submission order over
/// the values read, and each participant applies its share of the writes at the head of its
/// next block. A transaction's receipt carries the certificate of that block on its signer's
/// shard (where its nonce and debit are).
///
/// Round numbers start from the clock (microseconds since the Unix epoch), so a restarted
/// coordinator's rounds are newer than any a participant has applied. A round that cannot be
/// executed is aborted: every participant gets an empty `Apply` (its barrier lifts) and the
/// round's transactions are dropped with status `Aborted`.
pub(super) fn run_coordinator(
    mut ctx: CoordCtx,
    rx: Receiver<CoordEvent>,
    depth: Arc<AtomicUsize>,
    block_txs: usize,
    block_time: Duration,
    shared: Arc<Shared>,
) {
    let partitioner = shared.partitioner.clone();
    let mut mempool: Mempool = VecDeque::new();
    let mut round: Option<Round> = None;
    let mut next_round = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_micros() as u64).max(1);
    // The latest certificate each participant leader sent; it sends the one of the block with
    // a round's writes just before the round's acknowledgement, on the same ordered link.
    let mut last_cert: HashMap<(u32, u32), Certificate> = HashMap::new();
    let send = |envelopes: Vec<Envelope>| {
        for e in envelopes {
            if let Address::Shard(s) = e.to {
                shared.send_to_node(shared.leader_of(s), &Message::Cross { shard: s, message: e.message });
            }
        }
    };
    while !shared.stopping.load(Ordering::Relaxed) {
        let Some(events) = turn(&rx) else { break };
        for event in events {
            match event {
                CoordEvent::Submit(txs, at) => mempool.extend(txs.into_iter().map(|(t, o)| (t, o, at))),
                CoordEvent::Commit { from, certificate } => {
                    if round.is_some() {
                        last_cert.insert((certificate.vote.shard, from), *certificate);
                    }
                }
                CoordEvent::Cross { from: node, message: m } => {
                    let Some(r) = round.as_mut() else { continue };
                    match r.coordinator.on_message(&m) {
                        Ok(Step::Execute(values)) => {
                            let writes = match execute_cross(&mut ctx, &*partitioner, &r.txs, values) {
                                Ok((statuses, writes)) => {
                                    r.statuses = statuses;
                                    writes
                                }
                                Err(e) => {
                                    error!(round = r.coordinator.block(), "cross-shard execution failed; the round is aborted: {e}");
                                    r.aborted = true;
                                    r.statuses = vec![TxStatus::Aborted; r.txs.len()];
                                    BTreeMap::new()
                                }
                            };
                            r.writes = writes.clone();
                            match r.coordinator.on_executed(writes) {
                                Ok(envelopes) => send(envelopes),
                                Err(e) => error!("cross-shard round refused its writes: {e}"),
                            }
                            r.sent_at = Instant::now();
                        }
                        Ok(Step::Wait | Step::Done) => {}
                        Err(e) => warn!("cross-shard message refused: {e}"),
                    }
                    if let CrossMessage::Applied { from, block } = m {
                        if block == r.coordinator.block() {
                            if let Some(c) = last_cert.remove(&(from, node)) {
                                r.certificates.entry(from).or_insert(c);
                            }
                        }
                    }
                }
            }
        }
        // Finish a round whose writes are applied and certified everywhere.
        if round.as_ref().is_some_and(Round::finished) {
            let r = round.take().expect("checked");
            let mut by_shard: HashMap<u32, Vec<(Origin, TxStatus)>> = HashMap::new();
            for ((tx, origin), status) in r.txs.iter().zip(r.origins).zip(r.statuses) {
                let home = partitioner.shard_of(&nonce_key(tx.header.signer));
                by_shard.entry(home).or_default().push((origin, status));
            }
            ctx.metrics.certified(r.coordinator.block(), r.txs.len() as u64, r.sent_at.elapsed());
            for (home, entries) in by_shard {
                let certificate = if r.aborted { None } else { r.certificates.get(&home).cloned() };
                send_receipts(&shared, certificate, entries);
            }
            last_cert.clear();
        }
        // Resend what may have been lost: unanswered requests, and applies whose certificate
        // has not arrived (the participant then sends it again with its acknowledgement).
        if let Some(r) = round.as_mut() {
            if r.sent_at.elapsed() >= RESEND_AFTER {
                r.sent_at = Instant::now();
                send(r.coordinator.resend(&r.writes));
                if r.coordinator.is_done() && !r.aborted {
                    for s in r.participants.iter().filter(|s| !r.certificates.contains_key(s)) {
                        let message =
                            CrossMessage::Apply { block: r.coordinator.block(), writes: r.writes.get(s).cloned().unwrap_or_default() };
                        shared.send_to_node(shared.leader_of(*s), &Message::Cross { shard: *s, message });
                    }
                }
            }
        }
        // Start the next round.
        if round.is_none() && ready(&mempool, block_txs, block_time) {
            let good = take_verified(&ctx.check, &mut mempool, &depth, block_txs, &shared);
            if good.is_empty() {
                continue;
            }
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
            let participants = reads.keys().copied().collect();
            let (coordinator, envelopes) = Coordinator::start(next_round, reads);
            next_round += 1;
            let (txs, origins) = good.into_iter().map(|(t, o)| (VerifiedTx { header: t.header, signature_ok: true }, o)).unzip();
            round = Some(Round {
                coordinator,
                participants,
                txs,
                origins,
                statuses: Vec::new(),
                writes: BTreeMap::new(),
                certificates: HashMap::new(),
                aborted: false,
                sent_at: Instant::now(),
            });
            send(envelopes);
        }
        ctx.metrics.mempool.store(depth.load(Ordering::Relaxed) as u64, Ordering::Relaxed);
    }
}

/// Executes a round's transactions in order over exactly the values read; returns their
/// statuses and the writes split by owning shard.
fn execute_cross(
    ctx: &mut CoordCtx,
    partitioner: &dyn Partitioner,
    txs: &[VerifiedTx],
    values: Entries,
) -> Result<(Vec<TxStatus>, BTreeMap<u32, Entries>), String> {
    let state = CommittedState::from_entries(values.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    let out = ctx.exec.execute(&SignedVm, &state, txs).map_err(|e| e.to_string())?;
    let mut writes: BTreeMap<u32, Entries> = BTreeMap::new();
    for (k, v) in out.write_set.sorted() {
        writes.entry(partitioner.shard_of(&k)).or_default().push((k, v));
    }
    Ok((out.outputs.iter().map(status_of).collect(), writes))
}
