//! `occam load`: drives a running cluster over QUIC and measures commit latency.
//!
//! - **Open loop** (`--rate R`): transaction `i` is due at `start + i / R`, whatever happened
//!   before. Its latency runs from that *intended* time to the receipt of its certified block,
//!   so a stalled cluster (or a client that cannot keep up) shows up as latency and as an
//!   achieved rate below the offered one, not as fewer samples: the measurement is free of
//!   coordinated omission.
//! - **Closed loop** (`--concurrency C`): `C` transactions are outstanding at all times; each
//!   receipt releases the next.
//!
//! Transactions are signed before the clock starts (signing is not the cluster's cost). They
//! go to their shard's leader in batches of up to `--batch`, one batch in flight per shard so
//! each signer's nonces arrive in order; a refused batch (throttled, mempool full) is resent
//! after 2 ms.
//!
//! Leaders move (each shard is a Raft group). A batch refused as `NotLeader` goes to the leader
//! the refusing node names, or, if it names none, to the one the nodes' statuses report. When a
//! node's connection closes (it crashed or stopped), it refuses a batch as `NotLeader` (it
//! stepped down and dropped what it had not proposed), or it leaves a batch unanswered for a
//! second, the client first asks what became of the batches that node had accepted and not
//! answered: a status read by (signer, nonce) to the leader of each signer's shard
//! (`occam cluster tx` asks the same). A transaction found committed counts as committed (and
//! `recovered`: without a receipt, with its block's certificate verified), and a batch found
//! wholly committed is done; the other batches are sent again, first and in order, to the
//! shard's new leader (nonces make a transaction commit at most once: a copy of one that
//! commits meanwhile is refused for its nonce, and asked about at the end). A transaction
//! spent in a block not yet certified, or asked of a node that does not lead, is asked about
//! again, for at most 2 s. At
//! the end of the run every transaction still without a receipt is asked about once more:
//! `lost` counts those no node knows, `pending_at_end` those still in flight. The client dials
//! a closed node again every second, for when it comes back. Every receipt's certificate is verified against the cluster file's validator
//! set (once per block). Latencies go into an HdrHistogram; the report has p50, p90, p99,
//! p99.9 and max, offered and achieved rates, and a per-second series.

use crate::cluster::{fetch_nonces, signers, Fate, LoadTxs};
use crate::distribution::Distribution;
use crate::machine::{Machine, COMMIT};
use anyhow::bail;
use hdrhistogram::Histogram;
use occam_engine::native::signed::{RawSignedBlock, RawSignedTx};
use occam_net::client::{Client, ClientEvent};
use occam_net::config::ClusterConfig;
use occam_net::wire::{Refusal, TxFate, TxStatus, MAX_BATCH_TXS, MAX_TX_QUERY};
use occam_shard::Certificate;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Version tag of the load report.
pub const LOAD_SCHEMA: &str = "occam-load/v1";

/// The most transactions one run signs ahead.
pub const MAX_LOAD_TXS: usize = 5_000_000;

/// What `occam load` does.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LoadConfig {
    /// Open loop: transactions per second offered.
    pub rate: Option<f64>,
    /// Closed loop: transactions outstanding.
    pub concurrency: Option<usize>,
    /// Seconds of load.
    pub duration_s: f64,
    /// Share of transfers whose receiver is on another shard.
    pub cross_shard: f64,
    /// Transactions per batch.
    pub batch: usize,
    /// The workload: the cluster's genesis workload (`cluster.toml` `[genesis]`).
    pub workload: String,
    /// Key distribution (`uniform`, `zipf:THETA`, `hotspot:PROBABILITY:KEYS`, as `occam bench` takes it).
    #[serde(default = "uniform")]
    pub distribution: String,
    /// Closed loop: transactions signed ahead (the run ends early if they run out).
    pub max_txs: usize,
    /// Random seed.
    pub seed: u64,
    /// Seconds to wait for the last receipts after the load stops.
    pub drain_s: f64,
    /// The cluster file, re-read when a node or validator set the run meets is not in the
    /// cluster it started with (a node replaced meanwhile); `None`: never re-read.
    #[serde(skip)]
    pub cluster_file: Option<std::path::PathBuf>,
    /// The signers' secret key file (default: `signers.key` next to the cluster file); must
    /// be absent for bench signers.
    #[serde(skip)]
    pub signer_keys: Option<std::path::PathBuf>,
}

fn uniform() -> String {
    "uniform".into()
}

/// Latency summary in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// One second of the run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Second {
    /// Seconds since the start.
    pub t: u64,
    /// Transactions due in this second (open loop) or released (closed loop).
    pub offered: u64,
    /// Transactions sent.
    pub sent: u64,
    /// Transactions committed (receipts with a certificate).
    pub committed: u64,
    /// Commit latency of this second's commits.
    pub latency: Latency,
}

