//! The cross-shard protocol's state machines over a transport that reorders and repeats
//! messages (deterministic, seeded), and their refusals.

use occam_engine::key::Key;
use occam_engine::value::Value;
use occam_shard::protocol::{Action, Address, Coordinator, Entries, Envelope, Message, Participant, ProtocolError, Step};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};

fn key(shard: u32, i: u64) -> Key {
    Key::from_parts(1, u64::from(shard) * 1000 + i, 0)
}

/// One block's cross-shard phase with `shards` participants over a bag of messages from which
/// the next one is drawn at random, each delivered message repeated with probability `dup`.
/// The "transactions" add up every value read and write `sum + i` to every key. Returns each
/// shard's state and how often each shard applied writes.
fn run(seed: u64, shards: u32, dup: f64) -> (Vec<HashMap<Key, Value>>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut states: Vec<HashMap<Key, Value>> =
        (0..shards).map(|s| (0..3).map(|i| (key(s, i), Value::from_u64(u64::from(s) * 10 + i))).collect()).collect();
    let reads: BTreeMap<u32, Vec<Key>> = (0..shards).map(|s| (s, (0..4).map(|i| key(s, i)).collect())).collect();
    let (mut coordinator, first) = Coordinator::start(9, reads.clone());
    let mut participants: Vec<Participant> = (0..shards).map(Participant::new).collect();
    let mut bag: Vec<Envelope> = first;
    let mut applies = vec![0usize; shards as usize];
    let mut steps = 0;
    while !bag.is_empty() {
        steps += 1;
        assert!(steps < 10_000, "the protocol must finish");
        let i = rng.gen_range(0..bag.len());
        let envelope = if rng.gen_bool(dup) { bag[i].clone() } else { bag.swap_remove(i) };
        match envelope.to {
            Address::Shard(s) => {
                let state = &states[s as usize];
                let actions = participants[s as usize].on_message(&envelope.message, |k| state.get(k).cloned()).unwrap();
                for a in actions {
                    match a {
                        Action::Send(e) => bag.push(e),
                        Action::ApplyWrites(writes) => {
                            applies[s as usize] += 1;
                            for (k, v) in writes {
                                match v {
                                    Some(v) => states[s as usize].insert(k, v),
                                    None => states[s as usize].remove(&k),
                                };
                            }
                        }
                    }
                }
            }
            Address::Coordinator => match coordinator.on_message(&envelope.message).unwrap() {
                Step::Execute(values) => {
                    assert_eq!(values.len(), reads.values().map(Vec::len).sum::<usize>());
                    let sum: u64 = values.iter().filter_map(|(_, v)| v.as_ref().and_then(Value::as_u64)).sum();
                    let mut writes: BTreeMap<u32, Entries> = BTreeMap::new();
                    for (i, (k, _)) in values.iter().enumerate() {
                        let owner = (k.0[16] as u64 + k.0[17] as u64 * 256) / 1000;
                        writes.entry(owner as u32).or_default().push((*k, Some(Value::from_u64(sum + i as u64))));
                    }
                    bag.extend(coordinator.on_executed(writes).unwrap());
                }
                Step::Wait | Step::Done => {}
            },
        }
    }
    assert!(coordinator.is_done());
    (states, applies)
}

#[test]
fn reordered_and_repeated_messages_give_the_same_result() {
    for shards in [1u32, 2, 3, 5] {
        let (reference, applies) = run(0, shards, 0.0);
        assert!(applies.iter().all(|&a| a == 1));
        // The values read were 10s + i for i < 3, absent for i = 3.
        let sum: u64 = (0..shards as u64).map(|s| 30 * s + 3).sum();
        assert_eq!(reference[0].get(&key(0, 0)).and_then(Value::as_u64), Some(sum));
        assert_eq!(reference[0].get(&key(0, 3)).and_then(Value::as_u64), Some(sum + 3), "an absent key can be written");
        for seed in 1..60 {
            let (states, applies) = run(seed, shards, 0.3);
            assert_eq!(states, reference, "{shards} shards, seed {seed}");
            assert!(applies.iter().all(|&a| a == 1), "each shard applies its writes exactly once");
        }
    }
}

#[test]
fn refusals() {
    let reads: BTreeMap<u32, Vec<Key>> = [(0, vec![key(0, 0)]), (2, vec![key(2, 0)])].into();
    let (mut c, _) = Coordinator::start(4, reads);
    // A shard that is not a participant.
    let stray = Message::ReadReply { block: 4, from: 1, values: vec![] };
    assert_eq!(c.on_message(&stray), Err(ProtocolError::NotParticipant { block: 4, shard: 1 }));
    // An answer for other keys than asked.
    let wrong = Message::ReadReply { block: 4, from: 0, values: vec![(key(0, 1), None)] };
    assert_eq!(c.on_message(&wrong), Err(ProtocolError::WrongKeys { block: 4, shard: 0 }));
    // Messages of another block are ignored; the coordinator never receives requests.
    assert_eq!(c.on_message(&Message::ReadReply { block: 3, from: 0, values: vec![] }), Ok(Step::Wait));
    assert_eq!(c.on_message(&Message::ReadRequest { block: 4, keys: vec![] }), Err(ProtocolError::Unexpected));
    // Writes before every read is in, and writes for a non-participant.
    assert_eq!(c.on_executed(BTreeMap::new()), Err(ProtocolError::NotExecuting));
    assert_eq!(c.on_message(&Message::ReadReply { block: 4, from: 0, values: vec![(key(0, 0), None)] }), Ok(Step::Wait));
    assert!(matches!(c.on_message(&Message::ReadReply { block: 4, from: 2, values: vec![(key(2, 0), None)] }), Ok(Step::Execute(_))));
    let outside: BTreeMap<u32, Entries> = [(1, vec![])].into();
    assert_eq!(c.on_executed(outside), Err(ProtocolError::WriteOutsideParticipants(1)));
    // A participant never receives replies.
    let mut p = Participant::new(0);
    assert_eq!(p.on_message(&Message::Applied { block: 4, from: 0, height: 0 }, |_| None), Err(ProtocolError::Unexpected));
    // After applying block 4, a late read request for it is not answered with new values.
    assert_eq!(p.on_message(&Message::Apply { block: 4, writes: vec![] }, |_| None).unwrap().len(), 2);
    assert!(p.on_message(&Message::ReadRequest { block: 4, keys: vec![key(0, 0)] }, |_| None).unwrap().is_empty());
    // A block with no participants is over at once.
    let (empty, out) = Coordinator::start(5, BTreeMap::new());
    assert!(empty.is_done() && out.is_empty());
}
