use super::*;
use occam_engine::native::signed::{SignedBlock, TxHeader};
use occam_engine::native::{NativeTx, TxKind};

fn keys() -> Vec<SecretKey> {
    (0..4u8).map(|i| SecretKey::from_seed(&[i + 1; 32]).unwrap()).collect()
}

fn set(keys: &[SecretKey]) -> ValidatorSet {
    let members: Vec<_> = keys.iter().map(|k| (k.public_key(), k.prove_possession())).collect();
    ValidatorSet::new(&members).unwrap()
}

fn proposal(height: u64, parent: [u8; 32], amount: u64) -> Proposal {
    let body = NativeTx { kind: TxKind::Transfer { from: 1, to: 2, amount }, work_rounds: 0 };
    let tx = TxHeader { signer: 0, nonce: height - 1, body }.sign(1, &keys()[0]);
    let block = SignedBlock { chain_id: 1, txs: vec![tx] }.aggregate().unwrap();
    Proposal { shard: 0, height, parent, cross_writes: Vec::new(), block: Some(block) }
}

fn certified(out: &[LeaderOut]) -> Vec<u64> {
    out.iter().filter_map(|o| if let LeaderOut::Certified { height, .. } = o { Some(*height) } else { None }).collect()
}

#[test]
fn a_quorum_certifies_and_certificates_verify() {
    let k = keys();
    let now = Instant::now();
    let mut leader = LeaderCore::new(1, 0, set(&k), 4, Duration::from_millis(100));
    let mut replicas: Vec<ReplicaCore> = (1..4).map(|i| ReplicaCore::new(1, 0, i)).collect();
    let p = proposal(1, leader.parent(), 5);
    let out = leader.propose(p.clone(), [7; 32], &k[0], now).unwrap();
    assert_eq!(out.iter().filter(|o| matches!(o, LeaderOut::Send { message: Message::Propose(_), .. })).count(), 3);
    let mut votes = Vec::new();
    for r in &mut replicas {
        let ReplicaStep::Execute(p) = r.on_propose(p.clone()).unwrap() else { panic!("next block executes") };
        votes.push(r.executed(&p, [7; 32], &k[r.index as usize]));
    }
    assert!(certified(&leader.on_vote(votes[0], now).unwrap()).is_empty(), "2 of 4 is no quorum");
    let out = leader.on_vote(votes[1], now).unwrap();
    assert_eq!(certified(&out), vec![1]);
    let LeaderOut::Certified { certificate, .. } = out.iter().find(|o| matches!(o, LeaderOut::Certified { .. })).unwrap() else {
        unreachable!()
    };
    certificate.verify(&set(&k)).unwrap();
    // The replica that did not count yet is told the block is committed.
    assert!(out.iter().any(|o| matches!(o, LeaderOut::Send { replica: 3, message: Message::Commit(_) })));
    // A late vote is not in flight any more.
    assert_eq!(leader.on_vote(votes[2], now), Err(CoreError::NotInFlight(1)));
}

#[test]
fn certificates_are_released_in_height_order() {
    let k = keys();
    let now = Instant::now();
    let mut leader = LeaderCore::new(1, 0, set(&k), 2, Duration::from_millis(100));
    let p1 = proposal(1, leader.parent(), 1);
    leader.propose(p1.clone(), [1; 32], &k[0], now).unwrap();
    let p2 = proposal(2, leader.parent(), 2);
    leader.propose(p2.clone(), [2; 32], &k[0], now).unwrap();
    assert!(!leader.can_propose());
    assert_eq!(leader.propose(proposal(3, leader.parent(), 3), [3; 32], &k[0], now), Err(CoreError::PipelineFull));
    let vote = |p: &Proposal, root: u8, i: usize| {
        SignedVote::sign(Vote { chain_id: 1, shard: 0, height: p.height, block_hash: p.hash(), state_root: [root; 32] }, i as u32, &k[i])
    };
    for i in 1..3 {
        assert!(certified(&leader.on_vote(vote(&p2, 2, i), now).unwrap()).is_empty(), "height 2 waits for height 1");
    }
    leader.on_vote(vote(&p1, 1, 1), now).unwrap();
    assert_eq!(certified(&leader.on_vote(vote(&p1, 1, 2), now).unwrap()), vec![1, 2]);
    assert!(leader.can_propose());
}