/// The load report (`--json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LoadReport {
    /// [`LOAD_SCHEMA`].
    pub schema: String,
    /// Commit of the binary.
    pub commit: String,
    /// The machine the client ran on.
    pub machine: Machine,
    /// Nodes, shards and replicas of the cluster.
    pub cluster: ClusterShape,
    /// Settings.
    pub settings: LoadConfig,
    /// Transactions per second offered (scheduled), over the load duration.
    pub offered_tps: f64,
    /// Transactions per second committed, over the load duration (commits after it, while
    /// draining, are not counted here).
    pub achieved_tps: f64,
    /// Transactions scheduled.
    pub scheduled: u64,
    /// Share of the scheduled transactions that cross shards (sent to the coordinator).
    pub cross_share: f64,
    /// Transactions sent.
    pub sent: u64,
    /// Transactions committed with a verified certificate.
    pub committed: u64,
    /// Of those, transactions whose body failed (insufficient funds, say).
    pub failed: u64,
    /// Of those, transactions refused for their nonce.
    pub bad_nonce: u64,
    /// Transactions dropped before a block (bad signature, unknown signer).
    pub dropped: u64,
    /// Transactions sent with no receipt when the run ended that no node knows (a status read
    /// found them nowhere, or no leader answered it).
    pub lost: u64,
    /// Transactions sent with no receipt when the run ended that the cluster still holds
    /// (pending, or committed in a block not yet certified).
    #[serde(default)]
    pub pending_at_end: u64,
    /// Transactions sent again because the node that had accepted them closed its connection,
    /// stopped leading, or did not answer.
    #[serde(default)]
    pub resent: u64,
    /// Transactions committed without a receipt here (their node closed or stepped down before
    /// it sent one), learned by a status read with the block's certificate verified. In
    /// `committed`.
    #[serde(default)]
    pub recovered: u64,
    /// Status reads sent (after a node closed or stepped down, and at the end of the run).
    #[serde(default)]
    pub status_reads: u64,
    /// Connections to nodes that closed during the run.
    #[serde(default)]
    pub disconnects: u64,
    /// Transactions scheduled but never sent (the cluster or the client fell behind).
    pub unsent: u64,
    /// Latency samples that are lower bounds: transactions lost or unsent, recorded with the
    /// time they had waited when the run ended.
    pub censored: u64,
    /// Batches refused, by reason.
    pub refused: HashMap<String, u64>,
    /// Blocks whose certificates were verified.
    pub certificates: u64,
    /// Certificates that did not verify (always 0 on a correct cluster).
    pub bad_certificates: u64,
    /// Largest delay between a transaction's intended time and its sending, ms: a client
    /// that cannot keep its schedule shows here.
    pub max_send_lag_ms: f64,
    /// Commit latency from the intended send time.
    pub latency: Latency,
    /// Per-second series.
    pub series: Vec<Second>,
}

/// The shape of the cluster a report was measured on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClusterShape {
    /// Nodes.
    pub nodes: usize,
    /// Shards.
    pub shards: usize,
    /// Replicas per shard.
    pub replicas: usize,
    /// Transactions per block at most.
    pub block_txs: usize,
}

impl LoadConfig {
    /// Checks the settings.
    pub fn check(&self) -> anyhow::Result<()> {
        match (self.rate, self.concurrency) {
            (Some(r), None) if r > 0.0 && r.is_finite() => {}
            (None, Some(c)) if c > 0 => {}
            (Some(_), Some(_)) => bail!("--rate (open loop) and --concurrency (closed loop) exclude each other"),
            _ => bail!("give --rate R (open loop) or --concurrency C (closed loop), positive"),
        }
        if !(self.duration_s > 0.0 && self.duration_s <= 3600.0) {
            bail!("--duration must be in (0, 3600] seconds");
        }
        if !(self.drain_s >= 0.0 && self.drain_s <= 3600.0) {
            bail!("--drain must be in [0, 3600] seconds");
        }
        if !(0.0..=1.0).contains(&self.cross_shard) {
            bail!("--cross-shard is a share in [0, 1]");
        }
        if self.batch == 0 || self.batch > MAX_BATCH_TXS {
            bail!("--batch must be in 1..={MAX_BATCH_TXS}");
        }
        self.distribution.parse::<Distribution>().map_err(|e| anyhow::anyhow!("--distribution {}: {e}", self.distribution))?;
        Ok(())
    }

    fn planned(&self) -> anyhow::Result<usize> {
        let n = match self.rate {
            Some(r) => (r * self.duration_s).ceil() as usize,
            None => self.max_txs,
        };
        if n == 0 || n > MAX_LOAD_TXS {
            bail!("the run would sign {n} transactions; the limit is {MAX_LOAD_TXS} (lower --rate, --duration or --max-txs)");
        }
        Ok(n)
    }
}

struct Shard {
    queue: VecDeque<(RawSignedTx, Instant)>,
    /// Batches to send again before anything new, in order (their node closed), with the
    /// intended times of those not yet accepted (empty for accepted ones, already awaiting).
    resend: VecDeque<(u64, Vec<RawSignedTx>, Vec<Instant>)>,
    /// The node each accepted, unanswered batch went to, with its transactions.
    accepted: HashMap<u64, (u32, Vec<RawSignedTx>)>,
    /// The node the in-flight batch went to, and when.
    sent_to: u32,
    sent_at: Instant,
    in_flight: Option<(u64, Vec<RawSignedTx>, Vec<Instant>)>,
    retry_at: Option<Instant>,
    next_batch: u64,
    /// Batches whose node closed or stepped down before answering, being asked about: nothing
    /// of the queue is sent until each of their transactions is found committed or unknown.
    resolving: Option<Resolving>,
}

/// A status read in flight: the queue it is for (and when that queue's [`Resolving`] began,
/// so that a late answer to an earlier one is not taken for it), the shard whose leader was
/// asked, and the `(signer, nonce)` of the transactions asked about.
type Query = (usize, Instant, u32, Vec<(u32, u64)>);

/// Batches of one queue whose fate is being asked (see [`Shard::give_up_on`]).
struct Resolving {
    /// The batches, by id, with their transactions (their intended times wait in `awaiting`).
    batches: std::collections::BTreeMap<u64, Vec<RawSignedTx>>,
    /// Transactions without a final answer yet, by (signer, nonce): their batch and index.
    open: HashMap<(u32, u64), (u64, u32)>,
    /// When it began, when to ask (again) about the open ones, and when to give up asking and
    /// send them again.
    began: Instant,
    ask_at: Instant,
    give_up_at: Instant,
}

