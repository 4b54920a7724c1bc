//! Running nodes from cluster files, and the signed transactions clients send them.
//!
//! The node library (`occam-net`) takes a genesis state and a signer registry; this module
//! builds both from the cluster file (`[genesis]`, and the signers of
//! [`occam_net::config::signers`]), so `occam node`, `occam load` and the tests agree on them,
//! and generates the signed, routed transactions clients send ([`LoadTxs`]). Genesis gives
//! every account an owner: account `id` belongs to signing key `id % signers`.

use crate::distribution::Distribution;
use crate::workload::{Generator, Placement, Workload};
use anyhow::Context;
use occam_engine::crypto::{KeyRegistry, SecretKey};
use occam_engine::key::Key;
use occam_engine::native::signed::{nonce_key, round_robin_owners, signed_keys};
use occam_engine::native::signed::{RawSignedTx, TxHeader};
use occam_engine::state::CommittedState;
use occam_engine::value::Value;
use occam_net::client::{Client, ClientEvent};
use occam_net::config::signers::{owner_of, signer_number};
use occam_net::config::{ClusterConfig, NodeKeys};
use occam_net::node::{cluster_partitioner, route_keys, Genesis, Node, NodeSetup};
use occam_net::wire::{Refusal, ReplicaStatus, TxFate, MAX_READ_KEYS, MAX_TX_QUERY};
use occam_shard::partition::Partitioner;
use occam_shard::Certificate;
use rayon::prelude::*;
use std::sync::Arc;

/// Sends tracing output to stderr, filtered by `OCCAM_LOG` (default `info`); a second call
/// does nothing.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OCCAM_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// The genesis state a cluster file describes: the workload's entries, and an owner record for
/// every id it draws from (id `i` owned by signing key `i % signers` of `registry`).
pub fn genesis(cluster: &ClusterConfig, registry: &KeyRegistry) -> anyhow::Result<CommittedState> {
    let spec = &cluster.genesis;
    let workload: Workload = spec.workload.parse().with_context(|| format!("genesis workload `{}`", spec.workload))?;
    let owners = registry.keys().get(..cluster.signers as usize).context("the registry lacks the cluster's signing keys")?;
    let mut entries = workload.genesis_entries(spec.accounts);
    entries.extend(round_robin_owners(0..workload.id_count(spec.accounts), owners));
    Ok(CommittedState::from_entries(entries))
}

/// The cluster's signer registry, and every signing key's secret key: derived in bench mode,
/// else read from `secret_file` (default: `signers.key` next to `cluster_file`).
pub fn signers(
    cluster: &ClusterConfig,
    cluster_file: Option<&std::path::Path>,
    secret_file: Option<&std::path::Path>,
) -> anyhow::Result<(Vec<SecretKey>, Arc<KeyRegistry>)> {
    let registry = signer_registry(cluster, cluster_file)?;
    let keys =
        occam_net::config::signers::secret_keys(cluster, &registry, cluster_file, secret_file).context("the signers' secret keys")?;
    Ok((keys, registry))
}

/// The cluster's signer registry alone (what nodes need).
pub fn signer_registry(cluster: &ClusterConfig, cluster_file: Option<&std::path::Path>) -> anyhow::Result<Arc<KeyRegistry>> {
    occam_net::config::signers::registry(cluster, cluster_file).context("the cluster's signers")
}

/// What `occam node --config PATH` starts: the node file at `path`, the cluster and key files
/// it names, a genesis built from the cluster file only on a first start, and the cluster file
/// watched for nodes appended to it (replacements).
pub fn node_setup(path: &std::path::Path) -> anyhow::Result<NodeSetup> {
    let (node_cfg, cluster, keys) = occam_net::config::NodeConfig::load(path)?;
    let cluster_file = path.parent().unwrap_or(std::path::Path::new(".")).join(&node_cfg.cluster);
    let registry = signer_registry(&cluster, Some(&cluster_file))?;
    let (for_genesis, owners) = (cluster.clone(), registry.clone());
    let genesis = Genesis::Build(Box::new(move || {
        let spec = &for_genesis.genesis;
        tracing::info!(workload = %spec.workload, accounts = spec.accounts, "building the genesis state");
        genesis(&for_genesis, &owners).map_err(|e| format!("{e:#}"))
    }));
    Ok(NodeSetup {
        node: node_cfg.node,
        cluster,
        keys,
        exec_threads: node_cfg.exec_threads,
        verify_threads: node_cfg.verify_threads,
        genesis,
        registry,
        socket: None,
        hold_blocks: node_cfg.hold_blocks,
        cluster_file: Some(cluster_file),
        data_dir: node_cfg.data_dir,
    })
}

