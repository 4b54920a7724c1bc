//! The node runtime: QUIC endpoints, one Raft group per hosted shard replica over the node's
//! RocksDB store, certification of every applied block, and the clients' ingress.
//!
//! A node hosts the replicas the cluster file places on it. Its parts, each in its module:
//!
//! - `ingress`: accepts QUIC connections, takes in client batches for the groups this node
//!   leads, and routes peers' frames and Raft RPCs.
//! - `admission`: checks client batches' signatures, fairly between source addresses, before
//!   they enter a mempool; refuses forgeries and shuts out their senders.
//! - `group`: one thread per hosted replica. Raft (openraft) orders its blocks; every
//!   replica applies committed blocks (verify, execute, persist), votes, and the votes become
//!   the block's certificate. While this node leads the group, the thread also builds blocks
//!   from its mempool and hands them to Raft. Receipts go out only for certified blocks.
//! - `coordinator`: cross-shard rounds, on the node hosting replica 0 of shard 0.
//! - `links`: one outgoing QUIC connection per peer for one-way messages.
//! - `batch`: mempool, aggregation, receipts.
//! - `fate`: status reads, what became of a transaction named by (signer, nonce).
//! - `membership`: replacing a node for good. The node watches its cluster file; nodes
//!   appended to it are pinned and dialled, and each shard's leader moves its Raft group to
//!   the file's placement (the new node joins as a learner, catches up, then the replaced
//!   node's vote goes to it in one membership change). The validator set that certifies the
//!   shard's blocks follows the Raft membership, one epoch per membership entry.
//! - **Metrics**: a Prometheus text endpoint (see [`crate::metrics`]).
//!
//! Everything a replica must not lose lives in the node's store (`occam-store`, in
//! `data_dir`): each group's Raft log and vote, its blocks with their certificates, its state
//! and applied point. A restarted node opens it, checks it is this chain's and this node's,
//! reloads each group's state (checking its root), and Raft replays or snapshots the rest.
//!
//! Limits: at most [`MAX_CLIENTS`] client connections, client frames of at most
//! [`crate::transport::MAX_CLIENT_FRAME_LEN`], [`MAX_READS_IN_FLIGHT`] reads per client; a
//! client whose outgoing queue is full (it does not read) is disconnected; each group's queue
//! holds [`GROUP_QUEUE`] events.

mod admission;
mod batch;
mod coordinator;
mod fate;
mod group;
mod ingress;
mod links;
mod membership;
mod system;

