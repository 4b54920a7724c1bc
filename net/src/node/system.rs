//! The replicated bookkeeping of cross-shard rounds: records kept in a shard's own state under
//! reserved keys ([`occam_engine::native::tag::SYSTEM`]), written only by the applier when it
//! applies a block's [`CrossStep`], so every replica holds the same records, they are covered by
//! the certified state root, persisted with the block and carried by snapshots.
//!
//! A participant shard keeps its **lock** (the round whose reads it answered and whose outcome
//! it has not applied) and the **last round done** there (with the height of the block that
//! applied it). A shard's leader proposes no transactions while its shard is locked, and a block
//! applied while the shard is locked has its transactions refused (status `Aborted`), so the
//! values a round read cannot change before its writes land, whichever replica leads.
//!
//! Shard 0 keeps the coordinator's **round record**: the round in progress (started with its
//! participants, or decided with its outcome and its writes), so that a coordinator elected
//! after the previous one died resumes a decided round and aborts an undecided one.
//!
//! Every function here is pure: it reads the state and returns the writes; the applier applies
//! them with the block.

use crate::wire::{decode_entries, encode_entries, CrossStep};
use occam_engine::key::Key;
use occam_engine::native::tag::SYSTEM;
use occam_engine::state::CommittedState;
use occam_engine::value::Value;
use occam_shard::protocol::Entries;

/// Second byte group of every system key (ASCII "occamsys"), so a foreign VM's key with the
/// same tag byte is unlikely to collide by accident.
const MAGIC: u64 = u64::from_le_bytes(*b"occamsys");
const LOCK: u64 = 1;
const DONE: u64 = 2;
const ROUND: u64 = 3;
const WRITES: u64 = 4;

/// The most bytes of writes kept under one system key (values are bounded by the wire's
/// [`crate::wire::MAX_VALUE_LEN`]).
const CHUNK_BYTES: usize = 48 << 10;

/// The encoded size of one entry in the wire's encoding.
fn entry_len((_, v): &(Key, Option<Value>)) -> usize {
    33 + v.as_ref().map_or(0, |v| 4 + v.len())
}

fn key(kind: u64, a: u64) -> Key {
    Key::from_parts3(SYSTEM, MAGIC, kind, a)
}

/// What applying a block's cross-shard step did, for the group's thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrossOutcome {
    /// The shard is locked for `round` now (false: refused, the shard was locked by another
    /// round or the round is finished here).
    Prepared { round: u64, ok: bool },
    /// The round's outcome is applied here (false: it was already, or it was never prepared
    /// here and carried writes).
    Applied { round: u64, ok: bool },
    /// Shard 0: a round started, its id the block's height (false: another round is undecided).
    Started { round: u64, ok: bool },
    /// Shard 0: the round's outcome is recorded (false: it is not the round in progress).
    Decided { round: u64, ok: bool },
}

/// The coordinator's record of the round in progress (on shard 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundRecord {
    /// The round: the height of the block that started it on shard 0.
    pub round: u64,
    /// The participant shards.
    pub participants: Vec<u32>,
    /// Not yet decided (`None`), or decided: `Some(true)` aborted, `Some(false)` committed.
    pub aborted: Option<bool>,
    /// Chunks of the decided writes, per participant.
    chunks: Vec<(u32, u32)>,
}

impl RoundRecord {
    /// True once the round's outcome is recorded.
    pub fn decided(&self) -> bool {
        self.aborted.is_some()
    }

    fn encode(&self) -> Value {
        let mut w = Vec::with_capacity(24 + self.participants.len() * 4 + self.chunks.len() * 8);
        w.extend_from_slice(&self.round.to_le_bytes());
        w.push(match self.aborted {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        });
        w.extend_from_slice(&(self.participants.len() as u32).to_le_bytes());
        for p in &self.participants {
            w.extend_from_slice(&p.to_le_bytes());
        }
        w.extend_from_slice(&(self.chunks.len() as u32).to_le_bytes());
        for (s, n) in &self.chunks {
            w.extend_from_slice(&s.to_le_bytes());
            w.extend_from_slice(&n.to_le_bytes());
        }
        Value::from_slice(&w)
    }

    fn decode(v: &Value) -> Option<RoundRecord> {
        let b = v.as_bytes();
        let u32_at = |i: usize| b.get(i..i + 4).map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")));
        let round = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
        let aborted = match *b.get(8)? {
            0 => None,
            1 => Some(false),
            2 => Some(true),
            _ => return None,
        };
        let n = u32_at(9)? as usize;
        let mut at = 13;
        let mut participants = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            participants.push(u32_at(at)?);
            at += 4;
        }
        let m = u32_at(at)? as usize;
        at += 4;
        let mut chunks = Vec::with_capacity(m.min(1024));
        for _ in 0..m {
            chunks.push((u32_at(at)?, u32_at(at + 4)?));
            at += 8;
        }
        (at == b.len()).then_some(RoundRecord { round, participants, aborted, chunks })
    }
}

