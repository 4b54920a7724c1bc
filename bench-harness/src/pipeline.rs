//! `occam bench --verify-signatures`: signed blocks through a two-stage pipeline.
//!
//! Blocks arrive signed (one BLS signature per transaction, by a pool of registered signers).
//! Stage 1 batch-verifies a block's signatures on the verifier's threads; stage 2 executes and
//! commits it with the chosen executor. While stage 2 runs block N, stage 1 verifies block
//! N + 1 on its own threads, so the pipeline moves at the pace of its slower stage. The report
//! gives each stage's own throughput (transactions over the time it was busy), the pipeline's
//! end-to-end throughput, the bottleneck and how close the pipeline comes to it.
//!
//! Thread budget: the verifier gets `--verify-threads` threads (default: every core), the
//! executor its `--threads`. They overlap only while both stages are busy; with BLS, stage 1 is
//! hundreds of times more expensive per transaction than stage 2, so the executor's workers
//! are idle (parked) most of the time and giving the verifier every core is what keeps the
//! machine busy without oversubscribing it for long. `blst` itself runs no threads of its own
//! (built with `no-threads`), so these are the only threads doing cryptography.

use crate::machine::{Machine, COMMIT};
use crate::runner::{BenchConfig, Progress};
use crate::workload::Generator;
use anyhow::Context;
use occam_engine::crypto::{deterministic_signers, BatchVerifier, KeyRegistry, SecretKey, SignedMessage};
use occam_engine::exec::executor_by_name;
use occam_engine::native::signed::{round_robin_owners, SignedBlock, SignedOutput, SignedTx, SignedVm, TxHeader, VerifiedTx};
use occam_engine::native::NativeTx;
use occam_engine::state::CommittedState;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Version tag of the pipeline JSON report.
pub const PIPELINE_SCHEMA: &str = "occam-bench-pipeline/v1";

/// Largest accepted `--signers`.
pub const SIGNERS_MAX: u32 = 1 << 20;

/// Settings of the signature pipeline.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PipelineConfig {
    /// Distinct signing keys; the sender of a transaction signs with key `sender % signers`.
    pub signers: u32,
    /// Threads of the batch verifier.
    pub verify_threads: usize,
    /// Chain id the transactions are signed for.
    pub chain_id: u64,
}

/// One stage's figures.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Stage {
    /// `verify` or `execute` (execution and commit).
    pub name: String,
    /// Threads the stage ran on.
    pub threads: usize,
    /// Seconds the stage was busy over the measured blocks.
    pub busy_s: f64,
    /// Measured transactions over `busy_s`.
    pub tps: f64,
}

/// One (workload, executor, threads) pipeline run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PipelineResult {
    /// Workload name.
    pub workload: String,
    /// Executor of stage 2.
    pub executor: String,
    /// Its threads.
    pub threads: usize,
    /// Measured blocks and transactions.
    pub blocks: usize,
    /// Measured transactions.
    pub txs: usize,
    /// End-to-end: measured transactions over the pipeline's wall time.
    pub tps: f64,
    /// Stage figures, in pipeline order.
    pub stages: Vec<Stage>,
    /// The stage with the lowest throughput.
    pub bottleneck: String,
    /// `tps` over the bottleneck's throughput (1.0: perfect overlap).
    pub overlap: f64,
    /// Transactions whose signature was rejected.
    pub rejected: usize,
    /// Final state root.
    pub state_root: String,
}

/// What the signed form of a block costs on the wire, against the aggregated form.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BlockForms {
    /// Workload name.
    pub workload: String,
    /// Transactions in the block.
    pub txs: usize,
    /// Bytes with one signature per transaction.
    pub signed_bytes: usize,
    /// Bytes with one aggregate signature.
    pub aggregated_bytes: usize,
    /// Milliseconds to check the aggregated block's signature (`aggregate_verify`, on the
    /// verifier's threads).
    pub aggregate_verify_ms: f64,
    /// Milliseconds to batch-verify the signed block with the verifier's threads.
    pub batch_verify_ms: f64,
}

