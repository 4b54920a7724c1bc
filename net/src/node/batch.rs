//! Pending transactions, from admission to receipt: the mempool (of transactions whose
//! signatures the admission thread verified), aggregation into one block signature, and
//! receipts to clients. Shared by the shard groups' proposers and the cross-shard coordinator.

use super::{Origin, Shared, EVENTS_PER_TURN, TICK};
use crate::wire::{Message, ReceiptEntry, TxStatus};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use occam_engine::crypto::{BatchVerifier, KeyRegistry};
use occam_engine::native::signed::{AggregatedBlock, SignedFailure, SignedOutput, SignedTx};
use occam_shard::Certificate;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What checking a transaction's signature needs: the chain it must be signed for, the
/// signers' keys and the verification threads.
#[derive(Clone)]
pub(super) struct SigCheck {
    pub chain_id: u64,
    pub registry: Arc<KeyRegistry>,
    pub verifier: Arc<BatchVerifier>,
}

/// The receipt status of an executed transaction.
pub(super) fn status_of(output: &SignedOutput) -> TxStatus {
    match output {
        Ok(Ok(_)) => TxStatus::Succeeded,
        Ok(Err(_)) => TxStatus::Failed,
        Err(SignedFailure::BadNonce { .. }) => TxStatus::BadNonce,
        Err(SignedFailure::NotOwner { .. }) => TxStatus::NotOwner,
        Err(SignedFailure::UnknownSigner) => TxStatus::UnknownSigner,
        Err(_) => TxStatus::BadSignature,
    }
}

/// Sends each client its entries, with the certificate (or none, for dropped transactions).
pub(super) fn send_receipts(shared: &Shared, certificate: Option<Certificate>, entries: Vec<(Origin, TxStatus)>) {
    shared.release(entries.iter().map(|(o, _)| *o));
    let mut by_conn: HashMap<u64, Vec<ReceiptEntry>> = HashMap::new();
    for (o, status) in entries {
        by_conn.entry(o.conn).or_default().push(ReceiptEntry { batch: o.batch, index: o.index, status });
    }
    for (conn, entries) in by_conn {
        shared.send_to_client(conn, &Message::Receipts { certificate: certificate.clone(), entries });
    }
}

/// One turn of a group's or the coordinator's loop: waits up to [`TICK`] for an event, then
/// takes what else is queued, up to [`EVENTS_PER_TURN`] (so a stream of events cannot keep it
/// from its mempool); `None` once every sender is gone.
pub(super) fn turn<E>(rx: &Receiver<E>) -> Option<impl Iterator<Item = E> + '_> {
    let first = match rx.recv_timeout(TICK) {
        Ok(event) => Some(event),
        Err(RecvTimeoutError::Timeout) => None,
        Err(RecvTimeoutError::Disconnected) => return None,
    };
    Some(first.into_iter().chain(rx.try_iter().take(EVENTS_PER_TURN)))
}

/// A proposer's pending transactions (their signatures verified), each with the time it
/// arrived.
pub(super) type Mempool = VecDeque<(SignedTx, Origin, Instant)>;

/// True when a block (or round) should be made: `block_txs` are pending, or the oldest has
/// waited `block_time`.
pub(super) fn ready(mempool: &Mempool, block_txs: usize, block_time: Duration) -> bool {
    mempool.len() >= block_txs || mempool.front().is_some_and(|(_, _, at)| at.elapsed() >= block_time)
}

/// Takes up to `block_txs` pending transactions off `mempool` (and its `depth` count).
pub(super) fn take(mempool: &mut Mempool, depth: &AtomicUsize, block_txs: usize) -> Vec<(SignedTx, Origin)> {
    let n = mempool.len().min(block_txs);
    depth.fetch_sub(n, Ordering::Relaxed);
    mempool.drain(..n).map(|(t, o, _)| (t, o)).collect()
}

/// Drops every pending transaction of `mempool` without a receipt (this node no longer leads
/// its shard), giving back the clients' quotas and the mempool's space.
pub(super) fn drop_pending(mempool: &mut Mempool, depth: &AtomicUsize, shared: &Shared) {
    depth.fetch_sub(mempool.len(), Ordering::Relaxed);
    shared.release(mempool.drain(..).map(|(_, o, _)| o));
}

/// The verified transactions as one aggregated block (`None` when there are none), and their
/// origins; on failure, every transaction's drop receipt.
pub(super) type Aggregated = Result<(Option<AggregatedBlock>, Vec<Origin>), Vec<(Origin, TxStatus)>>;

/// Aggregates the verified transactions' signatures into one block signature.
pub(super) fn aggregate(chain_id: u64, good: Vec<(SignedTx, Origin)>) -> Aggregated {
    if good.is_empty() {
        return Ok((None, Vec::new()));
    }
    let signatures: Vec<_> = good.iter().map(|(t, _)| t.signature).collect();
    let Ok(signature) = occam_engine::crypto::Signature::aggregate(&signatures) else {
        return Err(good.into_iter().map(|(_, o)| (o, TxStatus::BadSignature)).collect());
    };
    let (headers, origins): (Vec<_>, Vec<_>) = good.into_iter().map(|(t, o)| (t.header, o)).unzip();
    Ok((Some(AggregatedBlock { chain_id, headers, signature }), origins))
}
