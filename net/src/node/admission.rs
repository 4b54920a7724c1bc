//! Admission: a client's batch enters a mempool only after every signature in it verified.
//!
//! The ingress, on the network's threads, checks a batch's chain and routing, reserves its
//! space in the mempool and its client's quotas, and queues it here; it does no curve
//! arithmetic. One thread (`occam-admission`) checks the queued batches in turns. A turn takes
//! from every source address with work its next connection's front batch, and of that batch
//! at most `limits.verify_share` signatures; the shares are checked side by side on the
//! verification threads, each as its own batch check. So an honest client's batch waits
//! behind at most one share of every other address's per turn, however much an attacker
//! queued, and the shard's Raft ordering (the group threads) never waits on a signature.
//!
//! A share that fails refuses its batch whole (`BadSignature`), nothing of it admitted and the
//! rest of it never checked: a forger pays for at most one share of checks per batch. A batch
//! naming a signer the chain does not know is refused (`UnknownSigner`) before any check. A
//! connection that sends `limits.bad_batches` batches with bad signatures is closed
//! ([`close::FORGED`]) and its source address refused for `limits.ban_s` seconds.
//!
//! A batch whose every share verified is acknowledged (`Accepted`) and goes to its group's
//! mempool (or the coordinator's), in the order its connection sent it.

use super::coordinator::CoordEvent;
use super::group::GroupEvent;
use super::{Origin, Shared};
use crate::transport::close;
use crate::wire::{Message, Refusal};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use occam_engine::crypto::SignedMessage;
use occam_engine::native::signed::{RawSignedTx, SignedTx};
use rayon::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Batches the admission queue holds; beyond it, batches are refused (`QueueFull`). Each
/// batch's transactions are also counted in its mempool's and its client's limits.
pub(super) const ADMISSION_QUEUE: usize = 16_384;

/// How long the admission thread waits for a batch when it has none.
const IDLE_WAIT: Duration = Duration::from_millis(5);

/// A client batch waiting for its signatures to be checked.
pub(super) struct Job {
    /// The client's connection.
    pub conn: u64,
    /// The connection's source address.
    pub host: IpAddr,
    /// The client's batch id.
    pub batch: u64,
    /// The batch's shard; `None` for cross-shard transactions (the coordinator's).
    pub route: Option<u32>,
    /// The transactions, with where each came from.
    pub txs: Vec<(RawSignedTx, Origin)>,
    /// The mempool count the batch's space was reserved in.
    pub depth: Arc<AtomicUsize>,
}

/// A batch being checked: how far, and the transactions verified so far.
struct InCheck {
    job: Job,
    verified: Vec<(SignedTx, Origin)>,
}

/// The waiting batches, by source address and connection, in turn order.
#[derive(Default)]
struct Queues {
    /// Addresses with a batch waiting, in turn order.
    hosts: VecDeque<IpAddr>,
    /// Each such address's connections with a batch waiting, in turn order.
    conns: HashMap<IpAddr, VecDeque<u64>>,
    /// Each connection's waiting batches, in the order it sent them.
    batches: HashMap<u64, VecDeque<InCheck>>,
    /// Transactions waiting, in all.
    txs: usize,
}

impl Queues {
    fn push(&mut self, job: Job) {
        self.txs += job.txs.len();
        let (conn, host) = (job.conn, job.host);
        let queue = self.batches.entry(conn).or_default();
        let new_conn = queue.is_empty();
        queue.push_back(InCheck { job, verified: Vec::new() });
        if new_conn {
            let conns = self.conns.entry(host).or_default();
            if conns.is_empty() {
                self.hosts.push_back(host);
            }
            conns.push_back(conn);
        }
    }

    /// The connections whose front batches this turn checks: the next connection of every
    /// address with work, each taken out of its address's turn order (put back by
    /// [`Queues::requeue`]).
    fn turn(&mut self) -> Vec<(IpAddr, u64)> {
        let mut picked = Vec::with_capacity(self.hosts.len());
        for host in self.hosts.drain(..) {
            let conn = self.conns.get_mut(&host).and_then(VecDeque::pop_front).expect("an address in turn has a connection waiting");
            picked.push((host, conn));
        }
        picked
    }

    /// Puts `conn` back in its address's turn order if it still has batches waiting, and the
    /// address back in the turn order if it still has connections waiting.
    fn requeue(&mut self, host: IpAddr, conn: u64) {
        let conns = self.conns.entry(host).or_default();
        if self.batches.get(&conn).is_some_and(|q| !q.is_empty()) {
            conns.push_back(conn);
        } else {
            self.batches.remove(&conn);
        }
        if conns.is_empty() {
            self.conns.remove(&host);
        } else {
            // [`Queues::turn`] took every address out of the turn order, and nothing was
            // pushed since.
            debug_assert!(!self.hosts.contains(&host));
            self.hosts.push_back(host);
        }
    }
}

