//! Cluster and node configuration files, and the keys they name.
//!
//! `occam cluster init` writes, into one directory:
//!
//! - `cluster.toml`: what every node and client shares: the chain id, the shard layout, the
//!   genesis, the block limits, and for every node its address, BLS public key with proof of
//!   possession, and pinned TLS certificate;
//! - `node-<i>.toml`: one node's own settings (its id, threads, the paths of the cluster file
//!   and of its key file);
//! - `node-<i>.key`: the node's secrets (BLS secret key, TLS private key and certificate),
//!   written with mode 0600;
//! - `signers.pub` and `signers.key` (mode 0600): the transaction signers' public and secret
//!   keys, which own the genesis accounts ([`signers`]); with `--bench-signers`, neither file,
//!   and a seed in `cluster.toml` from which anyone can derive every signer's key.
//!
//! Replica placement: replica `r` of shard `s` runs on node `(s + r) % nodes`, so shard
//! leaders (replica 0) are spread over the first nodes and no node holds two replicas of one
//! shard. A shard's validator set is its replicas' BLS keys in replica order.

use crate::tls::{Identity, PinnedCerts, TlsError};
use occam_engine::crypto::{ProofOfPossession, PublicKey, SecretKey};
use occam_engine::key::{hex_decode, hex_encode};
use occam_shard::ValidatorSet;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub mod signers;

/// The most nodes a cluster file may list.
pub const MAX_NODES: usize = 256;
/// The most shards a cluster may have.
pub const MAX_CLUSTER_SHARDS: usize = 64;
/// The most transactions in a block (or a cross-shard round): a proposal, with its
/// cross-shard writes, must fit in one frame.
pub const MAX_BLOCK_TXS: usize = 16_384;
/// The least `limits.client_queue_bytes` may be: room for the largest answers a node sends a
/// client (receipts of a full block with its certificate, a read's values).
pub const MIN_CLIENT_QUEUE_BYTES: usize = 1 << 20;
/// The `cluster.toml` layout this build reads and writes. Version 2 added `schema`, `[raft]`
/// and the nodes' `data_dir` (the Raft and RocksDB issue); version 3, accounts owned by
/// signer keys (`signer_keys`, or `signer_seed` for bench signers; `signers` counts keys, each
/// with [`signers::SIGNER_LANES`] signer numbers). A file of another version is refused with a
/// message saying so.
pub const CLUSTER_SCHEMA: u32 = 3;

/// Errors reading, checking or writing configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error (in the message, and not a `source()`, so a chain does not say it twice).
        error: std::io::Error,
    },
    /// A file is not valid TOML for its schema.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The error.
        source: Box<toml::de::Error>,
    },
    /// The settings are inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// A key or certificate problem.
    #[error("{0}")]
    Tls(#[from] TlsError),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// Block production and admission limits, shared by the cluster (`[limits]` in
/// `cluster.toml`; a field left out takes its default).
///
/// The per-address limits apply to client connections only: pinned peer nodes are exempt.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most transactions in a block.
    pub block_txs: usize,
    /// A leader proposes a partial block once its oldest pending transaction has waited this
    /// long (milliseconds).
    pub block_ms: u64,
    /// Blocks a leader may have proposed but not yet certified.
    pub pipeline: usize,
    /// Transactions a shard's mempool holds; batches beyond it are refused (`QueueFull`).
    pub mempool: usize,
    /// Transactions one client connection may have pending at one node; beyond it, its
    /// batches are refused (`Throttled`), so one client cannot take the whole mempool.
    pub per_client: usize,
    /// Transactions all client connections from one source address may have pending at one
    /// node (`Throttled` beyond it), so many connections do not multiply `per_client`.
    pub per_host: usize,
    /// Client connections one source address may hold at one node; more are refused in the
    /// handshake's wake (closed as busy), so one host cannot take every client slot.
    pub host_connections: usize,
    /// Signatures of one connection checked per turn of the node's admission thread: each
    /// turn checks a share of every waiting connection's front batch, hosts in turn, so an
    /// honest client's batch never waits behind more than one share of anybody else's.
    pub verify_share: usize,
    /// Batches with a bad signature one connection may send before the node closes it and
    /// refuses its source address for `ban_s` seconds.
    pub bad_batches: u32,
    /// How long (seconds) an address stays refused after a connection from it sent
    /// `bad_batches` batches with bad signatures; 0 closes the connection and refuses nothing.
    pub ban_s: u64,
    /// Bytes of frames a node queues to one client; a client that lets more pile up (it does
    /// not read) is disconnected. Together with the QUIC send window of a client connection
    /// ([`crate::tls::SERVER_SEND_WINDOW`]) this bounds what a client that does not read costs.
    pub client_queue_bytes: usize,
    /// A client's frame must arrive whole within this many milliseconds of its first byte, or
    /// the connection is closed (a bad frame).
    pub frame_ms: u64,
    /// A client connection that sends nothing for this many seconds, with no transaction
    /// pending and no read unanswered, is closed.
    pub idle_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            block_txs: 4096,
            block_ms: 20,
            pipeline: 4,
            mempool: 200_000,
            per_client: 50_000,
            per_host: 100_000,
            host_connections: 32,
            verify_share: 64,
            bad_batches: 3,
            ban_s: 60,
            client_queue_bytes: 8 << 20,
            frame_ms: 10_000,
            idle_s: 60,
        }
    }
}

