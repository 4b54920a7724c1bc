//! The `occam` harness end to end: runs, cross-checks, JSON reports, recordings and replay,
//! and the errors a user gets for bad settings and damaged recordings. Real files, the real
//! binary's code paths; sizes kept small so this runs in seconds.

use occam_bench::record::{replay, RecordingError};
use occam_bench::runner::{run_bench, BenchConfig, BenchReport, REPORT_SCHEMA};
use std::path::PathBuf;

fn config(workloads: &[&str]) -> BenchConfig {
    BenchConfig {
        workloads: workloads.iter().map(|s| s.to_string()).collect(),
        accounts: 500,
        txs: 600,
        block_size: 200,
        warmup_blocks: 1,
        threads: vec![1, 3],
        executors: ["sequential", "parallel", "declared", "auto"].map(String::from).to_vec(),
        distribution: "zipf:0.9".into(),
        seed: 7,
        tx_cost_us: 0.0,
        interleave: true,
        storage: None,
    }
}

/// A fresh, empty directory under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("occam-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn every_workload_runs_under_every_executor_with_one_state_root() {
    let all = ["transfer", "smallbank", "ycsb-a", "ycsb-b", "ycsb-c", "ycsb-d", "ycsb-f", "token", "amm-swap:2", "nft-mint"];
    let report = run_bench(&config(&all), None, &()).unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    // sequential once, then three executors at two thread counts, per workload.
    assert_eq!(report.results.len(), all.len() * 7);
    for w in all {
        let runs: Vec<_> =
            report.results.iter().filter(|r| r.workload == w.parse::<occam_bench::workload::Workload>().unwrap().to_string()).collect();
        assert_eq!(runs.len(), 7, "{w}");
        assert!(runs.iter().all(|r| r.state_root == runs[0].state_root && r.outputs_digest == runs[0].outputs_digest), "{w}");
        assert!(runs.iter().all(|r| r.txs == 600 && r.blocks == 3 && r.tps_median > 0.0), "{w}");
        assert_eq!(runs[0].executor, "sequential");
        assert!((runs[0].speedup - 1.0).abs() < 1e-9);
    }
    let failing = report.results.iter().find(|r| r.workload.starts_with("amm-swap")).unwrap();
    assert!(failing.failure_rate > 0.0, "slippage failures are generated and counted");
}

/// Every built-in scenario, under every executor and on two shards: one state root per
/// scenario, the oracle's on the sharded engine too.
#[test]
fn every_scenario_runs_under_every_executor_and_sharded_with_one_state_root() {
    use occam_bench::sharded::{run_sharded, ShardedConfig};
    let mut cfg = config(&["scenarios"]);
    cfg.accounts = 2_000;
    let report = run_bench(&cfg, None, &()).unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    let names: Vec<&str> = occam_bench::mix::SCENARIOS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names.len(), 10);
    assert_eq!(report.results.len(), names.len() * 7);
    for name in &names {
        let runs: Vec<_> = report.results.iter().filter(|r| r.workload == *name).collect();
        assert_eq!(runs.len(), 7, "{name}");
        assert!(runs.iter().all(|r| r.state_root == runs[0].state_root && r.outputs_digest == runs[0].outputs_digest), "{name}");
        // Tiny runs start with empty memories; the mix's own test checks the steady state.
        assert!(runs[0].failure_rate < 0.4, "{name}: {} of transactions failed", runs[0].failure_rate);
    }
    // The saved report charts every scenario.
    let file = temp_dir("scenarios").join("scenarios.json");
    std::fs::write(&file, serde_json::to_string(&report).unwrap()).unwrap();
    let inputs = occam_bench::html::load_inputs(std::slice::from_ref(&file)).unwrap();
    let page = occam_bench::html::render_html(&inputs).unwrap();
    for name in &names {
        assert!(page.contains(&format!("{name}: throughput")), "{name} charted");
    }
    cfg.executors = ["sequential", "auto"].map(String::from).to_vec();
    cfg.threads = vec![2];
    let sc = ShardedConfig { shards: vec![2], cross_share: 0.0, partitioner: "hash".into(), cross_batching: "per-block".into() };
    let sharded = run_sharded(&cfg, &sc, &()).unwrap();
    assert!(sharded.mismatches.is_empty(), "{:?}", sharded.mismatches);
    for name in &names {
        assert!(sharded.results.iter().any(|r| r.workload == *name && r.shards == 2), "{name} sharded");
    }
}

