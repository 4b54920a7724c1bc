//! The embedded sharded engine: S shards in one process, each with its own state and executor,
//! and the cross-shard protocol carried by an in-process transport.
//!
//! # The serial order a sharded block is equivalent to
//!
//! For a block `t0, t1, …, tn-1` and a partitioner, a transaction is *single-shard* when every
//! key it declares belongs to one shard, and *cross-shard* otherwise. Executing the block on the
//! sharded engine gives exactly the outputs, values and root of executing, on one unsharded
//! state, **every single-shard transaction in block order, then every cross-shard transaction
//! in block order**. (Single-shard transactions of different shards touch disjoint keys, so
//! their relative order does not matter; the oracle test in `tests/` replays exactly this order
//! and compares every value and the root.) Outputs are returned in block order.
//!
//! # How a block runs
//!
//! 1. **Route.** Each transaction's declared keys give its shards. A transaction that declares
//!    nothing is refused ([`ShardError::Undeclared`]): its shards cannot be known in advance.
//!    (Discovering keys by a reconnaissance run, then declaring them, would fit in here.)
//! 2. **Single-shard phase.** Every shard executes its transactions with its own executor on a
//!    worker of the engine's pool, all shards at once, and commits them.
//! 3. **Cross-shard phase.** A [`Coordinator`] and one [`Participant`] per shard run the
//!    read-exchange protocol over the [`Transport`]; the coordinator's host executes the
//!    cross-shard transactions in block order over the values read, and the participants apply
//!    the resulting writes. See [`crate::protocol`].
//!
//! Nothing of a block is committed until all of it has run: the cross-shard phase reads the
//! values the single-shard phase is about to write, the participants stage the writes they are
//! sent, and every shard commits its single-shard writes, then its cross-shard ones, at the end.
//! A transaction that reads or writes a key outside what it declared would silently read a
//! wrong (absent) value in a shard that does not hold the key, so every access is checked: the
//! block fails with [`ShardError::UndeclaredAccess`] and nothing of it is committed.
//!
//! The combined state root ([`ShardedEngine::root`]) is the root of the union of the shards'
//! states — the same value an unsharded state holding the same entries has.

use crate::partition::{Partitioner, ShardId};
use crate::protocol::{Action, Address, Coordinator, Entries, Envelope, Participant, ProtocolError, Step};
use occam_engine::exec::{executor_by_name, BlockExecutor, ExecError, WorkerPool};
use occam_engine::key::Key;
use occam_engine::state::{CommittedState, StateRoot, WriteSet};
use occam_engine::value::Value;
use occam_engine::vm::{BaseRead, BufferedView, Interrupt, View, Vm};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Why a sharded block failed. Nothing of a failed block is committed.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// An executor refused the block.
    #[error("executor: {0}")]
    Exec(#[from] ExecError),
    /// The protocol refused a message (a bug in a host or the transport, never in the block).
    #[error("cross-shard protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// Transaction `0` declares no keys, so its shards cannot be known in advance.
    #[error("transaction {0} declares no keys; the sharded engine needs declared keys")]
    Undeclared(usize),
    /// A transaction of the block touched a key outside its declaration.
    #[error("a transaction touched a key outside its declared keys (in the {phase} phase)")]
    UndeclaredAccess {
        /// `single-shard` or `cross-shard`.
        phase: &'static str,
    },
    /// Bad settings.
    #[error("{0}")]
    Config(String),
}

/// A VM whose every key access is checked against an ownership rule; a violation is recorded
/// (the access proceeds, so the executor is not disturbed) and fails the block afterwards.
struct Guarded<V> {
    inner: V,
    owns: Arc<dyn Fn(&Key) -> bool + Send + Sync>,
    violated: Arc<AtomicBool>,
}

struct GuardView<'a, W> {
    inner: &'a mut W,
    owns: &'a (dyn Fn(&Key) -> bool + Send + Sync),
    violated: &'a AtomicBool,
}

impl<W> GuardView<'_, W> {
    fn check(&self, key: &Key) {
        if !(self.owns)(key) {
            self.violated.store(true, Ordering::Relaxed);
        }
    }
}