/// The Raft settings every shard group of the cluster uses (`[raft]` in `cluster.toml`).
///
/// The defaults suit a cluster on one machine or a LAN: a leader sends heartbeats every
/// 100 ms; a follower that hears none stands for election after openraft's leader lease
/// (`election_max_ms`) plus a wait random in `[election_min_ms, election_max_ms)`, so a
/// follower stands 0.8–1.0 s after the last heartbeat and a failover takes about a second
/// (BENCHMARKS.md has the measured figures: p50 1.2 s on the 2-core dev VM under load, against
/// 3.0 s with 200 ms heartbeats and 800–1600 ms elections). The heartbeat interval is also
/// openraft's time limit for one AppendEntries (which includes the follower's fsync): on a slow
/// disk, raise it. Across a WAN, raise all three.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RaftSettings {
    /// How often a leader sends heartbeats (milliseconds).
    pub heartbeat_ms: u64,
    /// The shortest a follower waits without hearing from a leader before it stands for
    /// election (milliseconds).
    pub election_min_ms: u64,
    /// The longest such wait (milliseconds); each wait is random in `[min, max)`.
    pub election_max_ms: u64,
    /// A replica snapshots its state after this many log entries since its last snapshot, and
    /// its log before the snapshot may then be purged.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot, so a replica a little behind catches up from the
    /// log rather than by snapshot.
    pub keep_logs: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings { heartbeat_ms: 100, election_min_ms: 300, election_max_ms: 500, snapshot_every: 2000, keep_logs: 1000 }
    }
}

impl RaftSettings {
    fn check(&self) -> Result<(), ConfigError> {
        let ok = self.heartbeat_ms > 0
            && self.election_min_ms > self.heartbeat_ms
            && self.election_max_ms > self.election_min_ms
            && self.election_max_ms <= 60_000
            && self.snapshot_every > 0;
        if ok {
            Ok(())
        } else {
            Err(invalid(format!(
                "[raft]: need 0 < heartbeat_ms < election_min_ms < election_max_ms <= 60000 and snapshot_every > 0; \
                 got heartbeat_ms = {}, election_min_ms = {}, election_max_ms = {}, snapshot_every = {}",
                self.heartbeat_ms, self.election_min_ms, self.election_max_ms, self.snapshot_every
            )))
        }
    }
}

/// The genesis state every replica starts from: a workload's accounts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GenesisSpec {
    /// A workload name as `occam bench --workload` takes it.
    pub workload: String,
    /// Accounts (ids) of the workload.
    pub accounts: u64,
}

/// One node as every other node and client sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// The node's id (its index in the list).
    pub id: u32,
    /// The QUIC address it listens on.
    pub addr: SocketAddr,
    /// The address of its Prometheus metrics endpoint, if any.
    pub metrics: Option<SocketAddr>,
    /// Its BLS public key (hex).
    pub bls_key: String,
    /// Its BLS proof of possession (hex).
    pub bls_pop: String,
    /// Its pinned TLS certificate (DER, hex).
    pub cert: String,
    /// The node this one replaced for good: it hosts that node's replicas, and the shards'
    /// groups swap that node for this one through a Raft membership change (absent for the
    /// cluster's original nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<u32>,
}

/// What every node and client of a cluster shares (`cluster.toml`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The file's layout version ([`CLUSTER_SCHEMA`]); absent in files older than version 2.
    #[serde(default)]
    pub schema: u32,
    /// The chain id transactions are signed for.
    pub chain_id: u64,
    /// Number of shards.
    pub shards: usize,
    /// Replicas per shard (at most the number of nodes).
    pub replicas: usize,
    /// Transaction signing keys, a multiple of `shards`; genesis account `id` belongs to key
    /// `id % signers`, and each key signs under [`signers::SIGNER_LANES`] numbers (see
    /// [`signers`]).
    pub signers: u32,
    /// Bench signers: the seed their keys derive from
    /// ([`occam_engine::crypto::deterministic_signers`]). Anyone who can read this file can
    /// then spend every account. Absent when `signer_keys` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_seed: Option<u64>,
    /// The signers' public key file and its digest (the secret keys are in a separate file,
    /// never here). Absent for bench signers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_keys: Option<signers::SignerKeysRef>,
    /// The genesis state.
    pub genesis: GenesisSpec,
    /// Block limits.
    #[serde(default)]
    pub limits: Limits,
    /// Raft timing and log retention of every shard group.
    #[serde(default)]
    pub raft: RaftSettings,
    /// The nodes, in id order.
    pub nodes: Vec<NodeEntry>,
}

/// A node's own settings (`node-<i>.toml`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id in the cluster file.
    pub node: u32,
    /// The cluster file (relative paths are relative to this file).
    pub cluster: PathBuf,
    /// The key file (relative paths are relative to this file).
    pub key: PathBuf,
    /// The node's data directory: its RocksDB store (Raft logs, blocks, certificates, state).
    /// Relative paths are relative to this file; created on first start.
    pub data_dir: PathBuf,
    /// Threads each hosted replica executes blocks on.
    pub exec_threads: usize,
    /// Threads verifying signatures (shared by the node's leaders).
    pub verify_threads: usize,
    /// Admit transactions but propose no blocks: for measuring ingress alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold_blocks: bool,
}

/// A node's secrets (`node-<i>.key`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeKeyFile {
    /// BLS secret key (hex).
    pub bls_secret: String,
    /// TLS certificate (DER, hex).
    pub tls_cert: String,
    /// TLS private key (PKCS#8 DER, hex).
    pub tls_key: String,
}

/// A node's keys, decoded.
#[derive(Clone, Debug)]
pub struct NodeKeys {
    /// Signs votes.
    pub bls: SecretKey,
    /// Authenticates the node in TLS.
    pub tls: Identity,
}

