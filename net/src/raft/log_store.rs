//! The Raft log of one group, with its vote and its committed and purged log ids, in the
//! node's [`Store`]: openraft's `RaftLogReader` and `RaftLogStorage`.
//!
//! Entries are stored under their index, encoded with [`codec`](super::codec) (each record
//! carries its own log id, checked against its key when read). The vote, the committed log id
//! and the last purged log id are `raft_meta` records of the group. Every write goes through
//! the store in one batch, synced under [`occam_store::Durability::Sync`]; it runs on tokio's
//! blocking pool, so an fsync never stalls the runtime's workers (and so the heartbeats of
//! the node's other groups), and openraft awaits it, so writes stay in order.

// openraft's `StorageError` (224 bytes) is what every storage trait method returns; the
// helpers here return it too rather than box it on paths that are rare and fatal.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use occam_store::{GroupId, Store, StoreError};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogReader, StorageIOError};

use super::codec::{CodecError, RaftCodec};
use super::{Entry, LogId, StorageError, TypeConfig, Vote};

/// The `raft_meta` record of the vote.
pub const META_VOTE: &[u8] = b"vote";
/// The `raft_meta` record of the committed log id.
pub const META_COMMITTED: &[u8] = b"committed";
/// The `raft_meta` record of the last purged log id (the name [`Store::purge_log`] writes).
pub const META_PURGED: &[u8] = b"purged";

/// The most entries [`RaftLogReader::limited_get_log_entries`] returns at once (what a
/// replication stream reads per step).
pub const MAX_READ_ENTRIES: usize = 1024;
/// The most encoded bytes [`RaftLogReader::limited_get_log_entries`] returns at once (beyond
/// its first entry), so one AppendEntries request stays well inside a wire frame.
pub const MAX_READ_BYTES: usize = 4 << 20;

/// What a group's log storage holds besides its entries, as [`LogStore::read_state`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistedLogState {
    /// The last vote saved.
    pub vote: Option<Vote>,
    /// The last committed log id saved.
    pub committed: Option<LogId>,
    /// The last purged and the last log id.
    pub log: LogState<TypeConfig>,
}

/// The Raft log storage of one group. Cheap to clone: it is a store handle and a group id,
/// and a clone is the log reader openraft hands to its replication streams.
#[derive(Clone, Debug)]
pub struct LogStore {
    store: Store,
    group: GroupId,
    /// Times each append, if set.
    append_timer: Option<prometheus::Histogram>,
    /// Shows the committed index openraft saves, if set.
    committed_gauge: Option<prometheus::IntGauge>,
}

impl LogStore {
    /// The same log store, timing each append into `append` and showing the committed index
    /// in `committed`.
    pub fn observed(self, append: prometheus::Histogram, committed: prometheus::IntGauge) -> Self {
        LogStore { append_timer: Some(append), committed_gauge: Some(committed), ..self }
    }

    /// The log of `group` in `store` (nothing is read or written until openraft asks).
    pub fn new(store: Store, group: GroupId) -> Self {
        LogStore { store, group, append_timer: None, committed_gauge: None }
    }

    /// The group this log belongs to.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The store it lives in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Reads the entries with indexes in `[start, end)` (`end` `None`: to the last), at most
    /// `max_entries` of them and, past the first, at most `max_bytes` of encoded bytes.
    fn read(&self, start: u64, end: Option<u64>, max_entries: usize, max_bytes: usize) -> Result<Vec<Entry>, StorageError> {
        let range = (Bound::Included(start), end.map_or(Bound::Unbounded, Bound::Excluded));
        if end.is_some_and(|e| e <= start) || max_entries == 0 {
            return Ok(Vec::new());
        }
        let raw = self.store.log_entries(self.group, range, max_entries).map_err(|e| read_error(Some(start), &e))?;
        let mut out = Vec::with_capacity(raw.len());
        let mut bytes = 0usize;
        for (index, record) in raw {
            bytes = bytes.saturating_add(record.len());
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(decode_entry(self.group, index, &record)?);
        }
        Ok(out)
    }

    fn meta<T: RaftCodec>(&self, name: &'static [u8], subject: ErrorSubject<u64>) -> Result<Option<T>, StorageError> {
        let raw =
            self.store.raft_meta(self.group, name).map_err(|e| StorageIOError::new(subject.clone(), ErrorVerb::Read, AnyError::new(&e)))?;
        match raw {
            None => Ok(None),
            Some(bytes) => T::decode(&bytes).map(Some).map_err(|e| {
                let what = format!("group {}: raft_meta record {:?} does not decode: {e}", self.group, String::from_utf8_lossy(name));
                StorageIOError::new(subject, ErrorVerb::Read, AnyError::error(what)).into()
            }),
        }
    }

