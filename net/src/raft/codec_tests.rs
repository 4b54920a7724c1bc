use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use occam_engine::key::Key;
use occam_engine::prelude::{StateRoot, Value};
use occam_store::AppliedPoint;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{CommittedLeaderId, EntryPayload, LeaderId};
use proptest::prelude::*;

use super::*;
use crate::raft::{Entry, LogId, Membership, RaftRequest, SnapshotMeta, StoredMembership, TypeConfig, Vote};

type AppendReq = AppendEntriesRequest<TypeConfig>;
type SnapReq = InstallSnapshotRequest<TypeConfig>;

fn log_id() -> impl Strategy<Value = LogId> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(t, n, i)| LogId { leader_id: CommittedLeaderId::new(t, n), index: i })
}

fn vote() -> impl Strategy<Value = Vote> {
    (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(t, n, c)| Vote { leader_id: LeaderId::new(t, n), committed: c })
}

fn membership() -> impl Strategy<Value = Membership> {
    let configs = prop::collection::vec(prop::collection::btree_set(0..32u64, 0..5), 0..=2);
    (configs, prop::collection::btree_set(0..64u64, 0..4)).prop_map(|(configs, learners)| {
        let learners: BTreeSet<u64> = learners.into_iter().filter(|l| !configs.iter().any(|c| c.contains(l))).collect();
        Membership::new(configs, learners)
    })
}

fn stored_membership() -> impl Strategy<Value = StoredMembership> {
    (prop::option::of(log_id()), membership()).prop_map(|(l, m)| StoredMembership::new(l, m))
}

fn entry() -> impl Strategy<Value = Entry> {
    let payload = prop_oneof![
        Just(EntryPayload::Blank),
        prop::collection::vec(any::<u8>(), 0..80).prop_map(|b| EntryPayload::Normal(RaftRequest::new(b))),
        membership().prop_map(EntryPayload::Membership),
    ];
    (log_id(), payload).prop_map(|(log_id, payload)| Entry { log_id, payload })
}

fn append_request() -> impl Strategy<Value = AppendReq> {
    (vote(), prop::option::of(log_id()), prop::collection::vec(entry(), 0..5), prop::option::of(log_id()))
        .prop_map(|(vote, prev_log_id, entries, leader_commit)| AppendEntriesRequest { vote, prev_log_id, entries, leader_commit })
}

fn append_response() -> impl Strategy<Value = AppendEntriesResponse<u64>> {
    // The response is not `Clone`, so it cannot be a `Just`: pick the variant by a tag.
    (0..4u8, prop::option::of(log_id()), vote()).prop_map(|(tag, matching, v)| match tag {
        0 => AppendEntriesResponse::Success,
        1 => AppendEntriesResponse::PartialSuccess(matching),
        2 => AppendEntriesResponse::Conflict,
        _ => AppendEntriesResponse::HigherVote(v),
    })
}

fn snapshot_meta() -> impl Strategy<Value = SnapshotMeta> {
    (prop::option::of(log_id()), stored_membership(), "\\PC{0,40}").prop_map(|(last_log_id, last_membership, snapshot_id)| SnapshotMeta {
        last_log_id,
        last_membership,
        snapshot_id,
    })
}

fn snapshot_request() -> impl Strategy<Value = SnapReq> {
    (vote(), snapshot_meta(), any::<u64>(), prop::collection::vec(any::<u8>(), 0..80), any::<bool>())
        .prop_map(|(vote, meta, offset, data, done)| InstallSnapshotRequest { vote, meta, offset, data, done })
}

fn applied_state() -> impl Strategy<Value = AppliedState> {
    (prop::option::of(log_id()), stored_membership()).prop_map(|(last_applied, membership)| AppliedState { last_applied, membership })
}

fn state_snapshot() -> impl Strategy<Value = StateSnapshot> {
    let point = (any::<u64>(), any::<u64>(), any::<[u8; 32]>(), any::<[u8; 32]>())
        .prop_map(|(height, log_index, block_hash, root)| AppliedPoint { height, log_index, block_hash, root: StateRoot(root) });
    let entries = prop::collection::btree_map(any::<[u8; 32]>().prop_map(Key), prop::collection::vec(any::<u8>(), 0..40), 0..6);
    (applied_state(), point, entries).prop_map(|(applied, point, entries): (_, _, BTreeMap<Key, Vec<u8>>)| StateSnapshot {
        applied,
        point,
        entries: entries.into_iter().map(|(k, v)| (k, Value::from_slice(&v))).collect(),
    })
}

