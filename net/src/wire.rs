//! The wire codec: versioned, length-prefixed frames with a hard maximum size.
//!
//! A frame is a 6-byte header, `version (u8) ‖ kind (u8) ‖ payload length (u32 LE)`, then the
//! payload. [`FrameHeader::parse`] refuses a wrong version, an unknown kind or a length above
//! the receiver's limit before a byte of payload is read, so a peer cannot make a node allocate
//! more than [`MAX_FRAME_LEN`]. [`Message::decode`] checks every count against the bytes that
//! are actually there before allocating, refuses trailing bytes, and never panics (fuzzed in
//! `net/fuzz`, and by the proptests below).
//!
//! Transactions travel in the engine's own encodings: a client's batch is a
//! [`RawSignedBlock`] (one signature per transaction, decoded without curve arithmetic), a proposal carries an [`AggregatedBlock`]
//! (one aggregate signature for the block), votes and certificates use the shard crate's
//! codecs. Raft's RPCs ([`Message::RaftRequest`], [`Message::RaftReply`]) carry their
//! request or response as an opaque body in the Raft codec ([`crate::raft::codec`]), which
//! this module bounds (by the frame) but does not decode.

use occam_engine::key::{Key, KEY_LEN};
use occam_engine::native::signed::{AggregatedBlock, CodecError, RawSignedBlock};
use occam_engine::value::Value;
use occam_shard::protocol::{Entries, Message as CrossMessage};
use occam_shard::{Certificate, DecodeError, SignedVote};

/// The wire format's version; a frame of another version is refused.
///
/// Version 2 added the Raft RPC kinds ([`Message::RaftRequest`], [`Message::RaftReply`]);
/// version 3, validator-set epochs in votes and certificates (certificates name their set's
/// members); version 4, the refusals `BadSignature` and `UnknownSigner` (signatures are
/// checked before a batch is admitted); version 5, the status `NotOwner` (accounts belong to
/// keys).
pub const WIRE_VERSION: u8 = 5;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 6;

/// The largest payload any node accepts (8 MiB): about 40,000 signed transactions.
pub const MAX_FRAME_LEN: usize = 8 << 20;

/// The most transactions in one client batch.
pub const MAX_BATCH_TXS: usize = 16_384;

/// The most entries (keys or values) in one cross-shard message or one receipt frame.
pub const MAX_ENTRIES: usize = 1 << 20;

/// The most keys one client read may ask for.
pub const MAX_READ_KEYS: usize = 4096;

/// The most transactions one status read ([`Message::TxQuery`]) names.
pub const MAX_TX_QUERY: usize = 4096;

/// The largest value carried in a cross-shard message.
pub const MAX_VALUE_LEN: usize = 1 << 16;

/// The longest error text a [`Message::RaftReply`] may carry, in bytes (longer text is
/// refused when encoding and when decoding; senders cut it first).
pub const MAX_RAFT_ERROR_LEN: usize = 1024;

/// Why bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The frame's version is not [`WIRE_VERSION`].
    #[error("wire version {0}, this node speaks version {WIRE_VERSION}")]
    Version(u8),
    /// The frame kind is not a known message.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The declared payload is larger than the receiver accepts.
    #[error("frame of {len} bytes, the limit is {max}")]
    Oversized {
        /// Declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The payload ended early.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// Bytes left over after the message.
    #[error("{0} bytes after the end of the message")]
    Trailing(usize),
    /// A count above its limit.
    #[error("{what}: {got}, the limit is {max}")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// The count.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// A field that does not hold a valid value.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// A transaction or block encoding error.
    #[error("transactions: {0}")]
    Tx(#[from] CodecError),
    /// A vote or certificate encoding error.
    #[error("vote or certificate: {0}")]
    Certificate(#[from] DecodeError),
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The message kind.
    pub kind: u8,
    /// Payload bytes that follow.
    pub len: usize,
}

impl FrameHeader {
    /// Parses and checks a header against the receiver's payload limit.
    pub fn parse(bytes: &[u8; HEADER_LEN], max_len: usize) -> Result<FrameHeader, WireError> {
        if bytes[0] != WIRE_VERSION {
            return Err(WireError::Version(bytes[0]));
        }
        let kind = bytes[1];
        if !(Kind::FIRST..=Kind::LAST).contains(&kind) {
            return Err(WireError::UnknownKind(kind));
        }
        let len = u32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]) as usize;
        if len > max_len.min(MAX_FRAME_LEN) {
            return Err(WireError::Oversized { len, max: max_len.min(MAX_FRAME_LEN) });
        }
        Ok(FrameHeader { kind, len })
    }
}

/// Why a whole batch was refused (nothing of it entered the mempool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Refusal {
    /// This client already has as many transactions pending at this node as it may: it is
    /// sending faster than the shard commits. Retry after receipts arrive.
    Throttled = 0,
    /// The shard's mempool is full.
    QueueFull = 1,
    /// This node does not lead the shard the transactions belong to.
    NotLeader = 2,
    /// The batch was signed for another chain.
    WrongChain = 3,
    /// The batch mixes shards, or holds a transaction whose keys span shards.
    WrongShard = 4,
    /// The node is shutting down.
    ShuttingDown = 5,
    /// A signature of the batch does not verify (or is not a valid point): the batch was
    /// refused whole, nothing of it admitted. Repeated, it closes the connection and refuses
    /// the client's address for a while.
    BadSignature = 6,
    /// A transaction of the batch names a signer the chain does not know.
    UnknownSigner = 7,
}