impl Shard {
    /// `node` is gone or no longer leads this shard: what it accepted and did not answer, and
    /// the batch sent to it without an answer yet (it may have taken it), is asked about
    /// ([`Resolving`]) before anything of the queue goes out again.
    fn give_up_on(&mut self, node: u32, awaiting: &mut HashMap<u64, Vec<Option<Instant>>>) {
        let mut lost: Vec<u64> = self.accepted.iter().filter(|(_, (n, _))| *n == node).map(|(b, _)| *b).collect();
        lost.sort_unstable();
        let now = Instant::now();
        let r = self.resolving.get_or_insert_with(|| Resolving {
            batches: Default::default(),
            open: HashMap::new(),
            began: now,
            ask_at: now,
            give_up_at: now + RESOLVE_PATIENCE,
        });
        for b in lost {
            if let Some((_, txs)) = self.accepted.remove(&b) {
                r.add(b, txs, awaiting);
            }
        }
        // (A batch whose every transaction is answered is simply dropped by `add`.)
        // The batch in flight to it, if sent: the node may have taken it without the answer
        // arriving. Its intended times join `awaiting` now (it counts as accepted from here).
        if self.sent_to == node && self.retry_at.is_none() {
            if let Some((b, txs, due)) = self.in_flight.take() {
                if !due.is_empty() {
                    awaiting.insert(b, due.into_iter().map(Some).collect());
                }
                r.add(b, txs, awaiting);
            }
        }
        if r.batches.is_empty() {
            self.resolving = None;
        } else if self.retry_at.is_some() {
            // A batch waiting to be sent (or sent again after a refusal) is newer than those
            // asked about: it goes after the ones that go again, never before them (its nonces
            // follow theirs).
            if let Some(f) = self.in_flight.take() {
                self.resend.push_back(f);
                self.retry_at = None;
            }
        }
    }

    /// Every transaction being asked about has its answer (or the patience ran out): batches
    /// holding transactions not found committed go again, first and in order; batches wholly
    /// committed are done.
    fn resolved(&mut self, awaiting: &mut HashMap<u64, Vec<Option<Instant>>>) -> u64 {
        let Some(r) = self.resolving.take() else { return 0 };
        let mut resent = 0;
        for (b, txs) in r.batches {
            // A transaction found committed gave up its slot; any other keeps it.
            let waiting = awaiting.get(&b).is_some_and(|slots| slots.iter().any(Option::is_some));
            if waiting {
                resent += txs.len() as u64;
                self.resend.push_back((b, txs, Vec::new()));
            } else {
                awaiting.remove(&b);
            }
        }
        self.resend.make_contiguous().sort_by_key(|(b, _, _)| *b);
        resent
    }
}

impl Resolving {
    /// Adds a batch to ask about: each of its transactions still awaiting a receipt. A batch
    /// with none (all answered meanwhile) is done, and dropped here.
    fn add(&mut self, batch: u64, txs: Vec<RawSignedTx>, awaiting: &mut HashMap<u64, Vec<Option<Instant>>>) {
        let open_before = self.open.len();
        if let Some(slots) = awaiting.get(&batch) {
            for (i, (tx, slot)) in txs.iter().zip(slots).enumerate() {
                if slot.is_some() {
                    self.open.insert((tx.header.signer, tx.header.nonce), (batch, i as u32));
                }
            }
        }
        if self.open.len() == open_before {
            awaiting.remove(&batch);
            return;
        }
        self.batches.insert(batch, txs);
        self.ask_at = Instant::now();
    }
}

/// The shard a queue's batches go to the leader of: its own, or for the last queue (cross-shard
/// transactions) shard 0, whose leader runs the coordinator.
fn queue_shard(queue: usize, queues: usize) -> u32 {
    if queue + 1 < queues {
        queue as u32
    } else {
        0
    }
}

/// Moves what went to a node that no longer leads a queue's shard (accepted and unanswered, or
/// in flight) to the queue's head, in batch order, to go to the leader the client knows now,
/// without waiting for an answer timeout: a leader that steps down drops what it had not
/// proposed, and a dead one answers nothing. Called whenever the client learns of a leader
/// (nodes announce a new one as soon as it is elected). Whatever had committed comes back
/// `BadNonce` and counts as recovered; nothing newer of a queue goes to the new leader before
/// the older batches do, or its nonces would run ahead of theirs.
fn requeue_stale(state: &mut [Shard], client: &Client, awaiting: &mut HashMap<u64, Vec<Option<Instant>>>) {
    let queues = state.len();
    for (q, sh) in state.iter_mut().enumerate() {
        let leader = client.leader(queue_shard(q, queues));
        let mut stale: Vec<u32> = sh
            .accepted
            .iter()
            .filter(|(b, (n, _))| *n != leader && awaiting.get(b).is_some_and(|s| s.iter().any(Option::is_some)))
            .map(|(_, (n, _))| *n)
            .collect();
        if sh.in_flight.is_some() && sh.retry_at.is_none() && sh.sent_to != leader {
            stale.push(sh.sent_to);
        }
        if stale.is_empty() {
            continue;
        }
        stale.sort_unstable();
        stale.dedup();
        for n in stale {
            sh.give_up_on(n, awaiting);
        }
        // A batch waiting to be sent (or sent again after a throttle) is newer than what was
        // just taken back: it goes after them.
        if let Some(f) = sh.in_flight.take() {
            sh.resend.push_back(f);
            sh.retry_at = None;
        }
        sh.resend.make_contiguous().sort_by_key(|(b, _, _)| *b);
    }
}

/// A batch without any answer (accepted or refused) for this long is sent again.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);
/// A status read without an answer (or with answers that are not final: pending, not
/// certified yet, no leader) is sent again after this long.
const RESOLVE_RETRY: Duration = Duration::from_millis(200);
/// Transactions whose fate is still not final after this long are sent again (their nonces
/// keep them from committing twice).
const RESOLVE_PATIENCE: Duration = Duration::from_secs(2);
/// How long the end of a run waits for the status reads of what has no receipt.
const FINAL_READ_WAIT: Duration = Duration::from_secs(10);

/// Sends a batch to the node its route goes to now (the shard's leader as the client knows
/// it, or the coordinator); returns that node, and false if it is known to be down or the send
/// failed (the caller tries again once a status or a refusal names another).
async fn send_batch(
    client: &Client,
    cluster: &ClusterConfig,
    route: Option<u32>,
    batch: u64,
    txs: &[RawSignedTx],
    down: &HashMap<u32, Instant>,
) -> (u32, bool) {
    // Cross-shard batches go to the coordinator, which runs with shard 0's leader.
    let node = client.leader(route.unwrap_or(0));
    if down.contains_key(&node) {
        return (node, false);
    }
    let sent = client.submit_routed(route, batch, RawSignedBlock { chain_id: cluster.chain_id, txs: txs.to_vec() }).await;
    (node, sent.is_ok())
}

