//! The cross-shard protocol: deterministic read exchange (Calvin-style), as sans-IO state
//! machines.
//!
//! A block's cross-shard transactions run after every shard has committed its single-shard
//! transactions. For one block:
//!
//! 1. The [`Coordinator`] sends each participant shard a [`Message::ReadRequest`] with the
//!    declared keys it owns among the cross-shard transactions.
//! 2. Each [`Participant`] answers with the current values of those keys
//!    ([`Message::ReadReply`]).
//! 3. With every reply in, the coordinator asks its host to execute the cross-shard
//!    transactions in block order over exactly those values ([`Step::Execute`]); every
//!    transaction's effects are decided once, in one place.
//! 4. The host hands the resulting writes back ([`Coordinator::on_executed`]); the coordinator
//!    sends each participant its share ([`Message::Apply`], possibly empty), and each
//!    participant applies it once and acknowledges ([`Message::Applied`]).
//!
//! Atomicity: a transaction's writes exist only in the one write set the coordinator splits, so
//! a transaction that fails (a transfer whose source lacks funds) writes nothing anywhere, and
//! one that succeeds is applied on every shard it touches. Determinism: the values read are
//! those after the single-shard phase, the execution order is block order, and nothing depends
//! on message timing. Messages carry the block number; duplicates and stale messages are
//! recognised and ignored (a participant re-acknowledges an `Apply` it already applied without
//! applying it again), so the protocol is safe over a transport that reorders or repeats.
//!
//! Nothing here does I/O: events go in, [`Envelope`]s and [`Step`]s come out, and a host (the
//! in-process [`crate::engine::ShardedEngine`] today, QUIC nodes later) carries them.

use crate::partition::ShardId;
use occam_engine::key::Key;
use occam_engine::value::Value;
use std::collections::BTreeMap;

/// Values read or written: `(key, value)`, `None` for absent or deleted.
pub type Entries = Vec<(Key, Option<Value>)>;

/// A protocol message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Coordinator → participant: send the values of these keys.
    ReadRequest {
        /// Block number.
        block: u64,
        /// Keys the participant owns.
        keys: Vec<Key>,
    },
    /// Participant → coordinator: the values asked for.
    ReadReply {
        /// Block number.
        block: u64,
        /// The answering shard.
        from: ShardId,
        /// One entry per requested key.
        values: Entries,
    },
    /// Coordinator → participant: the cross-shard writes of this block on its keys.
    Apply {
        /// Block number.
        block: u64,
        /// Writes, possibly none.
        writes: Entries,
    },
    /// Participant → coordinator: the writes are applied.
    Applied {
        /// Block number.
        block: u64,
        /// The acknowledging shard.
        from: ShardId,
        /// The height of the participant's block that applied them, where the participant's
        /// history has heights (a node's shard); 0 in the embedded engine.
        height: u64,
    },
}

/// Who a message is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Address {
    /// The coordinator of the block's cross-shard phase.
    Coordinator,
    /// A shard.
    Shard(ShardId),
}

/// A message with its destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Destination.
    pub to: Address,
    /// Payload.
    pub message: Message,
}

/// What the coordinator asks of its host after a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do yet.
    Wait,
    /// Execute the block's cross-shard transactions in block order over these values (every
    /// declared key of them, absent ones as `None`), then call [`Coordinator::on_executed`].
    Execute(Entries),
    /// Every participant has applied its writes: the block's cross-shard phase is over.
    Done,
}

/// Why a message was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A message from a shard that is not a participant of this block.
    #[error("block {block}: shard {shard} is not a participant")]
    NotParticipant {
        /// Block number.
        block: u64,
        /// The sender.
        shard: ShardId,
    },
    /// A read reply that does not answer exactly the keys asked.
    #[error("block {block}: shard {shard} answered other keys than asked")]
    WrongKeys {
        /// Block number.
        block: u64,
        /// The sender.
        shard: ShardId,
    },
    /// A message this side never receives (a reply sent to a participant, say).
    #[error("unexpected message for this role")]
    Unexpected,
    /// `on_executed` before every read reply, or twice.
    #[error("writes handed over at the wrong time")]
    NotExecuting,
    /// Writes on a key owned by a shard that is not a participant.
    #[error("a write for shard {0}, which is not a participant")]
    WriteOutsideParticipants(ShardId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Reading,
    Executing,
    Applying,
    Done,
}

/// The coordinator of one block's cross-shard phase.
#[derive(Debug, Clone)]
pub struct Coordinator {
    block: u64,
    /// Keys asked of each participant.
    asked: BTreeMap<ShardId, Vec<Key>>,
    replies: BTreeMap<ShardId, Entries>,
    applied: BTreeMap<ShardId, bool>,
    phase: Phase,
}

impl Coordinator {
    /// Starts block `block`'s cross-shard phase; `reads` lists each participant's keys (every
    /// shard the cross-shard transactions touch must be there, even with no keys to read).
    /// Returns the read requests to send.
    pub fn start(block: u64, reads: BTreeMap<ShardId, Vec<Key>>) -> (Coordinator, Vec<Envelope>) {
        let out = reads
            .iter()
            .map(|(&shard, keys)| Envelope { to: Address::Shard(shard), message: Message::ReadRequest { block, keys: keys.clone() } })
            .collect();
        let applied = reads.keys().map(|&s| (s, false)).collect();
        let phase = if reads.is_empty() { Phase::Done } else { Phase::Reading };
        (Coordinator { block, asked: reads, replies: BTreeMap::new(), applied, phase }, out)
    }

