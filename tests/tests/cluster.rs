//! Node clusters on loopback, in this process, over real QUIC sockets with mutual TLS: blocks
//! certified by BLS quorums, replicas agreeing on state roots, a replica killed mid-run,
//! refused peers, malformed frames and a flooding client.

use occam_bench::cluster::{fetch_fates, genesis, signers, start_node, Fate, LoadTxs};
use occam_bench::distribution::Distribution;
use occam_engine::crypto::{KeyRegistry, SecretKey};
use occam_engine::native::signed::{RawSignedBlock, RawSignedTx};
use occam_engine::state::CommittedState;
use occam_net::client::{Client, ClientEvent};
use occam_net::config::{local_cluster, ClusterConfig, GenesisSpec, Limits, NodeKeys, RaftSettings};
use occam_net::node::Node;
use occam_net::tls::{client_config, node_name, Identity};
use occam_net::wire::{Message, Refusal, TxFate, TxStatus, MAX_FRAME_LEN, WIRE_VERSION};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Cluster {
    config: ClusterConfig,
    nodes: Vec<Option<Node>>,
    keys: Vec<SecretKey>,
    node_keys: Vec<NodeKeys>,
    genesis: Arc<CommittedState>,
    registry: Arc<KeyRegistry>,
    /// The nodes' data directories (`node-<i>` inside), removed with the cluster.
    dir: tempfile::TempDir,
}

fn limits() -> Limits {
    Limits { block_txs: 64, block_ms: 5, pipeline: 4, mempool: 100_000, per_client: 50_000, ..Limits::default() }
}

fn start(nodes: usize, shards: usize, replicas: usize, limits: Limits) -> Cluster {
    start_with("transfer", nodes, shards, replicas, limits)
}

fn start_with(workload: &str, nodes: usize, shards: usize, replicas: usize, limits: Limits) -> Cluster {
    start_raft(workload, nodes, shards, replicas, limits, RaftSettings::default())
}