/// The pipeline's `--json` report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PipelineReport {
    /// Always [`PIPELINE_SCHEMA`].
    pub schema: String,
    /// Commit of the binary.
    pub commit: String,
    /// The machine.
    pub machine: Machine,
    /// Workload settings.
    pub settings: BenchConfig,
    /// Pipeline settings.
    pub pipeline: PipelineConfig,
    /// One entry per run.
    pub results: Vec<PipelineResult>,
    /// Wire sizes of the two block forms, per workload.
    pub block_forms: Vec<BlockForms>,
    /// Every disagreement with the sequential reference (empty on success).
    pub mismatches: Vec<String>,
}

/// Signs `blocks` in order: each sender's transactions get consecutive nonces.
fn sign_blocks(blocks: Vec<Vec<NativeTx>>, keys: &[SecretKey], chain_id: u64) -> Vec<SignedBlock> {
    let mut nonces = vec![0u64; keys.len()];
    blocks
        .into_iter()
        .map(|block| {
            let headers: Vec<TxHeader> = block
                .into_iter()
                .map(|body| {
                    let signer = (body.kind.sender() % keys.len() as u64) as u32;
                    let nonce = nonces[signer as usize];
                    nonces[signer as usize] += 1;
                    TxHeader { signer, nonce, body }
                })
                .collect();
            let txs: Vec<SignedTx> = headers
                .into_par_iter()
                .map(|h| {
                    let key = &keys[h.signer as usize];
                    h.sign(chain_id, key)
                })
                .collect();
            SignedBlock { chain_id, txs }
        })
        .collect()
}

/// Stage 1: one verdict per transaction. Signatures are checked over the signing bytes for
/// `chain_id`, this chain's, whatever the block claims: a block signed for another chain fails.
fn verify_block(verifier: &BatchVerifier, registry: &KeyRegistry, block: &SignedBlock, chain_id: u64) -> Vec<VerifiedTx> {
    // Built on this thread: the verifier's threads are the stage's whole thread budget.
    let messages: Vec<Vec<u8>> = block.txs.iter().map(|t| t.header.signing_bytes(chain_id)).collect();
    let mut known = Vec::with_capacity(block.txs.len());
    let mut items = Vec::with_capacity(block.txs.len());
    for (tx, msg) in block.txs.iter().zip(&messages) {
        match registry.get(tx.header.signer) {
            Some(key) => {
                known.push(true);
                items.push(SignedMessage { key, message: msg, signature: &tx.signature });
            }
            None => known.push(false),
        }
    }
    let mut verdicts = verifier.verify(&items).into_iter();
    block
        .txs
        .iter()
        .zip(known)
        .map(|(tx, known)| VerifiedTx { header: tx.header.clone(), signature_ok: known && verdicts.next() == Some(true) })
        .collect()
}

fn digest(outputs: &[SignedOutput]) -> [u8; 32] {
    *blake3::hash(format!("{outputs:?}").as_bytes()).as_bytes()
}

