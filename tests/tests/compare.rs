//! `occam compare` end to end: real bench runs written to real JSON files and compared through
//! `compare_files`, `Comparison::render` and `Comparison::failure`, the functions behind the
//! command and its exit status (1 when `failure` says why).
//!
//! The slowed run is honestly slower: every transaction carries emulated VM work (`tx_cost_us`,
//! calibrated hashing, the same knob a user turns to model a heavier VM) of about five times
//! what a transaction costs in the base run, so throughput drops about sixfold, far beyond any
//! noise. The threshold is 50 %: a re-run on a busy CI machine can be a few tens of percent
//! off, a sixfold drop cannot.

use occam_bench::compare::{compare_files, parse_threshold, CompareOptions, Verdict, FIGURE_TPS};
use occam_bench::runner::{run_bench, BenchConfig, BenchReport};
use std::path::{Path, PathBuf};

fn config() -> BenchConfig {
    BenchConfig {
        workloads: vec!["transfer".into()],
        accounts: 2_000,
        txs: 8_000,
        block_size: 1_000,
        warmup_blocks: 1,
        threads: vec![1],
        executors: ["sequential", "auto"].map(String::from).to_vec(),
        distribution: "uniform".into(),
        seed: 5,
        tx_cost_us: 0.0,
        interleave: false,
        storage: None,
    }
}

/// Runs `cfg` and writes its report to `dir/name`, as `occam bench --json` does.
fn bench_to(dir: &Path, name: &str, cfg: &BenchConfig) -> (BenchReport, PathBuf) {
    let report = run_bench(cfg, None, &()).unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    (report, path)
}

#[test]
fn compare_flags_a_slowed_run_and_not_a_rerun() {
    let dir = std::env::temp_dir().join(format!("occam-compare-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (base, base_path) = bench_to(&dir, "base.json", &config());
    assert_eq!(base.results[0].tps_per_block.len(), 8, "enough per-block samples for the test");

    // About five transactions' worth of emulated VM work on every transaction.
    let sequential = base.results.iter().find(|r| r.executor == "sequential").unwrap();
    let per_tx_us = 1e6 / sequential.tps_median;
    let slow_cfg = BenchConfig { tx_cost_us: (5.0 * per_tx_us).max(2.0), ..config() };
    let (slow, slow_path) = bench_to(&dir, "slow.json", &slow_cfg);

    let opts = CompareOptions { threshold: parse_threshold("50%").unwrap(), ..CompareOptions::default() };

    // The slowed run: throughput regressed, significantly, for every executor; exit status 1.
    let c = compare_files(&base_path, &slow_path, &opts).unwrap();
    let tps: Vec<_> = c.changes.iter().filter(|f| f.figure == FIGURE_TPS).collect();
    assert_eq!(tps.len(), 2);
    for f in &tps {
        assert_eq!(f.verdict, Verdict::Regressed, "{f:?}");
        assert!(f.change < -0.5 && f.p_value.unwrap() < 0.05, "{f:?}");
    }
    assert!(c.regressions() >= 2);
    let why = c.failure(&opts).expect("a regression fails the command");
    assert!(why.contains("regressed beyond 50%"), "{why}");
    // The settings differ, and the comparison says so instead of refusing.
    let out = c.render();
    assert!(out.contains("REGRESSED"), "{out}");
    let settings = format!("note: settings differ: tx_cost_us 0.0 vs {}", slow.settings.tx_cost_us);
    assert!(out.contains(&settings), "{out}");

    // An identical re-run is not a regression. A neighbour's burst on a shared machine can slow
    // a whole run at once, which no test on its blocks can tell from a regression: one re-run
    // in three, at a quiet moment, must pass.
    let quiet_rerun = (0..3).any(|i| {
        let (_, rerun_path) = bench_to(&dir, &format!("rerun-{i}.json"), &config());
        let c = compare_files(&base_path, &rerun_path, &opts).unwrap();
        assert!(!c.notes.iter().any(|n| n.contains("settings differ")), "{:?}", c.notes);
        assert!(c.only_in_base.is_empty() && c.only_in_new.is_empty());
        assert_eq!(c.failure(&opts).is_some(), c.regressions() > 0);
        if c.regressions() > 0 {
            eprintln!("re-run {i} flagged (a busy machine?):\n{}", c.render());
        }
        c.regressions() == 0
    });
    assert!(quiet_rerun, "every re-run of identical settings was flagged as a regression");
    // A report against itself: every figure unchanged.
    let c = compare_files(&base_path, &base_path, &CompareOptions::default()).unwrap();
    assert!(c.changes.iter().all(|f| f.verdict == Verdict::Unchanged), "{}", c.render());

    // Reports of other kinds are refused with their schema named.
    let sharded = dir.join("sharded.json");
    std::fs::write(&sharded, r#"{"schema": "occam-bench-sharded/v1"}"#).unwrap();
    let e = compare_files(&base_path, &sharded, &opts).unwrap_err().to_string();
    assert!(e.contains("occam-bench-sharded/v1") && e.contains("occam-bench/v1"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
