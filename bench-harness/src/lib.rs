//! # occam-bench
//!
//! The benchmark harness behind the `occam` command: workloads and key distributions, the
//! bench runner with its cross-checks, reports, and recordings with replay.

pub mod distribution;
pub mod machine;
pub mod pipeline;
pub mod record;
pub mod report;
pub mod runner;
pub mod workload;
