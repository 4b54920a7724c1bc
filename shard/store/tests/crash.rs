//! Crash consistency of the store: a child process applies blocks to a store and is killed
//! (SIGKILL) at a random moment; reopened, the store must hold exactly the state of a prefix
//! of the blocks, with that prefix's height, block hash and root. A second child then
//! continues from there and is killed too, so recovery is also checked on a recovered store.
//!
//! The child is this test binary itself, started with `OCCAM_STORE_CRASH_CHILD` set.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use occam_engine::prelude::{CommittedState, Key, Value, WriteSet};
use occam_store::{AppliedPoint, BlockCommit, Durability, Store, StoreIdentity, StoreOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CHILD_ENV: &str = "OCCAM_STORE_CRASH_CHILD";
const GROUP: u32 = 4;
const KEYS: u64 = 2_000;
/// The child stops by itself after this many blocks, killed or not.
const MAX_BLOCKS: u64 = 200_000;

fn key(i: u64) -> Key {
    Key::from_parts(2, i, 7)
}

fn genesis() -> Vec<(Key, Value)> {
    (0..KEYS).map(|i| (key(i), Value::from_u64(1_000))).collect()
}

/// Block `height`'s writes for `seed`: a function of both alone, so the parent can replay them.
fn block_writes(seed: u64, height: u64) -> WriteSet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ height.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let n = rng.gen_range(1..200);
    let mut entries: Vec<(Key, Option<Value>)> = Vec::with_capacity(n);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..n {
        let k = key(rng.gen_range(0..KEYS + 500));
        if !seen.insert(k) {
            continue;
        }
        let v = match rng.gen_range(0..10) {
            0 => None,
            1 => Some(Value::from_slice(&[rng.gen(); 40])),
            _ => Some(Value::from_u64(rng.gen())),
        };
        entries.push((k, v));
    }
    WriteSet::from_entries(entries)
}

fn block_hash(seed: u64, height: u64) -> [u8; 32] {
    *blake3::hash(&[seed.to_le_bytes(), height.to_le_bytes()].concat()).as_bytes()
}

fn options(durability: Durability) -> StoreOptions {
    StoreOptions { durability, memory_budget_bytes: 16 << 20 }
}

fn identity() -> StoreIdentity {
    StoreIdentity::new(11, 1)
}

/// The child: applies blocks until killed (or `MAX_BLOCKS`), printing `ready` once it has.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let mut parts = spec.splitn(3, ',');
    let (dir, seed, sync) = (parts.next().unwrap(), parts.next().unwrap().parse::<u64>().unwrap(), parts.next().unwrap() == "sync");
    let store = Store::open(Path::new(dir), identity(), &options(if sync { Durability::Sync } else { Durability::Buffered })).unwrap();
    if store.applied(GROUP).unwrap().is_none() {
        store.write_genesis(GROUP, &genesis()).unwrap();
    }
    let (mut state, point) = store.load_state(GROUP).unwrap();
    let start = point.unwrap().height + 1;
    for height in start..start + MAX_BLOCKS {
        let ws = block_writes(seed, height);
        state.apply(&ws, None);
        let point = AppliedPoint { height, log_index: height, block_hash: block_hash(seed, height), root: state.root() };
        // Each block commits signer 1's transaction with nonce `height` (indexed in the batch).
        let txs = [(1u32, height)];
        store.apply_block(GROUP, BlockCommit { point, writes: &ws, block: Some(&height.to_le_bytes()), meta: &[], txs: &txs }).unwrap();
        if height == start + 3 {
            println!("ready");
        }
    }
}

/// Starts a child on `dir`, waits until it has applied a few blocks, lets it run a random
/// while longer, and kills it.
fn run_and_kill(dir: &Path, seed: u64, sync: bool, rng: &mut ChaCha8Rng) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(CHILD_ENV, format!("{},{seed},{}", dir.display(), if sync { "sync" } else { "buffered" }))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The child prints `ready` after its fourth block, or ends (at most MAX_BLOCKS blocks).
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.trim() == "ready" => break,
            Some(Ok(_)) => continue,
            _ => panic!("child for seed {seed} ended before it was ready: {:?}", child.wait()),
        }
    }
    std::thread::sleep(Duration::from_millis(rng.gen_range(0..150)));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// Reopens the store and checks it holds exactly the state after block `h` for its `h`.
fn check_prefix(dir: &Path, seed: u64, at_least: u64) -> u64 {
    let store = Store::open(dir, identity(), &options(Durability::Buffered)).unwrap();
    let (state, point) = store.load_state(GROUP).unwrap(); // checks the root against the applied point
    let point = point.unwrap();
    assert!(point.height >= at_least, "seed {seed}: applied height went back from {at_least} to {}", point.height);
    let mut replay = CommittedState::from_entries(genesis());
    for h in 1..=point.height {
        replay.apply(&block_writes(seed, h), None);
    }
    assert_eq!(point.root, replay.root(), "seed {seed}: height {} does not carry the root of that prefix", point.height);
    assert_eq!(point.block_hash, block_hash(seed, point.height));
    assert_eq!(state.sorted_entries(), replay.sorted_entries(), "seed {seed}: state is not the prefix's");
    assert_eq!(store.block(GROUP, point.height).unwrap(), Some(point.height.to_le_bytes().to_vec()));
    assert_eq!(store.block(GROUP, point.height + 1).unwrap(), None, "seed {seed}: a block past the applied point");
    // The transaction index holds exactly the prefix's transactions.
    assert_eq!(store.tx_height(GROUP, 1, point.height).unwrap(), Some(point.height), "seed {seed}: the last block's transaction");
    assert_eq!(store.tx_height(GROUP, 1, point.height + 1).unwrap(), None, "seed {seed}: a transaction past the applied point");
    point.height
}

#[test]
fn killed_at_random_points_the_store_holds_a_prefix() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let seeds = 12;
    let mut heights = Vec::new();
    for seed in 0..seeds {
        let dir = tempfile::tempdir().unwrap();
        let sync = seed % 2 == 0;
        run_and_kill(dir.path(), seed, sync, &mut rng);
        let first = check_prefix(dir.path(), seed, 4);
        run_and_kill(dir.path(), seed, sync, &mut rng);
        let second = check_prefix(dir.path(), seed, first + 4);
        heights.push((first, second));
    }
    eprintln!("heights reached (first kill, second kill) per seed: {heights:?}");
}
