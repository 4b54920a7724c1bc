use std::collections::BTreeMap;
use std::path::Path;

use occam_engine::prelude::{CommittedState, Key, StateRoot, Value, WriteSet};

use super::*;

fn key(i: u64) -> Key {
    Key::from_parts(1, i, 0)
}

fn opts() -> StoreOptions {
    StoreOptions { durability: Durability::Buffered, memory_budget_bytes: 8 << 20 }
}

fn id() -> StoreIdentity {
    StoreIdentity::new(7, 2)
}

/// Every file of the directory except RocksDB's info logs, with its bytes: what "nothing was
/// overwritten" compares.
fn snapshot_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().starts_with("LOG"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect()
}

fn writes(entries: &[(Key, Option<Value>)]) -> WriteSet {
    WriteSet::from_entries(entries.to_vec())
}

fn point(height: u64, root: StateRoot) -> AppliedPoint {
    AppliedPoint { height, log_index: height + 10, block_hash: [height as u8; 32], root }
}

#[test]
fn transactions_are_indexed_with_their_block_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), id(), &opts()).unwrap();
        let mut state = CommittedState::from_entries(Vec::new());
        store.write_genesis(4, &[]).unwrap();
        for h in 1..=3u64 {
            let ws = writes(&[(key(h), Some(Value::from_u64(h)))]);
            state.apply(&ws, None);
            let txs: Vec<(u32, u64)> = (0..h).map(|n| (h as u32, n)).collect();
            store.apply_block(4, BlockCommit { point: point(h, state.root()), writes: &ws, block: None, meta: &[], txs: &txs }).unwrap();
        }
        // A refused block indexes nothing.
        let ws = writes(&[]);
        let txs = [(9u32, 0u64)];
        store.apply_block(4, BlockCommit { point: point(9, state.root()), writes: &ws, block: None, meta: &[], txs: &txs }).unwrap_err();
    }
    let store = Store::open(dir.path(), id(), &opts()).unwrap();
    assert_eq!(store.tx_height(4, 3, 2).unwrap(), Some(3));
    assert_eq!(store.tx_height(4, 2, 0).unwrap(), Some(2));
    assert_eq!(store.tx_height(4, 1, 0).unwrap(), Some(1));
    assert_eq!(store.tx_height(4, 1, 1).unwrap(), None, "a nonce no block committed");
    assert_eq!(store.tx_height(4, 9, 0).unwrap(), None, "the refused block's transaction");
    assert_eq!(store.tx_height(5, 3, 2).unwrap(), None, "another group's index");
}

#[test]
fn blocks_apply_in_order_and_reload_with_their_root() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), id(), &opts()).unwrap();
    let genesis: Vec<(Key, Value)> = (0..100).map(|i| (key(i), Value::from_u64(1000))).collect();
    let g = store.write_genesis(3, &genesis).unwrap();
    let mut mirror = CommittedState::from_entries(genesis.clone());
    assert_eq!(g.root, mirror.root());

    for h in 1..=5u64 {
        let ws = writes(&[(key(h), Some(Value::from_u64(h))), (key(50 + h), None), (key(1000 + h), Some(Value::from_slice(b"new")))]);
        mirror.apply(&ws, None);
        store
            .apply_block(3, BlockCommit { point: point(h, mirror.root()), writes: &ws, block: Some(&h.to_le_bytes()), meta: &[], txs: &[] })
            .unwrap();
    }
    // Out of order and repeated blocks are refused, and change nothing.
    let ws = writes(&[(key(1), Some(Value::from_u64(0)))]);
    for h in [5, 7] {
        let err = store
            .apply_block(3, BlockCommit { point: point(h, mirror.root()), writes: &ws, block: None, meta: &[], txs: &[] })
            .unwrap_err();
        assert!(matches!(err, StoreError::OutOfOrder { height, applied: 5, .. } if height == h), "{err}");
    }
    assert!(matches!(store.write_genesis(3, &genesis), Err(StoreError::OutOfOrder { .. })));
    drop(store);

    let store = Store::open(dir.path(), id(), &opts()).unwrap();
    let (state, p) = store.load_state(3).unwrap();
    assert_eq!(p, Some(point(5, mirror.root())));
    assert_eq!(state.sorted_entries(), mirror.sorted_entries());
    assert_eq!(store.block(3, 4).unwrap(), Some(4u64.to_le_bytes().to_vec()));
    assert_eq!(store.value(3, &key(51)).unwrap(), None);
    assert_eq!(store.value(3, &key(1)).unwrap(), Some(Value::from_u64(1)));
    // Other groups are untouched.
    assert_eq!(store.load_state(4).unwrap().1, None);
    assert!(store.load_state(4).unwrap().0.is_empty());
}