impl NodeKeys {
    /// Fresh keys for node `node`.
    pub fn generate(node: u32) -> Result<NodeKeys, ConfigError> {
        Ok(NodeKeys { bls: SecretKey::random(&mut rand::rngs::OsRng), tls: Identity::generate(node)? })
    }

    /// The key file's contents.
    pub fn to_file(&self) -> NodeKeyFile {
        NodeKeyFile {
            bls_secret: hex_encode(&self.bls.to_bytes()),
            tls_cert: hex_encode(&self.tls.cert),
            tls_key: hex_encode(&self.tls.key),
        }
    }

    /// Decodes a key file's contents.
    pub fn from_file(f: &NodeKeyFile) -> Result<NodeKeys, ConfigError> {
        let bls = SecretKey::from_bytes(&hex(&f.bls_secret, "bls_secret")?).map_err(|e| invalid(format!("bls_secret: {e}")))?;
        Ok(NodeKeys { bls, tls: Identity { cert: hex(&f.tls_cert, "tls_cert")?, key: hex(&f.tls_key, "tls_key")? } })
    }

    /// This node's entry for the cluster file.
    pub fn entry(&self, id: u32, addr: SocketAddr, metrics: Option<SocketAddr>) -> NodeEntry {
        NodeEntry {
            id,
            addr,
            metrics,
            bls_key: hex_encode(&self.bls.public_key().to_bytes()),
            bls_pop: hex_encode(&self.bls.prove_possession().to_bytes()),
            cert: hex_encode(&self.tls.cert),
            replaces: None,
        }
    }
}

fn hex(s: &str, what: &str) -> Result<Vec<u8>, ConfigError> {
    hex_decode(s).ok_or_else(|| invalid(format!("{what} is not hex")))
}

/// Reads and parses a TOML file.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io { path: path.into(), error })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source: Box::new(source) })
}

/// Writes `text` to `path`; a secret file is created with mode 0600 (never readable by
/// others, not even for a moment), and an existing one is set to 0600 before it is written.
fn write_file(path: &Path, text: &str, secret: bool) -> Result<(), ConfigError> {
    use std::io::Write;
    let io = |error| ConfigError::Io { path: path.into(), error };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
    }
    #[cfg(not(unix))]
    let _ = secret;
    options.open(path).and_then(|mut f| f.write_all(text.as_bytes())).map_err(io)
}

fn to_toml<T: Serialize>(v: &T) -> String {
    toml::to_string_pretty(v).expect("configuration types serialise to TOML")
}

impl ClusterConfig {
    /// The number of transaction signer numbers: every key under each of its lanes.
    pub fn signer_numbers(&self) -> u32 {
        self.signers * signers::SIGNER_LANES
    }

