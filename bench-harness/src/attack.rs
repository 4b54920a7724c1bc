//! `occam attack`: what a hostile client does to a running cluster, to measure a node's
//! defences (BENCHMARKS.md, "Hostile clients"; `scripts/attack.sh`). It sends only to the
//! nodes the cluster file names, and every attack is bounded in count and time.

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use occam_bench::cluster::LoadTxs;
use occam_bench::distribution::Distribution;
use occam_engine::crypto::SecretKey;
use occam_engine::native::signed::{nonce_key, RawSignedBlock, RawSignedTx};
use occam_net::client::{Client, ClientEvent};
use occam_net::config::ClusterConfig;
use occam_net::node::cluster_partitioner;
use occam_net::tls::{client_config, node_name};
use occam_net::transport::MAX_CLIENT_FRAME_LEN;
use occam_net::wire::{Message, MAX_READ_KEYS, WIRE_VERSION};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The attacks.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AttackKind {
    /// Batches of transactions from known signers whose signatures are valid curve points
    /// that sign nothing of theirs (`--count` of them, `--batch` per batch), to shard 0's
    /// leader (node `--node`).
    Forged,
    /// Reads of many keys whose answers are never read (`--count` reads at most), until the
    /// node cuts the connection.
    NoRead,
    /// `--count` connections, each holding a frame announced at the client limit and sent
    /// but for its last byte, for `--hold` seconds.
    Stall,
}

/// `occam attack`'s arguments.
#[derive(Args)]
pub struct AttackArgs {
    /// The attack.
    #[arg(value_enum)]
    kind: AttackKind,
    /// The cluster file.
    #[arg(long)]
    cluster: PathBuf,
    /// The local address to attack from (nodes count connections and pending transactions
    /// per source address; on loopback, any of 127.0.0.0/8).
    #[arg(long, default_value = "127.0.0.2")]
    from: IpAddr,
    /// The node attacked.
    #[arg(long, default_value_t = 0)]
    node: u32,
    /// Forged transactions, reads, or connections.
    #[arg(long, default_value_t = 4096)]
    count: usize,
    /// forged: transactions per batch.
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    /// Seconds to wait before attacking (counted from when the attack is ready: forgeries
    /// signed, connections open).
    #[arg(long, default_value_t = 0.0)]
    delay: f64,
    /// stall: seconds to hold the frames.
    #[arg(long, default_value_t = 15.0)]
    hold: f64,
    /// forged: seconds an honest client (from the default address) keeps timing reads of
    /// shard 0 once the forgeries are sent.
    #[arg(long, default_value_t = 5.0)]
    probe: f64,
}

