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
use super::workers::WorkerPool;
use super::{check_block_len, BlockExecutor, BlockOutput, ExecError, ExecPath, ExecStats};
use crate::key::{Key, KeyMap};
use crate::state::{CommittedState, WriteSet};
use crate::value::Value;
use crate::vm::{BaseRead, BufferedView, Interrupt, TxIndex, Vm};
use crossbeam_utils::CachePadded;
use std::mem::MaybeUninit;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};
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
    /// Number of single transactions.
    singles: u32,
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
    /// Number of chains (single transactions count as chains of one).
    pub fn chains(&self) -> usize {
        self.chains.len() + self.singles as usize
    }

    /// Transactions in the largest chain.
    pub fn largest_chain(&self) -> usize {
        self.chains.first().map_or(usize::from(self.singles > 0), |c| c.1 as usize)
    }
}

/// Transactions the contention probe looks at before the full analysis.
const PROBE_TXS: usize = 128;

/// Single transactions are handed out by index ranges of this length.
const SINGLES_RANGE: usize = 64;

/// Transactions per batch of chains handed to a worker.
const BATCH_TXS: u32 = 32;

/// One worker's scratch space for the analysis, kept across blocks.
#[derive(Default)]
struct AnalysisScratch {
    /// Last toucher by key hash. Two keys with the same 64-bit hash would only add a false
    /// edge, which serialises two transactions but never breaks a result; comparing hashes
    /// instead of 32-byte keys makes this table several times faster.
    last_toucher: TouchTable,
    /// `(later, earlier)`: two transactions touching a common key, `earlier` the previous toucher.
    edges: Vec<(TxIndex, TxIndex)>,
    /// One transaction's declared keys.
    keys: Vec<Key>,
}

/// An open-addressing table from key hash to the last transaction that touched the key.
///
/// A slot is one `u64`: a 16-bit generation, 16 bits of the hash above the index bits and the
/// transaction index. Tagging with the generation makes starting a new block free (no
/// clearing, except once every 65,535 blocks); eight-byte slots keep a table for a 10,000-
/// transaction block within the core's L2 cache. Two keys whose 16-bit tags agree and whose
/// probe paths meet would only add a false edge, which serialises two transactions but never
/// breaks a result. The table is sized for at most half occupancy and
/// grows only when a block needs it.
#[derive(Default)]
struct TouchTable {
    slots: Vec<u64>,
    generation: u16,
    /// Distinct keys inserted in this block.
    len: usize,
}

impl TouchTable {
    /// Empties the table for a block that will insert at most `keys` distinct keys.
    fn begin(&mut self, keys: usize) {
        let want = (keys * 2).next_power_of_two().max(1 << 10);
        self.len = 0;
        self.generation = self.generation.wrapping_add(1);
        if self.slots.len() < want || self.generation == 0 {
            self.slots = vec![0; want.max(self.slots.len())];
            self.generation = 1;
        }
    }

    /// The slot index where the probe for `hash` starts.
    #[inline]
    fn home(&self, hash: u64) -> usize {
        hash as usize & (self.slots.len() - 1)
    }

    /// Asks the CPU to bring the home slot of `hash` into cache: the table is probed at random,
    /// and issuing the loads ahead keeps several cache misses in flight.
    #[inline]
    fn prefetch(&self, hash: u64) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `_mm_prefetch` is only a hint: it never faults and does not access memory
        // architecturally. The pointer is in bounds anyway (`home` masks by the length).
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(self.slots.as_ptr().add(self.home(hash)).cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = hash;
    }

    /// True once more than half the slots are taken: the caller must start again with a
    /// larger table (before it fills up, which would make [`TouchTable::insert`] loop).
    fn overfull(&self) -> bool {
        self.len * 2 > self.slots.len()
    }

    /// Records `tx` as the last toucher of `hash`; returns the previous one in this block.
    #[inline]
    fn insert(&mut self, hash: u64, tx: TxIndex) -> Option<TxIndex> {
        let mask = self.slots.len() - 1;
        let stamp = (u64::from(self.generation) << 48) | ((hash >> 48) << 32);
        let mut i = self.home(hash);
        loop {
            let slot = &mut self.slots[i];
            if *slot >> 48 != u64::from(self.generation) {
                *slot = stamp | u64::from(tx);
                self.len += 1;
                return None;
            }
            if *slot & !0xFFFF_FFFF == stamp {
                let prev = *slot as u32;
                *slot = stamp | u64::from(tx);
                return Some(prev);
            }
            i = (i + 1) & mask;
        }
    }
}