/// A workload file defines a custom mix without Rust; a bad one is refused with its path and
/// the setting at fault before anything runs.
#[test]
fn workload_files_define_custom_mixes() {
    let dir = temp_dir("mix");
    let file = dir.join("shop.toml");
    std::fs::write(
        &file,
        r#"
name = "shop"
description = "customers buy from a few merchants; merchants restock from suppliers"
[pools.customers]
[pools.merchants]
count = 5
distribution = "zipf:1.2"
[pools.suppliers]
count = 3
[[tx]]
kind = "transfer"
weight = 9
from = "customers"
to = "merchants"
amount = [1, 50]
[[tx]]
kind = "transfer"
weight = 1
from = "merchants"
to = "suppliers"
amount = [100, 400]
"#,
    )
    .unwrap();
    let report = run_bench(&config(&[file.to_str().unwrap()]), None, &()).unwrap();
    assert!(report.mismatches.is_empty());
    assert!(report.results.iter().all(|r| r.workload == "shop" && r.state_root == report.results[0].state_root));
    assert_eq!(report.results[0].failure_rate, 0.0);

    std::fs::write(&file, "name = \"shop\"\n[pools.a]\n[[tx]]\nkind = \"transfer\"\nweight = 1\nfrom = \"a\"\nto = \"b\"\n").unwrap();
    let err = run_bench(&config(&[file.to_str().unwrap()]), None, &()).unwrap_err().to_string();
    assert!(err.contains("shop.toml") && err.contains("pool \"b\""), "{err}");
    let err = run_bench(&config(&["/nonexistent/mix.toml"]), None, &()).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/mix.toml"), "{err}");
    // Pools sized by --accounts must fit the genesis limit.
    std::fs::write(&file, "name = \"big\"\n[pools.a]\n[pools.t]\ncount = 1000\n[[tx]]\nkind = \"token-transfer\"\nweight = 1\ntoken = \"t\"\nfrom = \"a\"\nto = \"a\"\n").unwrap();
    let mut big = config(&[file.to_str().unwrap()]);
    big.accounts = 100_000;
    let err = run_bench(&big, None, &()).unwrap_err().to_string();
    assert!(err.contains("genesis"), "{err}");
}

#[test]
fn json_report_round_trips_with_machine_and_settings() {
    let report = run_bench(&config(&["transfer"]), None, &()).unwrap();
    let json = serde_json::to_string_pretty(&report).unwrap();
    let back: BenchReport = serde_json::from_str(&json).unwrap();
    // Floats may lose their last bit through JSON; everything else must come back exactly.
    assert_eq!((&back.settings, &back.machine, &back.commit), (&report.settings, &report.machine, &report.commit));
    assert_eq!(back.results.len(), report.results.len());
    for (a, b) in back.results.iter().zip(&report.results) {
        assert_eq!(
            (&a.workload, &a.executor, a.threads, &a.state_root, &a.paths),
            (&b.workload, &b.executor, b.threads, &b.state_root, &b.paths)
        );
        assert!((a.tps_median - b.tps_median).abs() <= 1e-9 * b.tps_median);
    }
    assert_eq!(back.schema, REPORT_SCHEMA);
    assert!(back.machine.cores >= 1 && !back.machine.cpu_model.is_empty());
    assert_eq!(back.settings.seed, 7);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    for field in
        ["tps_median", "speedup", "block_latency_us", "reexecutions_per_tx", "failed_validations_per_tx", "state_root", "phases_us"]
    {
        assert!(v["results"][0].get(field).is_some(), "missing {field}");
    }
}