    /// Reads and checks a cluster file.
    pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
        let c: ClusterConfig = read_toml(path)?;
        c.check().map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        Ok(c)
    }

    /// Checks that the settings are consistent and every key and certificate decodes.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.schema != CLUSTER_SCHEMA {
            return Err(invalid(format!(
                "schema {} (absent means 1), this build reads schema {CLUSTER_SCHEMA}: the file was written by another version of \
                 occam; write a new one with `occam cluster init` (nodes keep their data in `data_dir`, which the new version also needs)",
                self.schema
            )));
        }
        self.raft.check()?;
        let n = self.nodes.len();
        if n == 0 || n > MAX_NODES {
            return Err(invalid(format!("{n} nodes; a cluster has 1 to {MAX_NODES}")));
        }
        if self.shards == 0 || self.shards > MAX_CLUSTER_SHARDS {
            return Err(invalid(format!("{} shards; a cluster has 1 to {MAX_CLUSTER_SHARDS}", self.shards)));
        }
        let original = self.original_nodes();
        if self.replicas == 0 || self.replicas > original {
            return Err(invalid(format!(
                "{} replicas per shard on {original} nodes (not counting replacements); each replica needs its own node",
                self.replicas
            )));
        }
        let mut replaced = vec![false; n];
        for (i, node) in self.nodes.iter().enumerate() {
            match node.replaces {
                None if i >= original => {
                    return Err(invalid(format!(
                        "node {i} replaces no node but comes after a replacement; a cluster's original nodes come first"
                    )))
                }
                None => {}
                Some(r) if r as usize >= i => {
                    return Err(invalid(format!("node {i} replaces node {r}; a node replaces one listed before it")))
                }
                Some(r) if std::mem::replace(&mut replaced[r as usize], true) => {
                    return Err(invalid(format!("node {r} is replaced twice (node {i} is the second)")))
                }
                Some(_) => {}
            }
        }
        if self.signers == 0 || self.signers > signers::MAX_SIGNERS || !(self.signers as usize).is_multiple_of(self.shards) {
            return Err(invalid(format!(
                "signers = {} must be a positive multiple of shards = {}, at most {}",
                self.signers,
                self.shards,
                signers::MAX_SIGNERS
            )));
        }
        if self.signer_seed.is_some() == self.signer_keys.is_some() {
            return Err(invalid(
                "name the signers one way: signer_keys (their public key file) or signer_seed (bench signers anyone can derive)",
            ));
        }
        let l = &self.limits;
        if l.block_txs == 0 || l.block_txs > MAX_BLOCK_TXS || l.pipeline == 0 || l.mempool < l.block_txs || l.per_client == 0 {
            return Err(invalid(format!(
                "limits: block_txs must be in 1..={MAX_BLOCK_TXS}, pipeline and per_client positive, and mempool at least block_txs"
            )));
        }
        if l.per_host == 0 || l.host_connections == 0 || l.verify_share == 0 || l.bad_batches == 0 || l.frame_ms == 0 || l.idle_s == 0 {
            return Err(invalid("limits: per_host, host_connections, verify_share, bad_batches, frame_ms and idle_s must be positive"));
        }
        if l.frame_ms >= l.idle_s.saturating_mul(1000) {
            return Err(invalid("limits: frame_ms must be shorter than idle_s (a client sending a frame is not idle)"));
        }
        if l.client_queue_bytes < MIN_CLIENT_QUEUE_BYTES {
            return Err(invalid(format!(
                "limits: client_queue_bytes = {} is below {MIN_CLIENT_QUEUE_BYTES}, the most one answer to a client takes",
                l.client_queue_bytes
            )));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if node.id as usize != i {
                return Err(invalid(format!("node {i} is listed with id {}; ids are the list positions", node.id)));
            }
            self.bls_member(i as u32)?;
        }
        self.pinned()?;
        Ok(())
    }

    fn bls_member(&self, node: u32) -> Result<(PublicKey, ProofOfPossession), ConfigError> {
        let e = &self.nodes[node as usize];
        let key = PublicKey::from_bytes(&hex(&e.bls_key, "bls_key")?).map_err(|err| invalid(format!("node {node}: bls_key: {err}")))?;
        let pop =
            ProofOfPossession::from_bytes(&hex(&e.bls_pop, "bls_pop")?).map_err(|err| invalid(format!("node {node}: bls_pop: {err}")))?;
        Ok((key, pop))
    }

    /// The cluster's original nodes (those that replace no other): the first entries.
    pub fn original_nodes(&self) -> usize {
        self.nodes.iter().take_while(|n| n.replaces.is_none()).count()
    }

    /// `node` and each node that replaced the one before, in turn (the last stands for it now).
    /// Each step moves to a later entry (a node replaces one listed before it), so it ends.
    fn succession(&self, node: u32) -> impl Iterator<Item = u32> + '_ {
        std::iter::successors(Some(node), |&at| self.nodes.iter().find(|e| e.replaces == Some(at)).map(|e| e.id))
    }

    /// The node now standing for `node`: the last of the replacements that follow it.
    pub fn current(&self, node: u32) -> u32 {
        self.succession(node).last().unwrap_or(node)
    }

    /// The original node of replica slot `replica` of `shard`: round-robin over the original
    /// nodes.
    fn placed(&self, shard: u32, replica: u32) -> u32 {
        ((shard as usize + replica as usize) % self.original_nodes().max(1)) as u32
    }

    /// The nodes that were not replaced: those a client talks to.
    pub fn live_nodes(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.id).filter(|&id| !self.is_replaced(id)).collect()
    }

    /// True if `node` was replaced for good (the cluster file lists its replacement).
    pub fn is_replaced(&self, node: u32) -> bool {
        self.nodes.iter().any(|e| e.replaces == Some(node))
    }

    /// The node hosting replica `replica` of `shard`: placed round-robin over the original
    /// nodes, then moved along their replacements.
    pub fn node_of(&self, shard: u32, replica: u32) -> u32 {
        self.current(self.placed(shard, replica))
    }

    /// Every node that hosts or hosted a replica of `shard`: its original placement and each
    /// replacement since. Only these may sign its certificates.
    pub fn eligible(&self, shard: u32) -> Vec<u32> {
        let mut out: Vec<u32> = self.slots(shard).into_iter().flatten().collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Each replica slot of `shard`: the node of its original placement, then each node that
    /// replaced the one before (the last is the slot's node now).
    fn slots(&self, shard: u32) -> Vec<Vec<u32>> {
        (0..self.replicas as u32).map(|r| self.succession(self.placed(shard, r)).collect()).collect()
    }

    /// The node leading `shard` (replica 0).
    pub fn leader_of(&self, shard: u32) -> u32 {
        self.node_of(shard, 0)
    }

    /// The `(shard, replica)` pairs node `node` hosts.
    pub fn hosted_by(&self, node: u32) -> Vec<(u32, u32)> {
        (0..self.shards as u32)
            .flat_map(|s| (0..self.replicas as u32).map(move |r| (s, r)))
            .filter(|&(s, r)| self.node_of(s, r) == node)
            .collect()
    }

    /// The validator set of `epoch` whose members are the nodes `ids` (ascending), with the
    /// keys this file lists for them.
    pub fn validator_set(&self, epoch: u64, ids: &[u32]) -> Result<ValidatorSet, ConfigError> {
        let members = ids
            .iter()
            .map(|&id| match (id as usize) < self.nodes.len() {
                true => self.bls_member(id),
                false => Err(invalid(format!("node {id} is not in the cluster file"))),
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        ValidatorSet::with_ids(epoch, ids, &members).map_err(|e| invalid(format!("validators {ids:?}: {e}")))
    }

    /// `shard`'s first validator set (epoch 0): the nodes of its original placement.
    pub fn genesis_validators(&self, shard: u32) -> Result<ValidatorSet, ConfigError> {
        let mut ids: Vec<u32> = (0..self.replicas as u32).map(|r| self.placed(shard, r)).collect();
        ids.sort_unstable();
        self.validator_set(0, &ids)
    }

    /// The validator set a certificate names (its epoch and members), if this file allows it to
    /// certify its shard: the shard exists, and the members are, for every replica slot of the
    /// shard, its node at some time or a node and its direct replacement (the two sides of a
    /// membership change), ascending ([`ClusterConfig::eligible`] lists the candidates). A
    /// node that never hosted the shard, a slot left out, or a set of nodes of one slot far
    /// apart in time is refused before any key is read. The set's votes are then checked by
    /// [`occam_shard::Certificate::verify`].
    pub fn certificate_set(&self, c: &occam_shard::Certificate) -> Result<ValidatorSet, ConfigError> {
        self.check_members(c.vote.shard, &c.members)?;
        self.validator_set(c.vote.epoch, &c.members)
    }

    /// The rule of [`ClusterConfig::certificate_set`] for `members` of `shard`.
    fn check_members(&self, shard: u32, members: &[u32]) -> Result<(), ConfigError> {
        if shard as usize >= self.shards {
            return Err(invalid(format!("a certificate of shard {shard}; the cluster has {}", self.shards)));
        }
        let slots = self.slots(shard);
        if members.len() > 2 * slots.len() || members.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid(format!("a certificate of shard {shard} names validators {members:?}")));
        }
        for chain in &slots {
            // Positions in the slot's chain of the members that belong to it.
            let at: Vec<usize> = members.iter().filter_map(|m| chain.iter().position(|n| n == m)).collect();
            let fits = match at[..] {
                [_] => true,
                [a, b] => a.abs_diff(b) == 1,
                _ => false,
            };
            if !fits {
                return Err(invalid(format!(
                    "a certificate of shard {shard} names validators {members:?}: the replica held by nodes {chain:?} in turn must \
                     be one of them, or two in a row (the cluster file may lack a replacement)"
                )));
            }
        }
        if let Some(m) = members.iter().find(|m| !slots.iter().any(|chain| chain.contains(m))) {
            return Err(invalid(format!(
                "node {m} signs for shard {shard}, which it never hosted (per the cluster file; it may list a replacement this file lacks)"
            )));
        }
        Ok(())
    }

    /// Checks that `newer` is this cluster with more nodes appended (what a running node accepts
    /// when its cluster file changes): every other setting and every listed node unchanged.
    pub fn check_extension(&self, newer: &ClusterConfig) -> Result<(), ConfigError> {
        let same_settings = ClusterConfig { nodes: Vec::new(), ..self.clone() } == ClusterConfig { nodes: Vec::new(), ..newer.clone() };
        if !same_settings {
            return Err(invalid("settings other than the node list changed; a running cluster only takes appended nodes"));
        }
        if newer.nodes.len() < self.nodes.len() || newer.nodes[..self.nodes.len()] != self.nodes[..] {
            return Err(invalid("listed nodes changed or were removed; a running cluster only takes appended nodes"));
        }
        if let Some(n) = newer.nodes[self.nodes.len()..].iter().find(|n| n.replaces.is_none()) {
            return Err(invalid(format!(
                "node {} replaces no node; a running cluster only takes nodes that replace one (`occam cluster add-node`)",
                n.id
            )));
        }
        Ok(())
    }

    /// Every node's pinned certificate.
    pub fn pinned(&self) -> Result<PinnedCerts, ConfigError> {
        let certs = self.nodes.iter().map(|n| Ok((n.id, hex(&n.cert, "cert")?))).collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(PinnedCerts::new(certs)?)
    }
}