/// The worker that owns a key hash in step 2 of the analysis: a multiply-shift of the hash's
/// top 32 bits (no division on this per-key path; the touch table indexes by the low bits).
#[inline]
fn owner_of(hash: u64, workers: usize) -> usize {
    (((hash >> 32) * workers as u64) >> 32) as usize
}

/// Up to this many workers the analysis has no step 1: every worker reads the declarations of
/// the whole block itself and keeps the keys it owns. For one worker that skips writing the
/// touches out and reading them back (measured on 10,000 transfers: 0.30 against 0.45 ms);
/// from two workers on, splitting the reading in step 1 wins (2 workers: 0.25 against 0.31 ms).
const SHARED_SCAN_MAX_WORKERS: usize = 1;

/// Touches whose table slot is prefetched before they are inserted.
const PREFETCH_AHEAD: usize = 16;

/// One slice of the block after step 1 of the analysis.
#[derive(Default)]
struct SliceKeys {
    /// Keys of one transaction at a time.
    keys: Vec<Key>,
    /// Per worker of step 2, the `(transaction, key hash)` pairs whose key it owns.
    owned: Vec<Vec<(TxIndex, u64)>>,
}

/// The serial part of the analysis (step 3), run by one worker while the others wait.
#[derive(Default)]
struct ChainBuilder {
    parent: Vec<u32>,
    depth: Vec<u32>,
    count: Vec<u32>,
    pred_start: Vec<u32>,
    preds: Vec<u32>,
    linked_txs: Vec<TxIndex>,
    compact: Vec<u32>,
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let p = parent[x as usize];
        parent[x as usize] = parent[p as usize];
        x = p;
    }
    x
}