#[test]
fn a_diverging_replica_is_reported_and_not_counted() {
    let k = keys();
    let now = Instant::now();
    let mut leader = LeaderCore::new(1, 0, set(&k), 4, Duration::from_millis(100));
    let p = proposal(1, leader.parent(), 1);
    leader.propose(p.clone(), [1; 32], &k[0], now).unwrap();
    let bad = SignedVote::sign(Vote { chain_id: 1, shard: 0, height: 1, block_hash: p.hash(), state_root: [9; 32] }, 1, &k[1]);
    assert_eq!(leader.on_vote(bad, now), Err(CoreError::Diverged { signer: 1, height: 1 }));
    assert_eq!(leader.in_flight(), 1);
}

#[test]
fn replicas_hold_early_proposals_and_revote_repeats() {
    let k = keys();
    let mut r = ReplicaCore::new(1, 0, 1);
    let p1 = proposal(1, [0; 32], 1);
    let p2 = proposal(2, p1.hash(), 2);
    assert_eq!(r.on_propose(p2.clone()).unwrap(), ReplicaStep::Held);
    let ReplicaStep::Execute(p) = r.on_propose(p1.clone()).unwrap() else { panic!() };
    let v1 = r.executed(&p, [1; 32], &k[1]);
    assert_eq!(r.on_propose(p1.clone()).unwrap(), ReplicaStep::Revote(v1), "a repeat gets the same vote");
    let Some(Ok(ReplicaStep::Execute(p))) = r.next_ready() else { panic!("height 2 was held") };
    assert_eq!(p, p2);
    r.executed(&p, [2; 32], &k[1]);
    assert_eq!(r.height(), 2);
    // A proposal that does not extend the chain is refused.
    let fork = proposal(3, [5; 32], 3);
    assert_eq!(r.on_propose(fork), Err(CoreError::WrongParent { height: 3, expected: 3 }));
    let far = proposal(3 + REPLICA_WINDOW as u64 + 1, [0; 32], 1);
    assert!(matches!(r.on_propose(far), Err(CoreError::TooFarAhead { .. })));
}

#[test]
fn unanswered_proposals_are_resent_after_the_timeout() {
    let k = keys();
    let t0 = Instant::now();
    let mut leader = LeaderCore::new(1, 0, set(&k), 4, Duration::from_millis(100));
    let p = proposal(1, leader.parent(), 1);
    leader.propose(p.clone(), [1; 32], &k[0], t0).unwrap();
    leader
        .on_vote(SignedVote::sign(Vote { chain_id: 1, shard: 0, height: 1, block_hash: p.hash(), state_root: [1; 32] }, 1, &k[1]), t0)
        .unwrap();
    assert!(leader.on_tick(t0 + Duration::from_millis(50)).is_empty());
    let resent: Vec<u32> = leader
        .on_tick(t0 + Duration::from_millis(150))
        .iter()
        .filter_map(|o| if let LeaderOut::Send { replica, .. } = o { Some(*replica) } else { None })
        .collect();
    assert_eq!(resent, vec![2, 3], "only the replicas that have not voted");
}

#[test]
fn a_single_replica_shard_certifies_on_its_own_vote() {
    let k = keys();
    let mut leader = LeaderCore::new(1, 0, set(&k[..1]), 4, Duration::from_millis(100));
    let out = leader.propose(proposal(1, [0; 32], 1), [1; 32], &k[0], Instant::now()).unwrap();
    assert_eq!(certified(&out), vec![1]);
}

