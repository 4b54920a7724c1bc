//! `occam report` end to end: a real bench run turned into the HTML page, CSV and Markdown;
//! the page is self-contained (no script, no external resource), and headless Chromium renders
//! it with every chart present.
//!
//! The Chromium part needs `/usr/bin/chromium` (or `OCCAM_CHROMIUM`); `.ci/run` installs it
//! from the distribution's packages and sets `OCCAM_REQUIRE_CHROMIUM=1`, which makes its absence
//! a failure instead of a skip.

use occam_bench::html::{csv, html, markdown};
use occam_bench::runner::{run_bench, BenchConfig};
use std::path::PathBuf;
use std::process::Command;

fn report() -> occam_bench::runner::BenchReport {
    let cfg = BenchConfig {
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
    };
    run_bench(&cfg, None, &()).unwrap()
}

#[test]
fn html_page_is_self_contained_with_every_chart() {
    let r = report();
    let page = html(&[("run.json", &r)]).unwrap();
    // Four charts per workload: throughput, speedup, latency, per-block series.
    assert_eq!(page.matches("<svg").count(), 8);
    for forbidden in ["<script", " src=", " href=", "url(", "<link", "@import"] {
        assert!(!page.contains(forbidden), "the page must not load anything: found {forbidden:?}");
    }
    let urls: Vec<&str> = page.match_indices("http").map(|(i, _)| &page[i..(i + 30).min(page.len())]).collect();
    assert!(urls.iter().all(|u| u.starts_with("http://www.w3.org/2000/svg")), "only the SVG namespace: {urls:?}");
    assert!(page.contains("All results") && page.contains(&r.commit));
    // Text that looks like markup is escaped.
    let mut odd = r.clone();
    odd.commit = "<b>&".into();
    assert!(html(&[("x", &odd)]).unwrap().contains("&lt;b&gt;&amp;"));

    let table = csv(&[("run.json", &r)]);
    assert_eq!(table.lines().count(), 1 + r.results.len());
    assert!(table.lines().next().unwrap().starts_with("report,commit,cpu"));
    let md = markdown(&[("run.json", &r)]);
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
    std::fs::write(&page, html(&[("run.json", &report())]).unwrap()).unwrap();
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
    assert_eq!(dom.matches("<svg").count(), 8, "every chart is in the rendered page");
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
