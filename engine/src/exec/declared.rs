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
    /// Batches of consecutive chains handed to a worker at once: `chains[batches[b]..batches[b + 1]]`.
    batches: Vec<u32>,
    /// Declared keys, one vector per slice of the block (`slice_len` transactions each).
    keys: Vec<Vec<Key>>,
    /// Each transaction's keys as a range of its slice's vector.
    key_ranges: Vec<(u32, u32)>,
    slice_len: usize,
    /// Longest dependency path through the block.
    pub critical_path: u32,
    /// False if some transaction declared nothing.
    pub complete: bool,
    /// True when the contention probe found the start of the block to be one dependency
    /// chain; the rest was not analysed and the block runs in order on one thread.
    pub serial: bool,
    /// Wall time of the analysis in nanoseconds.
    pub analysis_ns: u64,
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

    /// The declared keys of transaction `i`.
    fn keys_of(&self, i: TxIndex) -> &[Key] {
        let (s, e) = self.key_ranges[i as usize];
        &self.keys[i as usize / self.slice_len][s as usize..e as usize]
    }
}

/// Transactions the contention probe looks at before the full analysis.
const PROBE_TXS: usize = 128;

/// Transactions per batch of chains handed to a worker.
const BATCH_TXS: u32 = 32;

/// One worker's scratch space for the analysis, kept across blocks.
#[derive(Default)]
struct AnalysisScratch {
    last_toucher: KeyMap<TxIndex>,
    /// `(later, earlier)`: two transactions touching a common key, `earlier` the previous toucher.
    edges: Vec<(TxIndex, TxIndex)>,
}

/// One slice of the block after step 1 of the analysis.
#[derive(Default)]
struct SliceKeys {
    keys: Vec<Key>,
    /// Per transaction of the slice, its range in `keys`.
    ranges: Vec<(u32, u32)>,
    /// False if a transaction declared nothing.
    complete: bool,
    /// Per worker of step 2, the `(transaction, position in keys)` pairs whose key it owns.
    owned: Vec<Vec<(TxIndex, u32)>>,
}

/// Reusable buffers for the analysis.
#[derive(Default)]
struct Analyzer {
    probe_depth: KeyMap<u32>,
    probe_keys: Vec<Key>,
    scratch: Vec<parking_lot::Mutex<AnalysisScratch>>,
    slices: Vec<parking_lot::Mutex<SliceKeys>>,
    parent: Vec<TxIndex>,
    depth: Vec<u32>,
    count: Vec<u32>,
    pred_start: Vec<u32>,
    preds: Vec<TxIndex>,
}

fn find(parent: &mut [TxIndex], mut x: TxIndex) -> TxIndex {
    while parent[x as usize] != x {
        let p = parent[x as usize];
        parent[x as usize] = parent[p as usize];
        x = p;
    }
    x
}

impl Analyzer {
    /// The contention probe: true if the first [`PROBE_TXS`] transactions form (nearly) one
    /// dependency chain — every transaction touching a key of the one before, as when a whole
    /// block hits one hot key. Such a block has no parallelism for any executor to find, and
    /// the cheapest correct thing is to run it in order on one thread, skipping the analysis
    /// of the rest. (If the rest of the block were different, the result would still be exact;
    /// only that block would run slower than it could.)
    fn probe_serial<V: Vm>(&mut self, vm: &V, txs: &[V::Tx]) -> bool {
        let m = txs.len().min(PROBE_TXS);
        if m < PROBE_TXS / 2 {
            return false;
        }
        self.probe_depth.clear();
        let mut critical = 0;
        for tx in &txs[..m] {
            self.probe_keys.clear();
            if !vm.declared_keys(tx, &mut self.probe_keys) {
                return false;
            }
            let depth = 1 + self.probe_keys.iter().filter_map(|k| self.probe_depth.get(k)).max().copied().unwrap_or(0);
            for k in &self.probe_keys {
                self.probe_depth.insert(*k, depth);
            }
            critical = critical.max(depth);
        }
        critical as usize * 4 >= m * 3
    }

