//! A compact, bounded binary codec for the openraft values that cross the wire or reach the
//! disk: log ids, votes, memberships, log entries, the three RPCs and their responses,
//! snapshot metadata, and the state machine's own records and snapshots.
//!
//! Every top-level encoding ([`RaftCodec::encode`]) is `RAFT_CODEC_VERSION (u8) ‖ fields`,
//! integers little-endian as in [`crate::wire`]. Decoding ([`RaftCodec::decode`]):
//!
//! - refuses another version, a truncated field, an unknown tag, an invalid flag, and bytes
//!   left over after the value, each with a [`CodecError`] that names the field;
//! - checks every count against its limit *and* against the bytes still there (at the
//!   smallest encoding of one item) before allocating, so it never allocates more than the
//!   input can hold, and never panics;
//! - accepts only the canonical encoding (sets strictly ascending, learners not voters,
//!   flags 0 or 1), so `encode(decode(b)) == b` for every `b` that decodes.
//!
//! The layouts (after the version byte of the top-level value):
//!
//! | value | layout |
//! | --- | --- |
//! | `LogId` | `term u64 ‖ node u64 ‖ index u64` |
//! | `Option<T>` | `0` or `1 ‖ T` |
//! | `Vote` | `term u64 ‖ node u64 ‖ committed u8` |
//! | `Membership` | `configs u8 ‖ (n u32 ‖ ids u64…)… ‖ learners u32 ‖ ids u64…` |
//! | `StoredMembership` | `Option<LogId> ‖ Membership` |
//! | `Entry` | `LogId ‖ tag u8 ‖ (0: blank · 1: len u32 ‖ block · 2: Membership)` |
//! | `AppendEntriesRequest` | `Vote ‖ prev Option<LogId> ‖ commit Option<LogId> ‖ n u32 ‖ Entry…` |
//! | `AppendEntriesResponse` | `tag u8 ‖ (1: Option<LogId> · 3: Vote)` |
//! | `VoteRequest` | `Vote ‖ Option<LogId>` |
//! | `VoteResponse` | `Vote ‖ granted u8 ‖ Option<LogId>` |
//! | `SnapshotMeta` | `Option<LogId> ‖ StoredMembership ‖ id len u16 ‖ UTF-8` |
//! | `InstallSnapshotRequest` | `Vote ‖ SnapshotMeta ‖ offset u64 ‖ len u32 ‖ data ‖ done u8` |
//! | `InstallSnapshotResponse` | `Vote` |
//! | [`AppliedState`] | `Option<LogId> ‖ StoredMembership` |
//! | [`StateSnapshot`] | `AppliedState ‖ AppliedPoint ‖ n u64 ‖ (key 32 B ‖ len u32 ‖ value)…` |

use std::collections::BTreeSet;

use occam_engine::key::{Key, KEY_LEN};
use occam_engine::prelude::{StateRoot, Value};
use occam_store::AppliedPoint;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{CommittedLeaderId, EntryPayload, LeaderId};

use super::{Entry, LogId, Membership, NodeId, RaftRequest, SnapshotMeta, StoredMembership, TypeConfig, Vote};

/// The version of this codec, the first byte of every top-level encoding.
pub const RAFT_CODEC_VERSION: u8 = 1;

/// The largest block a normal entry may carry: the largest frame a node accepts.
pub const MAX_PAYLOAD_BYTES: usize = crate::wire::MAX_FRAME_LEN;

/// The most entries in one AppendEntries request (openraft's `max_payload_entries` must not
/// exceed it; its default is 300).
pub const MAX_APPEND_ENTRIES: usize = 4096;

/// The most configs in a membership: one, or two during a joint change (openraft allows
/// more; a few spare).
pub const MAX_JOINT_CONFIGS: usize = 4;

/// The most node ids in one voter config, and the most learners.
pub const MAX_GROUP_NODES: usize = 1024;

/// The longest snapshot id, in bytes.
pub const MAX_SNAPSHOT_ID_LEN: usize = 256;