/// Verifies a certificate against the cluster file's validator set once per block (`checked`
/// counts good and bad ones); the verdict of the first check stands for every later one.
fn verify_once(client: &Client, seen: &mut HashMap<(u32, u64), bool>, checked: &mut (u64, u64), c: &Certificate) -> bool {
    *seen.entry((c.vote.shard, c.vote.height)).or_insert_with(|| {
        let ok = client.verify_certificate(c).is_ok();
        match ok {
            true => checked.0 += 1,
            false => checked.1 += 1,
        }
        ok
    })
}

/// Runs the load against `cluster` and returns its report.
pub fn run_load(cluster: &ClusterConfig, cfg: &LoadConfig, progress: bool) -> anyhow::Result<LoadReport> {
    cfg.check()?;
    let n = cfg.planned()?;
    let (keys, _) = signers(cluster, cfg.cluster_file.as_deref(), cfg.signer_keys.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let mut client = crate::cluster::connect(cluster).await?;
        if let Some(path) = &cfg.cluster_file {
            client.watch_cluster_file(path.clone());
        }
        // Earlier runs may have used the signers: continue from their nonces.
        let nonces = fetch_nonces(&mut client).await?;
        if progress {
            eprintln!("signing {n} transfers…");
        }
        let dist: Distribution = cfg.distribution.parse().map_err(|e| anyhow::anyhow!("--distribution: {e}"))?;
        let txs = LoadTxs::new(cluster, &cfg.workload, dist, cfg.cross_shard, cfg.seed, Some(nonces))?.signed(n, &keys);
        drive(client, cluster, cfg, txs, progress).await
    })
}