/// Reusable buffers for the analysis, shared by the workers of one pass.
#[derive(Default)]
struct Analyzer {
    /// The probe's last toucher of each key hash, and each probed transaction's depth.
    probe_table: TouchTable,
    probe_depth: Vec<u32>,
    probe_keys: Vec<Key>,
    /// Per worker, each on its own cache lines: the workers write these in their hot loops,
    /// and two of them sharing a line cost more than the whole analysis (measured).
    scratch: Vec<CachePadded<parking_lot::Mutex<AnalysisScratch>>>,
    /// Written in step 1 by their worker, read by every worker in step 2 (hence a read-write
    /// lock: a mutex made the workers queue up behind each other slice by slice).
    slices: Vec<CachePadded<parking_lot::RwLock<SliceKeys>>>,
    builder: parking_lot::Mutex<ChainBuilder>,
    /// Bit `i` set if transaction `i` shares a key with another one, filled in step 2. Only
    /// those are in the chains; the others ("singles") are chains of one, run from index
    /// ranges — which the workers start on while worker 0 builds the chains.
    linked: Vec<AtomicU64>,
    /// Set when some transaction declared nothing.
    incomplete: AtomicBool,
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
        self.probe_table.begin(m * 4);
        self.probe_depth.clear();
        let mut critical = 0;
        for tx in &txs[..m] {
            self.probe_keys.clear();
            if !vm.declared_keys(tx, &mut self.probe_keys) {
                return false;
            }
            // Hashes stand for keys here: a collision could only make the probe see a
            // dependency that is not there, which changes the path, never the result.
            let tx = self.probe_depth.len() as TxIndex;
            let mut depth = 1;
            for k in &self.probe_keys {
                if let Some(prev) = self.probe_table.insert(k.hash64(), tx).filter(|&p| p != tx) {
                    depth = depth.max(self.probe_depth[prev as usize] + 1);
                }
                if self.probe_table.overfull() {
                    // Transactions with this many keys: leave it to the full analysis.
                    return false;
                }
            }
            self.probe_depth.push(depth);
            critical = critical.max(depth);
        }
        super::looks_like_one_chain(critical as usize, m)
    }

    /// Step 1 (more than [`SHARED_SCAN_MAX_WORKERS`] workers), for worker `w`: the declared
    /// keys of its slice of the block, each key hashed once and filed under the worker that
    /// owns it in step 2.
    fn collect_keys<V: Vm>(&self, w: usize, workers: usize, vm: &V, txs: &[V::Tx]) {
        let slice_len = txs.len().div_ceil(workers).max(1);
        let mut slice = self.slices[w].write();
        let SliceKeys { keys, owned } = &mut *slice;
        owned.resize_with(workers, Vec::new);
        owned.iter_mut().for_each(Vec::clear);
        let lo = (w * slice_len).min(txs.len());
        let hi = (lo + slice_len).min(txs.len());
        for (i, tx) in (lo..hi).zip(&txs[lo..hi]) {
            keys.clear();
            if !vm.declared_keys(tx, keys) {
                self.incomplete.store(true, Relaxed);
                return;
            }
            for k in keys.iter() {
                let h = k.hash64();
                owned[owner_of(h, workers)].push((i as TxIndex, h));
            }
        }
    }

    /// Step 2, for worker `w`: an edge from every transaction to the previous toucher of each
    /// key `w` owns, touches taken in block order — from the slices of step 1, or straight
    /// from the block when the workers are few enough to each read all of it.
    fn find_edges<V: Vm>(&self, w: usize, workers: usize, vm: &V, txs: &[V::Tx]) {
        let mut s = self.scratch[w].lock();
        let AnalysisScratch { last_toucher, edges, keys } = &mut *s;
        edges.clear();
        let linked = &self.linked[..];
        if workers > SHARED_SCAN_MAX_WORKERS {
            let owned: usize = self.slices.iter().map(|sl| sl.read().owned[w].len()).sum();
            last_toucher.begin(owned);
            let mut inserter = Inserter::new(last_toucher, edges, linked);
            for slice in &self.slices {
                for &(i, h) in &slice.read().owned[w] {
                    inserter.push(i, h);
                }
            }
            inserter.finish();
            return;
        }
        // The number of distinct keys is only known at the end: start from a guess and
        // begin again with a table twice as large if it fills up (kept for the next block).
        let mut guess = (txs.len() * 2 / workers).max(last_toucher.slots.len() / 2);
        'scan: loop {
            last_toucher.begin(guess);
            edges.clear();
            let mut inserter = Inserter::new(last_toucher, edges, linked);
            for (i, tx) in txs.iter().enumerate() {
                keys.clear();
                if !vm.declared_keys(tx, keys) {
                    self.incomplete.store(true, Relaxed);
                    return;
                }
                for k in keys.iter() {
                    let h = k.hash64();
                    if owner_of(h, workers) == w {
                        inserter.push(i as TxIndex, h);
                        if inserter.table.overfull() {
                            guess *= 2;
                            clear_bits(linked);
                            continue 'scan;
                        }
                    }
                }
            }
            inserter.finish();
            return;
        }
    }

    /// True if transaction `i` shares a declared key with another one (valid after step 2).
    #[inline]
    fn is_linked(&self, i: usize) -> bool {
        self.linked[i / 64].load(Relaxed) & (1 << (i % 64)) != 0
    }
}

/// Sets bit `i` of a shared bitmap.
#[inline]
fn set_bit(bits: &[AtomicU64], i: TxIndex) {
    bits[i as usize / 64].fetch_or(1 << (i % 64), Relaxed);
}

fn clear_bits(bits: &[AtomicU64]) {
    bits.iter().for_each(|b| b.store(0, Relaxed));
}

/// Inserts touches into a [`TouchTable`] in order, [`PREFETCH_AHEAD`] behind their prefetch:
/// the table is probed at random, and this keeps that many cache misses in flight.
struct Inserter<'a> {
    table: &'a mut TouchTable,
    edges: &'a mut Vec<(TxIndex, TxIndex)>,
    /// Both ends of every edge are marked here.
    linked: &'a [AtomicU64],
    ring: [(TxIndex, u64); PREFETCH_AHEAD],
    queued: usize,
}

