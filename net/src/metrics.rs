//! Node metrics, kept and exposed by the `prometheus` client library (the text exposition
//! format 0.0.4, which the Prometheus server and `promtool check metrics` read).
//!
//! `GET /metrics` (any path answers the same) on the node's metrics address returns every
//! family of the node's registry. Every sample carries the constant label `node`; the others
//! are bounded: `shard` (a hosted shard, or `cross` for the coordinator), `replica`, `reason`
//! (a fixed list each) and `role`; never a label per client or per transaction.
//!
//! - Throughput and progress per shard: committed transactions and certified blocks (their
//!   rates are the shard's TPS), executed transactions, height, mempool depth, leader changes,
//!   snapshot installs, the Raft commit index.
//! - Latency histograms: proposal to certificate per block, applying a block (verify, execute,
//!   persist), each admission signature check, each Raft log append, each block's RocksDB write
//!   batch (synced).
//! - Each hosted replica, read at scrape time: height, certified height, Raft term, role,
//!   last log index (what it holds), applied index, and the store's size on disk.
//! - Clients: connections, admitted and refused batches by reason, bad frames, dropped frames,
//!   disconnections by reason, connections refused on arrival by reason, bytes queued for
//!   clients (a node total and a histogram of each queue's depth when a frame joins it),
//!   transactions waiting for their signature checks, rejected signatures, bans.

use crate::wire::{RaftRole, Refusal, ReplicaStatus};
use parking_lot::Mutex;
use prometheus::{Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bounds (seconds) of the latency histograms' buckets: 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: [f64; 14] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];
/// Upper bounds (bytes) of the client queue histogram's buckets: 1 KiB to 8 MiB (the default cap).
pub const QUEUE_BUCKETS: [f64; 8] = [1024.0, 8192.0, 65536.0, 262144.0, 1048576.0, 2097152.0, 4194304.0, 8388608.0];

/// One hosted shard's figures (`shard = "cross"` for the coordinator).
#[derive(Clone, Debug)]
pub struct ShardMetrics {
    /// Transactions in certified blocks (leader).
    pub committed: IntCounter,
    /// Certified blocks (leader).
    pub blocks: IntCounter,
    /// Transactions executed (every replica, leaders too).
    pub executed: IntCounter,
    /// Highest block executed or certified.
    pub height: IntGauge,
    /// Transactions waiting in the mempool (leader).
    pub mempool: IntGauge,
    /// Times this replica saw its group's leader change to another node.
    pub leader_changes: IntCounter,
    /// Snapshots installed on this replica (it was too far behind for the log).
    pub snapshot_installs: IntCounter,
    /// The Raft log index this replica knows to be committed.
    pub commit_index: IntGauge,
    certificate_latency: Histogram,
    apply_seconds: Histogram,
}

impl ShardMetrics {
    /// A block certified by this leader.
    pub fn certified(&self, height: u64, txs: u64, latency: Duration) {
        self.committed.inc_by(txs);
        self.blocks.inc();
        self.raise_height(height);
        self.certificate_latency.observe(latency.as_secs_f64());
    }

    /// A block applied by this replica (verified, executed and persisted in `took`).
    pub fn executed(&self, height: u64, txs: u64, took: Duration) {
        self.executed.inc_by(txs);
        self.raise_height(height);
        self.apply_seconds.observe(took.as_secs_f64());
    }

    /// Raises the height gauge to `height` if it is below.
    pub fn raise_height(&self, height: u64) {
        let h = i64::try_from(height).unwrap_or(i64::MAX);
        if h > self.height.get() {
            self.height.set(h);
        }
    }
}

/// Why a node closed a client connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disconnect {
    /// It sent nothing for `limits.idle_s` with nothing pending.
    Idle,
    /// It let its queue of answers pass `limits.client_queue_bytes`.
    NotReading,
    /// It sent `limits.bad_batches` batches with bad signatures.
    Forged,
    /// It sent a malformed, oversized, truncated, too slow or forbidden frame.
    BadFrame,
}

const DISCONNECTS: [(Disconnect, &str); 4] = [
    (Disconnect::Idle, "idle"),
    (Disconnect::NotReading, "not_reading"),
    (Disconnect::Forged, "forged"),
    (Disconnect::BadFrame, "bad_frame"),
];