impl NodeConfig {
    /// Reads a node file, and the cluster and key files it names.
    /// `data_dir` comes back resolved against the node file's folder.
    pub fn load(path: &Path) -> Result<(NodeConfig, ClusterConfig, NodeKeys), ConfigError> {
        let mut node: NodeConfig = read_toml(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        node.data_dir = base.join(&node.data_dir);
        let cluster = ClusterConfig::load(&base.join(&node.cluster))?;
        let keys = NodeKeys::from_file(&read_toml(&base.join(&node.key))?)?;
        if node.node as usize >= cluster.nodes.len() {
            return Err(invalid(format!("{}: node {} is not in the cluster file", path.display(), node.node)));
        }
        let entry = &cluster.nodes[node.node as usize];
        if entry.cert != hex_encode(&keys.tls.cert) || entry.bls_key != hex_encode(&keys.bls.public_key().to_bytes()) {
            return Err(invalid(format!("{}: the key file's keys are not node {}'s keys in the cluster file", path.display(), node.node)));
        }
        if node.exec_threads == 0 || node.verify_threads == 0 {
            return Err(invalid(format!("{}: exec_threads and verify_threads must be positive", path.display())));
        }
        Ok((node, cluster, keys))
    }
}

/// What `occam cluster init` creates.
#[derive(Clone, Debug)]
pub struct InitSpec {
    /// Nodes.
    pub nodes: usize,
    /// Shards.
    pub shards: usize,
    /// Replicas per shard.
    pub replicas: usize,
    /// First QUIC port on 127.0.0.1 (node `i` listens on `base_port + i`); metrics on
    /// `base_port + 1000 + i`.
    pub base_port: u16,
    /// The host the nodes listen on.
    pub host: std::net::IpAddr,
    /// Genesis.
    pub genesis: GenesisSpec,
    /// Block limits.
    pub limits: Limits,
    /// Threads per replica and for verification, written into every node file.
    pub threads: usize,
    /// Bench signers: keys derived from a seed written into `cluster.toml`, which anyone who
    /// reads the file can sign with, instead of fresh keys in `signers.pub` / `signers.key`.
    pub bench_signers: bool,
}

/// Signing keys of a new cluster: 512, rounded down to a multiple of the shards (at least one
/// per shard).
fn default_signers(shards: usize) -> u32 {
    (512 / shards * shards).max(shards) as u32
}

/// Writes a cluster's files into `dir` (created if needed). Refuses to overwrite an existing
/// `cluster.toml`. Returns the cluster file's path.
pub fn init_cluster(dir: &Path, spec: &InitSpec) -> Result<PathBuf, ConfigError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| ConfigError::Io { path, error }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let cluster_path = dir.join("cluster.toml");
    if cluster_path.exists() {
        return Err(invalid(format!("{} exists; choose another --dir or remove it", cluster_path.display())));
    }
    let port = |offset: u32, i: u32| -> Result<u16, ConfigError> {
        u16::try_from(u32::from(spec.base_port) + offset + i).map_err(|_| invalid("--base-port leaves too few ports"))
    };
    let mut nodes = Vec::with_capacity(spec.nodes);
    let mut files = Vec::with_capacity(spec.nodes);
    for i in 0..spec.nodes.min(MAX_NODES + 1) as u32 {
        let keys = NodeKeys::generate(i)?;
        nodes.push(keys.entry(i, SocketAddr::new(spec.host, port(0, i)?), Some(SocketAddr::new(spec.host, port(1000, i)?))));
        let node = NodeConfig {
            node: i,
            cluster: "cluster.toml".into(),
            key: format!("node-{i}.key").into(),
            data_dir: format!("data/node-{i}").into(),
            exec_threads: spec.threads,
            verify_threads: spec.threads,
            hold_blocks: false,
        };
        files.push((i, keys.to_file(), node));
    }
    let shards = spec.shards.max(1);
    let cluster = ClusterConfig {
        schema: CLUSTER_SCHEMA,
        // Each cluster its own chain: a node's store records the chain id, so a data directory
        // of another cluster is refused rather than mixed in.
        chain_id: rand::random::<u64>().max(1),
        shards: spec.shards,
        replicas: spec.replicas,
        signers: default_signers(shards),
        signer_seed: spec.bench_signers.then_some(1),
        signer_keys: None,
        genesis: spec.genesis.clone(),
        limits: spec.limits.clone(),
        raft: RaftSettings::default(),
        nodes,
    };
    let mut cluster = cluster;
    let signer_files = (!spec.bench_signers).then(|| signers::generate(cluster.signers, cluster.chain_id));
    if let Some((public, _)) = &signer_files {
        cluster.signer_keys = Some(signers::reference(public));
    }
    cluster.check()?;
    if spec.threads == 0 {
        return Err(invalid("threads must be positive"));
    }
    if let Some((public, secret)) = &signer_files {
        signers::write_files(dir, public, secret)?;
    }
    for (i, keys, node) in files {
        write_file(&dir.join(format!("node-{i}.key")), &to_toml(&keys), true)?;
        write_file(&dir.join(format!("node-{i}.toml")), &to_toml(&node), false)?;
    }
    write_file(&cluster_path, &to_toml(&cluster), false)?;
    Ok(cluster_path)
}

