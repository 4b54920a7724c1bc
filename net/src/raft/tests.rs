//! The Raft glue against the real store: openraft's own storage suite, restarts, and the
//! state machine's blocks and snapshots.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::path::Path;

use occam_engine::key::Key;
use occam_engine::prelude::{CommittedState, Value, WriteSet};
use occam_store::{AppliedPoint, Durability, GroupId, Store, StoreIdentity, StoreOptions};
use openraft::storage::{RaftLogReaderExt, RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, LeaderId, RaftLogReader, RaftSnapshotBuilder};

use super::codec::{RaftCodec, StateSnapshot};
use super::log_store::{LogStore, PersistedLogState, MAX_READ_BYTES, MAX_READ_ENTRIES};
use super::state_machine::{epoch_members, AppliedBlock, BlockApplier, BlockInput, OpenError, StateMachine};
use super::*;

const GROUP: GroupId = 3;

fn options() -> StoreOptions {
    StoreOptions { durability: Durability::Buffered, memory_budget_bytes: 4 << 20 }
}

fn open(dir: &Path) -> Store {
    Store::open(dir, StoreIdentity::new(7, 1), &options()).expect("store opens")
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId { leader_id: CommittedLeaderId::new(term, 1), index }
}

fn key(i: u64) -> Key {
    Key::from_parts(1, i, 0)
}

/// A block for [`KvApplier`]: `count u32 ‖ (key 32 B ‖ 0 | 1 ‖ u64 LE)…`; empty bytes are
/// "no block".
fn kv_block(writes: &[(u64, Option<u64>)]) -> RaftRequest {
    let mut b = (writes.len() as u32).to_le_bytes().to_vec();
    for (k, v) in writes {
        b.extend_from_slice(&key(*k).0);
        match v {
            None => b.push(0),
            Some(v) => {
                b.push(1);
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    RaftRequest::new(b)
}

#[derive(Debug, thiserror::Error)]
#[error("malformed test block")]
pub(crate) struct BadBlock;

/// A test applier: a block is a list of puts and deletes of `u64` values, applied to an
/// in-memory [`CommittedState`] whose root becomes the block's root.
#[derive(Debug, Default)]
pub(crate) struct KvApplier {
    state: CommittedState,
    restored_at: Option<AppliedPoint>,
    /// The validator-set epoch and members each block was applied in.
    epochs: Vec<(u64, Vec<NodeId>)>,
}

impl BlockApplier for KvApplier {
    type Error = BadBlock;

    fn restore(&mut self, _group: GroupId, state: CommittedState, point: AppliedPoint) {
        assert_eq!(state.root(), point.root, "restored state matches its point");
        self.state = state;
        self.restored_at = Some(point);
    }

    fn apply(&mut self, input: BlockInput<'_>) -> Result<Option<AppliedBlock>, BadBlock> {
        let bytes = &input.request.bytes;
        if bytes.is_empty() {
            return Ok(None);
        }
        self.epochs.push((input.epoch, input.members.to_vec()));
        let n = u32::from_le_bytes(bytes.get(..4).ok_or(BadBlock)?.try_into().unwrap()) as usize;
        let mut rest = &bytes[4..];
        let mut writes = Vec::with_capacity(n.min(rest.len() / 33));
        for _ in 0..n {
            let k = Key(rest.get(..32).ok_or(BadBlock)?.try_into().unwrap());
            let v = match rest.get(32).ok_or(BadBlock)? {
                0 => {
                    rest = &rest[33..];
                    None
                }
                1 => {
                    let v = u64::from_le_bytes(rest.get(33..41).ok_or(BadBlock)?.try_into().unwrap());
                    rest = &rest[41..];
                    Some(Value::from_u64(v))
                }
                _ => return Err(BadBlock),
            };
            writes.push((k, v));
        }
        if !rest.is_empty() {
            return Err(BadBlock);
        }
        let writes = WriteSet::from_entries(writes);
        self.state.apply(&writes, None);
        let block_hash = *blake3::hash(bytes).as_bytes();
        Ok(Some(AppliedBlock { writes, block_hash, root: self.state.root(), block: Some(bytes.clone()), txs: Vec::new() }))
    }
}

/// Builds a fresh store in a temporary directory, with an empty genesis for [`GROUP`].
struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine<KvApplier>, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine<KvApplier>), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        store.write_genesis(GROUP, &[]).expect("genesis");
        let sm = StateMachine::open(store.clone(), GROUP, KvApplier::default()).expect("state machine opens");
        Ok((dir, LogStore::new(store, GROUP), sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft's storage suite passes");
}

fn entries(from: u64, to: u64) -> Vec<Entry> {
    (from..=to)
        .map(|i| {
            let payload = match i % 3 {
                0 => EntryPayload::Blank,
                1 => EntryPayload::Normal(RaftRequest::new(vec![i as u8; 1 + i as usize])),
                _ => EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1, 2, 3])], BTreeSet::from([9]))),
            };
            Entry { log_id: log_id(1 + i / 10, i), payload }
        })
        .collect()
}

