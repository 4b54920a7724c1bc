//! Raft's RPCs between nodes, over the nodes' pinned mutual-TLS QUIC connections.
//!
//! One RPC is one QUIC **bidirectional** stream on a connection to the peer: the caller opens
//! the stream, writes one [`Message::RaftRequest`] frame (the request in the Raft codec,
//! [`super::codec`]), finishes its side, and reads one [`Message::RaftReply`] frame, all under
//! a timeout. Every group a node hosts shares one cached connection per peer
//! ([`RaftPeers`]); a connection that failed is dialled again by the next RPC that needs it.
//! A dial runs in its own task, so an RPC that gives up does not abort a handshake a later
//! one can use; after a failed dial, RPCs to that peer fail at once for [`DIAL_BACKOFF`].
//!
//! The server side, [`serve_rpc`], reads one request from a stream opened by a pinned node,
//! checks that the node is a member of the group and that the request's vote names it (a node
//! speaks only for itself), hands the request to the group's [`openraft::Raft`] and writes
//! the reply. A request that breaks the protocol is refused with an [`RpcServeError`] whose
//! [`RpcServeError::close_code`] says how to close the connection.
//!
//! ## What the node must configure
//!
//! - Incoming connections from pinned nodes must allow bidirectional streams:
//!   [`crate::tls::transport_config`] allows none, so the node raises a peer's connection to
//!   [`RPC_STREAMS_PER_PEER`] ([`serve_peer`] does, then serves every stream).
//! - openraft's `Config`: `snapshot_max_chunk_size` = [`SNAPSHOT_CHUNK_BYTES`] (or less;
//!   a larger chunk is sent as several requests); `max_payload_entries`
//!   at most [`MAX_APPEND_ENTRIES`] (the default, 300, fits; an AppendEntries that does not
//!   fit in a frame answers `PayloadTooLarge`, and openraft sends fewer entries);
//!   `heartbeat_interval` is the time limit of every AppendEntries, replication included, so
//!   it must cover sending and persisting a full batch of blocks; `install_snapshot_timeout`
//!   (200 ms by default) limits each chunk, and the last chunk includes installing the whole
//!   snapshot into the store, so it wants seconds.
//! - Each RPC is bounded by the smaller of [`RaftPeers::new`]'s `rpc_timeout` and three
//!   quarters of openraft's own limit for it (`RPCOption::soft_ttl`), so the RPC reports its
//!   own error (`Unreachable` while dialling, `Timeout` after) before openraft cancels it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use occam_store::GroupId;
use openraft::error::{InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, Timeout, Unreachable};
use openraft::network::RPCOption;
use openraft::{EmptyNode, EntryPayload, RPCTypes, Raft, RaftNetwork, RaftNetworkFactory};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::codec::{CodecError, RaftCodec, MAX_APPEND_ENTRIES, MAX_PAYLOAD_BYTES, MAX_SNAPSHOT_ID_LEN};
use super::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, NodeId, TypeConfig, VoteRequest,
    VoteResponse,
};
use crate::transport::{close, read_frame, FrameError};
use crate::wire::{encode_raft_request, Message, RaftRpcKind, WireError, MAX_FRAME_LEN, MAX_RAFT_ERROR_LEN};

/// The largest snapshot chunk sent in one InstallSnapshot request (4 MiB), and the value for
/// openraft's `Config::snapshot_max_chunk_size`: with the request's vote and metadata (at
/// most tens of KiB) it fits in a frame. A larger chunk from openraft is split into several
/// requests at consecutive offsets, which the receiver writes in place.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 4 << 20;

/// How many Raft RPCs one peer may have in flight on its connection to a node (concurrent
/// bidirectional streams): enough for dozens of groups that two nodes share to replicate,
/// send snapshots and vote at once; a caller beyond it waits (within its timeout) for a
/// stream. It also bounds what a peer can make a node buffer: at most this many requests of
/// at most [`MAX_FRAME_LEN`] each (1 GiB), and in practice far less, since the connection's
/// receive window holds back a sender that outruns the node.
pub const RPC_STREAMS_PER_PEER: u32 = 128;

