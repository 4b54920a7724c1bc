//! The reference executor: one transaction after another. Short and obviously right.

use super::workers::WorkerPool;
use super::{check_block_len, BlockExecutor, BlockOutput, ExecError, ExecPath, ExecStats};
use crate::key::{Key, KeyMap};
use crate::state::{CommittedState, WriteSet};
use crate::value::Value;
use crate::vm::{BaseRead, BufferedView, Interrupt, Vm};

/// Reads through the block's writes so far, then the committed state.
pub(crate) struct OverlayBase<'a, F> {
    pub overlay: &'a KeyMap<Option<Value>>,
    pub below: F,
}

impl<F: FnMut(&Key) -> Result<Option<Value>, Interrupt>> BaseRead for OverlayBase<'_, F> {
    #[inline]
    fn read_base(&mut self, key: &Key) -> Result<Option<Value>, Interrupt> {
        match self.overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None => (self.below)(key),
        }
    }
}

/// Runs `txs` one at a time over `overlay`, reading below it through `below`, and returns their
/// outputs. Shared by the reference executor and the contention fallback of the parallel one.
pub(crate) fn run_in_order<'t, V: Vm>(
    vm: &V,
    txs: impl Iterator<Item = (u32, &'t V::Tx)>,
    overlay: &mut KeyMap<Option<Value>>,
    mut below: impl FnMut(&Key) -> Result<Option<Value>, Interrupt>,
) -> Result<Vec<V::Output>, ExecError>
where
    V::Tx: 't,
{
    let mut outputs = Vec::new();
    for (idx, tx) in txs {
        let mut view = BufferedView::new(OverlayBase { overlay, below: &mut below });
        let out = vm.execute(tx, &mut view).map_err(|_| ExecError::SpuriousInterrupt(idx))?;
        let writes = view.writes.take();
        for (key, op) in writes {
            let base = match overlay.get(&key) {
                Some(v) => v.clone(),
                None => below(&key).map_err(|_| ExecError::SpuriousInterrupt(idx))?,
            };
            overlay.insert(key, op.resolve(base.as_ref()));
        }
        outputs.push(out);
    }
    Ok(outputs)
}

/// The sequential reference executor.
#[derive(Debug, Default)]
pub struct SequentialExecutor {
    overlay: KeyMap<Option<Value>>,
}

impl SequentialExecutor {
    /// A new sequential executor.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<V: Vm> BlockExecutor<V> for SequentialExecutor {
    fn name(&self) -> &'static str {
        "sequential"
    }

    fn threads(&self) -> usize {
        1
    }

    fn pool(&self) -> Option<&WorkerPool> {
        None
    }

    fn execute(&mut self, vm: &V, state: &CommittedState, block: &[V::Tx]) -> Result<BlockOutput<V::Output>, ExecError> {
        check_block_len(block.len())?;
        let started = std::time::Instant::now();
        self.overlay.clear();
        let outputs = run_in_order(vm, (0u32..).zip(block), &mut self.overlay, |k| Ok(state.get(k).cloned()))?;
        let execute_ns = started.elapsed().as_nanos() as u64;
        let write_set = WriteSet::from_entries(self.overlay.drain().collect());
        let merge_ns = started.elapsed().as_nanos() as u64 - execute_ns;
        let stats = ExecStats { path: ExecPath::Sequential, executions: block.len() as u64, execute_ns, merge_ns, ..Default::default() };
        Ok(BlockOutput { outputs, write_set, stats })
    }
}