#[tokio::test]
async fn log_vote_and_committed_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let vote = Vote { leader_id: LeaderId::new(4, 2), committed: true };
    {
        let store = open(dir.path());
        let mut log = LogStore::new(store.clone(), GROUP);
        // Another group of the same store is untouched by all of this.
        let mut other = LogStore::new(store, GROUP + 1);
        other.blocking_append(entries(0, 2)).await.unwrap();

        log.blocking_append(entries(0, 20)).await.unwrap();
        log.save_vote(&vote).await.unwrap();
        log.save_committed(Some(log_id(2, 15))).await.unwrap();
        log.purge(log_id(1, 3)).await.unwrap();
        log.truncate(log_id(2, 18)).await.unwrap();
        // A replaced suffix: a new leader's entries at 18 and 19.
        let mut newer = entries(18, 19);
        for e in &mut newer {
            e.log_id = log_id(5, e.log_id.index);
        }
        log.blocking_append(newer).await.unwrap();
    }

    let store = open(dir.path());
    let mut log = LogStore::new(store.clone(), GROUP);
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 15)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(5, 19)));
    let got = log.get_log_entries(4..18).await.unwrap();
    assert_eq!(got, entries(4, 17));
    assert_eq!(log.try_get_log_entries(0..4).await.unwrap(), vec![]);
    assert_eq!(
        log.try_get_log_entries(18..).await.unwrap().iter().map(|e| e.log_id).collect::<Vec<_>>(),
        vec![log_id(5, 18), log_id(5, 19)]
    );
    assert_eq!(log.read_state().unwrap(), PersistedLogState { vote: Some(vote), committed: Some(log_id(2, 15)), log: state });

    let mut other = LogStore::new(store, GROUP + 1);
    assert_eq!(other.get_log_entries(0..3).await.unwrap(), entries(0, 2));
    assert_eq!(other.read_vote().await.unwrap(), None);
    assert_eq!(other.get_log_state().await.unwrap().last_purged_log_id, None);

    // Purging everything leaves the purged id as the last log id.
    log.purge(log_id(5, 19)).await.unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(5, 19)), Some(log_id(5, 19))));
}

#[tokio::test]
async fn replication_reads_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogStore::new(open(dir.path()), GROUP);
    let n = MAX_READ_ENTRIES as u64 + 100;
    let small: Vec<Entry> = (1..=n).map(|i| Entry { log_id: log_id(1, i), payload: EntryPayload::Blank }).collect();
    log.blocking_append(small).await.unwrap();
    assert_eq!(log.limited_get_log_entries(1, n + 1).await.unwrap().len(), MAX_READ_ENTRIES);
    assert_eq!(log.try_get_log_entries(1..n + 1).await.unwrap().len(), n as usize, "the apply path gets its whole range");

    // Big blocks: the byte budget cuts the read, but never below one entry.
    let big = 3 << 20;
    let blocks: Vec<Entry> =
        (n + 1..=n + 4).map(|i| Entry { log_id: log_id(2, i), payload: EntryPayload::Normal(RaftRequest::new(vec![1; big])) }).collect();
    log.blocking_append(blocks).await.unwrap();
    let got = log.limited_get_log_entries(n + 1, n + 5).await.unwrap();
    assert_eq!(got.len(), MAX_READ_BYTES / big);
    assert_eq!(got[0].log_id, log_id(2, n + 1));
}