impl<W: View> View for GuardView<'_, W> {
    fn read(&mut self, key: &Key) -> Result<Option<Value>, Interrupt> {
        self.check(key);
        self.inner.read(key)
    }
    fn write(&mut self, key: Key, value: Value) {
        self.check(&key);
        self.inner.write(key, value)
    }
    fn delete(&mut self, key: Key) {
        self.check(&key);
        self.inner.delete(key)
    }
    fn add(&mut self, key: Key, delta: u64) {
        self.check(&key);
        self.inner.add(key, delta)
    }
}

impl<V: Vm> Vm for Guarded<V> {
    type Tx = V::Tx;
    type Output = V::Output;
    fn execute<W: View>(&self, tx: &V::Tx, view: &mut W) -> Result<V::Output, Interrupt> {
        self.inner.execute(tx, &mut GuardView { inner: view, owns: &*self.owns, violated: &self.violated })
    }
    fn declared_keys(&self, tx: &V::Tx, keys: &mut Vec<Key>) -> bool {
        self.inner.declared_keys(tx, keys)
    }
}

/// A block split by the shards its transactions declare (indices into the block).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routing {
    /// Per shard, its single-shard transactions in block order.
    pub single: Vec<Vec<usize>>,
    /// The cross-shard transactions in block order.
    pub cross: Vec<usize>,
}

impl Routing {
    /// The documented serial order: every single-shard transaction in block order, then every
    /// cross-shard one in block order.
    pub fn serial_order(&self) -> Vec<usize> {
        let mut single: Vec<usize> = self.single.iter().flatten().copied().collect();
        single.sort_unstable();
        single.extend(&self.cross);
        single
    }
}

/// Splits `txs` by the shards their declared keys live on under `partitioner`.
pub fn route<V: Vm>(vm: &V, partitioner: &dyn Partitioner, txs: &[V::Tx]) -> Result<Routing, ShardError> {
    let mut routing = Routing { single: vec![Vec::new(); partitioner.shards()], cross: Vec::new() };
    let mut keys = Vec::new();
    for (i, tx) in txs.iter().enumerate() {
        keys.clear();
        if !vm.declared_keys(tx, &mut keys) || keys.is_empty() {
            return Err(ShardError::Undeclared(i));
        }
        let first = partitioner.shard_of(&keys[0]);
        if keys.iter().all(|k| partitioner.shard_of(k) == first) {
            routing.single[first as usize].push(i);
        } else {
            routing.cross.push(i);
        }
    }
    Ok(routing)
}

/// Carries protocol messages between the coordinator and the shards.
pub trait Transport {
    /// Queues `envelope` for delivery.
    fn send(&mut self, envelope: Envelope);
    /// The next delivered envelope, if any.
    fn recv(&mut self) -> Option<Envelope>;
}

/// The in-process transport: a FIFO queue.
#[derive(Debug, Default)]
pub struct LocalTransport {
    queue: VecDeque<Envelope>,
    sent: usize,
}

impl LocalTransport {
    /// Messages sent so far.
    pub fn sent(&self) -> usize {
        self.sent
    }
}

impl Transport for LocalTransport {
    fn send(&mut self, envelope: Envelope) {
        self.sent += 1;
        self.queue.push_back(envelope);
    }
    fn recv(&mut self) -> Option<Envelope> {
        self.queue.pop_front()
    }
}

/// Outputs of a reservation round (`None`: deferred), and the committed writes by shard.
type ReservedResult<O> = (Vec<Option<O>>, BTreeMap<ShardId, Entries>);

/// A base for one transaction over a snapshot that records the keys it reads.
struct Recording<'a> {
    state: &'a CommittedState,
    reads: Vec<Key>,
}

impl BaseRead for Recording<'_> {
    fn read_base(&mut self, key: &Key) -> Result<Option<Value>, Interrupt> {
        self.reads.push(*key);
        Ok(self.state.get(key).cloned())
    }
}

/// Outputs of the cross-shard transactions, and their writes by shard.
type CrossResult<O> = (Vec<O>, BTreeMap<ShardId, Entries>);

struct Shard<V: Vm + 'static> {
    state: CommittedState,
    exec: Box<dyn BlockExecutor<Guarded<V>>>,
}

