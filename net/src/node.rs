//! The node runtime: QUIC endpoints, shard replicas on threads, the protocol cores between them.
//!
//! A node hosts the replicas the cluster file places on it. Its parts:
//!
//! - **Ingress** (tokio tasks): accepts QUIC connections. A connection with a pinned node
//!   certificate is a peer; one without a client certificate is a client; any other is refused
//!   in the handshake. Each connection's frames are read by [`crate::transport::read_frame`];
//!   a malformed, oversized or forbidden frame closes that connection only. A client's batch is
//!   admitted to a leader's mempool if this node leads the batch's shard, the mempool has room
//!   (`limits.mempool`) and the client has fewer than `limits.per_client` transactions pending
//!   here; otherwise the whole batch is refused with a reason. Admission decodes the batch but
//!   does no curve arithmetic: signatures are checked by the leader thread, in batches.
//! - **Leaders** (one thread per led shard): take up to `block_txs` pending transactions (or
//!   fewer once the oldest has waited `block_ms`), validate and batch-verify their signatures
//!   on the node's verification threads, aggregate the valid signatures into one, execute the
//!   block with the parallel executor, and hand it to [`LeaderCore`], which proposes it and
//!   collects votes. When a block is certified, each client gets one `Receipts` frame with
//!   the certificate and its transactions' statuses.
//! - **Replicas** (one thread per followed shard): hand proposals to [`ReplicaCore`], verify
//!   the block's aggregate signature, execute, and vote.
//! - **Links** to every other node: one outgoing QUIC connection each, with mutual TLS, fed by
//!   a bounded queue and re-dialled when it fails. A message for a peer whose queue is full is
//!   dropped; the protocol recovers: leaders resend proposals that are not yet certified, a
//!   replica that missed a certified one asks for it again (`Sync`), and the coordinator
//!   resends cross-shard requests.
//! - **The coordinator** (on shard 0's leader): runs cross-shard transactions in rounds of the
//!   read-exchange protocol (`occam_shard::protocol`) with the participant shards' leaders.
//! - **Metrics**: a Prometheus text endpoint (see [`crate::metrics`]).
//!
//! Limits: at most [`MAX_CLIENTS`] client connections, client frames of at most
//! [`crate::transport::MAX_CLIENT_FRAME_LEN`], [`MAX_READS_IN_FLIGHT`] reads per client; a
//! client whose outgoing queue is full (it does not read) is disconnected.

use crate::config::{ClusterConfig, NodeKeys};
use crate::core::{CoreError, LeaderCore, LeaderOut, ReplicaCore, ReplicaStep};
use crate::metrics::{Metrics, ShardMetrics};
use crate::tls::{client_config, peer_cert, server_config, PinnedCerts};
use crate::transport::{close, frame, read_frame, spawn_writer};
use crate::wire::{Message, Proposal, ReceiptEntry, Refusal, ReplicaStatus, TxStatus, MAX_FRAME_LEN};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use occam_engine::crypto::{BatchVerifier, KeyRegistry, SignedMessage};
use occam_engine::exec::{executor_by_name, BlockExecutor};
use occam_engine::key::Key;
use occam_engine::native::signed::{nonce_key, AggregatedBlock, RawSignedTx, SignedFailure, SignedOutput, SignedVm, TxHeader, VerifiedTx};
use occam_engine::native::NativeVm;
use occam_engine::state::{CommittedState, WriteSet};
use occam_engine::value::Value;
use occam_engine::vm::Vm;
use occam_shard::partition::{ModuloPartitioner, Partitioner};
use occam_shard::protocol::{Action, Address, Coordinator, Entries, Envelope, Message as CrossMessage, Participant, Step};
use occam_shard::{Certificate, ValidatorSet};
use parking_lot::Mutex;
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

/// How often leader and replica threads wake up with nothing to do (resends, partial blocks).
const TICK: Duration = Duration::from_millis(5);
/// A leader resends a proposal to replicas that have not voted after this long.
const RESEND_AFTER: Duration = Duration::from_millis(500);
/// A replica asks its leader for missed blocks at most this often.
const SYNC_EVERY: Duration = Duration::from_millis(200);
/// The most client connections a node serves at once.
pub const MAX_CLIENTS: usize = 4096;
/// The most reads one client may have unanswered at one node.
pub const MAX_READS_IN_FLIGHT: usize = 8;
/// Events a leader handles before it looks at its mempool again.
const EVENTS_PER_TURN: usize = 1024;

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
    /// The whole genesis state (each replica keeps its shard's part).
    pub genesis: Arc<CommittedState>,
    /// The transaction signers' registry.
    pub registry: Arc<KeyRegistry>,
    /// A socket already bound to the node's address (tests bind ports before starting
    /// nodes); `None` binds the cluster file's address.
    pub socket: Option<std::net::UdpSocket>,
    /// Admit transactions but propose no blocks (for measuring ingress alone).
    pub hold_blocks: bool,
}

/// The shard a transaction belongs to: the one shard owning its signer's nonce and every key
/// it declares; `None` if they span shards or the body does not declare its keys.
pub fn route_tx(partitioner: &dyn Partitioner, header: &TxHeader) -> Option<u32> {
    route_tx_with(partitioner, header, &mut Vec::with_capacity(8))
}

