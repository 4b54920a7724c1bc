//! `occam bench --record` on the command line: it records the runs a recording can hold (see
//! RECORDING.md) and refuses the others before anything runs, instead of exiting 0 without a
//! recording.

use std::path::Path;
use std::process::{Command, Output};

/// `occam bench` on a tiny transfer workload, recording to `dir`, with `extra` options.
fn bench_recording(dir: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_occam"))
        .args(["bench", "--workload", "transfer", "--accounts", "20", "--txs", "20", "--block-size", "10", "--warmup", "0"])
        .args(["--executor", "sequential", "--threads", "1", "--quiet", "--record"])
        .arg(dir)
        .args(extra)
        .output()
        .expect("occam runs")
}

#[test]
fn record_refuses_sharded_and_signed_runs_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    for (extra, option) in [
        (&["--shards", "2"][..], "--shards"),
        (&["--verify-signatures"][..], "--verify-signatures"),
        (&["--shards", "1,2", "--verify-signatures"][..], "--shards"),
    ] {
        let dir = tmp.path().join("rec");
        let out = bench_recording(&dir, extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} exited 0: {stderr}");
        assert!(stderr.contains(&format!("error: --record cannot record a run with {option}: ")), "{extra:?}: {stderr}");
        assert!(stderr.contains(&format!("record the workload without {option}")), "{extra:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{extra:?} ran: {}", String::from_utf8_lossy(&out.stdout));
        assert!(!dir.exists(), "{extra:?} wrote a partial recording");
    }
}

#[test]
fn a_recorded_run_replays() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("rec");
    let out = bench_recording(&dir, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest = std::fs::read_to_string(dir.join("transfer/manifest.json")).unwrap();
    assert!(manifest.contains("\"schema\": \"occam-recording/v1\""), "{manifest}");
    let replay = Command::new(env!("CARGO_BIN_EXE_occam")).arg("replay").arg(&dir).output().expect("occam runs");
    let stdout = String::from_utf8_lossy(&replay.stdout);
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    assert!(stdout.contains("transfer: 2 blocks, 20 txs re-executed"), "{stdout}");
}
