//! Raft's RPCs over real QUIC on 127.0.0.1 with real pinned mutual TLS: three Raft nodes of
//! one group (each on its own store) replicating through [`RaftPeers`] and [`serve_peer`], a
//! learner brought up by a chunked snapshot; refusals of requests a node may not send; peers
//! that cannot be reached, or answer wrongly. Every wait is bounded.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::Path;

use occam_engine::key::Key;
use occam_engine::prelude::{CommittedState, Value, WriteSet};
use occam_store::{AppliedPoint, Durability, Store, StoreIdentity, StoreOptions};
use openraft::{CommittedLeaderId, Config, LeaderId, SnapshotPolicy};
use tokio::sync::mpsc;

use super::*;
use crate::raft::log_store::LogStore;
use crate::raft::state_machine::{AppliedBlock, BlockApplier, BlockInput, StateMachine};
use crate::raft::{Entry, LogId, RaftRequest, SnapshotMeta, Vote};
use crate::tls::{client_config, peer_cert, server_config, Identity, PinnedCerts};

const GROUP: GroupId = 7;

/// The bound on every wait for the cluster to do something.
const WAIT: Duration = Duration::from_secs(30);

/// Runs `f` to completion within [`WAIT`], or fails the test saying what it waited for.
async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?}: {what}"),
    }
}

fn key(i: u64) -> Key {
    Key::from_parts(1, i, 0)
}

/// A block for [`PutApplier`]: `key u64 ‖ value u64`.
fn put(k: u64, v: u64) -> RaftRequest {
    RaftRequest::new([k.to_le_bytes(), v.to_le_bytes()].concat())
}

#[derive(Debug, thiserror::Error)]
#[error("malformed test block")]
struct BadBlock;

/// A test applier: each block puts one `u64` value.
#[derive(Debug, Default)]
struct PutApplier {
    state: CommittedState,
}

impl BlockApplier for PutApplier {
    type Error = BadBlock;

    fn restore(&mut self, _group: GroupId, state: CommittedState, _point: AppliedPoint) {
        self.state = state;
    }

    fn apply(&mut self, input: BlockInput<'_>) -> Result<Option<AppliedBlock>, BadBlock> {
        let b: &[u8; 16] = input.request.bytes.as_slice().try_into().map_err(|_| BadBlock)?;
        let (k, v) = b.split_at(8);
        let (k, v) = (u64::from_le_bytes(k.try_into().map_err(|_| BadBlock)?), u64::from_le_bytes(v.try_into().map_err(|_| BadBlock)?));
        let writes = WriteSet::from_entries(vec![(key(k), Some(Value::from_u64(v)))]);
        self.state.apply(&writes, None);
        Ok(Some(AppliedBlock { writes, block_hash: *blake3::hash(b).as_bytes(), root: self.state.root(), block: None, txs: Vec::new() }))
    }
}

/// Identities and pinned certificates of a test cluster's nodes.
struct Pki {
    ids: HashMap<u32, Identity>,
    pinned: PinnedCerts,
}

impl Pki {
    fn new(nodes: &[u32]) -> Pki {
        let ids: HashMap<u32, Identity> = nodes.iter().map(|&n| (n, Identity::generate(n).expect("identity"))).collect();
        let pinned = PinnedCerts::new(ids.iter().map(|(n, i)| (*n, i.cert.clone()))).expect("pins");
        Pki { ids, pinned }
    }

    /// A node's endpoint on 127.0.0.1, accepting pinned peers (and dialling).
    fn endpoint(&self, node: u32) -> quinn::Endpoint {
        let config = server_config(&self.ids[&node], self.pinned.clone()).expect("server config");
        quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).expect("endpoint")
    }

    /// How `from` reaches `to` at `addr`.
    fn peer(&self, from: u32, to: u32, addr: SocketAddr) -> PeerAddr {
        let config = client_config(&self.ids[&to].cert, Some(&self.ids[&from])).expect("client config");
        PeerAddr::new(to, addr, config)
    }
}

/// The test's groups: one group, members fixed, Rafts registered once built.
struct TestGroups {
    rafts: Mutex<HashMap<GroupId, Raft<TypeConfig>>>,
    members: BTreeSet<NodeId>,
}

