//! # occam-bench
//!
//! The benchmark harness behind the `occam` command: workloads and key distributions, the
//! bench runner with its cross-checks, reports, recordings with replay, the signature pipeline
//! the sharded runs, and the node cluster: starting nodes and loading them.

pub mod cluster;
pub mod compare;
pub mod distribution;
pub mod html;
pub mod load;
pub mod machine;
pub mod mix;
pub mod pipeline;
pub mod record;
pub mod report;
pub mod runner;
pub mod sharded;
pub mod storage;
pub mod sweep;
pub mod workload;