fn get_u64(state: &CommittedState, k: &Key) -> Option<u64> {
    state.get(k).and_then(Value::as_u64)
}

/// The round this shard is locked for, if any.
pub fn lock(state: &CommittedState) -> Option<u64> {
    get_u64(state, &key(LOCK, 0))
}

/// The last round finished on this shard and the height of the block that finished it
/// (`(0, 0)` before any).
pub fn done(state: &CommittedState) -> (u64, u64) {
    match state.get(&key(DONE, 0)).map(Value::as_bytes) {
        Some(b) if b.len() == 16 => {
            (u64::from_le_bytes(b[..8].try_into().expect("8 bytes")), u64::from_le_bytes(b[8..].try_into().expect("8 bytes")))
        }
        _ => (0, 0),
    }
}

/// Shard 0's record of the round in progress, if any.
pub fn round(state: &CommittedState) -> Option<RoundRecord> {
    state.get(&key(ROUND, 0)).and_then(RoundRecord::decode)
}

/// The decided writes of `record` for `shard`, read back from their chunks.
pub fn decided_writes(state: &CommittedState, record: &RoundRecord, shard: u32) -> Entries {
    let mut out = Entries::new();
    let mut index = 0u64;
    for (s, n) in &record.chunks {
        for _ in 0..*n {
            if *s == shard {
                // Written by `apply_step` in the wire's encoding; replicas agree on it.
                if let Some(entries) = state.get(&key(WRITES, index)).and_then(|v| decode_entries(v.as_bytes()).ok()) {
                    out.extend(entries);
                }
            }
            index += 1;
        }
    }
    out
}