/// Adds a node to the cluster in `dir` (its `cluster.toml` and node files, as
/// [`init_cluster`] wrote them) that replaces node `replaces` for good: fresh keys, a node
/// file (threads as the replaced node's file says, data in `data/node-<id>`), and an entry
/// in the cluster file, at `addr` (default: the replaced node's host, on the next free port
/// after every listed node's, metrics likewise). The cluster file is replaced atomically.
/// Returns the new node's id and its node file.
///
/// Running nodes read the grown file within a second: they pin the new node's certificate,
/// and each shard's leader swaps the replaced node for the new one in its Raft group once the
/// new node has caught up (see `occam_net::node`).
pub fn add_node(dir: &Path, replaces: u32, addr: Option<SocketAddr>) -> Result<(u32, PathBuf), ConfigError> {
    let cluster_path = dir.join("cluster.toml");
    let mut cluster = ClusterConfig::load(&cluster_path)?;
    let old = cluster.nodes.get(replaces as usize).cloned().ok_or_else(|| invalid(format!("there is no node {replaces} to replace")))?;
    if cluster.is_replaced(replaces) {
        return Err(invalid(format!("node {replaces} was already replaced by node {}", cluster.current(replaces))));
    }
    if cluster.nodes.len() >= MAX_NODES {
        return Err(invalid(format!("the cluster already lists {MAX_NODES} nodes")));
    }
    let id = cluster.nodes.len() as u32;
    let next_port = |f: fn(&NodeEntry) -> Option<u16>| cluster.nodes.iter().filter_map(f).max().and_then(|p| p.checked_add(1));
    let addr = match addr {
        Some(a) => a,
        None => {
            SocketAddr::new(old.addr.ip(), next_port(|n| Some(n.addr.port())).ok_or_else(|| invalid("no free port after the listed ones"))?)
        }
    };
    let metrics = old.metrics.and_then(|m| Some(SocketAddr::new(m.ip(), next_port(|n| n.metrics.map(|m| m.port()))?)));
    let keys = NodeKeys::generate(id)?;
    let mut entry = keys.entry(id, addr, metrics);
    entry.replaces = Some(replaces);
    cluster.nodes.push(entry);
    cluster.check()?;
    let old_file: Option<NodeConfig> = read_toml(&dir.join(format!("node-{replaces}.toml"))).ok();
    let node = NodeConfig {
        node: id,
        cluster: "cluster.toml".into(),
        key: format!("node-{id}.key").into(),
        data_dir: format!("data/node-{id}").into(),
        exec_threads: old_file.as_ref().map_or(1, |f| f.exec_threads),
        verify_threads: old_file.as_ref().map_or(1, |f| f.verify_threads),
        hold_blocks: false,
    };
    write_file(&dir.join(format!("node-{id}.key")), &to_toml(&keys.to_file()), true)?;
    let node_path = dir.join(format!("node-{id}.toml"));
    write_file(&node_path, &to_toml(&node), false)?;
    // Readers (running nodes) see the old file or the new one, never a part.
    let tmp = dir.join("cluster.toml.new");
    write_file(&tmp, &to_toml(&cluster), false)?;
    std::fs::rename(&tmp, &cluster_path).map_err(|error| ConfigError::Io { path: cluster_path.clone(), error })?;
    Ok((id, node_path))
}