    /// The block.
    pub fn block(&self) -> u64 {
        self.block
    }

    /// True once every participant has applied its writes.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Handles a message addressed to the coordinator. Messages of other blocks and repeats
    /// are ignored (`Step::Wait`).
    pub fn on_message(&mut self, message: &Message) -> Result<Step, ProtocolError> {
        match message {
            Message::ReadReply { block, from, values } if *block == self.block => {
                let asked = self.asked.get(from).ok_or(ProtocolError::NotParticipant { block: *block, shard: *from })?;
                if self.phase != Phase::Reading || self.replies.contains_key(from) {
                    return Ok(Step::Wait);
                }
                if values.len() != asked.len() || values.iter().zip(asked).any(|((k, _), a)| k != a) {
                    return Err(ProtocolError::WrongKeys { block: *block, shard: *from });
                }
                self.replies.insert(*from, values.clone());
                if self.replies.len() < self.asked.len() {
                    return Ok(Step::Wait);
                }
                self.phase = Phase::Executing;
                Ok(Step::Execute(self.replies.values().flatten().cloned().collect()))
            }
            Message::Applied { block, from, .. } if *block == self.block => {
                let done = self.applied.get_mut(from).ok_or(ProtocolError::NotParticipant { block: *block, shard: *from })?;
                if self.phase != Phase::Applying {
                    return Ok(Step::Wait);
                }
                *done = true;
                if self.applied.values().all(|&d| d) {
                    self.phase = Phase::Done;
                    return Ok(Step::Done);
                }
                Ok(Step::Wait)
            }
            Message::ReadReply { .. } | Message::Applied { .. } => Ok(Step::Wait),
            Message::ReadRequest { .. } | Message::Apply { .. } => Err(ProtocolError::Unexpected),
        }
    }

    /// The executed writes, split by owning shard; returns the apply messages (one per
    /// participant, empty when it has no writes).
    pub fn on_executed(&mut self, mut writes: BTreeMap<ShardId, Entries>) -> Result<Vec<Envelope>, ProtocolError> {
        if self.phase != Phase::Executing {
            return Err(ProtocolError::NotExecuting);
        }
        if let Some(&outside) = writes.keys().find(|s| !self.asked.contains_key(s)) {
            return Err(ProtocolError::WriteOutsideParticipants(outside));
        }
        self.phase = Phase::Applying;
        Ok(self
            .asked
            .keys()
            .map(|&s| Envelope {
                to: Address::Shard(s),
                message: Message::Apply { block: self.block, writes: writes.remove(&s).unwrap_or_default() },
            })
            .collect())
    }

    /// Envelopes to send again when the transport may have lost some (every message is safe to
    /// repeat): the read requests still unanswered, or the applies still unacknowledged.
    pub fn resend(&self, writes: &BTreeMap<ShardId, Entries>) -> Vec<Envelope> {
        match self.phase {
            Phase::Reading => self
                .asked
                .iter()
                .filter(|(s, _)| !self.replies.contains_key(s))
                .map(|(&s, keys)| Envelope {
                    to: Address::Shard(s),
                    message: Message::ReadRequest { block: self.block, keys: keys.clone() },
                })
                .collect(),
            Phase::Applying => self
                .applied
                .iter()
                .filter(|(_, &done)| !done)
                .map(|(&s, _)| Envelope {
                    to: Address::Shard(s),
                    message: Message::Apply { block: self.block, writes: writes.get(&s).cloned().unwrap_or_default() },
                })
                .collect(),
            Phase::Executing | Phase::Done => Vec::new(),
        }
    }
}

/// What a participant asks of its host after a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this.
    Send(Envelope),
    /// Apply these writes to the shard's state (once per block), then the `Applied` reply
    /// that accompanies this action may go out.
    ApplyWrites(Entries),
}

/// A shard's side of the protocol.
#[derive(Debug, Clone)]
pub struct Participant {
    shard: ShardId,
    /// The highest block whose writes were applied.
    applied_through: Option<u64>,
}

impl Participant {
    /// The participant for `shard`, nothing applied yet.
    pub fn new(shard: ShardId) -> Self {
        Participant { shard, applied_through: None }
    }

    /// Handles a message addressed to this shard; `read` gives the shard's current value of a
    /// key. Returns the actions, in order. Reads are answered as often as asked (they are
    /// idempotent until the block's writes are applied, and the coordinator ignores repeats);
    /// an `Apply` for a block already applied is acknowledged again but not applied.
    pub fn on_message(&mut self, message: &Message, read: impl Fn(&Key) -> Option<Value>) -> Result<Vec<Action>, ProtocolError> {
        match message {
            Message::ReadRequest { block, keys } => {
                if self.applied_through.is_some_and(|b| b >= *block) {
                    // The block is over here: its reply would read written values.
                    return Ok(Vec::new());
                }
                let values = keys.iter().map(|k| (*k, read(k))).collect();
                Ok(vec![Action::Send(Envelope {
                    to: Address::Coordinator,
                    message: Message::ReadReply { block: *block, from: self.shard, values },
                })])
            }
            Message::Apply { block, writes } => {
                let ack = Action::Send(Envelope {
                    to: Address::Coordinator,
                    message: Message::Applied { block: *block, from: self.shard, height: 0 },
                });
                if self.applied_through.is_some_and(|b| b >= *block) {
                    return Ok(vec![ack]);
                }
                self.applied_through = Some(*block);
                Ok(vec![Action::ApplyWrites(writes.clone()), ack])
            }
            Message::ReadReply { .. } | Message::Applied { .. } => Err(ProtocolError::Unexpected),
        }
    }
}