/// After a failed dial, RPCs to the peer fail at once (`Unreachable`) for this long rather
/// than dial again.
pub const DIAL_BACKOFF: Duration = Duration::from_millis(250);

/// The longest a dial waits for its handshake (the transport's idle timeout would end it
/// then anyway).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`serve_rpc`] waits for a request once its stream is open.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The error openraft's `RaftNetwork` methods return, for a Raft error `E`.
type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, EmptyNode, RaftError<NodeId, E>>;

/// How to reach one other node for Raft RPCs.
#[derive(Clone, Debug)]
pub struct PeerAddr {
    /// The node's id.
    pub node: NodeId,
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// The client configuration that dials it: its pinned certificate, and this node's
    /// identity for mutual TLS ([`crate::tls::client_config`]).
    pub config: quinn::ClientConfig,
    /// The server name to dial it by: [`crate::tls::node_name`] of its id.
    pub server_name: String,
}

impl PeerAddr {
    /// Node `node` at `addr`, dialled with `config` under its name ([`crate::tls::node_name`]).
    pub fn new(node: u32, addr: SocketAddr, config: quinn::ClientConfig) -> PeerAddr {
        PeerAddr { node: NodeId::from(node), addr, config, server_name: crate::tls::node_name(node) }
    }
}

/// The state of the connection to one peer.
enum Link {
    /// No connection; the last dial failed at that instant, for that reason.
    Down(Option<(Instant, String)>),
    /// A dial is under way; [`Peer::dialled`] is notified when it ends.
    Dialling,
    /// Connected (the connection may have failed since: checked at each use).
    Up(quinn::Connection),
}

/// One peer: its address and its cached connection.
struct Peer {
    node: NodeId,
    addr: SocketAddr,
    config: quinn::ClientConfig,
    server_name: String,
    link: Mutex<Link>,
    dialled: Notify,
}

impl Peer {
    fn new(p: PeerAddr) -> Peer {
        Peer {
            node: p.node,
            addr: p.addr,
            config: p.config,
            server_name: p.server_name,
            link: Mutex::new(Link::Down(None)),
            dialled: Notify::new(),
        }
    }
}

/// Connections to the other nodes for Raft RPCs, shared by every group a node hosts.
///
/// One connection per peer, dialled on first use and again after it fails; every RPC is one
/// bidirectional stream on it. [`RaftPeers::group`] gives openraft its network factory for one
/// group.
pub struct RaftPeers {
    endpoint: quinn::Endpoint,
    /// Grows when the cluster file lists a new node ([`RaftPeers::add`]).
    peers: parking_lot::RwLock<HashMap<NodeId, Arc<Peer>>>,
    rpc_timeout: Duration,
}

impl std::fmt::Debug for RaftPeers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let peers = self.peers.read();
        let mut nodes: Vec<_> = peers.keys().collect();
        nodes.sort();
        f.debug_struct("RaftPeers").field("peers", &nodes).field("rpc_timeout", &self.rpc_timeout).finish_non_exhaustive()
    }
}

impl RaftPeers {
    /// Peers reached through `endpoint` (the node's own, which dials as well as accepts), each
    /// RPC bounded by `rpc_timeout` (and by openraft's limit for it). A node listed twice is
    /// reached at its last entry.
    pub fn new(endpoint: quinn::Endpoint, peers: Vec<PeerAddr>, rpc_timeout: Duration) -> Arc<RaftPeers> {
        let peers = peers.into_iter().map(|p| (p.node, Arc::new(Peer::new(p)))).collect();
        Arc::new(RaftPeers { endpoint, peers: parking_lot::RwLock::new(peers), rpc_timeout })
    }