/// A cluster on 127.0.0.1 with fresh keys, for tests and in-process benchmarks: the cluster
/// file, every node's keys, and every node's UDP socket, already bound (pass it in
/// `NodeSetup::socket`, so no other process or test can take the port meanwhile). Nothing is
/// written to disk.
pub fn local_cluster(
    nodes: usize,
    shards: usize,
    replicas: usize,
    genesis: GenesisSpec,
    limits: Limits,
) -> Result<LocalCluster, ConfigError> {
    let mut keys = Vec::with_capacity(nodes);
    let mut entries = Vec::with_capacity(nodes);
    let sockets: Vec<std::net::UdpSocket> = (0..nodes)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|error| ConfigError::Io { path: "127.0.0.1:0".into(), error })?;
    for (i, s) in sockets.iter().enumerate() {
        let k = NodeKeys::generate(i as u32)?;
        let addr = s.local_addr().map_err(|error| ConfigError::Io { path: "udp socket".into(), error })?;
        entries.push(k.entry(i as u32, addr, None));
        keys.push(k);
    }
    let s = shards.max(1);
    let cluster = ClusterConfig {
        schema: CLUSTER_SCHEMA,
        chain_id: 1,
        shards,
        replicas,
        signers: default_signers(s),
        signer_seed: Some(1),
        signer_keys: None,
        genesis,
        limits,
        raft: RaftSettings::default(),
        nodes: entries,
    };
    cluster.check()?;
    Ok((cluster, keys, sockets))
}