impl Refusal {
    /// Every reason, in wire order (`ALL[r as usize] == r`).
    pub const ALL: [Refusal; 8] = [
        Refusal::Throttled,
        Refusal::QueueFull,
        Refusal::NotLeader,
        Refusal::WrongChain,
        Refusal::WrongShard,
        Refusal::ShuttingDown,
        Refusal::BadSignature,
        Refusal::UnknownSigner,
    ];

    fn from_u8(b: u8) -> Result<Refusal, WireError> {
        Self::ALL.get(usize::from(b)).copied().ok_or(WireError::Invalid("refusal reason"))
    }
}

/// Which Raft RPC a [`Message::RaftRequest`] or [`Message::RaftReply`] carries, and so which
/// Raft codec type its body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RaftRpcKind {
    /// AppendEntries (replication and heartbeats): the body is an
    /// [`crate::raft::AppendEntriesRequest`], answered by an
    /// [`crate::raft::AppendEntriesResponse`].
    AppendEntries = 0,
    /// RequestVote: the body is a [`crate::raft::VoteRequest`], answered by a
    /// [`crate::raft::VoteResponse`].
    Vote = 1,
    /// One chunk of a snapshot: the body is an [`crate::raft::InstallSnapshotRequest`],
    /// answered by an [`crate::raft::InstallSnapshotResponse`].
    InstallSnapshot = 2,
}

impl RaftRpcKind {
    /// Every kind, in wire order (`ALL[k as usize] == k`).
    pub const ALL: [RaftRpcKind; 3] = [RaftRpcKind::AppendEntries, RaftRpcKind::Vote, RaftRpcKind::InstallSnapshot];

    fn from_u8(b: u8) -> Result<RaftRpcKind, WireError> {
        Self::ALL.get(usize::from(b)).copied().ok_or(WireError::Invalid("raft rpc kind"))
    }
}

/// What became of one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TxStatus {
    /// Committed in a certified block; its body succeeded.
    Succeeded = 0,
    /// Committed in a certified block; its body failed (insufficient funds, say), and only its
    /// nonce was spent.
    Failed = 1,
    /// Committed in a certified block, but refused for its nonce: nothing happened.
    BadNonce = 2,
    /// Dropped before any block: its signature did not verify.
    BadSignature = 3,
    /// Dropped before any block: its signer is not registered.
    UnknownSigner = 4,
    /// Dropped: the cross-shard round it was in could not run (the coordinator aborted it and
    /// no shard applied anything of it).
    Aborted = 5,
    /// Committed in a certified block, but refused: its signer does not own an account it
    /// acts for. Nothing happened, not even its nonce was spent.
    NotOwner = 6,
}

impl TxStatus {
    /// Every status, in wire order (`ALL[s as usize] == s`).
    pub const ALL: [TxStatus; 7] = [
        TxStatus::Succeeded,
        TxStatus::Failed,
        TxStatus::BadNonce,
        TxStatus::BadSignature,
        TxStatus::UnknownSigner,
        TxStatus::Aborted,
        TxStatus::NotOwner,
    ];

    fn from_u8(b: u8) -> Result<TxStatus, WireError> {
        Self::ALL.get(usize::from(b)).copied().ok_or(WireError::Invalid("transaction status"))
    }

    /// True for the statuses that come with a certified block.
    pub fn is_committed(self) -> bool {
        matches!(self, TxStatus::Succeeded | TxStatus::Failed | TxStatus::BadNonce | TxStatus::NotOwner)
    }
}

/// One transaction's fate: which batch and position it came in, and its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptEntry {
    /// The client's batch id.
    pub batch: u64,
    /// The transaction's index in its batch.
    pub index: u32,
    /// What became of it.
    pub status: TxStatus,
}

/// What a node knows of one transaction, named by its signer and nonce: the answer to a status
/// read ([`Message::TxQuery`]). A node answers from its own replicas and its own mempools; a
/// client that asks the leader of the signer's shard (where the nonce lives) gets the
/// authoritative answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxFate {
    /// A transaction with this nonce committed in a certified block: the reply's certificate
    /// number `certificate` (which names the shard, the height and the block).
    Committed {
        /// Index into [`Message::TxFates`]'s certificates.
        certificate: u32,
    },
    /// The signer's nonce is spent, so a transaction with it committed, but this node cannot
    /// show the certificate yet: the block at `height` is applied and not certified (ask
    /// again), or, with no height, the block is older than this replica's history (it caught up
    /// from a snapshot) or is applied and not yet persisted.
    Spent {
        /// The block that spent it, where this replica applied it.
        height: Option<u64>,
    },
    /// Admitted here and not answered yet: in a mempool, in the log, in a cross-shard round, or
    /// waiting for its block's certificate.
    Pending,
    /// This node leads the signer's shard, has applied everything earlier leaders logged, and
    /// knows nothing of it: it never arrived, or was dropped before any block. Sending it again
    /// is safe (its nonce lets it commit at most once).
    Unknown,
    /// This node cannot tell: it does not lead the signer's shard (or, newly elected, has not
    /// yet applied what its predecessors logged). Ask `leader`, the leader it knows of.
    NotLeader {
        /// The shard's leader as this node knows it.
        leader: Option<u32>,
    },
}

/// A replica's role in its shard's Raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum RaftRole {
    /// Not (yet) a voter: a node that has not joined its group.
    #[default]
    Learner = 0,
    /// Follows the leader.
    Follower = 1,
    /// Standing for election.
    Candidate = 2,
    /// Leads the group: orders its blocks and admits its clients' transactions.
    Leader = 3,
}

impl RaftRole {
    /// Every role, in wire order (`ALL[r as usize] == r`).
    pub const ALL: [RaftRole; 4] = [RaftRole::Learner, RaftRole::Follower, RaftRole::Candidate, RaftRole::Leader];