async fn drive(
    mut client: Client,
    cluster: &ClusterConfig,
    cfg: &LoadConfig,
    txs: Vec<(RawSignedTx, Option<u32>)>,
    progress: bool,
) -> anyhow::Result<LoadReport> {
    // One queue per shard, and one for cross-shard transactions (to the coordinator).
    let shards = cluster.shards + 1;
    let queue_of = |route: Option<u32>| route.map_or(shards - 1, |s| s as usize);
    let mut state: Vec<Shard> = (0..shards)
        .map(|_| Shard {
            queue: VecDeque::new(),
            resend: VecDeque::new(),
            accepted: HashMap::new(),
            sent_to: 0,
            sent_at: Instant::now(),
            in_flight: None,
            retry_at: None,
            next_batch: 0,
            resolving: None,
        })
        .collect();
    // Nodes whose connection closed, with when to dial them again; batches resent, by id.
    let mut down: HashMap<u32, Instant> = HashMap::new();
    let mut resent_batches: std::collections::HashSet<u64> = Default::default();
    let (mut resent, mut recovered, mut disconnects, mut status_reads) = (0u64, 0u64, 0u64, 0u64);
    // Status reads in flight, by id: the queue they are for, the shard asked, and the
    // transactions asked about.
    let mut queries: HashMap<u64, Query> = HashMap::new();
    let mut next_query = 0u64;
    // Transactions refused for their nonce when sent again: committed earlier, or lost; asked
    // about at the end of the run.
    let mut unconfirmed: Vec<((u32, u64), Instant)> = Vec::new();
    let mut ask_status_at: Option<Instant> = None;
    let duration = Duration::from_secs_f64(cfg.duration_s);
    let mut pending_txs: VecDeque<(RawSignedTx, Option<u32>)> = txs.into();
    let mut crossing = 0u64;
    // Accepted batches: each transaction's intended time, taken out when its receipt comes.
    let mut awaiting: HashMap<u64, Vec<Option<Instant>>> = HashMap::new();
    let mut committed_in_window = 0u64;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
    let mut series: Vec<(u64, u64, u64, Histogram<u64>)> = Vec::new();
    let mut refused: HashMap<String, u64> = HashMap::new();
    // Each block's certificate is verified once; its verdict counts for every receipt of it.
    let mut seen_blocks: HashMap<(u32, u64), bool> = HashMap::new();
    let (mut committed, mut failed, mut bad_nonce, mut dropped, mut sent, mut scheduled) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut max_lag = Duration::ZERO;
    let mut slots = cfg.concurrency.unwrap_or(0);
    let mut outstanding = 0u64;
    let start = Instant::now();
    let deadline = start + duration;
    let drain_until = deadline + Duration::from_secs_f64(cfg.drain_s);
    let second = |t: Instant| t.saturating_duration_since(start).as_secs();
    let bump = |series: &mut Vec<(u64, u64, u64, Histogram<u64>)>, s: u64| {
        while series.len() as u64 <= s {
            series.push((0, 0, 0, Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")));
        }
    };
    // Verified certificates and bad ones, counted once per block.
    let mut checked = (0u64, 0u64);
    // A committed transaction, intended at `due`, learned of at `at`.
    macro_rules! record_commit {
        ($at:expr, $due:expr) => {{
            let (at, due): (Instant, Instant) = ($at, $due);
            committed += 1;
            if at < deadline {
                committed_in_window += 1;
            }
            let us = at.saturating_duration_since(due).as_micros().max(1) as u64;
            hist.saturating_record(us);
            bump(&mut series, second(at));
            let slot = &mut series[second(at) as usize];
            slot.2 += 1;
            slot.3.saturating_record(us);
        }};
    }
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_report = start;
    loop {
        let now = Instant::now();
        // Schedule: due transactions join their shard's queue. Open loop: every transaction due
        // before the deadline is scheduled, however late the loop wakes.
        if now < deadline || cfg.rate.is_some() {
            match cfg.rate {
                Some(rate) => {
                    while let Some((_, _)) = pending_txs.front() {
                        let due = start + Duration::from_secs_f64(scheduled as f64 / rate);
                        if due > now || due >= deadline {
                            break;
                        }
                        let (tx, route) = pending_txs.pop_front().expect("front exists");
                        crossing += u64::from(route.is_none());
                        state[queue_of(route)].queue.push_back((tx, due));
                        bump(&mut series, second(due));
                        series[second(due) as usize].0 += 1;
                        scheduled += 1;
                    }
                }
                None => {
                    while slots > 0 {
                        let Some((tx, route)) = pending_txs.pop_front() else { break };
                        crossing += u64::from(route.is_none());
                        state[queue_of(route)].queue.push_back((tx, now));
                        bump(&mut series, second(now));
                        series[second(now) as usize].0 += 1;
                        scheduled += 1;
                        slots -= 1;
                    }
                }
            }
        }
        // Dial closed nodes again, and ask the live ones who leads when a leader is unknown.
        for (node, at) in down.iter_mut() {
            if *at <= now {
                *at = now + Duration::from_secs(1);
                if let Ok(Ok(())) = tokio::time::timeout(Duration::from_millis(300), client.reconnect(*node)).await {
                    *at = now;
                }
            }
        }
        down.retain(|_, at| *at != now);
        if ask_status_at.is_some_and(|t| t <= now) {
            ask_status_at = None;
            for node in cluster.live_nodes().into_iter().filter(|n| !down.contains_key(n)) {
                let _ = client.request_status(node).await;
            }
        }
        // Send: one batch in flight per shard; batches of a closed node first.
        for (s, sh) in state.iter_mut().enumerate() {
            let route = (s < shards - 1).then_some(s as u32);
            if let Some(r) = &mut sh.resolving {
                if r.open.is_empty() || now >= r.give_up_at {
                    let (batches, asked, unanswered) = (r.batches.len(), r.batches.values().map(Vec::len).sum::<usize>(), r.open.len());
                    let took = now.duration_since(r.began).as_secs_f64() * 1000.0;
                    let again = sh.resolved(&mut awaiting);
                    resent += again;
                    if progress {
                        eprintln!(
                            "  queue {s}: {batches} batches ({asked} transactions) asked about for {took:.0} ms ({unanswered} without a final answer): {again} transactions sent again"
                        );
                    }
                } else {
                    if r.ask_at <= now {
                        r.ask_at = now + RESOLVE_RETRY;
                        let mut by_shard: std::collections::BTreeMap<u32, Vec<(u32, u64)>> = Default::default();
                        for &id in r.open.keys() {
                            by_shard.entry(client.nonce_shard(id.0)).or_default().push(id);
                        }
                        for (home, ids) in by_shard {
                            let node = client.leader(home);
                            if down.contains_key(&node) {
                                ask_status_at.get_or_insert(now);
                                continue;
                            }
                            for chunk in ids.chunks(MAX_TX_QUERY) {
                                let id = next_query;
                                next_query += 1;
                                if client.query_fates(node, id, chunk.to_vec()).await.is_ok() {
                                    status_reads += 1;
                                    queries.insert(id, (s, r.began, home, chunk.to_vec()));
                                }
                            }
                        }
                    }
                    continue;
                }
            }
            if let Some((batch, txs, _)) = &sh.in_flight {
                // No answer at all for a while: the node may have taken it and died, or never
                // got it. What became of everything it holds of this shard is asked first.
                if sh.retry_at.is_none() && now.saturating_duration_since(sh.sent_at) >= ANSWER_TIMEOUT {
                    let node = sh.sent_to;
                    sh.give_up_on(node, &mut awaiting);
                    ask_status_at.get_or_insert(now);
                    continue;
                }
                if sh.retry_at.is_some_and(|t| t <= now) {
                    sh.retry_at = None;
                    sh.sent_at = now;
                    let (node, ok) = send_batch(&client, cluster, route, *batch, txs, &down).await;
                    sh.sent_to = node;
                    if !ok {
                        // A node that is down: wait for the next status or refusal to name another.
                        sh.retry_at = Some(now + Duration::from_millis(50));
                        ask_status_at.get_or_insert(now + Duration::from_millis(50));
                    }
                }
                continue;
            }
            if let Some((batch, txs, due)) = sh.resend.pop_front() {
                // Receipts come under the same batch id (counted as resent when resolved).
                resent_batches.insert(batch);
                sh.in_flight = Some((batch, txs, due));
                sh.retry_at = Some(now);
                continue;
            }
            if sh.queue.is_empty() {
                continue;
            }
            let k = sh.queue.len().min(cfg.batch);
            let (txs, due): (Vec<RawSignedTx>, Vec<Instant>) = sh.queue.drain(..k).unzip();
            for d in &due {
                max_lag = max_lag.max(now.saturating_duration_since(*d));
            }
            let batch = ((s as u64) << 48) | sh.next_batch;
            sh.next_batch += 1;
            sent += txs.len() as u64;
            outstanding += txs.len() as u64;
            bump(&mut series, second(now));
            series[second(now) as usize].1 += txs.len() as u64;
            sh.in_flight = Some((batch, txs, due));
            sh.retry_at = Some(now);
        }
        if progress && now.duration_since(last_report) >= Duration::from_secs(1) {
            last_report = now;
            eprintln!("  t={:>4}s sent {sent} committed {committed} outstanding {outstanding}", now.duration_since(start).as_secs());
        }
        let finished_schedule = now >= deadline || (pending_txs.is_empty() && state.iter().all(|s| s.queue.is_empty()));
        if finished_schedule && (outstanding == 0 || now >= drain_until) {
            break;
        }
        // Answers.
        tokio::select! {
            _ = tick.tick() => {}
            event = client.next_event() => {
                let Some(event) = event else { bail!("every connection to the cluster closed") };
                match event {
                    ClientEvent::Accepted { batch } => {
                        let s = (batch >> 48) as usize % shards;
                        let sh = &mut state[s];
                        if let Some((b, txs, due)) = sh.in_flight.take_if(|f| f.0 == batch) {
                            // A resent batch's entries already wait (and keep their intended times).
                            if !due.is_empty() {
                                awaiting.insert(b, due.into_iter().map(Some).collect());
                            }
                            sh.accepted.insert(b, (sh.sent_to, txs));
                        }
                    }
                    ClientEvent::Refused { batch, reason, leader } => {
                        *refused.entry(format!("{reason:?}")).or_default() += 1;
                        let s = (batch >> 48) as usize % shards;
                        match reason {
                            Refusal::Throttled | Refusal::QueueFull => state[s].retry_at = Some(Instant::now() + Duration::from_millis(2)),
                            Refusal::NotLeader | Refusal::ShuttingDown => {
                                let node = state[s].sent_to;
                                match leader.filter(|l| !down.contains_key(l)) {
                                    Some(l) => {
                                        client.set_leader(queue_shard(s, shards), l);
                                        // The hint may move other queues too (cross-shard
                                        // batches go to shard 0's leader).
                                        requeue_stale(&mut state, &client, &mut awaiting);
                                    }
                                    _ => {
                                        ask_status_at.get_or_insert(Instant::now() + Duration::from_millis(20));
                                    }
                                }
                                // The refusing node stopped leading: what it accepted and did not
                                // answer may never be proposed (a leader that steps down drops its
                                // pending transactions). It goes again first, in order, then the
                                // refused batch; a copy that finds its nonce spent counts as
                                // recovered.
                                // The refused batch itself was never taken: it simply goes
                                // again, after the ones asked about.
                                let sh = &mut state[s];
                                let refused_batch = sh.in_flight.take_if(|f| f.0 == batch);
                                sh.give_up_on(node, &mut awaiting);
                                if let Some(f) = refused_batch {
                                    sh.resend.push_back(f);
                                    sh.resend.make_contiguous().sort_by_key(|(b, _, _)| *b);
                                }
                                if sh.in_flight.is_none() && sh.resolving.is_none() {
                                    sh.in_flight = sh.resend.pop_front();
                                }
                                sh.retry_at = Some(Instant::now() + Duration::from_millis(20));
                            }
                            other => bail!("the cluster refused a batch: {other:?}"),
                        }
                    }
                    ClientEvent::Status { node, replicas } => {
                        client.learn_leaders(node, &replicas);
                        requeue_stale(&mut state, &client, &mut awaiting);
                    }
                    ClientEvent::Receipts { certificate, entries } => {
                        let at = Instant::now();
                        let verified = certificate.as_ref().is_some_and(|c| verify_once(&client, &mut seen_blocks, &mut checked, c));
                        for e in entries {
                            let Some(due) = awaiting.get_mut(&e.batch).and_then(|v| v.get_mut(e.index as usize)).and_then(Option::take)
                            else {
                                continue;
                            };
                            let sh = &mut state[(e.batch >> 48) as usize % shards];
                            let id = sh.accepted.get(&e.batch).and_then(|(_, txs)| txs.get(e.index as usize)).map(|t| (t.header.signer, t.header.nonce));
                            if awaiting.get(&e.batch).is_some_and(|v| v.iter().all(Option::is_none)) {
                                awaiting.remove(&e.batch);
                                sh.accepted.remove(&e.batch);
                            }
                            outstanding = outstanding.saturating_sub(1);
                            slots += 1;
                            if e.status == TxStatus::BadNonce && resent_batches.contains(&e.batch) {
                                // Sent again after its node closed, and its nonce was spent: it
                                // committed before (its receipt went down with that node), or an
                                // earlier nonce of its signer was lost. Asked about at the end.
                                if let Some(id) = id {
                                    unconfirmed.push((id, due));
                                    continue;
                                }
                            }
                            // Committed means: in a block whose certificate verified here.
                            if !verified || !e.status.is_committed() {
                                dropped += 1;
                                continue;
                            }
                            record_commit!(at, due);
                            match e.status {
                                TxStatus::Failed => failed += 1,
                                TxStatus::BadNonce => bad_nonce += 1,
                                _ => {}
                            }
                        }
                    }
                    ClientEvent::Fates { id, certificates: certs, fates, .. } => {
                        // Answers to a status read about batches whose node closed or stepped
                        // down: committed ones count (their certificate verified); batches with
                        // unknown or pending ones go again; the rest are asked about again.
                        let Some((q, began, home, asked)) = queries.remove(&id) else { continue };
                        let at = Instant::now();
                        let Some(r) = state[q].resolving.as_mut().filter(|r| r.began == began) else { continue };
                        for (tx, fate) in asked.iter().zip(fates) {
                            let Some(&(b, i)) = r.open.get(tx) else { continue };
                            match fate {
                                TxFate::Committed { certificate } => {
                                    let Some(c) = certs.get(certificate as usize) else { continue };
                                    if !verify_once(&client, &mut seen_blocks, &mut checked, c) {
                                        continue;
                                    }
                                    r.open.remove(tx);
                                    if let Some(due) = awaiting.get_mut(&b).and_then(|v| v.get_mut(i as usize)).and_then(Option::take) {
                                        outstanding = outstanding.saturating_sub(1);
                                        slots += 1;
                                        recovered += 1;
                                        record_commit!(at, due);
                                    }
                                }
                                // No node knows it, or the leader holds it (it admitted the copy
                                // sent to it): either way it goes again with the rest of its
                                // batch, in order (a later copy of a committed one is refused for
                                // its nonce), so that nothing newer overtakes it.
                                TxFate::Unknown | TxFate::Pending => {
                                    r.open.remove(tx);
                                }
                                TxFate::NotLeader { leader: Some(l) } if !down.contains_key(&l) => client.set_leader(home, l),
                                TxFate::NotLeader { .. } => {
                                    ask_status_at.get_or_insert(at + RESOLVE_RETRY);
                                }
                                // Committed, and the certificate is on its way: ask again.
                                TxFate::Spent { .. } => {}
                            }
                        }
                    }
                    ClientEvent::Closed { node, reason } => {
                        if progress {
                            eprintln!("  node {node} closed the connection ({reason}); following the new leaders");
                        }
                        disconnects += 1;
                        down.insert(node, Instant::now() + Duration::from_secs(1));
                        ask_status_at.get_or_insert(Instant::now() + Duration::from_millis(100));
                        for sh in state.iter_mut() {
                            sh.give_up_on(node, &mut awaiting);
                        }
                    }
                    ClientEvent::Values { .. } => {}
                }
            }
        }
    }
    // Everything sent without a receipt: ask the cluster what became of it, once.
    let mut asked: Vec<((u32, u64), Instant)> = std::mem::take(&mut unconfirmed);
    for sh in &state {
        let mut batches: HashMap<u64, &Vec<RawSignedTx>> = sh.accepted.iter().map(|(b, (_, txs))| (*b, txs)).collect();
        batches.extend(sh.resolving.iter().flat_map(|r| r.batches.iter()).map(|(b, txs)| (*b, txs)));
        batches.extend(sh.resend.iter().chain(sh.in_flight.iter()).map(|(b, txs, _)| (*b, txs)));
        for (b, txs) in &batches {
            let id = |t: &RawSignedTx| (t.header.signer, t.header.nonce);
            match awaiting.get(b) {
                Some(slots) => asked.extend(txs.iter().zip(slots).filter_map(|(t, d)| d.map(|d| (id(t), d)))),
                // Sent, never accepted: their intended times are still with the batch.
                None => {
                    let dues = sh.resend.iter().chain(sh.in_flight.iter()).find(|f| f.0 == *b).map(|f| &f.2);
                    asked.extend(txs.iter().zip(dues.into_iter().flatten()).map(|(t, d)| (id(t), *d)));
                }
            }
        }
    }
    let (mut lost, mut pending_at_end) = (0u64, 0u64);
    let mut censored_dues = Vec::new();
    if !asked.is_empty() {
        if progress {
            eprintln!("  asking the cluster about {} transactions without a receipt…", asked.len());
        }
        let ids: Vec<(u32, u64)> = asked.iter().map(|(id, _)| *id).collect();
        status_reads += ids.len().div_ceil(MAX_TX_QUERY) as u64;
        let fates = tokio::time::timeout(FINAL_READ_WAIT, crate::cluster::fetch_fates(&mut client, &ids)).await;
        let fates = match fates {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                eprintln!("warning: the status read of what has no receipt failed ({e:#}); counted as lost");
                vec![Fate::Unknown; ids.len()]
            }
            Err(_) => {
                eprintln!("warning: the status read of what has no receipt took over {FINAL_READ_WAIT:?}; counted as lost");
                vec![Fate::Unknown; ids.len()]
            }
        };
        let at = Instant::now();
        for ((_, due), fate) in asked.into_iter().zip(fates) {
            match fate {
                Fate::Committed(c) => {
                    verify_once(&client, &mut seen_blocks, &mut checked, &c);
                    recovered += 1;
                    record_commit!(at, due);
                }
                Fate::Pending | Fate::Spent(_) => {
                    pending_at_end += 1;
                    censored_dues.push(due);
                }
                Fate::Unknown => {
                    lost += 1;
                    censored_dues.push(due);
                }
            }
        }
    }
    let (certificates, bad_certificates) = checked;
    client.close().await;
    let end = Instant::now();
    // What never got a receipt still counts: sent and unanswered (lost), or never sent (the
    // client could not). Each enters the latency histogram with the time it had waited when
    // the run ended, a lower bound of its latency, so a stalled cluster cannot hide its
    // slowest transactions by not answering.
    let mut censored = 0u64;
    let mut unsent = 0u64;
    let mut record_censored = |due: Instant, hist: &mut Histogram<u64>| {
        censored += 1;
        hist.saturating_record(end.saturating_duration_since(due).as_micros().max(1) as u64);
    };
    for due in censored_dues {
        record_censored(due, &mut hist);
    }
    for sh in &state {
        for (_, due) in &sh.queue {
            unsent += 1;
            record_censored(*due, &mut hist);
        }
    }
    let secs = cfg.duration_s;
    Ok(LoadReport {
        schema: LOAD_SCHEMA.into(),
        commit: COMMIT.into(),
        machine: Machine::detect(),
        cluster: ClusterShape {
            nodes: cluster.live_nodes().len(),
            shards: cluster.shards,
            replicas: cluster.replicas,
            block_txs: cluster.limits.block_txs,
        },
        settings: cfg.clone(),
        offered_tps: scheduled as f64 / secs,
        achieved_tps: committed_in_window as f64 / secs,
        scheduled,
        cross_share: crossing as f64 / scheduled.max(1) as f64,
        sent,
        committed,
        failed,
        bad_nonce,
        dropped,
        lost,
        pending_at_end,
        resent,
        recovered,
        status_reads,
        disconnects,
        unsent,
        censored,
        refused,
        certificates,
        bad_certificates,
        max_send_lag_ms: max_lag.as_secs_f64() * 1000.0,
        latency: Latency::of(&hist),
        series: series
            .iter()
            .enumerate()
            .map(|(t, (offered, sent, committed, h))| Second {
                t: t as u64,
                offered: *offered,
                sent: *sent,
                committed: *committed,
                latency: Latency::of(h),
            })
            .collect(),
    })
}

/// A human summary of a load report.
pub fn render(r: &LoadReport) -> String {
    let mode = match (r.settings.rate, r.settings.concurrency) {
        (Some(rate), _) => format!("open loop at {rate} tx/s"),
        (_, Some(c)) => format!("closed loop, {c} outstanding"),
        _ => String::new(),
    };
    let l = &r.latency;
    format!(
        "occam load: {} nodes, {} shards × {} replicas; {} ({} cross-shard), {mode}, {} s\n\
         offered {:.0} tx/s, achieved {:.0} tx/s (committed {} of {} sent; failed {}, bad nonce {}, dropped {}, lost {}, pending at the end {}, unsent {})\n\
         failover: {} connections closed; {} committed without a receipt (found by {} status reads); {} transactions sent again\n\
         commit latency from intended send: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms\n\
         certificates verified: {} (bad {}); refused batches: {:?}; max send lag {:.1} ms\n",
        r.cluster.nodes,
        r.cluster.shards,
        r.cluster.replicas,
        r.settings.workload,
        format_args!("{:.1} %", r.cross_share * 100.0),
        r.settings.duration_s,
        r.offered_tps,
        r.achieved_tps,
        r.committed,
        r.sent,
        r.failed,
        r.bad_nonce,
        r.dropped,
        r.lost,
        r.pending_at_end,
        r.unsent,
        r.disconnects,
        r.recovered,
        r.status_reads,
        r.resent,
        l.p50_ms,
        l.p90_ms,
        l.p99_ms,
        l.p999_ms,
        l.max_ms,
        r.certificates,
        r.bad_certificates,
        r.refused,
        r.max_send_lag_ms,
    )
}

/// Version tag of the ingress report.
pub const INGRESS_SCHEMA: &str = "occam-ingress/v1";

/// What `occam load --ingress N` measured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IngressReport {
    /// [`INGRESS_SCHEMA`].
    pub schema: String,
    /// Commit of the binary.
    pub commit: String,
    /// The machine the client ran on.
    pub machine: Machine,
    /// Shard leaders sent to.
    pub leaders: usize,
    /// Transactions accepted into mempools.
    pub accepted: u64,
    /// Batches sent (refused ones counted again when resent).
    pub batches: u64,
    /// Transactions per batch.
    pub batch: usize,
    /// Batches refused (and resent).
    pub refused: u64,
    /// From the first send to the last acceptance.
    pub seconds: f64,
    /// `accepted / seconds`.
    pub tps: f64,
}