const REFUSALS: [(Refusal, &str); Refusal::ALL.len()] = [
    (Refusal::Throttled, "throttled"),
    (Refusal::QueueFull, "queue_full"),
    (Refusal::NotLeader, "not_leader"),
    (Refusal::WrongChain, "wrong_chain"),
    (Refusal::WrongShard, "wrong_shard"),
    (Refusal::ShuttingDown, "shutting_down"),
    (Refusal::BadSignature, "bad_signature"),
    (Refusal::UnknownSigner, "unknown_signer"),
];

const ROLES: [(RaftRole, &str); 4] =
    [(RaftRole::Leader, "leader"), (RaftRole::Follower, "follower"), (RaftRole::Candidate, "candidate"), (RaftRole::Learner, "learner")];

/// The per-shard families, from which each hosted shard takes its labelled children.
#[derive(Debug)]
struct ShardFamilies {
    committed: IntCounterVec,
    blocks: IntCounterVec,
    executed: IntCounterVec,
    height: IntGaugeVec,
    mempool: IntGaugeVec,
    leader_changes: IntCounterVec,
    snapshot_installs: IntCounterVec,
    commit_index: IntGaugeVec,
    certificate_latency: HistogramVec,
    apply_seconds: HistogramVec,
}

/// The per-replica families, set from the replicas' statuses at each scrape.
#[derive(Debug)]
struct ReplicaFamilies {
    height: IntGaugeVec,
    certified: IntGaugeVec,
    term: IntGaugeVec,
    role: IntGaugeVec,
    log_index: IntGaugeVec,
    applied_index: IntGaugeVec,
}

/// A node's figures: handles into one registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    families: ShardFamilies,
    replicas: ReplicaFamilies,
    shards: Mutex<BTreeMap<u32, ShardMetrics>>,
    /// Transactions admitted to a mempool.
    pub accepted: IntCounter,
    refused: IntCounterVec,
    /// Open client connections.
    pub clients: IntGauge,
    /// Bad or forbidden frames (each closed its connection).
    pub bad_frames: IntCounter,
    /// Frames to clients dropped because the client did not read.
    pub receipts_dropped: IntCounter,
    /// Transactions waiting for their signatures to be checked before admission.
    pub admission_txs: IntGauge,
    /// Transactions in batches refused for a bad signature.
    pub rejected_signatures: IntCounter,
    /// Source addresses refused for a while after sending forgeries.
    pub bans: IntCounter,
    refused_connections: IntCounterVec,
    disconnects: IntCounterVec,
    /// Client connections closed for sending nothing for `limits.idle_s` with nothing pending.
    pub idle_closed: IntCounter,
    /// Bytes queued to every client connection together.
    pub client_queue_bytes: IntGauge,
    client_queue_depth: Histogram,
    /// Each admission turn's signature check (all shares of the turn, side by side).
    pub verify_seconds: Histogram,
    /// Each Raft log append (one write batch, synced).
    pub raft_append_seconds: Histogram,
    /// Each block's write batch in the store (state, block, applied point; synced).
    pub store_write_seconds: Histogram,
    /// The store's size on disk, read at scrape time.
    store_bytes: IntGauge,
}

fn counters(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric name and labels");
    r.register(Box::new(v.clone())).expect("each metric is registered once");
    v
}

fn gauges(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let v = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric name and labels");
    r.register(Box::new(v.clone())).expect("each metric is registered once");
    v
}

fn histograms(r: &Registry, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    let v = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels).expect("a valid metric name and labels");
    r.register(Box::new(v.clone())).expect("each metric is registered once");
    v
}

