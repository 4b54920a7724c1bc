//! The node commands of `occam`: keygen, cluster init/status, node, load.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use occam_bench::cluster::{init_logging, node_statuses};
use occam_bench::load::{render, run_ingress, run_load, LoadConfig};
use occam_net::config::{init_cluster, ClusterConfig, GenesisSpec, InitSpec, Limits, NodeKeys};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// `occam keygen`.
#[derive(Args)]
pub struct KeygenArgs {
    /// The node id the keys are for (its TLS certificate names it).
    #[arg(long)]
    node: u32,
    /// Where to write the key file (refused if it exists).
    #[arg(long)]
    out: PathBuf,
    /// The address the node will listen on, for the printed cluster entry.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: SocketAddr,
}

/// `occam cluster …`.
#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Write a cluster file, and every node's config and keys, into a directory.
    Init(InitArgs),
    /// Ask every node of a cluster for its replicas' heights and state roots.
    Status(StatusArgs),
    /// What became of a signer's transactions: committed (with the block's verified
    /// certificate), spent, pending or unknown, by nonce.
    Tx(TxArgs),
    /// Replace a node that is gone for good: write a new node (keys, node file) into the
    /// cluster's directory and append it to the cluster file with `replaces`. Start it with
    /// `occam node`; the running nodes take it in and each shard's group swaps the old node
    /// for it once it has caught up.
    AddNode(AddNodeArgs),
}

/// `occam cluster add-node`.
#[derive(Args)]
pub struct AddNodeArgs {
    /// The cluster's directory (`occam cluster init --dir`): its cluster.toml and node files.
    #[arg(long)]
    dir: PathBuf,
    /// The node replaced for good (it must not run again).
    #[arg(long)]
    replaces: u32,
    /// The new node's QUIC address (default: the replaced node's host, the next free port).
    #[arg(long)]
    addr: Option<SocketAddr>,
}

/// `occam cluster tx`.
#[derive(Args)]
pub struct TxArgs {
    /// The cluster file.
    #[arg(long)]
    cluster: PathBuf,
    /// The signer.
    #[arg(long)]
    signer: u32,
    /// The first nonce asked about.
    #[arg(long)]
    nonce: u64,
    /// How many consecutive nonces to ask about (at most 4096).
    #[arg(long, default_value_t = 1)]
    count: u64,
}

/// `occam cluster init`.
#[derive(Args)]
pub struct InitArgs {
    /// Nodes.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Shards.
    #[arg(long, default_value_t = 4)]
    shards: usize,
    /// Replicas per shard (at most --nodes).
    #[arg(long, default_value_t = 4)]
    replicas: usize,
    /// Directory for the files (created; an existing cluster.toml is not overwritten).
    #[arg(long)]
    dir: PathBuf,
    /// Node i listens on UDP port base + i, its metrics on TCP port base + 1000 + i.
    #[arg(long, default_value_t = 7000)]
    base_port: u16,
    /// The address nodes listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// The workload whose genesis state the nodes start from (`occam load` then drives it).
    #[arg(long, default_value = "transfer")]
    workload: String,
    /// Genesis accounts (ids) of the workload.
    #[arg(long, default_value_t = 100_000)]
    accounts: u64,
    /// Threads per replica and for signature verification.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Most transactions per block.
    #[arg(long, default_value_t = Limits::default().block_txs)]
    block_txs: usize,
    /// A partial block is proposed once its oldest transaction waited this long (ms).
    #[arg(long, default_value_t = Limits::default().block_ms)]
    block_ms: u64,
    /// Transactions a shard's mempool holds.
    #[arg(long, default_value_t = Limits::default().mempool)]
    mempool: usize,
    /// Transactions one client may have pending at one node.
    #[arg(long, default_value_t = Limits::default().per_client)]
    per_client: usize,
    /// Bench signers: derive every transaction signer's key from a seed written into
    /// cluster.toml, so anyone who can read that file can spend every account. For benchmarks
    /// and tests only. Without it, fresh keys go to signers.pub (public) and signers.key
    /// (secret, mode 0600), which `occam load` reads.
    #[arg(long)]
    bench_signers: bool,
}

/// `occam cluster status`.
#[derive(Args)]
pub struct StatusArgs {
    /// The cluster file.
    #[arg(long)]
    cluster: PathBuf,
    /// How long to wait for each node (all are asked at once).
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
}

/// `occam node`.
#[derive(Args)]
pub struct NodeArgs {
    /// The node's config file (`node-<i>.toml` from `occam cluster init`).
    #[arg(long)]
    config: PathBuf,
}

