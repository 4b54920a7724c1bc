//! The replication protocol of one shard, as sans-IO state machines.
//!
//! A shard has `R` replicas; replica 0 leads. The leader orders transactions into blocks,
//! executes each block itself, proposes it to the other replicas, and signs its own vote. Each
//! replica checks that a proposal extends the block it last executed, executes it, and votes
//! on `(shard, height, block hash, state root)`. The leader aggregates the first quorum of
//! matching votes (more than two thirds of the set: 3 of 4) into a [`Certificate`]; a block is
//! committed when it is certified, and certificates are released in height order.
//!
//! Up to `pipeline` blocks may be proposed and not yet certified. Proposals that replicas may
//! have missed are resent on [`LeaderCore::on_tick`]; a replica answers a repeated proposal with
//! the vote it already cast, and holds a bounded number of proposals that arrive ahead of its
//! height. A replica that votes for another state root than the leader's is reported
//! ([`CoreError::Diverged`]): its vote is not counted.
//!
//! Fault model: crash faults of non-leader replicas. A shard commits while a quorum of its
//! replicas is up; the leader is fixed (no view change), so a shard whose leader is down stops
//! committing until it is back.
//!
//! Nothing here does I/O or reads a clock: the host passes `now` in and carries the
//! [`LeaderOut`]s and [`ReplicaStep`]s out. The node runtime (`crate::node`) is that host.

use crate::wire::{Message, Proposal};
use occam_engine::crypto::SecretKey;
use occam_shard::{Certificate, CertificateError, QuorumCollector, SignedVote, ValidatorSet, Vote};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// How many out-of-order proposals a replica holds, how many of its votes it remembers, and
/// how many certified blocks a leader keeps for replicas that fall behind.
pub const REPLICA_WINDOW: usize = 64;

/// Protocol violations and refusals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// A message for another shard.
    #[error("message for shard {got}, this is shard {expected}")]
    WrongShard {
        /// This shard.
        expected: u32,
        /// The message's shard.
        got: u32,
    },
    /// A vote for a height not in flight (already certified or never proposed).
    #[error("vote for height {0}, which is not in flight")]
    NotInFlight(u64),
    /// A replica voted for another block hash or state root: its execution diverged.
    #[error("replica {signer} diverged at height {height}: its vote names another block or state root")]
    Diverged {
        /// The replica.
        signer: u32,
        /// The height.
        height: u64,
    },
    /// A vote that does not verify or comes from outside the set.
    #[error("bad vote: {0}")]
    BadVote(CertificateError),
    /// A proposal that does not extend this replica's last block.
    #[error("proposal at height {height} does not extend this replica's block {expected}")]
    WrongParent {
        /// The proposal's height.
        height: u64,
        /// This replica's next height.
        expected: u64,
    },
    /// More proposals ahead of this replica than it holds.
    #[error("proposal at height {height} is too far ahead of height {next}")]
    TooFarAhead {
        /// The proposal's height.
        height: u64,
        /// This replica's next height.
        next: u64,
    },
    /// The leader proposed with the pipeline full.
    #[error("the pipeline is full")]
    PipelineFull,
}

/// What the leader asks its host to do.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaderOut {
    /// Send `message` to replica `replica`.
    Send {
        /// Replica index (1..R).
        replica: u32,
        /// The message.
        message: Message,
    },
    /// The block at `height` is committed with this certificate (released in height order).
    Certified {
        /// The height.
        height: u64,
        /// Its certificate.
        certificate: Certificate,
        /// From proposal to certificate.
        latency: Duration,
    },
}

struct InFlight {
    collector: QuorumCollector,
    proposal: Proposal,
    sent_at: Instant,
    proposed_at: Instant,
}

/// A shard leader's side of the protocol.
pub struct LeaderCore {
    set: ValidatorSet,
    chain_id: u64,
    shard: u32,
    pipeline: usize,
    resend_after: Duration,
    next_height: u64,
    parent: [u8; 32],
    in_flight: BTreeMap<u64, InFlight>,
    /// The last [`REPLICA_WINDOW`] certified proposals, for [`LeaderCore::on_sync`].
    recent: VecDeque<Proposal>,
    /// The highest block each replica is known to have executed (from its votes).
    voted: Vec<u64>,
    /// The latest certificate, sent to replicas that are behind as a heartbeat.
    latest: Option<Certificate>,
    heartbeat_at: Option<Instant>,
}