impl<'a> Inserter<'a> {
    fn new(table: &'a mut TouchTable, edges: &'a mut Vec<(TxIndex, TxIndex)>, linked: &'a [AtomicU64]) -> Self {
        Inserter { table, edges, linked, ring: [(0, 0); PREFETCH_AHEAD], queued: 0 }
    }

    #[inline]
    fn push(&mut self, tx: TxIndex, hash: u64) {
        self.table.prefetch(hash);
        let slot = self.queued % PREFETCH_AHEAD;
        if self.queued >= PREFETCH_AHEAD {
            let (t, h) = self.ring[slot];
            self.insert(t, h);
        }
        self.ring[slot] = (tx, hash);
        self.queued += 1;
    }

    #[inline]
    fn insert(&mut self, tx: TxIndex, hash: u64) {
        match self.table.insert(hash, tx) {
            Some(prev) if prev != tx => {
                self.edges.push((tx, prev));
                set_bit(self.linked, tx);
                set_bit(self.linked, prev);
            }
            _ => {}
        }
    }

    fn finish(mut self) {
        let first = self.queued.saturating_sub(PREFETCH_AHEAD);
        for q in first..self.queued {
            let (t, h) = self.ring[q % PREFETCH_AHEAD];
            self.insert(t, h);
        }
    }
}

impl ChainBuilder {
    /// Step 3: chains, critical path and work batches from the edges of step 2.
    fn build(
        &mut self,
        complete: bool,
        scratch: &[CachePadded<parking_lot::Mutex<AnalysisScratch>>],
        linked: &[AtomicU64],
        n: usize,
        out: &mut BlockAnalysis,
    ) {
        out.complete = complete;
        out.serial = false;
        out.order.clear();
        out.chains.clear();
        out.batches.clear();
        out.singles = 0;
        out.critical_path = 0;
        if !out.complete {
            return;
        }
        // Step 3: only transactions that share a key with another ("linked") need union-find;
        // every other one is a chain of its own and is executed straight from index ranges.
        // So this serial step costs O(edges + n/64), not O(n).
        let edges: usize = scratch.iter().map(|sc| sc.lock().edges.len()).sum();
        self.linked_txs.clear();
        for (w, word) in linked.iter().enumerate() {
            let mut bits = word.load(Relaxed);
            while bits != 0 {
                self.linked_txs.push((w * 64) as TxIndex + bits.trailing_zeros());
                bits &= bits - 1;
            }
        }
        let l = self.linked_txs.len();
        // Compact numbering of linked transactions, in block order.
        self.compact.resize(n, 0);
        for (c, &i) in self.linked_txs.iter().enumerate() {
            self.compact[i as usize] = c as u32;
        }
        // Predecessors of each linked transaction, in CSR form.
        self.pred_start.clear();
        self.pred_start.resize(l + 1, 0);
        for sc in scratch {
            for &(i, _) in &sc.lock().edges {
                self.pred_start[self.compact[i as usize] as usize + 1] += 1;
            }
        }
        for c in 0..l {
            self.pred_start[c + 1] += self.pred_start[c];
        }
        self.preds.clear();
        self.preds.resize(edges, 0);
        self.count.clear();
        self.count.extend_from_slice(&self.pred_start[..l]);
        for sc in scratch {
            for &(i, p) in &sc.lock().edges {
                let slot = &mut self.count[self.compact[i as usize] as usize];
                self.preds[*slot as usize] = self.compact[p as usize];
                *slot += 1;
            }
        }
        // Depth (critical path) and union-find, in block order.
        self.parent.clear();
        self.parent.extend(0..l as u32);
        self.depth.clear();
        self.depth.resize(l, 1);
        out.critical_path = u32::from(n > 0);
        for c in 0..l {
            let mut depth = 1;
            for &p in &self.preds[self.pred_start[c] as usize..self.pred_start[c + 1] as usize] {
                depth = depth.max(self.depth[p as usize] + 1);
                let (a, b) = (find(&mut self.parent, p), find(&mut self.parent, c as u32));
                if a != b {
                    // The smaller index becomes the root, so roots are chain heads.
                    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                    self.parent[hi as usize] = lo;
                }
            }
            self.depth[c] = depth;
            out.critical_path = out.critical_path.max(depth);
        }
        // Counting sort of linked transactions by chain root, keeping block order in a chain.
        self.count.clear();
        self.count.resize(l, 0);
        for c in 0..l as u32 {
            let r = find(&mut self.parent, c);
            self.parent[c as usize] = r;
            self.count[r as usize] += 1;
        }
        let mut start = 0u32;
        let mut longest = u32::from(n > l);
        for r in 0..l {
            let len = self.count[r];
            if len > 0 {
                out.chains.push((start, len));
                self.count[r] = start; // now the next free slot of this chain
                start += len;
                longest = longest.max(len);
            }
        }
        out.order.resize(l, 0);
        for c in 0..l {
            let slot = &mut self.count[self.parent[c] as usize];
            out.order[*slot as usize] = self.linked_txs[c];
            *slot += 1;
        }
        out.singles = (n - l) as u32;
        // Largest chains first (a counting sort by length, stable), so that the end of the
        // schedule is made of small chains and the workers finish together.
        self.count.clear();
        self.count.resize(longest as usize + 2, 0);
        for &(_, len) in &out.chains {
            self.count[(longest - len) as usize + 1] += 1;
        }
        for len in 0..=longest as usize {
            self.count[len + 1] += self.count[len];
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
    }
}

/// Reads for a chain: its overlay, then the committed state; notes undeclared keys.
struct ChainBase<'a> {
    /// `None` for a single transaction: nobody else in the block touches its keys, so the
    /// committed state is all it can see.
    overlay: Option<&'a KeyMap<Option<Value>>>,
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
        Ok(match self.overlay.and_then(|o| o.get(key)) {
            Some(v) => v.clone(),
            None => self.state.get(key).cloned(),
        })
    }
}