#[tokio::test]
async fn blocks_apply_in_one_batch_with_the_raft_record_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let genesis = vec![(key(1), Value::from_u64(100)), (key(2), Value::from_u64(200))];
    let membership = Membership::new(vec![BTreeSet::from([1, 2, 3])], ());
    let (point, root_after_two) = {
        let store = open(dir.path());
        assert!(matches!(StateMachine::open(store.clone(), GROUP, KvApplier::default()), Err(OpenError::NoGenesis { group: GROUP })));
        let g = store.write_genesis(GROUP, &genesis).unwrap();
        let mut sm = StateMachine::open(store.clone(), GROUP, KvApplier::default()).unwrap();
        assert_eq!(sm.with_applier(|a| a.restored_at), Some(g));

        let e = |i: u64, payload| Entry { log_id: log_id(1, i), payload };
        let replies = sm
            .apply(vec![
                e(1, EntryPayload::Membership(membership.clone())),
                e(2, EntryPayload::Blank),
                e(3, EntryPayload::Normal(kv_block(&[(1, Some(101)), (3, Some(3))]))),
                e(4, EntryPayload::Normal(RaftRequest::new(vec![]))),
                e(5, EntryPayload::Normal(kv_block(&[(2, None)]))),
            ])
            .await
            .unwrap();
        assert_eq!(replies.iter().map(|r| r.height).collect::<Vec<_>>(), vec![0, 0, 1, 1, 2]);
        assert_eq!(replies[0].root, g.root);
        let point = sm.applied_point();
        assert_eq!((point.height, point.log_index), (2, 5));
        assert_eq!(replies[4].root, point.root);
        assert_eq!(store.applied(GROUP).unwrap(), Some(point));
        assert_eq!(store.value(GROUP, &key(1)).unwrap(), Some(Value::from_u64(101)));
        assert_eq!(store.value(GROUP, &key(2)).unwrap(), None);
        assert_eq!(store.block(GROUP, 1).unwrap(), Some(kv_block(&[(1, Some(101)), (3, Some(3))]).bytes));

        // Both blocks were applied in the epoch of the membership at index 1, recorded with its
        // voters.
        assert_eq!(sm.with_applier(|a| a.epochs.clone()), vec![(1, vec![1, 2, 3]); 2]);
        assert_eq!(epoch_members(&store, GROUP, 1).unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(epoch_members(&store, GROUP, 2).unwrap(), None);

        // A blank entry after the last block moves only the Raft record.
        let replies = sm.apply(vec![e(6, EntryPayload::Blank)]).await.unwrap();
        assert_eq!(replies[0].height, 2);
        (point, replies[0].root)
    };

    let store = open(dir.path());
    let mut sm = StateMachine::open(store.clone(), GROUP, KvApplier::default()).unwrap();
    let (last, m) = sm.applied_state().await.unwrap();
    assert_eq!(last, Some(log_id(1, 6)));
    assert_eq!(m, StoredMembership::new(Some(log_id(1, 1)), membership));
    assert_eq!(sm.applied_point(), point);
    assert_eq!(root_after_two, point.root);
    assert_eq!(sm.with_applier(|a| (a.restored_at, a.state.root())), (Some(point), point.root));

    // A joint membership (3 replaced by 4) starts an epoch of both configs' voters; the
    // uniform one after it, an epoch of the new voters. Blocks name the epoch in force.
    let joint = Membership::new(vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([1, 2, 4])], ());
    let uniform = Membership::new(vec![BTreeSet::from([1, 2, 4])], ());
    let e = |i: u64, payload| Entry { log_id: log_id(1, i), payload };
    sm.apply(vec![
        e(7, EntryPayload::Membership(joint)),
        e(8, EntryPayload::Normal(kv_block(&[(1, Some(7))]))),
        e(9, EntryPayload::Membership(uniform)),
        e(10, EntryPayload::Normal(kv_block(&[(1, Some(8))]))),
    ])
    .await
    .unwrap();
    assert_eq!(sm.with_applier(|a| a.epochs.clone()), vec![(7, vec![1, 2, 3, 4]), (9, vec![1, 2, 4])]);
    assert_eq!(epoch_members(&store, GROUP, 7).unwrap(), Some(vec![1, 2, 3, 4]));

    // A malformed block is an error of the group (openraft stops it), not a panic.
    let err =
        sm.apply(vec![Entry { log_id: log_id(2, 11), payload: EntryPayload::Normal(RaftRequest::new(vec![1, 0, 0])) }]).await.unwrap_err();
    assert!(err.to_string().contains("malformed test block"), "{err}");
}