    /// Adds a peer (a node the cluster file lists since this node started); a node already
    /// known keeps its entry.
    pub fn add(&self, peer: PeerAddr) {
        self.peers.write().entry(peer.node).or_insert_with(|| Arc::new(Peer::new(peer)));
    }

    /// openraft's network factory for one group.
    pub fn group(self: &Arc<Self>, group: GroupId) -> GroupNetwork {
        GroupNetwork { peers: self.clone(), group }
    }

    /// A live connection to `peer`: the cached one, or one dialled now (by a task of its own,
    /// which other RPCs to the peer wait for as well).
    async fn connection(&self, peer: &Arc<Peer>) -> Result<quinn::Connection, CallError> {
        loop {
            let dialled = peer.dialled.notified();
            tokio::pin!(dialled);
            {
                let mut link = peer.link.lock();
                match &*link {
                    Link::Up(conn) if conn.close_reason().is_none() => return Ok(conn.clone()),
                    Link::Down(Some((at, why))) if at.elapsed() < DIAL_BACKOFF => {
                        return Err(CallError::Dial { node: peer.node, why: why.clone() });
                    }
                    Link::Dialling => {}
                    Link::Up(_) | Link::Down(_) => {
                        *link = Link::Dialling;
                        self.spawn_dial(peer.clone());
                    }
                }
                // Registered under the lock: the dial task sets the link under it before it
                // notifies, so its notification cannot come before this.
                dialled.as_mut().enable();
            }
            dialled.await;
        }
    }

    fn spawn_dial(&self, peer: Arc<Peer>) {
        let endpoint = self.endpoint.clone();
        tokio::spawn(async move {
            let result = match endpoint.connect_with(peer.config.clone(), peer.addr, &peer.server_name) {
                Err(e) => Err(e.to_string()),
                Ok(connecting) => match tokio::time::timeout(DIAL_TIMEOUT, connecting).await {
                    Ok(Ok(conn)) => Ok(conn),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no handshake within {DIAL_TIMEOUT:?}")),
                },
            };
            let link = match result {
                Ok(conn) => {
                    debug!(peer = peer.node, addr = %peer.addr, "raft link up");
                    Link::Up(conn)
                }
                Err(why) => {
                    debug!(peer = peer.node, addr = %peer.addr, "raft dial failed: {why}");
                    Link::Down(Some((Instant::now(), why)))
                }
            };
            *peer.link.lock() = link;
            peer.dialled.notify_waiters();
        });
    }

    /// Sends one request frame to `target` and returns the reply's body, within `timeout`.
    async fn call(&self, target: NodeId, group: GroupId, rpc: RaftRpcKind, frame: &[u8], timeout: Duration) -> Result<Vec<u8>, CallError> {
        let peer = self.peers.read().get(&target).cloned().ok_or(CallError::UnknownPeer(target))?;
        let connected = AtomicBool::new(false);
        let exchange = async {
            let conn = self.connection(&peer).await?;
            connected.store(true, Ordering::Relaxed);
            exchange(target, &conn, frame, group, rpc).await
        };
        let result = tokio::time::timeout(timeout, exchange).await;
        match result {
            Ok(r) => r,
            Err(_) if !connected.load(Ordering::Relaxed) => Err(CallError::DialTimeout { node: target, timeout }),
            Err(_) => Err(CallError::Timeout),
        }
    }
}

/// Resets a send stream that is dropped before its request was written whole (a cancelled
/// RPC), rather than let quinn finish it: the peer then sees a reset stream, not a cut frame.
struct SendGuard {
    send: quinn::SendStream,
    done: bool,
}

impl Drop for SendGuard {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.send.reset(0u32.into());
        }
    }
}

