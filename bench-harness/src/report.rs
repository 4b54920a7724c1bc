//! The human-readable results table.

use crate::runner::BenchReport;
use std::fmt::Write;

/// Formats a rate with a k/M suffix.
pub fn human_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// The results table, one row per run, with a header naming machine, commit and settings.
pub fn table(r: &BenchReport) -> String {
    let s = &r.settings;
    let mut out = String::new();
    let _ = writeln!(out, "occam bench  commit {}  {}", r.commit, r.machine.summary());
    let _ = writeln!(
        out,
        "accounts {}  block {} txs  {} measured blocks after {} warm-up  distribution {}  seed {}  tx cost {} us ({} rounds at {:.0} ns)",
        s.accounts,
        s.block_size,
        s.measured_blocks(),
        s.warmup_blocks,
        s.distribution,
        s.seed,
        s.tx_cost_us,
        r.calibration.work_rounds,
        r.calibration.ns_per_round
    );
    let _ = writeln!(out);
    let header =
        ["workload", "executor", "thr", "TPS", "speedup", "p50 ms", "p99 ms", "exec%", "re-exec/tx", "fail-val/tx", "path", "state root"];
    let rows: Vec<[String; 12]> = r
        .results
        .iter()
        .map(|x| {
            let path = x.paths.iter().max_by_key(|(_, n)| **n).map(|(p, _)| p.clone()).unwrap_or_default();
            let path = if x.paths.len() > 1 { format!("{path}+") } else { path };
            [
                x.workload.clone(),
                x.executor.clone(),
                x.threads.to_string(),
                human_rate(x.tps_median),
                format!("{:.2}x", x.speedup),
                format!("{:.2}", x.block_latency_us.p50 / 1e3),
                format!("{:.2}", x.block_latency_us.p99 / 1e3),
                format!("{:.0}", x.exec_share * 100.0),
                format!("{:.3}", x.reexecutions_per_tx),
                format!("{:.3}", x.failed_validations_per_tx),
                path,
                x.state_root[..12].to_string(),
            ]
        })
        .collect();
    let lines = aligned(&header, &rows, |i| (3..10).contains(&i));
    let _ = writeln!(out, "{}\n{}", lines[0], lines[1]);
    let mut last = "";
    for (row, x) in lines[2..].iter().zip(&r.results) {
        if !last.is_empty() && last != x.workload {
            let _ = writeln!(out);
        }
        last = &x.workload;
        let _ = writeln!(out, "{row}");
    }
    out
}

/// The persisted twins of a `--storage` run: what persisting cost, next to in-memory.
/// Empty when the run persisted nothing.
pub fn storage_table(r: &BenchReport) -> String {
    let header =
        ["workload", "executor", "thr", "TPS", "vs memory", "write p50 ms", "write p99 ms", "blocks/write", "wait/block ms", "bytes/tx"];
    let rows: Vec<[String; 10]> = r
        .results
        .iter()
        .filter_map(|x| {
            let s = x.storage.as_ref()?;
            Some([
                x.workload.clone(),
                x.executor.clone(),
                x.threads.to_string(),
                human_rate(x.tps_mean),
                format!("{:.2}x", s.tps_vs_memory),
                format!("{:.2}", s.persist_us.p50 / 1e3),
                format!("{:.2}", s.persist_us.p99 / 1e3),
                format!("{:.2}", s.blocks_per_write),
                format!("{:.2}", s.wait_mean_us / 1e3),
                format!("{:.0}", s.bytes_per_tx),
            ])
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let _ = writeln!(out, "\npersisted to RocksDB (each block in a synced write, overlapping the next blocks' execution; TPS is the mean over the run, against the in-memory twin's in `vs memory`)");
    for l in aligned(&header, &rows, |i| i >= 2) {
        let _ = writeln!(out, "{l}");
    }
    out
}

/// A table as lines: the header, a rule, then one line per row; columns padded to their widest
/// cell, right-aligned where `right(column)` (figures), left-aligned otherwise (text).
fn aligned<const N: usize>(header: &[&str; N], rows: &[[String; N]], right: impl Fn(usize) -> bool) -> Vec<String> {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if right(i) {
                let _ = write!(l, "{c:>w$}  ");
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        l.trim_end().to_string()
    };
    let mut lines = vec![line(&header.map(String::from)), widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  ")];
    lines.extend(rows.iter().map(|r| line(r)));
    lines
}