/// What a turn made of one connection's front batch.
enum Verdict {
    /// This share verified; the batch has more.
    More,
    /// Every share verified: the batch goes to its mempool.
    Done,
    /// Refused whole, for this reason.
    Refused(Refusal),
    /// The connection is gone: nothing of its batches is pending any more.
    Gone,
}

/// Runs the admission thread until the node stops.
pub(super) fn run_admission(rx: Receiver<Job>, shared: Arc<Shared>) {
    let mut queues = Queues::default();
    let share = shared.cluster.limits.verify_share.max(1);
    while !shared.stopping.load(Ordering::Relaxed) {
        // Take in what arrived; wait only when there is nothing to check.
        if queues.hosts.is_empty() {
            match rx.recv_timeout(IDLE_WAIT) {
                Ok(job) => queues.push(job),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        for job in rx.try_iter().take(super::EVENTS_PER_TURN) {
            queues.push(job);
        }
        shared.metrics.admission_txs.set(queues.txs as i64);
        let picked = queues.turn();
        let verdicts = check_turn(&shared, &mut queues, &picked, share);
        for ((host, conn), verdict) in picked.into_iter().zip(verdicts) {
            match verdict {
                Verdict::More => {}
                Verdict::Done => {
                    let done = queues.batches.get_mut(&conn).and_then(VecDeque::pop_front).expect("a checked batch");
                    queues.txs -= done.job.txs.len();
                    hand_over(&shared, done);
                }
                Verdict::Refused(reason) => {
                    let refused = queues.batches.get_mut(&conn).and_then(VecDeque::pop_front).expect("a checked batch");
                    queues.txs -= refused.job.txs.len();
                    refuse(&shared, refused.job, reason);
                }
                Verdict::Gone => {
                    for dropped in queues.batches.remove(&conn).into_iter().flatten() {
                        queues.txs -= dropped.job.txs.len();
                        dropped.job.depth.fetch_sub(dropped.job.txs.len(), Ordering::Relaxed);
                        shared.release(dropped.job.txs.into_iter().map(|(_, o)| o));
                    }
                }
            }
            queues.requeue(host, conn);
        }
    }
}

/// Checks the next share of each picked connection's front batch; one verdict per pick.
fn check_turn(shared: &Shared, queues: &mut Queues, picked: &[(IpAddr, u64)], share: usize) -> Vec<Verdict> {
    let registry = &*shared.check.registry;
    let chain_id = shared.check.chain_id;
    // A connection closed, or struck out and about to be: its batches are dropped unchecked.
    let strikes_out = shared.cluster.limits.bad_batches;
    let live: Vec<bool> = {
        let clients = shared.clients.lock();
        picked.iter().map(|(_, c)| clients.get(c).is_some_and(|c| c.strikes.load(Ordering::Relaxed) < strikes_out)).collect()
    };
    // Each pick's share: decoded signatures (a point that does not decode refuses the batch)
    // with their signing bytes, once every signer is known.
    enum Share {
        Gone,
        Refused(Refusal),
        Check { txs: Vec<(SignedTx, Origin)>, messages: Vec<Vec<u8>> },
    }
    let mut shares: Vec<Share> = Vec::with_capacity(picked.len());
    for (&(_, conn), &live) in picked.iter().zip(&live) {
        if !live {
            shares.push(Share::Gone);
            continue;
        }
        let front = queues.batches.get(&conn).and_then(VecDeque::front).expect("a picked connection has a batch");
        let from = front.verified.len();
        let to = (from + share).min(front.job.txs.len());
        let part = &front.job.txs[from..to];
        if part.iter().any(|(t, _)| registry.get(t.header.signer).is_none()) {
            shares.push(Share::Refused(Refusal::UnknownSigner));
            continue;
        }
        let decoded: Option<Vec<(SignedTx, Origin, Vec<u8>)>> = part
            .par_iter()
            .map(|(raw, origin)| {
                let tx = raw.clone().validate().ok()?;
                let message = tx.header.signing_bytes(chain_id);
                Some((tx, *origin, message))
            })
            .collect();
        shares.push(match decoded {
            None => Share::Refused(Refusal::BadSignature),
            Some(d) => {
                let (txs, messages) = d.into_iter().map(|(t, o, m)| ((t, o), m)).unzip();
                Share::Check { txs, messages }
            }
        });
    }
    let items: Vec<Vec<SignedMessage<'_>>> = shares
        .iter()
        .map(|s| match s {
            Share::Check { txs, messages } => txs
                .iter()
                .zip(messages)
                .map(|((t, _), m)| SignedMessage {
                    key: registry.get(t.header.signer).expect("known signers only"),
                    message: m,
                    signature: &t.signature,
                })
                .collect(),
            Share::Gone | Share::Refused(_) => Vec::new(),
        })
        .collect();
    let groups: Vec<&[SignedMessage<'_>]> = items.iter().map(Vec::as_slice).collect();
    let timer = shared.metrics.verify_seconds.start_timer();
    let ok = shared.check.verifier.verify_groups(&groups);
    drop(timer);
    drop(items);
    let mut verdicts = Vec::with_capacity(picked.len());
    for ((&(_, conn), share), ok) in picked.iter().zip(shares).zip(ok) {
        let verdict = match share {
            Share::Gone => Verdict::Gone,
            Share::Refused(reason) => Verdict::Refused(reason),
            Share::Check { .. } if !ok => Verdict::Refused(Refusal::BadSignature),
            Share::Check { txs, .. } => {
                let front = queues.batches.get_mut(&conn).and_then(VecDeque::front_mut).expect("a picked connection has a batch");
                front.verified.extend(txs);
                if front.verified.len() == front.job.txs.len() {
                    Verdict::Done
                } else {
                    Verdict::More
                }
            }
        };
        verdicts.push(verdict);
    }
    verdicts
}

/// Acknowledges a verified batch and hands it to its group's (or the coordinator's) mempool.
fn hand_over(shared: &Shared, checked: InCheck) {
    let InCheck { job, verified } = checked;
    let n = verified.len();
    // `Accepted` goes out before the batch reaches its group, so it precedes the receipts.
    shared.send_to_client(job.conn, &Message::Accepted { batch: job.batch });
    let now = Instant::now();
    let sent = match job.route {
        Some(shard) => shared.groups[&shard].events.try_send(GroupEvent::Submit(verified, now)).map_err(|e| e.is_full()),
        None => match shared.coordinator.as_ref() {
            Some((c, _)) => c.try_send(CoordEvent::Submit(verified, now)).map_err(|e| e.is_full()),
            None => Err(false),
        },
    };
    if let Err(full) = sent {
        // The thread's queue is full (never waited on: the groups' threads must not wait for
        // this one), or the thread is gone (the node is stopping): nothing of the batch is
        // pending, and the client hears so after all.
        job.depth.fetch_sub(n, Ordering::Relaxed);
        shared.release(job.txs.into_iter().map(|(_, o)| o));
        let reason = if full { Refusal::QueueFull } else { Refusal::ShuttingDown };
        debug!(conn = job.conn, batch = job.batch, ?reason, "a verified batch could not reach its mempool");
        shared.metrics.refused(reason);
        shared.send_to_client(job.conn, &Message::Refused { batch: job.batch, reason, leader: None });
        return;
    }
    shared.metrics.accepted.inc_by(n as u64);
}

/// Refuses a batch whole: its reservations come back, the client hears why, and a bad
/// signature counts against the connection.
fn refuse(shared: &Shared, job: Job, reason: Refusal) {
    let n = job.txs.len();
    job.depth.fetch_sub(n, Ordering::Relaxed);
    shared.release(job.txs.into_iter().map(|(_, o)| o));
    shared.metrics.refused(reason);
    shared.send_to_client(job.conn, &Message::Refused { batch: job.batch, reason, leader: None });
    if reason != Refusal::BadSignature {
        return;
    }
    shared.metrics.rejected_signatures.inc_by(n as u64);
    let limits = &shared.cluster.limits;
    let client = shared.clients.lock().get(&job.conn).map(|c| (c.strikes.clone(), c.conn.clone()));
    let Some((strikes, conn)) = client else { return };
    let struck = strikes.fetch_add(1, Ordering::Relaxed) + 1;
    if struck >= limits.bad_batches {
        warn!(conn = job.conn, host = %job.host, batches = struck, ban_s = limits.ban_s, "closing a client that sent batches with bad signatures; refusing its address");
        shared.ban(job.host, Duration::from_secs(limits.ban_s));
        conn.close(close::FORGED.into(), b"batches with bad signatures");
        shared.metrics.disconnected(crate::metrics::Disconnect::Forged);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(conn: u64, host: u8, batch: u64) -> Job {
        Job { conn, host: IpAddr::from([127, 0, 0, host]), batch, route: Some(0), txs: Vec::new(), depth: Arc::new(AtomicUsize::new(0)) }
    }

    #[test]
    fn turns_go_round_the_addresses_then_their_connections() {
        let mut q = Queues::default();
        // Address 1: connection 10 with three batches, 11 with one; address 2: 20 with one.
        for b in 0..3 {
            q.push(job(10, 1, b));
        }
        q.push(job(11, 1, 0));
        q.push(job(20, 2, 0));
        let mut order = Vec::new();
        while !q.hosts.is_empty() {
            for (host, conn) in q.turn() {
                // Each turn finishes its connections' front batches, in the order sent.
                let front = q.batches.get_mut(&conn).and_then(VecDeque::pop_front).unwrap();
                order.push((conn, front.job.batch));
                q.requeue(host, conn);
            }
            order.push((0, 0));
        }
        // Address 2's one batch waits for one share of address 1's, not for all four.
        assert_eq!(order, vec![(10, 0), (20, 0), (0, 0), (11, 0), (0, 0), (10, 1), (0, 0), (10, 2), (0, 0)]);
        assert!(q.conns.is_empty() && q.batches.is_empty());
    }
}