#[test]
fn recording_replays_and_damage_is_reported() {
    let dir = temp_dir("record");
    let mut cfg = config(&["token", "ycsb-d"]);
    cfg.executors = vec!["auto".into()];
    let report = run_bench(&cfg, Some(&dir), &()).unwrap();
    let summaries = replay(&dir, "parallel", 2).unwrap();
    assert_eq!(summaries.len(), 2);
    for s in &summaries {
        let run = report.results.iter().find(|r| r.workload == s.workload).unwrap();
        assert_eq!(s.final_root, run.state_root);
        assert_eq!(s.blocks, 4);
    }
    // One changed output is found and located.
    let blocks = dir.join("token/blocks.jsonl");
    let text = std::fs::read_to_string(&blocks).unwrap();
    let damaged = text.replacen("\"Ok\":", "\"Ok\":1", 1);
    assert_ne!(damaged, text);
    std::fs::write(&blocks, damaged).unwrap();
    match replay(&dir.join("token"), "sequential", 1) {
        Err(RecordingError::Mismatch(m)) => assert!(m.contains("block 0"), "{m}"),
        other => panic!("expected a mismatch, got {other:?}"),
    }
    // Malformed JSON is a typed error with the line number, not a panic.
    std::fs::write(&blocks, "{\"height\": 0, \"txs\": [\n").unwrap();
    match replay(&dir.join("token"), "sequential", 1) {
        Err(RecordingError::Malformed { line, .. }) => assert_eq!(line, 1),
        other => panic!("expected a malformed-line error, got {other:?}"),
    }
    assert!(matches!(replay(&dir.join("nothing-here"), "sequential", 1), Err(RecordingError::Io { .. })));
    let empty = temp_dir("empty");
    assert!(matches!(replay(&empty, "sequential", 1), Err(RecordingError::NotARecording(_))));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&empty);
}

