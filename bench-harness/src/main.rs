//! The `occam` command.

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use occam_bench::compare::{compare_files, parse_threshold, CompareOptions};
use occam_bench::pipeline::{pipeline_table, run_pipeline, PipelineConfig};
use occam_bench::record::{check_recordable, replay};
use occam_bench::report::{storage_table, table};
use occam_bench::runner::{run_bench, total_blocks, BenchConfig};
use occam_bench::sharded::{run_sharded, sharded_blocks, sharded_table, ShardedConfig};
use occam_bench::sweep::{run_sweep, SweepConfig};
use std::path::PathBuf;

mod attack;
mod netcmd;

fn workloads(a: WorkloadsArgs) -> anyhow::Result<()> {
    use occam_bench::mix::{kinds_help, Mix, SCENARIOS};
    use occam_bench::workload::Workload;
    if a.kinds {
        print!("{}", kinds_help());
        return Ok(());
    }
    if let Some(name) = a.show {
        if let Some((_, src)) = SCENARIOS.iter().find(|(n, _)| *n == name) {
            print!("{src}");
            return Ok(());
        }
        let mix = Mix::load(std::path::Path::new(&name))?;
        println!("{}: {} (ok)", mix.name, mix.description);
        return Ok(());
    }
    println!("Built-in workloads:");
    for w in Workload::all() {
        println!("  {w}");
    }
    println!("Scenarios (workload files built in; `occam workloads --show NAME` prints one):");
    for (name, _) in SCENARIOS {
        let mix = Mix::scenario(name).expect("listed").context("built-in scenario")?;
        println!("  {name:<16} {}", mix.description);
    }
    Ok(())
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Occam: a parallel, sharded transaction engine and its benchmark harness.
#[derive(Parser)]
#[command(name = "occam", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run workloads on the embedded engine under several executors and thread counts.
    Bench(Box<BenchArgs>),
    /// Re-execute a recording (from `bench --record`) and check every state root.
    Replay(ReplayArgs),
    /// Run the Cartesian product of settings in a sweep file; resumable.
    Sweep(SweepArgs),
    /// Turn saved bench reports (--json files, sharded or not, or sweep results) into an HTML page
    /// with charts, CSV or Markdown.
    Report(ReportArgs),
    /// Compare two saved bench reports figure by figure; exit 1 on a significant regression.
    Compare(CompareArgs),
    /// List the built-in workloads and scenarios, print a scenario's workload file, or list
    /// the transaction kinds a workload file can use.
    Workloads(WorkloadsArgs),
    /// Generate a node's keys (BLS and TLS) and print its entry for a cluster file.
    Keygen(netcmd::KeygenArgs),
    /// Create a cluster's files (`init`) or ask its nodes for their status (`status`).
    #[command(subcommand)]
    Cluster(netcmd::ClusterCommand),
    /// Run a node: host its shard replicas and serve clients over QUIC.
    Node(netcmd::NodeArgs),
    /// Drive a running cluster (open or closed loop) and measure commit latency, or measure
    /// one node's ingress (`--ingress N`).
    Load(netcmd::LoadArgs),
    /// Attack a running cluster as a hostile client would (forged signatures, a client that
    /// does not read, stalled frames) and print what the node did about it.
    Attack(attack::AttackArgs),
}

#[derive(Args)]
struct WorkloadsArgs {
    /// Print the workload file of this scenario (a starting point for your own), or check
    /// and summarise a workload file (PATH.toml).
    #[arg(long, value_name = "NAME|PATH")]
    show: Option<String>,
    /// List the transaction kinds and their fields.
    #[arg(long)]
    kinds: bool,
}