/// One RPC on a new bidirectional stream of `conn`.
async fn exchange(node: NodeId, conn: &quinn::Connection, frame: &[u8], group: GroupId, rpc: RaftRpcKind) -> Result<Vec<u8>, CallError> {
    let (send, mut recv) = conn.open_bi().await.map_err(|source| CallError::Lost { node, source })?;
    let mut send = SendGuard { send, done: false };
    send.send.write_all(frame).await.map_err(|e| match e {
        quinn::WriteError::ConnectionLost(source) => CallError::Lost { node, source },
        other => CallError::Stream { node, why: other.to_string() },
    })?;
    send.send.finish().map_err(|e| CallError::Stream { node, why: e.to_string() })?;
    send.done = true;
    match read_frame(&mut recv, MAX_FRAME_LEN).await {
        Ok(Some(Message::RaftReply { group: g, rpc: r, result })) if g == group && r == rpc => {
            result.map_err(|text| CallError::Remote { node, text })
        }
        Ok(Some(Message::RaftReply { group: got_group, rpc: got_rpc, .. })) => {
            Err(CallError::Mismatch { node, group, rpc, got_group, got_rpc })
        }
        Ok(Some(other)) => Err(CallError::Unexpected { node, kind: other.kind() }),
        Ok(None) => Err(CallError::NoReply { node }),
        Err(FrameError::Wire(source)) => Err(CallError::BadFrame { node, source }),
        Err(FrameError::Read(quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(source)))) => {
            Err(CallError::Lost { node, source })
        }
        Err(e @ (FrameError::Read(_) | FrameError::Truncated | FrameError::TooSlow(_))) => {
            Err(CallError::Stream { node, why: e.to_string() })
        }
    }
}

/// Why an RPC failed on this side (its text is what openraft logs).
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("node {0} has no address")]
    UnknownPeer(NodeId),
    #[error("dialling node {node}: {why}")]
    Dial { node: NodeId, why: String },
    #[error("no connection to node {node} within {timeout:?}")]
    DialTimeout { node: NodeId, timeout: Duration },
    #[error("connection to node {node} lost: {source}")]
    Lost { node: NodeId, source: quinn::ConnectionError },
    #[error("no reply in time")]
    Timeout,
    #[error("stream to node {node}: {why}")]
    Stream { node: NodeId, why: String },
    #[error("node {node} ended the stream without a reply")]
    NoReply { node: NodeId },
    #[error("node {node} sent a malformed reply: {source}")]
    BadFrame { node: NodeId, source: WireError },
    #[error("node {node} answered with a frame of kind {kind}, not a Raft reply")]
    Unexpected { node: NodeId, kind: u8 },
    #[error("node {node} answered group {got_group} {got_rpc:?} to a group {group} {rpc:?} request")]
    Mismatch { node: NodeId, group: GroupId, rpc: RaftRpcKind, got_group: GroupId, got_rpc: RaftRpcKind },
    #[error("node {node}'s {rpc:?} reply does not decode: {source}")]
    Decode { node: NodeId, rpc: RaftRpcKind, source: CodecError },
    #[error("node {node} answered an error: {text}")]
    Remote { node: NodeId, text: String },
    #[error("a {rpc:?} request to node {node} does not fit in a frame: {why}")]
    TooLarge { node: NodeId, rpc: RaftRpcKind, why: String },
}

impl CallError {
    /// openraft's view: `Unreachable` (openraft backs off) when there is no connection,
    /// `Timeout` when a connected peer did not answer in time, `Network` otherwise.
    fn into_rpc<E: std::error::Error>(self, action: RPCTypes, sender: NodeId, target: NodeId, timeout: Duration) -> RpcErr<E> {
        match self {
            CallError::UnknownPeer(_) | CallError::Dial { .. } | CallError::DialTimeout { .. } | CallError::Lost { .. } => {
                RPCError::Unreachable(Unreachable::new(&self))
            }
            CallError::Timeout => RPCError::Timeout(Timeout { action, id: sender, target, timeout }),
            _ => RPCError::Network(NetworkError::new(&self)),
        }
    }
}