use crate::config::{ClusterConfig, NodeKeys, RaftSettings};
use crate::metrics::Metrics;
use crate::raft::log_store::LogStore;
use crate::raft::network::{PeerAddr, RaftGroups, RaftPeers};
use crate::raft::state_machine::{OpenError, StateMachine};
use crate::raft::{NodeId, TypeConfig};
use crate::tls::{client_config, server_config};
use crate::transport::{close, frame};
use crate::wire::{Message, RaftRole, ReplicaStatus};
use batch::SigCheck;
use coordinator::{CoordCtx, CoordEvent};
use group::{GroupCtx, GroupEvent, GroupHandle, NodeApplier};
use links::{run_link, Link, LINK_BYTES};
use occam_engine::crypto::{BatchVerifier, KeyRegistry};
use occam_engine::exec::executor_by_name;
use occam_engine::key::Key;
use occam_engine::native::signed::{signed_keys, SignedVm, TxHeader};
use occam_engine::state::CommittedState;
use occam_engine::value::Value;
use occam_shard::partition::{ModuloPartitioner, Partitioner};
use occam_store::{Store, StoreError, StoreIdentity, StoreOptions};
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// How often group and coordinator threads wake up with nothing to do (partial blocks, vote
/// resends).
const TICK: Duration = Duration::from_millis(5);
/// The most client connections a node serves at once.
pub const MAX_CLIENTS: usize = 4096;
/// The most reads one client may have unanswered at one node.
pub const MAX_READS_IN_FLIGHT: usize = 8;
/// Events a group handles before it looks at its mempool again.
const EVENTS_PER_TURN: usize = 1024;
/// Events a group's queue holds; peers' votes and certificates beyond it are dropped (their
/// senders send them again), local events wait.
pub const GROUP_QUEUE: usize = 65_536;
/// How long a Raft RPC to a peer may take before it counts as unreachable.
const RAFT_RPC_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration does not make a node.
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// TLS setup failed.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// A socket, runtime or thread could not be created.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The executor or verifier could not start.
    #[error("{0}")]
    Engine(String),
    /// The data directory cannot be used: it is another chain's or node's, damaged, or its
    /// state does not match its recorded root. Nothing in it was changed.
    #[error("data directory: {0}")]
    Store(#[from] StoreError),
    /// A group's state machine could not be opened from the store.
    #[error("data directory: {0}")]
    Open(#[from] OpenError),
    /// Raft refused its configuration or could not start.
    #[error("raft: {0}")]
    Raft(String),
}

/// Where a node's genesis state comes from. Only a first start needs it (a hosted group whose
/// store holds no applied point yet); a restarted node loads its state from its store and
/// never builds it.
pub enum Genesis {
    /// The state, already built.
    State(Arc<CommittedState>),
    /// Builds the state: called at most once, and only on a first start.
    Build(Box<dyn FnOnce() -> Result<CommittedState, String> + Send>),
}

/// Everything a node needs to start.
pub struct NodeSetup {
    /// This node's id.
    pub node: u32,
    /// The cluster.
    pub cluster: ClusterConfig,
    /// This node's keys.
    pub keys: NodeKeys,
    /// Threads each hosted replica executes on.
    pub exec_threads: usize,
    /// Threads verifying signatures.
    pub verify_threads: usize,
    /// The whole genesis state (each replica keeps its shard's part); needed, and written to
    /// the store, only on a first start.
    pub genesis: Genesis,
    /// The transaction signers' registry.
    pub registry: Arc<KeyRegistry>,
    /// A socket already bound to the node's address (tests bind ports before starting
    /// nodes); `None` binds the cluster file's address.
    pub socket: Option<std::net::UdpSocket>,
    /// Admit transactions but propose no blocks (for measuring ingress alone).
    pub hold_blocks: bool,
    /// The node's data directory (its RocksDB store), created if missing.
    pub data_dir: PathBuf,
    /// The cluster file to watch: nodes appended to it (replacements) are taken in while the
    /// node runs. `None`: the cluster stays as `cluster` says.
    pub cluster_file: Option<PathBuf>,
}

/// The shard a transaction belongs to: the one shard owning its signer's nonce, the owner keys
/// of the accounts it acts for and every key its body declares; `None` if they span shards or
/// the body does not declare its keys.
pub fn route_tx(partitioner: &dyn Partitioner, header: &TxHeader) -> Option<u32> {
    route_tx_with(partitioner, header, &mut Vec::with_capacity(8))
}

/// [`route_tx`] with a caller's buffer for the keys, for loops over many transactions.
pub fn route_tx_with(partitioner: &dyn Partitioner, header: &TxHeader, keys: &mut Vec<Key>) -> Option<u32> {
    keys.clear();
    if !signed_keys(header, keys) {
        return None;
    }
    route_keys(partitioner, keys)
}

/// The one shard owning every key of `keys`; `None` if they span shards or there are none.
pub fn route_keys(partitioner: &dyn Partitioner, keys: &[Key]) -> Option<u32> {
    let shard = partitioner.shard_of(keys.first()?);
    keys.iter().all(|k| partitioner.shard_of(k) == shard).then_some(shard)
}

/// The cluster's partitioner: by id modulo the shard count (see
/// [`occam_shard::partition::ModuloPartitioner`]).
pub fn cluster_partitioner(cluster: &ClusterConfig) -> Arc<dyn Partitioner> {
    Arc::new(ModuloPartitioner::new(cluster.shards).expect("the cluster check bounds the shard count"))
}

/// Where a pending transaction came from.
#[derive(Debug, Clone, Copy)]
struct Origin {
    conn: u64,
    batch: u64,
    index: u32,
    /// The transaction's signer and nonce (what a status read names it by).
    signer: u32,
    nonce: u64,
}

/// Forgets the addresses with no connection whose ban has run out.
fn forget_expired(hosts: &mut HashMap<IpAddr, Host>) {
    let now = Instant::now();
    hosts.retain(|_, h| h.conns > 0 || h.banned_until.is_some_and(|t| t > now));
}

/// A replica's whole state, sorted by key, sent back to [`Node::snapshot`].
type SnapshotReply = crossbeam_channel::Sender<Vec<(Key, Value)>>;

struct Client {
    conn: quinn::Connection,
    /// Frames to the client, at most `limits.client_queue_bytes` of them.
    frames: crate::transport::FrameQueue,
    /// Transactions of this connection pending here.
    pending: Arc<AtomicUsize>,
    /// The connection's source address, and the transactions of all its connections pending
    /// here.
    host: IpAddr,
    host_pending: Arc<AtomicUsize>,
    reads: Arc<AtomicUsize>,
    /// Batches it sent with bad signatures.
    strikes: Arc<AtomicU32>,
    /// When it last sent a frame ([`Shared::uptime_ms`]).
    last_active: Arc<AtomicU64>,
}

/// Lets the first [`LogGate::PER_MINUTE`] lines of a kind through each minute and counts the
/// rest: a line let through says how many were held back before it, and
/// [`LogGate::summary`] reports those held back since (the node calls it every minute).
#[derive(Default)]
struct LogGate {
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    minute_start: Option<Instant>,
    passed: u32,
    held: u64,
}

impl LogGate {
    const PER_MINUTE: u32 = 10;

    /// `Some(held back before this one)` if this line may be logged.
    fn admit(&self) -> Option<u64> {
        let mut s = self.state.lock();
        let now = Instant::now();
        if s.minute_start.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60)) {
            s.minute_start = Some(now);
            s.passed = 0;
        }
        if s.passed >= Self::PER_MINUTE {
            s.held += 1;
            return None;
        }
        s.passed += 1;
        Some(std::mem::take(&mut s.held))
    }

    /// Lines held back since the last one let through or summarised.
    fn summary(&self) -> u64 {
        std::mem::take(&mut self.state.lock().held)
    }
}

