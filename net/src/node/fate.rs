//! Status reads: what became of a transaction, named by its signer and nonce.
//!
//! A client that lost its connection, or whose leader changed, asks instead of re-sending
//! blindly. A node answers each transaction from what it holds, in this order:
//!
//! 1. its replica of the signer's shard (the shard of the signer's nonce) indexed the
//!    transaction when it applied the block that spent the nonce (`occam-store`'s `txs`
//!    column family): **committed**, with the block's certificate, or **spent** at that
//!    height while the certificate has not formed;
//! 2. it admitted the transaction and has not answered it: **pending**;
//! 3. the replica's state has the signer's nonce past it: **spent**, in a block this replica
//!    did not index (it caught up from a snapshot) or has not persisted yet;
//! 4. it leads the shard and has applied an entry of its own term (so everything earlier
//!    leaders logged is applied): **unknown** — nothing of it exists, and sending it again is
//!    safe, since a nonce commits at most once;
//! 5. otherwise it cannot tell, and names the leader it knows of.

use super::{Shared, MAX_READS_IN_FLIGHT};
use crate::wire::{Message, Refusal, TxFate};
use occam_engine::native::signed::{next_nonce, nonce_key};
use occam_shard::Certificate;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tracing::warn;

/// The fates of `txs` (each `(signer, nonce)`), with the certificates they name.
pub(super) fn tx_fates(shared: &Shared, txs: &[(u32, u64)]) -> (Vec<Certificate>, Vec<TxFate>) {
    let mut certificates = Vec::new();
    let mut numbered: HashMap<(u32, u64), u32> = HashMap::new();
    let fates = txs
        .iter()
        .map(|&(signer, nonce)| {
            let shard = shared.partitioner.shard_of(&nonce_key(signer));
            let Some(group) = shared.groups.get(&shard) else {
                if shared.is_admitted(signer, nonce) {
                    return TxFate::Pending;
                }
                return TxFate::NotLeader { leader: shared.known_leader(shard) };
            };
            match shared.store.tx_height(shard, signer, nonce) {
                Ok(Some(height)) => {
                    if let Some(&n) = numbered.get(&(shard, height)) {
                        return TxFate::Committed { certificate: n };
                    }
                    match shared.store.certificate(shard, height).map(|c| c.map(|b| Certificate::decode(&b))) {
                        Ok(Some(Ok(c))) => {
                            let n = certificates.len() as u32;
                            certificates.push(c);
                            numbered.insert((shard, height), n);
                            return TxFate::Committed { certificate: n };
                        }
                        Ok(None) => return TxFate::Spent { height: Some(height) },
                        Ok(Some(Err(e))) => warn!(shard, height, "a stored certificate does not decode: {e}"),
                        Err(e) => warn!(shard, height, "reading a certificate: {e}"),
                    }
                    return TxFate::Spent { height: Some(height) };
                }
                Ok(None) => {}
                Err(e) => warn!(shard, "reading the transaction index: {e}"),
            }
            if shared.is_admitted(signer, nonce) {
                return TxFate::Pending;
            }
            if nonce < next_nonce(&group.state.read(), signer) {
                return TxFate::Spent { height: None };
            }
            if group.caught_up_term(shared.node).is_some() {
                TxFate::Unknown
            } else {
                TxFate::NotLeader { leader: group.leader() }
            }
        })
        .collect();
    (certificates, fates)
}

/// Answers status read `id` of client `conn`.
pub(super) fn reply(shared: &Shared, conn: u64, id: u64, txs: &[(u32, u64)]) {
    let (certificates, fates) = tx_fates(shared, txs);
    shared.send_to_client(conn, &Message::TxFates { id, certificates, fates });
}

/// Answers a client's status read on a blocking thread (it reads the store), at most
/// [`MAX_READS_IN_FLIGHT`] per client (reads and status reads together); refuses it as
/// `Throttled` beyond that.
pub(super) fn serve(shared: &Arc<Shared>, conn: u64, id: u64, txs: Vec<(u32, u64)>) {
    let slots = shared.clients.lock().get(&conn).map(|c| c.reads.clone());
    let Some(slots) = slots else { return };
    if slots.fetch_add(1, Ordering::Relaxed) >= MAX_READS_IN_FLIGHT {
        slots.fetch_sub(1, Ordering::Relaxed);
        shared.send_to_client(conn, &Message::Refused { batch: id, reason: Refusal::Throttled, leader: None });
        return;
    }
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || {
        reply(&shared, conn, id, &txs);
        slots.fetch_sub(1, Ordering::Relaxed);
    });
}
