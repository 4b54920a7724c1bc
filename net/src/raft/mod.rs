//! Raft for Occam's shards: openraft's type configuration, a bounded codec for everything Raft
//! puts on the wire or in the log, and openraft's storage traits over [`occam_store::Store`].
//!
//! Each shard replica is one Raft group ([`occam_store::GroupId`]) of a node's one store. The
//! glue has four parts, each testable alone:
//!
//! - [`codec`]: versioned, bounded binary encodings of log ids, votes, memberships, entries,
//!   the RPCs and snapshots (decoding never panics and never allocates past the input).
//! - [`log_store::LogStore`]: the Raft log, vote, committed and purged log ids of one group
//!   (openraft's `RaftLogStorage`).
//! - [`state_machine::StateMachine`]: applies committed entries through a pluggable
//!   [`state_machine::BlockApplier`], persisting each block's state changes, applied point and
//!   Raft applied state in one write batch (openraft's `RaftStateMachine`), and builds and
//!   installs snapshots whose root the store checks before it replaces any state.
//! - [`network`]: Raft's RPCs between nodes, one bidirectional QUIC stream each on the
//!   nodes' pinned mutual-TLS connections (openraft's `RaftNetworkFactory` per group, over
//!   connections shared by every group), and the server side that checks who may send what.
//!
//! Raft orders; the applier verifies, executes and (later) votes; BLS certifies.

use std::fmt;

use occam_engine::prelude::StateRoot;

pub mod codec;
pub mod log_store;
pub mod network;
pub mod state_machine;

#[cfg(test)]
mod tests;

/// A node's id in every Raft group: the node id of `cluster.toml`.
pub type NodeId = u64;

/// A Raft log entry of Occam's groups.
pub type Entry = openraft::Entry<TypeConfig>;
/// What an entry carries: blank (a new leader's first entry), a block, or a membership.
pub type EntryPayload = openraft::EntryPayload<TypeConfig>;
/// The position of an entry: the leader (term, node) that proposed it and its index.
pub type LogId = openraft::LogId<NodeId>;
/// A vote: the term, the candidate or leader it is for, and whether a quorum granted it.
pub type Vote = openraft::Vote<NodeId>;
/// A group's voters (one config, or two during a joint change) and learners.
pub type Membership = openraft::Membership<NodeId, openraft::EmptyNode>;
/// A membership with the id of the log entry that introduced it.
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::EmptyNode>;
/// What a snapshot covers: its last log id, its membership and its id.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::EmptyNode>;
/// A built snapshot: its metadata and its bytes.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// The AppendEntries RPC (replication and heartbeats).
pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
/// The answer to [`AppendEntriesRequest`].
pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
/// The RequestVote RPC.
pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
/// The answer to [`VoteRequest`].
pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
/// One chunk of a snapshot sent to a lagging replica.
pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
/// The answer to [`InstallSnapshotRequest`].
pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
/// openraft's storage error, as every storage method returns it.
pub type StorageError = openraft::StorageError<NodeId>;

openraft::declare_raft_types!(
    /// Occam's Raft type configuration: node ids are `u64` (addresses come from
    /// `cluster.toml`, so a membership carries none), an entry's payload is an opaque encoded
    /// block ([`RaftRequest`]), applying it answers a [`RaftResponse`], snapshots travel as
    /// bytes in memory, and the runtime is tokio.
    pub TypeConfig:
        D = RaftRequest,
        R = RaftResponse,
        NodeId = NodeId,
        Node = openraft::EmptyNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The payload of a normal Raft entry: an encoded block, opaque to Raft and to the store.
///
/// The node decides its content (a block of signed transactions in the chain's block form);
/// the [`state_machine::BlockApplier`] decodes it when the entry is committed. Its size is
/// bounded by [`codec::MAX_PAYLOAD_BYTES`] wherever it is decoded.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RaftRequest {
    /// The encoded block.
    pub bytes: Vec<u8>,
}

impl RaftRequest {
    /// A request carrying `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        RaftRequest { bytes }
    }
}

impl fmt::Debug for RaftRequest {
    // A block can be megabytes: show its size and a short prefix, never all of it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = &self.bytes[..self.bytes.len().min(8)];
        write!(f, "RaftRequest({} bytes, ", self.bytes.len())?;
        for b in head {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// What applying one entry answered: the group's applied height and state root after it.
///
/// A blank or membership entry, or a normal entry that the applier turned into no block,
/// answers the height and root that stood before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftResponse {
    /// The applied height after the entry.
    pub height: u64,
    /// The state root after the entry.
    pub root: StateRoot,
}