/// A source address's client connections, pending transactions and ban.
#[derive(Default)]
struct Host {
    conns: usize,
    pending: Arc<AtomicUsize>,
    banned_until: Option<Instant>,
}

/// Source addresses a node keeps track of at most: those with connections (at most
/// [`MAX_CLIENTS`]) and those refused for a while. A ban that finds the table full first
/// forgets expired bans, and is not recorded if that frees nothing (the connection is still
/// closed).
const MAX_HOSTS: usize = MAX_CLIENTS + 65_536;

/// Why a client connection was refused before it was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostRefusal {
    /// Its address is refused for a while.
    Banned,
    /// Its address holds `limits.host_connections` connections.
    TooMany,
}

struct Shared {
    node: u32,
    /// The cluster file as this node started with it (settings; for node entries and
    /// placement, see `roster`).
    cluster: ClusterConfig,
    /// The cluster file as last read: the start's, plus nodes appended since.
    roster: RwLock<Arc<ClusterConfig>>,
    /// What dials new peers.
    dialer: Dialer,
    partitioner: Arc<dyn Partitioner>,
    clients: Mutex<HashMap<u64, Client>>,
    next_conn: AtomicU64,
    links: RwLock<HashMap<u32, Link>>,
    groups: HashMap<u32, GroupHandle>,
    /// The leader of each shard this node hosts no replica of, as last seen (from the
    /// cross-shard replies only leaders send).
    leader_hints: Mutex<HashMap<u32, u32>>,
    /// The cross-shard coordinator, on every node hosting a replica of shard 0 (active while
    /// that replica leads).
    coordinator: Option<(crossbeam_channel::Sender<CoordEvent>, Arc<AtomicUsize>)>,
    /// The node's store (certificates a participant acknowledges a round with).
    store: Store,
    status: Mutex<Vec<ReplicaStatus>>,
    metrics: Arc<Metrics>,
    stopping: AtomicBool,
    /// The chain, the signers' keys and the verification threads.
    check: SigCheck,
    /// Client batches waiting for their signatures to be checked (the admission thread).
    admission: crossbeam_channel::Sender<admission::Job>,
    /// Client source addresses: connections, pending transactions, bans.
    hosts: Mutex<HashMap<IpAddr, Host>>,
    /// Bad-frame log lines, a few a minute.
    bad_frame_log: LogGate,
    /// When the node started (client activity is timed from it).
    started: Instant,
    /// Every transaction admitted here and not yet answered (receipted, dropped, or given up
    /// when this node stopped leading), by (signer, nonce), with how many copies: what a status
    /// read calls pending. Bounded as the clients' quotas are (one entry per pending unit).
    admitted: Mutex<HashMap<(u32, u64), u32>>,
}

impl Shared {
    /// Queues `message` for `node` (or handles it here, for this node); false if it was
    /// dropped (the link's queue is full or closed, or the message does not encode).
    fn send_to_node(&self, node: u32, message: &Message) -> bool {
        if node == self.node {
            // The coordinator and a participant leader may share a node.
            if let Err(why) = ingress::dispatch(self, 0, Some(node), message.clone()) {
                error!("a message to this node itself was refused: {why}");
                return false;
            }
            return true;
        }
        let links = self.links.read();
        let Some(link) = links.get(&node) else { return false };
        let Some(f) = frame(message) else { return false };
        // Bounded in frames and in bytes: votes resent to a peer that is down must not pile up
        // in memory.
        if !link.frames.try_send(f) {
            debug!(peer = node, "link queue full or closed; message dropped (its sender sends it again)");
            return false;
        }
        true
    }

    fn send_to_client(&self, conn: u64, message: &Message) {
        let Some((frames, connection)) = self.clients.lock().get(&conn).map(|c| (c.frames.clone(), c.conn.clone())) else { return };
        if let Some(f) = frame(message) {
            if !frames.try_send(f) {
                // Its queue is full (`limits.client_queue_bytes`): it does not read. Buffering
                // more would let one client hold the node's memory; dropping frames silently
                // would lose its receipts.
                self.metrics.receipts_dropped.inc();
                self.metrics.disconnected(crate::metrics::Disconnect::NotReading);
                warn!(conn, "client does not read its answers; closing the connection");
                connection.close(close::NOT_READING.into(), b"not reading");
            }
        }
    }

    /// Tells every connected client what this node's replicas are now (sent when one of them
    /// becomes its shard's leader), so clients move to a new leader without waiting for a
    /// timeout or a refusal.
    fn announce(&self) {
        let conns: Vec<u64> = self.clients.lock().keys().copied().collect();
        if conns.is_empty() {
            return;
        }
        let status = Message::Status(self.replica_statuses());
        for conn in conns {
            self.send_to_client(conn, &status);
        }
    }

