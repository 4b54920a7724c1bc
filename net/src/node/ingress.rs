//! Ingress: accepts QUIC connections and routes what arrives on them.
//!
//! A connection with a pinned node certificate is a peer; one without a client certificate is
//! a client; any other is refused in the handshake. A peer's one-way frames (votes,
//! certificates, cross-shard messages) arrive on unidirectional streams and its Raft RPCs on
//! bidirectional ones ([`crate::raft::network::serve_rpc`]). A malformed, oversized or
//! forbidden frame closes that connection only.
//!
//! A client connection is refused (closed at once) while its source address is banned or
//! holds `limits.host_connections` connections, or when the node serves [`MAX_CLIENTS`].
//!
//! A client's batch is taken in if this node leads the batch's shard (else it is refused as
//! `NotLeader`), the mempool has room (`limits.mempool`), the connection has fewer than
//! `limits.per_client` and its address fewer than `limits.per_host` transactions pending here
//! (else `Throttled`). Taking it in decodes the batch but does no curve arithmetic: it goes to
//! the admission thread ([`super::admission`]), which checks its signatures before it enters
//! the mempool.

use super::admission::Job;
use super::coordinator::CoordEvent;
use super::group::GroupEvent;
use super::{route_keys, route_tx_with, Client, HostRefusal, Origin, Shared, MAX_CLIENTS, MAX_READS_IN_FLIGHT};
use crate::tls::{peer_cert, PinnedCerts};
use crate::transport::{close, observed_frame_queue, read_frame_within, spawn_queue_writer, WRITER_QUEUE};
use crate::wire::{Message, Refusal, MAX_FRAME_LEN};
use occam_shard::protocol::Message as CrossMessage;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

pub(super) async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>, pinned: PinnedCerts) {
    while let Some(incoming) = endpoint.accept().await {
        let shared = shared.clone();
        let pinned = pinned.clone();
        tokio::spawn(async move {
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    // An unknown certificate ends here, in the handshake.
                    warn!("refused a connection: {e}");
                    return;
                }
            };
            serve_connection(conn, shared, pinned).await;
        });
    }
}