#[derive(Args)]
struct SweepArgs {
    /// The sweep file (TOML: [base] settings and [axes] to combine).
    #[arg(long)]
    config: PathBuf,
    /// Results file (JSON Lines, one point per line); points already in it are skipped.
    #[arg(long, default_value = "sweep-results.jsonl")]
    out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct ReportArgs {
    /// Bench reports (`occam bench [--shards ...] --json FILE`) or sweep results (`.jsonl`), one
    /// or more.
    #[arg(required = true)]
    reports: Vec<PathBuf>,
    /// Write a self-contained HTML page (inline SVG charts, nothing fetched) to this file.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Write one CSV row per result to this file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Print a Markdown summary (the default when neither --html nor --csv is given).
    #[arg(long)]
    md: bool,
}

#[derive(Args)]
struct CompareArgs {
    /// The reference report.
    base: PathBuf,
    /// The report to judge.
    new: PathBuf,
    /// Smallest relative change that counts, e.g. 5% (default 5%).
    #[arg(long, default_value = "5%")]
    threshold: String,
}

#[derive(Args)]
struct BenchArgs {
    /// Workloads, comma-separated: transfer, smallbank, ycsb-a|b|c|d|f, token, amm-swap[:POOLS],
    /// nft-mint[:COLLECTIONS], a scenario (`occam workloads` lists them; `scenarios` means all
    /// of them) or a workload file (PATH.toml).
    #[arg(long, value_delimiter = ',', default_value = "transfer,smallbank,ycsb-a,token,amm-swap,nft-mint")]
    workload: Vec<String>,
    /// Accounts (customers, records, holders) per workload.
    #[arg(long, default_value_t = 100_000)]
    accounts: u64,
    /// Measured transactions per run (rounded up to whole blocks).
    #[arg(long, default_value_t = 100_000)]
    txs: usize,
    /// Transactions per block.
    #[arg(long, default_value_t = 10_000)]
    block_size: usize,
    /// Blocks run before measuring.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Worker counts, comma-separated (default: powers of two up to the core count, and it).
    #[arg(long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// Executors to compare with the sequential reference: sequential, parallel, declared, auto.
    #[arg(long, value_delimiter = ',', default_value = "sequential,parallel,declared,auto")]
    executor: Vec<String>,
    /// Key distribution: uniform, zipf:THETA or hotspot:PROBABILITY:KEYS.
    #[arg(long, default_value = "uniform")]
    distribution: String,
    /// Seed of the workload generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Emulated VM cost per transaction, in microseconds of hashing.
    #[arg(long, default_value_t = 0.0)]
    tx_cost_us: f64,
    /// Write every figure, the machine and the settings to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Record the generated transactions, the sequential reference run's outputs and roots, and
    /// the final state (JSON Lines, spec in RECORDING.md) under this folder. Not with --shards or
    /// --verify-signatures.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Run the executors block by block in turn (robust to noisy neighbours; colder caches).
    #[arg(long)]
    interleave: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Also run every executor with each block persisted to a RocksDB store (synced per block,
    /// overlapping the next block's execution): `rocksdb` (a temporary folder) or `rocksdb:DIR`
    /// (one sub-folder per run, kept). Reports persist time per block and TPS against in-memory.
    #[arg(long)]
    storage: Option<String>,
    /// Sign every transaction (BLS) and run blocks through a pipeline: batch signature
    /// verification of block N+1 overlapping execution of block N. Reports each stage.
    #[arg(long)]
    verify_signatures: bool,
    /// With --verify-signatures: distinct signing keys (the sender's key is `sender % signers`).
    #[arg(long, default_value_t = 1024)]
    signers: u32,
    /// With --verify-signatures: threads of the batch verifier (default: every core).
    #[arg(long)]
    verify_threads: Option<usize>,
    /// With --verify-signatures: the chain id transactions are signed for.
    #[arg(long, default_value_t = 1)]
    chain_id: u64,
    /// Run the sharded engine with these shard counts (comma-separated), against 1 shard x 1
    /// thread on the same blocks; --threads is then threads per shard.
    #[arg(long, value_delimiter = ',')]
    shards: Vec<usize>,
    /// With --shards: share of `transfer`s whose two accounts are on different shards (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    cross_shard: f64,
    /// With --shards: hash, range, range:B1,B2,... (account-id bounds) or map:FILE.
    #[arg(long, default_value = "hash")]
    partitioner: String,
    /// With --shards: coordinate cross-shard transactions in one round per block (per-block),
    /// one per transaction (per-tx), or in Aria-style reservation rounds (reservation, whose
    /// serial order is its own) — the alternatives, to measure against each other.
    #[arg(long, default_value = "per-block")]
    cross_batching: String,
}

#[derive(Args)]
struct ReplayArgs {
    /// A recording folder (one workload, or a folder of them).
    dir: PathBuf,
    /// Executor to re-execute with.
    #[arg(long, default_value = "sequential")]
    executor: String,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn default_threads() -> Vec<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut v: Vec<usize> = std::iter::successors(Some(1usize), |t| Some(t * 2)).take_while(|&t| t <= cores).collect();
    if v.last() != Some(&cores) {
        v.push(cores);
    }
    v
}

fn bench(a: BenchArgs) -> anyhow::Result<()> {
    if a.record.is_some() {
        check_recordable(!a.shards.is_empty(), a.verify_signatures)?;
    }
    let cfg = BenchConfig {
        workloads: a.workload,
        accounts: a.accounts,
        txs: a.txs,
        block_size: a.block_size,
        warmup_blocks: a.warmup,
        threads: if a.threads.is_empty() { default_threads() } else { a.threads },
        executors: a.executor,
        distribution: a.distribution,
        seed: a.seed,
        tx_cost_us: a.tx_cost_us,
        interleave: a.interleave,
        storage: a.storage,
    };
    let (workloads, _) = cfg.validate()?;
    if !a.shards.is_empty() {
        let sc = ShardedConfig {
            shards: a.shards.clone(),
            cross_share: a.cross_shard,
            partitioner: a.partitioner.clone(),
            cross_batching: a.cross_batching.clone(),
        };
        return sharded(&cfg, &sc, workloads.len(), a.quiet, a.json.as_ref());
    }
    if a.verify_signatures {
        let pc = PipelineConfig {
            signers: a.signers,
            verify_threads: a.verify_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            chain_id: a.chain_id,
        };
        return signature_pipeline(&cfg, &pc, workloads.len(), a.quiet, a.json.as_ref());
    }
    let bar = progress_bar(a.quiet, total_blocks(&cfg, workloads.len()));
    let report = run_bench(&cfg, a.record.as_ref(), &bar)?;
    bar.finish_and_clear();
    if let Some(dir) = &a.record {
        if !a.quiet {
            eprintln!("recorded to {} (check with: occam replay {})", dir.display(), dir.display());
        }
    }
    finish(
        &(table(&report) + &storage_table(&report)),
        &report,
        &report.mismatches,
        a.json.as_ref(),
        a.quiet,
        "executor result(s) disagree with the sequential reference",
    )
}

/// Prints the table, writes the JSON report if asked, and fails if any run disagreed with its
/// reference (exit code 1).
fn finish(
    table: &str,
    report: &impl serde::Serialize,
    mismatches: &[String],
    json: Option<&PathBuf>,
    quiet: bool,
    what: &str,
) -> anyhow::Result<()> {
    print!("{table}");
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(report)?).with_context(|| format!("writing {}", path.display()))?;
        if !quiet {
            eprintln!("wrote {}", path.display());
        }
    }
    if !mismatches.is_empty() {
        for m in mismatches {
            eprintln!("MISMATCH {m}");
        }
        bail!("{} {what}", mismatches.len());
    }
    Ok(())
}

