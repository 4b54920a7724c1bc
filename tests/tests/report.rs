//! `occam report` end to end: real bench runs, sharded runs and sweeps turned into the HTML page,
//! CSV and Markdown; the page is self-contained (no script, no external resource), crowded
//! charts are split, and headless Chromium renders it with every chart present.
//!
//! The Chromium part needs `/usr/bin/chromium` (or `OCCAM_CHROMIUM`); `.ci/run` installs it
//! from the distribution's packages and sets `OCCAM_REQUIRE_CHROMIUM=1`, which makes its absence
//! a failure instead of a skip.

use occam_bench::compare::AnyReport;
use occam_bench::html::{load_inputs, render_csv, render_html, render_markdown, Input, CSV_HEADER, MAX_SERIES};
use occam_bench::runner::{run_bench, BenchConfig};
use occam_bench::sharded::{run_sharded, ShardedConfig, ShardedReport, SHARDED_SCHEMA};
use occam_bench::sweep::{run_sweep, SweepConfig};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh, empty directory under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("occam-report-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The page loads nothing: no script, no link, no URL but the SVG namespace.
fn assert_self_contained(page: &str) {
    for forbidden in ["<script", " src=", " href=", "url(", "<link", "@import"] {
        assert!(!page.contains(forbidden), "the page must not load anything: found {forbidden:?}");
    }
    let urls: Vec<&str> = page.match_indices("http").map(|(i, _)| &page[i..(i + 30).min(page.len())]).collect();
    assert!(urls.iter().all(|u| u.starts_with("http://www.w3.org/2000/svg")), "only the SVG namespace: {urls:?}");
}

/// How many charts of `kind` the page has.
fn charts(page: &str, kind: &str) -> usize {
    page.matches(&format!("data-chart=\"{kind}\"")).count()
}

/// Legend entries of every chart: none has more lines than it can show apart.
fn legend_sizes(page: &str) -> Vec<usize> {
    page.split("<figure").skip(1).map(|f| f.split("</figure>").next().unwrap_or("").matches("class=\"key\"").count()).collect()
}

/// A sweep file under `dir`, run into `dir/results.jsonl`; its inputs for the report.
fn sweep(dir: &Path, toml: &str) -> Vec<Input> {
    let config = dir.join("sweep.toml");
    std::fs::write(&config, toml).unwrap();
    let out = dir.join("results.jsonl");
    let s = run_sweep(&SweepConfig::load(&config).unwrap(), &out, &(), &mut |_, _, _| {}).unwrap();
    assert!(s.mismatches.is_empty(), "{:?}", s.mismatches);
    load_inputs(&[out]).unwrap()
}

fn sharded_report() -> ShardedReport {
    let mut cfg = config();
    cfg.workloads = vec!["transfer".into()];
    cfg.threads = vec![1, 2];
    cfg.executors = ["sequential", "auto"].map(String::from).to_vec();
    let sc = ShardedConfig { shards: vec![1, 2, 4], cross_share: 0.1, partitioner: "hash".into(), cross_batching: "per-block".into() };
    let r = run_sharded(&cfg, &sc, &()).unwrap();
    assert!(r.mismatches.is_empty(), "{:?}", r.mismatches);
    r
}

fn config() -> BenchConfig {
    BenchConfig {
        workloads: vec!["transfer".into(), "smallbank".into()],
        accounts: 500,
        txs: 600,
        block_size: 200,
        warmup_blocks: 1,
        threads: vec![1, 2, 4],
        executors: ["sequential", "parallel", "declared", "auto"].map(String::from).to_vec(),
        distribution: "uniform".into(),
        seed: 3,
        tx_cost_us: 0.0,
        interleave: false,
        storage: None,
    }
}

fn report() -> occam_bench::runner::BenchReport {
    run_bench(&config(), None, &()).unwrap()
}

#[test]
fn html_page_is_self_contained_with_every_chart() {
    let r = report();
    let file = |name: &str, r: &occam_bench::runner::BenchReport| vec![Input::file(name, AnyReport::Bench(r.clone()))];
    let page = render_html(&file("run.json", &r)).unwrap();
    // Four charts per workload: throughput, speedup, latency, per-block series.
    assert_eq!(page.matches("<svg").count(), 8);
    for kind in ["throughput", "speedup", "latency", "per-block"] {
        assert_eq!(charts(&page, kind), 2, "{kind}");
    }
    assert_self_contained(&page);
    assert!(page.contains("All results") && page.contains(&r.commit));
    // Text that looks like markup is escaped.
    let mut odd = r.clone();
    odd.commit = "<b>&".into();
    assert!(render_html(&file("x", &odd)).unwrap().contains("&lt;b&gt;&amp;"));

    let table = render_csv(&file("run.json", &r));
    assert_eq!(table.lines().count(), 1 + r.results.len());
    assert!(table.lines().next().unwrap().starts_with("report,commit,cpu"));
    let fields = CSV_HEADER.split(',').count();
    assert!(table.lines().all(|l| l.split(',').count() == fields), "{table}");
    let md = render_markdown(&file("run.json", &r));
    assert!(md.contains("| workload | executor | threads |") && md.lines().count() > r.results.len());
}

#[test]
fn headless_chromium_renders_the_page_offline() {
    let chromium = std::env::var_os("OCCAM_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        assert!(
            std::env::var_os("OCCAM_REQUIRE_CHROMIUM").is_none(),
            "OCCAM_REQUIRE_CHROMIUM is set but {} is missing",
            chromium.display()
        );
        eprintln!("skipping: no Chromium at {}", chromium.display());
        return;
    }
    let dir = std::env::temp_dir().join(format!("occam-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("report.html");
    let inputs = [Input::file("run.json", AnyReport::Bench(report())), Input::file("shards.json", AnyReport::Sharded(sharded_report()))];
    std::fs::write(&page, render_html(&inputs).unwrap()).unwrap();
    // Every host resolves to nothing: a page that needed the network would lose content.
    let base = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND",
    ];
    let profile = format!("--user-data-dir={}", dir.join("profile").display());
    let url = format!("file://{}", page.display());
    let dom = Command::new(&chromium).args(base).arg(&profile).arg("--dump-dom").arg(&url).output().unwrap();
    assert!(dom.status.success(), "chromium failed: {}", String::from_utf8_lossy(&dom.stderr));
    let dom = String::from_utf8_lossy(&dom.stdout);
    // Two workloads of four bench charts, and the sharded throughput and speedup of transfer.
    assert_eq!(dom.matches("<svg").count(), 10, "every chart is in the rendered page");
    assert_eq!((charts(&dom, "sharded-throughput"), charts(&dom, "sharded-speedup")), (1, 1));
    assert!(dom.contains("<polyline") || dom.contains("<path"), "the charts have lines");
    let shot = dir.join("report.png");
    let out = Command::new(&chromium)
        .args(base)
        .arg(&profile)
        .arg("--window-size=1200,1600")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "a real screenshot");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `occam bench --shards … --json F` files and sweeps of the sharded engine: throughput and
/// speedup against shards, the cross-shard phase against the cross-shard share, in the page,
/// the CSV and the Markdown.
#[test]
fn sharded_reports_and_sweeps_are_charted() {
    let dir = temp_dir("sharded");
    let file = dir.join("shards.json");
    let r = sharded_report();
    std::fs::write(&file, serde_json::to_string_pretty(&r).unwrap()).unwrap();
    let inputs = load_inputs(std::slice::from_ref(&file)).unwrap();
    assert!(matches!(&inputs[0].report, AnyReport::Sharded(x) if x.schema == SHARDED_SCHEMA));
    let page = render_html(&inputs).unwrap();
    assert_self_contained(&page);
    assert_eq!((charts(&page, "sharded-throughput"), charts(&page, "sharded-speedup")), (1, 1));
    // One cross-shard share: nothing to draw against it.
    assert_eq!(charts(&page, "cross-overhead"), 0);
    // A line per executor and thread count per shard (the 1 x 1 baseline is in the thread-1 line).
    for label in ["sequential, 1 thr/shard", "auto, 1 thr/shard", "auto, 2 thr/shard", "1× (1 shard × 1 thread)"] {
        assert!(page.contains(&format!("</i>{label}</span>")), "{label}");
    }
    assert!(page.contains("Sharded results") && page.contains(SHARDED_SCHEMA));

    // A sweep over shard counts and cross-shard shares: a line per share, and the overhead.
    let inputs = sweep(
        &dir,
        "[base]\nworkload = \"transfer\"\naccounts = 400\ntxs = 400\nblock-size = 100\nthreads = [1]\nexecutor = [\"auto\"]\n\
         [axes]\nshards = [1, 2, 4]\ncross-shard = [0.0, 0.5]\n",
    );
    assert_eq!(inputs.len(), 6);
    assert!(inputs.iter().all(|i| i.group == "base"), "shards and shares are on the charts, not in the groups");
    let page = render_html(&inputs).unwrap();
    assert_self_contained(&page);
    for kind in ["sharded-throughput", "sharded-speedup", "cross-overhead"] {
        assert_eq!(charts(&page, kind), 1, "{kind}");
    }
    for label in ["cross-shard 0%", "cross-shard 50%", "2 shards", "4 shards"] {
        assert!(page.contains(&format!("</i>{label}</span>")), "{label}");
    }
    let table = render_csv(&inputs);
    let rows: usize = inputs.iter().map(|i| if let AnyReport::Sharded(r) = &i.report { r.results.len() } else { 0 }).sum();
    assert_eq!(table.lines().count(), 1 + rows);
    let fields = CSV_HEADER.split(',').count();
    assert!(table.lines().all(|l| l.split(',').count() == fields), "{table}");
    assert!(table.lines().skip(1).all(|l| l.contains(SHARDED_SCHEMA)));
    let md = render_markdown(&inputs);
    assert!(md.contains("; sharded: partitioner `hash`") && md.contains("| workload | executor | shards | threads/shard |"));

    // Bench and sharded reports on one page: both sections.
    let mut both = load_inputs(&[file]).unwrap();
    both.push(Input::file("bench", AnyReport::Bench(report())));
    let page = render_html(&both).unwrap();
    assert!(page.contains("All results") && page.contains("Sharded results"));
    assert_eq!((charts(&page, "throughput"), charts(&page, "sharded-throughput")), (2, 1));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sweep over threads and contention with four executors: a line per executor and point
/// would be twelve, so each figure becomes a row of charts, one per executor, with a line per
/// distribution; then throughput and speedup against the distribution.
#[test]
fn crowded_sweeps_get_one_chart_per_executor() {
    let dir = temp_dir("crowded");
    let inputs = sweep(
        &dir,
        "[base]\nworkload = \"transfer\"\naccounts = 400\ntxs = 200\nblock-size = 100\n\
         executor = [\"sequential\", \"parallel\", \"declared\", \"auto\"]\n\
         [axes]\ndistribution = [\"uniform\", \"zipf:0.8\", \"zipf:0.99\", \"hotspot:0.5:10\"]\nthreads = [1, 2]\n",
    );
    assert_eq!(inputs.len(), 8);
    assert_eq!(inputs[1].name, "uniform / threads=2");
    assert_eq!((inputs[1].group.as_str(), inputs[1].group_by.as_str()), ("uniform", "distribution"));
    let page = render_html(&inputs).unwrap();
    assert_self_contained(&page);
    assert!(page.contains("one chart per executor"));
    // Throughput, speedup and latency for each of three executors, then the two by point.
    assert_eq!((charts(&page, "throughput"), charts(&page, "speedup"), charts(&page, "latency")), (3, 3, 3));
    assert_eq!((charts(&page, "throughput-by-point"), charts(&page, "speedup-by-point")), (1, 1));
    assert!(page.contains(">\ndistribution\n</text>"), "the point axis is named after the swept axis");
    // No chart has more lines than MAX_SERIES, plus its reference level.
    let sizes = legend_sizes(&page);
    assert_eq!(sizes.len(), 11);
    assert!(sizes.iter().all(|&n| (1..=MAX_SERIES + 1).contains(&n)), "{sizes:?}");
    // A line per distribution in each executor's chart, each with its two thread counts.
    for d in ["uniform", "zipf:0.8", "zipf:0.99", "hotspot:0.5:10"] {
        assert!(page.contains(&format!("</i>{d}</span>")), "{d}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