/// What [`local_cluster`] returns: the cluster file, each node's keys and bound socket.
pub type LocalCluster = (ClusterConfig, Vec<NodeKeys>, Vec<std::net::UdpSocket>);

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(nodes: usize, shards: usize, replicas: usize) -> InitSpec {
        InitSpec {
            nodes,
            shards,
            replicas,
            base_port: 7100,
            host: "127.0.0.1".parse().unwrap(),
            genesis: GenesisSpec { workload: "transfer".into(), accounts: 1000 },
            limits: Limits::default(),
            threads: 1,
            bench_signers: false,
        }
    }

    #[test]
    fn signer_keys_stay_out_of_the_cluster_file() {
        let dir = std::env::temp_dir().join(format!("occam-config-signers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = init_cluster(&dir, &spec(1, 1, 1)).unwrap();
        let cluster = ClusterConfig::load(&path).unwrap();
        assert_eq!((cluster.signer_seed, cluster.signer_keys.as_ref().map(|r| r.file.clone())), (None, Some(signers::PUBLIC_FILE.into())));
        let registry = signers::registry(&cluster, Some(&path)).unwrap();
        assert_eq!(registry.len() as u32, cluster.signer_numbers());
        let keys = signers::secret_keys(&cluster, &registry, Some(&path), None).unwrap();
        assert_eq!(keys.len() as u32, cluster.signers);
        // Not one secret key in the cluster file or the public file.
        let public = [std::fs::read_to_string(&path).unwrap(), std::fs::read_to_string(dir.join(signers::PUBLIC_FILE)).unwrap()];
        for k in &keys {
            assert!(public.iter().all(|text| !text.contains(&hex_encode(&k.to_bytes()))));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |f: &str| std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(signers::SECRET_FILE), 0o600);
            assert_eq!(mode("node-0.key"), 0o600);
        }
        // Numbers k and k + signers are key k.
        let k = cluster.signers;
        assert_eq!(registry.key_bytes(signers::signer_number(k, 3, 1)), registry.key_bytes(3));
        assert_eq!(signers::owner_of(k, u64::from(k) + 5), 5);
        // Another cluster's secret keys, or a changed public file, are refused.
        let (_, other) = signers::generate(cluster.signers, cluster.chain_id);
        std::fs::write(dir.join("other.key"), toml::to_string(&other).unwrap()).unwrap();
        let err = signers::secret_keys(&cluster, &registry, Some(&path), Some(&dir.join("other.key"))).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        let pub_path = dir.join(signers::PUBLIC_FILE);
        let text = std::fs::read_to_string(&pub_path).unwrap();
        std::fs::write(&pub_path, text.replacen("pop", "pop ", 1)).unwrap();
        let err = signers::registry(&cluster, Some(&path)).unwrap_err().to_string();
        assert!(err.contains("not this cluster's signer keys"), "{err}");
        // A file naming both kinds of signers, or neither, is refused.
        assert!(ClusterConfig { signer_seed: Some(1), ..cluster.clone() }.check().unwrap_err().to_string().contains("one way"));
        assert!(ClusterConfig { signer_keys: None, ..cluster.clone() }.check().unwrap_err().to_string().contains("one way"));
        // Bench signers: a seed in the file, no key files, and no secret file to read.
        let bench = dir.join("bench");
        let path = init_cluster(&bench, &InitSpec { bench_signers: true, ..spec(1, 1, 1) }).unwrap();
        let cluster = ClusterConfig::load(&path).unwrap();
        assert_eq!(cluster.signer_seed, Some(1));
        assert!(!bench.join(signers::SECRET_FILE).exists() && !bench.join(signers::PUBLIC_FILE).exists());
        let registry = signers::registry(&cluster, None).unwrap();
        assert_eq!(signers::secret_keys(&cluster, &registry, None, None).unwrap().len() as u32, cluster.signers);
        assert!(signers::secret_keys(&cluster, &registry, None, Some(&pub_path)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn init_writes_files_that_load_back() {
        let dir = std::env::temp_dir().join(format!("occam-config-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = init_cluster(&dir, &spec(4, 2, 3)).unwrap();
        let cluster = ClusterConfig::load(&path).unwrap();
        assert_eq!(cluster.nodes.len(), 4);
        assert_eq!(cluster.signers % 2, 0);
        for i in 0..4 {
            let (node, c, keys) = NodeConfig::load(&dir.join(format!("node-{i}.toml"))).unwrap();
            assert_eq!(node.node, i);
            assert_eq!(c, cluster);
            assert_eq!(hex_encode(&keys.tls.cert), cluster.nodes[i as usize].cert);
        }
        // Placement: every replica of a shard on its own node, leaders spread.
        for s in 0..2 {
            let nodes: std::collections::BTreeSet<u32> = (0..3).map(|r| cluster.node_of(s, r)).collect();
            assert_eq!(nodes.len(), 3);
            assert_eq!(cluster.genesis_validators(s).unwrap().ids(), &nodes.into_iter().collect::<Vec<_>>()[..]);
        }
        assert_eq!(cluster.leader_of(1), 1);
        assert!(init_cluster(&dir, &spec(4, 2, 3)).is_err(), "an existing cluster is not overwritten");

        // Replacing node 3 for good, then its replacement.
        let (id, file) = add_node(&dir, 3, None).unwrap();
        assert_eq!(id, 4);
        let (node4, grown, _) = NodeConfig::load(&file).unwrap();
        assert_eq!((node4.node, grown.nodes[4].replaces), (4, Some(3)));
        assert_eq!(grown.nodes[4].addr.port(), cluster.nodes[3].addr.port() + 1);
        cluster.check_extension(&grown).unwrap();
        assert!(grown.check_extension(&cluster).is_err(), "nodes are never removed");
        assert!(cluster.check_extension(&ClusterConfig { chain_id: 9, ..grown.clone() }).is_err());
        for s in 0..2 {
            let before: Vec<u32> = (0..3).map(|r| cluster.node_of(s, r)).collect();
            let after: Vec<u32> = (0..3).map(|r| grown.node_of(s, r)).collect();
            assert_eq!(after, before.iter().map(|&n| if n == 3 { 4 } else { n }).collect::<Vec<_>>(), "shard {s}");
        }
        assert_eq!(grown.hosted_by(4), cluster.hosted_by(3));
        assert!(grown.hosted_by(3).is_empty());
        assert_eq!(grown.eligible(1), vec![1, 2, 3, 4]);
        let err = add_node(&dir, 3, None).unwrap_err().to_string();
        assert!(err.contains("already replaced by node 4"), "{err}");
        assert_eq!(add_node(&dir, 4, None).unwrap().0, 5);
        let twice = ClusterConfig::load(&dir.join("cluster.toml")).unwrap();
        assert_eq!((twice.current(3), twice.node_of(1, 2), twice.eligible(1)), (5, 5, vec![1, 2, 3, 4, 5]));
        // Who may certify shard 1 (slots 1, 2 and 3 → 4 → 5): one node per slot, or a node and
        // its direct replacement; never a slot left out, a node of another shard, or nodes of
        // one slot far apart.
        for ok in [&[1, 2, 3][..], &[1, 2, 4], &[1, 2, 5], &[1, 2, 3, 4], &[1, 2, 4, 5]] {
            twice.check_members(1, ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for bad in [&[1, 2][..], &[1, 2, 3, 5], &[1, 2, 3, 4, 5], &[0, 1, 2], &[2, 1, 3], &[1, 1, 2, 3], &[]] {
            assert!(twice.check_members(1, bad).is_err(), "{bad:?}");
        }
        assert!(twice.check_members(2, &[2, 3, 0]).is_err(), "ids must ascend");
        assert!(twice.check_members(9, &[1, 2, 3]).is_err(), "no shard 9");
        // A running cluster takes appended nodes only if they replace one.
        let mut plain = twice.clone();
        plain.nodes.push(NodeKeys::generate(6).unwrap().entry(6, "127.0.0.1:1".parse().unwrap(), None));
        assert!(twice.check_extension(&plain).unwrap_err().to_string().contains("replaces no node"));
        // A replacement listed before the node it replaces, or a node replaced twice, is refused.
        let mut bad = twice.clone();
        bad.nodes[5].replaces = Some(3);
        assert!(bad.check().unwrap_err().to_string().contains("replaced twice"));
        bad.nodes[5].replaces = Some(5);
        assert!(bad.check().unwrap_err().to_string().contains("one listed before it"));
        // A key file that does not match the cluster file is refused.
        std::fs::copy(dir.join("node-1.key"), dir.join("node-0.key")).unwrap();
        let err = NodeConfig::load(&dir.join("node-0.toml")).unwrap_err().to_string();
        assert!(err.contains("not node 0's keys"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_layouts_are_refused() {
        let dir = std::env::temp_dir().join(format!("occam-config-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let err = init_cluster(&dir, &spec(2, 1, 3)).unwrap_err().to_string();
        assert!(err.contains("each replica needs its own node"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
