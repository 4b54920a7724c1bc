//! # occam-net
//!
//! Occam's nodes: shard replicas that talk over authenticated QUIC, certify every block with
//! aggregated BLS votes, and serve clients.
//!
//! - [`wire`]: the versioned, length-prefixed frame codec (bounded, never panics).
//! - [`tls`]: node identities (self-signed certificates bound to node ids) and pinned
//!   verification for mutual TLS; `ring` is the one crypto provider.
//! - [`config`]: cluster, node and key files; `occam cluster init`.
//! - [`raft`]: openraft's types, a bounded codec for Raft's messages and log entries, its
//!   storage traits over the node's RocksDB store (`occam-store`), and its RPCs over QUIC.
//! - [`node`]: the runtime: one Raft group per hosted shard replica, blocks applied,
//!   voted on and certified with BLS, clients served over QUIC.
//! - [`client`]: a client that routes transactions to shard leaders and collects receipts.
//! - [`transport`]: frames over QUIC streams; [`metrics`]: the Prometheus endpoint.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod metrics;
pub mod node;
pub mod raft;
pub mod tls;
pub mod transport;
pub mod wire;
