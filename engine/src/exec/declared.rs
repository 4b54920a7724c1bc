//! The declared-keys executor: conflict-free chains, no validation.
//!
//! Every native transaction says up front which keys it touches. One pass over the block
//! unions each transaction with the previous toucher of each of its keys (union-find over
//! transaction indices), which splits the block into chains that share no key. Chains run on
//! all workers, largest first, each transaction in block order inside its chain, over a
//! worker-local overlay: a chain only ever reads its own keys, so it sees exactly what
//! sequential execution would. No multi-version memory, no validation, no re-execution.
//!
//! The same pass measures the block's critical path (longest chain of transactions each
//! touching a key of the one before), which [`super::AutoExecutor`] uses to choose a path.
//!
//! A transaction that reads or writes a key it did not declare (or a VM that declares
//! nothing) makes the whole block run again on the Block-STM path, which needs no
//! declarations: the result is still exact, only slower.

use super::parallel::ParallelExecutor;
use super::{check_block_len, BlockExecutor, BlockOutput, ExecError, ExecPath, ExecStats};
use crate::key::{Key, KeyMap};
use crate::state::{CommittedState, WriteSet};
use crate::value::Value;
use crate::vm::{BaseRead, BufferedView, Interrupt, TxIndex, Vm};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// The chain structure of a block, from its declared keys.
#[derive(Debug, Default, Clone)]
pub struct BlockAnalysis {
    /// Transaction indices grouped by chain, each chain in block order.
    order: Vec<TxIndex>,
    /// `(start, len)` of each chain in `order`, largest first.
    chains: Vec<(u32, u32)>,
    /// Each transaction's declared keys: `keys[key_ranges[i].0 .. key_ranges[i].1]`.
    keys: Vec<Key>,
    key_ranges: Vec<(u32, u32)>,
    /// Longest dependency path through the block.
    pub critical_path: u32,
    /// False if some transaction declared nothing.
    pub complete: bool,
}

impl BlockAnalysis {
    /// Number of chains.
    pub fn chains(&self) -> usize {
        self.chains.len()
    }

    /// Transactions in the largest chain.
    pub fn largest_chain(&self) -> usize {
        self.chains.first().map_or(0, |c| c.1 as usize)
    }
}

/// Reusable buffers for [`analyze`].
#[derive(Default)]
struct Analyzer {
    last_toucher: KeyMap<TxIndex>,
    parent: Vec<TxIndex>,
    depth: Vec<u32>,
    count: Vec<u32>,
}

impl Analyzer {
    fn find(parent: &mut [TxIndex], mut x: TxIndex) -> TxIndex {
        while parent[x as usize] != x {
            let p = parent[x as usize];
            parent[x as usize] = parent[p as usize];
            x = p;
        }
        x
    }

    fn analyze<V: Vm>(&mut self, vm: &V, txs: &[V::Tx], out: &mut BlockAnalysis) {
        let n = txs.len();
        out.keys.clear();
        out.key_ranges.clear();
        out.order.clear();
        out.chains.clear();
        out.critical_path = 0;
        out.complete = true;
        self.last_toucher.clear();
        self.parent.clear();
        self.parent.extend(0..n as TxIndex);
        self.depth.clear();
        self.depth.resize(n, 0);
        for (i, tx) in txs.iter().enumerate() {
            let i = i as TxIndex;
            let start = out.keys.len();
            if !vm.declared_keys(tx, &mut out.keys) {
                out.complete = false;
                return;
            }
            out.key_ranges.push((start as u32, out.keys.len() as u32));
            let mut depth = 1;
            for k in &out.keys[start..] {
                if let Some(prev) = self.last_toucher.insert(*k, i) {
                    if prev == i {
                        continue; // the same key declared twice
                    }
                    depth = depth.max(self.depth[prev as usize] + 1);
                    let (a, b) = (Self::find(&mut self.parent, prev), Self::find(&mut self.parent, i));
                    if a != b {
                        // The smaller index becomes the root, so roots are chain heads.
                        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                        self.parent[hi as usize] = lo;
                    }
                }
            }
            self.depth[i as usize] = depth;
            out.critical_path = out.critical_path.max(depth);
        }
        // Counting sort of transactions by chain root, keeping block order inside a chain.
        self.count.clear();
        self.count.resize(n, 0);
        let mut roots = Vec::with_capacity(n);
        for i in 0..n as TxIndex {
            let r = Self::find(&mut self.parent, i);
            roots.push(r);
            self.count[r as usize] += 1;
        }
        let mut start = 0u32;
        for r in 0..n {
            let c = self.count[r];
            if c > 0 {
                out.chains.push((start, c));
                self.count[r] = start; // now the next free slot of this chain
                start += c;
            }
        }
        out.order.resize(n, 0);
        for (i, r) in roots.into_iter().enumerate() {
            let slot = &mut self.count[r as usize];
            out.order[*slot as usize] = i as TxIndex;
            *slot += 1;
        }
        // Largest chains first, so the tail of the schedule is made of small ones.
        out.chains.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    }
}

/// Reads for a chain: its overlay, then the committed state; notes undeclared keys.
struct ChainBase<'a> {
    overlay: &'a KeyMap<Option<Value>>,
    state: &'a CommittedState,
    declared: &'a [Key],
    undeclared: bool,
}