#[test]
fn bad_settings_are_rejected_before_anything_runs() {
    type Breakage = (&'static str, fn(&mut BenchConfig));
    let cases: [Breakage; 9] = [
        ("unknown workload", |c| c.workloads = vec!["tpcc".into()]),
        ("bad distribution", |c| c.distribution = "zipf:abc".into()),
        ("hotspot probability", |c| c.distribution = "hotspot:1.5:3".into()),
        ("zero threads", |c| c.threads = vec![0]),
        ("unknown executor", |c| c.executors = vec!["magic".into()]),
        ("zero block size", |c| c.block_size = 0),
        ("zero accounts", |c| c.accounts = 0),
        ("negative cost", |c| c.tx_cost_us = -1.0),
        ("NaN cost", |c| c.tx_cost_us = f64::NAN),
    ];
    for (what, break_it) in cases {
        let mut c = config(&["transfer"]);
        break_it(&mut c);
        let err = c.validate().expect_err(what).to_string();
        assert!(!err.is_empty(), "{what}");
        assert!(run_bench(&c, None, &()).is_err(), "{what}");
    }
}

#[test]
fn emulated_cost_is_calibrated_and_changes_the_state() {
    let mut cfg = config(&["transfer"]);
    cfg.executors = vec!["parallel".into()];
    cfg.txs = 200;
    cfg.interleave = false;
    let plain = run_bench(&cfg, None, &()).unwrap();
    cfg.tx_cost_us = 2.0;
    let costly = run_bench(&cfg, None, &()).unwrap();
    assert!(costly.calibration.work_rounds > 0 && costly.calibration.ns_per_round > 0.0);
    assert!(costly.mismatches.is_empty());
    assert_ne!(plain.results[0].state_root, costly.results[0].state_root, "the work digest is written to state");
}

/// `--verify-signatures`: signed blocks through the pipeline, every executor, results equal to
/// the sequential run, nothing rejected, both block forms measured, stages and bottleneck named.
#[test]
fn signature_pipeline_runs_and_agrees_with_sequential() {
    use occam_bench::pipeline::{pipeline_table, run_pipeline, PipelineConfig, PipelineReport, PIPELINE_SCHEMA};
    let mut cfg = config(&["transfer", "token"]);
    cfg.txs = 120;
    cfg.block_size = 40;
    cfg.threads = vec![2];
    let pc = PipelineConfig { signers: 8, verify_threads: 2, chain_id: 5 };
    let report = run_pipeline(&cfg, &pc, &()).unwrap();
    assert_eq!(report.schema, PIPELINE_SCHEMA);
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    assert_eq!(report.results.len(), 2 * 4);
    for r in &report.results {
        assert_eq!((r.txs, r.blocks, r.rejected), (120, 3, 0), "{} {}", r.workload, r.executor);
        assert_eq!(r.stages.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["verify", "execute"]);
        assert!(r.tps > 0.0 && r.overlap > 0.0);
        assert!(r.stages.iter().any(|s| s.name == r.bottleneck));
    }
    let roots: Vec<_> = report.results.iter().filter(|r| r.workload == "transfer").map(|r| &r.state_root).collect();
    assert!(roots.windows(2).all(|w| w[0] == w[1]));
    for f in &report.block_forms {
        assert_eq!(f.signed_bytes - f.aggregated_bytes, 39 * 96, "one signature instead of forty");
    }
    let table = pipeline_table(&report);
    assert!(table.contains("bottleneck") && table.contains("aggregated"));
    let back: PipelineReport = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
    assert_eq!(back.results.len(), report.results.len());
    // Bad settings are refused before any work.
    let bad = PipelineConfig { signers: 0, ..pc.clone() };
    assert!(run_pipeline(&cfg, &bad, &()).unwrap_err().to_string().contains("--signers"));
    cfg.tx_cost_us = 5.0;
    assert!(run_pipeline(&cfg, &pc, &()).unwrap_err().to_string().contains("--tx-cost-us"));
}

/// `--shards`: the sharded engine against one shard on the same blocks, the asked share of
/// cross-shard transfers, per-shard figures, and the oracle check of every block.
#[test]
fn sharded_runs_measure_shards_and_agree_with_the_oracle() {
    use occam_bench::sharded::{run_sharded, sharded_table, ShardedConfig, ShardedReport, SHARDED_SCHEMA};
    let mut cfg = config(&["transfer", "smallbank"]);
    cfg.distribution = "uniform".into();
    cfg.threads = vec![1, 2];
    cfg.executors = ["sequential", "auto"].map(String::from).to_vec();
    for (partitioner, share) in [("hash", 0.0), ("hash", 0.25), ("range", 1.0)] {
        let sc =
            ShardedConfig { shards: vec![1, 3], cross_share: share, partitioner: partitioner.into(), cross_batching: "per-block".into() };
        let report = run_sharded(&cfg, &sc, &()).unwrap();
        assert_eq!(report.schema, SHARDED_SCHEMA);
        assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
        // Per workload and shard count: sequential (baseline + 1 run), auto (baseline + 2 runs).
        assert_eq!(report.results.len(), 2 * 2 * 5);
        for r in report.results.iter().filter(|r| r.workload == "transfer" && r.shards == 3) {
            assert!((r.cross_share - share).abs() < 0.08, "{partitioner}: asked {share}, measured {}", r.cross_share);
            assert_eq!(r.shard_tps.len(), 3);
            assert!(r.imbalance >= 1.0 && r.tps > 0.0 && r.speedup > 0.0);
        }
        let baseline_roots: Vec<_> =
            report.results.iter().filter(|r| r.workload == "transfer" && r.shards == 3).map(|r| &r.state_root).collect();
        assert!(baseline_roots.windows(2).all(|w| w[0] == w[1]));
        assert!(sharded_table(&report).contains("per-shard TPS"));
        let back: ShardedReport = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        assert_eq!(back.results.len(), report.results.len());
    }
    let bad = |shards: Vec<usize>, share: f64, p: &str| {
        run_sharded(&cfg, &ShardedConfig { shards, cross_share: share, partitioner: p.into(), cross_batching: "per-block".into() }, &())
            .unwrap_err()
            .to_string()
    };
    assert!(bad(vec![0], 0.0, "hash").contains("--shards"));
    assert!(bad(vec![2], 1.5, "hash").contains("--cross-shard"));
    assert!(!bad(vec![2], 0.0, "ranges").is_empty());
    let sc = ShardedConfig { shards: vec![2], cross_share: 0.5, partitioner: "hash".into(), cross_batching: "per-tx".into() };
    assert!(run_sharded(&cfg, &sc, &()).unwrap().mismatches.is_empty());
    let sc = ShardedConfig { cross_batching: "reservation".into(), ..sc };
    let report = run_sharded(&cfg, &sc, &()).unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    let sc = ShardedConfig { cross_batching: "sometimes".into(), ..sc };
    assert!(run_sharded(&cfg, &sc, &()).unwrap_err().to_string().contains("--cross-batching"));
}

/// `occam sweep`: the Cartesian product of the axes, one report per point appended to a JSON
/// Lines file, resumed without re-running finished points; bad files are typed errors.
#[test]
fn sweeps_run_every_point_once_and_resume() {
    use occam_bench::compare::AnyReport;
    use occam_bench::sweep::{read_lines, run_sweep, SweepConfig, SweepError};
    let dir = temp_dir("sweep");
    let config = dir.join("sweep.toml");
    std::fs::write(
        &config,
        "[base]\naccounts = 300\ntxs = 200\nblock-size = 100\nthreads = [1, 2]\nexecutor = [\"sequential\", \"auto\"]\n\n\
         [axes]\nworkload = [\"transfer\", \"token\"]\ndistribution = [\"uniform\", \"zipf:0.9\"]\n",
    )
    .unwrap();
    let cfg = SweepConfig::load(&config).unwrap();
    assert_eq!(cfg.plan().len(), 4);
    let out = dir.join("results.jsonl");
    let mut seen = Vec::new();
    let s = run_sweep(&cfg, &out, &(), &mut |i, n, _| seen.push((i, n))).unwrap();
    assert_eq!((s.ran, s.skipped), (4, 0));
    assert!(s.mismatches.is_empty());
    assert_eq!(seen, vec![(0, 4), (1, 4), (2, 4), (3, 4)]);
    let lines = read_lines(&out).unwrap();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3].point["workload"], "token");
    assert!(matches!(&lines[3].report, AnyReport::Bench(r) if r.settings.distribution == "zipf:0.9"));
    // Interrupted after two points: the rerun does only the other two.
    let kept: Vec<String> = std::fs::read_to_string(&out).unwrap().lines().take(2).map(String::from).collect();
    std::fs::write(&out, kept.join("\n") + "\n").unwrap();
    let s = run_sweep(&cfg, &out, &(), &mut |_, _, _| {}).unwrap();
    assert_eq!((s.ran, s.skipped), (2, 2));
    assert_eq!(read_lines(&out).unwrap().len(), 4);
    // Bad files.
    std::fs::write(&config, "[base]\nthreadz = [1]\n").unwrap();
    assert!(matches!(SweepConfig::load(&config), Err(SweepError::Config { .. })));
    std::fs::write(&config, "[axes]\ndistribution = [\"pareto\"]\n").unwrap();
    assert!(matches!(SweepConfig::load(&config), Err(SweepError::Value { key, .. }) if key == "axes.distribution = \"pareto\""));
    std::fs::write(&out, "{not json}\n").unwrap();
    assert!(matches!(read_lines(&out), Err(SweepError::Results { line: 1, .. })));
    assert!(matches!(SweepConfig::load(&dir.join("missing.toml")), Err(SweepError::Io { .. })));
}