impl RaftGroups for TestGroups {
    fn raft(&self, group: GroupId) -> Option<Raft<TypeConfig>> {
        self.rafts.lock().get(&group).cloned()
    }
    fn is_member(&self, group: GroupId, node: NodeId) -> bool {
        group == GROUP && self.members.contains(&node)
    }
}

/// Accepts connections on `endpoint` and serves the Raft RPCs of pinned nodes with
/// [`serve_peer`], as a node does.
fn accept_peers(endpoint: quinn::Endpoint, pinned: PinnedCerts, groups: Arc<dyn RaftGroups>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let (pinned, groups) = (pinned.clone(), groups.clone());
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                match peer_cert(&conn).and_then(|c| pinned.node_of(&c)) {
                    Some(from) => serve_peer(conn, NodeId::from(from), groups).await,
                    None => conn.close(close::FORBIDDEN.into(), b"not a node"),
                }
            });
        }
    })
}

/// What serving one stream came to: the sender, and `None` or the refusal's close code and
/// text.
type Outcome = (NodeId, Option<(Option<u32>, String)>);

/// Like [`accept_peers`], but reports what [`serve_rpc`] returned for every stream.
fn accept_recording(endpoint: quinn::Endpoint, pinned: PinnedCerts, groups: Arc<TestGroups>) -> mpsc::UnboundedReceiver<Outcome> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let (pinned, groups, tx) = (pinned.clone(), groups.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let Some(from) = peer_cert(&conn).and_then(|c| pinned.node_of(&c)) else { return };
                let from = NodeId::from(from);
                conn.set_max_concurrent_bi_streams(RPC_STREAMS_PER_PEER.into());
                while let Ok((send, recv)) = conn.accept_bi().await {
                    let (conn, groups, tx) = (conn.clone(), groups.clone(), tx.clone());
                    tokio::spawn(async move {
                        let outcome = match serve_rpc(send, recv, from, &*groups).await {
                            Ok(()) => None,
                            Err(e) => {
                                if let Some(code) = e.close_code() {
                                    conn.close(code.into(), e.to_string().as_bytes());
                                }
                                Some((e.close_code(), e.to_string()))
                            }
                        };
                        let _ = tx.send((from, outcome));
                    });
                }
            });
        }
    });
    rx
}

fn open_store(dir: &Path, node: u32) -> Store {
    let options = StoreOptions { durability: Durability::Buffered, memory_budget_bytes: 4 << 20 };
    let store = Store::open(dir, StoreIdentity::new(7, node), &options).expect("store opens");
    store.write_genesis(GROUP, &[]).expect("genesis");
    store
}

async fn start_raft(node: NodeId, store: &Store, network: GroupNetwork, config: Arc<Config>) -> Raft<TypeConfig> {
    let sm = StateMachine::open(store.clone(), GROUP, PutApplier::default()).expect("state machine opens");
    Raft::new(node, config, network, LogStore::new(store.clone(), GROUP), sm).await.expect("raft starts")
}

fn raft_config(chunk: u64) -> Arc<Config> {
    let config = Config {
        heartbeat_interval: 200,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        install_snapshot_timeout: 5000,
        snapshot_max_chunk_size: chunk,
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        ..Config::default()
    };
    Arc::new(config.validate().expect("valid raft config"))
}

