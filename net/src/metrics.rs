//! Node metrics, served in the Prometheus text format.
//!
//! `GET /metrics` (any path answers the same) on the node's metrics address returns counters
//! and gauges: committed transactions and blocks (their rate is the shard's TPS), the block
//! height and state root position of each hosted replica, mempool depth, certificate latency
//! as a histogram, admitted transactions, refused batches by reason, client connections, bad
//! frames, dropped receipts, and what hostile clients cost: transactions waiting for their
//! signature checks, rejected signatures, bans and refused connections.

use crate::wire::{Refusal, ReplicaStatus};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bounds (seconds) of the certificate latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0];

/// One hosted shard's figures.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    /// Transactions in certified blocks (leader).
    pub committed: AtomicU64,
    /// Certified blocks (leader).
    pub blocks: AtomicU64,
    /// Transactions executed (followers).
    pub executed: AtomicU64,
    /// Highest block executed or certified.
    pub height: AtomicU64,
    /// Transactions waiting in the mempool (leader).
    pub mempool: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
}

impl ShardMetrics {
    /// A block certified by this leader.
    pub fn certified(&self, height: u64, txs: u64, latency: Duration) {
        self.committed.fetch_add(txs, Ordering::Relaxed);
        self.blocks.fetch_add(1, Ordering::Relaxed);
        self.height.fetch_max(height, Ordering::Relaxed);
        let s = latency.as_secs_f64();
        for (b, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            if s <= bound {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_sum_us.fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    /// A block executed by this follower.
    pub fn executed(&self, height: u64, txs: u64, _took: Duration) {
        self.executed.fetch_add(txs, Ordering::Relaxed);
        self.height.fetch_max(height, Ordering::Relaxed);
    }
}

/// A node's figures.
#[derive(Debug)]
pub struct Metrics {
    node: u32,
    shards: Mutex<BTreeMap<u32, Arc<ShardMetrics>>>,
    /// Transactions admitted to a mempool.
    pub accepted: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
    /// Open client connections.
    pub clients: AtomicU64,
    /// Connections closed for a bad or forbidden frame.
    pub bad_frames: AtomicU64,
    /// Frames to clients dropped because the client did not read.
    pub receipts_dropped: AtomicU64,
    /// Transactions waiting for their signatures to be checked before admission.
    pub admission_txs: AtomicU64,
    /// Transactions in batches refused for a bad signature.
    pub rejected_signatures: AtomicU64,
    /// Source addresses refused for a while after sending forgeries.
    pub bans: AtomicU64,
    connections_refused_banned: AtomicU64,
    connections_refused_busy: AtomicU64,
    /// Client connections closed for sending nothing for `limits.idle_s` with nothing pending.
    pub idle_closed: AtomicU64,
}

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

impl Metrics {
    /// Empty metrics for node `node`.
    pub fn new(node: u32) -> Metrics {
        Metrics {
            node,
            shards: Mutex::new(BTreeMap::new()),
            accepted: AtomicU64::new(0),
            refused: Default::default(),
            clients: AtomicU64::new(0),
            bad_frames: AtomicU64::new(0),
            receipts_dropped: AtomicU64::new(0),
            admission_txs: AtomicU64::new(0),
            rejected_signatures: AtomicU64::new(0),
            bans: AtomicU64::new(0),
            connections_refused_banned: AtomicU64::new(0),
            connections_refused_busy: AtomicU64::new(0),
            idle_closed: AtomicU64::new(0),
        }
    }

    /// A client connection refused: its address is `banned`, or the node (or the address)
    /// holds as many connections as it may.
    pub fn connection_refused(&self, banned: bool) {
        let c = if banned { &self.connections_refused_banned } else { &self.connections_refused_busy };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The figures of `shard` (created on first use).
    pub fn shard(&self, shard: u32) -> Arc<ShardMetrics> {
        self.shards.lock().entry(shard).or_default().clone()
    }

    /// A batch refused for `reason`.
    pub fn refused(&self, reason: Refusal) {
        self.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Batches refused for `reason` so far.
    pub fn refused_count(&self, reason: Refusal) -> u64 {
        self.refused[reason as usize].load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self, status: &[ReplicaStatus]) -> String {
        let node = self.node;
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{{node=\"{node}\"{labels}}} {value}");
            }
        };
        let shards: Vec<(u32, Arc<ShardMetrics>)> = self.shards.lock().iter().map(|(k, v)| (*k, v.clone())).collect();
        // The coordinator's figures are filed under shard `u32::MAX`: label it `cross`.
        let label = |s: u32| if s == u32::MAX { "cross".to_string() } else { s.to_string() };
        let per_shard = |f: &dyn Fn(&ShardMetrics) -> String| -> Vec<(String, String)> {
            shards.iter().map(|(s, m)| (format!(",shard=\"{}\"", label(*s)), f(m))).collect()
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let count = |a: &AtomicU64| load(a).to_string();
        // A family of one sample, unlabelled.
        let one = |a: &AtomicU64| vec![(String::new(), count(a))];
        family(
            "occam_committed_txs_total",
            "counter",
            "Transactions in certified blocks, counted by the shard leader.",
            per_shard(&|m| count(&m.committed)),
        );
        family("occam_certified_blocks_total", "counter", "Blocks certified by the shard leader.", per_shard(&|m| count(&m.blocks)));
        family("occam_executed_txs_total", "counter", "Transactions executed by a following replica.", per_shard(&|m| count(&m.executed)));
        family("occam_block_height", "gauge", "Highest block executed or certified here.", per_shard(&|m| count(&m.height)));
        family("occam_mempool_txs", "gauge", "Transactions waiting in the leader's mempool.", per_shard(&|m| count(&m.mempool)));
        let mut hist = Vec::new();
        for (s, m) in &shards {
            for (b, bound) in m.latency_buckets.iter().zip(LATENCY_BUCKETS) {
                hist.push((format!(",shard=\"{}\",le=\"{bound}\"", label(*s)), load(b).to_string()));
            }
            hist.push((format!(",shard=\"{}\",le=\"+Inf\"", label(*s)), load(&m.latency_count).to_string()));
        }
        family("occam_certificate_latency_seconds_bucket", "counter", "Proposal to certificate, per block (histogram buckets).", hist);
        family(
            "occam_certificate_latency_seconds_sum",
            "counter",
            "Sum of proposal-to-certificate latencies.",
            per_shard(&|m| (load(&m.latency_sum_us) as f64 / 1e6).to_string()),
        );
        family("occam_certificate_latency_seconds_count", "counter", "Certified blocks timed.", per_shard(&|m| count(&m.latency_count)));
        family("occam_accepted_txs_total", "counter", "Transactions admitted to a mempool.", one(&self.accepted));
        family(
            "occam_refused_batches_total",
            "counter",
            "Client batches refused, by reason.",
            REFUSALS.iter().map(|(r, name)| (format!(",reason=\"{name}\""), self.refused_count(*r).to_string())).collect(),
        );
        family("occam_client_connections", "gauge", "Open client connections.", one(&self.clients));
        family("occam_bad_frames_total", "counter", "Connections closed for a bad or forbidden frame.", one(&self.bad_frames));
        family(
            "occam_receipts_dropped_total",
            "counter",
            "Frames to clients dropped because the client did not read.",
            one(&self.receipts_dropped),
        );
        family(
            "occam_admission_txs",
            "gauge",
            "Transactions waiting for their signatures to be checked before admission.",
            one(&self.admission_txs),
        );
        family(
            "occam_rejected_signatures_total",
            "counter",
            "Transactions in client batches refused for a bad signature.",
            one(&self.rejected_signatures),
        );
        family(
            "occam_bans_total",
            "counter",
            "Client source addresses refused for a while after sending batches with bad signatures.",
            one(&self.bans),
        );
        family(
            "occam_refused_connections_total",
            "counter",
            "Client connections closed on arrival: the address is banned, or too many connections.",
            vec![
                (",reason=\"banned\"".to_string(), load(&self.connections_refused_banned).to_string()),
                (",reason=\"busy\"".to_string(), load(&self.connections_refused_busy).to_string()),
            ],
        );
        family(
            "occam_idle_closed_total",
            "counter",
            "Client connections closed for sending nothing for limits.idle_s with nothing pending.",
            one(&self.idle_closed),
        );
        let per_replica = |f: &dyn Fn(&crate::wire::ReplicaStatus) -> u64| -> Vec<(String, String)> {
            status.iter().map(|r| (format!(",shard=\"{}\",replica=\"{}\"", r.shard, r.replica), f(r).to_string())).collect()
        };
        family("occam_replica_height", "gauge", "Each hosted replica's executed height.", per_replica(&|r| r.height));
        family(
            "occam_replica_certified_height",
            "gauge",
            "The highest height each hosted replica holds a certificate for.",
            per_replica(&|r| r.certified),
        );
        family("occam_replica_term", "gauge", "Each hosted replica's Raft term.", per_replica(&|r| r.term));
        family(
            "occam_replica_leader",
            "gauge",
            "1 if the hosted replica leads its shard's Raft group, else 0.",
            per_replica(&|r| u64::from(r.role == crate::wire::RaftRole::Leader)),
        );
        family(
            "occam_replica_voter",
            "gauge",
            "1 if the hosted replica votes in its shard's Raft group (and signs its certificates), 0 while it is a learner.",
            per_replica(&|r| u64::from(r.role != crate::wire::RaftRole::Learner)),
        );
        out
    }
}

/// Serves `metrics` over plain HTTP/1.1 on `addr`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    status: Arc<dyn Fn() -> Vec<ReplicaStatus> + Send + Sync>,
) -> std::io::Result<SocketAddr> {
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
            let status = status.clone();
            tokio::spawn(async move {
                // Read (and ignore) the request head, bounded.
                let mut buf = [0u8; 2048];
                let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
                let body = metrics.render(&status());
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
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