/// The largest snapshot chunk in one InstallSnapshot request (openraft's
/// `snapshot_max_chunk_size` must not exceed it; its default is 3 MiB).
pub const MAX_SNAPSHOT_CHUNK: usize = crate::wire::MAX_FRAME_LEN;

/// The largest state value in a snapshot.
pub const MAX_STATE_VALUE_LEN: usize = crate::wire::MAX_VALUE_LEN;

const LOG_ID_LEN: usize = 24;
const ENTRY_MIN_LEN: usize = LOG_ID_LEN + 1;

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The first byte is not [`RAFT_CODEC_VERSION`].
    #[error("raft codec version {0}, this node speaks version {RAFT_CODEC_VERSION}")]
    Version(u8),
    /// The input ended inside the named field.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// Bytes left over after a complete value.
    #[error("{extra} bytes after the end of the {what}")]
    Trailing {
        /// The value that was decoded.
        what: &'static str,
        /// Bytes left over.
        extra: usize,
    },
    /// A count or length above its limit.
    #[error("{what}: {got}, the limit is {max}")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// The count.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// A field that holds no valid value (an unknown tag, a flag other than 0 or 1, a set
    /// out of order, text that is not UTF-8).
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// A value with an Occam encoding: `encode` writes the version byte and the fields;
/// `decode` reads exactly one value and refuses anything else (see the module docs).
pub trait RaftCodec: sealed::Fields {
    /// Appends the encoding (version byte first) to `out`.
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(RAFT_CODEC_VERSION);
        self.put(out);
    }

    /// The encoding, version byte first.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Decodes one value from all of `bytes`.
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = sealed::Reader { bytes };
        let version = r.u8("version")?;
        if version != RAFT_CODEC_VERSION {
            return Err(CodecError::Version(version));
        }
        let value = Self::get(&mut r)?;
        match r.bytes.len() {
            0 => Ok(value),
            extra => Err(CodecError::Trailing { what: Self::WHAT, extra }),
        }
    }
}

impl<T: sealed::Fields> RaftCodec for T {}

/// The state machine's Raft record: the last applied log id and the last applied membership.
/// Written in the same batch as the state it describes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedState {
    /// The last applied log id (`None` before the first entry).
    pub last_applied: Option<LogId>,
    /// The last membership applied.
    pub membership: StoredMembership,
}

/// The bytes of a snapshot: the Raft state it covers, the group's applied point, and every
/// state entry, keys strictly ascending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateSnapshot {
    /// The last applied log id and membership the snapshot covers.
    pub applied: AppliedState,
    /// The applied point (height, log index, block hash, root) of the state.
    pub point: AppliedPoint,
    /// The state, keys strictly ascending.
    pub entries: Vec<(Key, Value)>,
}

/// Writes a [`StateSnapshot`] encoding entry by entry, straight from a scan of the store,
/// without collecting the state first.
#[derive(Debug)]
pub struct StateSnapshotWriter {
    buf: Vec<u8>,
    count_at: usize,
    count: u64,
    last: Option<Key>,
}

impl StateSnapshotWriter {
    /// Starts a snapshot of the state at `point`, covering `applied`.
    pub fn new(applied: &AppliedState, point: &AppliedPoint) -> Self {
        use sealed::Fields;
        let mut buf = vec![RAFT_CODEC_VERSION];
        applied.put(&mut buf);
        put_point(&mut buf, point);
        let count_at = buf.len();
        put_u64(&mut buf, 0);
        StateSnapshotWriter { buf, count_at, count: 0, last: None }
    }

    /// Appends one state entry; keys must come strictly ascending, values at most
    /// [`MAX_STATE_VALUE_LEN`] bytes (refused otherwise, and nothing is appended).
    pub fn push(&mut self, key: &Key, value: &Value) -> Result<(), CodecError> {
        if self.last.is_some_and(|l| l >= *key) {
            return Err(CodecError::Invalid("snapshot entries (keys not strictly ascending)"));
        }
        if value.len() > MAX_STATE_VALUE_LEN {
            return Err(CodecError::TooMany { what: "state value bytes", got: value.len(), max: MAX_STATE_VALUE_LEN });
        }
        self.last = Some(*key);
        self.buf.extend_from_slice(&key.0);
        put_bytes(&mut self.buf, value.as_bytes());
        self.count += 1;
        Ok(())
    }