/// (a) Three Raft nodes of one group, connected only through `RaftPeers` and `serve_peer`
/// over real QUIC and pinned TLS, elect a leader and apply the same blocks; then a fourth
/// node, added as a learner after the log was purged, catches up by a snapshot sent in many
/// chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_nodes_replicate_and_install_snapshots_over_quic() {
    let all = [1u32, 2, 3, 4];
    let pki = Pki::new(&all);
    let endpoints: HashMap<u32, quinn::Endpoint> = all.iter().map(|&n| (n, pki.endpoint(n))).collect();
    let addrs: HashMap<u32, SocketAddr> = endpoints.iter().map(|(n, e)| (*n, e.local_addr().unwrap())).collect();
    // Chunks of 200 bytes: the snapshot below goes in several.
    let config = raft_config(200);
    let members: BTreeSet<NodeId> = all.iter().map(|&n| NodeId::from(n)).collect();

    let mut dirs = Vec::new();
    let mut nodes = Vec::new();
    for &n in &all {
        let peers: Vec<PeerAddr> = all.iter().filter(|&&m| m != n).map(|&m| pki.peer(n, m, addrs[&m])).collect();
        let peers = RaftPeers::new(endpoints[&n].clone(), peers, Duration::from_secs(5));
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), n);
        let raft = start_raft(NodeId::from(n), &store, peers.group(GROUP), config.clone()).await;
        let groups = Arc::new(TestGroups { rafts: Mutex::new(HashMap::from([(GROUP, raft.clone())])), members: members.clone() });
        let accept = accept_peers(endpoints[&n].clone(), pki.pinned.clone(), groups);
        dirs.push(dir);
        nodes.push((n, raft, store, accept));
    }

    nodes[0].1.initialize(BTreeSet::from([1, 2, 3])).await.expect("initialize");
    let leader = bounded("a leader", nodes[0].1.wait(Some(WAIT)).metrics(|m| m.current_leader.is_some(), "a leader"))
        .await
        .expect("a leader")
        .current_leader
        .unwrap();
    let leader_raft = nodes.iter().find(|(n, ..)| NodeId::from(*n) == leader).unwrap().1.clone();

    let mut last = 0;
    for i in 1..=12u64 {
        let resp = bounded("a write", leader_raft.client_write(put(i, i * 10))).await.expect("client write");
        assert_eq!(resp.data.height, i, "the block's height");
        last = resp.log_id.index;
    }
    for (n, raft, store, _) in &nodes[..3] {
        bounded("applied", raft.wait(Some(WAIT)).applied_index_at_least(Some(last), "applied")).await.expect("applied");
        for i in 1..=12u64 {
            assert_eq!(store.value(GROUP, &key(i)).unwrap(), Some(Value::from_u64(i * 10)), "node {n}, key {i}");
        }
    }

    // Snapshot, purge the log, then add node 4: only a snapshot can bring it up.
    leader_raft.trigger().snapshot().await.unwrap();
    bounded("snapshot", leader_raft.wait(Some(WAIT)).metrics(|m| m.snapshot.map(|s| s.index) >= Some(last), "snapshot"))
        .await
        .expect("snapshot");
    let snapshot = leader_raft.get_snapshot().await.unwrap().expect("a snapshot");
    let size = snapshot.snapshot.get_ref().len();
    assert!(size > 3 * 200, "a snapshot of {size} bytes goes in several chunks");
    leader_raft.trigger().purge_log(last).await.unwrap();
    bounded("purge", leader_raft.wait(Some(WAIT)).metrics(|m| m.purged.map(|p| p.index) >= Some(last), "purged")).await.expect("purged");
    bounded("add learner", leader_raft.add_learner(4, EmptyNode {}, true)).await.expect("learner added");
    let (_, learner, learner_store, _) = &nodes[3];
    let m = bounded("learner applied", learner.wait(Some(WAIT)).applied_index_at_least(Some(last), "learner applied"))
        .await
        .expect("learner applied");
    assert!(m.snapshot.map(|s| s.index) >= Some(last), "the learner installed the snapshot: {:?}", m.snapshot);
    for i in 1..=12u64 {
        assert_eq!(learner_store.value(GROUP, &key(i)).unwrap(), Some(Value::from_u64(i * 10)), "learner, key {i}");
    }
    // And it goes on replicating by entries.
    let resp = bounded("a write", leader_raft.client_write(put(99, 1))).await.expect("client write");
    bounded("learner applied", learner.wait(Some(WAIT)).applied_index_at_least(Some(resp.log_id.index), "applied"))
        .await
        .expect("learner applied");
    assert_eq!(learner_store.value(GROUP, &key(99)).unwrap(), Some(Value::from_u64(1)));

    for (_, raft, _, accept) in nodes {
        bounded("shutdown", raft.shutdown()).await.unwrap();
        accept.abort();
    }
    for e in endpoints.values() {
        e.close(0u32.into(), b"done");
    }
}

fn vote_for(node: NodeId) -> VoteRequest {
    VoteRequest { vote: Vote { leader_id: LeaderId::new(5, node), committed: false }, last_log_id: None }
}

