//! The sharded engine against its oracle: random blocks of every native kind, 1–8 shards, any
//! share of cross-shard transactions, every executor — the result must equal a sequential
//! replay, on one unsharded state, of the documented serial order (every single-shard
//! transaction in block order, then every cross-shard one in block order): every output, every
//! value and the state root. Plus atomicity of failing cross-shard transactions and the
//! refusal of undeclared access.

use occam_engine::key::Key;
use occam_engine::native::{NativeTx, NativeVm, TxKind};
use occam_engine::prelude::*;
use occam_engine::vm::Interrupt;
use occam_shard::engine::{CrossBatching, ShardError, ShardedEngine};
use occam_shard::partition::{HashPartitioner, Partitioner, RangePartitioner};
use proptest::prelude::*;
use std::sync::Arc;

mod common;
use common::native_case;

/// The documented serial order of `block` under `p`: single-shard transactions, then
/// cross-shard ones, each in block order (indices into the block). Written here again on
/// purpose, not taken from the engine's `route`, so that a routing bug cannot hide from the
/// oracle.
fn serial_order<V: Vm>(vm: &V, p: &dyn Partitioner, block: &[V::Tx]) -> (Vec<usize>, usize) {
    let (mut single, mut cross) = (Vec::new(), Vec::new());
    for (i, tx) in block.iter().enumerate() {
        let mut keys = Vec::new();
        assert!(vm.declared_keys(tx, &mut keys));
        let first = p.shard_of(&keys[0]);
        if keys.iter().all(|k| p.shard_of(k) == first) {
            single.push(i);
        } else {
            cross.push(i);
        }
    }
    let n_cross = cross.len();
    single.extend(cross);
    (single, n_cross)
}

/// Runs `blocks` on the sharded engine (coordinating cross-shard transactions as `batching`
/// says) and on the oracle; panics at the first difference. Returns the share of cross-shard
/// transactions.
fn check_with(
    genesis: &CommittedState,
    blocks: &[Vec<NativeTx>],
    p: Arc<dyn Partitioner>,
    executor: &str,
    threads: usize,
    batching: CrossBatching,
) -> f64 {
    let mut engine = ShardedEngine::new(Arc::clone(&p), executor, threads, genesis).expect("engine");
    engine.set_batching(batching);
    let mut oracle = genesis.clone();
    let mut seq = executor_by_name::<NativeVm>("sequential", 1).unwrap();
    let (mut cross, mut total) = (0, 0);
    for (b, block) in blocks.iter().enumerate() {
        let ctx = format!("{} shards ({}), {executor} x{threads}, {batching:?}, block {b}", p.shards(), p.describe());
        let out = engine.execute_block(&NativeVm, block).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        let (mut order, n_cross) = serial_order(&NativeVm, &*p, block);
        // The cross-shard part in the order the engine reports: block order, except for the
        // reservation variant, whose order must then be a permutation of it.
        let (single_part, cross_part) = order.split_at(order.len() - n_cross);
        if batching == CrossBatching::Reservation {
            let mut sorted = out.stats.cross_order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, cross_part, "{ctx}: reservation order is a permutation of the cross-shard transactions");
        } else {
            assert_eq!(out.stats.cross_order, cross_part, "{ctx}: cross-shard transactions in block order");
        }
        order = single_part.iter().copied().chain(out.stats.cross_order.iter().copied()).collect();
        let reordered: Vec<NativeTx> = order.iter().map(|&i| block[i].clone()).collect();
        let expected = seq.execute_and_commit(&NativeVm, &mut oracle, &reordered).unwrap();
        for (pos, &i) in order.iter().enumerate() {
            assert_eq!(out.outputs[i], expected.outputs[pos], "{ctx}: output of transaction {i}");
        }
        assert_eq!(out.stats.cross_txs, n_cross, "{ctx}");
        assert_eq!(engine.root(), oracle.root(), "{ctx}: combined state root");
        cross += n_cross;
        total += block.len();
    }
    assert_eq!(engine.sorted_entries(), oracle.sorted_entries(), "every value");
    cross as f64 / total.max(1) as f64
}

fn partitioner(kind: u8, shards: usize, ids: u64) -> Arc<dyn Partitioner> {
    match kind {
        0 => Arc::new(HashPartitioner::new(shards).unwrap()),
        _ => Arc::new(RangePartitioner::even(shards, ids.max(shards as u64)).unwrap()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(96), ..ProptestConfig::default() })]

    /// Random blocks of every native kind on 1–8 shards (hash or range partitioned) under every
    /// executor equal the oracle.
    #[test]
    fn sharded_blocks_match_the_documented_serial_order(
        case in native_case(120),
        shards in 1usize..=8,
        kind in 0u8..2,
        executor in prop::sample::select(vec!["sequential", "parallel", "declared", "auto"]),
        batching in prop::sample::select(vec![CrossBatching::PerBlock, CrossBatching::PerTransaction, CrossBatching::Reservation]),
    ) {
        let genesis = case.state();
        let threads = if executor == "sequential" { 1 } else { 1 + case.threads % 2 };
        check_with(&genesis, &case.blocks, partitioner(kind, shards, 14), executor, threads, batching);
    }
}