/// Starts node `node` of `cluster` in this process (on `socket` if given, else binding the
/// cluster file's address), with its store in `data_dir`.
#[allow(clippy::too_many_arguments)]
pub fn start_node(
    cluster: &ClusterConfig,
    node: u32,
    keys: NodeKeys,
    threads: usize,
    genesis: Arc<CommittedState>,
    registry: Arc<KeyRegistry>,
    socket: Option<std::net::UdpSocket>,
    data_dir: &std::path::Path,
) -> anyhow::Result<Node> {
    let setup = NodeSetup {
        node,
        cluster: cluster.clone(),
        keys,
        exec_threads: threads,
        verify_threads: threads,
        genesis: Genesis::State(genesis),
        registry,
        socket,
        hold_blocks: false,
        data_dir: data_dir.to_path_buf(),
        cluster_file: None,
    };
    Node::start(setup).with_context(|| format!("starting node {node}"))
}

/// Every node's replica statuses (but nodes replaced for good), asked of all at once: per node,
/// its replicas or why it did not answer within `timeout` (each node on its own connection, so
/// a dead node costs `timeout` once, not once per node).
pub async fn node_statuses(cluster: &ClusterConfig, timeout: std::time::Duration) -> Vec<(u32, Result<Vec<ReplicaStatus>, String>)> {
    let nodes = cluster.live_nodes();
    let asks: Vec<_> = nodes
        .iter()
        .map(|&node| {
            let cluster = cluster.clone();
            tokio::spawn(async move {
                let asked = async {
                    let mut c = Client::connect_to(&cluster, &[node]).await.map_err(|e| e.to_string())?;
                    c.request_status(node).await.map_err(|e| e.to_string())?;
                    while let Some(e) = c.next_event().await {
                        if let ClientEvent::Status { replicas, .. } = e {
                            c.close().await;
                            return Ok(replicas);
                        }
                    }
                    Err("connection closed".to_string())
                };
                match tokio::time::timeout(timeout, asked).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer in {timeout:?}")),
                }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(asks.len());
    for (node, ask) in nodes.into_iter().zip(asks) {
        out.push((node, ask.await.unwrap_or_else(|e| Err(e.to_string()))));
    }
    out
}

/// A client of every node that answers, sending each shard's batches to the leader the nodes
/// report now (not the bootstrap leader of the cluster file, which may have changed).
pub async fn connect(cluster: &ClusterConfig) -> anyhow::Result<Client> {
    let client = Client::connect(cluster).await.context("connecting to the cluster's nodes")?;
    for (node, answer) in node_statuses(cluster, std::time::Duration::from_secs(2)).await {
        if let Ok(replicas) = answer {
            client.learn_leaders(node, &replicas);
        }
    }
    Ok(client)
}

/// The next event of `client`, within 10 s, while waiting for answers to `what`.
async fn next_answer(client: &mut Client, what: &str) -> anyhow::Result<ClientEvent> {
    tokio::time::timeout(std::time::Duration::from_secs(10), client.next_event())
        .await
        .with_context(|| format!("no answer to {what} in 10 s"))?
        .context("the cluster closed the connection")
}

/// No leader known for a shard (an election is on): a little later, asks every node who leads.
async fn relearn_leaders(client: &Client, cluster: &ClusterConfig) {
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for (node, answer) in node_statuses(cluster, std::time::Duration::from_secs(1)).await {
        if let Ok(replicas) = answer {
            client.learn_leaders(node, &replicas);
        }
    }
}

/// How many times [`fetch_values`] asks again after a `NotLeader`.
const READ_RETRIES: usize = 50;

/// Every signer's next nonce, read from the shard leaders (so a load run can follow earlier
/// ones on the same cluster). Call before other traffic on `client`: other events are
/// discarded while it waits.
pub async fn fetch_nonces(client: &mut Client) -> anyhow::Result<Vec<u64>> {
    let keys = (0..client.cluster().signer_numbers()).map(nonce_key).collect();
    let values = fetch_values(client, keys).await?;
    Ok(values.into_iter().map(|v| v.and_then(|v| v.as_u64()).unwrap_or(0)).collect())
}

/// The current values of `keys`, in order, read from their shards' leaders in reads of at most
/// [`MAX_READ_KEYS`] keys. Call before other traffic on `client`: other events are discarded
/// while it waits.
pub async fn fetch_values(client: &mut Client, keys: Vec<Key>) -> anyhow::Result<Vec<Option<Value>>> {
    let cluster = client.cluster().clone();
    let partitioner = cluster_partitioner(&cluster);
    let mut by_shard: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (i, k) in keys.iter().enumerate() {
        by_shard.entry(partitioner.shard_of(k)).or_default().push(i);
    }
    // One read per chunk; its id indexes `reads`.
    let reads: Vec<(u32, &[usize])> = by_shard.iter().flat_map(|(s, idx)| idx.chunks(MAX_READ_KEYS).map(move |c| (*s, c))).collect();
    // A read's shard and keys, by id.
    let read = |id: usize| (reads[id].0, reads[id].1.iter().map(|&i| keys[i]).collect::<Vec<Key>>());
    for id in 0..reads.len() {
        let (shard, ks) = read(id);
        client.read(shard, id as u64, ks).await?;
    }
    let mut out = vec![None; keys.len()];
    let mut answered = vec![false; reads.len()];
    let mut left = reads.len();
    let mut retries = 0;
    while left > 0 {
        let event = next_answer(client, "a read").await?;
        match event {
            ClientEvent::Values { id, values } => {
                let id = usize::try_from(id).ok().filter(|&i| i < reads.len()).context("an answer to a read not sent")?;
                if !std::mem::replace(&mut answered[id], true) {
                    for (&i, (_, v)) in reads[id].1.iter().zip(values) {
                        out[i] = v;
                    }
                    left -= 1;
                }
            }
            // The shard's leader moved (or none is elected yet): ask the one named, or the one
            // the nodes report, a little later; a bounded number of times.
            ClientEvent::Refused { batch: id, reason: Refusal::NotLeader | Refusal::ShuttingDown, leader } if retries < READ_RETRIES => {
                retries += 1;
                let id = usize::try_from(id).ok().filter(|&i| i < reads.len()).context("a refusal of a read not sent")?;
                match leader {
                    Some(l) => client.set_leader(reads[id].0, l),
                    None => relearn_leaders(client, &cluster).await,
                }
                let (shard, ks) = read(id);
                client.read(shard, id as u64, ks).await?;
            }
            ClientEvent::Refused { reason, .. } => anyhow::bail!("a read was refused: {reason:?}"),
            // A node went down (a leader may have been killed): what is unanswered is asked
            // again of the leaders the live nodes report, once one other than it is known.
            ClientEvent::Closed { node, .. } if retries < READ_RETRIES => {
                retries += 1;
                for id in (0..reads.len()).filter(|&i| !answered[i]) {
                    let (shard, ks) = read(id);
                    await_other_leader(client, &cluster, shard, node).await;
                    let _ = client.read(shard, id as u64, ks).await;
                }
            }
            ClientEvent::Closed { node, reason } => anyhow::bail!("node {node} closed the connection: {reason}"),
            _ => {}
        }
    }
    Ok(out)
}

/// Waits (up to about 5 s) until the client knows a leader of `shard` other than `down`.
async fn await_other_leader(client: &Client, cluster: &ClusterConfig, shard: u32, down: u32) {
    for _ in 0..30 {
        if client.leader(shard) != down {
            return;
        }
        relearn_leaders(client, cluster).await;
    }
}

/// What became of a transaction, as the leader of its signer's shard told [`fetch_fates`].
#[derive(Debug, Clone, PartialEq)]
pub enum Fate {
    /// Committed in the block this certificate certifies (verified against the cluster
    /// file's validator set).
    Committed(Box<Certificate>),
    /// Its nonce is spent (a transaction with it committed); the certificate is not there yet
    /// (the block at this height, if known, is applied and not certified).
    Spent(Option<u64>),
    /// Admitted and not final yet.
    Pending,
    /// No node knows it: safe to send again.
    Unknown,
}

/// The fates of transactions named by `(signer, nonce)`, asked of the leaders of their
/// signers' shards in reads of at most [`MAX_TX_QUERY`], following `NotLeader` answers. A
/// certificate that does not verify is an error. Call before other traffic on `client`: other
/// events are discarded while it waits.
pub async fn fetch_fates(client: &mut Client, txs: &[(u32, u64)]) -> anyhow::Result<Vec<Fate>> {
    let cluster = client.cluster().clone();
    let mut out: Vec<Option<Fate>> = vec![None; txs.len()];
    let mut retries = 0;
    loop {
        // Ask for every transaction without a final answer, by shard, in chunks.
        let mut by_shard: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
        for (i, &(signer, _)) in txs.iter().enumerate().filter(|(i, _)| out[*i].is_none()) {
            by_shard.entry(client.nonce_shard(signer)).or_default().push(i);
        }
        let asks: Vec<(u32, Vec<usize>)> =
            by_shard.iter().flat_map(|(s, idx)| idx.chunks(MAX_TX_QUERY).map(move |c| (*s, c.to_vec()))).collect();
        if asks.is_empty() {
            return Ok(out.into_iter().map(|f| f.expect("every transaction answered")).collect());
        }
        anyhow::ensure!(retries <= READ_RETRIES, "no leader answered for the transactions' shards after {READ_RETRIES} tries");
        retries += 1;
        let mut left = 0;
        let mut again = false;
        // Ids name the round in their high half, so a late answer to an earlier round is not
        // taken for this one's.
        let round = (retries as u64) << 32;
        for (id, (shard, idx)) in asks.iter().enumerate() {
            match client.query_fates(client.leader(*shard), round | id as u64, idx.iter().map(|&i| txs[i]).collect()).await {
                Ok(()) => left += 1,
                // Its leader's connection is gone: asked again once another leader is known.
                Err(_) => again = true,
            }
        }
        while left > 0 {
            let event = next_answer(client, "a status read").await?;
            match event {
                ClientEvent::Fates { id, certificates, fates, .. } => {
                    if id >> 32 != round >> 32 {
                        continue;
                    }
                    let (shard, idx) = asks.get((id & u64::from(u32::MAX)) as usize).context("an answer to a status read not sent")?;
                    anyhow::ensure!(fates.len() == idx.len(), "a status read answered {} of {} transactions", fates.len(), idx.len());
                    left -= 1;
                    for (&i, fate) in idx.iter().zip(fates) {
                        out[i] = match fate {
                            TxFate::Committed { certificate } => {
                                let c = certificates.get(certificate as usize).context("a fate names a certificate not sent")?;
                                client
                                    .verify_certificate(c)
                                    .with_context(|| format!("the certificate of shard {shard}'s block {}", c.vote.height))?;
                                Some(Fate::Committed(Box::new(c.clone())))
                            }
                            TxFate::Spent { height } => Some(Fate::Spent(height)),
                            TxFate::Pending => Some(Fate::Pending),
                            TxFate::Unknown => Some(Fate::Unknown),
                            TxFate::NotLeader { leader } => {
                                match leader {
                                    Some(l) => client.set_leader(*shard, l),
                                    None => again = true,
                                }
                                None
                            }
                        };
                    }
                }
                ClientEvent::Refused { reason: Refusal::Throttled, .. } => anyhow::bail!("a status read was throttled"),
                // A node went down: what it was asked is asked again of the next leader.
                ClientEvent::Closed { node, .. } => {
                    for (shard, _) in &asks {
                        await_other_leader(client, &cluster, *shard, node).await;
                    }
                    again = true;
                    break;
                }
                _ => {}
            }
        }
        if again {
            relearn_leaders(client, &cluster).await;
        }
    }
}

/// Signed transactions of a workload for a cluster, each with its route: the shard whose leader
/// takes it, or `None` for a cross-shard one (the coordinator takes those).
///
/// Transactions come from the workload's generator ([`Generator`]); for `transfer`, the share
/// of cross-shard ones is `cross_shard` (other workloads keep the share their keys give). Each
/// is signed by the key that owns its sender (`sender % signers`, as genesis dealt the
/// accounts), so the owner check passes; kinds that act for nobody are signed the same way.
/// A signer's nonces count up in generation order and must reach the cluster in that order,
/// but single-shard and cross-shard transactions travel to different nodes: so a key signs
/// single-shard transactions under its lane-0 number and cross-shard ones under its lane-1
/// number, each with its own nonces ([`occam_net::config::signers`]). Both numbers' nonces
/// live on the sender's shard (`signers` is a multiple of the shards), with its owner record.
pub struct LoadTxs {
    gen: Generator,
    partitioner: Arc<dyn Partitioner>,
    chain_id: u64,
    signers: u32,
    nonces: Vec<u64>,
}

impl LoadTxs {
    /// A generator of `workload` (which must be the cluster's genesis workload) over the
    /// cluster's accounts; `nonces` continues from earlier runs ([`fetch_nonces`]), `None`
    /// starts every signer number at 0.
    pub fn new(
        cluster: &ClusterConfig,
        workload: &str,
        distribution: Distribution,
        cross_shard: f64,
        seed: u64,
        nonces: Option<Vec<u64>>,
    ) -> anyhow::Result<LoadTxs> {
        let w: Workload = workload.parse().with_context(|| format!("workload `{workload}`"))?;
        let g: Workload = cluster.genesis.workload.parse().with_context(|| format!("genesis workload `{}`", cluster.genesis.workload))?;
        if w.to_string() != g.to_string() {
            anyhow::bail!("--workload {w}: this cluster's genesis is for `{g}` (cluster.toml [genesis]); use that workload");
        }
        let accounts = cluster.genesis.accounts;
        w.check(accounts, distribution).with_context(|| format!("workload `{w}`"))?;
        let shards = cluster.shards as u32;
        let placement = Placement { shard_of: Arc::new(move |id| (id % u64::from(shards)) as u32), cross_share: cross_shard };
        let gen = Generator::new(w, accounts, distribution, seed, 0).with_placement(placement);
        let numbers = cluster.signer_numbers() as usize;
        let nonces = nonces.filter(|n| n.len() == numbers).unwrap_or_else(|| vec![0; numbers]);
        Ok(LoadTxs { gen, partitioner: cluster_partitioner(cluster), chain_id: cluster.chain_id, signers: cluster.signers, nonces })
    }

    /// The next transaction's header (unsigned) and its route.
    pub fn next_header(&mut self) -> (TxHeader, Option<u32>) {
        let mut keys = Vec::new();
        loop {
            let body = self.gen.next_tx();
            let owner = owner_of(self.signers, body.kind.sender());
            let mut header = TxHeader { signer: signer_number(self.signers, owner, 0), nonce: 0, body };
            keys.clear();
            if !signed_keys(&header, &mut keys) || keys.is_empty() {
                continue; // Undeclared keys cannot be routed; nodes would refuse it.
            }
            // Both lanes' nonces live on the same shard, so the route does not depend on it.
            let route = route_keys(&*self.partitioner, &keys);
            header.signer = signer_number(self.signers, owner, if route.is_some() { 0 } else { 1 });
            let nonce = &mut self.nonces[header.signer as usize];
            header.nonce = *nonce;
            *nonce += 1;
            return (header, route);
        }
    }

    /// `n` signed transactions (signed in parallel), with their routes.
    pub fn signed(&mut self, n: usize, keys: &[SecretKey]) -> Vec<(RawSignedTx, Option<u32>)> {
        let headers: Vec<(TxHeader, Option<u32>)> = (0..n).map(|_| self.next_header()).collect();
        let (chain_id, signers) = (self.chain_id, self.signers);
        headers
            .into_par_iter()
            .map(|(h, route)| {
                let key = &keys[(h.signer % signers) as usize];
                let tx = h.sign(chain_id, key);
                (RawSignedTx::from(&tx), route)
            })
            .collect()
    }
}