async fn serve_connection(conn: quinn::Connection, shared: Arc<Shared>, pinned: PinnedCerts) {
    let peer = peer_cert(&conn).and_then(|c| pinned.node_of(&c));
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let limits = &shared.cluster.limits;
    debug!(conn = id, ?peer, remote = %conn.remote_address(), "connection");
    match peer {
        Some(from) => {
            // A pinned peer: the windows of a node link, and its Raft RPCs, one bidirectional
            // stream each (a protocol violation closes the connection).
            conn.set_receive_window(crate::tls::PEER_RECEIVE_WINDOW.into());
            let groups: Arc<dyn crate::raft::network::RaftGroups> = shared.clone();
            tokio::spawn(crate::raft::network::serve_peer(conn.clone(), u64::from(from), groups));
        }
        None => {
            if !admit_client(&shared, &conn, id) {
                return;
            }
            tokio::spawn(close_when_idle(shared.clone(), conn.clone(), id, Duration::from_secs(limits.idle_s)));
        }
    }
    // Clients send batches and reads; nodes send votes, certificates and cross-shard writes. A
    // client's frame must arrive whole within `limits.frame_ms` of its first byte.
    let (max_frame, frame_time) = match peer {
        Some(_) => (MAX_FRAME_LEN, None),
        None => (crate::transport::MAX_CLIENT_FRAME_LEN, Some(Duration::from_millis(limits.frame_ms))),
    };
    while let Ok(mut recv) = conn.accept_uni().await {
        let shared = shared.clone();
        let conn = conn.clone();
        tokio::spawn(async move {
            loop {
                let read = read_frame_within(&mut recv, max_frame, frame_time).await;
                if peer.is_none() {
                    shared.client_active(id);
                }
                match read {
                    // A status read reads the store: answered off the network's threads.
                    Ok(Some(Message::TxQuery { id: request, txs })) if peer.is_none() => {
                        super::fate::serve(&shared, id, request, txs);
                    }
                    Ok(Some(m)) => {
                        if let Err(why) = dispatch(&shared, id, peer, m) {
                            bad_frame(&shared, &conn, id, peer, close::FORBIDDEN, why);
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) if e.is_bad_frame() => {
                        bad_frame(&shared, &conn, id, peer, close::PROTOCOL, &e.to_string());
                        return;
                    }
                    Err(e) => {
                        debug!(conn = id, "stream ended: {e}");
                        return;
                    }
                }
            }
        });
    }
    shared.disconnect_client(id);
}

/// Counts a bad or forbidden frame, logs it (a few a minute: the sender decides how many
/// there are), and closes its connection with `code`.
fn bad_frame(shared: &Shared, conn: &quinn::Connection, id: u64, peer: Option<u32>, code: u32, why: &str) {
    shared.metrics.bad_frames.inc();
    if peer.is_none() {
        shared.metrics.disconnected(crate::metrics::Disconnect::BadFrame);
    }
    if let Some(suppressed) = shared.bad_frame_log.admit() {
        warn!(conn = id, ?peer, remote = %conn.remote_address(), suppressed, "bad frame, closing the connection: {why}");
    }
    conn.close(code.into(), why.as_bytes());
}

/// Takes a client slot for connection `id`, or closes it: the node serves [`MAX_CLIENTS`], its
/// address is banned, or holds `limits.host_connections` connections.
fn admit_client(shared: &Shared, conn: &quinn::Connection, id: u64) -> bool {
    let limits = &shared.cluster.limits;
    let host = conn.remote_address().ip().to_canonical();
    let mut clients = shared.clients.lock();
    if clients.len() >= MAX_CLIENTS {
        drop(clients);
        debug!(remote = %conn.remote_address(), "refused a client: {MAX_CLIENTS} are connected");
        shared.metrics.connection_refused(false);
        conn.close(close::BUSY.into(), b"too many clients");
        return false;
    }
    let host_pending = match shared.connect_host(host) {
        Ok(p) => p,
        Err(why) => {
            drop(clients);
            // The attacker decides how often this happens: counted, logged only at debug.
            debug!(remote = %conn.remote_address(), ?why, "refused a client");
            shared.metrics.connection_refused(why == HostRefusal::Banned);
            match why {
                HostRefusal::Banned => conn.close(close::BANNED.into(), b"address refused for a while"),
                HostRefusal::TooMany => conn.close(close::BUSY.into(), b"too many connections from this address"),
            }
            return false;
        }
    };
    let (frames, rx) = observed_frame_queue(WRITER_QUEUE, limits.client_queue_bytes, Some(shared.metrics.client_queue()));
    spawn_queue_writer(conn.clone(), rx);
    let client = Client {
        conn: conn.clone(),
        frames,
        pending: Arc::new(AtomicUsize::new(0)),
        host,
        host_pending,
        reads: Arc::new(AtomicUsize::new(0)),
        strikes: Arc::new(AtomicU32::new(0)),
        last_active: Arc::new(AtomicU64::new(shared.uptime_ms())),
    };
    clients.insert(id, client);
    shared.metrics.clients.inc();
    true
}

/// Closes client connection `id` once it has sent nothing for `idle` and has nothing pending
/// here (no transaction waiting for its receipt, no read unanswered).
async fn close_when_idle(shared: Arc<Shared>, conn: quinn::Connection, id: u64, idle: Duration) {
    let every = (idle / 4).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = conn.closed() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let state = shared.clients.lock().get(&id).map(|c| {
            let busy = c.pending.load(Ordering::Relaxed) + c.reads.load(Ordering::Relaxed) > 0;
            (busy, c.last_active.load(Ordering::Relaxed))
        });
        let Some((busy, last)) = state else { return };
        if !busy && shared.uptime_ms().saturating_sub(last) >= idle.as_millis() as u64 {
            debug!(conn = id, "closing an idle client connection");
            shared.metrics.idle_closed.inc();
            conn.close(close::IDLE.into(), b"idle");
            return;
        }
    }
}