impl Metrics {
    /// Empty metrics for node `node`.
    pub fn new(node: u32) -> Metrics {
        let labels = [("node".to_string(), node.to_string())].into_iter().collect();
        let r = Registry::new_custom(None, Some(labels)).expect("a valid constant label");
        let s = &["shard"];
        let families = ShardFamilies {
            committed: counters(&r, "occam_committed_txs_total", "Transactions in certified blocks, counted by the shard leader.", s),
            blocks: counters(&r, "occam_certified_blocks_total", "Blocks certified by the shard leader.", s),
            executed: counters(&r, "occam_executed_txs_total", "Transactions in blocks this replica applied.", s),
            height: gauges(&r, "occam_block_height", "Highest block executed or certified here.", s),
            mempool: gauges(&r, "occam_mempool_txs", "Transactions waiting in the leader's mempool.", s),
            leader_changes: counters(&r, "occam_leader_changes_total", "Times this replica saw its shard's leader change.", s),
            snapshot_installs: counters(&r, "occam_snapshot_installs_total", "Snapshots installed on this replica.", s),
            commit_index: gauges(&r, "occam_raft_commit_index", "The Raft log index this replica knows to be committed.", s),
            certificate_latency: histograms(
                &r,
                "occam_certificate_latency_seconds",
                "From a block's proposal to its certificate, per block.",
                s,
                &LATENCY_BUCKETS,
            ),
            apply_seconds: histograms(
                &r,
                "occam_block_apply_seconds",
                "Applying a block: verifying, executing and persisting it, per block.",
                s,
                &LATENCY_BUCKETS,
            ),
        };
        let sr = &["shard", "replica"];
        let replicas = ReplicaFamilies {
            height: gauges(&r, "occam_replica_height", "Each hosted replica's executed height.", sr),
            certified: gauges(&r, "occam_replica_certified_height", "The highest height each hosted replica holds a certificate for.", sr),
            term: gauges(&r, "occam_replica_term", "Each hosted replica's Raft term.", sr),
            role: gauges(
                &r,
                "occam_replica_role",
                "1 for each hosted replica's Raft role (leader, follower, candidate, learner), 0 for the others.",
                &["shard", "replica", "role"],
            ),
            log_index: gauges(&r, "occam_replica_log_index", "Each hosted replica's last Raft log index.", sr),
            applied_index: gauges(&r, "occam_replica_applied_index", "The last Raft log index each hosted replica applied.", sr),
        };
        let one_counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("a valid metric name");
            r.register(Box::new(c.clone())).expect("each metric is registered once");
            c
        };
        let one_gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("a valid metric name");
            r.register(Box::new(g.clone())).expect("each metric is registered once");
            g
        };
        let one_histogram = |name: &str, help: &str, buckets: &[f64]| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())).expect("a valid metric name");
            r.register(Box::new(h.clone())).expect("each metric is registered once");
            h
        };
        let refused = counters(&r, "occam_refused_batches_total", "Client batches refused, by reason.", &["reason"]);
        let refused_connections = counters(
            &r,
            "occam_refused_connections_total",
            "Client connections closed on arrival: the address is banned, or too many connections.",
            &["reason"],
        );
        let disconnects = counters(&r, "occam_client_disconnects_total", "Client connections the node closed, by reason.", &["reason"]);
        // Every labelled child exists from the start, so a rate over it is defined at once.
        for (_, name) in REFUSALS {
            refused.with_label_values(&[name]);
        }
        for name in ["banned", "busy"] {
            refused_connections.with_label_values(&[name]);
        }
        for (_, name) in DISCONNECTS {
            disconnects.with_label_values(&[name]);
        }
        Metrics {
            accepted: one_counter("occam_accepted_txs_total", "Transactions admitted to a mempool."),
            clients: one_gauge("occam_client_connections", "Open client connections."),
            bad_frames: one_counter("occam_bad_frames_total", "Bad or forbidden frames; each closed its connection."),
            receipts_dropped: one_counter("occam_receipts_dropped_total", "Frames to clients dropped because the client did not read."),
            admission_txs: one_gauge("occam_admission_txs", "Transactions waiting for their signatures to be checked before admission."),
            rejected_signatures: one_counter(
                "occam_rejected_signatures_total",
                "Transactions in client batches refused for a bad signature.",
            ),
            bans: one_counter("occam_bans_total", "Client source addresses refused for a while after sending batches with bad signatures."),
            idle_closed: disconnects.with_label_values(&["idle"]),
            client_queue_bytes: one_gauge("occam_client_queue_bytes", "Bytes queued to all client connections together."),
            client_queue_depth: one_histogram(
                "occam_client_queue_depth_bytes",
                "Bytes queued to one client connection when a frame joins its queue.",
                &QUEUE_BUCKETS,
            ),
            verify_seconds: one_histogram(
                "occam_admission_verify_seconds",
                "Checking the signatures of one admission turn (its shares side by side).",
                &LATENCY_BUCKETS,
            ),
            raft_append_seconds: one_histogram(
                "occam_raft_append_seconds",
                "Appending entries to a Raft log, per append.",
                &LATENCY_BUCKETS,
            ),
            store_write_seconds: one_histogram(
                "occam_store_write_seconds",
                "Writing one applied block's batch to the store (synced).",
                &LATENCY_BUCKETS,
            ),
            store_bytes: one_gauge("occam_store_disk_bytes", "Bytes the node's store occupies on disk (SST files and write-ahead log)."),
            refused,
            refused_connections,
            disconnects,
            families,
            replicas,
            shards: Mutex::new(BTreeMap::new()),
            registry: r,
        }
    }

    /// A client connection refused: its address is `banned`, or the node (or the address)
    /// holds as many connections as it may.
    pub fn connection_refused(&self, banned: bool) {
        self.refused_connections.with_label_values(&[if banned { "banned" } else { "busy" }]).inc();
    }

    /// A client connection closed by the node for `why`.
    pub fn disconnected(&self, why: Disconnect) {
        let name = DISCONNECTS.iter().find(|(d, _)| *d == why).map_or("other", |(_, n)| *n);
        self.disconnects.with_label_values(&[name]).inc();
    }

    /// Client connections closed for `why` so far.
    pub fn disconnect_count(&self, why: Disconnect) -> u64 {
        let name = DISCONNECTS.iter().find(|(d, _)| *d == why).map_or("other", |(_, n)| *n);
        self.disconnects.with_label_values(&[name]).get()
    }

    /// Where a client connection's frame queue reports its bytes.
    pub fn client_queue(&self) -> crate::transport::QueueObserver {
        crate::transport::QueueObserver { total: self.client_queue_bytes.clone(), depth: self.client_queue_depth.clone() }
    }

    /// The figures of `shard` (created on first use; `u32::MAX` is the coordinator, `cross`).
    pub fn shard(&self, shard: u32) -> Arc<ShardMetrics> {
        let mut shards = self.shards.lock();
        let m = shards.entry(shard).or_insert_with(|| {
            let label = if shard == u32::MAX { "cross".to_string() } else { shard.to_string() };
            let l = &[label.as_str()];
            let f = &self.families;
            ShardMetrics {
                committed: f.committed.with_label_values(l),
                blocks: f.blocks.with_label_values(l),
                executed: f.executed.with_label_values(l),
                height: f.height.with_label_values(l),
                mempool: f.mempool.with_label_values(l),
                leader_changes: f.leader_changes.with_label_values(l),
                snapshot_installs: f.snapshot_installs.with_label_values(l),
                commit_index: f.commit_index.with_label_values(l),
                certificate_latency: f.certificate_latency.with_label_values(l),
                apply_seconds: f.apply_seconds.with_label_values(l),
            }
        });
        Arc::new(m.clone())
    }

    /// A batch refused for `reason`.
    pub fn refused(&self, reason: Refusal) {
        self.refused.with_label_values(&[refusal_name(reason)]).inc();
    }

    /// Batches refused for `reason` so far.
    pub fn refused_count(&self, reason: Refusal) -> u64 {
        self.refused.with_label_values(&[refusal_name(reason)]).get()
    }

    /// The text exposition of every family, with the replicas' figures from `status` and the
    /// store's size `store_bytes` as of now.
    pub fn render(&self, status: &[ReplicaStatus], store_bytes: Option<u64>) -> String {
        let r = &self.replicas;
        for s in status {
            let (shard, replica) = (s.shard.to_string(), s.replica.to_string());
            let l = &[shard.as_str(), replica.as_str()];
            let set = |v: &IntGaugeVec, x: u64| v.with_label_values(l).set(i64::try_from(x).unwrap_or(i64::MAX));
            set(&r.height, s.height);
            set(&r.certified, s.certified);
            set(&r.term, s.term);
            set(&r.log_index, s.log_index);
            set(&r.applied_index, s.applied_index);
            for (role, name) in ROLES {
                r.role.with_label_values(&[shard.as_str(), replica.as_str(), name]).set(i64::from(s.role == role));
            }
        }
        if let Some(b) = store_bytes {
            self.store_bytes.set(i64::try_from(b).unwrap_or(i64::MAX));
        }
        let mut out = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("the text encoder writes to memory");
        String::from_utf8(out).expect("the text exposition is UTF-8")
    }
}