/// Batches a shard may have unanswered during an ingress run.
const INGRESS_WINDOW: usize = 16;

/// Sends `n` transfers to the shard leaders as fast as they are admitted and times it.
///
/// Admission decodes each batch and checks routing, chain and limits, but leaves signatures to
/// the leader's verification stage, so every transaction carries the same (valid-point,
/// wrong-message) signature and the run needs no signing; the leader later drops them as
/// `BadSignature`. Run it against a cluster whose blocks do not start during the measurement
/// (large `block_txs` and `block_ms`, a mempool that holds `n`), or verification competes with
/// ingress for the cores.
pub fn run_ingress(cluster: &ClusterConfig, n: usize, batch: usize) -> anyhow::Result<IngressReport> {
    if n == 0 || n > MAX_LOAD_TXS {
        bail!("--ingress must be in 1..={MAX_LOAD_TXS}");
    }
    if batch == 0 || batch > MAX_BATCH_TXS {
        bail!("--batch must be in 1..={MAX_BATCH_TXS}");
    }
    // Any valid point will do (the leader drops every one): one derived from a throwaway key.
    let mut gen = LoadTxs::new(cluster, &cluster.genesis.workload, Distribution::Uniform, 0.0, 1, None)?;
    let (h0, _) = gen.next_header();
    let throwaway = occam_engine::crypto::SecretKey::from_seed(&[7; 32]).map_err(|e| anyhow::anyhow!("a throwaway key: {e}"))?;
    let signature = h0.clone().sign(cluster.chain_id, &throwaway).signature.to_bytes();
    let mut per_shard: Vec<Vec<RawSignedBlock>> = vec![Vec::new(); cluster.shards];
    let mut open: Vec<Vec<RawSignedTx>> = vec![Vec::new(); cluster.shards];
    let mut made = 0;
    while made < n {
        let (header, route) = gen.next_header();
        // Ingress is measured at the shard leaders: single-shard transactions only.
        let Some(s) = route.map(|s| s as usize) else { continue };
        made += 1;
        open[s].push(RawSignedTx { header, signature });
        if open[s].len() == batch {
            per_shard[s].push(RawSignedBlock { chain_id: cluster.chain_id, txs: std::mem::take(&mut open[s]) });
        }
    }
    for (s, rest) in open.into_iter().enumerate() {
        if !rest.is_empty() {
            per_shard[s].push(RawSignedBlock { chain_id: cluster.chain_id, txs: rest });
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let mut client = crate::cluster::connect(cluster).await?;
        let mut next: Vec<usize> = vec![0; cluster.shards];
        let mut in_flight: Vec<usize> = vec![0; cluster.shards];
        let mut retry: Vec<VecDeque<usize>> = vec![VecDeque::new(); cluster.shards];
        let (mut accepted, mut batches, mut refused) = (0u64, 0u64, 0u64);
        let start = Instant::now();
        loop {
            for s in 0..cluster.shards {
                while in_flight[s] < INGRESS_WINDOW {
                    let i = match retry[s].pop_front() {
                        Some(i) => i,
                        None if next[s] < per_shard[s].len() => {
                            next[s] += 1;
                            next[s] - 1
                        }
                        None => break,
                    };
                    client.submit(s as u32, ((s as u64) << 48) | i as u64, per_shard[s][i].clone()).await?;
                    in_flight[s] += 1;
                    batches += 1;
                }
            }
            if accepted as usize >= n {
                break;
            }
            match client.next_event().await {
                Some(ClientEvent::Accepted { batch: b }) => {
                    let (s, i) = ((b >> 48) as usize, (b & ((1 << 48) - 1)) as usize);
                    in_flight[s] -= 1;
                    accepted += per_shard[s][i].txs.len() as u64;
                }
                Some(ClientEvent::Refused { batch: b, .. }) => {
                    let (s, i) = ((b >> 48) as usize, (b & ((1 << 48) - 1)) as usize);
                    in_flight[s] -= 1;
                    refused += 1;
                    retry[s].push_back(i);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Some(ClientEvent::Closed { node, reason }) => bail!("node {node} closed the connection: {reason}"),
                Some(_) => {}
                None => bail!("every connection to the cluster closed"),
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        client.close().await;
        Ok(IngressReport {
            schema: INGRESS_SCHEMA.into(),
            commit: COMMIT.into(),
            machine: Machine::detect(),
            leaders: cluster.shards,
            accepted,
            batches,
            batch,
            refused,
            seconds,
            tps: accepted as f64 / seconds,
        })
    })
}