fn signature_pipeline(cfg: &BenchConfig, pc: &PipelineConfig, workloads: usize, quiet: bool, json: Option<&PathBuf>) -> anyhow::Result<()> {
    let runs = cfg.executor_runs().len();
    let blocks = (workloads * runs * (cfg.measured_blocks() + cfg.warmup_blocks)) as u64;
    let bar = progress_bar(quiet, blocks);
    if !quiet {
        eprintln!(
            "signing {} transactions per workload with {} keys…",
            cfg.block_size * (cfg.measured_blocks() + cfg.warmup_blocks),
            pc.signers
        );
    }
    let report = run_pipeline(cfg, pc, &bar)?;
    bar.finish_and_clear();
    finish(&pipeline_table(&report), &report, &report.mismatches, json, quiet, "pipeline run(s) disagree with the sequential reference")
}

fn sharded(cfg: &BenchConfig, sc: &ShardedConfig, workloads: usize, quiet: bool, json: Option<&PathBuf>) -> anyhow::Result<()> {
    let bar = progress_bar(quiet, sharded_blocks(cfg, sc, workloads));
    let report = run_sharded(cfg, sc, &bar)?;
    bar.finish_and_clear();
    finish(&sharded_table(&report), &report, &report.mismatches, json, quiet, "sharded run(s) disagree with the oracle")
}

