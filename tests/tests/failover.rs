//! Real processes, real SIGKILL. Four nodes run as child processes (this test binary executed
//! again, running a node from its `node-<i>.toml` as `occam node` does), on 127.0.0.1, each
//! with its RocksDB store in the cluster's folder. An open-loop `occam load` runs while the test
//! kills a shard's leader and later a node that leads nothing, each with SIGKILL, and starts
//! each again. Then every node is killed at once and all are started again.
//!
//! Checked: the load finishes with nothing lost; the shard whose leader was killed commits
//! again within a bound; every transaction the load was told committed (or learned had
//! committed) is in the final state exactly once (the signers' nonces add up to it); the
//! cross-shard rounds, whose coordinator (shard 0's leader) is the first node killed, landed on
//! all their shards or on none (the balances add up to the genesis total); every replica of a
//! shard ends on the same height and root; after the cluster-wide kill every node comes back to
//! the same roots, with a certificate for its last block.

use occam_bench::cluster::{fetch_nonces, fetch_values, genesis, node_statuses, signers, start_node};
use occam_bench::load::{run_load, LoadConfig};
use occam_engine::native::keys::account;
use occam_net::config::{init_cluster, ClusterConfig, GenesisSpec, InitSpec, Limits, NodeConfig};
use occam_net::wire::{RaftRole, ReplicaStatus};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Set in a child: the node file it runs.
const CHILD_ENV: &str = "OCCAM_FAILOVER_NODE";
/// Set to a folder to keep each node's log there (`node-<i>.log`, appended across restarts;
/// `OCCAM_LOG` filters it, default `info`).
const LOG_DIR_ENV: &str = "OCCAM_TEST_LOG_DIR";
/// A child stops by itself after this long, or when its parent's end of stdin closes.
const CHILD_LIFETIME: Duration = Duration::from_secs(180);

/// The child: runs one node until its stdin closes (the parent ended) or its lifetime is up.
#[test]
fn failover_node() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    if std::env::var_os(LOG_DIR_ENV).is_some() {
        occam_bench::cluster::init_logging();
    }
    let (node_cfg, cluster, keys) = NodeConfig::load(Path::new(&path)).unwrap();
    let genesis = Arc::new(genesis(&cluster.genesis).unwrap());
    let (_, registry) = signers(&cluster).unwrap();
    let node = start_node(&cluster, node_cfg.node, keys, 1, genesis, registry, None, &node_cfg.data_dir).unwrap();
    println!("ready");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(CHILD_LIFETIME);
    node.shutdown();
}

/// The cluster's node processes.
struct Procs {
    dir: PathBuf,
    children: Vec<Option<Child>>,
}

impl Procs {
    fn spawn(&mut self, i: usize) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["failover_node", "--exact", "--nocapture", "--test-threads=1", "-q"])
            .env(CHILD_ENV, self.dir.join(format!("node-{i}.toml")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(match std::env::var_os(LOG_DIR_ENV) {
                Some(dir) => {
                    std::fs::create_dir_all(&dir).unwrap();
                    let path = Path::new(&dir).join(format!("node-{i}.log"));
                    Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap())
                }
                None => Stdio::null(),
            })
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("ready") => break,
                Some(_) if Instant::now() < deadline => {}
                other => panic!("node {i} did not start: {other:?}"),
            }
        }
        self.children[i] = Some(child);
    }

    /// SIGKILL, by the pid this test started.
    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// Four UDP ports and four TCP ports 1,000 above them, free now.