    fn from_u8(b: u8) -> Result<RaftRole, WireError> {
        Self::ALL.get(usize::from(b)).copied().ok_or(WireError::Invalid("raft role"))
    }
}

/// One replica's position, as a node reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplicaStatus {
    /// The shard.
    pub shard: u32,
    /// This node's index among the shard's replicas (its signer index in certificates).
    pub replica: u32,
    /// Blocks applied.
    pub height: u64,
    /// The state root after them.
    pub root: [u8; 32],
    /// Transactions waiting in the shard's mempool (leaders only).
    pub pending: u64,
    /// Its role in the shard's Raft group.
    pub role: RaftRole,
    /// Its Raft term.
    pub term: u64,
    /// The group's leader as it knows it (`None`: no leader now).
    pub leader: Option<u32>,
    /// Its last Raft log index.
    pub log_index: u64,
    /// The last Raft log index it applied.
    pub applied_index: u64,
    /// The highest height it holds a certificate for.
    pub certified: u64,
}

/// The encoded size of a [`ReplicaStatus`].
const REPLICA_STATUS_LEN: usize = 4 + 4 + 8 + 32 + 8 + 1 + 8 + 4 + 8 + 8 + 8;

/// A block proposal: the leader's block for its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The shard.
    pub shard: u32,
    /// Height of this block (the first block is 1).
    pub height: u64,
    /// Hash of the previous block (zero before the first).
    pub parent: [u8; 32],
    /// The cross-shard step the block carries, applied before its transactions (see
    /// [`CrossStep`]).
    pub cross: Option<CrossStep>,
    /// The transactions, under one aggregate signature; `None` for a block that carries only a
    /// cross-shard step.
    pub block: Option<AggregatedBlock>,
}

/// A step of a cross-shard round, carried in a block so that it goes through the shard's Raft
/// log: every replica applies it at the same point of the shard's history, and a leader elected
/// later finds its effect in the replicated state (`net::node` keeps the records under reserved
/// keys of the shard's state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrossStep {
    /// Participant: lock the shard for `round`; the round reads `keys` as they stand after this
    /// block.
    Prepare {
        /// The round.
        round: u64,
        /// The keys read (this shard's).
        keys: Vec<Key>,
    },
    /// Participant: the round's outcome here, its writes on this shard (none for an abort);
    /// unlocks the shard.
    Apply {
        /// The round.
        round: u64,
        /// The writes.
        writes: Entries,
    },
    /// Coordinator, on shard 0: a round starts (its id is this block's height).
    Start {
        /// The participant shards.
        participants: Vec<u32>,
    },
    /// Coordinator, on shard 0: the round's outcome, before any participant learns it.
    Decide {
        /// The round.
        round: u64,
        /// True if the round is aborted (no writes anywhere).
        aborted: bool,
        /// Each participant's writes.
        writes: Vec<(u32, Entries)>,
    },
}

/// The version of a block's encoding as a Raft entry ([`Proposal::encode_entry`]); a node
/// refuses to apply an entry of another version rather than misread it.
pub const ENTRY_VERSION: u8 = 1;
/// The first bytes of every block entry.
const ENTRY_MAGIC: &[u8; 4] = b"OCBK";
/// The most participants a cross-shard step names.
pub const MAX_PARTICIPANTS: usize = 4096;

impl Proposal {
    /// The number of transactions in the block.
    pub fn txs(&self) -> usize {
        self.block.as_ref().map_or(0, |b| b.headers.len())
    }
}

impl Proposal {
    /// The block as a Raft entry's payload: magic, [`ENTRY_VERSION`], then the block's own
    /// encoding (with the height and parent Raft's order gives it at apply time).
    pub fn encode_entry(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(64 + self.txs() * 60);
        w.extend_from_slice(ENTRY_MAGIC);
        w.push(ENTRY_VERSION);
        encode_proposal(self, &mut w);
        w
    }

    /// Decodes a Raft entry's payload, bounded as a frame is.
    pub fn decode_entry(bytes: &[u8]) -> Result<Proposal, WireError> {
        if bytes.len() > MAX_FRAME_LEN {
            return Err(WireError::TooMany { what: "entry bytes", got: bytes.len(), max: MAX_FRAME_LEN });
        }
        let mut r = Reader { bytes };
        if &r.array::<4>("entry magic")? != ENTRY_MAGIC {
            return Err(WireError::Invalid("entry magic"));
        }
        let version = r.u8("entry version")?;
        if version != ENTRY_VERSION {
            return Err(WireError::Invalid("entry version"));
        }
        decode_proposal(&mut r)
    }

    /// The block hash replicas vote on: BLAKE3 over the proposal's encoding.
    pub fn hash(&self) -> [u8; 32] {
        let mut w = Vec::with_capacity(64 + self.txs() * 60);
        encode_proposal(self, &mut w);
        let mut h = blake3::Hasher::new();
        h.update(b"occam/block/v1");
        h.update(&w);
        *h.finalize().as_bytes()
    }
}