/// How a fused analysis-and-execution pass ended.
enum Pass<O> {
    /// The chains ran: here is the block's output.
    Done(BlockOutput<O>),
    /// Some transaction declared nothing.
    Incomplete,
    /// The caller's choice function preferred another path.
    Declined,
    /// A transaction touched a key it had not declared.
    Broken,
}

/// The declared-keys executor.
pub struct DeclaredExecutor {
    pool: Arc<WorkerPool>,
    /// One overlay per worker, kept across blocks so their tables are not regrown each time.
    overlays: Vec<CachePadded<parking_lot::Mutex<KeyMap<Option<Value>>>>>,
    analyzer: Analyzer,
    analysis: parking_lot::RwLock<BlockAnalysis>,
    fallback: ParallelExecutor,
    serial: super::SequentialExecutor,
}

impl DeclaredExecutor {
    /// An executor running on `pool`.
    pub fn new(pool: Arc<WorkerPool>) -> Self {
        let workers = pool.threads();
        let analyzer = Analyzer {
            scratch: (0..workers).map(|_| Default::default()).collect(),
            slices: (0..workers).map(|_| Default::default()).collect(),
            ..Default::default()
        };
        DeclaredExecutor {
            fallback: ParallelExecutor::new(pool.clone()),
            overlays: (0..workers).map(|_| Default::default()).collect(),
            pool,
            analyzer,
            analysis: Default::default(),
            serial: super::SequentialExecutor::new(),
        }
    }

    /// Executes `txs` on the Block-STM path (no declarations needed).
    pub fn execute_block_stm<V: Vm>(&mut self, vm: &V, state: &CommittedState, txs: &[V::Tx]) -> Result<BlockOutput<V::Output>, ExecError> {
        BlockExecutor::<V>::execute(&mut self.fallback, vm, state, txs)
    }