    /// Analyses `txs` on `pool`. Three steps:
    /// 1. (parallel, by slices of the block) collect each transaction's declared keys;
    /// 2. (parallel, by key hash) each worker walks the whole block in order but tracks only
    ///    its own keys, recording an edge from every transaction to the previous toucher of
    ///    each of its keys;
    /// 3. (serial, O(n + edges)) union-find over the edges, the critical path, and a counting
    ///    sort of transactions into chains and of chains by size.
    fn analyze<V: Vm>(&mut self, pool: &rayon::ThreadPool, vm: &V, txs: &[V::Tx], out: &mut BlockAnalysis) {
        let started = std::time::Instant::now();
        out.serial = self.probe_serial(vm, txs);
        if out.serial {
            out.complete = true;
            out.critical_path = txs.len() as u32;
            out.order.clear();
            out.chains.clear();
            out.chains.push((0, txs.len() as u32));
            out.analysis_ns = started.elapsed().as_nanos() as u64;
            return;
        }
        let n = txs.len();
        let workers = pool.current_num_threads();
        self.scratch.resize_with(workers, Default::default);
        self.slices.resize_with(workers, Default::default);
        let slice_len = n.div_ceil(workers).max(1);

        // Step 1: declared keys by slice, each key hashed once and filed under its owner.
        let slices = &self.slices;
        pool.broadcast(|ctx| {
            let mut slice = slices[ctx.index()].lock();
            let SliceKeys { keys, ranges, complete, owned } = &mut *slice;
            keys.clear();
            ranges.clear();
            owned.resize_with(workers, Vec::new);
            owned.iter_mut().for_each(Vec::clear);
            *complete = true;
            let lo = (ctx.index() * slice_len).min(n);
            let hi = (lo + slice_len).min(n);
            for (i, tx) in (lo..hi).zip(&txs[lo..hi]) {
                let start = keys.len() as u32;
                if !vm.declared_keys(tx, keys) {
                    *complete = false;
                    return;
                }
                ranges.push((start, keys.len() as u32));
                for (pos, k) in keys.iter().enumerate().skip(start as usize) {
                    owned[(k.hash64() >> 52) as usize % workers].push((i as TxIndex, pos as u32));
                }
            }
        });
        out.complete = self.slices.iter_mut().all(|s| s.get_mut().complete);
        out.keys.resize_with(workers, Vec::new);
        out.key_ranges.clear();
        out.slice_len = slice_len;
        for (w, s) in self.slices.iter_mut().enumerate() {
            let s = s.get_mut();
            std::mem::swap(&mut out.keys[w], &mut s.keys);
            out.key_ranges.extend_from_slice(&s.ranges);
        }
        out.order.clear();
        out.chains.clear();
        out.critical_path = 0;
        if !out.complete {
            out.analysis_ns = started.elapsed().as_nanos() as u64;
            return;
        }

        // Step 2: edges to previous touchers. Each worker walks the keys it owns, slice after
        // slice, so it sees its keys' touches in block order.
        let (scratch, slices, analysis) = (&self.scratch, &self.slices, &*out);
        pool.broadcast(|ctx| {
            let mut s = scratch[ctx.index()].lock();
            let AnalysisScratch { last_toucher, edges } = &mut *s;
            last_toucher.clear();
            edges.clear();
            for (w, slice) in slices.iter().enumerate() {
                let slice = slice.lock();
                for &(i, pos) in &slice.owned[ctx.index()] {
                    let k = analysis.keys[w][pos as usize];
                    match last_toucher.insert(k, i) {
                        Some(prev) if prev != i => edges.push((i, prev)),
                        _ => {}
                    }
                }
            }
        });

        // Step 3: predecessors in CSR form, then depth and union-find in one ordered pass.
        self.pred_start.clear();
        self.pred_start.resize(n + 1, 0);
        for s in &mut self.scratch {
            for &(i, _) in &s.get_mut().edges {
                self.pred_start[i as usize + 1] += 1;
            }
        }
        for i in 0..n {
            self.pred_start[i + 1] += self.pred_start[i];
        }
        self.preds.clear();
        self.preds.resize(self.pred_start[n] as usize, 0);
        self.count.clear();
        self.count.extend_from_slice(&self.pred_start[..n]);
        for s in &mut self.scratch {
            for &(i, p) in &s.get_mut().edges {
                let slot = &mut self.count[i as usize];
                self.preds[*slot as usize] = p;
                *slot += 1;
            }
        }
        self.parent.clear();
        self.parent.extend(0..n as TxIndex);
        self.depth.clear();
        self.depth.resize(n, 1);
        for i in 0..n {
            let mut depth = 1;
            for &p in &self.preds[self.pred_start[i] as usize..self.pred_start[i + 1] as usize] {
                depth = depth.max(self.depth[p as usize] + 1);
                let (a, b) = (find(&mut self.parent, p), find(&mut self.parent, i as TxIndex));
                if a != b {
                    // The smaller index becomes the root, so roots are chain heads.
                    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                    self.parent[hi as usize] = lo;
                }
            }
            self.depth[i] = depth;
            out.critical_path = out.critical_path.max(depth);
        }

        // Counting sort of transactions by chain root, keeping block order inside a chain.
        self.count.clear();
        self.count.resize(n, 0);
        for i in 0..n as TxIndex {
            let r = find(&mut self.parent, i);
            self.parent[i as usize] = r;
            self.count[r as usize] += 1;
        }
        let mut start = 0u32;
        let mut longest = 0u32;
        for r in 0..n {
            let c = self.count[r];
            if c > 0 {
                out.chains.push((start, c));
                self.count[r] = start; // now the next free slot of this chain
                start += c;
                longest = longest.max(c);
            }
        }
        out.order.resize(n, 0);
        for i in 0..n {
            let slot = &mut self.count[self.parent[i] as usize];
            out.order[*slot as usize] = i as TxIndex;
            *slot += 1;
        }
        // Largest chains first (a counting sort by length, stable), so that the end of the
        // schedule is made of small chains and the workers finish together.
        self.count.clear();
        self.count.resize(longest as usize + 2, 0);
        for &(_, len) in &out.chains {
            self.count[(longest - len) as usize + 1] += 1;
        }
        for l in 0..=longest as usize {
            self.count[l + 1] += self.count[l];
        }
        let mut sorted = vec![(0u32, 0u32); out.chains.len()];
        for &(s, len) in &out.chains {
            let slot = &mut self.count[(longest - len) as usize];
            sorted[*slot as usize] = (s, len);
            *slot += 1;
        }
        out.chains = sorted;
        // Hand small chains out in batches of about BATCH_TXS transactions, so that a block
        // of many tiny chains does not turn into one contended counter increment per chain.
        out.batches.clear();
        let mut acc = 0;
        for (c, &(_, len)) in out.chains.iter().enumerate() {
            if acc == 0 {
                out.batches.push(c as u32);
            }
            acc += len;
            if acc >= BATCH_TXS {
                acc = 0;
            }
        }
        out.batches.push(out.chains.len() as u32);
        out.analysis_ns = started.elapsed().as_nanos() as u64;
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
    serial: super::SequentialExecutor,
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
            serial: super::SequentialExecutor::new(),
        }
    }

    /// Analyses `txs` (kept for [`DeclaredExecutor::execute_analyzed`]) and returns the result.
    pub fn analyze<V: Vm>(&mut self, vm: &V, txs: &[V::Tx]) -> &BlockAnalysis {
        self.analyzer.analyze(&self.pool, vm, txs, &mut self.analysis);
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
            analysis_ns: a.analysis_ns,
            ..Default::default()
        };
        if a.serial {
            let mut out = BlockExecutor::<V>::execute(&mut self.serial, vm, state, txs)?;
            out.stats = ExecStats { execute_ns: out.stats.execute_ns, merge_ns: out.stats.merge_ns, ..chain_stats(ExecPath::Serial) };
            out.stats.executions = txs.len() as u64;
            return Ok(out);
        }
        if !a.complete || a.key_ranges.len() != txs.len() {
            let mut out = self.execute_block_stm(vm, state, txs)?;
            out.stats.path = ExecPath::DeclaredFallback;
            return Ok(out);
        }
        let started = std::time::Instant::now();
        let next_chain = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let overlays = &self.overlays;
        let results = self.pool.broadcast(|ctx| {
            let mut overlay = overlays[ctx.index()].lock();
            overlay.clear();
            let mut outputs: Vec<(TxIndex, V::Output)> = Vec::new();
            loop {
                let b = next_chain.fetch_add(1, Relaxed);
                if b + 1 >= a.batches.len() {
                    break;
                }
                for &(start, len) in &a.chains[a.batches[b] as usize..a.batches[b + 1] as usize] {
                    for &i in &a.order[start as usize..(start + len) as usize] {
                        if failed.load(Relaxed) {
                            return (outputs, Vec::new());
                        }
                        let declared = a.keys_of(i);
                        let base = ChainBase { overlay: &overlay, state, declared, undeclared: false };
                        let mut view = BufferedView::new(base);
                        let out = vm.execute(&txs[i as usize], &mut view);
                        let BufferedView { base, mut writes } = view;
                        let ops = writes.take();
                        if base.undeclared || out.is_err() || ops.iter().any(|(k, _)| !declared.contains(k)) {
                            failed.store(true, Relaxed);
                            return (outputs, Vec::new());
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
            }
            // Each worker hands over its writes as one segment, drained in parallel.
            let segment: Vec<(Key, Option<Value>)> = overlay.drain().collect();
            (outputs, segment)
        });
        if failed.load(Relaxed) {
            let mut out = self.execute_block_stm(vm, state, txs)?;
            out.stats.path = ExecPath::DeclaredFallback;
            return Ok(out);
        }
        let execute_ns = started.elapsed().as_nanos() as u64;
        let mut slots: Vec<Option<V::Output>> = Vec::with_capacity(txs.len());
        slots.resize_with(txs.len(), || None);
        let mut segments = Vec::with_capacity(results.len());
        for (outputs, segment) in results {
            segments.push(segment);
            for (i, o) in outputs {
                slots[i as usize] = Some(o);
            }
        }
        let outputs = slots.into_iter().map(|o| o.expect("every chain ran")).collect();
        let mut stats = chain_stats(ExecPath::Declared);
        stats.execute_ns = execute_ns;
        stats.merge_ns = started.elapsed().as_nanos() as u64 - execute_ns;
        stats.executions = txs.len() as u64;
        Ok(BlockOutput { outputs, write_set: WriteSet::from_segments(segments), stats })
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