/// Runs the pipeline for every workload and (executor, threads) of `cfg`.
pub fn run_pipeline(cfg: &BenchConfig, pc: &PipelineConfig, progress: &dyn Progress) -> anyhow::Result<PipelineReport> {
    let (workloads, dist) = cfg.validate()?;
    if pc.signers == 0 || pc.signers > SIGNERS_MAX {
        anyhow::bail!("--signers must be between 1 and {SIGNERS_MAX}, got {}", pc.signers);
    }
    if pc.verify_threads == 0 || pc.verify_threads > occam_engine::exec::MAX_THREADS {
        anyhow::bail!("--verify-threads must be between 1 and {}, got {}", occam_engine::exec::MAX_THREADS, pc.verify_threads);
    }
    if cfg.tx_cost_us > 0.0 {
        anyhow::bail!("--tx-cost-us is not supported with --verify-signatures (the signature is the cost)");
    }
    let verifier = BatchVerifier::new(pc.verify_threads)?;
    let (keys, registry) = deterministic_signers(pc.signers, cfg.seed).context("creating the signers")?;
    let registry = std::sync::Arc::new(registry);
    let vm = SignedVm::new(registry.clone());
    let (mut results, mut forms, mut mismatches) = (Vec::new(), Vec::new(), Vec::new());
    let warm = cfg.warmup_blocks;
    for workload in &workloads {
        // Accounts belong to keys: account `id` to key `id % signers`, which signs its transactions.
        let mut entries = workload.genesis_entries(cfg.accounts);
        entries.extend(round_robin_owners(0..workload.id_count(cfg.accounts), registry.keys()));
        let genesis = CommittedState::from_entries(entries);
        let mut gen = Generator::new(workload.clone(), cfg.accounts, dist, cfg.seed, 0);
        let plain: Vec<Vec<NativeTx>> = (0..warm + cfg.measured_blocks()).map(|_| gen.block(cfg.block_size)).collect();
        let blocks = sign_blocks(plain, &keys, pc.chain_id);
        forms.push(block_forms(&workload.to_string(), &blocks[0], &verifier, &registry)?);

        // The reference: every signature is valid, so the sequential run needs no verifier.
        let mut reference = Vec::with_capacity(blocks.len());
        let mut state = genesis.clone();
        let mut seq = executor_by_name::<SignedVm>("sequential", 1)?;
        for b in &blocks {
            let txs: Vec<VerifiedTx> = b.txs.iter().map(|t| VerifiedTx { header: t.header.clone(), signature_ok: true }).collect();
            let out = seq.execute_and_commit(&vm, &mut state, &txs)?;
            reference.push((state.root().to_hex(), digest(&out.outputs)));
        }

        for (executor, threads) in cfg.executor_runs() {
            let label = format!("{workload} {executor} x{threads} + verify x{}", pc.verify_threads);
            let mut exec = executor_by_name::<SignedVm>(executor, threads)?;
            let mut state = genesis.clone();
            let (mut verify_busy, mut exec_busy, mut wall) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
            let mut rejected = 0usize;
            let t0 = Instant::now();
            let mut next = verify_block(&verifier, &registry, &blocks[0], pc.chain_id);
            let mut verify_time = t0.elapsed();
            // The measured window is the steps that verify measured blocks: in it, each stage
            // handles as many blocks as are measured (the first step's verification runs alone
            // when nothing is warmed up).
            if warm == 0 {
                wall += verify_time;
            }
            let mut first_difference = None;
            for h in 0..blocks.len() {
                let measured = h >= warm;
                if measured {
                    verify_busy += verify_time;
                }
                let current = std::mem::take(&mut next);
                rejected += current.iter().filter(|t| !t.signature_ok).count() * usize::from(measured);
                let step = Instant::now();
                // Stage 1 on block h + 1 (on the verifier's threads) beside stage 2 on block h.
                let (exec_result, verified) = std::thread::scope(|s| {
                    let verifying = (h + 1 < blocks.len()).then(|| {
                        s.spawn(|| {
                            let t = Instant::now();
                            let v = verify_block(&verifier, &registry, &blocks[h + 1], pc.chain_id);
                            (v, t.elapsed())
                        })
                    });
                    let t = Instant::now();
                    let out = exec.execute_and_commit(&vm, &mut state, &current);
                    let exec_time = t.elapsed();
                    (out.map(|o| (o, exec_time)), verifying.map(|j| j.join().expect("the verifier thread does not panic")))
                });
                let (out, exec_time) = exec_result?;
                if let Some((v, t)) = verified {
                    next = v;
                    verify_time = t;
                }
                if measured {
                    exec_busy += exec_time;
                }
                if h + 1 >= warm && (h + 1 < blocks.len() || warm == 0) {
                    wall += step.elapsed();
                }
                if first_difference.is_none() && (state.root().to_hex() != reference[h].0 || digest(&out.outputs) != reference[h].1) {
                    first_difference = Some(h);
                }
                progress.advance(1, &label);
            }
            if let Some(h) = first_difference {
                mismatches.push(format!("{label}: block {h} differs from the sequential reference"));
            }
            let txs = cfg.block_size * cfg.measured_blocks();
            let tps = |d: Duration| txs as f64 / d.as_secs_f64().max(1e-9);
            let stages = vec![
                Stage { name: "verify".into(), threads: pc.verify_threads, busy_s: verify_busy.as_secs_f64(), tps: tps(verify_busy) },
                Stage { name: "execute".into(), threads, busy_s: exec_busy.as_secs_f64(), tps: tps(exec_busy) },
            ];
            let slowest = stages.iter().min_by(|a, b| a.tps.total_cmp(&b.tps)).expect("two stages");
            results.push(PipelineResult {
                workload: workload.to_string(),
                executor: executor.to_string(),
                threads,
                blocks: cfg.measured_blocks(),
                txs,
                tps: tps(wall),
                bottleneck: slowest.name.clone(),
                overlap: tps(wall) / slowest.tps,
                stages,
                rejected,
                state_root: state.root().to_hex(),
            });
        }
    }
    Ok(PipelineReport {
        schema: PIPELINE_SCHEMA.into(),
        commit: COMMIT.into(),
        machine: Machine::detect(),
        settings: cfg.clone(),
        pipeline: pc.clone(),
        results,
        block_forms: forms,
        mismatches,
    })
}