impl LeaderCore {
    /// The leader of `shard` of chain `chain_id` (replica 0 of `set`) with the first block at
    /// height 1.
    pub fn new(chain_id: u64, shard: u32, set: ValidatorSet, pipeline: usize, resend_after: Duration) -> LeaderCore {
        LeaderCore {
            chain_id,
            shard,
            pipeline: pipeline.max(1),
            resend_after,
            next_height: 1,
            parent: [0; 32],
            in_flight: BTreeMap::new(),
            recent: VecDeque::new(),
            voted: vec![0; set.len()],
            latest: None,
            heartbeat_at: None,
            set,
        }
    }

    /// True if another block may be proposed now.
    pub fn can_propose(&self) -> bool {
        self.in_flight.len() < self.pipeline
    }

    /// Proposed blocks not yet certified.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The height the next proposal must have.
    pub fn next_height(&self) -> u64 {
        self.next_height
    }

    /// The hash the next proposal must name as its parent.
    pub fn parent(&self) -> [u8; 32] {
        self.parent
    }

    /// Records a block the host built and executed (with `proposal.height == next_height()`
    /// and `proposal.parent == parent()`), signs the leader's own vote with `key`, and returns
    /// the proposals to send (and the certificate, for a one-replica shard).
    pub fn propose(
        &mut self,
        proposal: Proposal,
        state_root: [u8; 32],
        key: &SecretKey,
        now: Instant,
    ) -> Result<Vec<LeaderOut>, CoreError> {
        if !self.can_propose() {
            return Err(CoreError::PipelineFull);
        }
        let height = self.next_height;
        let hash = proposal.hash();
        let vote = Vote { chain_id: self.chain_id, shard: self.shard, height, block_hash: hash, state_root };
        let mut collector = QuorumCollector::new(self.set.clone(), vote);
        collector.add(SignedVote::sign(vote, 0, key)).map_err(CoreError::BadVote)?;
        let mut out: Vec<LeaderOut> =
            (1..self.set.len() as u32).map(|replica| LeaderOut::Send { replica, message: Message::Propose(proposal.clone()) }).collect();
        self.in_flight.insert(height, InFlight { collector, proposal, sent_at: now, proposed_at: now });
        self.next_height += 1;
        self.parent = hash;
        out.extend(self.release(now));
        Ok(out)
    }

    /// Handles a replica's vote; returns the certificates now released, in height order.
    pub fn on_vote(&mut self, vote: SignedVote, now: Instant) -> Result<Vec<LeaderOut>, CoreError> {
        if vote.vote.shard != self.shard {
            return Err(CoreError::WrongShard { expected: self.shard, got: vote.vote.shard });
        }
        let height = vote.vote.height;
        if let Some(v) = self.voted.get_mut(vote.signer as usize) {
            *v = (*v).max(height);
        }
        let f = self.in_flight.get_mut(&height).ok_or(CoreError::NotInFlight(height))?;
        if vote.vote != *f.collector.vote() {
            return Err(CoreError::Diverged { signer: vote.signer, height });
        }
        if f.collector.certificate().is_none() {
            f.collector.add(vote).map_err(CoreError::BadVote)?;
        }
        Ok(self.release(now))
    }

    /// Certified blocks at the bottom of the pipeline, in height order.
    fn release(&mut self, now: Instant) -> Vec<LeaderOut> {
        let mut out = Vec::new();
        while let Some(entry) = self.in_flight.first_entry() {
            let Some(certificate) = entry.get().collector.certificate().cloned() else { break };
            let (height, f) = entry.remove_entry();
            // Replicas that missed the block learn it is committed.
            for replica in 1..self.set.len() as u32 {
                if !f.collector.signers().contains(replica) {
                    out.push(LeaderOut::Send { replica, message: Message::Commit(certificate.clone()) });
                }
            }
            self.latest = Some(certificate.clone());
            out.push(LeaderOut::Certified { height, certificate, latency: now.saturating_duration_since(f.proposed_at) });
            if self.recent.len() == REPLICA_WINDOW {
                self.recent.pop_front();
            }
            self.recent.push_back(f.proposal);
        }
        out
    }

    /// A replica asks for the proposals from height `from` on (it missed one): resends those
    /// the leader still has, certified or in flight, up to [`REPLICA_WINDOW`] of them. A
    /// replica further behind than that cannot catch up from the leader (it needs a state
    /// transfer, which nodes do not have yet).
    pub fn on_sync(&self, replica: u32, from: u64) -> Vec<LeaderOut> {
        if replica == 0 || replica as usize >= self.set.len() {
            return Vec::new();
        }
        self.recent
            .iter()
            .chain(self.in_flight.values().map(|f| &f.proposal))
            .filter(|p| p.height >= from)
            .take(REPLICA_WINDOW)
            .map(|p| LeaderOut::Send { replica, message: Message::Propose(p.clone()) })
            .collect()
    }