/// `occam sweep` over the sharded engine: `executor`, `threads`, `shards` and `cross_shard` as
/// axes; every line holds an `occam-bench-sharded/v1` report and says so; resume still works.
#[test]
fn sweeps_over_shards_threads_and_executors_run_the_sharded_bench() {
    use occam_bench::compare::AnyReport;
    use occam_bench::sharded::SHARDED_SCHEMA;
    use occam_bench::sweep::{read_lines, run_sweep, SweepConfig};
    let dir = temp_dir("sweep-shards");
    let config = dir.join("sweep.toml");
    std::fs::write(
        &config,
        "[base]\naccounts = 300\ntxs = 200\nblock-size = 100\npartitioner = \"hash\"\n\n\
         [axes]\nexecutor = [\"auto\"]\nshards = [1, 2]\ncross-shard = [0.0, 0.5]\nthreads = [1, 2]\n",
    )
    .unwrap();
    let cfg = SweepConfig::load(&config).unwrap();
    let plan = cfg.plan();
    assert_eq!(plan.len(), 8);
    assert!(plan.iter().all(|p| p.sharded.is_some() && p.bench.executors == ["auto"] && p.bench.threads.len() == 1));
    let out = dir.join("results.jsonl");
    let total = cfg.pending_blocks(&out).unwrap();
    assert_eq!(total, plan.iter().map(|p| p.blocks()).sum::<u64>());
    let s = run_sweep(&cfg, &out, &(), &mut |_, _, _| {}).unwrap();
    assert_eq!((s.ran, s.skipped), (8, 0));
    assert!(s.mismatches.is_empty(), "{:?}", s.mismatches);
    assert_eq!(cfg.pending_blocks(&out).unwrap(), 0);
    // Every line names its report's schema next to the point.
    let text = std::fs::read_to_string(&out).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["schema"], SHARDED_SCHEMA);
        assert_eq!(v["report"]["schema"], SHARDED_SCHEMA);
    }
    let lines = read_lines(&out).unwrap();
    let last = &lines[7];
    assert_eq!(
        (last.point["shards"].as_u64(), last.point["cross_shard"].as_f64(), last.point["threads"].as_u64()),
        (Some(2), Some(0.5), Some(2))
    );
    let AnyReport::Sharded(r) = &last.report else { panic!("a sharded point holds a sharded report") };
    assert_eq!(
        (r.sharding.shards.as_slice(), r.sharding.cross_share, r.settings.threads.as_slice()),
        ([2].as_slice(), 0.5, [2].as_slice())
    );
    let run = r.results.iter().find(|x| x.shards == 2 && x.threads == 2).unwrap();
    assert!((run.cross_share - 0.5).abs() < 0.15 && run.cross_overhead > 0.0, "{run:?}");
    // Interrupted after three points: the rerun does the other five.
    let kept: Vec<&str> = text.lines().take(3).collect();
    std::fs::write(&out, kept.join("\n") + "\n").unwrap();
    assert!(cfg.pending_blocks(&out).unwrap() < total);
    let s = run_sweep(&cfg, &out, &(), &mut |_, _, _| {}).unwrap();
    assert_eq!((s.ran, s.skipped), (5, 3));
    assert_eq!(read_lines(&out).unwrap().len(), 8);
}