/// Handles one message from connection `conn` (from node `peer`, or a client). An error closes
/// the connection.
pub(super) fn dispatch(shared: &Shared, conn: u64, peer: Option<u32>, m: Message) -> Result<(), &'static str> {
    match (m, peer) {
        (Message::Submit { batch, txs }, None) => {
            if let Err((reason, shard)) = admit(shared, conn, batch, txs) {
                shared.metrics.refused(reason);
                let leader = shard.filter(|_| reason == Refusal::NotLeader).and_then(|s| shared.known_leader(s));
                shared.send_to_client(conn, &Message::Refused { batch, reason, leader });
            }
            Ok(())
        }
        (Message::Read { id, keys }, None) => {
            let shard = route_keys(&*shared.partitioner, &keys);
            let group = shard.and_then(|s| shared.groups.get(&s)).filter(|g| g.leader() == Some(shared.node));
            let Some(group) = group else {
                let leader = shard.and_then(|s| shared.known_leader(s));
                shared.send_to_client(conn, &Message::Refused { batch: id, reason: Refusal::NotLeader, leader });
                return Ok(());
            };
            let reads = shared.clients.lock().get(&conn).map(|c| c.reads.clone());
            let Some(reads) = reads else { return Ok(()) };
            if reads.fetch_add(1, Ordering::Relaxed) >= MAX_READS_IN_FLIGHT {
                reads.fetch_sub(1, Ordering::Relaxed);
                shared.send_to_client(conn, &Message::Refused { batch: id, reason: Refusal::Throttled, leader: None });
                return Ok(());
            }
            if group.events.try_send(GroupEvent::Read { conn, id, keys }).is_err() {
                reads.fetch_sub(1, Ordering::Relaxed);
                shared.send_to_client(conn, &Message::Refused { batch: id, reason: Refusal::QueueFull, leader: None });
            }
            Ok(())
        }
        (Message::TxQuery { id, txs }, None) => {
            super::fate::reply(shared, conn, id, &txs);
            Ok(())
        }
        (Message::StatusRequest, None) => {
            shared.send_to_client(conn, &Message::Status(shared.replica_statuses()));
            Ok(())
        }
        (Message::Vote(v), Some(from)) => {
            let shard = v.vote.shard;
            // Whose vote it is, the signature says (checked against the epoch's set by the
            // group); the sender must hold a replica of the shard.
            if !shared.is_member(shard, from) {
                return Err("a vote from a node that holds no replica of the shard");
            }
            if let Some(g) = shared.groups.get(&shard) {
                if g.events.try_send(GroupEvent::Vote { from, vote: Box::new(v) }).is_err() {
                    debug!(shard, "group queue full; a vote dropped (the replica sends it again)");
                }
            }
            Ok(())
        }
        (Message::Commit(c), Some(from)) => {
            let shard = c.vote.shard;
            if !shared.is_member(shard, from) {
                return Err("a certificate from a node that holds no replica of the shard");
            }
            if let Some((tx, _)) = &shared.coordinator {
                let _ = tx.try_send(CoordEvent::Commit(Box::new(c.clone())));
            }
            if let Some(g) = shared.groups.get(&shard) {
                let _ = g.events.try_send(GroupEvent::Commit(Box::new(c)));
            }
            Ok(())
        }
        (Message::Cross { shard, message }, Some(from)) => match &message {
            CrossMessage::ReadRequest { .. } | CrossMessage::Apply { .. } => {
                // The coordinator runs with shard 0's leader.
                if !shared.is_member(0, from) {
                    return Err("a cross-shard request from a node that holds no replica of shard 0");
                }
                // Only the shard's leader takes part; elsewhere the request is dropped and the
                // coordinator asks again (of the leader it learns of meanwhile).
                if let Some(g) = shared.groups.get(&shard).filter(|g| g.leader() == Some(shared.node)) {
                    let _ = g.events.try_send(GroupEvent::Cross { from, message });
                }
                Ok(())
            }
            CrossMessage::ReadReply { from: s, .. } | CrossMessage::Applied { from: s, .. } => {
                if *s != shard || !shared.is_member(shard, from) {
                    return Err("a cross-shard reply from a node that holds no replica of the shard");
                }
                // Only a leader answers: the coordinator's next requests for the shard go there.
                shared.leader_hints.lock().insert(shard, from);
                if let Some((tx, _)) = &shared.coordinator {
                    let _ = tx.try_send(CoordEvent::Cross(message));
                }
                Ok(())
            }
        },
        (Message::Propose(_) | Message::Sync { .. }, Some(_)) => Err("a message of the pre-Raft protocol"),
        (Message::Submit { .. } | Message::StatusRequest | Message::Read { .. } | Message::TxQuery { .. }, Some(_)) => {
            Err("a client message on a node link")
        }
        (Message::Vote(_) | Message::Propose(_) | Message::Commit(_) | Message::Sync { .. } | Message::Cross { .. }, None) => {
            Err("a node message from a client")
        }
        (Message::RaftRequest { .. } | Message::RaftReply { .. }, _) => Err("a Raft message outside a Raft stream"),
        (
            Message::Accepted { .. }
            | Message::Refused { .. }
            | Message::Receipts { .. }
            | Message::Status(_)
            | Message::Values { .. }
            | Message::TxFates { .. },
            _,
        ) => Err("a message only nodes send"),
    }
}