/// openraft's network factory for one group: clients that carry the group's RPCs over the
/// shared [`RaftPeers`].
#[derive(Clone, Debug)]
pub struct GroupNetwork {
    peers: Arc<RaftPeers>,
    group: GroupId,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = GroupClient;

    async fn new_client(&mut self, target: NodeId, _node: &EmptyNode) -> GroupClient {
        GroupClient { peers: self.peers.clone(), group: self.group, target }
    }
}

/// One group's RPCs to one node (openraft's `RaftNetwork`); cheap, it holds no connection of
/// its own.
#[derive(Clone, Debug)]
pub struct GroupClient {
    peers: Arc<RaftPeers>,
    group: GroupId,
    target: NodeId,
}

impl GroupClient {
    /// The time limit of one RPC under `option`.
    fn timeout(&self, option: &RPCOption) -> Duration {
        self.peers.rpc_timeout.min(option.soft_ttl())
    }

    /// Sends `frame` and decodes the reply as `R`.
    async fn send<R: RaftCodec, E: std::error::Error>(
        &self,
        action: RPCTypes,
        rpc: RaftRpcKind,
        sender: NodeId,
        frame: &[u8],
        timeout: Duration,
    ) -> Result<R, RpcErr<E>> {
        let fail = |e: CallError| e.into_rpc(action, sender, self.target, timeout);
        let body = self.peers.call(self.target, self.group, rpc, frame, timeout).await.map_err(fail)?;
        R::decode(&body).map_err(|source| fail(CallError::Decode { node: self.target, rpc, source }))
    }

    fn too_large<E: std::error::Error>(&self, rpc: RaftRpcKind, why: String) -> RpcErr<E> {
        RPCError::Network(NetworkError::new(&CallError::TooLarge { node: self.target, rpc, why }))
    }
}

/// `req`'s data in pieces of at most `max` bytes, at consecutive offsets, `done` only on the
/// last (one piece, `req` itself, if it fits).
fn snapshot_pieces(req: InstallSnapshotRequest, max: usize) -> Vec<InstallSnapshotRequest> {
    if req.data.len() <= max {
        return vec![req];
    }
    let count = req.data.len().div_ceil(max);
    req.data
        .chunks(max)
        .enumerate()
        .map(|(i, data)| InstallSnapshotRequest {
            vote: req.vote,
            meta: req.meta.clone(),
            offset: req.offset + (i * max) as u64,
            data: data.to_vec(),
            done: req.done && i + 1 == count,
        })
        .collect()
}