#[test]
fn a_lagging_replica_gets_certified_blocks_again() {
    let k = keys();
    let now = Instant::now();
    let mut leader = LeaderCore::new(1, 0, set(&k), 4, Duration::from_millis(100));
    let mut props = Vec::new();
    for h in 1..=3 {
        let p = proposal(h, leader.parent(), h);
        leader.propose(p.clone(), [h as u8; 32], &k[0], now).unwrap();
        for i in 1..3 {
            let v = Vote { chain_id: 1, shard: 0, height: h, block_hash: p.hash(), state_root: [h as u8; 32] };
            leader.on_vote(SignedVote::sign(v, i, &k[i as usize]), now).unwrap();
        }
        props.push(p);
    }
    // Replica 3 voted on nothing: it asks from height 1 and gets all three, in order.
    let resent: Vec<u64> = leader
        .on_sync(3, 1)
        .into_iter()
        .map(|o| match o {
            LeaderOut::Send { replica: 3, message: Message::Propose(p) } => p.height,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(resent, vec![1, 2, 3]);
    let mut r = ReplicaCore::new(1, 0, 3);
    for p in &props {
        let ReplicaStep::Execute(p) = r.on_propose(p.clone()).unwrap() else { panic!() };
        r.executed(&p, [p.height as u8; 32], &k[3]);
    }
    assert_eq!(r.height(), 3);
    assert!(leader.on_sync(0, 1).is_empty() && leader.on_sync(9, 1).is_empty(), "only replicas of the set");
    // With nothing new to propose, the leader still tells replica 3 (and only it) that it is
    // behind, once per resend interval.
    let heartbeat = |out: Vec<LeaderOut>| -> Vec<(u32, u64)> {
        out.into_iter()
            .filter_map(|o| match o {
                LeaderOut::Send { replica, message: Message::Commit(c) } => Some((replica, c.vote.height)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(heartbeat(leader.on_tick(now)), vec![(3, 3)]);
    assert!(heartbeat(leader.on_tick(now + Duration::from_millis(50))).is_empty());
    let v = Vote { chain_id: 1, shard: 0, height: 3, block_hash: props[2].hash(), state_root: [3; 32] };
    assert_eq!(leader.on_vote(SignedVote::sign(v, 3, &k[3]), now), Err(CoreError::NotInFlight(3)));
    assert!(heartbeat(leader.on_tick(now + Duration::from_millis(200))).is_empty(), "caught up");
}

/// Where a simulated message goes.
#[derive(Clone, Debug)]
enum Dest {
    Leader { from: u32 },
    Replica(u32),
}

/// The toy execution of the simulation: a root chained over block hashes.
fn exec(root: [u8; 32], p: &Proposal) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&root);
    h.update(&p.hash());
    *h.finalize().as_bytes()
}

mod simulation {
    use super::*;
    use occam_engine::key::Key;
    use occam_engine::value::Value;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    /// One leader and three replicas over a network that loses, repeats and reorders messages
    /// for the first `lossy_steps` deliveries, then delivers everything (so the protocol must
    /// recover). Returns a description of any violation.
    fn run(seed: u64, drop_pct: u32, blocks: u64, lossy_steps: usize) -> Result<(), String> {
        let k = keys();
        let vset = set(&k);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut leader = LeaderCore::new(1, 0, vset.clone(), 3, Duration::from_millis(100));
        let mut replicas: Vec<(ReplicaCore, [u8; 32], u64)> = (1..4).map(|i| (ReplicaCore::new(1, 0, i), [0; 32], 0)).collect();
        let mut leader_root = [0u8; 32];
        let mut queue: Vec<(Dest, Message)> = Vec::new();
        let mut certified: Vec<u64> = Vec::new();
        let mut proposed = 0u64;
        let mut now = Instant::now();
        let push = |outs: Vec<LeaderOut>, queue: &mut Vec<(Dest, Message)>, certified: &mut Vec<u64>| -> Result<(), String> {
            for o in outs {
                match o {
                    LeaderOut::Send { replica, message } => queue.push((Dest::Replica(replica), message)),
                    LeaderOut::Certified { height, certificate, .. } => {
                        certificate.verify(&vset).map_err(|e| format!("certificate {height}: {e}"))?;
                        if height != certified.len() as u64 + 1 {
                            return Err(format!("certified {height} after {certified:?}"));
                        }
                        certified.push(height);
                    }
                }
            }
            Ok(())
        };
        for step in 0..20_000usize {
            now += Duration::from_millis(10);
            while leader.can_propose() && proposed < blocks {
                proposed += 1;
                let p = Proposal {
                    shard: 0,
                    height: leader.next_height(),
                    parent: leader.parent(),
                    cross_writes: vec![(Key::from_parts(1, proposed, 0), Some(Value::from_u64(proposed)))],
                    block: None,
                };
                leader_root = exec(leader_root, &p);
                let outs = leader.propose(p, leader_root, &k[0], now).map_err(|e| e.to_string())?;
                push(outs, &mut queue, &mut certified)?;
            }
            push(leader.on_tick(now), &mut queue, &mut certified)?;
            let done = certified.len() as u64 == blocks && replicas.iter().all(|r| r.0.height() == blocks);
            if done {
                for (i, r) in replicas.iter().enumerate() {
                    if r.1 != leader_root {
                        return Err(format!("replica {} ended on another root", i + 1));
                    }
                }
                return Ok(());
            }
            if queue.is_empty() {
                continue;
            }
            let lossy = step < lossy_steps;
            let (dest, message) = queue.swap_remove(rng.gen_range(0..queue.len()));
            if lossy && rng.gen_ratio(drop_pct, 100) {
                continue;
            }
            if lossy && rng.gen_ratio(10, 100) {
                queue.push((dest.clone(), message.clone()));
            }
            match (dest, message) {
                (Dest::Leader { .. }, Message::Vote(v)) => match leader.on_vote(v, now) {
                    Ok(outs) => push(outs, &mut queue, &mut certified)?,
                    Err(e @ CoreError::Diverged { .. }) => return Err(e.to_string()),
                    Err(_) => {}
                },
                (Dest::Leader { from }, Message::Sync { from: height, .. }) => {
                    push(leader.on_sync(from, height), &mut queue, &mut certified)?;
                }
                (Dest::Replica(r), Message::Propose(p)) => {
                    let (core, root, _) = &mut replicas[r as usize - 1];
                    let mut step = Some(core.on_propose(p));
                    while let Some(s) = step.take() {
                        match s {
                            Ok(ReplicaStep::Execute(p)) => {
                                *root = exec(*root, &p);
                                let vote = core.executed(&p, *root, &k[r as usize]);
                                queue.push((Dest::Leader { from: r }, Message::Vote(vote)));
                                step = core.next_ready();
                            }
                            Ok(ReplicaStep::Revote(v)) => queue.push((Dest::Leader { from: r }, Message::Vote(v))),
                            Ok(ReplicaStep::Held) | Err(CoreError::TooFarAhead { .. }) => {
                                queue.push((Dest::Leader { from: r }, Message::Sync { shard: 0, from: core.next_height() }))
                            }
                            Err(_) => {}
                        }
                    }
                }
                (Dest::Replica(r), Message::Commit(c)) => {
                    c.verify(&vset).map_err(|e| format!("commit: {e}"))?;
                    let (core, _, committed) = &mut replicas[r as usize - 1];
                    *committed = (*committed).max(c.vote.height);
                    if *committed > core.height() {
                        queue.push((Dest::Leader { from: r }, Message::Sync { shard: 0, from: core.next_height() }));
                    }
                }
                (d, m) => return Err(format!("unexpected {m:?} to {d:?}")),
            }
        }
        Err(format!(
            "no progress: certified {certified:?}, replica heights {:?}, {} messages queued",
            replicas.iter().map(|r| r.0.height()).collect::<Vec<_>>(),
            queue.len()
        ))
    }

    #[test]
    fn a_reliable_network_certifies_everything() {
        run(1, 0, 12, 0).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Safety (certificates verify and come in height order, no replica diverges) and
        /// recovery (once messages stop being lost, every block is certified and every replica
        /// reaches the leader's root) under loss, repetition and reordering.
        #[test]
        fn replication_recovers_from_loss_repetition_and_reordering(
            seed in any::<u64>(),
            drop_pct in 0u32..50,
            blocks in 1u64..16,
        ) {
            prop_assert_eq!(run(seed, drop_pct, blocks, 400), Ok(()));
        }
    }
}