fn heartbeat_from(node: NodeId) -> AppendEntriesRequest {
    AppendEntriesRequest {
        vote: Vote { leader_id: LeaderId::new(5, node), committed: true },
        prev_log_id: None,
        leader_commit: None,
        entries: vec![],
    }
}

fn option() -> RPCOption {
    RPCOption::new(Duration::from_secs(10))
}

/// Waits until `peers`' cached connection to `node` is closed (the server closed it), so the
/// next RPC dials a new one.
async fn wait_closed(peers: &RaftPeers, node: NodeId) {
    let peer = peers.peers.read()[&node].clone();
    let link = match &*peer.link.lock() {
        Link::Up(conn) => Some(conn.clone()),
        _ => None,
    };
    if let Some(conn) = link {
        bounded("the connection closes", conn.closed()).await;
    }
}

async fn next_outcome(rx: &mut mpsc::UnboundedReceiver<Outcome>) -> Outcome {
    bounded("a served stream", rx.recv()).await.expect("the server runs")
}

/// Opens a raw connection from node `from` (its pinned identity) to node `to`, outside
/// `RaftPeers`, to send what a well-behaved node would not.
async fn raw_connection(pki: &Pki, from: u32, to: u32, addr: SocketAddr) -> quinn::Connection {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let p = pki.peer(from, to, addr);
    bounded("dial", endpoint.connect_with(p.config, addr, &p.server_name).unwrap()).await.expect("connected")
}

/// (b) The server refuses a request from a node that is not a member, one whose vote names
/// another node, one that does not decode, and a frame that is no Raft request, closing the
/// connection for each; a group it does not host is refused without closing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_a_node_may_not_send_are_refused() {
    let pki = Pki::new(&[1, 2, 3, 5]);
    let server = pki.endpoint(1);
    let addr = server.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), 1);
    // Node 1's Raft, uninitialized: it still answers votes and heartbeats. Its own network is
    // never used.
    let own = RaftPeers::new(server.clone(), vec![], Duration::from_secs(1));
    let raft = start_raft(1, &store, own.group(GROUP), raft_config(1 << 20)).await;
    let groups = Arc::new(TestGroups { rafts: Mutex::new(HashMap::from([(GROUP, raft.clone())])), members: BTreeSet::from([1, 2, 3]) });
    let mut served = accept_recording(server.clone(), pki.pinned.clone(), groups);

    let client = |from: u32| {
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        RaftPeers::new(endpoint, vec![pki.peer(from, 1, addr)], Duration::from_secs(5))
    };
    let two = client(2);
    let mut two_to_one = two.group(GROUP).new_client(1, &EmptyNode {}).await;

    // A member speaking for itself is answered.
    let resp = two_to_one.vote(vote_for(2), option()).await.expect("a vote is answered");
    assert_eq!(resp.vote.leader_id.node_id, 2, "node 1 granted (or saw) node 2's vote: {resp:?}");
    assert_eq!(next_outcome(&mut served).await, (2, None));
    two_to_one.append_entries(heartbeat_from(2), option()).await.expect("a heartbeat is answered");
    assert_eq!(next_outcome(&mut served).await, (2, None));

    // A group node 1 does not host: refused with a reason, the connection stays.
    let mut other_group = two.group(GROUP + 1).new_client(1, &EmptyNode {}).await;
    let err = other_group.vote(vote_for(2), option()).await.unwrap_err();
    assert!(matches!(&err, RPCError::Network(_)) && err.to_string().contains("not hosted"), "{err}");
    let (from, refusal) = next_outcome(&mut served).await;
    assert_eq!(from, 2);
    let (code, text) = refusal.expect("refused");
    assert_eq!(code, None, "{text}");

    // Speaking for another node: refused, and the connection is closed as forbidden.
    let err = two_to_one.vote(vote_for(3), option()).await.unwrap_err();
    assert!(matches!(err, RPCError::Network(_) | RPCError::Unreachable(_)), "{err}");
    let (_, refusal) = next_outcome(&mut served).await;
    let (code, text) = refusal.expect("refused");
    assert_eq!(code, Some(close::FORBIDDEN));
    assert!(text.contains("request for node 3"), "{text}");
    wait_closed(&two, 1).await;

    // The next RPC dials again; a heartbeat naming another leader is refused the same way.
    let err = two_to_one.append_entries(heartbeat_from(3), option()).await.unwrap_err();
    assert!(matches!(err, RPCError::Network(_) | RPCError::Unreachable(_)), "{err}");
    let (_, refusal) = next_outcome(&mut served).await;
    assert_eq!(refusal.expect("refused").0, Some(close::FORBIDDEN));
    wait_closed(&two, 1).await;
    two_to_one.vote(vote_for(2), option()).await.expect("answered again after a redial");
    assert_eq!(next_outcome(&mut served).await, (2, None));

    // A pinned node that is not a member of the group.
    let mut five_to_one = client(5).group(GROUP).new_client(1, &EmptyNode {}).await;
    assert!(five_to_one.vote(vote_for(5), option()).await.is_err());
    let (from, refusal) = next_outcome(&mut served).await;
    let (code, text) = refusal.expect("refused");
    assert_eq!((from, code), (5, Some(close::FORBIDDEN)));
    assert!(text.contains("not a member"), "{text}");

    // A body that does not decode, and a frame that is not a Raft request: protocol errors.
    let bad_body = Message::RaftRequest { group: GROUP, rpc: RaftRpcKind::Vote, body: vec![1, 2, 3] };
    for (frame, what) in [(bad_body.encode().unwrap(), "does not decode"), (Message::StatusRequest.encode().unwrap(), "kind 8")] {
        let conn = raw_connection(&pki, 2, 1, addr).await;
        let (mut send, _recv) = bounded("a stream", conn.open_bi()).await.unwrap();
        send.write_all(&frame).await.unwrap();
        send.finish().unwrap();
        let (_, refusal) = next_outcome(&mut served).await;
        let (code, text) = refusal.expect("refused");
        assert_eq!(code, Some(close::PROTOCOL));
        assert!(text.contains(what), "{text}");
        match bounded("the close", conn.closed()).await {
            quinn::ConnectionError::ApplicationClosed(c) => assert_eq!(c.error_code, close::PROTOCOL.into()),
            other => panic!("closed otherwise: {other}"),
        }
    }

    bounded("shutdown", raft.shutdown()).await.unwrap();
    server.close(0u32.into(), b"done");
}