#[tokio::test]
async fn snapshots_carry_the_state_and_a_wrong_root_is_refused() {
    let (dir_l, dir_f) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let genesis = vec![(key(1), Value::from_u64(1))];
    let (store_l, store_f) = (open(dir_l.path()), open(dir_f.path()));
    store_l.write_genesis(GROUP, &genesis).unwrap();
    store_f.write_genesis(GROUP, &genesis).unwrap();
    let mut leader = StateMachine::open(store_l.clone(), GROUP, KvApplier::default()).unwrap();
    let mut follower = StateMachine::open(store_f.clone(), GROUP, KvApplier::default()).unwrap();

    let membership = Membership::new(vec![BTreeSet::from([1, 2])], ());
    let mut batch = vec![Entry { log_id: log_id(1, 1), payload: EntryPayload::Membership(membership.clone()) }];
    for i in 2..=40u64 {
        batch.push(Entry {
            log_id: log_id(1, i),
            payload: EntryPayload::Normal(kv_block(&[(i % 7, Some(i)), (100 + i, Some(i * i)), (1, None)])),
        });
    }
    leader.apply(batch).await.unwrap();
    let snap = leader.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id, Some(log_id(1, 40)));
    assert_eq!(snap.meta.last_membership, StoredMembership::new(Some(log_id(1, 1)), membership));
    assert_eq!(leader.get_current_snapshot().await.unwrap().unwrap().meta, snap.meta);
    let data = snap.snapshot.into_inner();

    // Tampered state: the store refuses it against the claimed root, and nothing changes.
    let mut bad = StateSnapshot::decode(&data).unwrap();
    bad.entries[0].1 = Value::from_u64(666);
    let err = follower.install_snapshot(&snap.meta, Box::new(Cursor::new(bad.encode()))).await.unwrap_err();
    assert!(err.to_string().contains("claims root"), "{err}");
    // Metadata that does not match the bytes is refused too.
    let mut other_meta = snap.meta.clone();
    other_meta.last_log_id = Some(log_id(1, 41));
    assert!(follower.install_snapshot(&other_meta, Box::new(Cursor::new(data.clone()))).await.is_err());
    // So are bytes that do not decode.
    assert!(follower.install_snapshot(&snap.meta, Box::new(Cursor::new(data[..data.len() - 1].to_vec()))).await.is_err());
    assert_eq!(follower.applied_state().await.unwrap().0, None);
    assert_eq!(store_f.load_state(GROUP).unwrap().0.sorted_entries(), genesis);
    assert!(follower.get_current_snapshot().await.unwrap().is_none());

    let mut rx = follower.begin_receiving_snapshot().await.unwrap();
    rx.get_mut().extend_from_slice(&data);
    follower.install_snapshot(&snap.meta, rx).await.unwrap();
    assert_eq!(follower.applied_state().await.unwrap(), leader.applied_state().await.unwrap());
    assert_eq!(follower.applied_point(), leader.applied_point());
    assert_eq!(store_f.load_state(GROUP).unwrap().0.sorted_entries(), store_l.load_state(GROUP).unwrap().0.sorted_entries());
    assert_eq!(follower.with_applier(|a| a.state.root()), leader.applied_point().root);
    assert_eq!(follower.get_current_snapshot().await.unwrap().unwrap().meta, snap.meta);
    // The snapshot's membership is an epoch the follower now knows.
    assert_eq!(epoch_members(&store_f, GROUP, 1).unwrap(), Some(vec![1, 2]));

    // Both go on applying the same blocks to the same roots, in the same epoch.
    let next = vec![Entry { log_id: log_id(2, 41), payload: EntryPayload::Normal(kv_block(&[(5, Some(55))])) }];
    let a = leader.apply(next.clone()).await.unwrap();
    let b = follower.apply(next).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(follower.with_applier(|a| a.epochs.clone()), vec![(1, vec![1, 2])]);

    // And the installed state survives a restart of the follower.
    drop(follower);
    let point = leader.applied_point();
    drop(store_f);
    let follower = StateMachine::open(open(dir_f.path()), GROUP, KvApplier::default()).unwrap();
    assert_eq!(follower.applied_point(), point);
}
