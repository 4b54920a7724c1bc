//! `occam bench --storage rocksdb[:DIR]`: every executor run gets a twin whose blocks are also
//! persisted to a RocksDB store (`occam-store`, the node's store), each block's write set, applied
//! height and root in one synced write. Persisting block N overlaps executing block N+1: a
//! persister thread takes blocks from a channel of two slots, so the executor waits only when
//! the disk is more than two blocks behind; blocks that wait are merged into one write with
//! one fsync (group commit). The twin's block time includes that wait, and its last
//! block includes waiting for the store to catch up, so its TPS is what a node that must
//! persist before answering could sustain.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{bail, Context};
use occam_engine::state::{CommittedState, StateRoot, WriteSet};
use occam_store::{AppliedPoint, BlockCommit, Durability, Store, StoreIdentity, StoreOptions};
use serde::{Deserialize, Serialize};

use crate::runner::{percentile, Latency};

/// The suffix of a persisted twin's executor name (`parallel+rocksdb`).
pub const STORAGE_SUFFIX: &str = "+rocksdb";

/// Blocks that may wait for the persister before the executor waits (each holds its write set).
const PIPELINE_BLOCKS: usize = 2;

/// The group a bench store writes (one state per store).
const GROUP: u32 = 0;

/// A parsed `--storage` setting.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageSpec {
    /// Where the stores go: one sub-folder per run. `None`: a temporary folder, removed after.
    pub dir: Option<PathBuf>,
}

impl StorageSpec {
    /// Parses `rocksdb` or `rocksdb:DIR`.
    pub fn parse(s: &str) -> Result<StorageSpec, String> {
        match s.split_once(':') {
            None if s == "rocksdb" => Ok(StorageSpec { dir: None }),
            Some(("rocksdb", dir)) if !dir.is_empty() => Ok(StorageSpec { dir: Some(PathBuf::from(dir)) }),
            _ => Err(format!("--storage takes `rocksdb` or `rocksdb:DIR`, not `{s}`")),
        }
    }
}

/// What persisting cost a run (the `storage` field of a persisted twin's result).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StorageResult {
    /// The store: `rocksdb`.
    pub backend: String,
    /// Every block synced to disk before the next was persisted.
    pub synced: bool,
    /// Time of the write (batch and fsync) that persisted each measured block, microseconds.
    pub persist_us: Latency,
    /// Mean of `persist_us`.
    pub persist_mean_us: f64,
    /// Mean number of blocks the write carrying a measured block held (1: every block synced
    /// alone; more when the persister fell behind and merged waiting blocks into one write).
    #[serde(default)]
    pub blocks_per_write: f64,
    /// Mean time the executor waited per measured block for the persister to take the block
    /// (the part of persisting that did not overlap execution), microseconds.
    pub wait_mean_us: f64,
    /// This run's `tps_mean` over the in-memory run of the same executor and threads.
    pub tps_vs_memory: f64,
    /// Store bytes on disk after the run (SST files and write-ahead log) per transaction run.
    pub bytes_per_tx: f64,
}

struct Job {
    height: u64,
    writes: WriteSet,
    root: StateRoot,
    measured: bool,
}

/// A store being written by its own thread.
pub struct Persister {
    tx: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<anyhow::Result<Vec<WriteTime>>>>,
    /// Closed by `finish`, so its background flushes and compactions do not run into the
    /// next run's time.
    store: Option<Store>,
    _temp: Option<tempfile::TempDir>,
    /// Seconds the executor waited to hand over measured blocks.
    pub waits: Vec<f64>,
    /// The store's size on disk once genesis was written.
    pub genesis_bytes: u64,
}