/// (c) A peer that does not answer is `Unreachable` within the RPC's timeout (and within
/// openraft's, when that is shorter); so is a node with no address, at once, and a peer whose
/// dial failed, at once, until the backoff ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_peers_are_unreachable_within_the_timeout() {
    let pki = Pki::new(&[1, 2]);
    // A socket that swallows every packet: no handshake ever completes.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut bad_name = pki.peer(1, 2, silent_addr);
    bad_name.node = 3;
    bad_name.server_name = String::new();
    let peers = RaftPeers::new(endpoint, vec![pki.peer(1, 2, silent_addr), bad_name], Duration::from_millis(300));

    let mut to_two = peers.group(GROUP).new_client(2, &EmptyNode {}).await;
    for _ in 0..2 {
        let start = Instant::now();
        let err = to_two.vote(vote_for(1), option()).await.unwrap_err();
        let took = start.elapsed();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err}");
        assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(2), "took {took:?}");
    }
    // openraft's shorter limit (3/4 of it) bounds the RPC too.
    let start = Instant::now();
    let err = to_two.append_entries(heartbeat_from(1), RPCOption::new(Duration::from_millis(100))).await.unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "{err}");
    assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());

    // No address: at once.
    let start = Instant::now();
    let err = peers.group(GROUP).new_client(9, &EmptyNode {}).await.vote(vote_for(1), option()).await.unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)) && err.to_string().contains("no address"), "{err}");
    assert!(start.elapsed() < Duration::from_millis(100));

    // A dial that fails (here at once: a server name quinn refuses), then the backoff.
    let mut to_three = peers.group(GROUP).new_client(3, &EmptyNode {}).await;
    for _ in 0..2 {
        let start = Instant::now();
        let err = to_three.vote(vote_for(1), option()).await.unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)) && err.to_string().contains("dialling node 3"), "{err}");
        assert!(start.elapsed() < Duration::from_millis(200), "took {:?}", start.elapsed());
    }
    drop(silent);
}