    /// Analyses `txs` and executes them on the chains unless `choose(&analysis)` says no (or
    /// the block is serial, or declarations are missing or broken), in which case the block
    /// runs on the path that fits: in order on one thread for a serial block, Block-STM
    /// otherwise. The workers are woken once for analysis and execution together.
    pub fn execute_with<V: Vm>(
        &mut self,
        vm: &V,
        state: &CommittedState,
        txs: &[V::Tx],
        choose: &(dyn Fn(&BlockAnalysis) -> bool + Sync),
    ) -> Result<BlockOutput<V::Output>, ExecError> {
        check_block_len(txs.len())?;
        let started = std::time::Instant::now();
        if self.analyzer.probe_serial(vm, txs) {
            let mut a = self.analysis.write();
            a.serial = true;
            a.complete = true;
            a.critical_path = txs.len() as u32;
            a.order.clear();
            a.chains.clear();
            a.chains.push((0, txs.len() as u32));
            a.batches.clear();
            a.singles = 0;
            a.analysis_ns = started.elapsed().as_nanos() as u64;
            let stats = self.stats(ExecPath::Serial, &a);
            drop(a);
            let mut out = BlockExecutor::<V>::execute(&mut self.serial, vm, state, txs)?;
            out.stats = ExecStats { execute_ns: out.stats.execute_ns, merge_ns: out.stats.merge_ns, executions: txs.len() as u64, ..stats };
            return Ok(out);
        }
        let path = match self.pass(vm, state, txs, choose, started) {
            Pass::Done(out) => return Ok(out),
            Pass::Declined => ExecPath::Parallel,
            Pass::Incomplete | Pass::Broken => ExecPath::DeclaredFallback,
        };
        let mut out = self.execute_block_stm(vm, state, txs)?;
        let a = self.analysis.read();
        out.stats = ExecStats {
            path,
            chains: a.chains() as u64,
            largest_chain: a.largest_chain() as u64,
            critical_path: a.critical_path as u64,
            analysis_ns: a.analysis_ns,
            ..out.stats
        };
        Ok(out)
    }

    fn stats(&self, path: ExecPath, a: &BlockAnalysis) -> ExecStats {
        ExecStats {
            path,
            chains: a.chains() as u64,
            largest_chain: a.largest_chain() as u64,
            critical_path: a.critical_path as u64,
            analysis_ns: a.analysis_ns,
            ..Default::default()
        }
    }