/// The state changes and outcome of applying `step` in the block at `height` of `shard`.
pub fn apply_step(state: &CommittedState, shard: u32, height: u64, step: &CrossStep) -> (Entries, CrossOutcome) {
    let mut writes = Entries::new();
    let outcome = match step {
        CrossStep::Prepare { round, .. } => {
            let ok = lock(state).is_none() && *round > done(state).0;
            if ok {
                writes.push((key(LOCK, 0), Some(Value::from_u64(*round))));
            }
            CrossOutcome::Prepared { round: *round, ok }
        }
        CrossStep::Apply { round, writes: w } => {
            let locked = lock(state);
            let ok = if locked == Some(*round) {
                writes.extend(w.iter().cloned());
                true
            } else {
                // Never prepared here: only an abort (no writes) may finish it, so that a late
                // prepare of it is refused.
                locked.is_none() && *round > done(state).0 && w.is_empty()
            };
            if ok {
                if locked.is_some() {
                    writes.push((key(LOCK, 0), None));
                }
                let mut d = round.to_le_bytes().to_vec();
                d.extend_from_slice(&height.to_le_bytes());
                writes.push((key(DONE, 0), Some(Value::from_slice(&d))));
            }
            CrossOutcome::Applied { round: *round, ok }
        }
        CrossStep::Start { participants } => {
            let previous = round(state);
            let ok = shard == 0 && previous.as_ref().is_none_or(RoundRecord::decided);
            if ok {
                if let Some(p) = previous {
                    let n: u64 = p.chunks.iter().map(|(_, n)| u64::from(*n)).sum();
                    writes.extend((0..n).map(|i| (key(WRITES, i), None)));
                }
                let record = RoundRecord { round: height, participants: participants.clone(), aborted: None, chunks: Vec::new() };
                writes.push((key(ROUND, 0), Some(record.encode())));
            }
            CrossOutcome::Started { round: height, ok }
        }
        CrossStep::Decide { round: r, aborted, writes: by_shard } => {
            let record = round(state).filter(|rec| rec.round == *r && !rec.decided());
            let ok = shard == 0 && record.is_some();
            if let (true, Some(mut rec)) = (ok, record) {
                rec.aborted = Some(*aborted);
                let mut index = 0u64;
                if !*aborted {
                    for (s, entries) in by_shard {
                        // Consecutive runs of entries of at most CHUNK_BYTES encoded (at least
                        // one entry each; native values are tens of bytes).
                        let mut count = 0u32;
                        let mut from = 0;
                        while from < entries.len() {
                            let (mut to, mut bytes) = (from, 4);
                            while to < entries.len() && (to == from || bytes + entry_len(&entries[to]) <= CHUNK_BYTES) {
                                bytes += entry_len(&entries[to]);
                                to += 1;
                            }
                            let chunk = encode_entries(&entries[from..to]);
                            writes.push((key(WRITES, index), Some(Value::from_slice(&chunk))));
                            index += 1;
                            count += 1;
                            from = to;
                        }
                        rec.chunks.push((*s, count));
                    }
                }
                writes.push((key(ROUND, 0), Some(rec.encode())));
            }
            CrossOutcome::Decided { round: *r, ok }
        }
    };
    (writes, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use occam_engine::state::WriteSet;

    fn k(i: u64) -> Key {
        Key::from_parts(1, i, 0)
    }

    fn run(state: &mut CommittedState, shard: u32, height: u64, step: CrossStep) -> CrossOutcome {
        let (w, out) = apply_step(state, shard, height, &step);
        state.apply(&WriteSet::from_entries(w), None);
        out
    }

    #[test]
    fn a_participant_applies_a_round_once_and_only_after_preparing_it() {
        let mut s = CommittedState::default();
        // Writes without a prepare are refused (and leave no trace).
        let apply = |round: u64| CrossStep::Apply { round, writes: vec![(k(1), Some(Value::from_u64(5)))] };
        assert_eq!(run(&mut s, 1, 1, apply(10)), CrossOutcome::Applied { round: 10, ok: false });
        assert_eq!(s.get(&k(1)), None);
        assert_eq!(run(&mut s, 1, 2, CrossStep::Prepare { round: 10, keys: vec![k(1)] }), CrossOutcome::Prepared { round: 10, ok: true });
        assert_eq!(lock(&s), Some(10));
        // Another round cannot lock a locked shard.
        assert_eq!(run(&mut s, 1, 3, CrossStep::Prepare { round: 11, keys: vec![] }), CrossOutcome::Prepared { round: 11, ok: false });
        assert_eq!(run(&mut s, 1, 4, apply(10)), CrossOutcome::Applied { round: 10, ok: true });
        assert_eq!(s.get(&k(1)), Some(&Value::from_u64(5)));
        assert_eq!((lock(&s), done(&s)), (None, (10, 4)));
        // A resent outcome (after a leader change) is not applied twice.
        let again = CrossStep::Apply { round: 10, writes: vec![(k(1), Some(Value::from_u64(7)))] };
        assert_eq!(run(&mut s, 1, 5, again), CrossOutcome::Applied { round: 10, ok: false });
        assert_eq!(s.get(&k(1)), Some(&Value::from_u64(5)));
        // A late prepare of a finished round is refused.
        assert_eq!(run(&mut s, 1, 6, CrossStep::Prepare { round: 10, keys: vec![] }), CrossOutcome::Prepared { round: 10, ok: false });
        assert_eq!(lock(&s), None);
    }

    #[test]
    fn an_abort_of_an_unprepared_round_refuses_its_late_prepare() {
        let mut s = CommittedState::default();
        assert_eq!(run(&mut s, 2, 1, CrossStep::Apply { round: 7, writes: vec![] }), CrossOutcome::Applied { round: 7, ok: true });
        assert_eq!(run(&mut s, 2, 2, CrossStep::Prepare { round: 7, keys: vec![] }), CrossOutcome::Prepared { round: 7, ok: false });
        assert_eq!(lock(&s), None);
        // A newer round still locks.
        assert_eq!(run(&mut s, 2, 3, CrossStep::Prepare { round: 8, keys: vec![] }), CrossOutcome::Prepared { round: 8, ok: true });
    }

    #[test]
    fn the_coordinator_record_keeps_one_round_and_its_decided_writes() {
        let mut s = CommittedState::default();
        assert_eq!(run(&mut s, 0, 5, CrossStep::Start { participants: vec![1, 2] }), CrossOutcome::Started { round: 5, ok: true });
        // No second round while the first is undecided.
        assert_eq!(run(&mut s, 0, 6, CrossStep::Start { participants: vec![1] }), CrossOutcome::Started { round: 6, ok: false });
        // Enough writes for several chunks on shard 1, one on shard 2.
        let big: Entries = (0..5000).map(|i| (k(i), Some(Value::from_slice(&[7u8; 20])))).collect();
        let small: Entries = vec![(k(9), None)];
        let decide = CrossStep::Decide { round: 5, aborted: false, writes: vec![(1, big.clone()), (2, small.clone())] };
        assert_eq!(run(&mut s, 0, 7, decide.clone()), CrossOutcome::Decided { round: 5, ok: true });
        assert_eq!(run(&mut s, 0, 8, decide), CrossOutcome::Decided { round: 5, ok: false });
        let rec = round(&s).unwrap();
        assert_eq!((rec.round, rec.aborted, rec.participants.clone()), (5, Some(false), vec![1, 2]));
        assert!(rec.chunks[0].1 > 1);
        assert_eq!(decided_writes(&s, &rec, 1), big);
        assert_eq!(decided_writes(&s, &rec, 2), small);
        assert_eq!(decided_writes(&s, &rec, 3), Entries::new());
        // The next round replaces the record and drops the old writes.
        assert_eq!(run(&mut s, 0, 9, CrossStep::Start { participants: vec![3] }), CrossOutcome::Started { round: 9, ok: true });
        let rec = round(&s).unwrap();
        assert_eq!((rec.round, rec.aborted), (9, None));
        assert_eq!(s.sorted_entries().len(), 1, "only the record is left");
        // Only shard 0 coordinates.
        assert_eq!(run(&mut s, 1, 3, CrossStep::Start { participants: vec![] }), CrossOutcome::Started { round: 3, ok: false });
    }
}