/// `occam load`.
#[derive(Args)]
pub struct LoadArgs {
    /// The cluster file.
    #[arg(long)]
    cluster: PathBuf,
    /// Open loop: transactions per second, latency measured from each one's intended time.
    #[arg(long)]
    rate: Option<f64>,
    /// Closed loop: transactions outstanding at all times.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// The workload: the cluster's genesis workload (default: read from the cluster file).
    #[arg(long)]
    workload: Option<String>,
    /// Key distribution: uniform, zipf:THETA or hotspot:PROBABILITY:KEYS.
    #[arg(long, default_value = "uniform")]
    distribution: String,
    /// Share of transfers whose receiver is on another shard (they go through the
    /// coordinator); other workloads keep the share their keys give.
    #[arg(long, default_value_t = 0.0)]
    cross_shard: f64,
    /// The signers' secret key file (default: signers.key next to the cluster file; none for
    /// a cluster of bench signers).
    #[arg(long)]
    signer_keys: Option<PathBuf>,
    /// Transactions per batch.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Closed loop: transactions signed ahead.
    #[arg(long, default_value_t = 50_000)]
    max_txs: usize,
    /// Seconds to wait for the last receipts.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Measure ingress instead: send this many transactions as fast as admission takes them
    /// (signatures are not verified at ingress; see the README).
    #[arg(long)]
    ingress: Option<usize>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn keygen(a: KeygenArgs) -> anyhow::Result<()> {
    if a.out.exists() {
        bail!("{} exists; not overwriting a key file", a.out.display());
    }
    let keys = NodeKeys::generate(a.node)?;
    std::fs::write(&a.out, toml::to_string_pretty(&keys.to_file())?).with_context(|| format!("writing {}", a.out.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&a.out, std::fs::Permissions::from_mode(0o600))?;
    }
    eprintln!("wrote {}; the node's entry for cluster.toml:", a.out.display());
    println!("[[nodes]]\n{}", toml::to_string_pretty(&keys.entry(a.node, a.addr, None))?);
    Ok(())
}

pub fn cluster(c: ClusterCommand) -> anyhow::Result<()> {
    match c {
        ClusterCommand::Init(a) => {
            let spec = InitSpec {
                nodes: a.nodes,
                shards: a.shards,
                replicas: a.replicas,
                base_port: a.base_port,
                host: a.host,
                genesis: GenesisSpec { workload: a.workload, accounts: a.accounts },
                limits: Limits {
                    block_txs: a.block_txs,
                    block_ms: a.block_ms,
                    mempool: a.mempool,
                    per_client: a.per_client,
                    ..Limits::default()
                },
                threads: a.threads,
                bench_signers: a.bench_signers,
            };
            let path = init_cluster(&a.dir, &spec)?;
            println!(
                "wrote {} and node-0..{} .toml/.key: {} nodes, {} shards × {} replicas",
                path.display(),
                a.nodes - 1,
                a.nodes,
                a.shards,
                a.replicas
            );
            match a.bench_signers {
                true => println!("signers: bench signers from a seed in cluster.toml (anyone who reads it can spend every account)"),
                false => println!(
                    "signers: public keys in {}, secret keys in {} (mode 0600; only `occam load` needs it, never a node)",
                    a.dir.join(occam_net::config::signers::PUBLIC_FILE).display(),
                    a.dir.join(occam_net::config::signers::SECRET_FILE).display()
                ),
            }
            Ok(())
        }
        ClusterCommand::Status(a) => status(&ClusterConfig::load(&a.cluster)?, Duration::from_millis(a.timeout_ms)),
        ClusterCommand::Tx(a) => tx_status(&ClusterConfig::load(&a.cluster)?, &a),
        ClusterCommand::AddNode(a) => {
            let (id, file) = occam_net::config::add_node(&a.dir, a.replaces, a.addr)?;
            println!(
                "node {id} replaces node {}: wrote {} and its key; start it with `occam node --config {}` \
                 (copy the cluster file to every machine first)",
                a.replaces,
                file.display(),
                file.display()
            );
            Ok(())
        }
    }
}

fn tx_status(cluster: &ClusterConfig, a: &TxArgs) -> anyhow::Result<()> {
    if a.count == 0 || a.count > occam_net::wire::MAX_TX_QUERY as u64 {
        bail!("--count must be in 1..={}", occam_net::wire::MAX_TX_QUERY);
    }
    if a.signer >= cluster.signer_numbers() {
        bail!("signer {} is not one of the cluster's {} signer numbers", a.signer, cluster.signer_numbers());
    }
    let last = a.nonce.checked_add(a.count - 1).context("--nonce + --count overflows")?;
    let txs: Vec<(u32, u64)> = (a.nonce..=last).map(|n| (a.signer, n)).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let fates = rt.block_on(async {
        let mut client = occam_bench::cluster::connect(cluster).await?;
        let fates = occam_bench::cluster::fetch_fates(&mut client, &txs).await;
        client.close().await;
        fates
    })?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for ((signer, nonce), fate) in txs.iter().zip(fates) {
        let what = match fate {
            occam_bench::cluster::Fate::Committed(c) => {
                let hash: String = c.vote.block_hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
                format!(
                    "committed: shard {} block {} ({hash}…), certificate verified ({} of validators {:?}, epoch {})",
                    c.vote.shard,
                    c.vote.height,
                    c.signers.count(),
                    c.members,
                    c.vote.epoch
                )
            }
            occam_bench::cluster::Fate::Spent(Some(h)) => format!("spent in block {h}, not certified yet"),
            occam_bench::cluster::Fate::Spent(None) => {
                "spent (a transaction with this nonce committed; its block is not indexed here)".into()
            }
            occam_bench::cluster::Fate::Pending => "pending".into(),
            occam_bench::cluster::Fate::Unknown => "unknown (no node knows it; sending it again is safe)".into(),
        };
        let _ = writeln!(out, "signer {signer} nonce {nonce}: {what}");
    }
    Ok(())
}

fn status(cluster: &ClusterConfig, timeout: Duration) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut rows = Vec::new();
    let mut down = Vec::new();
    for (node, answer) in rt.block_on(node_statuses(cluster, timeout)) {
        match answer {
            Ok(replicas) => rows.extend(replicas.into_iter().map(|r| (node, r))),
            Err(e) => down.push(format!("node {node}: {e}")),
        }
    }
    rows.sort_by_key(|(n, r)| (r.shard, r.replica, *n));
    // Written with errors ignored: `| head` closing the pipe is not a failure.
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:>5} {:>7} {:>4} {:>9} {:>6} {:>6} {:>8} {:>8} {:>8} {:>9} {:>8}  state root",
        "shard", "replica", "node", "role", "term", "leader", "log", "applied", "height", "certified", "pending"
    );
    for (node, r) in &rows {
        let root: String = r.root.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let leader = r.leader.map_or("-".to_string(), |l| l.to_string());
        let _ = writeln!(
            out,
            "{:>5} {:>7} {:>4} {:>9} {:>6} {:>6} {:>8} {:>8} {:>8} {:>9} {:>8}  {root}…",
            r.shard,
            r.replica,
            node,
            format!("{:?}", r.role).to_lowercase(),
            r.term,
            leader,
            r.log_index,
            r.applied_index,
            r.height,
            r.certified,
            r.pending
        );
    }
    for d in &down {
        let _ = writeln!(out, "down: {d}");
    }
    if !down.is_empty() {
        bail!("{} of {} nodes did not answer", down.len(), cluster.nodes.len());
    }
    Ok(())
}

