//! Running nodes from cluster files, and the signed transactions clients send them.
//!
//! The node library (`occam-net`) takes a genesis state and a signer registry; this module
//! builds both from the cluster file (`[genesis]`, `signers`, `signer_seed`), so `occam node`,
//! `occam load` and the tests agree on them.

use crate::workload::Workload;
use anyhow::Context;
use occam_engine::crypto::{deterministic_signers, KeyRegistry, SecretKey};
use occam_engine::native::signed::nonce_key;
use occam_engine::native::signed::{RawSignedTx, TxHeader};
use occam_engine::native::{NativeTx, TxKind};
use occam_engine::state::CommittedState;
use occam_net::client::{Client, ClientEvent};
use occam_net::config::{ClusterConfig, GenesisSpec, NodeKeys};
use occam_net::node::{cluster_partitioner, Node, NodeSetup};
use rand::Rng;
use rayon::prelude::*;
use std::sync::Arc;

/// The genesis state a cluster file describes.
pub fn genesis(spec: &GenesisSpec) -> anyhow::Result<CommittedState> {
    let workload: Workload = spec.workload.parse().with_context(|| format!("genesis workload `{}`", spec.workload))?;
    Ok(CommittedState::from_entries(workload.genesis_entries(spec.accounts)))
}

/// The cluster's transaction signers and their registry.
pub fn signers(cluster: &ClusterConfig) -> anyhow::Result<(Vec<SecretKey>, Arc<KeyRegistry>)> {
    let (keys, registry) = deterministic_signers(cluster.signers, cluster.signer_seed).context("deriving the signers")?;
    Ok((keys, Arc::new(registry)))
}

/// Starts node `node` of `cluster` in this process (on `socket` if given, else binding the
/// cluster file's address).
pub fn start_node(
    cluster: &ClusterConfig,
    node: u32,
    keys: NodeKeys,
    threads: usize,
    genesis: Arc<CommittedState>,
    registry: Arc<KeyRegistry>,
    socket: Option<std::net::UdpSocket>,
) -> anyhow::Result<Node> {
    let setup = NodeSetup {
        node,
        cluster: cluster.clone(),
        keys,
        exec_threads: threads,
        verify_threads: threads,
        genesis,
        registry,
        socket,
        hold_blocks: false,
    };
    Node::start(setup).with_context(|| format!("starting node {node}"))
}

/// Every signer's next nonce, read from the shard leaders (so a load run can follow earlier
/// ones on the same cluster). Call before other traffic on `client`: other events are
/// discarded while it waits.
pub async fn fetch_nonces(client: &mut Client) -> anyhow::Result<Vec<u64>> {
    let cluster = client.cluster().clone();
    let partitioner = cluster_partitioner(&cluster);
    let mut by_shard: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
    for s in 0..cluster.signers {
        by_shard.entry(partitioner.shard_of(&nonce_key(s))).or_default().push(s);
    }
    for (shard, signers) in &by_shard {
        client.read(*shard, u64::from(*shard), signers.iter().map(|s| nonce_key(*s)).collect()).await?;
    }
    let mut nonces = vec![0u64; cluster.signers as usize];
    let mut answered = 0;
    while answered < by_shard.len() {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), client.next_event())
            .await
            .context("no answer to the nonce query in 10 s")?
            .context("the cluster closed the connection")?;
        match event {
            ClientEvent::Values { id, values } => {
                let signers = by_shard.get(&(id as u32)).context("an answer to a query not sent")?;
                for (s, (_, v)) in signers.iter().zip(values) {
                    nonces[*s as usize] = v.and_then(|v| v.as_u64()).unwrap_or(0);
                }
                answered += 1;
            }
            ClientEvent::Refused { reason, .. } => anyhow::bail!("the nonce query was refused: {reason:?}"),
            ClientEvent::Closed { node, reason } => anyhow::bail!("node {node} closed the connection: {reason}"),
            _ => {}
        }
    }
    Ok(nonces)
}

/// Signed transfers between a cluster's genesis accounts, routed by shard.
///
/// Account `a` signs with signer `a % signers`; each signer's nonces count up in generation
/// order, so a signer's transactions must reach the cluster in that order. Single-shard
/// transfers go to their shard's leader and cross-shard ones to the coordinator, over different
/// connections, so when some transfers cross shards the two kinds use disjoint signers (a
/// quarter of the signers, by `(signer / shards) % 4 == 3`, send the cross-shard ones).
pub struct Transfers {
    accounts: u64,
    shards: u64,
    signers: u64,
    chain_id: u64,
    nonces: Vec<u64>,
}

impl Transfers {
    /// A generator whose signers continue from `nonces` (one per signer, as
    /// [`fetch_nonces`] returns them).
    pub fn with_nonces(cluster: &ClusterConfig, nonces: Vec<u64>) -> Transfers {
        let mut t = Transfers::new(cluster);
        if nonces.len() == t.nonces.len() {
            t.nonces = nonces;
        }
        t
    }

    /// A generator for `cluster`'s accounts, every signer at nonce 0 (a fresh cluster).
    pub fn new(cluster: &ClusterConfig) -> Transfers {
        Transfers {
            accounts: cluster.genesis.accounts.max(cluster.shards as u64),
            shards: cluster.shards as u64,
            signers: u64::from(cluster.signers),
            chain_id: cluster.chain_id,
            nonces: vec![0; cluster.signers as usize],
        }
    }

    fn cross_class(&self, account: u64) -> bool {
        (account % self.signers / self.shards) % 4 == 3
    }

    /// The next transfer's header (unsigned) and its route: its shard, or `None` when it
    /// crosses shards (drawn with probability `cross_shard`).
    pub fn next_header(&mut self, rng: &mut impl Rng, cross_shard: f64) -> (TxHeader, Option<u32>) {
        let cross = self.shards > 1 && rng.gen_bool(cross_shard.clamp(0.0, 1.0));
        let mut from = rng.gen_range(0..self.accounts);
        if cross_shard > 0.0 {
            for _ in 0..1000 {
                if self.cross_class(from) == cross {
                    break;
                }
                from = rng.gen_range(0..self.accounts);
            }
        }
        let mut to = rng.gen_range(0..self.accounts);
        // The receiver's shard (its residue under the modulo partitioner): the sender's, or
        // another one.
        let home = from % self.shards;
        let target = if cross { (home + 1 + rng.gen_range(0..self.shards - 1)) % self.shards } else { home };
        to = to - to % self.shards + target;
        if to >= self.accounts {
            to -= self.shards;
        }
        let signer = from % self.signers;
        let nonce = self.nonces[signer as usize];
        self.nonces[signer as usize] += 1;
        let body = NativeTx { kind: TxKind::Transfer { from, to, amount: 1 }, work_rounds: 0 };
        (TxHeader { signer: signer as u32, nonce, body }, (!cross).then_some(home as u32))
    }

    /// `n` signed transfers (signed in parallel), with their routes.
    pub fn signed(&mut self, rng: &mut impl Rng, n: usize, cross_shard: f64, keys: &[SecretKey]) -> Vec<(RawSignedTx, Option<u32>)> {
        let headers: Vec<(TxHeader, Option<u32>)> = (0..n).map(|_| self.next_header(rng, cross_shard)).collect();
        let chain_id = self.chain_id;
        headers
            .into_par_iter()
            .map(|(h, route)| {
                let key = &keys[h.signer as usize];
                let tx = h.sign(chain_id, key);
                (RawSignedTx::from(&tx), route)
            })
            .collect()
    }
}
