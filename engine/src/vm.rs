//! The `Vm` trait: what a chain project implements to run its own transactions on Occam.
//!
//! A VM executes one transaction against a [`View`]. The view serves reads (from the committed
//! state, from earlier transactions of the block, or from the multi-version memory of the
//! parallel executor) and records them; the VM's writes go into the view's buffer. Whatever the
//! VM wrote becomes the transaction's write set, *whatever its output says*: a VM that charges a
//! fee or bumps a nonce on failure simply writes it. The output (success or a typed failure)
//! is part of the block output and must be deterministic.
//!
//! The one rule a VM must follow: when a read returns `Err(Interrupt)`, return that error at
//! once (use `?`). The parallel executor uses it to stop a transaction that would read data an
//! earlier transaction is still rewriting; the transaction is run again later.
//!
//! ```
//! use occam_engine::prelude::*;
//!
//! /// A VM whose only transaction increments a counter, failing at a ceiling.
//! struct Counter;
//!
//! #[derive(Clone, Debug, PartialEq, Eq)]
//! enum CounterOut { Ok(u64), Full }
//!
//! impl Vm for Counter {
//!     type Tx = u64; // the counter's id
//!     type Output = CounterOut;
//!     fn execute<V: View>(&self, tx: &u64, view: &mut V) -> Result<CounterOut, Interrupt> {
//!         let key = Key::from_parts(1, *tx, 0);
//!         let n = view.read(&key)?.and_then(|v| v.as_u64()).unwrap_or(0);
//!         if n == 3 {
//!             return Ok(CounterOut::Full);
//!         }
//!         view.write(key, Value::from_u64(n + 1));
//!         Ok(CounterOut::Ok(n + 1))
//!     }
//! }
//!
//! let state = CommittedState::new();
//! let block = vec![7, 7, 8, 7, 7];
//! let mut seq = executor_by_name::<Counter>("sequential", 1).unwrap();
//! let mut par = executor_by_name::<Counter>("parallel", 4).unwrap();
//! let a = seq.execute(&Counter, &state, &block).unwrap();
//! let b = par.execute(&Counter, &state, &block).unwrap();
//! assert_eq!(a.outputs, b.outputs);
//! assert_eq!(a.outputs[4], CounterOut::Full);
//! assert_eq!(a.write_set.sorted(), b.write_set.sorted());
//! ```

use crate::key::Key;
use crate::value::{Value, WriteOp};
use smallvec::SmallVec;
use std::fmt::Debug;

/// Index of a transaction in its block.
pub type TxIndex = u32;

/// A read was interrupted because an earlier transaction of the block is being re-executed.
///
/// Only the parallel executor produces it. A VM must pass it straight back (`?`); the executor
/// re-runs the transaction once the blocking one has finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupt {
    pub(crate) blocking: TxIndex,
}

/// What a VM sees of the state while it executes one transaction.
pub trait View {
    /// The value of `key` as of this transaction's position in the block.
    fn read(&mut self, key: &Key) -> Result<Option<Value>, Interrupt>;
    /// Sets `key` to `value`.
    fn write(&mut self, key: Key, value: Value);
    /// Removes `key`.
    fn delete(&mut self, key: Key);
    /// Adds `delta` to the `u64` at `key` (absent counts as 0; see [`crate::value::apply_add`]).
    ///
    /// Unlike a read followed by a write, an add does not make this transaction depend on
    /// earlier writers of `key`: credits to a hot account commute. Use it for credits,
    /// counters and totals whose new value the transaction does not need to see.
    fn add(&mut self, key: Key, delta: u64);
}

/// A transaction processor: the part a chain project brings.
pub trait Vm: Sync {
    /// A transaction.
    type Tx: Sync + Send;
    /// The per-transaction result recorded in the block output (success or typed failure).
    type Output: Clone + PartialEq + Eq + Debug + Send + Sync;

    /// Executes `tx` against `view`. Must be deterministic in `tx` and the values read.
    fn execute<V: View>(&self, tx: &Self::Tx, view: &mut V) -> Result<Self::Output, Interrupt>;

    /// Appends the keys `tx` will access and returns true, or returns false when they are not
    /// known before execution (the default). The `declared` executor relies on this; a
    /// transaction that then touches an undeclared key still gets the right result, at the cost
    /// of re-running its block on the optimistic path.
    fn declared_keys(&self, _tx: &Self::Tx, _keys: &mut Vec<Key>) -> bool {
        false
    }
}

/// The writes of one transaction, in first-write order, each key once.
///
/// Transactions touch few keys, so a small vector with a linear search beats a map.
#[derive(Clone, Debug, Default)]
pub struct TxWrites {
    ops: SmallVec<[(Key, WriteOp); 4]>,
}

impl TxWrites {
    /// The pending op on `key`, if any.
    #[inline]
    pub fn get(&self, key: &Key) -> Option<&WriteOp> {
        self.ops.iter().find(|(k, _)| k == key).map(|(_, op)| op)
    }

    /// Records `op` on `key`, composing it with an earlier op on the same key.
    #[inline]
    pub fn push(&mut self, key: Key, op: WriteOp) {
        match self.ops.iter_mut().find(|(k, _)| *k == key) {
            Some((_, prev)) => *prev = prev.then(op),
            None => self.ops.push((key, op)),
        }
    }

    /// The ops, each key once.
    #[inline]
    pub fn ops(&self) -> &[(Key, WriteOp)] {
        &self.ops
    }

    /// Takes the ops out, leaving the buffer empty.
    #[inline]
    pub fn take(&mut self) -> SmallVec<[(Key, WriteOp); 4]> {
        std::mem::take(&mut self.ops)
    }

    /// Forgets every op.
    #[inline]
    pub fn clear(&mut self) {
        self.ops.clear();
    }
}

/// Where a [`BufferedView`] reads what the transaction has not written itself.
pub trait BaseRead {
    /// The value of `key` below the current transaction.
    fn read_base(&mut self, key: &Key) -> Result<Option<Value>, Interrupt>;
}

/// The one [`View`] implementation: the transaction's own writes over a [`BaseRead`].
/// Every executor uses it, so read-your-own-writes behaves identically everywhere.
pub struct BufferedView<B> {
    /// The source of values not written by this transaction.
    pub base: B,
    /// This transaction's writes.
    pub writes: TxWrites,
}

impl<B: BaseRead> BufferedView<B> {
    /// A view over `base` with no writes yet.
    #[inline]
    pub fn new(base: B) -> Self {
        BufferedView { base, writes: TxWrites::default() }
    }
}

impl<B: BaseRead> View for BufferedView<B> {
    #[inline]
    fn read(&mut self, key: &Key) -> Result<Option<Value>, Interrupt> {
        match self.writes.get(key) {
            Some(WriteOp::Put(v)) => Ok(Some(v.clone())),
            Some(WriteOp::Delete) => Ok(None),
            Some(WriteOp::Add(d)) => {
                let d = *d;
                let base = self.base.read_base(key)?;
                Ok(Some(crate::value::apply_add(base.as_ref(), d)))
            }
            None => self.base.read_base(key),
        }
    }
    #[inline]
    fn write(&mut self, key: Key, value: Value) {
        self.writes.push(key, WriteOp::Put(value));
    }
    #[inline]
    fn delete(&mut self, key: Key) {
        self.writes.push(key, WriteOp::Delete);
    }
    #[inline]
    fn add(&mut self, key: Key, delta: u64) {
        self.writes.push(key, WriteOp::Add(delta));
    }
}