/// What a sharded block did, beyond its outputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShardedStats {
    /// Single-shard transactions per shard.
    pub shard_txs: Vec<usize>,
    /// Nanoseconds each shard spent on its single-shard transactions (execute and commit).
    pub shard_ns: Vec<u64>,
    /// Cross-shard transactions.
    pub cross_txs: usize,
    /// Wall time of the single-shard phase.
    pub single_phase_ns: u64,
    /// Wall time of the cross-shard phase (protocol, execution, applying the writes).
    pub cross_phase_ns: u64,
    /// Protocol messages sent.
    pub messages: usize,
    /// The order the cross-shard transactions took effect in (block indices): block order,
    /// except under [`CrossBatching::Reservation`].
    pub cross_order: Vec<usize>,
    /// Protocol rounds of the cross-shard phase.
    pub cross_rounds: usize,
}

/// A sharded block's outputs (block order) and statistics.
#[derive(Clone, Debug)]
pub struct ShardedOutput<O> {
    /// One output per transaction, in block order.
    pub outputs: Vec<O>,
    /// Statistics.
    pub stats: ShardedStats,
}

/// The embedded sharded engine. See the module documentation for the semantics.
pub struct ShardedEngine<V: Vm + 'static> {
    partitioner: Arc<dyn Partitioner>,
    shards: Vec<parking_lot::Mutex<Shard<V>>>,
    participants: Vec<Participant>,
    cross: Box<dyn BlockExecutor<Guarded<V>>>,
    pool: WorkerPool,
    /// Protocol rounds so far (one per block with cross-shard transactions when batched, one
    /// per cross-shard transaction otherwise); a round's number tags its messages.
    rounds: u64,
    batching: CrossBatching,
}

/// How the cross-shard transactions of a block are coordinated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CrossBatching {
    /// One protocol round for all of them (the default): two message exchanges per block.
    #[default]
    PerBlock,
    /// One round per transaction, in block order, as a per-transaction commit protocol would
    /// run them; kept to measure what batching saves.
    PerTransaction,
    /// Aria-style batch reservation, a research variant: each round executes all remaining
    /// cross-shard transactions against the same values, commits those that neither read nor
    /// write a key an earlier transaction of the round writes, and defers the others to the
    /// next round. Its serial order is therefore not block order but round by round, each
    /// round in block order; [`ShardedStats::cross_order`] reports it.
    Reservation,
}

