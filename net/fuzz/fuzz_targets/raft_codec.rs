#![no_main]
//! The Raft codec: the first byte picks a value type, the rest is decoded as it. Decoding
//! never panics, and whatever decodes re-encodes to exactly the same bytes (the codec accepts
//! only canonical encodings).

use libfuzzer_sys::fuzz_target;
use occam_net::raft::codec::{AppliedState, RaftCodec, StateSnapshot};
use occam_net::raft::{
    AppendEntriesRequest, AppendEntriesResponse, Entry, InstallSnapshotRequest, InstallSnapshotResponse, LogId, Membership, SnapshotMeta,
    StoredMembership, Vote, VoteRequest, VoteResponse,
};

fn check<T: RaftCodec>(bytes: &[u8]) {
    if let Ok(v) = T::decode(bytes) {
        assert_eq!(v.encode(), bytes, "a decoded value re-encodes to other bytes");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    match which % 15 {
        0 => check::<LogId>(bytes),
        1 => check::<Option<LogId>>(bytes),
        2 => check::<Vote>(bytes),
        3 => check::<Membership>(bytes),
        4 => check::<StoredMembership>(bytes),
        5 => check::<Entry>(bytes),
        6 => check::<AppendEntriesRequest>(bytes),
        7 => check::<AppendEntriesResponse>(bytes),
        8 => check::<VoteRequest>(bytes),
        9 => check::<VoteResponse>(bytes),
        10 => check::<SnapshotMeta>(bytes),
        11 => check::<InstallSnapshotRequest>(bytes),
        12 => check::<InstallSnapshotResponse>(bytes),
        13 => check::<AppliedState>(bytes),
        _ => check::<StateSnapshot>(bytes),
    }
});