impl RaftNetwork<TypeConfig> for GroupClient {
    async fn append_entries(&mut self, rpc: AppendEntriesRequest, option: RPCOption) -> Result<AppendEntriesResponse, RpcErr> {
        let n = rpc.entries.len();
        let kind = RaftRpcKind::AppendEntries;
        if n > MAX_APPEND_ENTRIES {
            return Err(PayloadTooLarge::new_entries_hint(MAX_APPEND_ENTRIES as u64).into());
        }
        let block = |e: &super::Entry| match &e.payload {
            EntryPayload::Normal(r) if r.bytes.len() > MAX_PAYLOAD_BYTES => Some(r.bytes.len()),
            _ => None,
        };
        if let Some(len) = rpc.entries.iter().find_map(block) {
            return Err(self.too_large(kind, format!("an entry's block of {len} bytes")));
        }
        let frame = match encode_raft_request(self.group, kind, |w| rpc.encode_into(w)) {
            Ok(f) => f,
            // Fewer entries may fit: openraft retries at once with the hint.
            Err(_) if n > 1 => return Err(PayloadTooLarge::new_entries_hint((n / 2) as u64).into()),
            Err(e) => return Err(self.too_large(kind, format!("one entry: {e}"))),
        };
        let timeout = self.timeout(&option);
        self.send(RPCTypes::AppendEntries, kind, rpc.vote.leader_id.node_id, &frame, timeout).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse, RpcErr<InstallSnapshotError>> {
        let kind = RaftRpcKind::InstallSnapshot;
        if rpc.meta.snapshot_id.len() > MAX_SNAPSHOT_ID_LEN {
            return Err(self.too_large(kind, format!("a snapshot id of {} bytes", rpc.meta.snapshot_id.len())));
        }
        let timeout = self.timeout(&option);
        let sender = rpc.vote.leader_id.node_id;
        let mut answer = None;
        for piece in snapshot_pieces(rpc, SNAPSHOT_CHUNK_BYTES as usize) {
            let vote = piece.vote;
            let frame = encode_raft_request(self.group, kind, |w| piece.encode_into(w)).map_err(|e| self.too_large(kind, e.to_string()))?;
            let resp: InstallSnapshotResponse = self.send(RPCTypes::InstallSnapshot, kind, sender, &frame, timeout).await?;
            // A higher vote ends the transfer: openraft sees it in the answer.
            let stop = resp.vote > vote;
            answer = Some(resp);
            if stop {
                break;
            }
        }
        answer.ok_or_else(|| self.too_large(kind, "no piece to send".into()))
    }

    async fn vote(&mut self, rpc: VoteRequest, option: RPCOption) -> Result<VoteResponse, RpcErr> {
        let kind = RaftRpcKind::Vote;
        let frame = encode_raft_request(self.group, kind, |w| rpc.encode_into(w)).map_err(|e| self.too_large(kind, e.to_string()))?;
        let timeout = self.timeout(&option);
        self.send(RPCTypes::Vote, kind, rpc.vote.leader_id.node_id, &frame, timeout).await
    }
}

/// The Raft groups a node hosts, as [`serve_rpc`] needs them.
pub trait RaftGroups: Send + Sync {
    /// The group's Raft, if this node hosts it (and has started it).
    fn raft(&self, group: GroupId) -> Option<Raft<TypeConfig>>;
    /// Whether `node` is a member (voter or learner) of the group, by the cluster's config.
    fn is_member(&self, group: GroupId, node: NodeId) -> bool;
    /// Node `from` broke the protocol (`e`); [`serve_peer`] closes its connection next. For
    /// counting; does nothing by default.
    fn violation(&self, _from: NodeId, _e: &RpcServeError) {}
}

/// Why [`serve_rpc`] answered no Raft reply, or could not deliver one.
#[derive(Debug, thiserror::Error)]
pub enum RpcServeError {
    /// The stream failed or was reset before the request was read whole.
    #[error("reading the request: {0}")]
    Read(quinn::ReadExactError),
    /// The stream ended before any request.
    #[error("the stream ended before a request")]
    NoRequest,
    /// The stream ended inside the request's frame.
    #[error("the stream ended inside the request")]
    Truncated,
    /// No whole request within [`REQUEST_TIMEOUT`].
    #[error("no request within {REQUEST_TIMEOUT:?}")]
    Timeout,
    /// The bytes are not a valid frame.
    #[error("bad frame: {0}")]
    Frame(WireError),
    /// A valid frame that is not a [`Message::RaftRequest`].
    #[error("a frame of kind {kind} where a Raft request belongs")]
    Unexpected {
        /// Its kind.
        kind: u8,
    },
    /// This node does not host the group (or has not started it yet).
    #[error("group {group} is not hosted on this node")]
    UnknownGroup {
        /// The group.
        group: GroupId,
    },
    /// The sender is not a member of the group.
    #[error("node {node} is not a member of group {group}")]
    NotMember {
        /// The group.
        group: GroupId,
        /// The sender.
        node: NodeId,
    },
    /// The request's body does not decode as its RPC.
    #[error("group {group}: the {rpc:?} request does not decode: {source}")]
    Decode {
        /// The group.
        group: GroupId,
        /// The RPC.
        rpc: RaftRpcKind,
        /// Why.
        source: CodecError,
    },
    /// The request's vote names another node as its leader or candidate.
    #[error("group {group}: node {from} sent a {rpc:?} request for node {named}")]
    WrongSender {
        /// The group.
        group: GroupId,
        /// The RPC.
        rpc: RaftRpcKind,
        /// The sender.
        from: NodeId,
        /// The node its vote names.
        named: NodeId,
    },
    /// The reply could not be encoded (cannot happen: replies are small, error text is cut).
    #[error("encoding the reply: {0}")]
    Encode(WireError),
    /// The reply could not be written (the caller gave up, or the connection failed).
    #[error("writing the reply: {0}")]
    Write(quinn::WriteError),
}

impl RpcServeError {
    /// Whether the peer broke the protocol, and its connection should be closed (with
    /// [`RpcServeError::close_code`]).
    pub fn closes_connection(&self) -> bool {
        self.close_code().is_some()
    }