    /// Resends proposals that have waited `resend_after` to the replicas that have not voted,
    /// and, as often, sends the latest certificate to every replica that has not voted up to
    /// it: a replica that missed blocks (or restarted) learns it is behind and asks for them
    /// ([`LeaderCore::on_sync`]), even when no new block comes.
    pub fn on_tick(&mut self, now: Instant) -> Vec<LeaderOut> {
        let mut out = Vec::new();
        for f in self.in_flight.values_mut() {
            if now.saturating_duration_since(f.sent_at) < self.resend_after {
                continue;
            }
            f.sent_at = now;
            for replica in 1..self.set.len() as u32 {
                if !f.collector.signers().contains(replica) {
                    out.push(LeaderOut::Send { replica, message: Message::Propose(f.proposal.clone()) });
                }
            }
        }
        if let Some(latest) = &self.latest {
            if self.heartbeat_at.is_none_or(|t| now.saturating_duration_since(t) >= self.resend_after) {
                self.heartbeat_at = Some(now);
                for replica in 1..self.set.len() as u32 {
                    if self.voted[replica as usize] < latest.vote.height {
                        out.push(LeaderOut::Send { replica, message: Message::Commit(latest.clone()) });
                    }
                }
            }
        }
        out
    }
}

/// What a replica asks its host to do with a proposal.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicaStep {
    /// Verify the block's aggregate signature, execute it on the replica's state, then call
    /// [`ReplicaCore::executed`] (and [`ReplicaCore::next_ready`] for held proposals).
    Execute(Proposal),
    /// A proposal already executed: send this vote again.
    Revote(SignedVote),
    /// Held until the proposals before it arrive.
    Held,
}

/// A non-leader replica's side of the protocol.
pub struct ReplicaCore {
    chain_id: u64,
    shard: u32,
    index: u32,
    next_height: u64,
    parent: [u8; 32],
    votes: VecDeque<SignedVote>,
    ahead: BTreeMap<u64, Proposal>,
}

impl ReplicaCore {
    /// Replica `index` of `shard` of chain `chain_id`, before the first block.
    pub fn new(chain_id: u64, shard: u32, index: u32) -> ReplicaCore {
        ReplicaCore { chain_id, shard, index, next_height: 1, parent: [0; 32], votes: VecDeque::new(), ahead: BTreeMap::new() }
    }

    /// Blocks executed.
    pub fn height(&self) -> u64 {
        self.next_height - 1
    }

    /// The height this replica needs next.
    pub fn next_height(&self) -> u64 {
        self.next_height
    }

    /// Handles a proposal.
    pub fn on_propose(&mut self, p: Proposal) -> Result<ReplicaStep, CoreError> {
        if p.shard != self.shard {
            return Err(CoreError::WrongShard { expected: self.shard, got: p.shard });
        }
        if p.height < self.next_height {
            return match self.votes.iter().find(|v| v.vote.height == p.height) {
                Some(v) if v.vote.block_hash == p.hash() => Ok(ReplicaStep::Revote(*v)),
                _ => Err(CoreError::WrongParent { height: p.height, expected: self.next_height }),
            };
        }
        if p.height > self.next_height {
            if p.height - self.next_height > REPLICA_WINDOW as u64 {
                return Err(CoreError::TooFarAhead { height: p.height, next: self.next_height });
            }
            self.ahead.insert(p.height, p);
            return Ok(ReplicaStep::Held);
        }
        if p.parent != self.parent {
            return Err(CoreError::WrongParent { height: p.height, expected: self.next_height });
        }
        Ok(ReplicaStep::Execute(p))
    }

    /// The host executed `p` (the proposal of the last [`ReplicaStep::Execute`]) and reached
    /// `state_root`: the vote to send to the leader.
    pub fn executed(&mut self, p: &Proposal, state_root: [u8; 32], key: &SecretKey) -> SignedVote {
        let hash = p.hash();
        let vote = SignedVote::sign(
            Vote { chain_id: self.chain_id, shard: self.shard, height: p.height, block_hash: hash, state_root },
            self.index,
            key,
        );
        self.next_height = p.height + 1;
        self.parent = hash;
        if self.votes.len() == REPLICA_WINDOW {
            self.votes.pop_front();
        }
        self.votes.push_back(vote);
        vote
    }

    /// A held proposal that is now next, if any.
    pub fn next_ready(&mut self) -> Option<Result<ReplicaStep, CoreError>> {
        self.ahead.retain(|&h, _| h >= self.next_height);
        let p = self.ahead.remove(&self.next_height)?;
        Some(self.on_propose(p))
    }
}

#[cfg(test)]
mod tests;