/// Every message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Client → leader: transactions to order, under the client's batch id.
    Submit {
        /// The client's id for this batch, echoed in answers.
        batch: u64,
        /// The signed transactions (signatures validated later, off the ingress path).
        txs: RawSignedBlock,
    },
    /// Leader → client: the batch is in the mempool.
    Accepted {
        /// The batch id.
        batch: u64,
    },
    /// Leader → client: the whole batch was refused; nothing of it is pending.
    Refused {
        /// The batch id.
        batch: u64,
        /// Why.
        reason: Refusal,
        /// For [`Refusal::NotLeader`]: the node this node knows to lead the shard now, if any;
        /// the client sends there next.
        leader: Option<u32>,
    },
    /// Leader → client: transactions committed in one certified block, or dropped.
    Receipts {
        /// The block's certificate; `None` for transactions dropped before any block.
        certificate: Option<Certificate>,
        /// One entry per transaction of this client.
        entries: Vec<ReceiptEntry>,
    },
    /// Leader → replica: the next block.
    Propose(Proposal),
    /// Replica → leader: a signed vote on a block.
    Vote(SignedVote),
    /// Leader → replica: the certificate of a block it voted on or missed.
    Commit(Certificate),
    /// Anyone → node: report your replicas' positions.
    StatusRequest,
    /// Node → asker: its replicas' positions.
    Status(Vec<ReplicaStatus>),
    /// Client → shard leader: the current values of these keys (all of the leader's shard),
    /// answered with [`Message::Values`]. A leader answers from its latest executed state,
    /// which may include blocks not yet certified.
    Read {
        /// The client's id for the request, echoed.
        id: u64,
        /// The keys.
        keys: Vec<Key>,
    },
    /// Leader → client: the values asked for, in order (`None`: absent).
    Values {
        /// The request id.
        id: u64,
        /// One entry per key.
        values: Entries,
    },
    /// Client → node: what became of these transactions, each named by (signer, nonce)? At most
    /// [`MAX_TX_QUERY`]; answered with [`Message::TxFates`] (or refused as `Throttled`).
    TxQuery {
        /// The client's id for the request, echoed.
        id: u64,
        /// `(signer, nonce)` of each transaction.
        txs: Vec<(u32, u64)>,
    },
    /// Node → client: one fate per transaction asked, in order; the certificates they refer
    /// to, each once.
    TxFates {
        /// The request id.
        id: u64,
        /// Certificates of the blocks that committed the transactions found.
        certificates: Vec<Certificate>,
        /// One per transaction asked.
        fates: Vec<TxFate>,
    },
    /// Replica → leader: resend the proposals from height `from` on (a replica that missed
    /// one catches up from the leader's recent blocks).
    Sync {
        /// The shard.
        shard: u32,
        /// The replica's next height.
        from: u64,
    },
    /// Node ↔ node: a cross-shard protocol message between the coordinator and a shard's
    /// leader. `shard` is the shard the message is for (requests, applies) or from (replies,
    /// acknowledgements).
    Cross {
        /// The participant shard.
        shard: u32,
        /// The protocol message.
        message: CrossMessage,
    },
    /// Node → node, alone on a bidirectional stream the sender opened: one Raft RPC for the
    /// group `group`, answered by one [`Message::RaftReply`] on the same stream (see
    /// [`crate::raft::network`]).
    RaftRequest {
        /// The Raft group (one shard's replicas).
        group: u32,
        /// Which RPC `body` holds.
        rpc: RaftRpcKind,
        /// The request in the Raft codec ([`crate::raft::codec::RaftCodec`]), length-prefixed;
        /// bounded here only by the frame, decoded by the receiver's Raft glue.
        body: Vec<u8>,
    },
    /// Node → node: the answer to a [`Message::RaftRequest`], on its stream.
    RaftReply {
        /// The group of the request.
        group: u32,
        /// The RPC of the request.
        rpc: RaftRpcKind,
        /// The response in the Raft codec, or why the group's Raft could not answer (at most
        /// [`MAX_RAFT_ERROR_LEN`] bytes of UTF-8).
        result: Result<Vec<u8>, String>,
    },
}

/// Frame kinds.
struct Kind;
impl Kind {
    const SUBMIT: u8 = 1;
    const ACCEPTED: u8 = 2;
    const REFUSED: u8 = 3;
    const RECEIPTS: u8 = 4;
    const PROPOSE: u8 = 5;
    const VOTE: u8 = 6;
    const COMMIT: u8 = 7;
    const STATUS_REQUEST: u8 = 8;
    const STATUS: u8 = 9;
    const CROSS_READ_REQUEST: u8 = 10;
    const CROSS_READ_REPLY: u8 = 11;
    const CROSS_APPLY: u8 = 12;
    const CROSS_APPLIED: u8 = 13;
    const READ: u8 = 14;
    const VALUES: u8 = 15;
    const SYNC: u8 = 16;
    const RAFT_REQUEST: u8 = 17;
    const RAFT_REPLY: u8 = 18;
    const TX_QUERY: u8 = 19;
    const TX_FATES: u8 = 20;
    const FIRST: u8 = 1;
    const LAST: u8 = 20;
}