/// What the fake peer of [`replies_that_do_not_answer_the_request_are_network_errors`] does
/// with one request.
#[derive(Clone, Copy, Debug)]
enum Script {
    Answer,
    OtherGroup,
    OtherRpc,
    Garbage,
    RaftError,
    NotAReply,
    Malformed,
    Silence,
    Hang,
}

/// (d) A peer's reply that does not answer the request (another group or RPC, a body that does
/// not decode, another message, a malformed frame, none) is a `Network` error saying so; a
/// Raft error comes back with its text; a connected peer that does not answer in time is a
/// `Timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_that_do_not_answer_the_request_are_network_errors() {
    let pki = Pki::new(&[1, 2]);
    let server = pki.endpoint(2);
    let addr = server.local_addr().unwrap();
    let (script_tx, mut script_rx) = mpsc::unbounded_channel::<Script>();
    let fake = tokio::spawn({
        let server = server.clone();
        async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            conn.set_max_concurrent_bi_streams(8u32.into());
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let Some(Message::RaftRequest { group, rpc, body }) = read_frame(&mut recv, MAX_FRAME_LEN).await.unwrap() else {
                    panic!("not a raft request")
                };
                let req = VoteRequest::decode(&body).unwrap();
                let answer = VoteResponse { vote: req.vote, vote_granted: true, last_log_id: None };
                let reply = |group, rpc, result| Message::RaftReply { group, rpc, result }.encode().unwrap();
                let frame = match script_rx.recv().await.unwrap() {
                    Script::Answer => reply(group, rpc, Ok(answer.encode())),
                    Script::OtherGroup => reply(group + 1, rpc, Ok(answer.encode())),
                    Script::OtherRpc => reply(group, RaftRpcKind::AppendEntries, Ok(answer.encode())),
                    Script::Garbage => reply(group, rpc, Ok(vec![1, 2, 3])),
                    Script::RaftError => reply(group, rpc, Err("the disk is on fire".into())),
                    Script::NotAReply => Message::Accepted { batch: 1 }.encode().unwrap(),
                    Script::Malformed => vec![crate::wire::WIRE_VERSION + 1, 1, 0, 0, 0, 0],
                    Script::Silence => vec![],
                    Script::Hang => {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        continue;
                    }
                };
                let _ = send.write_all(&frame).await;
                let _ = send.finish();
            }
        }
    });

    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let peers = RaftPeers::new(endpoint, vec![pki.peer(1, 2, addr)], Duration::from_millis(500));
    let mut to_two = peers.group(GROUP).new_client(2, &EmptyNode {}).await;
    let cases = [
        (Script::Answer, ""),
        (Script::OtherGroup, "answered group 8 Vote to a group 7 Vote request"),
        (Script::OtherRpc, "answered group 7 AppendEntries"),
        (Script::Garbage, "does not decode"),
        (Script::RaftError, "the disk is on fire"),
        (Script::NotAReply, "kind 2, not a Raft reply"),
        (Script::Malformed, "malformed reply"),
        (Script::Silence, "without a reply"),
        (Script::Answer, ""),
    ];
    for (script, what) in cases {
        script_tx.send(script).unwrap();
        match to_two.vote(vote_for(1), option()).await {
            Ok(resp) if what.is_empty() => assert!(resp.vote_granted),
            Err(err @ RPCError::Network(_)) if !what.is_empty() => assert!(err.to_string().contains(what), "{script:?}: {err}"),
            other => panic!("{script:?}: {other:?}"),
        }
    }
    // A connected peer that does not answer: a timeout, after the RPC's limit.
    script_tx.send(Script::Hang).unwrap();
    let start = Instant::now();
    let err = to_two.vote(vote_for(1), option()).await.unwrap_err();
    assert!(matches!(err, RPCError::Timeout(_)), "{err}");
    assert!(start.elapsed() >= Duration::from_millis(450) && start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());

    fake.abort();
    server.close(0u32.into(), b"done");
}

