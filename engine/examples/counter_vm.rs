//! Bringing your own VM: a tiny key-value VM run by every executor.
//!
//! Run with `cargo run --example counter_vm -p occam-engine`.
//!
//! Each transaction increments a named counter and, once the counter passes a threshold,
//! records the event under a key it computes from the value it read: the key is only known
//! while the transaction runs. That is fine for `parallel` (Block-STM); the VM also declares
//! the keys it knows up front, so `declared` and `auto` run it too, falling back to Block-STM
//! for the blocks where a transaction goes beyond its declaration.

use occam_engine::prelude::*;

/// The VM: stateless, all state lives in the engine.
struct CounterVm;

/// A transaction: bump counter `counter` by `by`, refusing to pass `limit`.
struct Bump {
    counter: u64,
    by: u64,
    limit: u64,
}

/// The per-transaction output: the new value, or a typed failure.
#[derive(Clone, Debug, PartialEq, Eq)]
enum BumpOutput {
    Bumped(u64),
    OverLimit { current: u64 },
}

const COUNTER: u8 = 1;
const MILESTONE: u8 = 2;

impl Vm for CounterVm {
    type Tx = Bump;
    type Output = BumpOutput;

    fn execute<V: View>(&self, tx: &Bump, view: &mut V) -> Result<BumpOutput, Interrupt> {
        let key = Key::from_parts(COUNTER, tx.counter, 0);
        // `?` passes an `Interrupt` back to the executor: always propagate it.
        let current = view.read(&key)?.and_then(|v| v.as_u64()).unwrap_or(0);
        let next = current + tx.by;
        if next > tx.limit {
            // A failure is an output like any other; it stays in the block. Nothing is written.
            return Ok(BumpOutput::OverLimit { current });
        }
        view.write(key, Value::from_u64(next));
        if next / 100 > current / 100 {
            // A key that depends on what was read: undeclared, discovered while running.
            view.write(Key::from_parts(MILESTONE, tx.counter, next / 100), Value::from_u64(next));
        }
        Ok(BumpOutput::Bumped(next))
    }

    fn declared_keys(&self, tx: &Bump, keys: &mut Vec<Key>) -> bool {
        keys.push(Key::from_parts(COUNTER, tx.counter, 0));
        true
    }
}

fn main() -> Result<(), ExecError> {
    let block: Vec<Bump> = (0..20_000u64).map(|i| Bump { counter: i % 64, by: 1 + i % 7, limit: 1_000 }).collect();
    let genesis = CommittedState::new();
    let mut reference = None;
    for (name, threads) in [("sequential", 1), ("parallel", 4), ("declared", 4), ("auto", 4)] {
        let mut state = genesis.clone();
        let mut executor = executor_by_name::<CounterVm>(name, threads)?;
        let out = executor.execute_and_commit(&CounterVm, &mut state, &block)?;
        let failed = out.outputs.iter().filter(|o| matches!(o, BumpOutput::OverLimit { .. })).count();
        println!(
            "{name:>10} x{threads}: {} writes, {failed} over-limit failures, path {:?}, root {}",
            out.write_set.len(),
            out.stats.path,
            state.root()
        );
        match &reference {
            None => reference = Some((out.outputs, state.root())),
            Some((outputs, root)) => assert!(outputs == &out.outputs && *root == state.root(), "{name} disagrees with sequential"),
        }
    }
    println!("all executors agree");
    Ok(())
}