fn start_raft(workload: &str, nodes: usize, shards: usize, replicas: usize, limits: Limits, raft: RaftSettings) -> Cluster {
    if std::env::var_os("OCCAM_LOG").is_some() {
        occam_bench::cluster::init_logging();
    }
    let spec = GenesisSpec { workload: workload.into(), accounts: 1000 };
    let (mut config, node_keys, sockets) = local_cluster(nodes, shards, replicas, spec.clone(), limits).unwrap();
    config.raft = raft;
    // Metrics endpoints on ports the system picks.
    for n in &mut config.nodes {
        n.metrics = Some("127.0.0.1:0".parse().unwrap());
    }
    let (keys, registry) = signers(&config, None, None).unwrap();
    let genesis: Arc<CommittedState> = Arc::new(genesis(&config, &registry).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let nodes = node_keys
        .iter()
        .zip(sockets)
        .enumerate()
        .map(|(i, (k, socket)): (usize, (&NodeKeys, _))| {
            let data = dir.path().join(format!("node-{i}"));
            Some(start_node(&config, i as u32, k.clone(), 1, genesis.clone(), registry.clone(), Some(socket), &data).unwrap())
        })
        .collect();
    let cluster = Cluster { config, nodes, keys, node_keys, genesis, registry, dir };
    cluster.await_leaders();
    cluster
}

impl Cluster {
    /// Starts node `i` again (after a shutdown) on its address, from its data directory.
    fn restart(&mut self, i: usize) {
        let addr = self.config.nodes[i].addr;
        let deadline = Instant::now() + Duration::from_secs(10);
        let socket = loop {
            match std::net::UdpSocket::bind(addr) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("rebinding {addr}: {e}"),
            }
        };
        let data = self.dir.path().join(format!("node-{i}"));
        let node = start_node(
            &self.config,
            i as u32,
            self.node_keys[i].clone(),
            1,
            self.genesis.clone(),
            self.registry.clone(),
            Some(socket),
            &data,
        );
        self.nodes[i] = Some(node.unwrap());
    }

    /// Waits until every shard has a leader that its live replicas agree on (at bootstrap, the
    /// node hosting replica 0 stands first); returns the leaders by shard.
    fn await_leaders(&self) -> Vec<u32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let leaders: Vec<Option<u32>> = (0..self.config.shards as u32)
                .map(|s| {
                    let seen: Vec<Option<u32>> =
                        self.nodes.iter().flatten().filter(|n| n.status().iter().any(|r| r.shard == s)).map(|n| n.leader(s)).collect();
                    let first = seen.first().copied().flatten()?;
                    let live = self.nodes.get(first as usize).is_some_and(Option::is_some);
                    (live && seen.iter().all(|l| *l == Some(first))).then_some(first)
                })
                .collect();
            if leaders.iter().all(Option::is_some) {
                return leaders.into_iter().flatten().collect();
            }
            if Instant::now() >= deadline {
                let raft: Vec<_> = self
                    .nodes
                    .iter()
                    .flatten()
                    .flat_map(|n| (0..self.config.shards as u32).filter_map(|s| n.raft_metrics(s)))
                    .map(|m| format!("{m:?}"))
                    .collect();
                panic!("no agreed leader for every shard within 20 s: {leaders:?}\n{}", raft.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(self) {
        for n in self.nodes.into_iter().flatten() {
            n.shutdown();
        }
    }

    /// Waits until every live replica of every shard has executed `heights[shard]` blocks,
    /// then returns each shard's roots by node.
    fn settled_roots(&self, heights: &BTreeMap<u32, u64>) -> BTreeMap<u32, Vec<(usize, [u8; 32])>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut roots: BTreeMap<u32, Vec<(usize, [u8; 32])>> = BTreeMap::new();
            let mut behind = false;
            for (i, n) in self.nodes.iter().enumerate() {
                let Some(n) = n else { continue };
                for r in n.status() {
                    behind |= r.height < heights.get(&r.shard).copied().unwrap_or(0);
                    roots.entry(r.shard).or_default().push((i, r.root));
                }
            }
            if !behind {
                return roots;
            }
            if Instant::now() >= deadline {
                let status: Vec<_> = self.nodes.iter().flatten().map(|n| n.status()).collect();
                panic!("replicas did not catch up with the certified heights {heights:?}: {status:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn transfers(cluster: &Cluster, cross_shard: f64, seed: u64) -> LoadTxs {
    LoadTxs::new(&cluster.config, "transfer", Distribution::Uniform, cross_shard, seed, None).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Submits `txs` (in order, per shard), one batch of `batch` per send; returns every
/// receipt's status by (batch, index), and the highest certified height per shard.
async fn submit_all(
    client: &mut Client,
    txs: &[(RawSignedTx, Option<u32>)],
    batch: usize,
    first_batch: u64,
) -> (HashMap<(u64, u32), TxStatus>, BTreeMap<u32, u64>) {
    let chain_id = client.cluster().chain_id;
    let mut by_route: BTreeMap<Option<u32>, Vec<RawSignedTx>> = BTreeMap::new();
    for (tx, route) in txs {
        by_route.entry(*route).or_default().push(tx.clone());
    }
    let mut expected = 0usize;
    let mut next = first_batch;
    for (route, list) in by_route {
        for chunk in list.chunks(batch) {
            client.submit_routed(route, next, RawSignedBlock { chain_id, txs: chunk.to_vec() }).await.unwrap();
            next += 1;
            expected += chunk.len();
        }
    }
    let mut statuses = HashMap::new();
    let mut heights = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while statuses.len() < expected {
        let event = tokio::time::timeout_at(deadline, client.next_event()).await.expect("receipts within 60 s").expect("connected");
        match event {
            ClientEvent::Receipts { certificate, entries } => {
                let c = certificate.expect("valid transactions are committed with a certificate");
                client.verify_certificate(&c).expect("the certificate verifies against the cluster's validator set");
                let h = heights.entry(c.vote.shard).or_insert(0);
                *h = (*h).max(c.vote.height);
                for e in entries {
                    assert!(statuses.insert((e.batch, e.index), e.status).is_none(), "one receipt per transaction");
                }
            }
            ClientEvent::Accepted { .. } => {}
            // A node announcing that one of its replicas became leader.
            ClientEvent::Status { node, replicas } => client.learn_leaders(node, &replicas),
            // A node a test stopped (the client is connected to every node); a leader that
            // closes shows as receipts that never come.
            ClientEvent::Closed { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    (statuses, heights)
}

fn scrape(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    let (_, body) = out.split_once("\r\n\r\n").expect("a head and a body");
    body.to_string()
}

fn assert_agree(roots: &BTreeMap<u32, Vec<(usize, [u8; 32])>>, replicas: usize) {
    for (shard, rs) in roots {
        assert_eq!(rs.len(), replicas, "shard {shard}: every live replica reports");
        assert!(rs.iter().all(|(_, r)| *r == rs[0].1), "shard {shard}: replicas disagree: {rs:?}");
    }
}

#[test]
fn four_nodes_certify_blocks_and_replicas_agree() {
    let cluster = start(4, 2, 4, limits());
    let rt = runtime();
    let txs = transfers(&cluster, 0.0, 1).signed(600, &cluster.keys);
    let (statuses, heights) = rt.block_on(async {
        let mut client = Client::connect(&cluster.config).await.unwrap();
        submit_all(&mut client, &txs, 50, 0).await
    });
    assert_eq!(statuses.len(), 600);
    assert!(statuses.values().all(|s| *s == TxStatus::Succeeded), "every transfer succeeds: {statuses:?}");
    assert_eq!(heights.len(), 2, "both shards committed blocks");
    let roots = cluster.settled_roots(&heights);
    assert_agree(&roots, 4);
    // The Prometheus endpoints count every committed transaction once, at its leader.
    let mut committed = 0;
    for n in cluster.nodes.iter().flatten() {
        let text = scrape(n.metrics_addr().unwrap());
        check_exposition(&text);
        committed += text
            .lines()
            .filter(|l| l.starts_with("occam_committed_txs_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum::<u64>();
    }
    assert_eq!(committed, 600);
    cluster.stop();
}

/// A node's `/metrics` has the right types, and Prometheus's own checker accepts it: `promtool
/// check metrics` runs if it is on the PATH, and must be where `OCCAM_REQUIRE_PROMTOOL` is set
/// (`.ci/run` installs Debian's `prometheus` package and sets it).
fn check_exposition(text: &str) {
    for (family, kind) in [
        ("occam_certificate_latency_seconds", "histogram"),
        ("occam_block_apply_seconds", "histogram"),
        ("occam_raft_append_seconds", "histogram"),
        ("occam_store_write_seconds", "histogram"),
        ("occam_committed_txs_total", "counter"),
        ("occam_refused_batches_total", "counter"),
        ("occam_mempool_txs", "gauge"),
        ("occam_replica_role", "gauge"),
    ] {
        assert!(text.contains(&format!("# TYPE {family} {kind}\n")), "{family} is not a {kind}:\n{text}");
    }
    let applied: f64 = text
        .lines()
        .filter(|l| l.starts_with("occam_block_apply_seconds_count{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(applied > 0.0, "every node applied blocks:\n{text}");
    let required = std::env::var_os("OCCAM_REQUIRE_PROMTOOL").is_some();
    let run = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match run {
        Ok(c) => c,
        Err(e) if !required => return eprintln!("promtool not run ({e}); set OCCAM_REQUIRE_PROMTOOL to require it"),
        Err(e) => panic!("promtool: {e}"),
    };
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn balance_total(entries: &[(occam_engine::key::Key, occam_engine::value::Value)]) -> u64 {
    let accounts = occam_engine::native::keys::account(0).tag();
    entries.iter().filter(|(k, _)| k.tag() == accounts).map(|(_, v)| v.as_u64().unwrap()).sum()
}

#[test]
fn cross_shard_transfers_commit_atomically_across_nodes() {
    let cluster = start(4, 3, 3, limits());
    let rt = runtime();
    let genesis_total = balance_total(&genesis(&cluster.config, &cluster.registry).unwrap().sorted_entries());
    let txs = transfers(&cluster, 0.3, 5).signed(600, &cluster.keys);
    let crossing = txs.iter().filter(|(_, r)| r.is_none()).count();
    assert!(crossing > 100, "{crossing} cross-shard transfers");
    let (statuses, heights) = rt.block_on(async {
        let mut client = Client::connect(&cluster.config).await.unwrap();
        submit_all(&mut client, &txs, 50, 0).await
    });
    assert_eq!(statuses.len(), 600);
    assert!(statuses.values().all(|s| *s == TxStatus::Succeeded), "{statuses:?}");
    let roots = cluster.settled_roots(&heights);
    assert_agree(&roots, 3);
    // Every replica holds the same entries as its leader, and no money was made or lost.
    let mut total = 0;
    for shard in 0..3u32 {
        let leader = cluster.nodes[cluster.config.leader_of(shard) as usize].as_ref().unwrap().snapshot(shard).unwrap();
        for r in 1..3 {
            let node = cluster.config.node_of(shard, r) as usize;
            assert_eq!(cluster.nodes[node].as_ref().unwrap().snapshot(shard).unwrap(), leader, "shard {shard} replica {r}");
        }
        total += balance_total(&leader);
    }
    assert_eq!(total, genesis_total, "transfers conserve the total balance across shards");
    // Cross-shard transactions are found on their signer's shard too: the block that applied
    // their round there spent their nonces.
    rt.block_on(async {
        let mut client = Client::connect(&cluster.config).await.unwrap();
        assert_committed(&mut client, &txs, &heights).await;
        client.close().await;
    });
    cluster.stop();
}

#[test]
fn a_shard_keeps_committing_with_one_replica_down() {
    let mut cluster = start(4, 1, 4, limits());
    let rt = runtime();
    let mut gen = transfers(&cluster, 0.0, 2);
    let first = gen.signed(200, &cluster.keys);
    let second = gen.signed(200, &cluster.keys);
    let config = cluster.config.clone();
    let mut client = rt.block_on(Client::connect(&config)).unwrap();
    let (before, _) = rt.block_on(submit_all(&mut client, &first, 40, 0));
    assert_eq!(before.len(), 200);
    // Replica 3 of shard 0 lives on node 3: kill it mid-run.
    cluster.nodes[3].take().unwrap().shutdown();
    let (after, heights) = rt.block_on(submit_all(&mut client, &second, 40, 1000));
    assert_eq!(after.len(), 200, "3 of 4 replicas are a quorum: the shard keeps committing");
    assert!(before.values().chain(after.values()).all(|s| *s == TxStatus::Succeeded));
    let roots = cluster.settled_roots(&heights);
    assert_agree(&roots, 3);
    rt.block_on(client.close());
    cluster.stop();
}

#[test]
fn a_restarted_replica_catches_up_from_its_leader() {
    let mut cluster = start(4, 1, 4, limits());
    let rt = runtime();
    let mut gen = transfers(&cluster, 0.0, 6);
    let batches: Vec<_> = (0..3).map(|_| gen.signed(150, &cluster.keys)).collect();
    let config = cluster.config.clone();
    let mut client = rt.block_on(Client::connect(&config)).unwrap();
    rt.block_on(submit_all(&mut client, &batches[0], 30, 0));
    // Node 3 (replica 3) goes down and misses blocks, then comes back with its store.
    cluster.nodes[3].take().unwrap().shutdown();
    rt.block_on(submit_all(&mut client, &batches[1], 30, 1000));
    cluster.restart(3);
    // Raft's leader sends it the entries it lacks; it applies them in order.
    let (_, heights) = rt.block_on(submit_all(&mut client, &batches[2], 30, 2000));
    let roots = cluster.settled_roots(&heights);
    assert_agree(&roots, 4);
    rt.block_on(client.close());
    cluster.stop();
}

/// The sum of every signer's nonce in `entries`: each committed transaction spends exactly
/// one, so this counts the transactions a shard's state holds.
fn nonce_total(config: &ClusterConfig, entries: &[(occam_engine::key::Key, occam_engine::value::Value)]) -> u64 {
    let nonces: std::collections::HashSet<_> = (0..config.signer_numbers()).map(occam_engine::native::signed::nonce_key).collect();
    entries.iter().filter(|(k, _)| nonces.contains(k)).map(|(_, v)| v.as_u64().unwrap()).sum()
}

/// A client connected to the live nodes, sending each shard's batches to its current leader.
async fn client_for(cluster: &Cluster, leaders: &[u32]) -> Client {
    let live: Vec<u32> = (0..cluster.nodes.len() as u32).filter(|&i| cluster.nodes[i as usize].is_some()).collect();
    let client = Client::connect_to(&cluster.config, &live).await.unwrap();
    for (shard, &l) in leaders.iter().enumerate() {
        client.set_leader(shard as u32, l);
    }
    client
}

/// `(signer, nonce)` of each transaction.
fn ids(txs: &[(RawSignedTx, Option<u32>)]) -> Vec<(u32, u64)> {
    txs.iter().map(|(t, _)| (t.header.signer, t.header.nonce)).collect()
}

/// Asserts that a status read finds every transaction of `txs` committed, each with a verified
/// certificate of its signer's shard at a height no higher than that shard's in `heights`.
async fn assert_committed(client: &mut Client, txs: &[(RawSignedTx, Option<u32>)], heights: &BTreeMap<u32, u64>) {
    let ids = ids(txs);
    let fates = fetch_fates(client, &ids).await.unwrap();
    for ((signer, nonce), fate) in ids.iter().zip(fates) {
        let Fate::Committed(c) = fate else { panic!("signer {signer} nonce {nonce}: {fate:?}") };
        assert_eq!(c.vote.shard, client.nonce_shard(*signer), "the certificate is of the signer's shard");
        assert!(c.vote.height <= heights[&c.vote.shard], "signer {signer} nonce {nonce} in block {}", c.vote.height);
    }
}

/// [`submit_all`] through a fresh client of the live nodes that sends to `leaders`.
fn submit_to_leaders(
    rt: &tokio::runtime::Runtime,
    cluster: &Cluster,
    leaders: &[u32],
    txs: &[(RawSignedTx, Option<u32>)],
    batch: usize,
    first_batch: u64,
) -> (HashMap<(u64, u32), TxStatus>, BTreeMap<u32, u64>) {
    rt.block_on(async {
        let mut c = client_for(cluster, leaders).await;
        let r = submit_all(&mut c, txs, batch, first_batch).await;
        c.close().await;
        r
    })
}

#[test]
fn a_killed_leader_is_replaced_and_nothing_receipted_is_lost() {
    let mut cluster = start(4, 1, 4, limits());
    let rt = runtime();
    let mut gen = transfers(&cluster, 0.0, 11);
    let first = gen.signed(200, &cluster.keys);
    let second = gen.signed(200, &cluster.keys);
    let leader = cluster.await_leaders()[0];
    let (before, _) = submit_to_leaders(&rt, &cluster, &[leader], &first, 40, 0);
    assert!(before.len() == 200 && before.values().all(|s| *s == TxStatus::Succeeded), "{before:?}");
    // The leader's node goes down; the other three elect a new leader among themselves.
    let killed_at = Instant::now();
    cluster.nodes[leader as usize].take().unwrap().shutdown();
    let next = cluster.await_leaders()[0];
    assert_ne!(next, leader);
    eprintln!("failover: a new leader {:?} after the old one stopped", killed_at.elapsed());
    let (after, heights) = submit_to_leaders(&rt, &cluster, &[next], &second, 40, 1000);
    assert!(after.len() == 200 && after.values().all(|s| *s == TxStatus::Succeeded), "{after:?}");
    assert_agree(&cluster.settled_roots(&heights), 3);
    // The old leader comes back as a follower and catches up from its own store and the log.
    cluster.restart(leader as usize);
    let roots = cluster.settled_roots(&heights);
    assert_agree(&roots, 4);
    // Every receipted transaction is in the state, once: 400 nonces spent, on every replica.
    for n in cluster.nodes.iter().flatten() {
        assert_eq!(nonce_total(&cluster.config, &n.snapshot(0).unwrap()), 400);
    }
    // A status read finds all 400, with the certificates of their blocks, also those committed
    // under the old leader (the new one indexed them when it applied their blocks); a nonce no
    // transaction used is unknown at the leader, and a follower names the leader.
    rt.block_on(async {
        let mut c = client_for(&cluster, &[next]).await;
        let all: Vec<_> = first.iter().chain(&second).cloned().collect();
        assert_committed(&mut c, &all, &heights).await;
        let (signer, nonce) = ids(&second).into_iter().max_by_key(|(_, n)| *n).unwrap();
        assert_eq!(fetch_fates(&mut c, &[(signer, nonce + 1)]).await.unwrap(), vec![Fate::Unknown]);
        let follower = (0..4).find(|&n| n != next).unwrap();
        c.query_fates(follower, 77, vec![(signer, nonce + 1)]).await.unwrap();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), c.next_event()).await.unwrap().unwrap() {
                ClientEvent::Fates { id: 77, fates, .. } => {
                    assert_eq!(fates, vec![TxFate::NotLeader { leader: Some(next) }]);
                    break;
                }
                ClientEvent::Status { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        c.close().await;
    });
    cluster.stop();
}

#[test]
fn every_node_restarts_with_what_it_certified_and_the_cluster_goes_on() {
    let mut cluster = start(4, 2, 4, limits());
    let rt = runtime();
    let mut gen = transfers(&cluster, 0.0, 12);
    let first = gen.signed(300, &cluster.keys);
    let second = gen.signed(200, &cluster.keys);
    let leaders = cluster.await_leaders();
    let (before, heights) = submit_to_leaders(&rt, &cluster, &leaders, &first, 50, 0);
    assert!(before.len() == 300 && before.values().all(|s| *s == TxStatus::Succeeded));
    cluster.settled_roots(&heights);
    let states: Vec<_> = (0..2).map(|s| cluster.nodes[0].as_ref().unwrap().snapshot(s).unwrap()).collect();
    // Every node stops, then every node starts again from its data directory.
    for i in 0..4 {
        cluster.nodes[i].take().unwrap().shutdown();
    }
    for i in 0..4 {
        cluster.restart(i);
    }
    let leaders = cluster.await_leaders();
    for n in cluster.nodes.iter().flatten() {
        for (s, state) in states.iter().enumerate() {
            assert_eq!(&n.snapshot(s as u32).unwrap(), state, "shard {s}: the state before the restart");
        }
    }
    // Blocks applied but not certified before the stop get their certificates now, and each
    // replica's root is its last certified block's root.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut done = true;
        for n in cluster.nodes.iter().flatten() {
            for r in n.status() {
                match n.store().last_certified(r.shard).unwrap() {
                    Some(h) if h == r.height => {
                        let c = occam_shard::Certificate::decode(&n.store().certificate(r.shard, h).unwrap().unwrap()).unwrap();
                        assert_eq!(c.vote.state_root, r.root, "shard {}: the root of the last certified block", r.shard);
                    }
                    _ => done = false,
                }
            }
        }
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "certificates of every applied block within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    // And the cluster keeps committing, the nonces going on from the restored state.
    let (after, heights) = submit_to_leaders(&rt, &cluster, &leaders, &second, 50, 1000);
    assert!(after.len() == 200 && after.values().all(|s| *s == TxStatus::Succeeded), "{after:?}");
    assert_agree(&cluster.settled_roots(&heights), 4);
    let total: u64 = (0..2).map(|s| nonce_total(&cluster.config, &cluster.nodes[1].as_ref().unwrap().snapshot(s).unwrap())).sum();
    assert_eq!(total, 500);
    cluster.stop();
}

#[test]
fn a_replica_down_past_the_log_retention_catches_up_by_snapshot() {
    // Snapshots every 16 entries, 4 kept behind: a replica that misses more cannot get them
    // from the log.
    let raft = RaftSettings { snapshot_every: 16, keep_logs: 4, ..RaftSettings::default() };
    // Small blocks, so 600 transactions make many entries.
    let mut cluster = start_raft("transfer", 4, 1, 4, Limits { block_txs: 8, ..limits() }, raft);
    let rt = runtime();
    let leaders = cluster.await_leaders();
    let down = (0..4).find(|&n| n != leaders[0] as usize).unwrap();
    cluster.nodes[down].take().unwrap().shutdown();
    let txs = transfers(&cluster, 0.0, 31).signed(600, &cluster.keys);
    let (statuses, heights) = submit_to_leaders(&rt, &cluster, &leaders, &txs, 10, 0);
    assert!(statuses.len() == 600 && statuses.values().all(|s| *s == TxStatus::Succeeded));
    let held = cluster.nodes[leaders[0] as usize].as_ref().unwrap().raft_metrics(0).unwrap();
    assert!(held.purged.is_some_and(|p| p.index > 4), "the leader purged its log: {held:?}");
    cluster.restart(down);
    assert_agree(&cluster.settled_roots(&heights), 4);
    let back = cluster.nodes[down].as_ref().unwrap();
    let m = back.raft_metrics(0).unwrap();
    assert!(m.snapshot.is_some(), "the returning replica installed a snapshot: {m:?}");
    let leader_state = cluster.nodes[leaders[0] as usize].as_ref().unwrap().snapshot(0).unwrap();
    assert_eq!(back.snapshot(0).unwrap(), leader_state);
    cluster.stop();
}

/// Every file under `dir` with its contents, to show nothing was changed.
fn fingerprint(dir: &std::path::Path) -> BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.insert(p, bytes);
            }
        }
    }
    out
}

#[test]
fn a_node_refuses_data_that_is_not_its_own_and_changes_nothing_in_it() {
    let mut cluster = start(2, 1, 2, limits());
    let config = cluster.config.clone();
    for i in 0..2 {
        cluster.nodes[i].take().unwrap().shutdown();
    }
    let start0 = |config: &ClusterConfig, dir: &std::path::Path| {
        start_node(config, 0, cluster.node_keys[0].clone(), 1, cluster.genesis.clone(), cluster.registry.clone(), None, dir)
            .map(|n| n.shutdown())
            .unwrap_err()
    };
    // Another node's store.
    let other = cluster.dir.path().join("node-1");
    let before = fingerprint(&other);
    let e = format!("{:#}", start0(&config, &other));
    assert!(e.contains("belongs to") && e.contains("refusing to start"), "{e}");
    assert_eq!(fingerprint(&other), before, "nothing in the refused folder changed");
    // Another chain's store (its own folder, a cluster file of another chain).
    let own = cluster.dir.path().join("node-0");
    let before = fingerprint(&own);
    let another_chain = ClusterConfig { chain_id: config.chain_id + 1, ..config.clone() };
    let e = format!("{:#}", start0(&another_chain, &own));
    assert!(e.contains("belongs to"), "{e}");
    assert_eq!(fingerprint(&own), before);
    // A folder with files but no database, and a database whose identity record is gone.
    let junk = cluster.dir.path().join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("notes.txt"), b"not a store").unwrap();
    let e = format!("{:#}", start0(&config, &junk));
    assert!(e.contains("not an Occam store"), "{e}");
    assert_eq!(std::fs::read(junk.join("notes.txt")).unwrap(), b"not a store");
    let damaged = cluster.dir.path().join("damaged");
    std::fs::create_dir_all(&damaged).unwrap();
    std::fs::write(damaged.join("CURRENT"), b"MANIFEST-000099\n").unwrap();
    let e = format!("{:#}", start0(&config, &damaged));
    assert!(e.contains("data directory"), "{e}");
    // Its own folder still starts.
    cluster.restart(0);
    cluster.restart(1);
    cluster.await_leaders();
    cluster.stop();
}

#[test]
fn peers_with_unknown_certificates_cannot_join() {
    let cluster = start(2, 1, 2, limits());
    let rt = runtime();
    let target = &cluster.config.nodes[0];
    let rogue = Identity::generate(1).unwrap();
    let pinned = cluster.config.pinned().unwrap();
    let refused = rt.block_on(async {
        let endpoint = quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into()).unwrap();
        let config = client_config(&pinned.cert_of(0).unwrap(), Some(&rogue)).unwrap();
        let conn = match endpoint.connect_with(config, target.addr, &node_name(0)).unwrap().await {
            Err(e) => return e.to_string(),
            Ok(c) => c,
        };
        // TLS 1.3: the client may finish before the server has checked its certificate; the
        // server then closes the connection.
        match tokio::time::timeout(Duration::from_secs(5), conn.closed()).await {
            Ok(reason) => reason.to_string(),
            Err(_) => panic!("a peer with an unknown certificate kept its connection"),
        }
    });
    assert!(refused.contains("certificate"), "{refused}");
    // And a client that does not pin the node's certificate refuses the node.
    let wrong = Identity::generate(0).unwrap();
    let err = rt.block_on(async {
        let endpoint = quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into()).unwrap();
        let config = client_config(&wrong.cert, None).unwrap();
        endpoint.connect_with(config, target.addr, &node_name(0)).unwrap().await.err()
    });
    assert!(err.is_some(), "a node whose certificate is not the pinned one is refused");
    cluster.stop();
}

#[test]
fn a_bad_frame_closes_only_its_connection() {
    let cluster = start(1, 1, 1, limits());
    let rt = runtime();
    let txs = transfers(&cluster, 0.0, 3).signed(20, &cluster.keys);
    rt.block_on(async {
        for bad in [
            // A wrong version.
            vec![WIRE_VERSION + 1, 1, 0, 0, 0, 0],
            // An oversized frame: only its header is sent.
            {
                let mut h = vec![WIRE_VERSION, 1];
                h.extend_from_slice(&((MAX_FRAME_LEN + 1) as u32).to_le_bytes());
                h
            },
            // A submit whose payload is garbage.
            vec![WIRE_VERSION, 1, 3, 0, 0, 0, 1, 2, 3],
            // A vote from a client.
            {
                let k = SecretKey::from_seed(&[1; 32]).unwrap();
                let v = occam_shard::Vote { chain_id: 1, shard: 0, epoch: 0, height: 1, block_hash: [0; 32], state_root: [0; 32] };
                Message::Vote(occam_shard::SignedVote::sign(v, 0, &k)).encode().unwrap()
            },
        ] {
            let mut rogue = Client::connect(&cluster.config).await.unwrap();
            rogue.send_frame(0, bad).await.unwrap();
            let event = loop {
                match tokio::time::timeout(Duration::from_secs(5), rogue.next_event()).await.expect("the node reacts") {
                    // A leader announced meanwhile (nodes tell every client).
                    Some(ClientEvent::Status { .. }) => {}
                    other => break other,
                }
            };
            assert!(matches!(event, Some(ClientEvent::Closed { .. })), "{event:?}");
        }
        // Everyone else is still served.
        let mut good = Client::connect(&cluster.config).await.unwrap();
        let (statuses, _) = submit_all(&mut good, &txs, 10, 0).await;
        assert_eq!(statuses.len(), 20);
    });
    assert_eq!(cluster.nodes[0].as_ref().unwrap().metrics().bad_frames.get(), 4);
    cluster.stop();
}

#[test]
fn a_flooding_client_is_throttled_and_others_still_commit() {
    // Blocks only every 200 ms, and 100 pending transactions per client.
    let cluster =
        start(1, 1, 1, Limits { block_txs: 4096, block_ms: 200, pipeline: 2, mempool: 100_000, per_client: 100, ..Limits::default() });
    let rt = runtime();
    let mut gen = transfers(&cluster, 0.0, 4);
    let flood = gen.signed(500, &cluster.keys);
    let polite = gen.signed(50, &cluster.keys);
    rt.block_on(async {
        let chain_id = cluster.config.chain_id;
        let mut flooder = Client::connect(&cluster.config).await.unwrap();
        for (i, chunk) in flood.chunks(50).enumerate() {
            let txs = chunk.iter().map(|(t, _)| t.clone()).collect();
            flooder.submit(0, i as u64, RawSignedBlock { chain_id, txs }).await.unwrap();
        }
        let mut throttled = 0;
        let mut accepted = 0;
        while throttled + accepted < 10 {
            match tokio::time::timeout(Duration::from_secs(5), flooder.next_event()).await.unwrap().unwrap() {
                ClientEvent::Refused { reason: Refusal::Throttled, .. } => throttled += 1,
                ClientEvent::Accepted { .. } => accepted += 1,
                _ => {}
            }
        }
        assert_eq!(accepted, 2, "two batches of 50 fill the client's quota of 100");
        assert_eq!(throttled, 8);
        // Another client's transactions (signed after the flood's, by other signers' nonces
        // where they overlap) still get in and commit.
        let mut other = Client::connect(&cluster.config).await.unwrap();
        let fresh: Vec<(RawSignedTx, Option<u32>)> = polite.into_iter().filter(|(t, _)| t.header.nonce == 0).collect();
        let (statuses, _) = submit_all(&mut other, &fresh, 25, 0).await;
        assert_eq!(statuses.len(), fresh.len());
    });
    assert_eq!(cluster.nodes[0].as_ref().unwrap().metrics().refused_count(Refusal::Throttled), 8);
    cluster.stop();
}

/// The next event that is not a leader announcement, within 5 s.
async fn next_answer(client: &mut Client) -> Option<ClientEvent> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), client.next_event()).await.expect("the node answers within 5 s") {
            Some(ClientEvent::Status { .. }) => {}
            other => return other,
        }
    }
}

fn loopback(last: u8) -> std::net::IpAddr {
    std::net::Ipv4Addr::new(127, 0, 0, last).into()
}

/// Accounts belong to keys, over real QUIC: a transfer from account 0 signed by key 1 commits
/// as `NotOwner` and changes nothing (no balance, not even key 1's nonce); key 0 spends it
/// under either of its numbers, each with nonces of its own.
#[test]
fn a_signer_cannot_spend_an_account_its_key_does_not_own() {
    use occam_engine::native::keys::account;
    use occam_engine::native::signed::{nonce_key, TxHeader};
    use occam_engine::native::{NativeTx, TxKind};
    let cluster = start(1, 1, 1, limits());
    let rt = runtime();
    let k = cluster.config.signers;
    let pay = |signer: u32, from: u64| {
        let key = &cluster.keys[(signer % k) as usize];
        let header = TxHeader { signer, nonce: 0, body: NativeTx::new(TxKind::Transfer { from, to: 1, amount: 10 }) };
        (RawSignedTx::from(&header.sign(cluster.config.chain_id, key)), Some(0))
    };
    // Key 1 (number 1) takes from key 0's account; key 0 pays under number 0, then under its
    // second number (k), from its account k.
    let txs = vec![pay(1, 0), pay(0, 0), pay(k, u64::from(k))];
    let before = |key| cluster.genesis.get(&key).and_then(|v| v.as_u64()).unwrap_or(0);
    let start = [before(account(0)), before(account(1)), before(account(u64::from(k)))];
    rt.block_on(async {
        let mut client = Client::connect(&cluster.config).await.unwrap();
        let (statuses, _) = submit_all(&mut client, &txs, 1, 0).await;
        let got: Vec<TxStatus> = (0..3).map(|b| statuses[&(b, 0)]).collect();
        assert_eq!(got, [TxStatus::NotOwner, TxStatus::Succeeded, TxStatus::Succeeded]);
        let keys = vec![account(0), account(1), account(u64::from(k)), nonce_key(1), nonce_key(0), nonce_key(k)];
        let values: Vec<u64> = occam_bench::cluster::fetch_values(&mut client, keys)
            .await
            .unwrap()
            .iter()
            .map(|v| v.as_ref().and_then(|v| v.as_u64()).unwrap_or(0))
            .collect();
        assert_eq!(values, [start[0] - 10, start[1] + 20, start[2] - 10, 0, 1, 1], "the thief moved nothing and spent no nonce");
        client.close().await;
    });
    cluster.stop();
}

/// A forger's batches (valid curve points that sign nothing of theirs, from known signers) are
/// refused whole before they reach the mempool; after `bad_batches` of them its connection is
/// closed and its address refused. An honest client on another address commits all it sends
/// meanwhile, and a read sent right behind the forgeries is answered within 500 ms.
#[test]
fn forged_signatures_are_refused_at_admission_and_shut_their_sender_out() {
    let cluster = start(1, 1, 1, Limits { verify_share: 64, bad_batches: 3, ban_s: 60, ..limits() });
    let rt = runtime();
    let mut gen = transfers(&cluster, 0.0, 11);
    let nothing = SecretKey::from_seed(&[9; 32]).unwrap().sign(b"not a transaction").to_bytes();
    let forged: Vec<RawSignedTx> = gen
        .signed(4 * 256, &cluster.keys)
        .into_iter()
        .map(|(mut t, _)| {
            t.signature = nothing;
            t
        })
        .collect();
    let honest = transfers(&cluster, 0.0, 12).signed(200, &cluster.keys);
    let node = cluster.nodes[0].as_ref().unwrap();
    let metrics = node.metrics();
    rt.block_on(async {
        let chain_id = cluster.config.chain_id;
        let mut forger = Client::connect_from(&cluster.config, loopback(2)).await.unwrap();
        let mut good = Client::connect_from(&cluster.config, loopback(1)).await.unwrap();
        for (i, chunk) in forged.chunks(256).enumerate() {
            // The last may find the connection closed already.
            let _ = forger.submit(0, i as u64, RawSignedBlock { chain_id, txs: chunk.to_vec() }).await;
        }
        // A read right behind them.
        let asked = Instant::now();
        good.read(0, 7, vec![occam_engine::native::signed::nonce_key(0)]).await.unwrap();
        match next_answer(&mut good).await {
            Some(ClientEvent::Values { id: 7, .. }) => {}
            other => panic!("expected the read's values, got {other:?}"),
        }
        let waited = asked.elapsed();
        assert!(waited < Duration::from_millis(500), "a read behind 1,024 forgeries waited {waited:?}");
        // The forger hears why, then is shut out at its third bad batch (the close may overtake
        // that batch's refusal).
        let mut refused = Vec::new();
        loop {
            match next_answer(&mut forger).await {
                Some(ClientEvent::Refused { batch, reason: Refusal::BadSignature, .. }) => refused.push(batch),
                Some(ClientEvent::Closed { reason, .. }) => {
                    assert!(reason.contains("bad signatures"), "{reason}");
                    break;
                }
                other => panic!("expected refusals for bad signatures, then the connection closed; got {other:?}"),
            }
        }
        assert!(refused == [0, 1] || refused == [0, 1, 2], "{refused:?}");
        // Its address is refused for a while; the honest client's is not.
        let mut again = Client::connect_from(&cluster.config, loopback(2)).await.unwrap();
        match next_answer(&mut again).await {
            Some(ClientEvent::Closed { reason, .. }) => assert!(reason.contains("refused for a while"), "{reason}"),
            other => panic!("expected the banned address's connection closed, got {other:?}"),
        }
        let (statuses, _) = submit_all(&mut good, &honest, 20, 100).await;
        assert_eq!(statuses.len(), 200);
        assert!(statuses.values().all(|s| *s == TxStatus::Succeeded), "{statuses:?}");
        // A signer the chain does not know: refused before any check, and no strike.
        let mut unknown = honest[0].0.clone();
        unknown.header.signer = cluster.config.signer_numbers() + 5;
        good.submit(0, 999, RawSignedBlock { chain_id, txs: vec![unknown] }).await.unwrap();
        match next_answer(&mut good).await {
            Some(ClientEvent::Refused { batch: 999, reason: Refusal::UnknownSigner, .. }) => {}
            other => panic!("expected the unknown signer refused, got {other:?}"),
        }
    });
    assert_eq!(metrics.refused_count(Refusal::BadSignature), 3);
    assert_eq!(metrics.rejected_signatures.get(), 3 * 256);
    assert_eq!(metrics.bans.get(), 1);
    assert_eq!(metrics.accepted.get(), 200, "nothing of the forgeries was admitted");
    let text = scrape(node.metrics_addr().unwrap());
    assert!(text.contains("occam_rejected_signatures_total{node=\"0\"} 768"), "{text}");
    assert!(text.contains("occam_refused_connections_total{reason=\"banned\",node=\"0\"} 1"), "{text}");
    assert!(text.contains("occam_client_disconnects_total{reason=\"forged\",node=\"0\"} 1"), "{text}");
    cluster.stop();
}

/// One address holds at most `host_connections` client connections and `per_host` pending
/// transactions, whatever it spreads them over; another address is not held back by it.
#[test]
fn one_address_cannot_take_more_than_its_connections_or_its_pending_share() {
    // Blocks only every 2 s: what is admitted stays pending while the test looks.
    let limits = Limits { block_txs: 4096, block_ms: 2000, host_connections: 2, per_client: 80, per_host: 100, ..limits() };
    let cluster = start(1, 1, 1, limits);
    let rt = runtime();
    let txs = transfers(&cluster, 0.0, 13).signed(200, &cluster.keys);
    let batch = |from: usize, n: usize| RawSignedBlock {
        chain_id: cluster.config.chain_id,
        txs: txs[from..from + n].iter().map(|(t, _)| t.clone()).collect(),
    };
    rt.block_on(async {
        let mut first = Client::connect_from(&cluster.config, loopback(3)).await.unwrap();
        let mut second = Client::connect_from(&cluster.config, loopback(3)).await.unwrap();
        let mut third = Client::connect_from(&cluster.config, loopback(3)).await.unwrap();
        match next_answer(&mut third).await {
            Some(ClientEvent::Closed { reason, .. }) => assert!(reason.contains("too many connections"), "{reason}"),
            other => panic!("expected the third connection from one address closed, got {other:?}"),
        }
        first.submit(0, 1, batch(0, 80)).await.unwrap();
        assert!(matches!(next_answer(&mut first).await, Some(ClientEvent::Accepted { batch: 1 })));
        // 80 pending from this address: 40 more on its other connection is over its 100.
        second.submit(0, 2, batch(80, 40)).await.unwrap();
        assert!(matches!(next_answer(&mut second).await, Some(ClientEvent::Refused { batch: 2, reason: Refusal::Throttled, .. })));
        second.submit(0, 3, batch(80, 20)).await.unwrap();
        assert!(matches!(next_answer(&mut second).await, Some(ClientEvent::Accepted { batch: 3 })));
        // Another address has its own share.
        let mut other = Client::connect_from(&cluster.config, loopback(4)).await.unwrap();
        other.submit(0, 4, batch(100, 80)).await.unwrap();
        assert!(matches!(next_answer(&mut other).await, Some(ClientEvent::Accepted { batch: 4 })));
        // The first connection gone, its pending transactions no longer count against the
        // address (their receipts will find no client).
        first.close().await;
        let mut fourth = Client::connect_from(&cluster.config, loopback(3)).await.unwrap();
        fourth.submit(0, 5, batch(180, 20)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match next_answer(&mut fourth).await {
                Some(ClientEvent::Accepted { batch: 5 }) => break,
                // The slot the first connection held may not be free yet.
                Some(ClientEvent::Closed { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    fourth = Client::connect_from(&cluster.config, loopback(3)).await.unwrap();
                    fourth.submit(0, 5, batch(180, 20)).await.unwrap();
                }
                other => panic!("expected the address's freed share accepted, got {other:?}"),
            }
        }
    });
    let m = cluster.nodes[0].as_ref().unwrap().metrics();
    assert!(m.refused_count(Refusal::Throttled) >= 1);
    cluster.stop();
}

/// A bare QUIC connection to node 0 from `from`, as a client (no certificate), with receive
/// windows of `window` bytes: what a hostile client controls.
async fn raw_client(cluster: &Cluster, from: std::net::IpAddr, window: u32) -> quinn::Connection {
    let endpoint = quinn::Endpoint::client((from, 0).into()).unwrap();
    let pinned = cluster.config.pinned().unwrap();
    let mut config = client_config(&pinned.cert_of(0).unwrap(), None).unwrap();
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(window.into());
    transport.receive_window(window.into());
    config.transport_config(Arc::new(transport));
    endpoint.connect_with(config, cluster.config.nodes[0].addr, &node_name(0)).unwrap().await.unwrap()
}

/// The application close code a connection ended with (within 10 s).
async fn close_code(conn: &quinn::Connection) -> u64 {
    match tokio::time::timeout(Duration::from_secs(10), conn.closed()).await.expect("closed within 10 s") {
        quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
        other => panic!("closed otherwise: {other}"),
    }
}

/// A client that sends reads and never reads the answers is cut off once the answers queued
/// for it reach `client_queue_bytes`: what it made the node hold is bounded by that queue and
/// the QUIC send window, not by how long it keeps asking.
#[test]
fn a_client_that_does_not_read_is_cut_off_within_its_byte_budget() {
    let queue = occam_net::config::MIN_CLIENT_QUEUE_BYTES;
    let cluster = start(1, 1, 1, Limits { client_queue_bytes: queue, ..limits() });
    let rt = runtime();
    let keys: Vec<occam_engine::key::Key> = (0..1000).map(occam_engine::native::signed::nonce_key).collect();
    let (sent, code) = rt.block_on(async {
        // A 64 KiB window: nearly everything the node answers stays in the node.
        let conn = raw_client(&cluster, loopback(6), 64 << 10).await;
        let mut send = conn.open_uni().await.unwrap();
        let mut sent = 0usize;
        for id in 0..20_000u64 {
            let frame = Message::Read { id, keys: keys.clone() }.encode().unwrap();
            if conn.close_reason().is_some() || send.write_all(&frame).await.is_err() {
                break;
            }
            sent += 1;
            // At most 8 reads may be unanswered: pace the asking a little.
            if id % 8 == 7 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        (sent, close_code(&conn).await)
    });
    assert_eq!(code, u64::from(occam_net::transport::close::NOT_READING));
    // Each answer carries 1,000 entries: the node stopped before 16 MiB of answers had been
    // asked for (counted at their smallest, every value absent).
    let answer = Message::Values { id: 0, values: keys.iter().map(|k| (*k, None)).collect() }.encode().unwrap().len();
    let asked = sent * answer;
    assert!(asked <= 16 << 20, "{sent} reads ({asked} bytes of answers) before the node cut the client off");
    let m = cluster.nodes[0].as_ref().unwrap().metrics();
    // The frame that did not fit, and any that came before the connection was gone.
    assert!(m.receipts_dropped.get() >= 1);
    cluster.stop();
}

/// Connections that hold frames half-sent: one stream each, at most `host_connections` per
/// address, each frame closed as bad once `frame_ms` has passed; a frame cut short by the end
/// of its stream is a bad frame too; a connection that sends nothing is closed as idle.
#[test]
fn stalled_truncated_and_idle_connections_are_bounded_counted_and_closed() {
    let limits = Limits { host_connections: 4, frame_ms: 1000, idle_s: 3, ..limits() };
    let cluster = start(1, 1, 1, limits);
    let rt = runtime();
    let m = cluster.nodes[0].as_ref().unwrap().metrics();
    rt.block_on(async {
        // Six connections from one address: four are served, two closed as busy.
        let mut conns = Vec::new();
        for _ in 0..6 {
            conns.push(raw_client(&cluster, loopback(5), 1 << 20).await);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (served, busy): (Vec<_>, Vec<_>) = conns.into_iter().partition(|c| c.close_reason().is_none());
        for conn in &busy {
            assert_eq!(close_code(conn).await, u64::from(occam_net::transport::close::BUSY));
        }
        let mut stalled = Vec::new();
        for conn in served {
            // A header announcing a full client frame, then 1 MiB of it, then nothing.
            let mut send = conn.open_uni().await.unwrap();
            let mut bytes = vec![WIRE_VERSION, 3];
            bytes.extend_from_slice(&(occam_net::transport::MAX_CLIENT_FRAME_LEN as u32).to_le_bytes());
            bytes.resize(bytes.len() + (1 << 20), 7);
            send.write_all(&bytes).await.unwrap();
            // One stream per connection: a second one is not granted.
            let second = tokio::time::timeout(Duration::from_millis(200), conn.open_uni()).await;
            assert!(second.is_err(), "a second stream was granted");
            stalled.push((conn, send));
        }
        assert_eq!(stalled.len(), 4, "{} of 6 connections from one address were refused", busy.len());
        for (conn, _send) in &stalled {
            assert_eq!(close_code(conn).await, u64::from(occam_net::transport::close::PROTOCOL), "a stalled frame times out");
        }
        // Cut short by the end of the stream: a 3-byte header, and a frame missing its end.
        for bytes in [vec![WIRE_VERSION, 3, 9], {
            let mut b = vec![WIRE_VERSION, 3];
            b.extend_from_slice(&100u32.to_le_bytes());
            b.extend_from_slice(&[1; 40]);
            b
        }] {
            let conn = raw_client(&cluster, loopback(7), 1 << 20).await;
            let mut send = conn.open_uni().await.unwrap();
            send.write_all(&bytes).await.unwrap();
            send.finish().unwrap();
            assert_eq!(close_code(&conn).await, u64::from(occam_net::transport::close::PROTOCOL), "a truncated frame");
        }
        // A connection that sends nothing is closed after idle_s.
        let idle = raw_client(&cluster, loopback(8), 1 << 20).await;
        let started = Instant::now();
        assert_eq!(close_code(&idle).await, u64::from(occam_net::transport::close::IDLE));
        assert!(started.elapsed() >= Duration::from_millis(2900), "closed as idle after {:?}", started.elapsed());
    });
    assert_eq!(m.bad_frames.get(), 6, "four stalled frames and two truncated ones");
    assert_eq!(m.idle_closed.get(), 1);
    cluster.stop();
}

#[test]
fn occam_load_drives_a_cluster_twice_and_verifies_every_certificate() {
    use occam_bench::load::{run_load, LoadConfig};
    let cluster = start(4, 2, 4, limits());
    let cfg = LoadConfig {
        rate: Some(300.0),
        concurrency: None,
        duration_s: 2.0,
        cross_shard: 0.2,
        batch: 32,
        workload: "transfer".into(),
        distribution: "uniform".into(),
        max_txs: 0,
        seed: 9,
        drain_s: 20.0,
        cluster_file: None,
        signer_keys: None,
    };
    // The second run continues from the first one's nonces (read from the leaders).
    for run in 0..2 {
        let r = run_load(&cluster.config, &cfg, false).unwrap();
        assert_eq!(r.scheduled, 600, "run {run}");
        assert_eq!(r.committed, r.sent, "run {run}: {r:?}");
        assert_eq!((r.bad_nonce, r.dropped, r.lost, r.bad_certificates), (0, 0, 0, 0), "run {run}");
        assert!(r.certificates > 0 && r.latency.count == r.committed, "run {run}");
        assert!(r.latency.p50_ms > 0.0 && r.latency.p50_ms <= r.latency.p99_ms);
        assert_eq!(r.series.iter().map(|s| s.committed).sum::<u64>(), r.committed);
    }
    let closed = LoadConfig { rate: None, concurrency: Some(64), max_txs: 300, ..cfg };
    let r = run_load(&cluster.config, &closed, false).unwrap();
    assert_eq!((r.committed, r.bad_nonce, r.lost), (300, 0, 0), "closed loop: {r:?}");
    cluster.stop();
}

#[test]
fn occam_load_drives_smallbank_with_its_own_cross_shard_share() {
    use occam_bench::load::{run_load, LoadConfig};
    let cluster = start_with("smallbank", 3, 2, 3, limits());
    let cfg = LoadConfig {
        rate: Some(250.0),
        concurrency: None,
        duration_s: 2.0,
        cross_shard: 0.0,
        batch: 32,
        workload: "smallbank".into(),
        distribution: "zipf:0.8".into(),
        max_txs: 0,
        seed: 3,
        drain_s: 20.0,
        cluster_file: None,
        signer_keys: None,
    };
    let r = run_load(&cluster.config, &cfg, false).unwrap();
    assert_eq!(r.scheduled, 500);
    assert_eq!(r.committed, r.sent, "{r:?}");
    assert_eq!((r.bad_nonce, r.dropped, r.lost, r.bad_certificates), (0, 0, 0, 0));
    // Two-account SmallBank transactions between random customers cross shards about half the
    // time: they went through the coordinator and were certified like the others.
    let wrong = LoadConfig { workload: "transfer".into(), ..cfg };
    let err = run_load(&cluster.config, &wrong, false).unwrap_err().to_string();
    assert!(err.contains("genesis is for `smallbank`"), "{err}");
    cluster.stop();
}