impl<V> ShardedEngine<V>
where
    V: Vm + Clone + 'static,
    V::Tx: Clone,
{
    /// An engine with one shard per partition of `partitioner`, each running `executor` on
    /// `threads` workers, starting from `genesis` split by the partitioner.
    pub fn new(partitioner: Arc<dyn Partitioner>, executor: &str, threads: usize, genesis: &CommittedState) -> Result<Self, ShardError> {
        let n = partitioner.shards();
        if n == 0 {
            return Err(ShardError::Config("a sharded engine needs at least one shard".into()));
        }
        let mut parts: Vec<Vec<(Key, Value)>> = vec![Vec::new(); n];
        for (k, v) in genesis.sorted_entries() {
            parts[partitioner.shard_of(&k) as usize].push((k, v));
        }
        let shards = parts
            .into_iter()
            .map(|entries| {
                Ok(parking_lot::Mutex::new(Shard {
                    state: CommittedState::from_entries(entries),
                    exec: executor_by_name(executor, threads)?,
                }))
            })
            .collect::<Result<_, ExecError>>()?;
        Ok(ShardedEngine {
            participants: (0..n as ShardId).map(Participant::new).collect(),
            // The cross-shard phase runs while the shards wait: it gets all their threads.
            cross: executor_by_name(executor, (threads * n).min(occam_engine::exec::MAX_THREADS))?,
            pool: WorkerPool::new(n).map_err(|e| ShardError::Config(format!("starting the shard threads: {e}")))?,
            shards,
            partitioner,
            rounds: 0,
            batching: CrossBatching::PerBlock,
        })
    }

    /// Chooses how cross-shard transactions are coordinated (results are the same either way).
    pub fn set_batching(&mut self, batching: CrossBatching) {
        self.batching = batching;
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The root of all shards' states together.
    pub fn root(&self) -> StateRoot {
        let guards: Vec<_> = self.shards.iter().map(|s| s.lock()).collect();
        CommittedState::combined_root(guards.iter().map(|g| &g.state))
    }

    /// Every entry of every shard, sorted by key.
    pub fn sorted_entries(&self) -> Vec<(Key, Value)> {
        let mut all: Vec<(Key, Value)> = self.shards.iter().flat_map(|s| s.lock().state.sorted_entries()).collect();
        all.sort_by_key(|e| e.0);
        all
    }

    /// Executes and commits one block (see the module documentation for its serial order).
    pub fn execute_block(&mut self, vm: &V, txs: &[V::Tx]) -> Result<ShardedOutput<V::Output>, ShardError> {
        let n_shards = self.shards.len();
        // 1. Route.
        let Routing { single, cross } = route(vm, &*self.partitioner, txs)?;
        let cross_keys = self.reads_of(vm, txs, &cross);
        // 2. Single-shard phase: every shard executes at once. Nothing is committed until the
        //    whole block has succeeded; each shard also picks out of its writes the values the
        //    cross-shard transactions will read.
        let started = Instant::now();
        let violated = Arc::new(AtomicBool::new(false));
        let partitioner = &self.partitioner;
        let shards = &self.shards;
        let results = self.pool.run(|w, _| {
            let t = Instant::now();
            let sub: Vec<V::Tx> = single[w].iter().map(|&i| txs[i].clone()).collect();
            let p = Arc::clone(partitioner);
            let owner = w as ShardId;
            let guard =
                Guarded { inner: vm.clone(), owns: Arc::new(move |k: &Key| p.shard_of(k) == owner), violated: Arc::clone(&violated) };
            let mut shard = shards[w].lock();
            let Shard { state, exec } = &mut *shard;
            let out = exec.execute(&guard, state, &sub);
            let pending: HashMap<Key, Option<Value>> = match (&out, cross_keys.get(&owner)) {
                (Ok(out), Some(needed)) if !needed.is_empty() => {
                    let needed: HashSet<&Key> = needed.iter().collect();
                    out.write_set.iter().filter(|(k, _)| needed.contains(k)).cloned().collect()
                }
                _ => HashMap::new(),
            };
            (out, pending, t.elapsed().as_nanos() as u64)
        });
        let mut outs = Vec::with_capacity(n_shards);
        let mut pending: Vec<HashMap<Key, Option<Value>>> = Vec::with_capacity(n_shards);
        let mut shard_ns = Vec::with_capacity(n_shards);
        for (out, p, ns) in results {
            outs.push(out?);
            pending.push(p);
            shard_ns.push(ns);
        }
        if violated.load(Ordering::Relaxed) {
            return Err(ShardError::UndeclaredAccess { phase: "single-shard" });
        }
        let single_phase_ns = started.elapsed().as_nanos() as u64;

        // 3. Cross-shard phase, over the state as the single-shard writes leave it.
        let cross_started = Instant::now();
        let mut outputs: Vec<Option<V::Output>> = (0..txs.len()).map(|_| None).collect();
        let mut transport = LocalTransport::default();
        // Each shard's cross-shard writes, last one per key.
        let mut cross_writes: Vec<BTreeMap<Key, Option<Value>>> = vec![BTreeMap::new(); n_shards];
        let mut cross_order = Vec::with_capacity(cross.len());
        let mut cross_rounds = 0;
        let mut remaining = cross.clone();
        let mut routed_reads = Some(cross_keys);
        while !remaining.is_empty() {
            let batch: Vec<usize> = match self.batching {
                CrossBatching::PerTransaction => vec![remaining[0]],
                CrossBatching::PerBlock | CrossBatching::Reservation => remaining.clone(),
            };
            // The first round of all the cross-shard transactions reads what routing collected.
            let reads = match routed_reads.take() {
                Some(reads) if batch.len() == cross.len() => reads,
                _ => self.reads_of(vm, txs, &batch),
            };
            let round_outputs = self.cross_phase(vm, txs, &batch, reads, &mut pending, &mut cross_writes, &mut transport)?;
            cross_rounds += 1;
            let mut deferred = Vec::new();
            for (&i, o) in batch.iter().zip(round_outputs) {
                match o {
                    Some(o) => {
                        outputs[i] = Some(o);
                        cross_order.push(i);
                    }
                    None => deferred.push(i),
                }
            }
            remaining = match self.batching {
                CrossBatching::PerTransaction => remaining[1..].to_vec(),
                CrossBatching::PerBlock | CrossBatching::Reservation => deferred,
            };
        }
        let cross_phase_ns = cross_started.elapsed().as_nanos() as u64;

        // 4. Commit: every shard its single-shard writes, then its share of the cross-shard ones.
        let commit_started = Instant::now();
        let write_sets: Vec<&WriteSet> = outs.iter().map(|o| &o.write_set).collect();
        let staged = &cross_writes;
        let shards = &self.shards;
        self.pool.run(|w, _| {
            let mut shard = shards[w].lock();
            let Shard { state, exec } = &mut *shard;
            state.apply(write_sets[w], exec.pool());
            if !staged[w].is_empty() {
                let entries: Entries = staged[w].iter().map(|(k, v)| (*k, v.clone())).collect();
                state.apply(&WriteSet::from_entries(entries), exec.pool());
            }
        });
        let commit_ns = commit_started.elapsed().as_nanos() as u64;
        for (w, out) in outs.into_iter().enumerate() {
            shard_ns[w] += commit_ns;
            for (&i, o) in single[w].iter().zip(out.outputs) {
                outputs[i] = Some(o);
            }
        }
        Ok(ShardedOutput {
            outputs: outputs.into_iter().map(|o| o.expect("every transaction routed")).collect(),
            stats: ShardedStats {
                shard_txs: single.iter().map(Vec::len).collect(),
                shard_ns,
                cross_txs: cross.len(),
                single_phase_ns: single_phase_ns + commit_ns,
                cross_phase_ns,
                messages: transport.sent(),
                cross_order,
                cross_rounds,
            },
        })
    }

    /// The declared keys of `batch`, by owning shard, each once.
    fn reads_of(&self, vm: &V, txs: &[V::Tx], batch: &[usize]) -> BTreeMap<ShardId, Vec<Key>> {
        let mut reads: BTreeMap<ShardId, Vec<Key>> = BTreeMap::new();
        let mut seen = HashSet::new();
        let mut keys = Vec::new();
        for &i in batch {
            keys.clear();
            vm.declared_keys(&txs[i], &mut keys);
            for k in &keys {
                let entry = reads.entry(self.partitioner.shard_of(k)).or_default();
                if seen.insert(*k) {
                    entry.push(*k);
                }
            }
        }
        reads
    }

    /// Runs the protocol for the block's cross-shard transactions, delivering every message
    /// through `transport`, and returns their outputs in block order.
    #[allow(clippy::too_many_arguments)]
    fn cross_phase(
        &mut self,
        vm: &V,
        txs: &[V::Tx],
        cross: &[usize],
        reads: BTreeMap<ShardId, Vec<Key>>,
        pending: &mut [HashMap<Key, Option<Value>>],
        staged: &mut [BTreeMap<Key, Option<Value>>],
        transport: &mut impl Transport,
    ) -> Result<Vec<Option<V::Output>>, ShardError> {
        self.rounds += 1;
        let block = self.rounds;
        let (mut coordinator, out) = Coordinator::start(block, reads);
        out.into_iter().for_each(|e| transport.send(e));
        let mut outputs = None;
        while let Some(Envelope { to, message }) = transport.recv() {
            match to {
                Address::Shard(s) => {
                    let shard = self.shards.get(s as usize).ok_or(ProtocolError::Unexpected)?.lock();
                    let actions = {
                        let pending = &pending[s as usize];
                        let read = |k: &Key| match pending.get(k) {
                            Some(v) => v.clone(),
                            None => shard.state.get(k).cloned(),
                        };
                        self.participants[s as usize].on_message(&message, read)?
                    };
                    for action in actions {
                        match action {
                            Action::Send(e) => transport.send(e),
                            // Staged: committed with the block's other writes once it has all
                            // succeeded; later rounds of the block read them.
                            Action::ApplyWrites(writes) => {
                                for (k, v) in writes {
                                    pending[s as usize].insert(k, v.clone());
                                    staged[s as usize].insert(k, v);
                                }
                            }
                        }
                    }
                }
                Address::Coordinator => match coordinator.on_message(&message)? {
                    Step::Wait | Step::Done => {}
                    Step::Execute(values) => {
                        let (out, writes) = match self.batching {
                            CrossBatching::Reservation => self.execute_reserving(vm, txs, cross, values)?,
                            CrossBatching::PerBlock | CrossBatching::PerTransaction => {
                                let (out, writes) = self.execute_cross(vm, txs, cross, values)?;
                                (out.into_iter().map(Some).collect(), writes)
                            }
                        };
                        outputs = Some(out);
                        for e in coordinator.on_executed(writes)? {
                            transport.send(e);
                        }
                    }
                },
            }
        }
        match outputs {
            Some(o) if coordinator.is_done() => Ok(o),
            _ => Err(ShardError::Protocol(ProtocolError::NotExecuting)),
        }
    }

    /// [`CrossBatching::Reservation`]: every transaction of `cross` runs alone against `values`
    /// (on the engine's threads); in block order, one that reads or writes a key written by an
    /// earlier one of the round is deferred (`None`), the others commit. The first always
    /// commits, so every round makes progress.
    fn execute_reserving(
        &mut self,
        vm: &V,
        txs: &[V::Tx],
        cross: &[usize],
        values: Entries,
    ) -> Result<ReservedResult<V::Output>, ShardError> {
        let readable: HashSet<Key> = values.iter().map(|(k, _)| *k).collect();
        let state = CommittedState::from_entries(values.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        let violated = AtomicBool::new(false);
        let owns = |k: &Key| readable.contains(k);
        let runs = self.pool.run(|w, n| {
            let mut mine = Vec::new();
            for (pos, &i) in cross.iter().enumerate().skip(w).step_by(n) {
                let mut view = BufferedView::new(Recording { state: &state, reads: Vec::new() });
                let out = vm.execute(&txs[i], &mut GuardView { inner: &mut view, owns: &owns, violated: &violated });
                let BufferedView { base, mut writes } = view;
                let writes: Entries = writes.take().into_iter().map(|(k, op)| (k, op.resolve(state.get(&k)))).collect();
                mine.push((pos, out, base.reads, writes));
            }
            mine
        });
        if violated.load(Ordering::Relaxed) {
            return Err(ShardError::UndeclaredAccess { phase: "cross-shard" });
        }
        let mut runs: Vec<_> = runs.into_iter().flatten().collect();
        runs.sort_by_key(|r| r.0);
        let mut reserved: HashSet<Key> = HashSet::new();
        let mut outputs = Vec::with_capacity(runs.len());
        let mut writes: BTreeMap<ShardId, Entries> = BTreeMap::new();
        for (pos, out, reads, tx_writes) in runs {
            let out = out.map_err(|_| ShardError::Exec(ExecError::SpuriousInterrupt(cross[pos] as u32)))?;
            let conflicts = reads.iter().chain(tx_writes.iter().map(|(k, _)| k)).any(|k| reserved.contains(k));
            reserved.extend(tx_writes.iter().map(|(k, _)| *k));
            if conflicts {
                outputs.push(None);
                continue;
            }
            for (k, v) in tx_writes {
                writes.entry(self.partitioner.shard_of(&k)).or_default().push((k, v));
            }
            outputs.push(Some(out));
        }
        Ok((outputs, writes))
    }

    /// Executes the cross-shard transactions in block order over `values` (their declared keys
    /// after the single-shard phase); returns their outputs and their writes split by shard.
    fn execute_cross(&mut self, vm: &V, txs: &[V::Tx], cross: &[usize], values: Entries) -> Result<CrossResult<V::Output>, ShardError> {
        let readable: Arc<HashSet<Key>> = Arc::new(values.iter().map(|(k, _)| *k).collect());
        let state = CommittedState::from_entries(values.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        let sub: Vec<V::Tx> = cross.iter().map(|&i| txs[i].clone()).collect();
        let violated = Arc::new(AtomicBool::new(false));
        let owns = Arc::clone(&readable);
        let guard = Guarded { inner: vm.clone(), owns: Arc::new(move |k: &Key| owns.contains(k)), violated: Arc::clone(&violated) };
        let out = self.cross.execute(&guard, &state, &sub)?;
        if violated.load(Ordering::Relaxed) {
            return Err(ShardError::UndeclaredAccess { phase: "cross-shard" });
        }
        let mut writes: BTreeMap<ShardId, Entries> = BTreeMap::new();
        for (k, v) in out.write_set.sorted() {
            writes.entry(self.partitioner.shard_of(&k)).or_default().push((k, v));
        }
        Ok((out.outputs, writes))
    }
}