/// Takes in a client batch for a group's (or the coordinator's) mempool, or says why not: the
/// admission thread checks its signatures and then admits or refuses it.
///
/// The quotas and the mempool space are reserved first and given back if anything fails, so
/// two batches taken in at once cannot both squeeze into the last space.
fn admit(shared: &Shared, conn: u64, batch: u64, txs: occam_engine::native::signed::RawSignedBlock) -> Result<(), (Refusal, Option<u32>)> {
    admit_routed(shared, conn, batch, txs)
}

/// [`admit`]'s work; a refusal names the batch's shard where it has one.
fn admit_routed(
    shared: &Shared,
    conn: u64,
    batch: u64,
    txs: occam_engine::native::signed::RawSignedBlock,
) -> Result<(), (Refusal, Option<u32>)> {
    if shared.stopping.load(Ordering::Relaxed) {
        return Err((Refusal::ShuttingDown, None));
    }
    if txs.chain_id != shared.cluster.chain_id {
        return Err((Refusal::WrongChain, None));
    }
    let n = txs.txs.len();
    let Some(first) = txs.txs.first() else {
        shared.send_to_client(conn, &Message::Accepted { batch });
        return Ok(());
    };
    // A batch is one shard's transactions, or cross-shard ones (for the coordinator).
    let mut keys = Vec::with_capacity(8);
    let route = route_tx_with(&*shared.partitioner, &first.header, &mut keys);
    if txs.txs[1..].iter().any(|t| route_tx_with(&*shared.partitioner, &t.header, &mut keys) != route) {
        return Err((Refusal::WrongShard, None));
    }
    let limits = &shared.cluster.limits;
    let client = shared.clients.lock().get(&conn).map(|c| (c.pending.clone(), c.host_pending.clone(), c.host));
    let (pending, host_pending, host) = client.ok_or((Refusal::ShuttingDown, route))?;
    let depth = match route {
        Some(shard) => {
            let g = shared.groups.get(&shard).ok_or((Refusal::NotLeader, route))?;
            if g.leader() != Some(shared.node) {
                return Err((Refusal::NotLeader, route));
            }
            g.depth.clone()
        }
        None => {
            // Cross-shard transactions go to the coordinator, which runs with shard 0's leader.
            let leads = shared.groups.get(&0).is_some_and(|g| g.leader() == Some(shared.node));
            match shared.coordinator.as_ref().filter(|_| leads) {
                Some((_, depth)) => depth.clone(),
                None => return Err((Refusal::NotLeader, Some(0))),
            }
        }
    };
    // Reserve in order, giving back what was taken if a later count is full.
    if pending.fetch_add(n, Ordering::Relaxed) + n > limits.per_client {
        pending.fetch_sub(n, Ordering::Relaxed);
        return Err((Refusal::Throttled, route));
    }
    if host_pending.fetch_add(n, Ordering::Relaxed) + n > limits.per_host {
        host_pending.fetch_sub(n, Ordering::Relaxed);
        pending.fetch_sub(n, Ordering::Relaxed);
        return Err((Refusal::Throttled, route));
    }
    if depth.fetch_add(n, Ordering::Relaxed) + n > limits.mempool {
        depth.fetch_sub(n, Ordering::Relaxed);
        host_pending.fetch_sub(n, Ordering::Relaxed);
        pending.fetch_sub(n, Ordering::Relaxed);
        return Err((Refusal::QueueFull, route));
    }
    let txs: Vec<_> = txs
        .txs
        .into_iter()
        .enumerate()
        .map(|(i, tx)| {
            let origin = Origin { conn, batch, index: i as u32, signer: tx.header.signer, nonce: tx.header.nonce };
            (tx, origin)
        })
        .collect();
    // Pending from here on (before the thread that answers can see the batch).
    let origins: Vec<Origin> = txs.iter().map(|(_, o)| *o).collect();
    shared.admit(&origins);
    let job = Job { conn, host, batch, route, txs, depth: depth.clone() };
    if let Err(e) = shared.admission.try_send(job) {
        // The admission queue is full (never waited on here: this runs on the network's
        // threads), or its thread is gone (the node is stopping): nothing of the batch is
        // pending.
        depth.fetch_sub(n, Ordering::Relaxed);
        shared.release(origins);
        return Err((if e.is_full() { Refusal::QueueFull } else { Refusal::ShuttingDown }, route));
    }
    Ok(())
}