    /// Entries pushed so far.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True before the first entry.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoding.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[self.count_at..self.count_at + 8].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }
}

fn put_point(w: &mut Vec<u8>, p: &AppliedPoint) {
    w.extend_from_slice(&p.height.to_le_bytes());
    w.extend_from_slice(&p.log_index.to_le_bytes());
    w.extend_from_slice(&p.block_hash);
    w.extend_from_slice(&p.root.0);
}

fn put_u64(w: &mut Vec<u8>, v: u64) {
    w.extend_from_slice(&v.to_le_bytes());
}

fn put_bool(w: &mut Vec<u8>, v: bool) {
    w.push(v as u8);
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).expect("encoded byte strings are bounded far below 4 GiB");
    w.extend_from_slice(&len.to_le_bytes());
    w.extend_from_slice(b);
}

fn put_ids(w: &mut Vec<u8>, ids: impl ExactSizeIterator<Item = NodeId>) {
    w.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        put_u64(w, id);
    }
}

mod sealed {
    use super::*;

    /// The fields of an encodable value, without the version byte. Sealed: only this module
    /// implements it, so [`RaftCodec`] covers exactly the types listed in the module docs.
    pub trait Fields: Sized {
        /// The value's name, for errors.
        const WHAT: &'static str;
        /// Appends the fields.
        fn put(&self, w: &mut Vec<u8>);
        /// Reads the fields.
        fn get(r: &mut Reader<'_>) -> Result<Self, CodecError>;
    }

    /// Reads fields from the front of a byte slice; every read is bounds-checked.
    pub struct Reader<'a> {
        pub(super) bytes: &'a [u8],
    }