fn free_base_port() -> u16 {
    for attempt in 0..200u32 {
        let base = 20_000 + ((std::process::id() * 7919 + attempt * 104_729) % 30_000) as u16;
        let free = (0..4).all(|i| {
            std::net::UdpSocket::bind(("127.0.0.1", base + i)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", base + 1000 + i)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no free ports");
}

/// Every node's replica statuses (nodes that do not answer within 500 ms are left out).
fn statuses(rt: &tokio::runtime::Runtime, cluster: &ClusterConfig) -> Vec<(u32, ReplicaStatus)> {
    let answers = rt.block_on(node_statuses(cluster, Duration::from_millis(500)));
    answers.into_iter().filter_map(|(n, r)| r.ok().map(|rs| (n, rs))).flat_map(|(n, rs)| rs.into_iter().map(move |r| (n, r))).collect()
}

/// The leader of each shard, once every shard has one (within `within`).
fn leaders(rt: &tokio::runtime::Runtime, cluster: &ClusterConfig, within: Duration) -> Vec<u32> {
    let deadline = Instant::now() + within;
    loop {
        let st = statuses(rt, cluster);
        let found: Vec<Option<u32>> = (0..cluster.shards as u32)
            .map(|s| st.iter().find(|(_, r)| r.shard == s && r.role == RaftRole::Leader).map(|(n, _)| *n))
            .collect();
        if found.iter().all(Option::is_some) {
            return found.into_iter().flatten().collect();
        }
        assert!(Instant::now() < deadline, "no leader for every shard within {within:?}: {st:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until every replica of every shard stands at the same height and root, with a
/// certificate for that height; returns each shard's (height, root).
fn settled(rt: &tokio::runtime::Runtime, cluster: &ClusterConfig, nodes: usize) -> BTreeMap<u32, (u64, [u8; 32])> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = statuses(rt, cluster);
        let mut by_shard: BTreeMap<u32, Vec<&ReplicaStatus>> = BTreeMap::new();
        for (_, r) in &st {
            by_shard.entry(r.shard).or_default().push(r);
        }
        let agreed = by_shard.len() == cluster.shards
            && by_shard.values().all(|rs| {
                rs.len() == nodes && rs.iter().all(|r| r.height == rs[0].height && r.root == rs[0].root && r.certified == r.height)
            });
        if agreed {
            return by_shard.into_iter().map(|(s, rs)| (s, (rs[0].height, rs[0].root))).collect();
        }
        assert!(Instant::now() < deadline, "replicas did not settle on equal, certified heights and roots: {st:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The sum of every signer's nonce, and the sum of every account's balance, read from the
/// shards' leaders.
fn totals(rt: &tokio::runtime::Runtime, cluster: &ClusterConfig, leaders: &[u32]) -> (u64, u64) {
    rt.block_on(async {
        let mut c = occam_bench::cluster::connect(cluster).await.unwrap();
        for (s, &l) in leaders.iter().enumerate() {
            c.set_leader(s as u32, l);
        }
        let nonces: u64 = fetch_nonces(&mut c).await.unwrap().iter().sum();
        let keys = (0..cluster.genesis.accounts).map(account).collect();
        let balances = fetch_values(&mut c, keys).await.unwrap().iter().map(|v| v.as_ref().and_then(|v| v.as_u64()).unwrap_or(0)).sum();
        c.close().await;
        (nonces, balances)
    })
}

#[test]
fn sigkilled_leaders_and_followers_lose_no_receipted_transaction() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let spec = InitSpec {
        nodes: 4,
        shards: 2,
        replicas: 4,
        base_port: free_base_port(),
        host: "127.0.0.1".parse().unwrap(),
        genesis: GenesisSpec { workload: "transfer".into(), accounts: 10_000 },
        limits: Limits { block_txs: 256, block_ms: 10, ..Limits::default() },
        threads: 1,
    };
    let cluster = ClusterConfig::load(&init_cluster(&dir, &spec).unwrap()).unwrap();
    let mut procs = Procs { dir: dir.clone(), children: (0..4).map(|_| None).collect() };
    for i in 0..4 {
        procs.spawn(i);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let first = leaders(&rt, &cluster, Duration::from_secs(20));

    // An open-loop load in the background while nodes die and come back.
    let load_cluster = cluster.clone();
    let load = std::thread::spawn(move || {
        let cfg = LoadConfig {
            rate: Some(200.0),
            concurrency: None,
            duration_s: 14.0,
            // Cross-shard rounds too: the first node killed leads shard 0, so it is their
            // coordinator.
            cross_shard: 0.2,
            batch: 25,
            workload: "transfer".into(),
            distribution: "uniform".into(),
            max_txs: 0,
            seed: 21,
            drain_s: 30.0,
        };
        run_load(&load_cluster, &cfg, true).unwrap()
    });
    // Kill only once the load is committing (it first reads the signers' nonces and signs its
    // transactions, which takes seconds on a busy machine): a failover is measured as the time
    // to shard 0's next certified block, and that needs traffic.
    let started = Instant::now();
    while statuses(&rt, &cluster).iter().filter(|(_, r)| r.shard == 0).map(|(_, r)| r.certified).max().unwrap_or(0) < 5 {
        assert!(started.elapsed() < Duration::from_secs(60), "the load did not commit in shard 0 within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    // SIGKILL shard 0's leader; measure until the shard has a new leader that certifies.
    let victim = first[0] as usize;
    let before = statuses(&rt, &cluster).iter().filter(|(_, r)| r.shard == 0).map(|(_, r)| r.certified).max().unwrap();
    let killed_at = Instant::now();
    procs.kill(victim);
    let failover = loop {
        let st = statuses(&rt, &cluster);
        let resumed = st.iter().any(|(n, r)| r.shard == 0 && r.role == RaftRole::Leader && *n as usize != victim && r.certified > before);
        if resumed {
            break killed_at.elapsed();
        }
        assert!(killed_at.elapsed() < Duration::from_secs(20), "shard 0 did not commit again within 20 s of its leader's SIGKILL: {st:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("failover: shard 0 certified a new block {failover:?} after its leader's SIGKILL");
    // Measured here at about 1.6 s (the poll waits up to 500 ms on the dead node each round).
    // The bound leaves room for a busy CI machine; BENCHMARKS.md has p50 and max over 10 kills
    // (`scripts/failover.sh`, which reads the nodes' metrics every 50 ms).
    assert!(failover < Duration::from_secs(4), "failover took {failover:?}");
    std::thread::sleep(Duration::from_secs(2));
    procs.spawn(victim);
    std::thread::sleep(Duration::from_secs(2));
    // Now a node that leads no shard.
    let now_leading = leaders(&rt, &cluster, Duration::from_secs(20));
    let follower = (0..4).find(|n| !now_leading.contains(&(*n as u32))).expect("4 nodes, 2 shards");
    procs.kill(follower);
    std::thread::sleep(Duration::from_secs(2));
    procs.spawn(follower);

    let report = load.join().unwrap();
    eprintln!("{}", occam_bench::load::render(&report));
    assert_eq!((report.bad_nonce, report.bad_certificates, report.unsent), (0, 0, 0), "{report:?}");
    assert!(report.committed > 1000, "{report:?}");
    let heights = settled(&rt, &cluster, 4);
    let leaders_now = leaders(&rt, &cluster, Duration::from_secs(20));
    let (total, balances) = totals(&rt, &cluster, &leaders_now);
    // Transfers move money and make none: a cross-shard round applied on some of its shards
    // and not on others would show here.
    let genesis_total: u64 = {
        let g = genesis(&cluster.genesis).unwrap();
        (0..cluster.genesis.accounts).map(|a| g.get(&account(a)).and_then(|v| v.as_u64()).unwrap_or(0)).sum()
    };
    assert_eq!(balances, genesis_total, "the balances add up to the genesis total");
    // Every transaction the load counts as committed (receipted, or found committed by a
    // status read, certificate verified) is in the state, once; those no leader knew at the end
    // (`lost`) or still held (`pending_at_end`) may or may not be. (A cross-shard transaction
    // still held by the coordinator is not known to its signer's shard leader, which the final
    // read asks; the 10-kill runs of BENCHMARKS.md end with 0 lost.)
    let (c, open) = (report.committed, report.lost + report.pending_at_end);
    assert!((c..=c + open).contains(&total), "nonces spent {total}, committed {c}, lost or pending {open}: {report:?}");

    // Every node SIGKILLed at once, every node started again.
    for i in 0..4 {
        procs.kill(i);
    }
    for i in 0..4 {
        procs.spawn(i);
    }
    let leaders_after = leaders(&rt, &cluster, Duration::from_secs(30));
    assert_eq!(settled(&rt, &cluster, 4), heights, "every shard restarts at its last certified height and root");
    assert_eq!(totals(&rt, &cluster, &leaders_after), (total, balances));
    drop(procs);
}