/// Runs one attack and prints what the node did about it.
pub fn attack(a: AttackArgs) -> anyhow::Result<()> {
    let cluster = ClusterConfig::load(&a.cluster)?;
    if cluster.nodes.get(a.node as usize).is_none() {
        bail!("node {} is not in {}", a.node, a.cluster.display());
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    match a.kind {
        AttackKind::Forged => rt.block_on(forged(&cluster, &a)),
        AttackKind::NoRead => rt.block_on(no_read(&cluster, &a)),
        AttackKind::Stall => rt.block_on(stall(&cluster, &a)),
    }
}

fn pause(seconds: f64) -> tokio::time::Sleep {
    tokio::time::sleep(Duration::from_secs_f64(seconds.max(0.0)))
}

async fn forged(cluster: &ClusterConfig, a: &AttackArgs) -> anyhow::Result<()> {
    // Headers of shard 0's signers, with nonces from 0 (a fresh cluster's), and one forged
    // signature for all: nothing is signed, so the attack is ready at once.
    let nothing = SecretKey::from_seed(&[0xf0; 32])?.sign(b"signs nothing of theirs").to_bytes();
    let mut gen = LoadTxs::new(cluster, "transfer", Distribution::Uniform, 0.0, 0xbad, None)?;
    let mut txs = Vec::with_capacity(a.count);
    for _ in 0..a.count.saturating_mul(cluster.shards).saturating_mul(4) {
        if txs.len() == a.count {
            break;
        }
        if let (header, Some(0)) = gen.next_header() {
            txs.push(RawSignedTx { header, signature: nothing });
        }
    }
    let mut client = Client::connect_from(cluster, a.from).await?;
    client.set_leader(0, a.node);
    // An honest reader from the default address, timing reads of shard 0 during the attack.
    let mut reader = Client::connect(cluster).await?;
    reader.set_leader(0, a.node);
    pause(a.delay).await;
    let started = Instant::now();
    let mut batches = 0u64;
    for chunk in txs.chunks(a.batch.max(1)) {
        if client.submit(0, batches, RawSignedBlock { chain_id: cluster.chain_id, txs: chunk.to_vec() }).await.is_err() {
            break;
        }
        batches += 1;
    }
    let sent = Instant::now();
    let answers = async {
        let mut answers: BTreeMap<String, u64> = BTreeMap::new();
        let mut answered = 0;
        while answered < batches {
            match tokio::time::timeout(Duration::from_secs(10), client.next_event()).await {
                Ok(Some(ClientEvent::Accepted { .. })) => *answers.entry("accepted".into()).or_default() += 1,
                Ok(Some(ClientEvent::Refused { reason, .. })) => *answers.entry(format!("refused {reason:?}")).or_default() += 1,
                Ok(Some(ClientEvent::Closed { reason, .. })) => {
                    *answers.entry(format!("closed: {reason}")).or_default() += 1;
                    break;
                }
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
            answered += 1;
        }
        (answers, started.elapsed())
    };
    let (answers, reads) = tokio::join!(answers, probe_reads(&mut reader, cluster, a.probe));
    let ((answers, answered_in), reads) = (answers, reads?);
    println!(
        "forged: {} forgeries in {batches} batches from {} sent in {:.3} s; answered within {:.3} s: {answers:?}",
        txs.len(),
        a.from,
        (sent - started).as_secs_f64(),
        answered_in.as_secs_f64()
    );
    let worst = reads.iter().max().copied().unwrap_or_default();
    println!("forged: {} reads by an honest client meanwhile, slowest {:.1} ms", reads.len(), worst.as_secs_f64() * 1e3);
    Ok(())
}

/// Reads 16 keys of shard 0 one after another for `seconds`; each read's latency.
async fn probe_reads(reader: &mut Client, cluster: &ClusterConfig, seconds: f64) -> anyhow::Result<Vec<Duration>> {
    let partitioner = cluster_partitioner(cluster);
    let keys: Vec<_> = (0..cluster.signers).map(nonce_key).filter(|k| partitioner.shard_of(k) == 0).take(16).collect();
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut took = Vec::new();
    let mut id = 0;
    while Instant::now() < until {
        id += 1;
        let asked = Instant::now();
        reader.read(0, id, keys.clone()).await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), reader.next_event()).await {
                Ok(Some(ClientEvent::Values { id: got, .. })) if got == id => break,
                Ok(Some(ClientEvent::Refused { reason, .. })) => bail!("a probe read was refused: {reason:?}"),
                Ok(Some(_)) => continue,
                Ok(None) => bail!("the reader's connection closed"),
                Err(_) => bail!("a probe read was not answered within 10 s"),
            }
        }
        took.push(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(took)
}

/// A bare client connection to `node` from `from`, with receive windows of `window` bytes.
async fn raw(cluster: &ClusterConfig, node: u32, from: IpAddr, window: u32) -> anyhow::Result<quinn::Connection> {
    let endpoint = quinn::Endpoint::client((from, 0).into()).with_context(|| format!("binding {from}"))?;
    let cert = cluster.pinned()?.cert_of(node).context("the node has no pinned certificate")?;
    let mut config = client_config(&cert, None)?;
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(window.into());
    transport.receive_window(window.into());
    config.transport_config(Arc::new(transport));
    let addr = cluster.nodes[node as usize].addr;
    Ok(endpoint.connect_with(config, addr, &node_name(node))?.await?)
}

async fn no_read(cluster: &ClusterConfig, a: &AttackArgs) -> anyhow::Result<()> {
    // As many keys of shard 0 as a read may name (nonce keys, of signers or not: an absent key
    // is answered too).
    let partitioner = cluster_partitioner(cluster);
    let keys: Vec<_> = (0..u32::MAX).map(nonce_key).filter(|k| partitioner.shard_of(k) == 0).take(MAX_READ_KEYS).collect();
    let conn = raw(cluster, a.node, a.from, 64 << 10).await?;
    let mut send = conn.open_uni().await?;
    pause(a.delay).await;
    let started = Instant::now();
    let mut sent = 0;
    for id in 0..a.count as u64 {
        let frame = Message::Read { id, keys: keys.clone() }.encode()?;
        if conn.close_reason().is_some() || send.write_all(&frame).await.is_err() {
            break;
        }
        sent += 1;
        if id % 8 == 7 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await;
    println!(
        "no-read: {sent} reads of {} keys from {} in {:.3} s; connection: {}",
        keys.len(),
        a.from,
        started.elapsed().as_secs_f64(),
        reason.map(|r| r.to_string()).unwrap_or_else(|_| "still open after 10 s".into())
    );
    Ok(())
}

async fn stall(cluster: &ClusterConfig, a: &AttackArgs) -> anyhow::Result<()> {
    let mut conns = Vec::new();
    for _ in 0..a.count {
        conns.push(raw(cluster, a.node, a.from, 8 << 20).await?);
    }
    pause(a.delay).await;
    let started = Instant::now();
    let mut header = vec![WIRE_VERSION, 3];
    header.extend_from_slice(&(MAX_CLIENT_FRAME_LEN as u32).to_le_bytes());
    let body = vec![0x5a; MAX_CLIENT_FRAME_LEN - 1];
    let mut held = Vec::new();
    let mut refused = 0;
    for conn in &conns {
        let write = async {
            let mut send = conn.open_uni().await?;
            send.write_all(&header).await?;
            send.write_all(&body).await?;
            anyhow::Ok(send)
        };
        match tokio::time::timeout(Duration::from_secs(5), write).await {
            Ok(Ok(send)) => held.push(send),
            _ => refused += 1,
        }
    }
    println!(
        "stall: {} connections from {}: {} hold a frame of {} bytes but one, {refused} refused or blocked",
        conns.len(),
        a.from,
        held.len(),
        MAX_CLIENT_FRAME_LEN
    );
    let until = started + Duration::from_secs_f64(a.hold);
    let mut closed: BTreeMap<String, usize> = BTreeMap::new();
    for conn in &conns {
        let left = until.saturating_duration_since(Instant::now());
        if let Ok(reason) = tokio::time::timeout(left, conn.closed()).await {
            *closed.entry(reason.to_string()).or_default() += 1;
        }
    }
    println!("stall: after {:.1} s, closed by the node: {closed:?}", started.elapsed().as_secs_f64());
    Ok(())
}