    /// The QUIC application error code to close the peer's connection with, for a protocol
    /// violation: [`close::PROTOCOL`] for bytes that are not a Raft request (a bad frame,
    /// another message, a body that does not decode), [`close::FORBIDDEN`] for a request this
    /// node may not send (not a member of the group, or speaking for another node). `None`:
    /// only this stream failed (a reset or timed-out stream, a group not hosted here, which
    /// can happen while nodes start, or a reply the caller no longer reads).
    pub fn close_code(&self) -> Option<u32> {
        match self {
            RpcServeError::Frame(_) | RpcServeError::Truncated | RpcServeError::Unexpected { .. } | RpcServeError::Decode { .. } => {
                Some(close::PROTOCOL)
            }
            RpcServeError::NotMember { .. } | RpcServeError::WrongSender { .. } => Some(close::FORBIDDEN),
            RpcServeError::Read(_)
            | RpcServeError::NoRequest
            | RpcServeError::Timeout
            | RpcServeError::UnknownGroup { .. }
            | RpcServeError::Encode(_)
            | RpcServeError::Write(_) => None,
        }
    }
}

/// Serves one bidirectional stream opened by node `from`: reads one RaftRequest, checks that
/// `from` is a member of the group and that the request's vote names `from` as its
/// leader/candidate (AppendEntries and InstallSnapshot: the vote's leader node id; Vote: the
/// candidate), hands it to that group's Raft, writes the RaftReply.
///
/// Raft's own errors go back as `Err(text)` in the reply (and this returns `Ok`). A refused
/// request is logged, answered with `Err(why)` where the stream allows, and returned as an
/// [`RpcServeError`]; the caller closes the connection if
/// [`RpcServeError::close_code`] says so.
pub async fn serve_rpc(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    from: NodeId,
    groups: &dyn RaftGroups,
) -> Result<(), RpcServeError> {
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, read_frame(&mut recv, MAX_FRAME_LEN)).await {
        Ok(Ok(Some(m))) => m,
        Ok(Ok(None)) => return Err(RpcServeError::NoRequest),
        Ok(Err(FrameError::Read(e))) => {
            debug!(peer = from, "raft rpc stream failed: {e}");
            return Err(RpcServeError::Read(e));
        }
        Ok(Err(FrameError::Wire(e))) => return Err(refused(from, RpcServeError::Frame(e))),
        Ok(Err(FrameError::Truncated | FrameError::TooSlow(_))) => return Err(refused(from, RpcServeError::Truncated)),
        Err(_) => return Err(refused(from, RpcServeError::Timeout)),
    };
    let Message::RaftRequest { group, rpc, body } = request else {
        return Err(refused(from, RpcServeError::Unexpected { kind: request.kind() }));
    };
    let result = match handle(group, rpc, &body, from, groups).await {
        Ok(result) => result,
        Err(e) => {
            let e = refused(from, e);
            // Tell the caller why (if it still reads) before the connection is closed.
            let _ = write_reply(&mut send, group, rpc, Err(error_text(&e))).await;
            return Err(e);
        }
    };
    write_reply(&mut send, group, rpc, result).await
}