impl Message {
    /// The frame kind of this message.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Submit { .. } => Kind::SUBMIT,
            Message::Accepted { .. } => Kind::ACCEPTED,
            Message::Refused { .. } => Kind::REFUSED,
            Message::Receipts { .. } => Kind::RECEIPTS,
            Message::Propose(_) => Kind::PROPOSE,
            Message::Vote(_) => Kind::VOTE,
            Message::Commit(_) => Kind::COMMIT,
            Message::StatusRequest => Kind::STATUS_REQUEST,
            Message::Status(_) => Kind::STATUS,
            Message::Read { .. } => Kind::READ,
            Message::Values { .. } => Kind::VALUES,
            Message::Sync { .. } => Kind::SYNC,
            Message::RaftRequest { .. } => Kind::RAFT_REQUEST,
            Message::RaftReply { .. } => Kind::RAFT_REPLY,
            Message::TxQuery { .. } => Kind::TX_QUERY,
            Message::TxFates { .. } => Kind::TX_FATES,
            Message::Cross { message: CrossMessage::ReadRequest { .. }, .. } => Kind::CROSS_READ_REQUEST,
            Message::Cross { message: CrossMessage::ReadReply { .. }, .. } => Kind::CROSS_READ_REPLY,
            Message::Cross { message: CrossMessage::Apply { .. }, .. } => Kind::CROSS_APPLY,
            Message::Cross { message: CrossMessage::Applied { .. }, .. } => Kind::CROSS_APPLIED,
        }
    }

    /// The whole frame: header and payload. Fails only if the payload would exceed
    /// [`MAX_FRAME_LEN`], or a [`Message::RaftReply`]'s error text [`MAX_RAFT_ERROR_LEN`]
    /// (what does not decode is not encoded).
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        if let Message::RaftReply { result: Err(text), .. } = self {
            if text.len() > MAX_RAFT_ERROR_LEN {
                return Err(WireError::TooMany { what: "raft error text bytes", got: text.len(), max: MAX_RAFT_ERROR_LEN });
            }
        }
        let mut out = vec![WIRE_VERSION, self.kind(), 0, 0, 0, 0];
        self.encode_payload(&mut out);
        let len = out.len() - HEADER_LEN;
        if len > MAX_FRAME_LEN {
            return Err(WireError::Oversized { len, max: MAX_FRAME_LEN });
        }
        out[2..HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(out)
    }

    fn encode_payload(&self, w: &mut Vec<u8>) {
        match self {
            Message::Submit { batch, txs } => {
                w.extend_from_slice(&batch.to_le_bytes());
                w.extend_from_slice(&txs.encode());
            }
            Message::Accepted { batch } => w.extend_from_slice(&batch.to_le_bytes()),
            Message::Refused { batch, reason, leader } => {
                w.extend_from_slice(&batch.to_le_bytes());
                w.push(*reason as u8);
                w.extend_from_slice(&leader.unwrap_or(u32::MAX).to_le_bytes());
            }
            Message::Receipts { certificate, entries } => {
                match certificate {
                    Some(c) => {
                        w.push(1);
                        put_bytes(w, &c.encode());
                    }
                    None => w.push(0),
                }
                w.extend_from_slice(&(entries.len() as u32).to_le_bytes());
                for e in entries {
                    w.extend_from_slice(&e.batch.to_le_bytes());
                    w.extend_from_slice(&e.index.to_le_bytes());
                    w.push(e.status as u8);
                }
            }
            Message::Propose(p) => encode_proposal(p, w),
            Message::Vote(v) => w.extend_from_slice(&v.encode()),
            Message::Commit(c) => w.extend_from_slice(&c.encode()),
            Message::StatusRequest => {}
            Message::Status(replicas) => {
                w.extend_from_slice(&(replicas.len() as u32).to_le_bytes());
                for r in replicas {
                    w.extend_from_slice(&r.shard.to_le_bytes());
                    w.extend_from_slice(&r.replica.to_le_bytes());
                    w.extend_from_slice(&r.height.to_le_bytes());
                    w.extend_from_slice(&r.root);
                    w.extend_from_slice(&r.pending.to_le_bytes());
                    w.push(r.role as u8);
                    w.extend_from_slice(&r.term.to_le_bytes());
                    w.extend_from_slice(&r.leader.unwrap_or(u32::MAX).to_le_bytes());
                    w.extend_from_slice(&r.log_index.to_le_bytes());
                    w.extend_from_slice(&r.applied_index.to_le_bytes());
                    w.extend_from_slice(&r.certified.to_le_bytes());
                }
            }
            Message::Read { id, keys } => {
                w.extend_from_slice(&id.to_le_bytes());
                put_keys(w, keys);
            }
            Message::Values { id, values } => {
                w.extend_from_slice(&id.to_le_bytes());
                put_entries(w, values);
            }
            Message::Sync { shard, from } => {
                w.extend_from_slice(&shard.to_le_bytes());
                w.extend_from_slice(&from.to_le_bytes());
            }
            // `id u64 ‖ count u32 ‖ (signer u32 ‖ nonce u64)*`.
            Message::TxQuery { id, txs } => {
                w.extend_from_slice(&id.to_le_bytes());
                w.extend_from_slice(&(txs.len() as u32).to_le_bytes());
                for (signer, nonce) in txs {
                    w.extend_from_slice(&signer.to_le_bytes());
                    w.extend_from_slice(&nonce.to_le_bytes());
                }
            }
            // `id u64 ‖ count u32 ‖ (len u32 ‖ certificate)* ‖ count u32 ‖ fate*`, a fate being
            // `0 ‖ certificate u32` (committed), `1 ‖ 0` or `1 ‖ 1 ‖ height u64` (spent), `2`
            // (pending), `3` (unknown) or `4 ‖ leader u32` (not leader; `u32::MAX`: none known).
            Message::TxFates { id, certificates, fates } => {
                w.extend_from_slice(&id.to_le_bytes());
                w.extend_from_slice(&(certificates.len() as u32).to_le_bytes());
                for c in certificates {
                    put_bytes(w, &c.encode());
                }
                w.extend_from_slice(&(fates.len() as u32).to_le_bytes());
                for f in fates {
                    match f {
                        TxFate::Committed { certificate } => {
                            w.push(0);
                            w.extend_from_slice(&certificate.to_le_bytes());
                        }
                        TxFate::Spent { height: None } => w.extend_from_slice(&[1, 0]),
                        TxFate::Spent { height: Some(h) } => {
                            w.extend_from_slice(&[1, 1]);
                            w.extend_from_slice(&h.to_le_bytes());
                        }
                        TxFate::Pending => w.push(2),
                        TxFate::Unknown => w.push(3),
                        TxFate::NotLeader { leader } => {
                            w.push(4);
                            w.extend_from_slice(&leader.unwrap_or(u32::MAX).to_le_bytes());
                        }
                    }
                }
            }
            Message::Cross { shard, message } => match message {
                CrossMessage::ReadRequest { block, keys } => {
                    w.extend_from_slice(&shard.to_le_bytes());
                    w.extend_from_slice(&block.to_le_bytes());
                    put_keys(w, keys);
                }
                CrossMessage::ReadReply { block, from, values } => {
                    w.extend_from_slice(&shard.to_le_bytes());
                    w.extend_from_slice(&block.to_le_bytes());
                    w.extend_from_slice(&from.to_le_bytes());
                    put_entries(w, values);
                }
                CrossMessage::Apply { block, writes } => {
                    w.extend_from_slice(&shard.to_le_bytes());
                    w.extend_from_slice(&block.to_le_bytes());
                    put_entries(w, writes);
                }
                CrossMessage::Applied { block, from, height } => {
                    w.extend_from_slice(&shard.to_le_bytes());
                    w.extend_from_slice(&block.to_le_bytes());
                    w.extend_from_slice(&from.to_le_bytes());
                    w.extend_from_slice(&height.to_le_bytes());
                }
            },
            // `group u32 ‖ rpc u8 ‖ len u32 ‖ body`.
            Message::RaftRequest { group, rpc, body } => {
                w.extend_from_slice(&group.to_le_bytes());
                w.push(*rpc as u8);
                put_bytes(w, body);
            }
            // `group u32 ‖ rpc u8 ‖ (0 ‖ len u32 ‖ body · 1 ‖ len u32 ‖ UTF-8 text)`.
            Message::RaftReply { group, rpc, result } => {
                w.extend_from_slice(&group.to_le_bytes());
                w.push(*rpc as u8);
                match result {
                    Ok(body) => {
                        w.push(0);
                        put_bytes(w, body);
                    }
                    Err(text) => {
                        w.push(1);
                        put_bytes(w, text.as_bytes());
                    }
                }
            }
        }
    }

    /// Decodes a payload of kind `kind` (the header already checked by [`FrameHeader::parse`]).
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Message, WireError> {
        let mut r = Reader { bytes: payload };
        let m = match kind {
            Kind::SUBMIT => {
                let batch = r.u64("batch id")?;
                let txs = RawSignedBlock::decode(r.rest())?;
                if txs.txs.len() > MAX_BATCH_TXS {
                    return Err(WireError::TooMany { what: "transactions in a batch", got: txs.txs.len(), max: MAX_BATCH_TXS });
                }
                Message::Submit { batch, txs }
            }
            Kind::ACCEPTED => Message::Accepted { batch: r.u64("batch id")? },
            Kind::REFUSED => Message::Refused {
                batch: r.u64("batch id")?,
                reason: Refusal::from_u8(r.u8("reason")?)?,
                leader: Some(r.u32("leader")?).filter(|&l| l != u32::MAX),
            },
            Kind::RECEIPTS => {
                let certificate = match r.u8("certificate flag")? {
                    0 => None,
                    1 => Some(Certificate::decode(r.bytes_prefixed("certificate")?)?),
                    _ => return Err(WireError::Invalid("certificate flag")),
                };
                let n = r.count("receipt entries", 13, MAX_ENTRIES)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push(ReceiptEntry {
                        batch: r.u64("receipt")?,
                        index: r.u32("receipt")?,
                        status: TxStatus::from_u8(r.u8("receipt")?)?,
                    });
                }
                Message::Receipts { certificate, entries }
            }
            Kind::PROPOSE => Message::Propose(decode_proposal(&mut r)?),
            Kind::VOTE => Message::Vote(SignedVote::decode(r.rest())?),
            Kind::COMMIT => Message::Commit(Certificate::decode(r.rest())?),
            Kind::STATUS_REQUEST => Message::StatusRequest,
            Kind::STATUS => {
                let n = r.count("replica statuses", REPLICA_STATUS_LEN, 4096)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(ReplicaStatus {
                        shard: r.u32("status")?,
                        replica: r.u32("status")?,
                        height: r.u64("status")?,
                        root: r.array("status")?,
                        pending: r.u64("status")?,
                        role: RaftRole::from_u8(r.u8("status")?)?,
                        term: r.u64("status")?,
                        leader: Some(r.u32("status")?).filter(|&l| l != u32::MAX),
                        log_index: r.u64("status")?,
                        applied_index: r.u64("status")?,
                        certified: r.u64("status")?,
                    });
                }
                Message::Status(v)
            }
            Kind::CROSS_READ_REQUEST..=Kind::CROSS_APPLIED => {
                let shard = r.u32("shard")?;
                let block = r.u64("block")?;
                let message = match kind {
                    Kind::CROSS_READ_REQUEST => CrossMessage::ReadRequest { block, keys: r.keys()? },
                    Kind::CROSS_READ_REPLY => CrossMessage::ReadReply { block, from: r.u32("shard")?, values: r.entries()? },
                    Kind::CROSS_APPLY => CrossMessage::Apply { block, writes: r.entries()? },
                    _ => CrossMessage::Applied { block, from: r.u32("shard")?, height: r.u64("height")? },
                };
                Message::Cross { shard, message }
            }
            Kind::READ => {
                let id = r.u64("request id")?;
                let keys = r.keys()?;
                if keys.len() > MAX_READ_KEYS {
                    return Err(WireError::TooMany { what: "keys in a read", got: keys.len(), max: MAX_READ_KEYS });
                }
                Message::Read { id, keys }
            }
            Kind::VALUES => Message::Values { id: r.u64("request id")?, values: r.entries()? },
            Kind::SYNC => Message::Sync { shard: r.u32("shard")?, from: r.u64("height")? },
            Kind::TX_QUERY => {
                let id = r.u64("request id")?;
                let n = r.count("transactions in a status read", 12, MAX_TX_QUERY)?;
                let mut txs = Vec::with_capacity(n);
                for _ in 0..n {
                    txs.push((r.u32("signer")?, r.u64("nonce")?));
                }
                Message::TxQuery { id, txs }
            }
            Kind::TX_FATES => {
                let id = r.u64("request id")?;
                let n = r.count("certificates in fates", 4, MAX_TX_QUERY)?;
                let mut certificates = Vec::with_capacity(n);
                for _ in 0..n {
                    certificates.push(Certificate::decode(r.bytes_prefixed("certificate")?)?);
                }
                let n = r.count("fates", 1, MAX_TX_QUERY)?;
                let mut fates = Vec::with_capacity(n);
                for _ in 0..n {
                    fates.push(match r.u8("fate")? {
                        0 => {
                            let certificate = r.u32("fate certificate")?;
                            if certificate as usize >= certificates.len() {
                                return Err(WireError::Invalid("fate certificate number"));
                            }
                            TxFate::Committed { certificate }
                        }
                        1 => match r.u8("fate height flag")? {
                            0 => TxFate::Spent { height: None },
                            1 => TxFate::Spent { height: Some(r.u64("fate height")?) },
                            _ => return Err(WireError::Invalid("fate height flag")),
                        },
                        2 => TxFate::Pending,
                        3 => TxFate::Unknown,
                        4 => TxFate::NotLeader { leader: Some(r.u32("fate leader")?).filter(|&l| l != u32::MAX) },
                        _ => return Err(WireError::Invalid("fate")),
                    });
                }
                Message::TxFates { id, certificates, fates }
            }
            Kind::RAFT_REQUEST => {
                let group = r.u32("raft group")?;
                let rpc = RaftRpcKind::from_u8(r.u8("raft rpc kind")?)?;
                Message::RaftRequest { group, rpc, body: r.bytes_prefixed("raft request body")?.to_vec() }
            }
            Kind::RAFT_REPLY => {
                let group = r.u32("raft group")?;
                let rpc = RaftRpcKind::from_u8(r.u8("raft rpc kind")?)?;
                let result = match r.u8("raft result flag")? {
                    0 => Ok(r.bytes_prefixed("raft reply body")?.to_vec()),
                    1 => {
                        let n = r.u32("raft error text")? as usize;
                        if n > MAX_RAFT_ERROR_LEN {
                            return Err(WireError::TooMany { what: "raft error text bytes", got: n, max: MAX_RAFT_ERROR_LEN });
                        }
                        let text = std::str::from_utf8(r.take(n, "raft error text")?)
                            .map_err(|_| WireError::Invalid("raft error text (not UTF-8)"))?;
                        Err(text.to_owned())
                    }
                    _ => return Err(WireError::Invalid("raft result flag")),
                };
                Message::RaftReply { group, rpc, result }
            }
            other => return Err(WireError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(m)
    }

    /// Decodes one whole frame (header and payload), as a convenience for tests and fuzzing.
    pub fn decode_frame(frame: &[u8], max_len: usize) -> Result<Message, WireError> {
        let header: &[u8; HEADER_LEN] = frame.get(..HEADER_LEN).and_then(|h| h.try_into().ok()).ok_or(WireError::Truncated("header"))?;
        let h = FrameHeader::parse(header, max_len)?;
        let payload = &frame[HEADER_LEN..];
        if payload.len() < h.len {
            return Err(WireError::Truncated("payload"));
        }
        if payload.len() > h.len {
            return Err(WireError::Trailing(payload.len() - h.len));
        }
        Message::decode(h.kind, payload)
    }
}

