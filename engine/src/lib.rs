//! # occam-engine
//!
//! Deterministic parallel execution of ordered transaction blocks.
//!
//! - [`state`]: keys, values, the committed state and its order-independent root.
//! - [`vm`]: the [`vm::Vm`] trait a chain project implements, and the [`vm::View`] it executes
//!   against.
//! - [`native`]: the native VM (transfers, SmallBank, YCSB, tokens, AMM swaps, NFT mints).
//! - [`crypto`]: BLS signatures — keys with proofs of possession, aggregation, batch
//!   verification.
//! - [`exec`]: the executors — `sequential` (the reference), `parallel` (Block-STM),
//!   `declared` (conflict-free chains) and `auto` — all producing identical results.
//!
//! ```
//! use occam_engine::prelude::*;
//! use occam_engine::native::{NativeTx, NativeVm, TxKind};
//!
//! let vm = NativeVm::default();
//! let mut state = CommittedState::from_entries(NativeVm::genesis_accounts(4, 100));
//! let block = vec![NativeTx::new(TxKind::Transfer { from: 0, to: 1, amount: 30 })];
//! let mut exec = executor_by_name::<NativeVm>("auto", 2).unwrap();
//! let out = exec.execute_and_commit(&vm, &mut state, &block).unwrap();
//! assert!(out.outputs[0].is_ok());
//! ```
#![warn(missing_docs)]

pub mod crypto;
pub mod exec;
pub mod key;
pub mod native;
pub mod state;
pub(crate) mod sync;
pub mod value;
pub mod vm;

/// The names most programs need.
pub mod prelude {
    pub use crate::exec::{executor_by_name, BlockExecutor, BlockOutput, ExecError, ExecStats};
    pub use crate::key::Key;
    pub use crate::state::{CommittedState, StateRoot, WriteSet};
    pub use crate::value::Value;
    pub use crate::vm::{Interrupt, View, Vm};
}