    impl<'a> Reader<'a> {
        pub(super) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
            if self.bytes.len() < n {
                return Err(CodecError::Truncated(what));
            }
            let (head, tail) = self.bytes.split_at(n);
            self.bytes = tail;
            Ok(head)
        }
        pub(super) fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CodecError> {
            let b = self.take(N, what)?;
            let mut a = [0u8; N];
            a.copy_from_slice(b);
            Ok(a)
        }
        pub(super) fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
            Ok(self.take(1, what)?[0])
        }
        pub(super) fn u16(&mut self, what: &'static str) -> Result<u16, CodecError> {
            Ok(u16::from_le_bytes(self.array(what)?))
        }
        pub(super) fn u32(&mut self, what: &'static str) -> Result<u32, CodecError> {
            Ok(u32::from_le_bytes(self.array(what)?))
        }
        pub(super) fn u64(&mut self, what: &'static str) -> Result<u64, CodecError> {
            Ok(u64::from_le_bytes(self.array(what)?))
        }
        pub(super) fn bool(&mut self, what: &'static str) -> Result<bool, CodecError> {
            match self.u8(what)? {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(CodecError::Invalid(what)),
            }
        }
        /// A count already read, refused above `max` or above what the remaining bytes can
        /// hold at `min_each` bytes per item, so no allocation outgrows the input.
        pub(super) fn check_count(&self, n: u64, what: &'static str, min_each: usize, max: usize) -> Result<usize, CodecError> {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if n > max {
                return Err(CodecError::TooMany { what, got: n, max });
            }
            if n.saturating_mul(min_each) > self.bytes.len() {
                return Err(CodecError::Truncated(what));
            }
            Ok(n)
        }
        pub(super) fn count(&mut self, what: &'static str, min_each: usize, max: usize) -> Result<usize, CodecError> {
            let n = self.u32(what)?;
            self.check_count(u64::from(n), what, min_each, max)
        }
        /// A `u32`-length-prefixed byte string of at most `max` bytes.
        pub(super) fn bytes(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], CodecError> {
            let n = self.count(what, 1, max)?;
            self.take(n, what)
        }
        /// A set of node ids, strictly ascending.
        pub(super) fn ids(&mut self, what: &'static str) -> Result<BTreeSet<NodeId>, CodecError> {
            let n = self.count(what, 8, MAX_GROUP_NODES)?;
            let mut set = BTreeSet::new();
            let mut last = None;
            for _ in 0..n {
                let id = self.u64(what)?;
                if last.is_some_and(|l| l >= id) {
                    return Err(CodecError::Invalid(what));
                }
                last = Some(id);
                set.insert(id);
            }
            Ok(set)
        }
    }

    impl Fields for LogId {
        const WHAT: &'static str = "log id";
        fn put(&self, w: &mut Vec<u8>) {
            put_u64(w, self.leader_id.term);
            put_u64(w, self.leader_id.node_id);
            put_u64(w, self.index);
        }
        fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
            let term = r.u64("log id term")?;
            let node_id = r.u64("log id node")?;
            let index = r.u64("log id index")?;
            Ok(LogId { leader_id: CommittedLeaderId::new(term, node_id), index })
        }
    }

    impl<T: Fields> Fields for Option<T> {
        const WHAT: &'static str = T::WHAT;
        fn put(&self, w: &mut Vec<u8>) {
            match self {
                None => w.push(0),
                Some(v) => {
                    w.push(1);
                    v.put(w);
                }
            }
        }
        fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
            match r.bool("option flag")? {
                false => Ok(None),
                true => T::get(r).map(Some),
            }
        }
    }

    impl Fields for Vote {
        const WHAT: &'static str = "vote";
        fn put(&self, w: &mut Vec<u8>) {
            put_u64(w, self.leader_id.term);
            put_u64(w, self.leader_id.node_id);
            put_bool(w, self.committed);
        }
        fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
            let term = r.u64("vote term")?;
            let node_id = r.u64("vote node")?;
            let committed = r.bool("vote committed flag")?;
            Ok(Vote { leader_id: LeaderId::new(term, node_id), committed })
        }
    }

    // Learners are encoded, not the node map: with `EmptyNode` a node carries nothing, and
    // `Membership::new` gives every voter its (empty) node, so the round trip is exact.
    impl Fields for Membership {
        const WHAT: &'static str = "membership";
        fn put(&self, w: &mut Vec<u8>) {
            let configs = self.get_joint_config();
            assert!(configs.len() <= MAX_JOINT_CONFIGS, "a membership of {} configs", configs.len());
            w.push(configs.len() as u8);
            for c in configs {
                assert!(c.len() <= MAX_GROUP_NODES, "a config of {} voters", c.len());
                put_ids(w, c.iter().copied());
            }
            let learners: Vec<NodeId> = self.learner_ids().collect();
            assert!(learners.len() <= MAX_GROUP_NODES, "{} learners", learners.len());
            put_ids(w, learners.into_iter());
        }
        fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
            let n = r.u8("membership configs")? as usize;
            let n = r.check_count(n as u64, "membership configs", 4, MAX_JOINT_CONFIGS)?;
            let mut configs = Vec::with_capacity(n);
            for _ in 0..n {
                configs.push(r.ids("membership voters")?);
            }
            let learners = r.ids("membership learners")?;
            if learners.iter().any(|l| configs.iter().any(|c| c.contains(l))) {
                return Err(CodecError::Invalid("membership: a learner that is also a voter"));
            }
            Ok(Membership::new(configs, learners))
        }
    }

    impl Fields for StoredMembership {
        const WHAT: &'static str = "stored membership";
        fn put(&self, w: &mut Vec<u8>) {
            self.log_id().put(w);
            self.membership().put(w);
        }
        fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
            let log_id = Option::<LogId>::get(r)?;
            let membership = Membership::get(r)?;
            Ok(StoredMembership::new(log_id, membership))
        }
    }

    impl Fields for Entry {
        const WHAT: &'static str = "log entry";
        fn put(&self, w: &mut Vec<u8>) {
            self.log_id.put(w);
            match &self.payload {
                EntryPayload::Blank => w.push(0),
                EntryPayload::Normal(req) => {
                    assert!(req.bytes.len() <= MAX_PAYLOAD_BYTES, "a block of {} bytes", req.bytes.len());
                    w.push(1);
                    put_bytes(w, &req.bytes);
                }
                EntryPayload::Membership(m) => {
                    w.push(2);
                    m.put(w);
                }
            }
        }
        fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
            let log_id = LogId::get(r)?;
            let payload = match r.u8("entry payload tag")? {
                0 => EntryPayload::Blank,
                1 => EntryPayload::Normal(RaftRequest { bytes: r.bytes("entry block", MAX_PAYLOAD_BYTES)?.to_vec() }),
                2 => EntryPayload::Membership(Membership::get(r)?),
                _ => return Err(CodecError::Invalid("entry payload tag")),
            };
            Ok(Entry { log_id, payload })
        }
    }

    impl Fields for AppendEntriesRequest<TypeConfig> {
        const WHAT: &'static str = "append-entries request";
        fn put(&self, w: &mut Vec<u8>) {
            assert!(self.entries.len() <= MAX_APPEND_ENTRIES, "{} entries in one append", self.entries.len());
            self.vote.put(w);
            self.prev_log_id.put(w);
            self.leader_commit.put(w);
            w.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
            for e in &self.entries {
                e.put(w);
            }
        }
        fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
            let vote = Vote::get(r)?;
            let prev_log_id = Option::<LogId>::get(r)?;
            let leader_commit = Option::<LogId>::get(r)?;
            let n = r.count("append entries", ENTRY_MIN_LEN, MAX_APPEND_ENTRIES)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                entries.push(Entry::get(r)?);
            }
            Ok(AppendEntriesRequest { vote, prev_log_id, entries, leader_commit })
        }
    }

    impl Fields for AppendEntriesResponse<NodeId> {
        const WHAT: &'static str = "append-entries response";
        fn put(&self, w: &mut Vec<u8>) {
            match self {
                AppendEntriesResponse::Success => w.push(0),
                AppendEntriesResponse::PartialSuccess(matching) => {
                    w.push(1);
                    matching.put(w);
                }
                AppendEntriesResponse::Conflict => w.push(2),
                AppendEntriesResponse::HigherVote(v) => {
                    w.push(3);
                    v.put(w);
                }
            }
        }
        fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
            Ok(match r.u8("append-entries response tag")? {
                0 => AppendEntriesResponse::Success,
                1 => AppendEntriesResponse::PartialSuccess(Option::<LogId>::get(r)?),
                2 => AppendEntriesResponse::Conflict,
                3 => AppendEntriesResponse::HigherVote(Vote::get(r)?),
                _ => return Err(CodecError::Invalid("append-entries response tag")),
            })
        }
    }

    impl Fields for VoteRequest<NodeId> {
        const WHAT: &'static str = "vote request";
        fn put(&self, w: &mut Vec<u8>) {
            self.vote.put(w);
            self.last_log_id.put(w);
        }
        fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
            Ok(VoteRequest { vote: Vote::get(r)?, last_log_id: Option::<LogId>::get(r)? })
        }
    }

    impl Fields for VoteResponse<NodeId> {
        const WHAT: &'static str = "vote response";
        fn put(&self, w: &mut Vec<u8>) {
            self.vote.put(w);
            put_bool(w, self.vote_granted);
            self.last_log_id.put(w);
        }
        fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
            Ok(VoteResponse { vote: Vote::get(r)?, vote_granted: r.bool("vote granted flag")?, last_log_id: Option::<LogId>::get(r)? })
        }
    }

    impl Fields for SnapshotMeta {
        const WHAT: &'static str = "snapshot meta";
        fn put(&self, w: &mut Vec<u8>) {
            assert!(self.snapshot_id.len() <= MAX_SNAPSHOT_ID_LEN, "a snapshot id of {} bytes", self.snapshot_id.len());
            self.last_log_id.put(w);
            self.last_membership.put(w);
            w.extend_from_slice(&(self.snapshot_id.len() as u16).to_le_bytes());
            w.extend_from_slice(self.snapshot_id.as_bytes());
        }
        fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
            let last_log_id = Option::<LogId>::get(r)?;
            let last_membership = StoredMembership::get(r)?;
            let n = r.u16("snapshot id")?;
            let n = r.check_count(u64::from(n), "snapshot id", 1, MAX_SNAPSHOT_ID_LEN)?;
            let id = std::str::from_utf8(r.take(n, "snapshot id")?).map_err(|_| CodecError::Invalid("snapshot id (not UTF-8)"))?;
            Ok(SnapshotMeta { last_log_id, last_membership, snapshot_id: id.to_owned() })
        }
    }

    impl Fields for InstallSnapshotRequest<TypeConfig> {
        const WHAT: &'static str = "install-snapshot request";
        fn put(&self, w: &mut Vec<u8>) {
            assert!(self.data.len() <= MAX_SNAPSHOT_CHUNK, "a snapshot chunk of {} bytes", self.data.len());
            self.vote.put(w);
            self.meta.put(w);
            put_u64(w, self.offset);
            put_bytes(w, &self.data);
            put_bool(w, self.done);
        }
        fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
            let vote = Vote::get(r)?;
            let meta = SnapshotMeta::get(r)?;
            let offset = r.u64("snapshot offset")?;
            let data = r.bytes("snapshot chunk", MAX_SNAPSHOT_CHUNK)?.to_vec();
            let done = r.bool("snapshot done flag")?;
            Ok(InstallSnapshotRequest { vote, meta, offset, data, done })
        }
    }

    impl Fields for InstallSnapshotResponse<NodeId> {
        const WHAT: &'static str = "install-snapshot response";
        fn put(&self, w: &mut Vec<u8>) {
            self.vote.put(w);
        }
        fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
            Ok(InstallSnapshotResponse { vote: Vote::get(r)? })
        }
    }

    impl Fields for AppliedState {
        const WHAT: &'static str = "applied state";
        fn put(&self, w: &mut Vec<u8>) {
            self.last_applied.put(w);
            self.membership.put(w);
        }
        fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
            Ok(AppliedState { last_applied: Option::<LogId>::get(r)?, membership: StoredMembership::get(r)? })
        }
    }

    impl Fields for StateSnapshot {
        const WHAT: &'static str = "state snapshot";
        fn put(&self, w: &mut Vec<u8>) {
            let mut sw = StateSnapshotWriter::new(&self.applied, &self.point);
            for (k, v) in &self.entries {
                sw.push(k, v).expect("a StateSnapshot's entries are ascending, with bounded values");
            }
            // The writer starts with the version byte, which `encode_into` has written.
            w.extend_from_slice(&sw.finish()[1..]);
        }
        fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
            let applied = AppliedState::get(r)?;
            let point = AppliedPoint {
                height: r.u64("applied height")?,
                log_index: r.u64("applied log index")?,
                block_hash: r.array("applied block hash")?,
                root: StateRoot(r.array("applied root")?),
            };
            let n = r.u64("snapshot entries")?;
            let n = r.check_count(n, "snapshot entries", KEY_LEN + 4, usize::MAX)?;
            let mut entries: Vec<(Key, Value)> = Vec::with_capacity(n);
            for _ in 0..n {
                let key = Key(r.array("state key")?);
                if entries.last().is_some_and(|(last, _)| *last >= key) {
                    return Err(CodecError::Invalid("snapshot entries (keys not strictly ascending)"));
                }
                let value = r.bytes("state value", MAX_STATE_VALUE_LEN)?;
                entries.push((key, Value::from_slice(value)));
            }
            Ok(StateSnapshot { applied, point, entries })
        }
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