/// Requests too large for a frame are refused before anything is sent: AppendEntries with a
/// hint to send fewer entries (openraft retries at once), a single entry that can never fit
/// as a network error; nothing panics.
#[tokio::test]
async fn oversized_requests_are_refused_before_sending() {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    // No peers at all: anything that reached the network would be Unreachable.
    let mut client = RaftPeers::new(endpoint, vec![], Duration::from_secs(1)).group(GROUP).new_client(2, &EmptyNode {}).await;
    let log_id = |i| LogId { leader_id: CommittedLeaderId::new(5, 1), index: i };
    let entry = |i, bytes: usize| Entry { log_id: log_id(i), payload: EntryPayload::Normal(RaftRequest::new(vec![7; bytes])) };
    let with = |entries| AppendEntriesRequest { entries, ..heartbeat_from(1) };

    let many: Vec<Entry> = (1..=MAX_APPEND_ENTRIES as u64 + 1).map(|i| Entry { log_id: log_id(i), payload: EntryPayload::Blank }).collect();
    match client.append_entries(with(many), option()).await {
        Err(RPCError::PayloadTooLarge(p)) => assert_eq!(p.entries_hint(), MAX_APPEND_ENTRIES as u64),
        other => panic!("{other:?}"),
    }
    let big: Vec<Entry> = (1..=3).map(|i| entry(i, 3 << 20)).collect();
    match client.append_entries(with(big), option()).await {
        Err(RPCError::PayloadTooLarge(p)) => assert_eq!(p.entries_hint(), 1),
        other => panic!("{other:?}"),
    }
    for bytes in [MAX_FRAME_LEN - 16, MAX_PAYLOAD_BYTES + 1] {
        match client.append_entries(with(vec![entry(1, bytes)]), option()).await {
            Err(err @ RPCError::Network(_)) => assert!(err.to_string().contains("does not fit in a frame"), "{err}"),
            other => panic!("{other:?}"),
        }
    }
    // Entries that fit go to the network (and find no peer).
    let err = client.append_entries(with(vec![entry(1, 1 << 20)]), option()).await.unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "{err}");
}

#[test]
fn big_snapshot_chunks_are_split_at_consecutive_offsets() {
    let meta = SnapshotMeta { last_log_id: None, last_membership: Default::default(), snapshot_id: "s".into() };
    let vote = Vote { leader_id: LeaderId::new(5, 1), committed: true };
    let req = |data: Vec<u8>, done| InstallSnapshotRequest { vote, meta: meta.clone(), offset: 100, data, done };

    let small = snapshot_pieces(req(vec![1; 4], true), 4);
    assert_eq!(small, vec![req(vec![1; 4], true)]);
    let data: Vec<u8> = (0..10).collect();
    for done in [true, false] {
        let pieces = snapshot_pieces(req(data.clone(), done), 4);
        assert_eq!(pieces.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![100, 104, 108]);
        assert_eq!(pieces.iter().map(|p| p.done).collect::<Vec<_>>(), vec![false, false, done]);
        assert_eq!(pieces.iter().flat_map(|p| p.data.clone()).collect::<Vec<_>>(), data);
        assert!(pieces.iter().all(|p| p.meta == meta && p.vote == vote));
    }
    // A piece with its vote and metadata fits in a frame, and encodes as the wire says.
    let piece = req(vec![0; SNAPSHOT_CHUNK_BYTES as usize], true);
    let frame = encode_raft_request(GROUP, RaftRpcKind::InstallSnapshot, |w| piece.encode_into(w)).expect("fits");
    let m = Message::RaftRequest { group: GROUP, rpc: RaftRpcKind::InstallSnapshot, body: piece.encode() };
    assert_eq!(frame, m.encode().unwrap());
}

#[test]
fn error_text_is_cut_at_a_character_boundary() {
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Text(String);
    let short = error_text(&Text("short".into()));
    assert_eq!(short, "short");
    // 'é' is two bytes: 1023 bytes of 'x' then 'é' must not be cut inside it.
    let long = error_text(&Text(format!("{}é and more", "x".repeat(MAX_RAFT_ERROR_LEN - 1))));
    assert_eq!(long.len(), MAX_RAFT_ERROR_LEN - 1);
    let reply = Message::RaftReply { group: 1, rpc: RaftRpcKind::Vote, result: Err(long) };
    assert!(reply.encode().is_ok());
}