fn progress_bar(quiet: bool, blocks: u64) -> indicatif::ProgressBar {
    let bar = if quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(blocks) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} blocks  ETA {eta}  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

fn sweep(a: SweepArgs) -> anyhow::Result<()> {
    let cfg = SweepConfig::load(&a.config)?;
    let bar = progress_bar(a.quiet, cfg.pending_blocks(&a.out)?);
    let summary = run_sweep(&cfg, &a.out, &bar, &mut |i, n, p| {
        bar.println(format!("point {}/{n}: {}", i + 1, occam_bench::sweep::describe(p)));
    })?;
    bar.finish_and_clear();
    eprintln!(
        "{} point(s) run, {} already in {}; report with: occam report {} --html report.html",
        summary.ran,
        summary.skipped,
        a.out.display(),
        a.out.display()
    );
    if !summary.mismatches.is_empty() {
        for m in &summary.mismatches {
            eprintln!("MISMATCH {m}");
        }
        bail!("{} result(s) disagree with the sequential reference", summary.mismatches.len());
    }
    Ok(())
}

fn report(a: ReportArgs) -> anyhow::Result<()> {
    use occam_bench::html::{load_inputs, render_csv, render_html, render_markdown};
    let inputs = load_inputs(&a.reports)?;
    if let Some(path) = &a.html {
        std::fs::write(path, render_html(&inputs)?).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &a.csv {
        std::fs::write(path, render_csv(&inputs)).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if a.md || (a.html.is_none() && a.csv.is_none()) {
        print!("{}", render_markdown(&inputs));
    }
    Ok(())
}

fn compare_reports(a: CompareArgs) -> anyhow::Result<()> {
    let opts = CompareOptions { threshold: parse_threshold(&a.threshold)?, ..CompareOptions::default() };
    let c = compare_files(&a.base, &a.new, &opts)?;
    print!("{}", c.render());
    if let Some(why) = c.failure(&opts) {
        bail!("{why}");
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bench(a) => bench(*a),
        Command::Sweep(a) => sweep(a),
        Command::Report(a) => report(a),
        Command::Compare(a) => compare_reports(a),
        Command::Workloads(a) => workloads(a),
        Command::Keygen(a) => netcmd::keygen(a),
        Command::Cluster(c) => netcmd::cluster(c),
        Command::Node(a) => netcmd::node(a),
        Command::Load(a) => netcmd::load(a),
        Command::Attack(a) => attack::attack(a),
        Command::Replay(a) => {
            let summaries = replay(&a.dir, &a.executor, a.threads)?;
            for s in summaries {
                println!(
                    "{}: {} blocks, {} txs re-executed with {} x{}; final root {} matches",
                    s.workload, s.blocks, s.txs, a.executor, a.threads, s.final_root
                );
            }
            Ok(())
        }
    }
}
