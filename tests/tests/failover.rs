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

use occam_bench::cluster::{fetch_fates, fetch_nonces, fetch_values, genesis, node_setup, node_statuses, signer_registry, Fate};
use occam_bench::load::{run_load, LoadConfig, LoadReport};
use occam_engine::native::keys::account;
use occam_net::config::{add_node, init_cluster, ClusterConfig, GenesisSpec, InitSpec, Limits};
use occam_net::node::Node;
use occam_net::wire::{RaftRole, ReplicaStatus};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
    // As `occam node` runs it: the cluster file is watched for replacements.
    let setup = node_setup(Path::new(&path)).unwrap();
    let node = match Node::start(setup) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("refused: {e}");
            std::process::exit(3);
        }
    };
    println!("ready");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(CHILD_LIFETIME);
    node.shutdown();
}

/// Held by each cluster test while it runs: their clusters would share two cores, and the
/// failover bound is measured against one cluster's load.
static ONE_CLUSTER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

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

/// Five UDP ports and five TCP ports 1,000 above them, free now (four nodes and a
/// replacement).
fn free_base_port() -> u16 {
    // The tests of this binary run at once: each call starts elsewhere.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    for attempt in 0..200u32 {
        let base = 20_000 + ((std::process::id() * 7919 + (call * 200 + attempt) * 104_729) % 30_000) as u16;
        let free = (0..5).all(|i| {
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

/// A client that sends each shard's requests to `leaders`.
async fn client_of(cluster: &ClusterConfig, leaders: &[u32]) -> occam_net::client::Client {
    let c = occam_bench::cluster::connect(cluster).await.unwrap();
    for (s, &l) in leaders.iter().enumerate() {
        c.set_leader(s as u32, l);
    }
    c
}

/// Waits (at most 60 s) until `shard` has certified 5 blocks: the load is committing.
fn wait_committing(rt: &tokio::runtime::Runtime, cluster: &ClusterConfig, shard: u32) {
    let started = Instant::now();
    while statuses(rt, cluster).iter().filter(|(_, r)| r.shard == shard).map(|(_, r)| r.certified).max().unwrap_or(0) < 5 {
        assert!(started.elapsed() < Duration::from_secs(60), "the load did not commit in shard {shard} within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Four nodes, two shards of four replicas, 10,000 accounts, written into `dir`: the cluster
/// file's path.
fn four_nodes(dir: &Path) -> PathBuf {
    let spec = InitSpec {
        nodes: 4,
        shards: 2,
        replicas: 4,
        base_port: free_base_port(),
        host: "127.0.0.1".parse().unwrap(),
        genesis: GenesisSpec { workload: "transfer".into(), accounts: 10_000 },
        limits: Limits { block_txs: 256, block_ms: 10, ..Limits::default() },
        threads: 1,
        // Real signer keys: `signers.pub` for the nodes, `signers.key` for the load.
        bench_signers: false,
    };
    init_cluster(dir, &spec).unwrap()
}

/// The sum of every signer's nonce, and the sum of every account's balance, read from the
/// shards' leaders.
fn totals(rt: &tokio::runtime::Runtime, cluster: &ClusterConfig, leaders: &[u32]) -> (u64, u64) {
    rt.block_on(async {
        let mut c = client_of(cluster, leaders).await;
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
    let _one = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let cluster = ClusterConfig::load(&four_nodes(&dir)).unwrap();
    let mut procs = Procs { dir: dir.clone(), children: (0..4).map(|_| None).collect() };
    for i in 0..4 {
        procs.spawn(i);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let first = leaders(&rt, &cluster, Duration::from_secs(20));

    // An open-loop load in the background while nodes die and come back, with cross-shard
    // rounds: the first node killed leads shard 0, so it is their coordinator.
    let load = load_for(&cluster, &dir, 200.0, 14.0, 0.2, 21);
    // Kill only once the load is committing (it first reads the signers' nonces and signs its
    // transactions, which takes seconds on a busy machine): a failover is measured as the time
    // to shard 0's next certified block, and that needs traffic.
    wait_committing(&rt, &cluster, 0);
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
        let g = genesis(&cluster, &signer_registry(&cluster, Some(&dir.join("cluster.toml"))).unwrap()).unwrap();
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

/// An open-loop `transfer` load of `seconds` at `rate` on the cluster whose files are in
/// `dir`, `cross_shard` of it cross-shard, in a thread, signed with the keys of
/// `dir/signers.key`; re-reads the cluster file when it meets a node it does not know (as
/// `occam load` does).
fn load_for(
    cluster: &ClusterConfig,
    dir: &Path,
    rate: f64,
    seconds: f64,
    cross_shard: f64,
    seed: u64,
) -> std::thread::JoinHandle<LoadReport> {
    let cluster = cluster.clone();
    let cluster_file = Some(dir.join("cluster.toml"));
    let signer_keys = Some(dir.join(occam_net::config::signers::SECRET_FILE));
    std::thread::spawn(move || {
        let cfg = LoadConfig {
            rate: Some(rate),
            concurrency: None,
            duration_s: seconds,
            cross_shard,
            batch: 25,
            workload: "transfer".into(),
            distribution: "uniform".into(),
            max_txs: 0,
            seed,
            drain_s: 30.0,
            cluster_file,
            signer_keys,
        };
        run_load(&cluster, &cfg, true).unwrap()
    })
}

/// A node gone for good is replaced: node 3 is SIGKILLed under load and never comes back; node
/// 4 is added with `replaces = 3` (as `occam cluster add-node` does) and started, while the
/// load goes on. The running nodes take in the grown cluster file, each shard's leader adds
/// node 4 as a learner, which catches up from a snapshot (the groups snapshot every 50 entries
/// and keep 10), and swaps node 3's vote for node 4's. The load, re-reading the cluster file as
/// `occam load` does, verifies the new epoch's certificates.
///
/// Checked: the load across the replacement loses nothing and verifies every certificate;
/// both shards end with node 4 voting and equal roots on nodes 0, 1, 2 and 4; a load after
/// the change commits, every one of its certificates names a later validator-set epoch
/// whose members are 0, 1, 2 and 4 and verifies against their keys; nothing receipted is lost
/// and no money is made (nonces and balances add up); node 3 started again is refused; node
/// 4's store holds no early block (its state came from a snapshot, not from replaying the log).
#[test]
fn a_node_replaced_for_good_hands_its_replicas_and_votes_to_its_successor() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let _one = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let path = four_nodes(&dir);
    // Snapshots every 50 entries, 10 kept: the new node cannot catch up from the log.
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace("snapshot_every = 2000", "snapshot_every = 50").replace("keep_logs = 1000", "keep_logs = 10");
    std::fs::write(&path, text).unwrap();
    let cluster = ClusterConfig::load(&path).unwrap();
    assert_eq!((cluster.raft.snapshot_every, cluster.raft.keep_logs), (50, 10));
    let mut procs = Procs { dir: dir.clone(), children: (0..5).map(|_| None).collect() };
    for i in 0..4 {
        procs.spawn(i);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    leaders(&rt, &cluster, Duration::from_secs(20));

    // Node 3 dies for good under load.
    let first = load_for(&cluster, &dir, 150.0, 20.0, 0.1, 31);
    wait_committing(&rt, &cluster, 1);
    procs.kill(3);
    std::thread::sleep(Duration::from_secs(1));

    // Node 4 replaces it, under the same load.
    let (id, _) = add_node(&dir, 3, None).unwrap();
    assert_eq!(id, 4);
    let grown = ClusterConfig::load(&path).unwrap();
    procs.spawn(4);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let st = statuses(&rt, &grown);
        // A voter; it certifies blocks applied from now on (those it caught up on by snapshot
        // were certified without it).
        let voting = |s: u32| st.iter().any(|(n, r)| *n == 4 && r.shard == s && matches!(r.role, RaftRole::Follower | RaftRole::Leader));
        if voting(0) && voting(1) {
            break;
        }
        assert!(Instant::now() < deadline, "node 4 did not become a voter of both shards within 90 s: {st:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let first = first.join().unwrap();
    eprintln!("{}", occam_bench::load::render(&first));
    assert_eq!((first.bad_nonce, first.bad_certificates, first.unsent), (0, 0, 0), "{first:?}");

    // A load on the new membership: its certificates name the new epoch and node 4.
    let now = leaders(&rt, &grown, Duration::from_secs(20));
    let nonces_before = nonces(&rt, &grown, &now);
    let second = load_for(&grown, &dir, 150.0, 6.0, 0.1, 32).join().unwrap();
    eprintln!("{}", occam_bench::load::render(&second));
    assert_eq!((second.bad_nonce, second.bad_certificates, second.unsent), (0, 0, 0), "{second:?}");
    assert!(second.committed > 300, "{second:?}");
    let now = leaders(&rt, &grown, Duration::from_secs(20));
    let nonces_after = nonces(&rt, &grown, &now);
    let last: Vec<(u32, u64)> = (0..grown.signers)
        .filter(|&s| nonces_after[s as usize] > nonces_before[s as usize])
        .map(|s| (s, nonces_after[s as usize] - 1))
        .collect();
    assert!(!last.is_empty());
    let fates = rt.block_on(async {
        let mut c = client_of(&grown, &now).await;
        let f = fetch_fates(&mut c, &last).await.unwrap();
        c.close().await;
        f
    });
    // Each shard's latest certificate: the set after the change (the joint set {0, 1, 2, 3, 4}
    // may have certified a few blocks between the two membership entries).
    let mut latest: BTreeMap<u32, occam_shard::Certificate> = BTreeMap::new();
    for (tx, fate) in last.iter().zip(&fates) {
        match fate {
            Fate::Committed(c) => {
                assert!(c.members.contains(&4) && c.vote.epoch > 0, "{tx:?}: {:?} in epoch {}", c.members, c.vote.epoch);
                let l = latest.entry(c.vote.shard).or_insert_with(|| (**c).clone());
                if c.vote.height > l.vote.height {
                    *l = (**c).clone();
                }
            }
            // Certified by now unless its block is the last one, still collecting votes.
            Fate::Spent(_) => {}
            other => panic!("{tx:?}: {other:?}"),
        }
    }
    assert_eq!(latest.len(), 2, "a certificate of each shard");
    for c in latest.values() {
        assert_eq!(c.members, vec![0, 1, 2, 4], "shard {}'s latest certificate", c.vote.shard);
    }

    // Equal roots on the four voters; nothing lost, no money made.
    settled(&rt, &grown, 4);
    let now = leaders(&rt, &grown, Duration::from_secs(20));
    let (total, balances) = totals(&rt, &grown, &now);
    let genesis_total: u64 = {
        let g = genesis(&grown, &signer_registry(&grown, Some(&path)).unwrap()).unwrap();
        (0..grown.genesis.accounts).map(|a| g.get(&account(a)).and_then(|v| v.as_u64()).unwrap_or(0)).sum()
    };
    assert_eq!(balances, genesis_total, "the balances add up to the genesis total");
    let c = first.committed + second.committed;
    let open = first.lost + first.pending_at_end + second.lost + second.pending_at_end;
    assert!((c..=c + open).contains(&total), "nonces spent {total}, committed {c}, lost or pending {open}");

    // The replaced node is refused if started again.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["failover_node", "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(CHILD_ENV, dir.join("node-3.toml"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("was replaced for good by node 4"), "{said}");

    // Node 4 got its state from a snapshot: its store has no block 1 of either shard.
    drop(procs);
    let store = occam_store::Store::open(
        &dir.join("data/node-4"),
        occam_store::StoreIdentity::new(grown.chain_id, 4),
        &occam_store::StoreOptions::default(),
    )
    .unwrap();
    for s in 0..2 {
        let applied = store.applied(s).unwrap().unwrap();
        assert!(applied.height > 50, "shard {s}: {applied:?}");
        assert_eq!(store.block(s, 1).unwrap(), None, "shard {s}: node 4 replayed the log from genesis");
    }
}

/// Every signer's next nonce, read from the shards' leaders.
fn nonces(rt: &tokio::runtime::Runtime, cluster: &ClusterConfig, leaders: &[u32]) -> Vec<u64> {
    rt.block_on(async {
        let mut c = client_of(cluster, leaders).await;
        let n = fetch_nonces(&mut c).await.unwrap();
        c.close().await;
        n
    })
}