#[test]
fn certificates_and_what_lacks_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), id(), &opts()).unwrap();
    store.write_genesis(0, &[]).unwrap();
    let mut state = CommittedState::new();
    for h in 1..=4u64 {
        let ws = writes(&[(key(h), Some(Value::from_u64(h)))]);
        state.apply(&ws, None);
        store.apply_block(0, BlockCommit { point: point(h, state.root()), writes: &ws, block: Some(b"b"), meta: &[], txs: &[] }).unwrap();
    }
    store.put_certificate(0, 1, b"c1").unwrap();
    store.put_certificate(0, 3, b"c3").unwrap();
    assert_eq!(store.certificate(0, 3).unwrap(), Some(b"c3".to_vec()));
    assert_eq!(store.last_certified(0).unwrap(), Some(3));
    assert_eq!(store.uncertified(0, 10).unwrap(), vec![2, 4]);
    assert_eq!(store.uncertified(0, 1).unwrap(), vec![2]);
    store.prune_blocks(0, 3).unwrap();
    assert_eq!(store.block(0, 2).unwrap(), None);
    assert_eq!(store.certificate(0, 1).unwrap(), None);
    assert_eq!(store.uncertified(0, 10).unwrap(), vec![4]);
}

#[test]
fn raft_log_appends_truncates_and_purges() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), id(), &opts()).unwrap();
    let body = |i: u64| format!("entry {i}").into_bytes();
    let bodies: Vec<(u64, Vec<u8>)> = (1..=300).map(|i| (i, body(i))).collect();
    store.append_log(1, bodies.iter().map(|(i, b)| (*i, b.as_slice()))).unwrap();
    store.append_log(2, [(1, b"other group".as_slice())]).unwrap();
    assert_eq!(store.last_log_index(1).unwrap(), Some(300));
    assert_eq!(store.last_log_index(2).unwrap(), Some(1));
    assert_eq!(store.last_log_index(0).unwrap(), None);

    let got = store.log_entries(1, 255..=257, 100).unwrap();
    assert_eq!(got, vec![(255, body(255)), (256, body(256)), (257, body(257))]);
    assert_eq!(store.log_entries(1, 290.., 100).unwrap().len(), 11);
    assert_eq!(store.log_entries(1, .., 7).unwrap().len(), 7);
    assert_eq!(store.log_entries(1, 10..10, 7).unwrap(), vec![]);

    store.truncate_log(1, 201).unwrap();
    assert_eq!(store.last_log_index(1).unwrap(), Some(200));
    store.purge_log(1, 100, b"purged-at-100").unwrap();
    assert_eq!(store.log_entries(1, .., 1000).unwrap().first().map(|e| e.0), Some(101));
    assert_eq!(store.raft_meta(1, b"purged").unwrap(), Some(b"purged-at-100".to_vec()));
    store.put_raft_meta(1, b"vote", b"v").unwrap();
    assert_eq!(store.raft_meta(1, b"vote").unwrap(), Some(b"v".to_vec()));
    assert_eq!(store.raft_meta(2, b"vote").unwrap(), None);
    assert_eq!(store.log_entries(2, .., 10).unwrap(), vec![(1, b"other group".to_vec())]);
}

#[test]
fn snapshots_install_only_with_their_root() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), id(), &opts()).unwrap();
    store.write_genesis(5, &[(key(1), Value::from_u64(1)), (key(2), Value::from_u64(2))]).unwrap();
    let entries: Vec<(Key, Value)> = (10..20).map(|i| (key(i), Value::from_u64(i))).collect();
    let root = CommittedState::from_entries(entries.clone()).root();

    let err = store.install_snapshot(5, point(40, StateRoot([9; 32])), &entries, &[]).unwrap_err();
    assert!(matches!(err, StoreError::SnapshotRoot { height: 40, .. }), "{err}");
    assert_eq!(store.applied(5).unwrap().unwrap().height, 0);
    assert_eq!(store.value(5, &key(1)).unwrap(), Some(Value::from_u64(1)));

    // Duplicate keys would make the entries disagree with the state they build.
    let mut dup = entries.clone();
    dup.push(entries[0].clone());
    assert!(store.install_snapshot(5, point(40, root), &dup, &[]).is_err());

    let state = store.install_snapshot(5, point(40, root), &entries, &[]).unwrap();
    assert_eq!(state.root(), root);
    let (loaded, p) = store.load_state(5).unwrap();
    assert_eq!(p.unwrap().height, 40);
    assert_eq!(loaded.sorted_entries(), entries);
}

#[test]
fn another_chains_or_nodes_store_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), id(), &opts()).unwrap();
        store.write_genesis(0, &[(key(1), Value::from_u64(1))]).unwrap();
        store.sync_wal().unwrap();
    }
    let before = snapshot_files(dir.path());
    let other_chain = StoreIdentity::new(8, 2);
    let other_node = StoreIdentity::new(7, 3);
    let other_schema = StoreIdentity { schema: SCHEMA_VERSION + 1, ..id() };
    for wrong in [other_chain, other_node, other_schema] {
        let err = Store::open(dir.path(), wrong, &opts()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::WrongIdentity { found, .. } if found == id()), "{msg}");
        assert!(msg.contains("belongs to chain 7 node 2") && msg.contains(&wrong.to_string()), "{msg}");
    }
    assert_eq!(snapshot_files(dir.path()), before, "a refused open changed the store's files");
    assert_eq!(Store::read_identity(dir.path(), &opts()).unwrap(), id());
    Store::open(dir.path(), id(), &opts()).unwrap();
}