/// Bad values in a sweep file are typed errors that name the key (and the value, for an axis).
#[test]
fn sweep_values_are_checked_per_key() {
    use occam_bench::sweep::{SweepConfig, SweepError};
    let dir = temp_dir("sweep-errors");
    let config = dir.join("sweep.toml");
    let key_of = |toml: &str| {
        std::fs::write(&config, toml).unwrap();
        match SweepConfig::load(&config) {
            Err(SweepError::Value { key, message, .. }) => {
                assert!(!message.is_empty());
                key
            }
            other => panic!("{toml}: {other:?}"),
        }
    };
    assert_eq!(key_of("[axes]\nthreads = [1, 0]\n"), "axes.threads = 0");
    assert_eq!(key_of("[base]\nexecutor = [\"auto\", \"fast\"]\n"), "base.executor");
    assert_eq!(key_of("[base]\nblock_size = 0\n"), "base.block_size");
    assert_eq!(key_of("[axes]\ntx-cost-us = [1.0, -2.0]\n"), "axes.tx_cost_us = -2.0");
    assert_eq!(key_of("[axes]\nshards = [2, 0]\n"), "axes.shards = 0");
    assert_eq!(key_of("[base]\nshards = [2]\n[axes]\ncross_shard = [0.1, 1.5]\n"), "axes.cross_shard = 1.5");
    assert_eq!(key_of("[base]\nshards = [2]\ncross-batching = \"sometimes\"\n"), "base.cross_batching");
    // Sharding settings without shard counts would be ignored: refused instead.
    assert_eq!(key_of("[axes]\ncross_shard = [0.1]\n"), "axes.cross_shard = 0.1");
    assert_eq!(key_of("[base]\npartitioner = \"range\"\n"), "base.partitioner");
    // Wrong only in combination: the key and the point.
    assert_eq!(key_of("[base]\npartitioner = \"range:100\"\n[axes]\nshards = [2, 3]\n"), "partitioner at shards=3");
    assert_eq!(key_of("[axes]\npartitioner = [\"hash\", \"ranges\"]\nshards = [2]\n"), "partitioner at partitioner=ranges, shards=2");
    // Unknown keys and wrong types come from the TOML reader, which names them too.
    std::fs::write(&config, "[axes]\nshard = [2]\n").unwrap();
    assert!(matches!(SweepConfig::load(&config), Err(SweepError::Config { message, .. }) if message.contains("shard")));
    std::fs::write(&config, "[axes]\nthreads = [\"two\"]\n").unwrap();
    assert!(matches!(SweepConfig::load(&config), Err(SweepError::Config { message, .. }) if message.contains("threads")));
}