    /// One pass of the workers: steps 1 and 2 of the analysis in parallel, then step 3 (the
    /// chains) and the choice on worker 0 while the others already run single transactions
    /// (they are known after step 2 and need no chain), then the chains, then the outputs
    /// moved into place — separated by spin barriers. A panic in the VM (or anywhere in the
    /// pass) stops the block, lets every worker through the remaining barriers and is
    /// re-raised once all have finished.
    fn pass<V: Vm>(
        &mut self,
        vm: &V,
        state: &CommittedState,
        txs: &[V::Tx],
        choose: &(dyn Fn(&BlockAnalysis) -> bool + Sync),
        started: std::time::Instant,
    ) -> Pass<V::Output> {
        let n = txs.len();
        let workers = self.pool.threads();
        self.analyzer.linked.resize_with(n.div_ceil(64), AtomicU64::default);
        self.analyzer.linked.iter_mut().for_each(|b| *b.get_mut() = 0);
        *self.analyzer.incomplete.get_mut() = false;
        let barrier = super::workers::SpinBarrier::new(workers);
        let proceed = AtomicBool::new(false);
        let chains_ready = AtomicBool::new(false);
        let failed = AtomicBool::new(false);
        let panicked = parking_lot::Mutex::new(None);
        // Runs one phase of a worker; a panic fails the block and is kept for the caller.
        let guarded = |phase: &mut dyn FnMut()| {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(phase)) {
                failed.store(true, Relaxed);
                panicked.lock().get_or_insert(payload);
            }
        };
        let work = WorkItems::default();
        let outputs: Vec<std::sync::OnceLock<V::Output>> = (0..n).map(|_| std::sync::OnceLock::new()).collect();
        // The block's outputs, moved into place by the workers, a contiguous chunk each.
        let mut merged: Vec<V::Output> = Vec::with_capacity(n);
        let chunk = n.div_ceil(workers).max(1);
        let chunks: Vec<parking_lot::Mutex<&mut [MaybeUninit<V::Output>]>> =
            merged.spare_capacity_mut()[..n].chunks_mut(chunk).map(parking_lot::Mutex::new).collect();
        let filled = AtomicUsize::new(0);
        let (analyzer, analysis, overlays) = (&self.analyzer, &self.analysis, &self.overlays);
        let exec_started = parking_lot::Mutex::new(started);
        let exec_finished = parking_lot::Mutex::new(started);
        let segments = self.pool.run(|w, _| {
            if workers > SHARED_SCAN_MAX_WORKERS {
                guarded(&mut || analyzer.collect_keys(w, workers, vm, txs));
                barrier.wait();
            }
            guarded(&mut || analyzer.find_edges(w, workers, vm, txs));
            barrier.wait();
            let complete = !analyzer.incomplete.load(Relaxed);
            if w == 0 {
                guarded(&mut || {
                    let mut a = analysis.write();
                    analyzer.builder.lock().build(complete, &analyzer.scratch, &analyzer.linked, n, &mut a);
                    a.analysis_ns = started.elapsed().as_nanos() as u64;
                    proceed.store(complete && choose(&a), Relaxed);
                });
                *exec_started.lock() = std::time::Instant::now();
                chains_ready.store(true, Release);
            }
            if !complete {
                return Vec::new();
            }
            // Writes of single transactions go straight to their commit group's segment.
            // Sized for two writes per transaction spread evenly, so they rarely regrow.
            let expect = 2 * n / (workers * workers) + 8;
            let mut segs: Vec<Vec<(Key, Option<Value>)>> = (0..workers).map(|_| Vec::with_capacity(expect)).collect();
            guarded(&mut || {
                let mut overlay = overlays[w].lock();
                overlay.clear();
                let shared =
                    PassShared { analyzer, analysis, chains_ready: &chains_ready, proceed: &proceed, failed: &failed, work: &work };
                execute_chains(vm, state, txs, &shared, &mut overlay, &mut segs, &outputs);
                // Each worker hands over its writes already split by commit partition group, so
                // the commit can skip its bucketing round.
                for (k, v) in overlay.drain() {
                    segs[crate::state::group_of(&k, workers)].push((k, v));
                }
            });
            barrier.wait();
            if w == 0 {
                *exec_finished.lock() = std::time::Instant::now();
            }
            if proceed.load(Relaxed) && !failed.load(Relaxed) {
                guarded(&mut || {
                    if let Some(mine) = chunks.get(w) {
                        let mut mine = mine.lock();
                        for (slot, out) in mine.iter_mut().zip(&outputs[w * chunk..]) {
                            slot.write(out.get().expect("every transaction ran").clone());
                        }
                        filled.fetch_add(mine.len(), Relaxed);
                    }
                });
            }
            segs
        });
        drop(chunks);
        if let Some(payload) = panicked.into_inner() {
            resume_unwind(payload);
        }
        let a = self.analysis.read();
        if !a.complete {
            return Pass::Incomplete;
        }
        if !proceed.load(Relaxed) {
            return Pass::Declined;
        }
        if failed.load(Relaxed) {
            return Pass::Broken;
        }
        assert_eq!(filled.into_inner(), n, "every output moved into place");
        // SAFETY: the first `n` slots of the spare capacity were split into `chunks`, and the
        // workers wrote every slot of every chunk (`filled` counts them: `n`, checked above)
        // before `pool.run` returned.
        unsafe { merged.set_len(n) };
        let finished = *exec_finished.lock();
        let mut stats = self.stats(ExecPath::Declared, &a);
        stats.executions = n as u64;
        stats.execute_ns = (finished - *exec_started.lock()).as_nanos() as u64;
        stats.merge_ns = finished.elapsed().as_nanos() as u64;
        Pass::Done(BlockOutput { outputs: merged, write_set: WriteSet::from_grouped(segments, workers), stats })
    }
}

/// Work counters of the chains part of a pass, each on its own cache line.
#[derive(Default)]
struct WorkItems {
    /// Next batch of linked chains.
    batch: CachePadded<AtomicUsize>,
    /// Next range of single transactions.
    range: CachePadded<AtomicUsize>,
}

/// What the workers of a pass share in its chains part.
struct PassShared<'a> {
    analyzer: &'a Analyzer,
    analysis: &'a parking_lot::RwLock<BlockAnalysis>,
    /// Set by worker 0 once the chains are built and `proceed` is decided.
    chains_ready: &'a AtomicBool,
    proceed: &'a AtomicBool,
    failed: &'a AtomicBool,
    work: &'a WorkItems,
}