/// Logs a refused request.
fn refused(from: NodeId, e: RpcServeError) -> RpcServeError {
    warn!(peer = from, close = ?e.close_code(), "refused a raft rpc: {e}");
    e
}

/// Checks and runs one request; `Err` refuses it, `Ok(Err(text))` is the Raft's own error.
async fn handle(
    group: GroupId,
    rpc: RaftRpcKind,
    body: &[u8],
    from: NodeId,
    groups: &dyn RaftGroups,
) -> Result<Result<Vec<u8>, String>, RpcServeError> {
    let raft = groups.raft(group).ok_or(RpcServeError::UnknownGroup { group })?;
    if !groups.is_member(group, from) {
        return Err(RpcServeError::NotMember { group, node: from });
    }
    let decode = |source| RpcServeError::Decode { group, rpc, source };
    let speaks_for = |named: NodeId| match named == from {
        true => Ok(()),
        false => Err(RpcServeError::WrongSender { group, rpc, from, named }),
    };
    Ok(match rpc {
        RaftRpcKind::AppendEntries => {
            let req = AppendEntriesRequest::decode(body).map_err(decode)?;
            speaks_for(req.vote.leader_id.node_id)?;
            raft.append_entries(req).await.map(|r| r.encode()).map_err(|e| error_text(&e))
        }
        RaftRpcKind::Vote => {
            let req = VoteRequest::decode(body).map_err(decode)?;
            speaks_for(req.vote.leader_id.node_id)?;
            raft.vote(req).await.map(|r| r.encode()).map_err(|e| error_text(&e))
        }
        RaftRpcKind::InstallSnapshot => {
            let req = InstallSnapshotRequest::decode(body).map_err(decode)?;
            speaks_for(req.vote.leader_id.node_id)?;
            raft.install_snapshot(req).await.map(|r| r.encode()).map_err(|e| error_text(&e))
        }
    })
}

/// An error's text, cut (at a character boundary) to what a reply carries.
fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    if text.len() > MAX_RAFT_ERROR_LEN {
        let mut end = MAX_RAFT_ERROR_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

async fn write_reply(
    send: &mut quinn::SendStream,
    group: GroupId,
    rpc: RaftRpcKind,
    result: Result<Vec<u8>, String>,
) -> Result<(), RpcServeError> {
    let frame = Message::RaftReply { group, rpc, result }.encode().map_err(RpcServeError::Encode)?;
    send.write_all(&frame).await.map_err(RpcServeError::Write)?;
    // Fails only if the stream was reset or stopped meanwhile: the caller is gone.
    let _ = send.finish();
    Ok(())
}

/// Serves the Raft RPCs of node `from` on `conn`, an incoming connection whose client
/// certificate is `from`'s pinned one, until the connection ends: raises the connection to
/// [`RPC_STREAMS_PER_PEER`] bidirectional streams, serves each on a task of its own, and
/// closes the connection on a protocol violation ([`RpcServeError::close_code`]).
///
/// The node runs it beside its loop over the connection's unidirectional streams.
pub async fn serve_peer(conn: quinn::Connection, from: NodeId, groups: Arc<dyn RaftGroups>) {
    conn.set_max_concurrent_bi_streams(RPC_STREAMS_PER_PEER.into());
    while let Ok((send, recv)) = conn.accept_bi().await {
        let conn = conn.clone();
        let groups = groups.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_rpc(send, recv, from, &*groups).await {
                if let Some(code) = e.close_code() {
                    groups.violation(from, &e);
                    conn.close(code.into(), error_text(&e).as_bytes());
                }
            }
        });
    }
}

#[cfg(test)]
#[path = "network_tests.rs"]
mod tests;