pub fn node(a: NodeArgs) -> anyhow::Result<()> {
    init_logging();
    let setup = occam_bench::cluster::node_setup(&a.config)?;
    let id = setup.node;
    if setup.hold_blocks {
        tracing::warn!("hold_blocks is set: this node admits transactions but proposes no blocks");
    }
    let node = occam_net::node::Node::start(setup).with_context(|| format!("starting node {id}"))?;
    tracing::info!(addr = %node.local_addr(), metrics = ?node.metrics_addr(), "serving; stop with SIGTERM or Ctrl-C");
    node.wait_for_signal();
    node.shutdown();
    Ok(())
}

pub fn load(a: LoadArgs) -> anyhow::Result<()> {
    let cluster = ClusterConfig::load(&a.cluster)?;
    let json = if let Some(n) = a.ingress {
        let r = run_ingress(&cluster, n, a.batch)?;
        println!(
            "occam load --ingress: {} transactions accepted by {} leader(s) in {:.3} s: {:.0} tx/s ({} batches of {}, {} refused)",
            r.accepted, r.leaders, r.seconds, r.tps, r.batches, r.batch, r.refused
        );
        serde_json::to_string_pretty(&r)?
    } else {
        let cfg = LoadConfig {
            rate: a.rate,
            concurrency: a.concurrency,
            duration_s: a.duration,
            cross_shard: a.cross_shard,
            batch: a.batch,
            workload: a.workload.unwrap_or_else(|| cluster.genesis.workload.clone()),
            distribution: a.distribution,
            max_txs: a.max_txs,
            seed: a.seed,
            drain_s: a.drain,
            cluster_file: Some(a.cluster.clone()),
            signer_keys: a.signer_keys,
        };
        let r = run_load(&cluster, &cfg, true)?;
        print!("{}", render(&r));
        if r.bad_certificates > 0 {
            bail!("{} certificates did not verify", r.bad_certificates);
        }
        serde_json::to_string_pretty(&r)?
    };
    if let Some(path) = a.json {
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