/// The chains part of a worker's pass. Until the chains are built it runs ranges of single
/// transactions; then batches of linked chains (largest first) before the remaining singles,
/// until none is left, the block has failed, or the choice went to another path. A linked
/// transaction runs over the worker's `overlay`, a single one over the committed state
/// alone, its writes going straight to `segs`. Sets `failed` when a transaction touches a key
/// it did not declare (or declares nothing now).
fn execute_chains<V: Vm>(
    vm: &V,
    state: &CommittedState,
    txs: &[V::Tx],
    shared: &PassShared<'_>,
    overlay: &mut KeyMap<Option<Value>>,
    segs: &mut [Vec<(Key, Option<Value>)>],
    outputs: &[std::sync::OnceLock<V::Output>],
) {
    let n = txs.len();
    let groups = segs.len();
    let mut declared = Vec::new();
    let mut run = |i: TxIndex, single: bool| -> bool {
        // The declarations again (cheaper than keeping them from the analysis), to catch a
        // transaction touching a key it did not declare.
        declared.clear();
        if !vm.declared_keys(&txs[i as usize], &mut declared) {
            return false;
        }
        let declared = &declared[..];
        let base = ChainBase { overlay: (!single).then_some(&*overlay), state, declared, undeclared: false };
        let mut view = BufferedView::new(base);
        let out = vm.execute(&txs[i as usize], &mut view);
        let BufferedView { base, mut writes } = view;
        let ops = writes.take();
        let Ok(out) = out else { return false };
        if base.undeclared || ops.iter().any(|(k, _)| !declared.contains(k)) {
            return false;
        }
        for (key, op) in ops {
            if single {
                let value = op.resolve_with(|| state.get(&key));
                segs[crate::state::group_of(&key, groups)].push((key, value));
                continue;
            }
            let value = op.resolve_with(|| match overlay.get(&key) {
                Some(v) => v.as_ref(),
                None => state.get(&key),
            });
            overlay.insert(key, value);
        }
        let _ = outputs[i as usize].set(out);
        true
    };
    let single_ranges = n.div_ceil(SINGLES_RANGE);
    let mut analysis = None;
    let mut spins = 0u32;
    loop {
        if shared.failed.load(Relaxed) {
            return;
        }
        if analysis.is_none() && shared.chains_ready.load(Acquire) {
            if !shared.proceed.load(Relaxed) {
                return;
            }
            analysis = Some(shared.analysis.read());
        }
        let ok = if let Some(a) = analysis.as_deref().filter(|a| shared.work.batch.load(Relaxed) + 1 < a.batches.len()) {
            let item = shared.work.batch.fetch_add(1, Relaxed);
            if item + 1 >= a.batches.len() {
                continue;
            }
            let chains = &a.chains[a.batches[item] as usize..a.batches[item + 1] as usize];
            chains.iter().all(|&(start, len)| a.order[start as usize..(start + len) as usize].iter().all(|&i| run(i, false)))
        } else {
            let range = shared.work.range.fetch_add(1, Relaxed);
            if range >= single_ranges {
                if analysis.is_some() {
                    return;
                }
                // Singles all taken and the chains not built yet: wait for them.
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(64) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            let lo = range * SINGLES_RANGE;
            let hi = (lo + SINGLES_RANGE).min(n);
            (lo..hi).filter(|&i| !shared.analyzer.is_linked(i)).all(|i| run(i as TxIndex, true))
        };
        if !ok {
            shared.failed.store(true, Relaxed);
            return;
        }
    }
}

impl<V: Vm> BlockExecutor<V> for DeclaredExecutor {
    fn name(&self) -> &'static str {
        "declared"
    }

    fn threads(&self) -> usize {
        self.pool.threads()
    }

    fn pool(&self) -> Option<&WorkerPool> {
        Some(&self.pool)
    }

    fn execute(&mut self, vm: &V, state: &CommittedState, txs: &[V::Tx]) -> Result<BlockOutput<V::Output>, ExecError> {
        self.execute_with(vm, state, txs, &|_| true)
    }
}