/// Sizes of both forms of `block` and the time to check each.
fn block_forms(workload: &str, block: &SignedBlock, verifier: &BatchVerifier, registry: &KeyRegistry) -> anyhow::Result<BlockForms> {
    let aggregated = block.aggregate()?;
    let t = Instant::now();
    aggregated.verify_on(registry, block.chain_id, verifier).map_err(|e| anyhow::anyhow!("aggregated block does not verify: {e}"))?;
    let aggregate_verify_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let verdicts = verify_block(verifier, registry, block, block.chain_id);
    let batch_verify_ms = t.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(verdicts.iter().all(|v| v.signature_ok), "a freshly signed block failed verification");
    Ok(BlockForms {
        workload: workload.to_string(),
        txs: block.txs.len(),
        signed_bytes: block.encode().len(),
        aggregated_bytes: aggregated.encode().len(),
        aggregate_verify_ms,
        batch_verify_ms,
    })
}

/// The pipeline table.
pub fn pipeline_table(r: &PipelineReport) -> String {
    use crate::report::human_rate;
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "occam bench --verify-signatures  commit {}  {}\n{} signers  verify threads {}  chain id {}  block {} txs  {} measured blocks after {} warm-up\n",
        r.commit,
        r.machine.summary(),
        r.pipeline.signers,
        r.pipeline.verify_threads,
        r.pipeline.chain_id,
        r.settings.block_size,
        r.settings.measured_blocks(),
        r.settings.warmup_blocks
    );
    let _ = writeln!(
        out,
        "{:<10}  {:<10}  {:>3}  {:>9}  {:>9}  {:>9}  {:>10}  {:>7}  {:>8}",
        "workload", "executor", "thr", "verify/s", "execute/s", "pipeline", "bottleneck", "overlap", "rejected"
    );
    let _ = writeln!(out, "{}", "-".repeat(96));
    for x in &r.results {
        let _ = writeln!(
            out,
            "{:<10}  {:<10}  {:>3}  {:>9}  {:>9}  {:>9}  {:>10}  {:>6.0}%  {:>8}",
            x.workload,
            x.executor,
            x.threads,
            human_rate(x.stages[0].tps),
            human_rate(x.stages[1].tps),
            human_rate(x.tps),
            x.bottleneck,
            x.overlap * 100.0,
            x.rejected
        );
    }
    let _ = writeln!(out);
    for f in &r.block_forms {
        let _ = writeln!(
            out,
            "{}: a {}-transaction block is {} bytes signed, {} bytes aggregated ({:.0}% smaller); checking it: batch {:.1} ms, aggregate_verify {:.1} ms",
            f.workload,
            f.txs,
            f.signed_bytes,
            f.aggregated_bytes,
            100.0 * (1.0 - f.aggregated_bytes as f64 / f.signed_bytes.max(1) as f64),
            f.batch_verify_ms,
            f.aggregate_verify_ms
        );
    }
    out
}