/// [`route_tx`] with a caller's buffer for the keys, for loops over many transactions.
pub fn route_tx_with(partitioner: &dyn Partitioner, header: &TxHeader, keys: &mut Vec<Key>) -> Option<u32> {
    keys.clear();
    keys.push(nonce_key(header.signer));
    if !NativeVm.declared_keys(&header.body, keys) {
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
}

/// A replica's whole state, sorted by key, sent back to [`Node::snapshot`].
type SnapshotReply = crossbeam_channel::Sender<Vec<(Key, Value)>>;

enum LeaderEvent {
    Submit(Vec<(RawSignedTx, Origin)>, Instant),
    Sync { replica: u32, from: u64 },
    Vote(Box<occam_shard::SignedVote>),
    Cross(CrossMessage),
    Snapshot(SnapshotReply),
    Read { conn: u64, id: u64, keys: Vec<Key> },
}

enum ReplicaEvent {
    Propose(Box<Proposal>),
    Commit(Box<Certificate>),
    Snapshot(SnapshotReply),
}

enum CoordEvent {
    Submit(Vec<(RawSignedTx, Origin)>, Instant),
    Cross(CrossMessage),
    Commit(Box<Certificate>),
}

struct Client {
    conn: quinn::Connection,
    frames: mpsc::Sender<Vec<u8>>,
    pending: Arc<AtomicUsize>,
    reads: Arc<AtomicUsize>,
}

struct Shared {
    node: u32,
    cluster: ClusterConfig,
    partitioner: Arc<dyn Partitioner>,
    clients: Mutex<HashMap<u64, Client>>,
    next_conn: AtomicU64,
    links: HashMap<u32, Link>,
    leaders: HashMap<u32, (Sender<LeaderEvent>, Arc<AtomicUsize>)>,
    replicas: HashMap<u32, Sender<ReplicaEvent>>,
    /// The cross-shard coordinator, on the node leading shard 0.
    coordinator: Option<(Sender<CoordEvent>, Arc<AtomicUsize>)>,
    status: Mutex<Vec<ReplicaStatus>>,
    metrics: Arc<Metrics>,
    stopping: AtomicBool,
}

impl Shared {
    fn send_to_node(&self, node: u32, message: &Message) {
        if node == self.node {
            // The coordinator and shard 0's leader share a node.
            if let Err(why) = dispatch(self, 0, Some(node), message.clone()) {
                error!("a message to this node itself was refused: {why}");
            }
            return;
        }
        let Some(link) = self.links.get(&node) else { return };
        if let Some(f) = frame(message) {
            // Bounded in frames and in bytes: proposals resent to a peer that is down must not
            // pile up in memory.
            let len = f.len();
            if link.queued.fetch_add(len, Ordering::Relaxed) + len > LINK_BYTES {
                link.queued.fetch_sub(len, Ordering::Relaxed);
                debug!(peer = node, "link queue full; message dropped (the protocol recovers)");
                return;
            }
            if link.frames.try_send(f).is_err() {
                link.queued.fetch_sub(len, Ordering::Relaxed);
                debug!(peer = node, "link queue full or closed; message dropped (the protocol recovers)");
            }
        }
    }

    fn send_to_client(&self, conn: u64, message: &Message) {
        let Some((frames, connection)) = self.clients.lock().get(&conn).map(|c| (c.frames.clone(), c.conn.clone())) else { return };
        if let Some(f) = frame(message) {
            if frames.try_send(f).is_err() {
                // Its queue is full: it does not read. Buffering more would let one client hold
                // the node's memory; dropping frames silently would lose its receipts.
                self.metrics.receipts_dropped.fetch_add(1, Ordering::Relaxed);
                warn!(conn, "client does not read its answers; closing the connection");
                connection.close(close::NOT_READING.into(), b"not reading");
            }
        }
    }

    /// A read of `conn` was answered.
    fn read_done(&self, conn: u64) {
        if let Some(c) = self.clients.lock().get(&conn) {
            c.reads.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Marks `n` transactions of `conn` as no longer pending.
    fn release(&self, conn: u64, n: usize) {
        if let Some(c) = self.clients.lock().get(&conn) {
            c.pending.fetch_sub(n, Ordering::Relaxed);
        }
    }

    fn set_status(&self, s: ReplicaStatus) {
        let mut all = self.status.lock();
        if let Some(e) = all.iter_mut().find(|e| e.shard == s.shard) {
            *e = s;
        }
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
}

impl Node {
    /// Binds the node's sockets and starts its threads.
    pub fn start(setup: NodeSetup) -> Result<Node, NodeError> {
        let NodeSetup { node, cluster, keys, exec_threads, verify_threads, genesis, registry, socket, hold_blocks } = setup;
        cluster.check()?;
        let entry = cluster.nodes.get(node as usize).ok_or_else(|| NodeError::Engine(format!("node {node} is not in the cluster")))?;
        if entry.bls_key != occam_engine::key::hex_encode(&keys.bls.public_key().to_bytes()) {
            return Err(NodeError::Engine(format!("node {node}'s BLS key is not the one the cluster file lists for it")));
        }
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

        // Links to every other node.
        let mut links = HashMap::new();
        for peer in &cluster.nodes {
            if peer.id == node {
                continue;
            }
            let config = client_config(pinned.cert_of(peer.id).expect("pinned every node"), Some(&keys.tls))?;
            let (tx, rx) = mpsc::channel(crate::transport::WRITER_QUEUE);
            let queued = Arc::new(AtomicUsize::new(0));
            runtime.spawn(run_link(endpoint.clone(), config, peer.addr, peer.id, rx, queued.clone()));
            links.insert(peer.id, Link { frames: tx, queued });
        }

        // Replica threads.
        let hosted = cluster.hosted_by(node);
        let chain_id = cluster.chain_id;
        let mut leaders = HashMap::new();
        let mut replicas = HashMap::new();
        let mut starts: Vec<Box<dyn FnOnce(Arc<Shared>) + Send>> = Vec::new();
        let mut status = Vec::new();
        for &(shard, replica) in &hosted {
            let set = cluster.validator_set(shard)?;
            let state = shard_state(&genesis, &*partitioner, shard);
            status.push(ReplicaStatus { shard, replica, height: 0, root: state.root().0, pending: 0 });
            let exec = executor_by_name::<SignedVm>("parallel", exec_threads).map_err(|e| NodeError::Engine(e.to_string()))?;
            let shard_metrics = metrics.shard(shard);
            let ctx = ReplicaCtx {
                shard,
                state,
                exec,
                verifier: verifier.clone(),
                registry: registry.clone(),
                keys: keys.clone(),
                chain_id: cluster.chain_id,
                metrics: shard_metrics,
            };
            if replica == 0 {
                let (tx, rx) = crossbeam_channel::unbounded();
                let depth = Arc::new(AtomicUsize::new(0));
                leaders.insert(shard, (tx, depth.clone()));
                let limits = cluster.limits.clone();
                starts.push(Box::new(move |shared| {
                    let core = LeaderCore::new(chain_id, shard, set, limits.pipeline, RESEND_AFTER);
                    let block_txs = if hold_blocks { usize::MAX } else { limits.block_txs };
                    let block_time = if hold_blocks { Duration::MAX } else { Duration::from_millis(limits.block_ms) };
                    run_leader(ctx, core, rx, depth, block_txs, block_time, shared)
                }));
            } else {
                let (tx, rx) = crossbeam_channel::bounded(1024);
                replicas.insert(shard, tx);
                starts.push(Box::new(move |shared| run_replica(ctx, ReplicaCore::new(chain_id, shard, replica), set, rx, shared)));
            }
        }

        // The cross-shard coordinator lives on shard 0's leader.
        let mut coordinator = None;
        let mut coord_start = None;
        if cluster.leader_of(0) == node && cluster.shards > 1 {
            let (tx, rx) = crossbeam_channel::unbounded();
            let depth = Arc::new(AtomicUsize::new(0));
            coordinator = Some((tx, depth.clone()));
            let exec = executor_by_name::<SignedVm>("sequential", 1).map_err(|e| NodeError::Engine(e.to_string()))?;
            let ctx = ReplicaCtx {
                shard: u32::MAX,
                state: CommittedState::new(),
                exec,
                verifier: verifier.clone(),
                registry: registry.clone(),
                keys: keys.clone(),
                chain_id: cluster.chain_id,
                metrics: metrics.shard(u32::MAX),
            };
            let limits = cluster.limits.clone();
            coord_start = Some(move |shared: Arc<Shared>| {
                run_coordinator(ctx, rx, depth, limits.block_txs, Duration::from_millis(limits.block_ms), shared)
            });
        }
        let shared = Arc::new(Shared {
            node,
            coordinator,
            partitioner,
            clients: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            links,
            leaders,
            replicas,
            status: Mutex::new(status),
            metrics: metrics.clone(),
            stopping: AtomicBool::new(false),
            cluster: cluster.clone(),
        });
        let mut threads = Vec::new();
        for (start, &(shard, replica)) in starts.into_iter().zip(&hosted) {
            let shared = shared.clone();
            let name = format!("occam-shard{shard}-r{replica}");
            threads.push(std::thread::Builder::new().name(name).spawn(move || start(shared))?);
        }
        if let Some(start) = coord_start {
            let shared = shared.clone();
            threads.push(std::thread::Builder::new().name("occam-coordinator".into()).spawn(move || start(shared))?);
        }
        runtime.spawn(accept_loop(endpoint.clone(), shared.clone(), pinned));
        let metrics_addr = match entry.metrics {
            Some(a) => Some(runtime.block_on(crate::metrics::serve(a, metrics.clone(), shared_status(&shared)))?),
            None => None,
        };
        info!(node, %addr, shards = ?hosted, "node started");
        Ok(Node { shared, runtime: Some(runtime), endpoint, threads, addr, metrics_addr })
    }

    /// The QUIC address the node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The metrics endpoint's address, if it has one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The node's replicas' positions.
    pub fn status(&self) -> Vec<ReplicaStatus> {
        self.shared.status.lock().clone()
    }

    /// Every entry of this node's replica of `shard`, sorted by key (`None` if it hosts no
    /// replica of it, or the replica does not answer within 5 s). For tests and inspection:
    /// it copies the whole shard.
    pub fn snapshot(&self, shard: u32) -> Option<Vec<(Key, Value)>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if let Some((leader, _)) = self.shared.leaders.get(&shard) {
            leader.send(LeaderEvent::Snapshot(tx)).ok()?;
        } else {
            self.shared.replicas.get(&shard)?.send(ReplicaEvent::Snapshot(tx)).ok()?;
        }
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

    /// Closes every connection and stops the node's threads. Transactions pending and not yet
    /// certified are lost (they were never acknowledged with a receipt).
    pub fn shutdown(mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
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

fn shared_status(shared: &Arc<Shared>) -> Arc<dyn Fn() -> Vec<ReplicaStatus> + Send + Sync> {
    let s = Arc::downgrade(shared);
    Arc::new(move || s.upgrade().map(|s| s.status.lock().clone()).unwrap_or_default())
}

fn shard_state(genesis: &CommittedState, partitioner: &dyn Partitioner, shard: u32) -> CommittedState {
    CommittedState::from_entries(genesis.sorted_entries().into_iter().filter(|(k, _)| partitioner.shard_of(k) == shard))
}

/// The bytes of frames a link to one peer holds before it drops new ones.
const LINK_BYTES: usize = 64 << 20;

/// The queue of frames to one peer node.
struct Link {
    frames: mpsc::Sender<Vec<u8>>,
    /// Bytes queued and not yet written.
    queued: Arc<AtomicUsize>,
}

/// Keeps one outgoing connection to `peer` and writes the queued frames on it, re-dialling
/// when it fails. Frames queued while it is down wait (up to the queue's bounds).
async fn run_link(
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    addr: SocketAddr,
    peer: u32,
    mut rx: mpsc::Receiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
) {
    let name = crate::tls::node_name(peer);
    let mut backoff = Duration::from_millis(50);
    loop {
        let conn = match endpoint.connect_with(config.clone(), addr, &name) {
            Ok(connecting) => connecting.await,
            Err(e) => {
                error!(peer, "cannot dial: {e}");
                return;
            }
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                debug!(peer, "dial failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        info!(peer, "link up");
        let Ok(mut send) = conn.open_uni().await else { continue };
        loop {
            let Some(frame) = rx.recv().await else { return };
            queued.fetch_sub(frame.len(), Ordering::Relaxed);
            if let Err(e) = send.write_all(&frame).await {
                warn!(peer, "link lost: {e}");
                break;
            }
        }
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>, pinned: PinnedCerts) {
    while let Some(incoming) = endpoint.accept().await {
        let shared = shared.clone();
        let pinned = pinned.clone();
        tokio::spawn(async move {
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    // An unknown certificate ends here, in the handshake.
                    warn!("refused a connection: {e}");
                    return;
                }
            };
            serve_connection(conn, shared, pinned).await;
        });
    }
}

async fn serve_connection(conn: quinn::Connection, shared: Arc<Shared>, pinned: PinnedCerts) {
    let peer = peer_cert(&conn).and_then(|c| pinned.node_of(&c));
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    if peer.is_none() {
        let mut clients = shared.clients.lock();
        if clients.len() >= MAX_CLIENTS {
            drop(clients);
            warn!(remote = %conn.remote_address(), "refused a client: {MAX_CLIENTS} are connected");
            conn.close(close::BUSY.into(), b"too many clients");
            return;
        }
        let client = Client {
            conn: conn.clone(),
            frames: spawn_writer(conn.clone()),
            pending: Arc::new(AtomicUsize::new(0)),
            reads: Arc::new(AtomicUsize::new(0)),
        };
        clients.insert(id, client);
        shared.metrics.clients.fetch_add(1, Ordering::Relaxed);
    }
    // Clients send batches and reads; nodes also send proposals with cross-shard writes.
    let max_frame = if peer.is_some() { MAX_FRAME_LEN } else { crate::transport::MAX_CLIENT_FRAME_LEN };
    debug!(conn = id, ?peer, remote = %conn.remote_address(), "connection");
    while let Ok(mut recv) = conn.accept_uni().await {
        let shared = shared.clone();
        let conn = conn.clone();
        tokio::spawn(async move {
            loop {
                match read_frame(&mut recv, max_frame).await {
                    Ok(Some(m)) => {
                        if let Err(why) = dispatch(&shared, id, peer, m) {
                            warn!(conn = id, ?peer, "closing the connection: {why}");
                            shared.metrics.bad_frames.fetch_add(1, Ordering::Relaxed);
                            conn.close(close::FORBIDDEN.into(), why.as_bytes());
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(crate::transport::FrameError::Wire(e)) => {
                        error!(conn = id, ?peer, remote = %conn.remote_address(), "bad frame, closing the connection: {e}");
                        shared.metrics.bad_frames.fetch_add(1, Ordering::Relaxed);
                        conn.close(close::PROTOCOL.into(), e.to_string().as_bytes());
                        return;
                    }
                    Err(e) => {
                        debug!(conn = id, "stream ended: {e}");
                        return;
                    }
                }
            }
        });
    }
    if shared.clients.lock().remove(&id).is_some() {
        shared.metrics.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Handles one message from connection `conn` (from node `peer`, or a client). An error closes
/// the connection.
fn dispatch(shared: &Shared, conn: u64, peer: Option<u32>, m: Message) -> Result<(), &'static str> {
    match (m, peer) {
        (Message::Submit { batch, txs }, None) => {
            let refuse = |reason| shared.send_to_client(conn, &Message::Refused { batch, reason });
            match admit(shared, conn, batch, txs) {
                Ok(()) => {}
                Err(reason) => {
                    shared.metrics.refused(reason);
                    refuse(reason)
                }
            }
            Ok(())
        }
        (Message::Read { id, keys }, None) => {
            let leader = route_keys(&*shared.partitioner, &keys).and_then(|s| shared.leaders.get(&s));
            let Some((tx, _)) = leader else {
                shared.send_to_client(conn, &Message::Refused { batch: id, reason: Refusal::NotLeader });
                return Ok(());
            };
            let reads = shared.clients.lock().get(&conn).map(|c| c.reads.clone());
            let Some(reads) = reads else { return Ok(()) };
            if reads.fetch_add(1, Ordering::Relaxed) >= MAX_READS_IN_FLIGHT {
                reads.fetch_sub(1, Ordering::Relaxed);
                shared.send_to_client(conn, &Message::Refused { batch: id, reason: Refusal::Throttled });
                return Ok(());
            }
            if tx.send(LeaderEvent::Read { conn, id, keys }).is_err() {
                reads.fetch_sub(1, Ordering::Relaxed);
            }
            Ok(())
        }
        (Message::StatusRequest, None) => {
            shared.send_to_client(conn, &Message::Status(shared.status.lock().clone()));
            Ok(())
        }
        (Message::Vote(v), Some(from)) => {
            let shard = v.vote.shard;
            if from != shared.cluster.node_of(shard, v.signer) {
                return Err("a vote signed for another node's replica");
            }
            if let Some((tx, _)) = shared.leaders.get(&shard) {
                let _ = tx.send(LeaderEvent::Vote(Box::new(v)));
            }
            Ok(())
        }
        (Message::Propose(p), Some(from)) => {
            if from != shared.cluster.leader_of(p.shard) {
                return Err("a proposal from a node that does not lead the shard");
            }
            if let Some(tx) = shared.replicas.get(&p.shard) {
                if tx.try_send(ReplicaEvent::Propose(Box::new(p))).is_err() {
                    debug!("replica queue full; the leader resends");
                }
            }
            Ok(())
        }
        (Message::Commit(c), Some(from)) => {
            if from != shared.cluster.leader_of(c.vote.shard) {
                return Err("a commit from a node that does not lead the shard");
            }
            if let Some((tx, _)) = &shared.coordinator {
                let _ = tx.send(CoordEvent::Commit(Box::new(c.clone())));
            }
            if let Some(tx) = shared.replicas.get(&c.vote.shard) {
                let _ = tx.try_send(ReplicaEvent::Commit(Box::new(c)));
            }
            Ok(())
        }
        (Message::Cross { shard, message }, Some(from)) => match &message {
            CrossMessage::ReadRequest { .. } | CrossMessage::Apply { .. } => {
                if from != shared.cluster.leader_of(0) {
                    return Err("a cross-shard request from a node that does not coordinate");
                }
                if let Some((tx, _)) = shared.leaders.get(&shard) {
                    let _ = tx.send(LeaderEvent::Cross(message));
                }
                Ok(())
            }
            CrossMessage::ReadReply { from: s, .. } | CrossMessage::Applied { from: s, .. } => {
                if *s != shard || from != shared.cluster.leader_of(shard) {
                    return Err("a cross-shard reply from a node that does not lead the shard");
                }
                if let Some((tx, _)) = &shared.coordinator {
                    let _ = tx.send(CoordEvent::Cross(message));
                }
                Ok(())
            }
        },
        (Message::Sync { shard, from }, Some(node)) => {
            let replica = (1..shared.cluster.replicas as u32).find(|&r| shared.cluster.node_of(shard, r) == node);
            let (Some(replica), Some((tx, _))) = (replica, shared.leaders.get(&shard)) else {
                return Err("a sync request from a node that holds no replica of the shard");
            };
            let _ = tx.send(LeaderEvent::Sync { replica, from });
            Ok(())
        }
        (Message::Sync { .. }, None) => Err("a node message from a client"),
        (Message::Submit { .. } | Message::StatusRequest | Message::Read { .. }, Some(_)) => Err("a client message on a node link"),
        (Message::Vote(_) | Message::Propose(_) | Message::Commit(_), None) => Err("a node message from a client"),
        (Message::Cross { .. }, None) => Err("a node message from a client"),
        (
            Message::Accepted { .. } | Message::Refused { .. } | Message::Receipts { .. } | Message::Status(_) | Message::Values { .. },
            _,
        ) => Err("a message only nodes send"),
    }
}

/// Admits a client batch to a leader's (or the coordinator's) mempool, or says why not.
///
/// The quota and the mempool space are reserved first and given back if anything fails, so
/// two batches admitted at once cannot both squeeze into the last space. `Accepted` is queued
/// to the client before the batch reaches the leader, so it always precedes the batch's
/// receipts on the client's stream.
fn admit(shared: &Shared, conn: u64, batch: u64, txs: occam_engine::native::signed::RawSignedBlock) -> Result<(), Refusal> {
    if shared.stopping.load(Ordering::Relaxed) {
        return Err(Refusal::ShuttingDown);
    }
    if txs.chain_id != shared.cluster.chain_id {
        return Err(Refusal::WrongChain);
    }
    let n = txs.txs.len();
    let Some(first) = txs.txs.first() else {
        shared.send_to_client(conn, &Message::Accepted { batch });
        return Ok(());
    };
    // A batch is one shard's transactions, or cross-shard ones (for the coordinator).
    let mut keys = Vec::with_capacity(8);
    let route = route_tx_with(&*shared.partitioner, &first.header, &mut keys);
    if txs.txs[1..].iter().any(|t| route_tx_with(&*shared.partitioner, &t.header, &mut keys) != route) {
        return Err(Refusal::WrongShard);
    }
    let limits = &shared.cluster.limits;
    let pending = shared.clients.lock().get(&conn).map(|c| c.pending.clone()).ok_or(Refusal::ShuttingDown)?;
    let depth = match route {
        Some(shard) => shared.leaders.get(&shard).ok_or(Refusal::NotLeader)?.1.clone(),
        None => shared.coordinator.as_ref().ok_or(Refusal::NotLeader)?.1.clone(),
    };
    if pending.fetch_add(n, Ordering::Relaxed) + n > limits.per_client {
        pending.fetch_sub(n, Ordering::Relaxed);
        return Err(Refusal::Throttled);
    }
    if depth.fetch_add(n, Ordering::Relaxed) + n > limits.mempool {
        depth.fetch_sub(n, Ordering::Relaxed);
        pending.fetch_sub(n, Ordering::Relaxed);
        return Err(Refusal::QueueFull);
    }
    shared.send_to_client(conn, &Message::Accepted { batch });
    let now = Instant::now();
    let txs = txs.txs.into_iter().enumerate().map(|(i, tx)| (tx, Origin { conn, batch, index: i as u32 })).collect();
    let sent = match route {
        Some(shard) => shared.leaders[&shard].0.send(LeaderEvent::Submit(txs, now)).is_ok(),
        None => shared.coordinator.as_ref().is_some_and(|(c, _)| c.send(CoordEvent::Submit(txs, now)).is_ok()),
    };
    if !sent {
        // The leader's thread is gone (the node is stopping): nothing of the batch is pending.
        depth.fetch_sub(n, Ordering::Relaxed);
        pending.fetch_sub(n, Ordering::Relaxed);
        return Err(Refusal::ShuttingDown);
    }
    shared.metrics.accepted.fetch_add(n as u64, Ordering::Relaxed);
    Ok(())
}

/// A hosted replica's execution context (leaders and followers alike).
struct ReplicaCtx {
    shard: u32,
    state: CommittedState,
    exec: Box<dyn BlockExecutor<SignedVm>>,
    verifier: Arc<BatchVerifier>,
    registry: Arc<KeyRegistry>,
    keys: NodeKeys,
    chain_id: u64,
    metrics: Arc<ShardMetrics>,
}

impl ReplicaCtx {
    /// Applies the block's cross-shard writes, executes its transactions and commits them;
    /// returns the outputs and the new state root.
    fn execute(&mut self, p: &Proposal) -> Result<(Vec<SignedOutput>, [u8; 32]), String> {
        if !p.cross_writes.is_empty() {
            self.state.apply(&WriteSet::from_entries(p.cross_writes.clone()), None);
        }
        let Some(block) = &p.block else { return Ok((Vec::new(), self.state.root().0)) };
        let txs: Vec<VerifiedTx> = block.headers.iter().map(|h| VerifiedTx { header: h.clone(), signature_ok: true }).collect();
        let out = self.exec.execute_and_commit(&SignedVm, &mut self.state, &txs).map_err(|e| e.to_string())?;
        Ok((out.outputs, self.state.root().0))
    }
}

fn status_of(output: &SignedOutput) -> TxStatus {
    match output {
        Ok(Ok(_)) => TxStatus::Succeeded,
        Ok(Err(_)) => TxStatus::Failed,
        Err(SignedFailure::BadNonce { .. }) => TxStatus::BadNonce,
        Err(SignedFailure::UnknownSigner) => TxStatus::UnknownSigner,
        Err(_) => TxStatus::BadSignature,
    }
}

/// Transactions whose signatures verified, and the statuses of those that did not.
type Verified = (Vec<(occam_engine::native::signed::SignedTx, Origin)>, Vec<(Origin, TxStatus)>);

/// Validates and batch-verifies `txs`' signatures; returns the valid ones (with their
/// signatures) and the statuses of the others.
fn verify(ctx: &ReplicaCtx, txs: Vec<(RawSignedTx, Origin)>) -> Verified {
    let chain_id = ctx.chain_id;
    let registry = &*ctx.registry;
    let decoded: Vec<_> = txs
        .into_par_iter()
        .map(|(raw, origin)| {
            let known = registry.get(raw.header.signer).is_some();
            let tx = raw.validate().ok();
            let message = tx.as_ref().map(|t| t.header.signing_bytes(chain_id));
            (tx, message, origin, known)
        })
        .collect();
    let mut items = Vec::with_capacity(decoded.len());
    for (tx, message, _, known) in &decoded {
        if let (Some(tx), Some(m), true) = (tx, message, known) {
            let key = ctx.registry.get(tx.header.signer).expect("checked above");
            items.push(SignedMessage { key, message: m, signature: &tx.signature });
        }
    }
    let verdicts = ctx.verifier.verify(&items);
    let mut verdicts = verdicts.into_iter();
    let mut good = Vec::with_capacity(decoded.len());
    let mut bad = Vec::new();
    for (tx, _, origin, known) in decoded {
        match (tx, known) {
            (_, false) => bad.push((origin, TxStatus::UnknownSigner)),
            (None, true) => bad.push((origin, TxStatus::BadSignature)),
            (Some(tx), true) => match verdicts.next() {
                Some(true) => good.push((tx, origin)),
                _ => bad.push((origin, TxStatus::BadSignature)),
            },
        }
    }
    (good, bad)
}

/// Sends each client its entries, with the certificate (or none, for dropped transactions).
fn send_receipts(shared: &Shared, certificate: Option<Certificate>, entries: Vec<(Origin, TxStatus)>) {
    let mut by_conn: HashMap<u64, Vec<ReceiptEntry>> = HashMap::new();
    for (o, status) in entries {
        by_conn.entry(o.conn).or_default().push(ReceiptEntry { batch: o.batch, index: o.index, status });
    }
    for (conn, entries) in by_conn {
        shared.release(conn, entries.len());
        shared.send_to_client(conn, &Message::Receipts { certificate: certificate.clone(), entries });
    }
}

/// Cross-shard rounds whose certificates a participant leader remembers, to send them again
/// when the coordinator asks again.
const DONE_ROUNDS: usize = 64;

/// A leader's part in the cross-shard protocol.
struct CrossSide {
    participant: Participant,
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
    fn new(shard: u32) -> CrossSide {
        CrossSide { participant: Participant::new(shard), barrier: None, writes: None, acks: HashMap::new(), done: VecDeque::new() }
    }

    fn on_message(&mut self, shard: u32, m: CrossMessage, state: &CommittedState, shared: &Shared) {
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
        let coordinator = shared.cluster.leader_of(0);
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

    fn acknowledge(&self, shard: u32, round: u64, certificate: Certificate, shared: &Shared) {
        let coordinator = shared.cluster.leader_of(0);
        shared.send_to_node(coordinator, &Message::Commit(certificate));
        shared.send_to_node(coordinator, &Message::Cross { shard, message: CrossMessage::Applied { block: round, from: shard } });
    }

    /// May a block be proposed now?
    fn open(&self) -> bool {
        self.barrier.is_none() || self.writes.is_some()
    }

    fn certified(&mut self, shard: u32, height: u64, certificate: &Certificate, shared: &Shared) {
        if let Some(round) = self.acks.remove(&height) {
            self.acknowledge(shard, round, certificate.clone(), shared);
            if self.done.len() == DONE_ROUNDS {
                self.done.pop_front();
            }
            self.done.push_back((round, certificate.clone()));
        }
    }
}

/// One turn of a leader's or the coordinator's loop: waits up to [`TICK`] for an event, then
/// takes what else is queued, up to [`EVENTS_PER_TURN`] (so a stream of events cannot keep it
/// from its mempool); `None` once every sender is gone.
fn turn<E>(rx: &Receiver<E>) -> Option<impl Iterator<Item = E> + '_> {
    let first = match rx.recv_timeout(TICK) {
        Ok(event) => Some(event),
        Err(RecvTimeoutError::Timeout) => None,
        Err(RecvTimeoutError::Disconnected) => return None,
    };
    Some(first.into_iter().chain(rx.try_iter().take(EVENTS_PER_TURN)))
}

/// A leader's pending transactions, each with the time it arrived.
type Mempool = VecDeque<(RawSignedTx, Origin, Instant)>;

/// True when a block (or round) should be made: `block_txs` are pending, or the oldest has
/// waited `block_time`.
fn ready(mempool: &Mempool, block_txs: usize, block_time: Duration) -> bool {
    mempool.len() >= block_txs || mempool.front().is_some_and(|(_, _, at)| at.elapsed() >= block_time)
}

/// Takes up to `block_txs` pending transactions off `mempool` (and its `depth` count), verifies
/// their signatures, sends the drop receipts of those that fail, and returns the others.
fn take_verified(
    ctx: &ReplicaCtx,
    mempool: &mut Mempool,
    depth: &AtomicUsize,
    block_txs: usize,
    shared: &Shared,
) -> Vec<(occam_engine::native::signed::SignedTx, Origin)> {
    let n = mempool.len().min(block_txs);
    let batch: Vec<_> = mempool.drain(..n).map(|(t, o, _)| (t, o)).collect();
    depth.fetch_sub(n, Ordering::Relaxed);
    let (good, bad) = verify(ctx, batch);
    if !bad.is_empty() {
        send_receipts(shared, None, bad);
    }
    good
}

/// Blocks proposed and not yet certified: each transaction's origin and status.
type PendingReceipts = HashMap<u64, Vec<(Origin, TxStatus)>>;

fn run_leader(
    mut ctx: ReplicaCtx,
    mut core: LeaderCore,
    rx: Receiver<LeaderEvent>,
    depth: Arc<AtomicUsize>,
    block_txs: usize,
    block_time: Duration,
    shared: Arc<Shared>,
) {
    let shard = ctx.shard;
    let mut mempool: Mempool = VecDeque::new();
    let mut receipts: PendingReceipts = HashMap::new();
    let mut cross = CrossSide::new(shard);
    let handle = |outs: Vec<LeaderOut>, receipts: &mut PendingReceipts, cross: &mut CrossSide, ctx: &ReplicaCtx| {
        for out in outs {
            match out {
                LeaderOut::Send { replica, message } => shared.send_to_node(shared.cluster.node_of(shard, replica), &message),
                LeaderOut::Certified { height, certificate, latency } => {
                    let entries = receipts.remove(&height).unwrap_or_default();
                    ctx.metrics.certified(height, entries.len() as u64, latency);
                    cross.certified(shard, height, &certificate, &shared);
                    send_receipts(&shared, Some(certificate), entries);
                }
            }
        }
    };
    while !shared.stopping.load(Ordering::Relaxed) {
        let Some(events) = turn(&rx) else { break };
        for event in events {
            match event {
                LeaderEvent::Submit(txs, at) => mempool.extend(txs.into_iter().map(|(t, o)| (t, o, at))),
                LeaderEvent::Vote(v) => match core.on_vote(*v, Instant::now()) {
                    Ok(outs) => handle(outs, &mut receipts, &mut cross, &ctx),
                    Err(e @ CoreError::Diverged { .. }) => error!(shard, "{e}"),
                    Err(e) => debug!(shard, "vote ignored: {e}"),
                },
                LeaderEvent::Sync { replica, from } => handle(core.on_sync(replica, from), &mut receipts, &mut cross, &ctx),
                LeaderEvent::Cross(m) => cross.on_message(shard, m, &ctx.state, &shared),
                LeaderEvent::Snapshot(reply) => {
                    let _ = reply.send(ctx.state.sorted_entries());
                }
                LeaderEvent::Read { conn, id, keys } => {
                    let values = keys.iter().map(|k| (*k, ctx.state.get(k).cloned())).collect();
                    shared.send_to_client(conn, &Message::Values { id, values });
                    shared.read_done(conn);
                }
            }
        }
        loop {
            let full = ready(&mempool, block_txs, block_time);
            if !core.can_propose() || !cross.open() || !(full || cross.writes.is_some()) {
                break;
            }
            let good = take_verified(&ctx, &mut mempool, &depth, block_txs, &shared);
            let (block, origins) = match aggregate(ctx.chain_id, good) {
                Ok(b) => b,
                Err(dropped) => {
                    error!(shard, "the block's signatures do not aggregate; dropped");
                    send_receipts(&shared, None, dropped);
                    continue;
                }
            };
            let (round, cross_writes) = cross.writes.take().map_or((None, Vec::new()), |(r, w)| (Some(r), w));
            if block.is_none() && round.is_none() {
                continue;
            }
            let proposal = Proposal { shard, height: core.next_height(), parent: core.parent(), cross_writes, block };
            let (outputs, root) = match ctx.execute(&proposal) {
                Ok(r) => r,
                Err(e) => {
                    error!(shard, "execution failed, the shard stops: {e}");
                    return;
                }
            };
            let height = proposal.height;
            if let Some(round) = round {
                cross.barrier = None;
                cross.acks.insert(height, round);
            }
            receipts.insert(height, origins.into_iter().zip(outputs.iter().map(status_of)).collect());
            match core.propose(proposal, root, &ctx.keys.bls, Instant::now()) {
                Ok(outs) => handle(outs, &mut receipts, &mut cross, &ctx),
                Err(e) => {
                    // The block is in this leader's state but was never proposed: the shard
                    // cannot go on consistently.
                    error!(shard, "proposal refused, the shard stops: {e}");
                    return;
                }
            }
            shared.set_status(ReplicaStatus { shard, replica: 0, height, root, pending: mempool.len() as u64 });
        }
        ctx.metrics.mempool.store(depth.load(Ordering::Relaxed) as u64, Ordering::Relaxed);
        handle(core.on_tick(Instant::now()), &mut receipts, &mut cross, &ctx);
    }
    debug!(shard, uncertified = receipts.len(), pending = mempool.len(), "leader stopped");
}

/// The verified transactions as one aggregated block (`None` when there are none), and their
/// origins; on failure, every transaction's drop receipt.
type Aggregated = Result<(Option<AggregatedBlock>, Vec<Origin>), Vec<(Origin, TxStatus)>>;

fn aggregate(chain_id: u64, good: Vec<(occam_engine::native::signed::SignedTx, Origin)>) -> Aggregated {
    if good.is_empty() {
        return Ok((None, Vec::new()));
    }
    let signatures: Vec<_> = good.iter().map(|(t, _)| t.signature).collect();
    let Ok(signature) = occam_engine::crypto::Signature::aggregate(&signatures) else {
        return Err(good.into_iter().map(|(_, o)| (o, TxStatus::BadSignature)).collect());
    };
    let (headers, origins): (Vec<_>, Vec<_>) = good.into_iter().map(|(t, o)| (t.header, o)).unzip();
    Ok((Some(AggregatedBlock { chain_id, headers, signature }), origins))
}

fn run_replica(mut ctx: ReplicaCtx, mut core: ReplicaCore, set: ValidatorSet, rx: Receiver<ReplicaEvent>, shared: Arc<Shared>) {
    let shard = ctx.shard;
    let leader = shared.cluster.leader_of(shard);
    let mut committed = 0u64;
    let mut last_sync: Option<Instant> = None;
    // Asks the leader for the blocks from this replica's next height on, at most every
    // SYNC_EVERY.
    let mut sync = |core: &ReplicaCore| {
        if last_sync.is_none_or(|t| t.elapsed() >= SYNC_EVERY) {
            last_sync = Some(Instant::now());
            shared.send_to_node(leader, &Message::Sync { shard, from: core.next_height() });
        }
    };
    while !shared.stopping.load(Ordering::Relaxed) {
        let event = match rx.recv_timeout(TICK * 20) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => {
                if committed > core.height() {
                    sync(&core);
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut step = match event {
            ReplicaEvent::Propose(p) => Some(core.on_propose(*p)),
            ReplicaEvent::Commit(c) => {
                match c.verify(&set) {
                    Ok(()) => committed = committed.max(c.vote.height),
                    Err(e) => warn!(shard, "a commit with a bad certificate: {e}"),
                }
                // A block certified without this replica's vote: it may have missed it.
                if committed > core.height() {
                    sync(&core);
                }
                None
            }
            ReplicaEvent::Snapshot(reply) => {
                let _ = reply.send(ctx.state.sorted_entries());
                None
            }
        };
        while let Some(s) = step.take() {
            match s {
                Ok(ReplicaStep::Execute(p)) => {
                    let started = Instant::now();
                    if let Some(block) = &p.block {
                        if let Err(e) = block.verify_on(&ctx.registry, ctx.chain_id, &ctx.verifier) {
                            error!(shard, height = p.height, "the leader's block does not verify: {e}; not voting");
                            break;
                        }
                    }
                    let (outputs, root) = match ctx.execute(&p) {
                        Ok(r) => r,
                        Err(e) => {
                            error!(shard, "execution failed, the replica stops: {e}");
                            return;
                        }
                    };
                    let vote = core.executed(&p, root, &ctx.keys.bls);
                    shared.send_to_node(leader, &Message::Vote(vote));
                    ctx.metrics.executed(p.height, outputs.len() as u64, started.elapsed());
                    let replica = vote.signer;
                    shared.set_status(ReplicaStatus { shard, replica, height: p.height, root, pending: 0 });
                    step = core.next_ready();
                }
                Ok(ReplicaStep::Revote(v)) => shared.send_to_node(leader, &Message::Vote(v)),
                // A proposal ahead of this replica: the ones before it were missed.
                Ok(ReplicaStep::Held) | Err(CoreError::TooFarAhead { .. }) => sync(&core),
                Err(e) => debug!(shard, "proposal ignored: {e}"),
            }
        }
    }
    debug!(shard, committed, "replica stopped");
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
fn run_coordinator(
    mut ctx: ReplicaCtx,
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
    let mut last_cert: HashMap<u32, Certificate> = HashMap::new();
    let send = |envelopes: Vec<Envelope>| {
        for e in envelopes {
            if let Address::Shard(s) = e.to {
                shared.send_to_node(shared.cluster.leader_of(s), &Message::Cross { shard: s, message: e.message });
            }
        }
    };
    while !shared.stopping.load(Ordering::Relaxed) {
        let Some(events) = turn(&rx) else { break };
        for event in events {
            match event {
                CoordEvent::Submit(txs, at) => mempool.extend(txs.into_iter().map(|(t, o)| (t, o, at))),
                CoordEvent::Commit(c) => {
                    if round.is_some() {
                        last_cert.insert(c.vote.shard, *c);
                    }
                }
                CoordEvent::Cross(m) => {
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
                            if let Some(c) = last_cert.remove(&from) {
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
                        shared.send_to_node(shared.cluster.leader_of(*s), &Message::Cross { shard: *s, message });
                    }
                }
            }
        }
        // Start the next round.
        if round.is_none() && ready(&mempool, block_txs, block_time) {
            let good = take_verified(&ctx, &mut mempool, &depth, block_txs, &shared);
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
    ctx: &mut ReplicaCtx,
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