/// The codec's promises for one value: it round-trips, re-encodes to the same bytes, and
/// every strict prefix and every padded encoding is refused without a panic.
fn check<T: RaftCodec + Debug>(value: &T, same: impl Fn(&T, &T) -> bool) {
    let bytes = value.encode();
    assert_eq!(bytes[0], RAFT_CODEC_VERSION);
    let back = T::decode(&bytes).unwrap_or_else(|e| panic!("{value:?} does not decode: {e}"));
    assert!(same(value, &back), "{value:?} came back as {back:?}");
    assert_eq!(back.encode(), bytes, "re-encoding changed the bytes");
    for cut in 0..bytes.len() {
        assert!(T::decode(&bytes[..cut]).is_err(), "a {cut}-byte prefix of {} decoded", bytes.len());
    }
    for pad in [&[0u8][..], &[1, 2, 3]] {
        let mut padded = bytes.clone();
        padded.extend_from_slice(pad);
        assert_eq!(T::decode(&padded).unwrap_err(), CodecError::Trailing { what: <T as sealed::Fields>::WHAT, extra: pad.len() });
    }
    let mut other = bytes.clone();
    other[0] = RAFT_CODEC_VERSION + 1;
    assert_eq!(T::decode(&other).unwrap_err(), CodecError::Version(RAFT_CODEC_VERSION + 1));
}

fn same_append(a: &AppendReq, b: &AppendReq) -> bool {
    a.vote == b.vote && a.prev_log_id == b.prev_log_id && a.leader_commit == b.leader_commit && a.entries == b.entries
}

/// Decodes arbitrary bytes as `T`: never panics, and whatever decodes is canonical.
fn fuzz_one<T: RaftCodec>(bytes: &[u8]) {
    if let Ok(v) = T::decode(bytes) {
        assert_eq!(v.encode(), bytes, "a non-canonical encoding decoded");
    }
}

fn fuzz_all(bytes: &[u8]) {
    fuzz_one::<LogId>(bytes);
    fuzz_one::<Option<LogId>>(bytes);
    fuzz_one::<Vote>(bytes);
    fuzz_one::<Membership>(bytes);
    fuzz_one::<StoredMembership>(bytes);
    fuzz_one::<Entry>(bytes);
    fuzz_one::<AppendReq>(bytes);
    fuzz_one::<AppendEntriesResponse<u64>>(bytes);
    fuzz_one::<VoteRequest<u64>>(bytes);
    fuzz_one::<VoteResponse<u64>>(bytes);
    fuzz_one::<SnapshotMeta>(bytes);
    fuzz_one::<SnapReq>(bytes);
    fuzz_one::<InstallSnapshotResponse<u64>>(bytes);
    fuzz_one::<AppliedState>(bytes);
    fuzz_one::<StateSnapshot>(bytes);
}

proptest! {
    #[test]
    fn small_values_round_trip(l in log_id(), ol in prop::option::of(log_id()), v in vote(), m in membership(), sm in stored_membership()) {
        check(&l, |a, b| a == b);
        check(&ol, |a, b| a == b);
        check(&v, |a, b| a == b);
        check(&m, |a, b| a == b);
        check(&sm, |a, b| a == b);
    }

    #[test]
    fn entries_round_trip(e in entry()) {
        check(&e, |a, b| a == b);
    }

    #[test]
    fn rpcs_round_trip(
        areq in append_request(),
        aresp in append_response(),
        vreq in (vote(), prop::option::of(log_id())).prop_map(|(vote, last_log_id)| VoteRequest { vote, last_log_id }),
        vresp in (vote(), any::<bool>(), prop::option::of(log_id())).prop_map(|(vote, vote_granted, last_log_id)| VoteResponse { vote, vote_granted, last_log_id }),
        sreq in snapshot_request(),
        sresp in vote().prop_map(|vote| InstallSnapshotResponse { vote }),
        meta in snapshot_meta(),
    ) {
        check(&areq, same_append);
        check(&aresp, |a, b| a == b);
        check(&vreq, |a, b| a == b);
        check(&vresp, |a, b| a == b);
        check(&sreq, |a, b| a == b);
        check(&sresp, |a, b| a == b);
        check(&meta, |a, b| a == b);
    }

    #[test]
    fn state_machine_records_round_trip(a in applied_state(), s in state_snapshot()) {
        check(&a, |x, y| x == y);
        check(&s, |x, y| x == y);
    }

    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzz_all(&bytes);
        // And with the right version byte, so decoding gets past the first check.
        if let Some(b) = bytes.first_mut() {
            *b = RAFT_CODEC_VERSION;
        }
        fuzz_all(&bytes);
    }

    #[test]
    fn mutated_encodings_never_panic(req in append_request(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = req.encode();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        fuzz_all(&bytes);
    }
}