impl BaseRead for ChainBase<'_> {
    #[inline]
    fn read_base(&mut self, key: &Key) -> Result<Option<Value>, Interrupt> {
        if !self.declared.contains(key) {
            self.undeclared = true;
        }
        Ok(match self.overlay.get(key) {
            Some(v) => v.clone(),
            None => self.state.get(key).cloned(),
        })
    }
}

/// The declared-keys executor.
pub struct DeclaredExecutor {
    pool: Arc<rayon::ThreadPool>,
    /// One overlay per worker, kept across blocks so their tables are not regrown each time.
    overlays: Vec<parking_lot::Mutex<KeyMap<Option<Value>>>>,
    analyzer: Analyzer,
    analysis: BlockAnalysis,
    fallback: ParallelExecutor,
}

impl DeclaredExecutor {
    /// An executor running on `pool`.
    pub fn new(pool: Arc<rayon::ThreadPool>) -> Self {
        DeclaredExecutor {
            fallback: ParallelExecutor::new(pool.clone()),
            overlays: (0..pool.current_num_threads()).map(|_| Default::default()).collect(),
            pool,
            analyzer: Analyzer::default(),
            analysis: BlockAnalysis::default(),
        }
    }

    /// Analyses `txs` (kept for [`DeclaredExecutor::execute_analyzed`]) and returns the result.
    pub fn analyze<V: Vm>(&mut self, vm: &V, txs: &[V::Tx]) -> &BlockAnalysis {
        self.analyzer.analyze(vm, txs, &mut self.analysis);
        &self.analysis
    }

    /// Executes `txs` on the Block-STM path (no declarations needed).
    pub fn execute_block_stm<V: Vm>(&mut self, vm: &V, state: &CommittedState, txs: &[V::Tx]) -> Result<BlockOutput<V::Output>, ExecError> {
        BlockExecutor::<V>::execute(&mut self.fallback, vm, state, txs)
    }

    /// Executes `txs`, which must be the block last given to [`DeclaredExecutor::analyze`].
    pub fn execute_analyzed<V: Vm>(&mut self, vm: &V, state: &CommittedState, txs: &[V::Tx]) -> Result<BlockOutput<V::Output>, ExecError> {
        let a = &self.analysis;
        let chain_stats = |path| ExecStats {
            path,
            chains: a.chains() as u64,
            largest_chain: a.largest_chain() as u64,
            critical_path: a.critical_path as u64,
            ..Default::default()
        };
        if !a.complete || a.key_ranges.len() != txs.len() {
            let mut out = self.execute_block_stm(vm, state, txs)?;
            out.stats.path = ExecPath::DeclaredFallback;
            return Ok(out);
        }
        let next_chain = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let overlays = &self.overlays;
        let results = self.pool.broadcast(|ctx| {
            let mut overlay = overlays[ctx.index()].lock();
            overlay.clear();
            let mut outputs: Vec<(TxIndex, V::Output)> = Vec::new();
            loop {
                let c = next_chain.fetch_add(1, Relaxed);
                let Some(&(start, len)) = a.chains.get(c) else { break };
                for &i in &a.order[start as usize..(start + len) as usize] {
                    if failed.load(Relaxed) {
                        return outputs;
                    }
                    let (ks, ke) = a.key_ranges[i as usize];
                    let declared = &a.keys[ks as usize..ke as usize];
                    let base = ChainBase { overlay: &overlay, state, declared, undeclared: false };
                    let mut view = BufferedView::new(base);
                    let out = vm.execute(&txs[i as usize], &mut view);
                    let BufferedView { base, mut writes } = view;
                    let ops = writes.take();
                    if base.undeclared || out.is_err() || ops.iter().any(|(k, _)| !declared.contains(k)) {
                        failed.store(true, Relaxed);
                        return outputs;
                    }
                    for (key, op) in ops {
                        let below = match overlay.get(&key) {
                            Some(v) => v.clone(),
                            None => state.get(&key).cloned(),
                        };
                        overlay.insert(key, op.resolve(below.as_ref()));
                    }
                    outputs.push((i, out.expect("checked above")));
                }
            }
            outputs
        });
        if failed.load(Relaxed) {
            let mut out = self.execute_block_stm(vm, state, txs)?;
            out.stats.path = ExecPath::DeclaredFallback;
            return Ok(out);
        }
        let mut slots: Vec<Option<V::Output>> = Vec::with_capacity(txs.len());
        slots.resize_with(txs.len(), || None);
        let mut entries = Vec::with_capacity(self.overlays.iter_mut().map(|o| o.get_mut().len()).sum());
        for o in &mut self.overlays {
            entries.extend(o.get_mut().drain());
        }
        for outputs in results {
            for (i, o) in outputs {
                slots[i as usize] = Some(o);
            }
        }
        let outputs = slots.into_iter().map(|o| o.expect("every chain ran")).collect();
        let mut stats = chain_stats(ExecPath::Declared);
        stats.executions = txs.len() as u64;
        Ok(BlockOutput { outputs, write_set: WriteSet { entries }, stats })
    }
}

impl<V: Vm> BlockExecutor<V> for DeclaredExecutor {
    fn name(&self) -> &'static str {
        "declared"
    }

    fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    fn pool(&self) -> Option<&rayon::ThreadPool> {
        Some(&self.pool)
    }

    fn execute(&mut self, vm: &V, state: &CommittedState, txs: &[V::Tx]) -> Result<BlockOutput<V::Output>, ExecError> {
        check_block_len(txs.len())?;
        self.analyze(vm, txs);
        self.execute_analyzed(vm, state, txs)
    }
}