#[test]
fn directories_that_are_not_stores_are_refused_untouched() {
    // Files but no database.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    let err = Store::open(dir.path(), id(), &opts()).unwrap_err();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
    assert!(err.to_string().contains("no CURRENT file"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // A RocksDB database of someone else: no identity record.
    let dir = tempfile::tempdir().unwrap();
    {
        let mut o = rocksdb::Options::default();
        o.create_if_missing(true);
        o.create_missing_column_families(true);
        let db = rocksdb::DB::open_cf(&o, dir.path(), ["meta"]).unwrap();
        db.put(b"k", b"v").unwrap();
    }
    let before = snapshot_files(dir.path());
    let err = Store::open(dir.path(), id(), &opts()).unwrap_err();
    assert!(matches!(err, StoreError::NoIdentity { .. }), "{err}");
    assert_eq!(snapshot_files(dir.path()), before);

    // A store that lost its CURRENT file (a truncated copy).
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), id(), &opts()).unwrap());
    std::fs::remove_file(dir.path().join("CURRENT")).unwrap();
    let before = snapshot_files(dir.path());
    assert!(matches!(Store::open(dir.path(), id(), &opts()), Err(StoreError::NotAStore { .. })));
    assert_eq!(snapshot_files(dir.path()), before);
}

#[test]
fn corrupted_stores_are_refused() {
    // A store whose MANIFEST is damaged: RocksDB refuses it, and so do we.
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), id(), &opts()).unwrap());
    let manifest = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("MANIFEST"))
        .unwrap();
    std::fs::write(&manifest, b"garbage, not a manifest").unwrap();
    let before = snapshot_files(dir.path());
    let err = Store::open(dir.path(), id(), &opts()).unwrap_err();
    // RocksDB lists no column families from a damaged manifest, or fails to read it.
    assert!(matches!(err, StoreError::NoIdentity { .. } | StoreError::Rocks { .. }), "{err}");
    assert_eq!(snapshot_files(dir.path()), before);

    // A state changed behind the store's back: the root no longer matches.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), id(), &opts()).unwrap();
        store.write_genesis(1, &[(key(1), Value::from_u64(1)), (key(2), Value::from_u64(2))]).unwrap();
        let cf = store.db.cf_handle(layout::CF_STATE).unwrap();
        store.db.put_cf(cf, layout::state_key(1, &key(2)), Value::from_u64(3).as_bytes()).unwrap();
    }
    let store = Store::open(dir.path(), id(), &opts()).unwrap();
    let err = store.load_state(1).unwrap_err();
    assert!(matches!(err, StoreError::RootMismatch { group: 1, height: 0, .. }), "{err}");
    assert!(err.to_string().contains("damaged"), "{err}");
}

#[test]
fn a_store_is_locked_to_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let _store = Store::open(dir.path(), id(), &opts()).unwrap();
    let err = Store::open(dir.path(), id(), &opts()).unwrap_err();
    assert!(matches!(err, StoreError::Rocks { .. }), "{err}");
    assert!(err.to_string().to_lowercase().contains("lock"), "{err}");
}

#[test]
fn consecutive_blocks_apply_as_one_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), id(), &opts()).unwrap();
    store.write_genesis(2, &[(key(1), Value::from_u64(1))]).unwrap();
    let mut state = CommittedState::from_entries([(key(1), Value::from_u64(1))]);
    let sets: Vec<WriteSet> =
        (0..3u64).map(|i| writes(&[(key(1), Some(Value::from_u64(10 + i))), (key(2 + i), Some(Value::from_u64(i)))])).collect();
    let mut points = Vec::new();
    for (h, ws) in sets.iter().enumerate() {
        state.apply(ws, None);
        points.push(point(h as u64 + 1, state.root()));
    }
    let commits: Vec<BlockCommit<'_>> =
        sets.iter().zip(&points).map(|(ws, p)| BlockCommit { point: *p, writes: ws, block: None, meta: &[], txs: &[] }).collect();
    // A gap anywhere refuses the whole group and writes nothing.
    let gapped = [commits[0], commits[2]];
    assert!(matches!(store.apply_blocks(2, &gapped), Err(StoreError::OutOfOrder { height: 3, applied: 1, .. })));
    assert_eq!(store.applied(2).unwrap().unwrap().height, 0);
    assert_eq!(store.value(2, &key(2)).unwrap(), None);

    store.apply_blocks(2, &commits).unwrap();
    let (loaded, p) = store.load_state(2).unwrap();
    assert_eq!(p, Some(points[2]));
    assert_eq!(loaded.sorted_entries(), state.sorted_entries());
    assert_eq!(store.value(2, &key(1)).unwrap(), Some(Value::from_u64(12)), "the later block's value wins");
    store.apply_blocks(2, &[]).unwrap();
}