/// The frame of a [`Message::RaftRequest`] whose body `body` writes in place: the same bytes
/// as `Message::RaftRequest { group, rpc, body }.encode()`, without building the message first
/// (a body can be megabytes). Fails only if the payload would exceed [`MAX_FRAME_LEN`].
pub fn encode_raft_request(group: u32, rpc: RaftRpcKind, body: impl FnOnce(&mut Vec<u8>)) -> Result<Vec<u8>, WireError> {
    let mut out = vec![WIRE_VERSION, Kind::RAFT_REQUEST, 0, 0, 0, 0];
    out.extend_from_slice(&group.to_le_bytes());
    out.push(rpc as u8);
    out.extend_from_slice(&[0; 4]);
    let body_at = out.len();
    body(&mut out);
    let len = out.len() - HEADER_LEN;
    if len > MAX_FRAME_LEN {
        return Err(WireError::Oversized { len, max: MAX_FRAME_LEN });
    }
    // Both fit: the payload is at most MAX_FRAME_LEN (8 MiB).
    out[2..HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    let body_len = (out.len() - body_at) as u32;
    out[body_at - 4..body_at].copy_from_slice(&body_len.to_le_bytes());
    Ok(out)
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    w.extend_from_slice(&(b.len() as u32).to_le_bytes());
    w.extend_from_slice(b);
}

fn put_keys(w: &mut Vec<u8>, keys: &[Key]) {
    w.extend_from_slice(&(keys.len() as u32).to_le_bytes());
    for k in keys {
        w.extend_from_slice(&k.0);
    }
}

fn put_entries(w: &mut Vec<u8>, entries: &[(Key, Option<Value>)]) {
    w.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (k, v) in entries {
        w.extend_from_slice(&k.0);
        match v {
            Some(v) => {
                w.push(1);
                put_bytes(w, v.as_bytes());
            }
            None => w.push(0),
        }
    }
}

/// `entries` in the wire's encoding (a count, then each key, a present flag and a
/// length-prefixed value), as frames carry them.
pub(crate) fn encode_entries(entries: &[(Key, Option<Value>)]) -> Vec<u8> {
    let mut w = Vec::with_capacity(4 + entries.len() * 48);
    put_entries(&mut w, entries);
    w
}

/// Decodes what [`encode_entries`] wrote, bounded as a frame is; trailing bytes are an error.
pub(crate) fn decode_entries(bytes: &[u8]) -> Result<Entries, WireError> {
    let mut r = Reader { bytes };
    let entries = r.entries()?;
    if !r.bytes.is_empty() {
        return Err(WireError::Invalid("bytes after the entries"));
    }
    Ok(entries)
}

fn encode_proposal(p: &Proposal, w: &mut Vec<u8>) {
    w.extend_from_slice(&p.shard.to_le_bytes());
    w.extend_from_slice(&p.height.to_le_bytes());
    w.extend_from_slice(&p.parent);
    match &p.cross {
        None => w.push(0),
        Some(CrossStep::Prepare { round, keys }) => {
            w.push(1);
            w.extend_from_slice(&round.to_le_bytes());
            put_keys(w, keys);
        }
        Some(CrossStep::Apply { round, writes }) => {
            w.push(2);
            w.extend_from_slice(&round.to_le_bytes());
            put_entries(w, writes);
        }
        Some(CrossStep::Start { participants }) => {
            w.push(3);
            w.extend_from_slice(&(participants.len() as u32).to_le_bytes());
            for s in participants {
                w.extend_from_slice(&s.to_le_bytes());
            }
        }
        Some(CrossStep::Decide { round, aborted, writes }) => {
            w.push(4);
            w.extend_from_slice(&round.to_le_bytes());
            w.push(u8::from(*aborted));
            w.extend_from_slice(&(writes.len() as u32).to_le_bytes());
            for (s, e) in writes {
                w.extend_from_slice(&s.to_le_bytes());
                put_entries(w, e);
            }
        }
    }
    match &p.block {
        Some(b) => {
            w.push(1);
            w.extend_from_slice(&b.encode());
        }
        None => w.push(0),
    }
}

fn decode_proposal(r: &mut Reader<'_>) -> Result<Proposal, WireError> {
    let shard = r.u32("shard")?;
    let height = r.u64("height")?;
    let parent = r.array("parent hash")?;
    let cross = match r.u8("cross step")? {
        0 => None,
        1 => Some(CrossStep::Prepare { round: r.u64("round")?, keys: r.keys()? }),
        2 => Some(CrossStep::Apply { round: r.u64("round")?, writes: r.entries()? }),
        3 => {
            let n = r.count("participants", 4, MAX_PARTICIPANTS)?;
            let participants = (0..n).map(|_| r.u32("participant")).collect::<Result<_, _>>()?;
            Some(CrossStep::Start { participants })
        }
        4 => {
            let round = r.u64("round")?;
            let aborted = match r.u8("aborted flag")? {
                0 => false,
                1 => true,
                _ => return Err(WireError::Invalid("aborted flag")),
            };
            let n = r.count("participants", 8, MAX_PARTICIPANTS)?;
            let mut writes = Vec::with_capacity(n);
            for _ in 0..n {
                writes.push((r.u32("participant")?, r.entries()?));
            }
            Some(CrossStep::Decide { round, aborted, writes })
        }
        _ => return Err(WireError::Invalid("cross step")),
    };
    let block = match r.u8("block flag")? {
        0 => None,
        1 => Some(AggregatedBlock::decode(r.rest())?),
        _ => return Err(WireError::Invalid("block flag")),
    };
    Ok(Proposal { shard, height, parent, cross, block })
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.bytes.len() < n {
            return Err(WireError::Truncated(what));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        Ok(self.take(N, what)?.try_into().expect("took N bytes"))
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    /// A u32 count, refused above `max` or above what the remaining bytes can hold at
    /// `min_each` bytes per item (so no allocation exceeds the frame).
    fn count(&mut self, what: &'static str, min_each: usize, max: usize) -> Result<usize, WireError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(WireError::TooMany { what, got: n, max });
        }
        if n.saturating_mul(min_each) > self.bytes.len() {
            return Err(WireError::Truncated(what));
        }
        Ok(n)
    }
    fn bytes_prefixed(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
    fn keys(&mut self) -> Result<Vec<Key>, WireError> {
        let n = self.count("keys", KEY_LEN, MAX_ENTRIES)?;
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            keys.push(Key(self.array("key")?));
        }
        Ok(keys)
    }

    fn entries(&mut self) -> Result<Entries, WireError> {
        let n = self.count("entries", KEY_LEN + 1, MAX_ENTRIES)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let key = Key(self.array("entry key")?);
            let value = match self.u8("entry flag")? {
                0 => None,
                1 => {
                    let b = self.bytes_prefixed("entry value")?;
                    if b.len() > MAX_VALUE_LEN {
                        return Err(WireError::TooMany { what: "value bytes", got: b.len(), max: MAX_VALUE_LEN });
                    }
                    Some(Value::from_slice(b))
                }
                _ => return Err(WireError::Invalid("entry flag")),
            };
            out.push((key, value));
        }
        Ok(out)
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
    fn finish(&self) -> Result<(), WireError> {
        match self.bytes.len() {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests;
