//! A client of a cluster: QUIC connections to nodes, transactions routed to their shard's
//! leader, answers as a stream of [`ClientEvent`]s.
//!
//! Leaders change (each shard is a Raft group): the client keeps a leader per shard, first the
//! bootstrap leader of the cluster file, and its user moves it with [`Client::set_leader`]
//! when a node refuses a batch as `NotLeader`.
//!
//! The client authenticates every node by its pinned certificate from the cluster file and
//! presents none of its own. It runs on the caller's tokio runtime.

use crate::config::{ClusterConfig, ConfigError};
use crate::node::{cluster_partitioner, route_tx};
use crate::tls::{client_config, node_name, TlsError};
use crate::transport::{read_frame, spawn_writer};
use crate::wire::{Message, ReceiptEntry, Refusal, ReplicaStatus, TxFate, MAX_FRAME_LEN};
use occam_engine::native::signed::{nonce_key, RawSignedBlock, TxHeader};
use occam_shard::partition::Partitioner;
use occam_shard::{Certificate, CertificateError, ValidatorSet};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Answers a client receives, from any node.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// The batch is in its leader's mempool.
    Accepted {
        /// The batch id.
        batch: u64,
    },
    /// The whole batch was refused.
    Refused {
        /// The batch id.
        batch: u64,
        /// Why.
        reason: Refusal,
        /// For `NotLeader`: the node the refusing node knows to lead the shard now.
        leader: Option<u32>,
    },
    /// Transactions committed in a certified block, or dropped (no certificate).
    Receipts {
        /// The block's certificate.
        certificate: Option<Box<Certificate>>,
        /// This client's transactions in it.
        entries: Vec<ReceiptEntry>,
    },
    /// The values of keys asked with [`Client::read`].
    Values {
        /// The request id.
        id: u64,
        /// One entry per key asked.
        values: occam_shard::protocol::Entries,
    },
    /// The answer to a status read ([`Client::query_fates`]): one fate per transaction asked,
    /// in order, and the certificates [`TxFate::Committed`] refers to.
    Fates {
        /// The node that answered.
        node: u32,
        /// The request id.
        id: u64,
        /// Certificates of the blocks that committed transactions asked about.
        certificates: Vec<Certificate>,
        /// One per transaction asked.
        fates: Vec<TxFate>,
    },
    /// A node's replicas' positions: the answer to [`Client::request_status`], or sent unasked
    /// when one of the node's replicas becomes its shard's leader (pass it to
    /// [`Client::learn_leaders`]).
    Status {
        /// The node.
        node: u32,
        /// Its replicas.
        replicas: Vec<ReplicaStatus>,
    },
    /// A node closed the connection or sent something a node should not.
    Closed {
        /// The node.
        node: u32,
        /// Why.
        reason: String,
    },
}

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The cluster file is unusable.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// TLS setup failed.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// A node could not be reached.
    #[error("node {node} at {addr}: {reason}")]
    Connect {
        /// The node.
        node: u32,
        /// Its address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A transaction whose keys span shards (or that declares none).
    #[error("the transaction's keys span shards; nodes take single-shard transactions")]
    CrossShard,
    /// The connection to a node is gone.
    #[error("the connection to node {0} is closed")]
    Disconnected(u32),
    /// A socket could not be opened.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A message too large for one frame (a batch over the frame limit, say).
    #[error("{0}")]
    Wire(#[from] crate::wire::WireError),
}

/// A connected client.
pub struct Client {
    cluster: ClusterConfig,
    partitioner: Arc<dyn Partitioner>,
    endpoint: quinn::Endpoint,
    writers: HashMap<u32, mpsc::Sender<Vec<u8>>>,
    conns: HashMap<u32, quinn::Connection>,
    events: mpsc::Receiver<ClientEvent>,
    events_tx: mpsc::Sender<ClientEvent>,
    /// Validator sets met in certificates, by (shard, epoch, members); checked once each.
    sets: parking_lot::Mutex<HashMap<SetKey, ValidatorSet>>,
    /// The cluster file, re-read when a certificate or a leader names a node the client does
    /// not know ([`Client::watch_cluster_file`]).
    cluster_file: Option<std::path::PathBuf>,
    /// The cluster file as last re-read, if it grew (nodes appended: replacements), and when.
    grown: parking_lot::Mutex<(Option<std::time::Instant>, Option<Arc<ClusterConfig>>)>,
    /// The node each shard's batches and reads go to, with the Raft term it was seen leading
    /// in (0: not known from a status).
    leaders: parking_lot::Mutex<Vec<(u32, u64)>>,
}

/// A validator set as a certificate names it: shard, epoch, member ids.
type SetKey = (u32, u64, Vec<u32>);

/// Validator sets a client keeps built (each costs a proof-of-possession check per member).
const MAX_CACHED_SETS: usize = 1024;

/// Events a client buffers before its connections' readers wait (and, through QUIC flow
/// control, the nodes' writers).
pub const CLIENT_EVENT_QUEUE: usize = 65_536;

impl Client {
    /// Connects to every node of `cluster` that answers (any shard's leader may move to any of
    /// its replicas' nodes), but nodes replaced for good; fails only if none does.
    pub async fn connect(cluster: &ClusterConfig) -> Result<Client, ClientError> {
        Client::connect_nodes(cluster, &cluster.live_nodes(), true, std::net::Ipv4Addr::UNSPECIFIED.into()).await
    }

    /// [`Client::connect`] from the local address `local` (port chosen by the system): nodes
    /// count connections and pending transactions per source address.
    pub async fn connect_from(cluster: &ClusterConfig, local: std::net::IpAddr) -> Result<Client, ClientError> {
        Client::connect_nodes(cluster, &cluster.live_nodes(), true, local).await
    }

    /// Connects to the listed nodes; fails if one cannot be reached.
    pub async fn connect_to(cluster: &ClusterConfig, nodes: &[u32]) -> Result<Client, ClientError> {
        Client::connect_nodes(cluster, nodes, false, std::net::Ipv4Addr::UNSPECIFIED.into()).await
    }

    async fn connect_nodes(cluster: &ClusterConfig, nodes: &[u32], tolerant: bool, local: std::net::IpAddr) -> Result<Client, ClientError> {
        cluster.check()?;
        let endpoint = quinn::Endpoint::client((local, 0).into())?;
        let pinned = cluster.pinned()?;
        let (events_tx, events) = mpsc::channel(CLIENT_EVENT_QUEUE);
        let mut client = Client {
            cluster: cluster.clone(),
            partitioner: cluster_partitioner(cluster),
            endpoint,
            writers: HashMap::new(),
            conns: HashMap::new(),
            events,
            events_tx,
            sets: parking_lot::Mutex::new(HashMap::new()),
            cluster_file: None,
            grown: parking_lot::Mutex::new((None, None)),
            leaders: parking_lot::Mutex::new((0..cluster.shards as u32).map(|s| (cluster.leader_of(s), 0)).collect()),
        };
        for s in 0..cluster.shards as u32 {
            let set = cluster.genesis_validators(s)?;
            client.sets.lock().insert((s, 0, set.ids().to_vec()), set);
        }
        let mut last_error = None;
        for &node in nodes {
            match client.dial(node, &pinned).await {
                Ok(()) => {}
                Err(e) if tolerant => {
                    tracing::warn!("{e}; going on without it");
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        match last_error {
            Some(e) if client.conns.is_empty() => Err(e),
            _ => Ok(client),
        }
    }

    /// Re-reads the cluster file when a node or validator set is not known: a node that
    /// replaced another, appended to the file, is dialled and verified from then on. Reads the
    /// file at most once a second; the file must only append nodes (as running nodes require).
    pub fn watch_cluster_file(&mut self, path: std::path::PathBuf) {
        self.cluster_file = Some(path);
    }

    /// The cluster as this client knows it now: the file it connected with, or the file as
    /// last re-read if nodes were appended since.
    fn roster(&self) -> Arc<ClusterConfig> {
        self.grown.lock().1.clone().unwrap_or_else(|| Arc::new(self.cluster.clone()))
    }

    /// Re-reads the cluster file (see [`Client::watch_cluster_file`]); true if it lists more
    /// nodes than before.
    fn refresh(&self) -> bool {
        let Some(path) = &self.cluster_file else { return false };
        let now = std::time::Instant::now();
        {
            let mut g = self.grown.lock();
            if g.0.is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(1)) {
                return false;
            }
            g.0 = Some(now);
        }
        let known = self.roster();
        match ClusterConfig::load(path).and_then(|newer| known.check_extension(&newer).map(|()| newer)) {
            Ok(newer) if newer.nodes.len() > known.nodes.len() => {
                tracing::info!(nodes = newer.nodes.len(), "the cluster file lists new nodes");
                self.grown.lock().1 = Some(Arc::new(newer));
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!("re-reading the cluster file: {e}");
                false
            }
        }
    }

    /// Dials `node` and starts reading its answers (replacing an earlier connection to it).
    async fn dial(&mut self, node: u32, pinned: &crate::tls::PinnedCerts) -> Result<(), ClientError> {
        let mut roster = self.roster();
        if node as usize >= roster.nodes.len() && self.refresh() {
            roster = self.roster();
        }
        let pinned = match roster.nodes.len() > self.cluster.nodes.len() {
            true => roster.pinned()?,
            false => pinned.clone(),
        };
        let entry = roster.nodes.get(node as usize).ok_or_else(|| ConfigError::Invalid(format!("no node {node}")))?;
        let addr = entry.addr;
        let cert = pinned.cert_of(node).ok_or_else(|| ConfigError::Invalid(format!("node {node} has no pinned certificate")))?;
        let config = client_config(&cert, None)?;
        let err = |reason: String| ClientError::Connect { node, addr, reason };
        let conn = self
            .endpoint
            .connect_with(config, addr, &node_name(node))
            .map_err(|e| err(e.to_string()))?
            .await
            .map_err(|e| err(e.to_string()))?;
        let writer = spawn_writer(conn.clone());
        tokio::spawn(keep_alive(writer.downgrade(), std::time::Duration::from_secs(self.cluster.limits.idle_s)));
        self.writers.insert(node, writer);
        tokio::spawn(read_events(conn.clone(), node, self.events_tx.clone()));
        if let Some(old) = self.conns.insert(node, conn) {
            old.close(0u32.into(), b"replaced");
        }
        Ok(())
    }

    /// Connects to `node` again (after a [`ClientEvent::Closed`], once it is back).
    pub async fn reconnect(&mut self, node: u32) -> Result<(), ClientError> {
        let pinned = self.cluster.pinned()?;
        self.dial(node, &pinned).await
    }

    /// Learns the leaders `node` reports in its status (nodes also send it unasked when one of
    /// their replicas becomes a leader): a replica that leads its shard there becomes the
    /// shard's destination, unless a leader of a later term is known (a deposed leader that has
    /// not heard of its successor still calls itself leader).
    pub fn learn_leaders(&self, node: u32, replicas: &[ReplicaStatus]) {
        let mut leaders = self.leaders.lock();
        for r in replicas.iter().filter(|r| r.role == crate::wire::RaftRole::Leader) {
            if let Some(l) = leaders.get_mut(r.shard as usize) {
                if r.term >= l.1 {
                    *l = (node, r.term);
                }
            }
        }
    }

    /// The cluster.
    pub fn cluster(&self) -> &ClusterConfig {
        &self.cluster
    }

    /// The shard a transaction belongs to, or [`ClientError::CrossShard`] for one that
    /// [`Client::submit_cross`] sends to the coordinator.
    pub fn shard_of(&self, header: &TxHeader) -> Result<u32, ClientError> {
        route_tx(&*self.partitioner, header).ok_or(ClientError::CrossShard)
    }

    /// Sends a batch to shard `route`'s leader, or for `None` (cross-shard transactions) to
    /// the cluster's coordinator (it runs with shard 0's leader); waits while the connection's
    /// queue is full.
    pub async fn submit_routed(&self, route: Option<u32>, batch: u64, txs: RawSignedBlock) -> Result<(), ClientError> {
        // The coordinator of cross-shard transactions runs with shard 0's leader.
        let node = self.leader(route.unwrap_or(0));
        self.send(node, &Message::Submit { batch, txs }).await
    }

    /// The node this client sends `shard`'s batches and reads to.
    pub fn leader(&self, shard: u32) -> u32 {
        self.leaders.lock().get(shard as usize).map_or_else(|| self.cluster.leader_of(shard), |l| l.0)
    }

    /// Sends `shard`'s batches and reads to `node` from now on (after a `NotLeader` refusal,
    /// to the leader the cluster reports).
    pub fn set_leader(&self, shard: u32, node: u32) {
        if let Some(l) = self.leaders.lock().get_mut(shard as usize) {
            l.0 = node;
        }
    }

    /// Sends a batch of one shard's transactions to its leader.
    pub async fn submit(&self, shard: u32, batch: u64, txs: RawSignedBlock) -> Result<(), ClientError> {
        self.submit_routed(Some(shard), batch, txs).await
    }

    /// Sends a batch of cross-shard transactions to the cluster's coordinator.
    pub async fn submit_cross(&self, batch: u64, txs: RawSignedBlock) -> Result<(), ClientError> {
        self.submit_routed(None, batch, txs).await
    }

    /// Asks the leader of `shard` for the current values of `keys` (all on that shard),
    /// answered as [`ClientEvent::Values`] with `id` (or refused as `NotLeader`).
    pub async fn read(&self, shard: u32, id: u64, keys: Vec<occam_engine::key::Key>) -> Result<(), ClientError> {
        self.send(self.leader(shard), &Message::Read { id, keys }).await
    }

    /// The shard that holds `signer`'s nonce, whose leader knows the fate of its transactions.
    pub fn nonce_shard(&self, signer: u32) -> u32 {
        self.partitioner.shard_of(&nonce_key(signer))
    }

    /// Asks `node` what became of transactions named by `(signer, nonce)` (at most
    /// [`crate::wire::MAX_TX_QUERY`]), answered as [`ClientEvent::Fates`] with `id`. The leader
    /// of the signers' shard ([`Client::nonce_shard`]) answers with authority; another node
    /// answers what it holds and names the leader it knows of.
    pub async fn query_fates(&self, node: u32, id: u64, txs: Vec<(u32, u64)>) -> Result<(), ClientError> {
        self.send(node, &Message::TxQuery { id, txs }).await
    }

    /// Asks `node` for its replicas' positions (answered as [`ClientEvent::Status`]).
    pub async fn request_status(&self, node: u32) -> Result<(), ClientError> {
        self.send(node, &Message::StatusRequest).await
    }

    async fn send(&self, node: u32, message: &Message) -> Result<(), ClientError> {
        self.send_frame(node, message.encode()?).await
    }

    /// Sends raw bytes to `node` as they are (for tests of malformed input).
    pub async fn send_frame(&self, node: u32, bytes: Vec<u8>) -> Result<(), ClientError> {
        let w = self.writers.get(&node).ok_or(ClientError::Disconnected(node))?;
        w.send(bytes).await.map_err(|_| ClientError::Disconnected(node))
    }

    /// The next answer from any node; `None` once every connection is gone.
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        self.events.recv().await
    }

    /// The next answer, if one is already buffered.
    pub fn try_event(&mut self) -> Option<ClientEvent> {
        self.events.try_recv().ok()
    }

    /// Checks a receipt's certificate against the validator set it names, with the keys the
    /// cluster file lists; the set must cover each of the shard's replica slots with a node
    /// that held it, or a node and its direct replacement ([`ClusterConfig::certificate_set`]).
    /// A set the file does not allow is refused with [`CertificateError::UnknownSet`].
    pub fn verify_certificate(&self, c: &Certificate) -> Result<(), CertificateError> {
        let key = (c.vote.shard, c.vote.epoch, c.members.clone());
        let cached = self.sets.lock().get(&key).cloned();
        let set = match cached {
            Some(set) => set,
            None => {
                let set = match self.roster().certificate_set(c) {
                    // A set of nodes this client does not know yet: a replacement, if the
                    // cluster file lists it by now.
                    Err(_) if self.refresh() => self.roster().certificate_set(c),
                    other => other,
                }
                .map_err(|e| CertificateError::UnknownSet(e.to_string()))?;
                let mut sets = self.sets.lock();
                // Bounded: a client meets a few epochs per shard.
                if sets.len() >= MAX_CACHED_SETS {
                    sets.clear();
                }
                sets.insert(key, set.clone());
                set
            }
        };
        c.verify(&set)
    }

    /// Closes every connection.
    pub async fn close(self) {
        for c in self.conns.values() {
            c.close(0u32.into(), b"done");
        }
        self.endpoint.wait_idle().await;
    }
}

/// Asks the node for its status every third of `idle` (the cluster's `limits.idle_s`), so that
/// a connection this client keeps for later (to a node that leads nothing now) is not closed as
/// idle. Ends with the client's writer for the connection.
async fn keep_alive(writer: mpsc::WeakSender<Vec<u8>>, idle: std::time::Duration) {
    let every = (idle / 3).max(std::time::Duration::from_millis(100));
    let Ok(request) = Message::StatusRequest.encode() else { return };
    loop {
        tokio::time::sleep(every).await;
        let Some(writer) = writer.upgrade() else { return };
        // A full queue is traffic enough.
        if let Err(mpsc::error::TrySendError::Closed(_)) = writer.try_send(request.clone()) {
            return;
        }
    }
}

async fn read_events(conn: quinn::Connection, node: u32, tx: mpsc::Sender<ClientEvent>) {
    let reason = match conn.accept_uni().await {
        Err(e) => e.to_string(),
        Ok(mut recv) => loop {
            let event = match read_frame(&mut recv, MAX_FRAME_LEN).await {
                Ok(Some(Message::Accepted { batch })) => ClientEvent::Accepted { batch },
                Ok(Some(Message::Refused { batch, reason, leader })) => ClientEvent::Refused { batch, reason, leader },
                Ok(Some(Message::Receipts { certificate, entries })) => {
                    ClientEvent::Receipts { certificate: certificate.map(Box::new), entries }
                }
                Ok(Some(Message::Status(replicas))) => ClientEvent::Status { node, replicas },
                Ok(Some(Message::Values { id, values })) => ClientEvent::Values { id, values },
                Ok(Some(Message::TxFates { id, certificates, fates })) => ClientEvent::Fates { node, id, certificates, fates },
                Ok(Some(other)) => break format!("unexpected message kind {}", other.kind()),
                Ok(None) => break "stream finished".to_string(),
                // A node that closed the connection said why (a code and a text).
                Err(e) => break conn.close_reason().map_or_else(|| e.to_string(), |r| r.to_string()),
            };
            if tx.send(event).await.is_err() {
                return;
            }
        },
    };
    let _ = tx.send(ClientEvent::Closed { node, reason }).await;
}