impl Persister {
    /// Creates the store for one run in `spec`'s folder (`name` is the run's sub-folder) and
    /// writes `genesis` into it (not timed). A sub-folder that already holds files is refused.
    pub fn start(spec: &StorageSpec, name: &str, genesis: &CommittedState) -> anyhow::Result<Persister> {
        let (path, temp) = match &spec.dir {
            Some(dir) => {
                let path = dir.join(name);
                if std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_some()) {
                    bail!("{} already holds files: remove it or give --storage another folder", path.display());
                }
                std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
                (path, None)
            }
            None => {
                let t = tempfile::Builder::new().prefix("occam-bench-store-").tempdir().context("creating a temporary store folder")?;
                (t.path().join(name), Some(t))
            }
        };
        let options = StoreOptions { durability: Durability::Sync, ..StoreOptions::default() };
        let store = Store::open(&path, StoreIdentity::new(0, 0), &options)?;
        store.write_genesis(GROUP, &genesis.sorted_entries())?;
        let genesis_bytes = store.disk_bytes();
        let (tx, rx) = sync_channel::<Job>(PIPELINE_BLOCKS);
        let writer = store.clone();
        let thread = std::thread::Builder::new().name("occam-persist".into()).spawn(move || persist_loop(&writer, rx))?;
        Ok(Persister { tx: Some(tx), thread: Some(thread), store: Some(store), _temp: temp, waits: Vec::new(), genesis_bytes })
    }

    /// Hands block `height`'s writes to the persister, waiting while it is a block behind.
    /// Returns the time waited.
    pub fn persist(&mut self, height: u64, writes: WriteSet, root: StateRoot, measured: bool) -> anyhow::Result<std::time::Duration> {
        let t0 = Instant::now();
        let sent = self.tx.as_ref().expect("persister running").send(Job { height, writes, root, measured });
        let waited = t0.elapsed();
        if sent.is_err() {
            // The thread ended early: its error says why.
            self.finish()?;
            bail!("the persister stopped");
        }
        if measured {
            self.waits.push(waited.as_secs_f64());
        }
        Ok(waited)
    }

    /// Waits for every handed-over block to be persisted (synced); returns, per measured
    /// block, the seconds of the write that carried it and how many blocks that write carried.
    pub fn finish(&mut self) -> anyhow::Result<Vec<WriteTime>> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| anyhow::anyhow!("the persister panicked"))?,
            None => Ok(Vec::new()),
        }
    }

    /// Closes the store (after [`Persister::finish`], outside the timed part: closing waits
    /// for RocksDB's background flushes) and returns its size on disk.
    pub fn close(&mut self) -> u64 {
        self.store.take().map_or(0, |s| s.disk_bytes())
    }
}

/// Per persisted block: the seconds of the write that carried it, and how many blocks it carried.
pub type WriteTime = (f64, usize);

/// Most blocks merged into one write when the persister is behind.
const GROUP_COMMIT_MAX: usize = 8;

/// Persists blocks in order. When several are waiting, they go in one write batch with one
/// sync (group commit, as TiKV merges its groups' writes): the store still moves from one
/// whole block to a later whole block, and no block counts as persisted before its sync.
/// Returns, per measured block, the time of the write that carried it and how many blocks
/// that write carried.
fn persist_loop(store: &Store, rx: Receiver<Job>) -> anyhow::Result<Vec<WriteTime>> {
    let mut times = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < GROUP_COMMIT_MAX {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let t0 = Instant::now();
        let points: Vec<AppliedPoint> =
            jobs.iter().map(|j| AppliedPoint { height: j.height, log_index: 0, block_hash: [0; 32], root: j.root }).collect();
        let commits: Vec<BlockCommit<'_>> =
            jobs.iter().zip(&points).map(|(j, p)| BlockCommit { point: *p, writes: &j.writes, block: None, meta: &[], txs: &[] }).collect();
        store.apply_blocks(GROUP, &commits)?;
        let took = t0.elapsed().as_secs_f64();
        times.extend(jobs.iter().filter(|j| j.measured).map(|_| (took, jobs.len())));
    }
    Ok(times)
}

/// The storage figures of a run from its persist and wait times.
pub fn storage_result(persist: &[WriteTime], waits_s: &[f64], tps_vs_memory: f64, disk_bytes: u64, txs: usize) -> StorageResult {
    let mut us: Vec<f64> = persist.iter().map(|(t, _)| t * 1e6).collect();
    us.sort_by(f64::total_cmp);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    StorageResult {
        backend: "rocksdb".into(),
        synced: true,
        persist_us: Latency {
            p50: percentile(&us, 0.5),
            p90: percentile(&us, 0.9),
            p99: percentile(&us, 0.99),
            max: us.last().copied().unwrap_or(0.0),
        },
        persist_mean_us: mean(&us),
        blocks_per_write: mean(&persist.iter().map(|(_, n)| *n as f64).collect::<Vec<_>>()),
        wait_mean_us: mean(waits_s) * 1e6,
        tps_vs_memory,
        bytes_per_tx: disk_bytes as f64 / txs.max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_specs_parse_or_say_what_is_accepted() {
        assert_eq!(StorageSpec::parse("rocksdb"), Ok(StorageSpec { dir: None }));
        assert_eq!(StorageSpec::parse("rocksdb:/tmp/x"), Ok(StorageSpec { dir: Some("/tmp/x".into()) }));
        for bad in ["", "rocks", "rocksdb:", "lmdb:/x"] {
            assert!(StorageSpec::parse(bad).unwrap_err().contains("rocksdb:DIR"), "{bad}");
        }
    }
}
