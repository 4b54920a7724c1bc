//! Executor and state-commit micro-benchmarks.
//!
//! ```text
//! cargo bench -p occam-engine                      # everything, a few minutes
//! cargo bench -p occam-engine -- executors         # one group
//! ```
//!
//! - `executors`: each executor on a block of 10,000 uniform transfers over 100,000 accounts
//!   (few conflicts), in transactions per second.
//! - `block_stm_bookkeeping`: `sequential` against `parallel` on one thread on a block with no
//!   conflicts at all. One Block-STM worker executes in order and never re-executes, so the
//!   ratio of the two is the per-transaction cost of the multi-version memory, the scheduler
//!   and validation (the multi-version memory is crate-private and cannot be benchmarked
//!   directly from here).
//! - `state_apply`: `CommittedState::apply` of a 20,000-entry write set, serial and on a pool.
//!
//! Blocks are generated from a fixed seed, so runs compare like with like. Measurement times
//! are short; pass `--measurement-time` / `--sample-size` for steadier numbers.

#![allow(missing_docs)] // criterion_group! generates an undocumented `pub fn`.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use occam_engine::exec::worker_pool;
use occam_engine::native::{keys, NativeTx, NativeVm, TxKind};
use occam_engine::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;
use std::time::Duration;

const ACCOUNTS: u64 = 100_000;
const BLOCK_TXS: usize = 10_000;
const APPLY_ENTRIES: u64 = 20_000;
const SEED: u64 = 0x0cca_2024;

/// Every account funded well beyond what a block can move.
fn genesis() -> CommittedState {
    CommittedState::from_entries(NativeVm::genesis_accounts(ACCOUNTS, 1_000_000_000))
}

/// `n` transfers between uniformly random distinct accounts.
fn uniform_transfers(n: usize, seed: u64) -> Vec<NativeTx> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let from = rng.gen_range(0..ACCOUNTS);
            let mut to = rng.gen_range(0..ACCOUNTS - 1);
            if to >= from {
                to += 1;
            }
            NativeTx::new(TxKind::Transfer { from, to, amount: rng.gen_range(1..=100) })
        })
        .collect()
}

/// `n` transfers that share no account: transaction `i` moves from `2i` to `2i + 1`.
fn disjoint_transfers(n: usize) -> Vec<NativeTx> {
    (0..n as u64).map(|i| NativeTx::new(TxKind::Transfer { from: 2 * i, to: 2 * i + 1, amount: 1 })).collect()
}

fn bench_block(c: &mut Criterion, group: &str, block: &[NativeTx], executors: &[(&str, usize)]) {
    let state = genesis();
    let vm = NativeVm;
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(block.len() as u64));
    for &(name, threads) in executors {
        let mut exec = executor_by_name::<NativeVm>(name, threads).expect("executor");
        // One untimed run, so every executor starts with warm buffers and pool threads.
        exec.execute(&vm, &state, block).expect("block executes");
        g.bench_function(BenchmarkId::new(name, format!("{threads}t")), |b| {
            b.iter(|| black_box(exec.execute(&vm, &state, black_box(block)).expect("block executes")))
        });
    }
    g.finish();
}

fn executors(c: &mut Criterion) {
    let block = uniform_transfers(BLOCK_TXS, SEED);
    bench_block(
        c,
        "executors/transfer-10k-of-100k",
        &block,
        &[("sequential", 1), ("parallel", 1), ("parallel", 2), ("declared", 2), ("auto", 2)],
    );
}

fn block_stm_bookkeeping(c: &mut Criterion) {
    let block = disjoint_transfers(BLOCK_TXS);
    bench_block(c, "block_stm_bookkeeping/disjoint-transfer-10k", &block, &[("sequential", 1), ("parallel", 1)]);
}

/// A write set of `APPLY_ENTRIES` distinct keys, starting at account `first`.
fn write_set(first: u64, seed: u64) -> WriteSet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    WriteSet::from_entries((first..first + APPLY_ENTRIES).map(|i| (keys::account(i), Some(Value::from_u64(rng.gen())))).collect())
}

fn state_apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("state_apply/20k");
    g.throughput(Throughput::Elements(APPLY_ENTRIES));
    let pool = worker_pool(2).expect("pool");

    // Updates of existing keys (the common case: balances change). Re-applying the same
    // write set costs the same every time: every entry is rehashed and swapped in.
    let updates = write_set(0, SEED);
    let mut state = genesis();
    g.bench_function("update/serial", |b| b.iter(|| state.apply(black_box(&updates), None)));
    g.bench_function("update/pool-2t", |b| b.iter(|| state.apply(black_box(&updates), Some(&pool))));

    // Inserts of new keys, into a fresh copy of the state each time (the copy is not timed).
    let inserts = write_set(ACCOUNTS, SEED + 1);
    let base = genesis();
    g.bench_function("insert/serial", |b| {
        b.iter_batched_ref(|| base.clone(), |s| s.apply(black_box(&inserts), None), BatchSize::LargeInput)
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = executors, block_stm_bookkeeping, state_apply
}
criterion_main!(benches);