fn refusal_name(reason: Refusal) -> &'static str {
    REFUSALS.iter().find(|(r, _)| *r == reason).map_or("other", |(_, n)| *n)
}

/// What a scrape reads besides the counters: the replicas' statuses and the store's size.
pub type ScrapeState = Arc<dyn Fn() -> (Vec<ReplicaStatus>, Option<u64>) + Send + Sync>;

/// Serves `metrics` over plain HTTP/1.1 on `addr`; returns the bound address.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>, state: ScrapeState) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            // An accept error (out of descriptors, say) is transient: wait and go on.
            let Ok((mut stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let metrics = metrics.clone();
            let state = state.clone();
            tokio::spawn(async move {
                // Read (and ignore) the request head, bounded.
                let mut buf = [0u8; 2048];
                let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
                // The statuses read Raft's metrics and the store: off the runtime's threads.
                let Ok(body) = tokio::task::spawn_blocking(move || {
                    let (status, bytes) = state();
                    metrics.render(&status, bytes)
                })
                .await
                else {
                    return;
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    prometheus::TEXT_FORMAT,
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::observed_frame_queue;

    #[test]
    fn histograms_are_histograms_and_labels_are_bounded() {
        let m = Metrics::new(3);
        let s = m.shard(1);
        s.certified(7, 100, Duration::from_millis(30));
        s.executed(7, 100, Duration::from_millis(4));
        m.shard(u32::MAX).certified(2, 5, Duration::from_secs(20));
        m.refused(Refusal::Throttled);
        m.disconnected(Disconnect::NotReading);
        let status = ReplicaStatus { shard: 1, replica: 2, height: 7, term: 4, role: RaftRole::Leader, ..Default::default() };
        let text = m.render(&[status], Some(4096));
        for line in [
            "# TYPE occam_certificate_latency_seconds histogram",
            "occam_certificate_latency_seconds_bucket{shard=\"1\",node=\"3\",le=\"0.05\"} 1",
            "occam_certificate_latency_seconds_bucket{shard=\"1\",node=\"3\",le=\"0.02\"} 0",
            // Past the last bound: only +Inf holds it.
            "occam_certificate_latency_seconds_bucket{shard=\"cross\",node=\"3\",le=\"+Inf\"} 1",
            "occam_certificate_latency_seconds_count{shard=\"cross\",node=\"3\"} 1",
            "occam_committed_txs_total{shard=\"1\",node=\"3\"} 100",
            "occam_block_height{shard=\"1\",node=\"3\"} 7",
            "occam_refused_batches_total{reason=\"throttled\",node=\"3\"} 1",
            "occam_refused_batches_total{reason=\"bad_signature\",node=\"3\"} 0",
            "occam_client_disconnects_total{reason=\"not_reading\",node=\"3\"} 1",
            // The exporter sorts a sample's own labels by name; the node's comes last.
            "occam_replica_role{replica=\"2\",role=\"leader\",shard=\"1\",node=\"3\"} 1",
            "occam_replica_role{replica=\"2\",role=\"follower\",shard=\"1\",node=\"3\"} 0",
            "occam_replica_term{replica=\"2\",shard=\"1\",node=\"3\"} 4",
            "occam_store_disk_bytes{node=\"3\"} 4096",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
        }
        // Every sample's labels come from a fixed set.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let labels = l.split_once('{').and_then(|(_, r)| r.split_once('}')).map_or("", |(ls, _)| ls);
            for pair in labels.split(',').filter(|p| !p.is_empty()) {
                let name = pair.split_once('=').unwrap().0;
                assert!(["node", "shard", "replica", "reason", "role", "le"].contains(&name), "label {name} in {l}");
            }
        }
    }

    #[test]
    fn queued_client_bytes_leave_the_total_with_their_queue() {
        let m = Metrics::new(0);
        let (q, rx) = observed_frame_queue(8, 1 << 20, Some(m.client_queue()));
        assert!(q.try_send(vec![0; 1000]) && q.try_send(vec![0; 500]));
        assert_eq!(m.client_queue_bytes.get(), 1500);
        // A connection gone with its frames unwritten.
        drop(rx);
        assert_eq!(m.client_queue_bytes.get(), 0);
        assert!(!q.try_send(vec![0; 10]), "a queue without its receiver refuses");
        assert_eq!(m.client_queue_bytes.get(), 0);
        assert!(m.render(&[], None).contains("occam_client_queue_depth_bytes_count{node=\"0\"} 2"));
    }
}