#[test]
fn huge_counts_are_refused_before_allocating() {
    // An append request claiming u32::MAX entries in a handful of bytes.
    let mut b = AppendReq { vote: Vote::default(), prev_log_id: None, entries: vec![], leader_commit: None }.encode();
    let n = b.len();
    b[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        AppendReq::decode(&b).unwrap_err(),
        CodecError::TooMany { what: "append entries", got: u32::MAX as usize, max: MAX_APPEND_ENTRIES }
    );
    b[n - 4..].copy_from_slice(&(MAX_APPEND_ENTRIES as u32).to_le_bytes());
    assert_eq!(AppendReq::decode(&b).unwrap_err(), CodecError::Truncated("append entries"));

    // A snapshot claiming 2^64 - 1 state entries.
    let snap = StateSnapshot {
        applied: AppliedState::default(),
        point: AppliedPoint { height: 0, log_index: 0, block_hash: [0; 32], root: StateRoot([0; 32]) },
        entries: vec![],
    };
    let mut b = snap.encode();
    let n = b.len();
    b[n - 8..].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(StateSnapshot::decode(&b).unwrap_err(), CodecError::Truncated("snapshot entries"));

    // A block longer than the bytes present.
    let mut b = Entry { log_id: LogId::default(), payload: EntryPayload::Normal(RaftRequest::new(vec![7; 10])) }.encode();
    b[26..30].copy_from_slice(&11u32.to_le_bytes());
    assert_eq!(Entry::decode(&b).unwrap_err(), CodecError::Truncated("entry block"));
}

#[test]
fn non_canonical_and_invalid_fields_are_refused() {
    let voters = |ids: &[u64]| -> Vec<u8> {
        let mut v = vec![RAFT_CODEC_VERSION, 1];
        v.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in ids {
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    };
    let with_learners = |mut v: Vec<u8>, ids: &[u64]| -> Vec<u8> {
        v.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in ids {
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    };
    assert!(Membership::decode(&with_learners(voters(&[1, 2, 3]), &[9])).is_ok());
    assert_eq!(Membership::decode(&with_learners(voters(&[2, 1]), &[])).unwrap_err(), CodecError::Invalid("membership voters"));
    assert_eq!(Membership::decode(&with_learners(voters(&[1, 1]), &[])).unwrap_err(), CodecError::Invalid("membership voters"));
    assert_eq!(
        Membership::decode(&with_learners(voters(&[1, 2]), &[2])).unwrap_err(),
        CodecError::Invalid("membership: a learner that is also a voter")
    );
    let mut many = voters(&[]);
    many[1] = (MAX_JOINT_CONFIGS + 1) as u8;
    assert!(matches!(Membership::decode(&many).unwrap_err(), CodecError::TooMany { what: "membership configs", .. }));

    assert_eq!(Option::<LogId>::decode(&[RAFT_CODEC_VERSION, 2]).unwrap_err(), CodecError::Invalid("option flag"));
    let mut v = Vote::default().encode();
    *v.last_mut().unwrap() = 2;
    assert_eq!(Vote::decode(&v).unwrap_err(), CodecError::Invalid("vote committed flag"));
    let mut e = Entry { log_id: LogId::default(), payload: EntryPayload::Blank }.encode();
    *e.last_mut().unwrap() = 3;
    assert_eq!(Entry::decode(&e).unwrap_err(), CodecError::Invalid("entry payload tag"));
    assert_eq!(
        AppendEntriesResponse::<u64>::decode(&[RAFT_CODEC_VERSION, 4]).unwrap_err(),
        CodecError::Invalid("append-entries response tag")
    );

    let meta = SnapshotMeta { snapshot_id: "ab".into(), ..Default::default() };
    let mut m = meta.encode();
    let n = m.len();
    m[n - 1] = 0xff;
    assert_eq!(SnapshotMeta::decode(&m).unwrap_err(), CodecError::Invalid("snapshot id (not UTF-8)"));

    let k = |b: u8| Key([b; 32]);
    let point = AppliedPoint { height: 1, log_index: 1, block_hash: [0; 32], root: StateRoot([0; 32]) };
    let mut w = StateSnapshotWriter::new(&AppliedState::default(), &point);
    w.push(&k(2), &Value::from_u64(1)).unwrap();
    assert!(w.push(&k(2), &Value::from_u64(1)).is_err(), "a repeated key");
    assert!(w.push(&k(1), &Value::from_u64(1)).is_err(), "a key out of order");
    assert!(w.push(&k(3), &Value::from_slice(&[0u8; MAX_STATE_VALUE_LEN + 1])).is_err(), "an oversized value");
    w.push(&k(3), &Value::from_u64(3)).unwrap();
    assert_eq!(w.len(), 2);
    let decoded = StateSnapshot::decode(&w.finish()).unwrap();
    assert_eq!(decoded.entries, vec![(k(2), Value::from_u64(1)), (k(3), Value::from_u64(3))]);
    // Hand-made bytes with keys out of order are refused.
    let bad = StateSnapshot { applied: AppliedState::default(), point, entries: vec![] };
    let mut b = bad.encode();
    let n = b.len();
    b[n - 8..].copy_from_slice(&2u64.to_le_bytes());
    for key in [k(5), k(4)] {
        b.extend_from_slice(&key.0);
        b.extend_from_slice(&0u32.to_le_bytes());
    }
    assert_eq!(StateSnapshot::decode(&b).unwrap_err(), CodecError::Invalid("snapshot entries (keys not strictly ascending)"));
}