    /// Reads the stored vote, committed log id and log state directly (for status pages and
    /// tests; openraft uses the trait methods).
    pub fn read_state(&self) -> Result<PersistedLogState, StorageError> {
        let vote = self.meta::<Vote>(META_VOTE, ErrorSubject::Vote)?;
        let committed = self.meta::<Option<LogId>>(META_COMMITTED, ErrorSubject::Store)?.flatten();
        Ok(PersistedLogState { vote, committed, log: self.log_state()? })
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.meta::<LogId>(META_PURGED, ErrorSubject::Logs)?;
        let last = self.store.last_log_index(self.group).map_err(|e| read_error(None, &e))?;
        let last_log_id = match last {
            Some(index) => {
                let entry = self.read(index, index.checked_add(1), 1, usize::MAX)?;
                let entry = entry.into_iter().next().ok_or_else(|| {
                    read_error_msg(Some(index), format!("group {}: the last log entry {index} vanished while read", self.group))
                })?;
                Some(entry.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    /// Runs a store write on tokio's blocking pool and maps its error.
    async fn write<F>(&self, subject: ErrorSubject<u64>, f: F) -> Result<(), StorageError>
    where
        F: FnOnce(&Store, GroupId) -> Result<(), StoreError> + Send + 'static,
    {
        let (store, group) = (self.store.clone(), self.group);
        let res = tokio::task::spawn_blocking(move || f(&store, group)).await;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StorageIOError::new(subject, ErrorVerb::Write, AnyError::new(&e)).into()),
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(join) => {
                Err(StorageIOError::new(subject, ErrorVerb::Write, AnyError::error(format!("store write cancelled: {join}"))).into())
            }
        }
    }
}

fn read_error(index: Option<u64>, e: &StoreError) -> StorageError {
    match index {
        Some(i) => StorageIOError::read_log_at_index(i, AnyError::new(e)).into(),
        None => StorageIOError::read_logs(AnyError::new(e)).into(),
    }
}

fn read_error_msg(index: Option<u64>, msg: String) -> StorageError {
    match index {
        Some(i) => StorageIOError::read_log_at_index(i, AnyError::error(msg)).into(),
        None => StorageIOError::read_logs(AnyError::error(msg)).into(),
    }
}

/// Decodes a stored entry and checks it is the one its key says (pair assertion with
/// `append`, which keys every entry by its own index).
fn decode_entry(group: GroupId, index: u64, record: &[u8]) -> Result<Entry, StorageError> {
    let entry = Entry::decode(record)
        .map_err(|e: CodecError| read_error_msg(Some(index), format!("group {group}: log entry {index} does not decode: {e}")))?;
    if entry.log_id.index != index {
        return Err(read_error_msg(Some(index), format!("group {group}: the log record at index {index} holds entry {}", entry.log_id)));
    }
    Ok(entry)
}

fn start_end(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    /// Every stored entry in `range`: openraft's apply path requires the whole range (it
    /// checks that the entries match it), so this read is bounded by the range itself, which
    /// openraft bounds (committed entries not yet applied; 64 at a time when re-applying at
    /// start). Replication reads through [`Self::limited_get_log_entries`], which is capped.
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = start_end(&range);
        let count = end.map_or(usize::MAX, |e| usize::try_from(e.saturating_sub(start)).unwrap_or(usize::MAX));
        self.read(start, end, count, usize::MAX)
    }

    /// At most [`MAX_READ_ENTRIES`] entries and [`MAX_READ_BYTES`] bytes (but at least one
    /// entry when the range holds one) from `[start, end)`.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        let count = usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX).min(MAX_READ_ENTRIES);
        self.read(start, Some(end), count, MAX_READ_BYTES)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.log_state()
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = vote.encode();
        self.write(ErrorSubject::Vote, move |s, g| s.put_raft_meta(g, META_VOTE, &bytes)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.meta::<Vote>(META_VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = committed.encode();
        if let (Some(g), Some(c)) = (&self.committed_gauge, committed) {
            g.set(i64::try_from(c.index).unwrap_or(i64::MAX));
        }
        self.write(ErrorSubject::Store, move |s, g| s.put_raft_meta(g, META_COMMITTED, &bytes)).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.meta::<Option<LogId>>(META_COMMITTED, ErrorSubject::Store)?.flatten())
    }

    /// Writes the entries in one batch and reports them flushed once the write returned
    /// (synced under [`occam_store::Durability::Sync`]; in RocksDB's write-ahead log only,
    /// under `Buffered`).
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut records: Vec<(u64, Vec<u8>)> = Vec::new();
        for e in entries {
            if let Some((last, _)) = records.last() {
                // openraft appends consecutive entries; a hole would break its log invariants.
                assert_eq!(e.log_id.index, last + 1, "appended entries are consecutive");
            }
            records.push((e.log_id.index, e.encode()));
        }
        if records.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        let timer = self.append_timer.as_ref().map(prometheus::Histogram::start_timer);
        let res = self.write(ErrorSubject::Logs, move |s, g| s.append_log(g, records.iter().map(|(i, b)| (*i, b.as_slice())))).await;
        drop(timer);
        match &res {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        res
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let from = log_id.index;
        self.write(ErrorSubject::Logs, move |s, g| s.truncate_log(g, from)).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = log_id.encode();
        let upto = log_id.index;
        self.write(ErrorSubject::Logs, move |s, g| s.purge_log(g, upto, &bytes)).await
    }
}