/// Results files written before lines named their schema are still read, and resumed.
#[test]
fn sweep_results_without_a_schema_field_still_read() {
    use occam_bench::compare::AnyReport;
    use occam_bench::sweep::{read_lines, SweepError};
    let dir = temp_dir("sweep-old");
    let mut cfg = config(&["transfer"]);
    cfg.executors = vec!["sequential".into()];
    let report = run_bench(&cfg, None, &()).unwrap();
    let old = serde_json::json!({"point": {"seed": 7}, "report": report});
    let out = dir.join("old.jsonl");
    std::fs::write(&out, format!("{old}\n")).unwrap();
    let lines = read_lines(&out).unwrap();
    assert!(matches!(&lines[0].report, AnyReport::Bench(r) if r.results.len() == report.results.len()));
    assert_eq!(lines[0].point["seed"], 7);
    // A line whose schema disagrees with its report's is damaged.
    let bad = serde_json::json!({"point": {}, "schema": "occam-bench-sharded/v1", "report": report});
    std::fs::write(&out, format!("{old}\n{bad}\n")).unwrap();
    assert!(matches!(read_lines(&out), Err(SweepError::Results { line: 2, .. })));
}

#[test]
fn storage_twins_persist_every_block_and_report_what_it_cost() {
    let dir = temp_dir("storage");
    let mut cfg = config(&["transfer", "smallbank"]);
    cfg.executors = vec!["parallel".into(), "declared".into()];
    cfg.interleave = false;
    cfg.storage = Some(format!("rocksdb:{}", dir.display()));
    let report = run_bench(&cfg, None, &()).unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    // Per workload: sequential, then each executor at two thread counts, in memory and persisted.
    assert_eq!(report.results.len(), 2 * (1 + 2 * 2 * 2));
    let twins: Vec<_> = report.results.iter().filter(|r| r.executor.ends_with("+rocksdb")).collect();
    assert_eq!(twins.len(), 8);
    for t in &twins {
        let s = t.storage.as_ref().expect("a persisted twin reports storage figures");
        assert!(s.synced && s.persist_us.p50 > 0.0 && s.tps_vs_memory > 0.0 && s.bytes_per_tx > 0.0, "{s:?}");
        assert!((1.0..=8.0).contains(&s.blocks_per_write), "{s:?}");
        let memory = report
            .results
            .iter()
            .find(|r| r.workload == t.workload && r.threads == t.threads && format!("{}+rocksdb", r.executor) == t.executor)
            .unwrap();
        assert!(memory.storage.is_none());
        assert_eq!(memory.state_root, t.state_root);
    }
    // Each twin's store is kept under DIR and holds the state of its last block.
    let store_dir = dir.join(format!("{}-{}-x3", twins[0].workload, twins[3].executor));
    let identity = occam_store::StoreIdentity::new(0, 0);
    let store = occam_store::Store::open(&store_dir, identity, &occam_store::StoreOptions::default()).unwrap();
    let (state, point) = store.load_state(0).unwrap();
    assert_eq!(point.unwrap().height, 4, "one warm-up and three measured blocks");
    assert_eq!(state.root().to_hex(), twins[3].state_root);
    drop(store);
    // A second run into the same folder is refused before anything runs over the stores.
    let err = run_bench(&cfg, None, &()).unwrap_err().to_string();
    assert!(err.contains("already holds files"), "{err}");
    // A bad setting says what is accepted.
    cfg.storage = Some("lmdb".into());
    assert!(run_bench(&cfg, None, &()).unwrap_err().to_string().contains("rocksdb:DIR"));
    let _ = std::fs::remove_dir_all(&dir);
}