/// Transfers whose share of cross-shard transactions is set, from 0 to 1, on 2 and 5 shards.
#[test]
fn every_cross_shard_share_from_none_to_all() {
    let genesis = CommittedState::from_entries(NativeVm::genesis_accounts(400, 50));
    for shards in [2usize, 5] {
        let p: Arc<dyn Partitioner> = Arc::new(HashPartitioner::new(shards).unwrap());
        let account = |id: u64| occam_engine::native::keys::account(id);
        let by_shard: Vec<Vec<u64>> = (0..shards as u32).map(|s| (0..400).filter(|&a| p.shard_of(&account(a)) == s).collect()).collect();
        for share in [0.0, 0.1, 0.5, 1.0] {
            let mut blocks = Vec::new();
            for b in 0..3u64 {
                blocks.push(
                    (0..200u64)
                        .map(|i| {
                            let s = ((b * 200 + i) % shards as u64) as usize;
                            let from = by_shard[s][(i as usize * 7) % by_shard[s].len()];
                            let cross = (i as f64 + 0.5) / 200.0 < share;
                            let t = if cross { (s + 1) % shards } else { s };
                            let to = by_shard[t][(i as usize * 13 + 1) % by_shard[t].len()];
                            NativeTx::new(TxKind::Transfer { from, to, amount: 1 + i % 40 })
                        })
                        .collect(),
                );
            }
            for (executor, threads, batching) in [
                ("sequential", 1, CrossBatching::PerBlock),
                ("auto", 2, CrossBatching::PerBlock),
                ("auto", 2, CrossBatching::PerTransaction),
            ] {
                let measured = check_with(&genesis, &blocks, Arc::clone(&p), executor, threads, batching);
                assert!((measured - share).abs() < 0.01, "{shards} shards: asked {share}, got {measured}");
            }
        }
    }
}

/// A cross-shard transfer whose source lacks the funds changes nothing on any shard; the same
/// transfer with the funds changes both.
#[test]
fn failing_cross_shard_transactions_change_nothing_anywhere() {
    let genesis = CommittedState::from_entries(NativeVm::genesis_accounts(100, 10));
    let p: Arc<dyn Partitioner> = Arc::new(RangePartitioner::new(vec![50]).unwrap());
    let mut engine = ShardedEngine::new(Arc::clone(&p), "auto", 2, &genesis).unwrap();
    let before = engine.sorted_entries();
    let out = engine.execute_block(&NativeVm, &[NativeTx::new(TxKind::Transfer { from: 3, to: 70, amount: 11 })]).unwrap();
    assert!(out.outputs[0].is_err());
    assert_eq!(out.stats.cross_txs, 1);
    assert_eq!(engine.sorted_entries(), before, "no shard changed");
    let out = engine.execute_block(&NativeVm, &[NativeTx::new(TxKind::Transfer { from: 3, to: 70, amount: 10 })]).unwrap();
    assert!(out.outputs[0].is_ok());
    let balance = |id| engine.sorted_entries().into_iter().find(|(k, _)| *k == Key::from_parts(1, id, 0)).and_then(|(_, v)| v.as_u64());
    assert_eq!((balance(3), balance(70)), (Some(0), Some(20)));
}

/// A VM that reads a key it did not declare: the block is refused and nothing is committed.
#[derive(Clone)]
struct Sneaky;

impl Vm for Sneaky {
    type Tx = (u64, u64);
    type Output = u64;
    fn execute<W: View>(&self, tx: &(u64, u64), view: &mut W) -> Result<u64, Interrupt> {
        let seen = view.read(&Key::from_parts(1, tx.1, 0))?.and_then(|v| v.as_u64()).unwrap_or(0);
        view.write(Key::from_parts(1, tx.0, 0), Value::from_u64(seen + 1));
        Ok(seen)
    }
    fn declared_keys(&self, tx: &(u64, u64), keys: &mut Vec<Key>) -> bool {
        keys.push(Key::from_parts(1, tx.0, 0));
        true
    }
}

#[test]
fn undeclared_access_is_refused_and_nothing_is_committed() {
    let genesis = CommittedState::from_entries((0..100).map(|i| (Key::from_parts(1, i, 0), Value::from_u64(i))));
    let p: Arc<dyn Partitioner> = Arc::new(RangePartitioner::new(vec![50]).unwrap());
    let mut engine = ShardedEngine::new(p, "sequential", 1, &genesis).unwrap();
    let root = engine.root();
    // Reads its own key: fine.
    engine.execute_block(&Sneaky, &[(1, 1)]).unwrap();
    let root_after = engine.root();
    assert_ne!(root, root_after);
    // Writes key 2 (shard 0) after reading key 80 (shard 1), declaring only key 2.
    let err = engine.execute_block(&Sneaky, &[(3, 4), (2, 80)]).unwrap_err();
    assert!(matches!(err, ShardError::UndeclaredAccess { .. }), "{err}");
    assert_eq!(engine.root(), root_after, "nothing of the refused block was committed");
    // A VM that declares nothing is refused up front.
    #[derive(Clone)]
    struct Silent;
    impl Vm for Silent {
        type Tx = u64;
        type Output = u64;
        fn execute<W: View>(&self, _: &u64, _: &mut W) -> Result<u64, Interrupt> {
            Ok(0)
        }
    }
    let mut engine = ShardedEngine::new(Arc::new(HashPartitioner::new(2).unwrap()), "sequential", 1, &genesis).unwrap();
    assert!(matches!(engine.execute_block(&Silent, &[7]), Err(ShardError::Undeclared(0))));
}