    /// A read of `conn` was answered.
    fn read_done(&self, conn: u64) {
        if let Some(c) = self.clients.lock().get(&conn) {
            c.reads.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Marks `n` transactions of `conn` as no longer pending.
    /// Notes transactions as admitted here (pending until [`Shared::release`]).
    fn admit(&self, origins: &[Origin]) {
        let mut admitted = self.admitted.lock();
        for o in origins {
            *admitted.entry((o.signer, o.nonce)).or_default() += 1;
        }
    }

    /// Transactions this node answered or gave up: their clients' quotas come back and they are
    /// no longer pending here.
    fn release(&self, origins: impl IntoIterator<Item = Origin>) {
        let mut by_conn: HashMap<u64, usize> = HashMap::new();
        {
            let mut admitted = self.admitted.lock();
            for o in origins {
                *by_conn.entry(o.conn).or_default() += 1;
                if let std::collections::hash_map::Entry::Occupied(mut e) = admitted.entry((o.signer, o.nonce)) {
                    *e.get_mut() -= 1;
                    if *e.get() == 0 {
                        e.remove();
                    }
                }
            }
        }
        let clients = self.clients.lock();
        for (conn, n) in by_conn {
            if let Some(c) = clients.get(&conn) {
                c.pending.fetch_sub(n, Ordering::Relaxed);
                c.host_pending.fetch_sub(n, Ordering::Relaxed);
            }
        }
    }

    /// Milliseconds since the node started.
    fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Client connection `conn` sent a frame.
    fn client_active(&self, conn: u64) {
        if let Some(c) = self.clients.lock().get(&conn) {
            c.last_active.store(self.uptime_ms(), Ordering::Relaxed);
        }
    }

    /// Takes a client slot of `host`'s: refused while the address is banned or already holds
    /// `limits.host_connections` connections. Returns the address's pending count.
    fn connect_host(&self, host: IpAddr) -> Result<Arc<AtomicUsize>, HostRefusal> {
        let mut hosts = self.hosts.lock();
        if hosts.len() >= MAX_HOSTS && !hosts.contains_key(&host) {
            forget_expired(&mut hosts);
            if hosts.len() >= MAX_HOSTS {
                return Err(HostRefusal::TooMany);
            }
        }
        let h = hosts.entry(host).or_default();
        if h.banned_until.is_some_and(|t| t > Instant::now()) {
            return Err(HostRefusal::Banned);
        }
        h.banned_until = None;
        if h.conns >= self.cluster.limits.host_connections {
            return Err(HostRefusal::TooMany);
        }
        h.conns += 1;
        Ok(h.pending.clone())
    }

    /// Gives back the client slot of connection `conn`, and its transactions still pending
    /// here to its address's count (their receipts find no client to release them from).
    fn disconnect_client(&self, conn: u64) {
        let mut clients = self.clients.lock();
        let Some(client) = clients.remove(&conn) else { return };
        client.host_pending.fetch_sub(client.pending.load(Ordering::Relaxed), Ordering::Relaxed);
        drop(clients);
        self.metrics.clients.dec();
        let mut hosts = self.hosts.lock();
        if let std::collections::hash_map::Entry::Occupied(mut e) = hosts.entry(client.host) {
            e.get_mut().conns = e.get().conns.saturating_sub(1);
            if e.get().conns == 0 && e.get().banned_until.is_none() {
                e.remove();
            }
        }
    }

    /// Refuses new client connections from `host` for `how_long`.
    fn ban(&self, host: IpAddr, how_long: Duration) {
        if how_long.is_zero() {
            return;
        }
        let mut hosts = self.hosts.lock();
        if hosts.len() >= MAX_HOSTS && !hosts.contains_key(&host) {
            forget_expired(&mut hosts);
            if hosts.len() >= MAX_HOSTS {
                warn!(%host, "too many addresses banned to record another");
                return;
            }
        }
        hosts.entry(host).or_default().banned_until = Some(Instant::now() + how_long);
        self.metrics.bans.inc();
    }

    /// True if a transaction of `signer` with `nonce` was admitted here and is not answered yet.
    fn is_admitted(&self, signer: u32, nonce: u64) -> bool {
        self.admitted.lock().contains_key(&(signer, nonce))
    }

    /// A hosted replica applied `height`, reaching `root`.
    fn set_position(&self, shard: u32, height: u64, root: [u8; 32]) {
        if let Some(e) = self.status.lock().iter_mut().find(|e| e.shard == shard) {
            e.height = height;
            e.root = root;
        }
    }

    /// A hosted replica holds the certificate of `height`.
    fn set_certified(&self, shard: u32, height: u64) {
        if let Some(e) = self.status.lock().iter_mut().find(|e| e.shard == shard) {
            e.certified = e.certified.max(height);
        }
    }

    /// The cluster file as last read.
    fn roster(&self) -> Arc<ClusterConfig> {
        self.roster.read().clone()
    }

    /// True if `node` hosts a replica of `shard`: by the cluster file's placement, or as a
    /// member (voter or learner) of the group as this node's replica sees it (a replaced node
    /// stays one until its group's membership change).
    fn is_member(&self, shard: u32, node: u32) -> bool {
        if shard as usize >= self.cluster.shards {
            return false;
        }
        let roster = self.roster();
        if (0..roster.replicas as u32).any(|r| roster.node_of(shard, r) == node) {
            return true;
        }
        // A replica not yet in its group (it waits to be added) takes Raft messages from any
        // node that hosts or hosted the shard: the leader adding it may be one the placement
        // has moved on from.
        self.groups.get(&shard).is_some_and(|g| {
            let metrics = g.raft.metrics();
            let m = metrics.borrow();
            let mut nodes = m.membership_config.membership().nodes().peekable();
            match nodes.peek() {
                None => roster.eligible(shard).contains(&node),
                Some(_) => nodes.any(|(id, _)| *id == NodeId::from(node)),
            }
        })
    }

    /// The certificate this node holds for `shard`'s block at `height`, if any.
    fn certificate(&self, shard: u32, height: u64) -> Result<Option<occam_shard::Certificate>, String> {
        match self.store.certificate(shard, height).map_err(|e| e.to_string())? {
            Some(bytes) => occam_shard::Certificate::decode(&bytes).map(Some).map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    /// The node leading `shard` as this node knows it for sure: its own replica's view, or a
    /// leader's recent cross-shard reply (`None`: no leader known now).
    fn known_leader(&self, shard: u32) -> Option<u32> {
        match self.groups.get(&shard) {
            Some(g) => g.leader(),
            None => self.leader_hints.lock().get(&shard).copied(),
        }
    }

    /// Every hosted replica's status, with its Raft group's view as of now.
    fn replica_statuses(&self) -> Vec<ReplicaStatus> {
        let mut all = self.status.lock().clone();
        for r in &mut all {
            if let Some(g) = self.groups.get(&r.shard) {
                let m = g.raft.metrics().borrow().clone();
                r.role = match m.state {
                    openraft::ServerState::Leader => RaftRole::Leader,
                    openraft::ServerState::Follower => RaftRole::Follower,
                    openraft::ServerState::Candidate => RaftRole::Candidate,
                    _ => RaftRole::Learner,
                };
                r.term = m.current_term;
                r.leader = m.current_leader.map(|n| n as u32);
                r.log_index = m.last_log_index.unwrap_or(0);
                r.applied_index = m.last_applied.map_or(0, |l| l.index);
                r.pending = g.depth.load(Ordering::Relaxed) as u64;
            }
        }
        all
    }
}

impl RaftGroups for Shared {
    fn violation(&self, from: NodeId, e: &crate::raft::network::RpcServeError) {
        self.metrics.bad_frames.inc();
        if let Some(suppressed) = self.bad_frame_log.admit() {
            warn!(peer = from, suppressed, "closing a peer's connection: {e}");
        }
    }

    fn raft(&self, group: occam_store::GroupId) -> Option<openraft::Raft<TypeConfig>> {
        self.groups.get(&group).map(|g| g.raft.clone())
    }

    fn is_member(&self, group: occam_store::GroupId, node: NodeId) -> bool {
        u32::try_from(node).is_ok_and(|n| Shared::is_member(self, group, n))
    }
}

/// openraft's configuration for a shard's group.
fn raft_config(chain_id: u64, shard: u32, s: &RaftSettings) -> Result<Arc<openraft::Config>, NodeError> {
    let config = openraft::Config {
        cluster_name: format!("occam-{chain_id:x}-shard{shard}"),
        heartbeat_interval: s.heartbeat_ms,
        election_timeout_min: s.election_min_ms,
        election_timeout_max: s.election_max_ms,
        // Each entry is a block of up to MAX_BLOCK_TXS transactions; a few per request keep an
        // AppendEntries well inside one frame.
        max_payload_entries: 4,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(s.snapshot_every),
        max_in_snapshot_log_to_keep: s.keep_logs,
        snapshot_max_chunk_size: crate::raft::network::SNAPSHOT_CHUNK_BYTES,
        install_snapshot_timeout: 10_000,
        ..Default::default()
    };
    config.validate().map(Arc::new).map_err(|e| NodeError::Raft(format!("shard {shard}: {e}")))
}

/// What a node needs to reach peers it learns of after it started.
struct Dialer {
    endpoint: quinn::Endpoint,
    identity: crate::tls::Identity,
    runtime: tokio::runtime::Handle,
    pinned: crate::tls::PinnedCerts,
    raft: Arc<RaftPeers>,
}

impl Dialer {
    /// Pins, links to and adds to Raft's peers every node of `cluster` (but `me`) not in
    /// `links` yet.
    fn dial_new(&self, me: u32, cluster: &ClusterConfig, links: &RwLock<HashMap<u32, Link>>) -> Result<(), NodeError> {
        for peer in cluster.nodes.iter().filter(|p| p.id != me) {
            if links.read().contains_key(&peer.id) {
                continue;
            }
            let cert = occam_engine::key::hex_decode(&peer.cert)
                .ok_or_else(|| NodeError::Engine(format!("node {}: its certificate is not hex", peer.id)))?;
            self.pinned.add(peer.id, cert.clone())?;
            let config = client_config(&cert, Some(&self.identity))?;
            let (frames, rx) = crate::transport::frame_queue(crate::transport::WRITER_QUEUE, LINK_BYTES);
            self.runtime.spawn(run_link(self.endpoint.clone(), config.clone(), peer.addr, peer.id, rx));
            links.write().insert(peer.id, Link { frames });
            self.raft.add(PeerAddr::new(peer.id, peer.addr, config));
        }
        Ok(())
    }
}

/// A running node. Dropping it without [`Node::shutdown`] leaves its threads running until the
/// process exits.
pub struct Node {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
    endpoint: quinn::Endpoint,
    threads: Vec<std::thread::JoinHandle<()>>,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    store: Store,
}

impl Node {
    /// Opens the node's store, starts its Raft groups, binds its sockets and starts its
    /// threads. On the very first start of a cluster, the node hosting replica 0 of a shard
    /// initializes the shard's group and stands for election, so initial leadership is spread
    /// like the replicas.
    pub fn start(setup: NodeSetup) -> Result<Node, NodeError> {
        let NodeSetup { node, cluster, keys, exec_threads, verify_threads, genesis, registry, socket, hold_blocks, data_dir, cluster_file } =
            setup;
        cluster.check()?;
        let entry = cluster.nodes.get(node as usize).ok_or_else(|| NodeError::Engine(format!("node {node} is not in the cluster")))?;
        if cluster.is_replaced(node) {
            return Err(NodeError::Engine(format!(
                "node {node} was replaced for good by node {} (cluster file); it hosts no replica any more",
                cluster.current(node)
            )));
        }
        if entry.bls_key != occam_engine::key::hex_encode(&keys.bls.public_key().to_bytes()) {
            return Err(NodeError::Engine(format!("node {node}'s BLS key is not the one the cluster file lists for it")));
        }
        // The store first: a data directory that is not this node's refuses the start before
        // any socket is bound.
        let store = Store::open(&data_dir, StoreIdentity::new(cluster.chain_id, node), &StoreOptions::default())?;
        let pinned = cluster.pinned()?;
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name(format!("occam-net-{node}")).enable_all().build()?;
        let server = server_config(&keys.tls, pinned.clone())?;
        let endpoint = {
            let _guard = runtime.enter();
            match socket {
                Some(socket) => {
                    quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server), socket, Arc::new(quinn::TokioRuntime))?
                }
                None => quinn::Endpoint::server(server, entry.addr)?,
            }
        };
        let addr = endpoint.local_addr()?;
        let partitioner = cluster_partitioner(&cluster);
        let metrics = Arc::new(Metrics::new(node));
        let verifier = Arc::new(BatchVerifier::new(verify_threads).map_err(|e| NodeError::Engine(e.to_string()))?);
        let check = SigCheck { chain_id: cluster.chain_id, registry: registry.clone(), verifier: verifier.clone() };

        // Links and Raft connections to every other node (and to nodes the cluster file lists
        // later: see `membership`).
        let raft_peers = RaftPeers::new(endpoint.clone(), Vec::new(), RAFT_RPC_TIMEOUT);
        let dialer = Dialer {
            endpoint: endpoint.clone(),
            identity: keys.tls.clone(),
            runtime: runtime.handle().clone(),
            pinned: pinned.clone(),
            raft: raft_peers.clone(),
        };
        let links = RwLock::new(HashMap::new());
        dialer.dial_new(node, &cluster, &links)?;

        // One Raft group per hosted replica.
        let hosted = cluster.hosted_by(node);
        let mut groups = HashMap::new();
        let mut group_starts = Vec::new();
        let mut status = Vec::new();
        let mut genesis = Some(genesis);
        let mut genesis_entries: Option<Vec<(Key, Value)>> = None;
        for &(shard, replica) in &hosted {
            if store.applied(shard)?.is_none() {
                if genesis_entries.is_none() {
                    let state = match genesis.take() {
                        Some(Genesis::State(s)) => s,
                        Some(Genesis::Build(build)) => {
                            Arc::new(build().map_err(|e| NodeError::Engine(format!("building the genesis state: {e}")))?)
                        }
                        None => return Err(NodeError::Engine("the genesis state was already consumed".into())),
                    };
                    info!(node, "first start: writing the genesis state to the store");
                    genesis_entries = Some(state.sorted_entries());
                }
                let all = genesis_entries.as_deref().unwrap_or_default();
                let entries: Vec<(Key, Value)> = all.iter().filter(|(k, _)| partitioner.shard_of(k) == shard).cloned().collect();
                store.write_genesis(shard, &entries)?;
            }
            let (events, rx) = crossbeam_channel::bounded(GROUP_QUEUE);
            let state = Arc::new(RwLock::new(CommittedState::new()));
            let verified = Arc::new(Mutex::new(HashSet::new()));
            let shard_metrics = metrics.shard(shard);
            let applier = NodeApplier {
                shard,
                state: state.clone(),
                exec: Mutex::new(executor_by_name::<SignedVm>("parallel", exec_threads).map_err(|e| NodeError::Engine(e.to_string()))?),
                vm: SignedVm::new(registry.clone()),
                check: check.clone(),
                verified: verified.clone(),
                events: events.clone(),
                store: store.clone(),
                metrics: shard_metrics.clone(),
                store_write_seconds: metrics.store_write_seconds.clone(),
                last: None,
                epoch: (0, Vec::new()),
            };
            let sm = StateMachine::open(store.clone(), shard, applier)?;
            let point = sm.applied_point();
            let certified = store.last_certified(shard)?.unwrap_or(0);
            status.push(ReplicaStatus { shard, replica, height: point.height, root: point.root.0, certified, ..Default::default() });
            let log = LogStore::new(store.clone(), shard).observed(metrics.raft_append_seconds.clone(), shard_metrics.commit_index.clone());
            let config = raft_config(cluster.chain_id, shard, &cluster.raft)?;
            let raft = runtime
                .block_on(openraft::Raft::new(u64::from(node), config, raft_peers.group(shard), log, sm))
                .map_err(|e| NodeError::Raft(format!("shard {shard}: {e}")))?;
            let initialized = runtime.block_on(raft.is_initialized()).map_err(|e| NodeError::Raft(format!("shard {shard}: {e}")))?;
            // A cluster's first start: the original node hosting replica 0 starts the group. A
            // node that replaces another joins groups that exist (their leaders add it).
            if !initialized && replica == 0 && entry.replaces.is_none() {
                let members: std::collections::BTreeSet<NodeId> =
                    (0..cluster.replicas as u32).map(|r| u64::from(cluster.node_of(shard, r))).collect();
                runtime.block_on(raft.initialize(members)).map_err(|e| NodeError::Raft(format!("shard {shard}: initialize: {e}")))?;
                info!(shard, "initialized the shard's Raft group");
            }
            let handle = GroupHandle { events, depth: Arc::new(AtomicUsize::new(0)), raft, state };
            groups.insert(shard, handle.clone());
            let limits = &cluster.limits;
            let ctx = GroupCtx {
                shard,
                replica,
                handle,
                store: store.clone(),
                bls: keys.bls.clone(),
                check: check.clone(),
                metrics: shard_metrics,
                verified,
                block_txs: if hold_blocks { usize::MAX } else { limits.block_txs },
                block_time: if hold_blocks { Duration::MAX } else { Duration::from_millis(limits.block_ms) },
                pipeline: limits.pipeline,
                runtime: runtime.handle().clone(),
            };
            group_starts.push((ctx, rx));
        }

        // The cross-shard coordinator runs with shard 0's leader: every node hosting a replica
        // of shard 0 has one, idle while that replica does not lead.
        let mut coordinator = None;
        let mut coord_start = None;
        if let (Some(group), true) = (groups.get(&0), cluster.shards > 1) {
            let (tx, rx) = crossbeam_channel::bounded(GROUP_QUEUE);
            let depth = Arc::new(AtomicUsize::new(0));
            coordinator = Some((tx.clone(), depth.clone()));
            let exec = executor_by_name::<SignedVm>("sequential", 1).map_err(|e| NodeError::Engine(e.to_string()))?;
            let ctx = CoordCtx {
                exec,
                vm: SignedVm::new(registry.clone()),
                metrics: metrics.shard(u32::MAX),
                group: group.clone(),
                runtime: runtime.handle().clone(),
                events: tx,
            };
            let limits = cluster.limits.clone();
            coord_start = Some(move |shared: Arc<Shared>| {
                coordinator::run_coordinator(ctx, rx, depth, limits.block_txs, Duration::from_millis(limits.block_ms), shared)
            });
        }
        let (admission_tx, admission_rx) = crossbeam_channel::bounded(admission::ADMISSION_QUEUE);
        let shared = Arc::new(Shared {
            node,
            coordinator,
            check: check.clone(),
            admission: admission_tx,
            hosts: Mutex::new(HashMap::new()),
            bad_frame_log: LogGate::default(),
            started: Instant::now(),
            partitioner,
            clients: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            links,
            groups,
            leader_hints: Mutex::new(HashMap::new()),
            status: Mutex::new(status),
            metrics: metrics.clone(),
            stopping: AtomicBool::new(false),
            admitted: Mutex::new(HashMap::new()),
            roster: RwLock::new(Arc::new(cluster.clone())),
            dialer,
            cluster: cluster.clone(),
            store: store.clone(),
        });
        let mut threads = Vec::new();
        for (ctx, rx) in group_starts {
            let shared = shared.clone();
            let name = format!("occam-shard{}-r{}", ctx.shard, ctx.replica);
            threads.push(std::thread::Builder::new().name(name).spawn(move || group::run_group(ctx, rx, shared))?);
        }
        if let Some(start) = coord_start {
            let shared = shared.clone();
            threads.push(std::thread::Builder::new().name("occam-coordinator".into()).spawn(move || start(shared))?);
        }
        {
            let shared = shared.clone();
            let run = move || admission::run_admission(admission_rx, shared);
            threads.push(std::thread::Builder::new().name("occam-admission".into()).spawn(run)?);
        }
        runtime.spawn(ingress::accept_loop(endpoint.clone(), shared.clone(), pinned));
        runtime.spawn(summarise_bad_frames(Arc::downgrade(&shared)));
        if let Some(path) = cluster_file {
            runtime.spawn(membership::watch_cluster_file(shared.clone(), path));
        }
        for &shard in shared.groups.keys() {
            runtime.spawn(membership::keep_placement(shared.clone(), shard));
        }
        let metrics_addr = match entry.metrics {
            Some(a) => Some(runtime.block_on(crate::metrics::serve(a, metrics.clone(), scrape_state(&shared)))?),
            None => None,
        };
        info!(node, %addr, shards = ?hosted, data_dir = %data_dir.display(), "node started");
        Ok(Node { shared, runtime: Some(runtime), endpoint, threads, addr, metrics_addr, store })
    }

    /// The QUIC address the node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The metrics endpoint's address, if it has one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The node's replicas' positions, with their Raft groups' views.
    pub fn status(&self) -> Vec<ReplicaStatus> {
        self.shared.replica_statuses()
    }

    /// Every entry of this node's replica of `shard`, sorted by key (`None` if it hosts no
    /// replica of it, or the replica does not answer within 5 s). For tests and inspection:
    /// it copies the whole shard.
    pub fn snapshot(&self, shard: u32) -> Option<Vec<(Key, Value)>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.shared.groups.get(&shard)?.events.send(GroupEvent::Snapshot(tx)).ok()?;
        rx.recv_timeout(Duration::from_secs(5)).ok()
    }

    /// The node's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// Blocks until the process is asked to stop (Ctrl-C or SIGTERM).
    pub fn wait_for_signal(&self) {
        if let Some(rt) = &self.runtime {
            rt.block_on(async {
                #[cfg(unix)]
                {
                    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
                    tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
                }
                #[cfg(not(unix))]
                let _ = tokio::signal::ctrl_c().await;
            });
        }
    }

    /// The node's store (for inspection: certificates, blocks, disk use).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The current leader of `shard` as this node's replica sees it (`None` if this node hosts
    /// no replica of it, or the group has no leader now).
    pub fn leader(&self, shard: u32) -> Option<u32> {
        self.shared.groups.get(&shard).and_then(GroupHandle::leader)
    }

    /// Raft's view of this node's replica of `shard`: role, term, leader, log and applied
    /// indexes, membership (`None` if this node hosts no replica of it).
    pub fn raft_metrics(&self, shard: u32) -> Option<openraft::RaftMetrics<NodeId, openraft::EmptyNode>> {
        self.shared.groups.get(&shard).map(|g| g.raft.metrics().borrow().clone())
    }

    /// Closes every connection, stops the node's Raft groups and threads, and closes its
    /// store. Transactions pending and not yet certified are lost (they were never
    /// acknowledged with a receipt); everything applied is in the store.
    pub fn shutdown(mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(rt) = &self.runtime {
            for (shard, g) in &self.shared.groups {
                if let Err(e) = rt.block_on(g.raft.shutdown()) {
                    warn!(shard, "stopping the shard's Raft group: {e}");
                }
            }
        }
        self.endpoint.close(close::DONE.into(), b"shutting down");
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(rt) = self.runtime.take() {
            // Let the close frames go out, so peers drop their connections now rather than
            // after the idle timeout.
            let endpoint = self.endpoint.clone();
            rt.block_on(async move {
                let _ = tokio::time::timeout(Duration::from_millis(500), endpoint.wait_idle()).await;
            });
            rt.shutdown_timeout(Duration::from_millis(200));
        }
        info!(node = self.shared.node, "node stopped");
    }
}

/// Every minute, says how many bad-frame log lines were held back (until the node stops).
async fn summarise_bad_frames(shared: std::sync::Weak<Shared>) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    every.tick().await;
    loop {
        every.tick().await;
        let Some(shared) = shared.upgrade() else { return };
        let held = shared.bad_frame_log.summary();
        if held > 0 {
            warn!(held, total = shared.metrics.bad_frames.get(), "bad frames not logged in the last minute");
        }
    }
}

fn scrape_state(shared: &Arc<Shared>) -> crate::metrics::ScrapeState {
    let s = Arc::downgrade(shared);
    Arc::new(move || s.upgrade().map(|s| (s.replica_statuses(), Some(s.store.disk_bytes()))).unwrap_or_default())
}

#[cfg(test)]
mod gate_tests {
    use super::LogGate;

    #[test]
    fn a_log_gate_passes_a_few_lines_a_minute_and_counts_the_rest() {
        let gate = LogGate::default();
        for _ in 0..LogGate::PER_MINUTE {
            assert_eq!(gate.admit(), Some(0));
        }
        for _ in 0..5 {
            assert_eq!(gate.admit(), None);
        }
        assert_eq!(gate.summary(), 5);
        assert_eq!(gate.summary(), 0);
        assert_eq!(gate.admit(), None);
    }
}
