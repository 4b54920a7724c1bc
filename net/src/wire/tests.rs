use super::*;
use occam_engine::crypto::SecretKey;
use occam_engine::native::signed::{SignedBlock, TxHeader};
use occam_engine::native::{NativeTx, TxKind};
use occam_shard::{QuorumCollector, ValidatorSet, Vote};
use proptest::prelude::*;

fn key(i: u8) -> SecretKey {
    SecretKey::from_seed(&[i + 1; 32]).unwrap()
}

fn signed_block(n: usize) -> SignedBlock {
    let k = key(0);
    let txs = (0..n)
        .map(|i| {
            let body = NativeTx { kind: TxKind::Transfer { from: i as u64, to: i as u64 + 1, amount: 3 }, work_rounds: 0 };
            TxHeader { signer: 0, nonce: i as u64, body }.sign(7, &k)
        })
        .collect();
    SignedBlock { chain_id: 7, txs }
}

fn raw(b: &SignedBlock) -> RawSignedBlock {
    RawSignedBlock { chain_id: b.chain_id, txs: b.txs.iter().map(Into::into).collect() }
}

fn certificate() -> Certificate {
    let keys: Vec<SecretKey> = (0..4).map(key).collect();
    let members: Vec<_> = keys.iter().map(|k| (k.public_key(), k.prove_possession())).collect();
    let set = ValidatorSet::new(&members).unwrap();
    let vote = Vote { chain_id: 7, shard: 1, epoch: 0, height: 9, block_hash: [3; 32], state_root: [4; 32] };
    let mut c = QuorumCollector::new(set, vote);
    for (i, k) in keys.iter().enumerate().take(3) {
        c.add(SignedVote::sign(vote, i as u32, k)).unwrap();
    }
    c.certificate().unwrap().clone()
}

fn entries() -> Entries {
    vec![(Key::from_parts(1, 2, 3), Some(Value::from_u64(5))), (Key::from_parts(1, 9, 0), None)]
}

fn every_message() -> Vec<Message> {
    let block = signed_block(3);
    vec![
        Message::Submit { batch: 42, txs: raw(&block) },
        Message::Accepted { batch: 42 },
        Message::Refused { batch: 42, reason: Refusal::Throttled, leader: None },
        Message::Refused { batch: 43, reason: Refusal::NotLeader, leader: Some(3) },
        Message::Receipts {
            certificate: Some(certificate()),
            entries: vec![
                ReceiptEntry { batch: 1, index: 2, status: TxStatus::Failed },
                ReceiptEntry { batch: 1, index: 3, status: TxStatus::Aborted },
            ],
        },
        Message::Receipts { certificate: None, entries: vec![ReceiptEntry { batch: 1, index: 0, status: TxStatus::BadSignature }] },
        Message::Propose(Proposal {
            shard: 2,
            height: 5,
            parent: [9; 32],
            cross: Some(CrossStep::Apply { round: 4, writes: entries() }),
            block: Some(block.aggregate().unwrap()),
        }),
        Message::Propose(Proposal { shard: 2, height: 6, parent: [9; 32], cross: None, block: None }),
        Message::Vote(SignedVote::sign(
            Vote { chain_id: 7, shard: 0, epoch: 0, height: 1, block_hash: [1; 32], state_root: [2; 32] },
            3,
            &key(3),
        )),
        Message::Commit(certificate()),
        Message::StatusRequest,
        Message::Status(vec![
            ReplicaStatus { shard: 1, replica: 2, height: 3, root: [4; 32], pending: 5, ..Default::default() },
            ReplicaStatus {
                shard: 6,
                replica: 0,
                height: 7,
                root: [8; 32],
                pending: 0,
                role: RaftRole::Leader,
                term: 9,
                leader: Some(10),
                log_index: 11,
                applied_index: 12,
                certified: 7,
            },
        ]),
        Message::Read { id: 7, keys: vec![Key::from_parts(1, 2, 3), Key::from_parts(9, 1, 0)] },
        Message::Values { id: 7, values: entries() },
        Message::Sync { shard: 2, from: 17 },
        Message::TxQuery { id: 9, txs: vec![(1, 0), (u32::MAX, u64::MAX)] },
        Message::TxQuery { id: 10, txs: vec![] },
        Message::TxFates {
            id: 9,
            certificates: vec![certificate()],
            fates: vec![
                TxFate::Committed { certificate: 0 },
                TxFate::Spent { height: Some(12) },
                TxFate::Spent { height: None },
                TxFate::Pending,
                TxFate::Unknown,
                TxFate::NotLeader { leader: Some(2) },
                TxFate::NotLeader { leader: None },
            ],
        },
        Message::Cross { shard: 1, message: CrossMessage::ReadRequest { block: 3, keys: vec![Key::from_parts(1, 2, 3)] } },
        Message::Cross { shard: 1, message: CrossMessage::ReadReply { block: 3, from: 1, values: entries() } },
        Message::Cross { shard: 1, message: CrossMessage::Apply { block: 3, writes: entries() } },
        Message::Cross { shard: 1, message: CrossMessage::Applied { block: 3, from: 1, height: 17 } },
        Message::RaftRequest { group: 3, rpc: RaftRpcKind::AppendEntries, body: vec![1, 2, 3, 4] },
        Message::RaftRequest { group: u32::MAX, rpc: RaftRpcKind::InstallSnapshot, body: vec![] },
        Message::RaftReply { group: 3, rpc: RaftRpcKind::Vote, result: Ok(vec![9; 40]) },
        Message::RaftReply { group: 0, rpc: RaftRpcKind::InstallSnapshot, result: Err("snapshot mismatch: é".into()) },
    ]
}

static MESSAGES: std::sync::LazyLock<Vec<Message>> = std::sync::LazyLock::new(every_message);

static ENTRIES: std::sync::LazyLock<Vec<Proposal>> = std::sync::LazyLock::new(every_entry);

/// A block of every shape a Raft entry carries: transactions, and each cross-shard step.
fn every_entry() -> Vec<Proposal> {
    let block = signed_block(3).aggregate().unwrap();
    let p = |cross: Option<CrossStep>, block: Option<_>| Proposal { shard: 1, height: 0, parent: [0; 32], cross, block };
    vec![
        p(None, Some(block.clone())),
        p(None, None),
        p(Some(CrossStep::Prepare { round: 9, keys: vec![Key::from_parts(1, 2, 3), Key::from_parts(13, 4, 0)] }), None),
        p(Some(CrossStep::Apply { round: 9, writes: entries() }), Some(block)),
        p(Some(CrossStep::Apply { round: 10, writes: vec![] }), None),
        p(Some(CrossStep::Start { participants: vec![0, 2, 3] }), None),
        p(Some(CrossStep::Decide { round: 11, aborted: false, writes: vec![(0, entries()), (3, vec![])] }), None),
        p(Some(CrossStep::Decide { round: 12, aborted: true, writes: vec![] }), None),
    ]
}

#[test]
fn block_entries_round_trip_and_refuse_other_versions() {
    for p in every_entry() {
        let bytes = p.encode_entry();
        assert_eq!(Proposal::decode_entry(&bytes).unwrap(), p);
        // Another version, or no magic: refused, not misread.
        let mut other = bytes.clone();
        other[4] = ENTRY_VERSION + 1;
        assert!(matches!(Proposal::decode_entry(&other), Err(WireError::Invalid("entry version"))));
        assert!(matches!(Proposal::decode_entry(&bytes[1..]), Err(WireError::Invalid("entry magic"))));
        // Cut short anywhere: an error, never a panic or a shorter block.
        for cut in [5, bytes.len() / 2, bytes.len() - 1] {
            assert!(Proposal::decode_entry(&bytes[..cut]).is_err());
        }
        // The step is part of the block hash the certificate names.
        if p.cross.is_some() {
            assert_ne!(p.hash(), Proposal { cross: None, ..p.clone() }.hash());
        }
    }
    // A count of participants beyond the limit is refused before anything is allocated.
    let mut w = b"OCBK".to_vec();
    w.push(ENTRY_VERSION);
    w.extend_from_slice(&[0; 4 + 8 + 32]);
    w.push(3);
    w.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(Proposal::decode_entry(&w), Err(WireError::TooMany { what: "participants", .. })));
}

#[test]
fn every_message_round_trips() {
    let all = every_message();
    let kinds: std::collections::BTreeSet<u8> = all.iter().map(Message::kind).collect();
    assert_eq!(kinds.len(), usize::from(Kind::LAST), "every kind is covered");
    for m in all {
        let frame = m.encode().unwrap();
        assert_eq!(Message::decode_frame(&frame, MAX_FRAME_LEN).unwrap(), m, "{m:?}");
    }
}

#[test]
fn status_reads_are_bounded_and_fates_name_only_certificates_they_carry() {
    let too_many = Message::TxQuery { id: 1, txs: vec![(0, 0); MAX_TX_QUERY + 1] };
    let frame = too_many.encode().unwrap();
    assert!(matches!(Message::decode_frame(&frame, MAX_FRAME_LEN), Err(WireError::TooMany { .. })));
    // A committed fate that names a certificate the reply does not carry.
    let dangling = Message::TxFates { id: 1, certificates: vec![], fates: vec![TxFate::Committed { certificate: 0 }] };
    let frame = dangling.encode().unwrap();
    assert!(matches!(Message::decode_frame(&frame, MAX_FRAME_LEN), Err(WireError::Invalid("fate certificate number"))));
    // An unknown fate tag.
    let mut frame = Message::TxFates { id: 1, certificates: vec![], fates: vec![TxFate::Pending] }.encode().unwrap();
    *frame.last_mut().unwrap() = 9;
    assert!(matches!(Message::decode_frame(&frame, MAX_FRAME_LEN), Err(WireError::Invalid("fate"))));
}

#[test]
fn enum_tables_are_in_wire_order() {
    for (i, r) in Refusal::ALL.iter().enumerate() {
        assert_eq!(*r as usize, i);
    }
    for (i, s) in TxStatus::ALL.iter().enumerate() {
        assert_eq!(*s as usize, i);
    }
    for (i, k) in RaftRpcKind::ALL.iter().enumerate() {
        assert_eq!(*k as usize, i);
    }
}

#[test]
fn headers_are_checked_before_the_payload() {
    let frame = Message::Accepted { batch: 1 }.encode().unwrap();
    let mut h: [u8; HEADER_LEN] = frame[..HEADER_LEN].try_into().unwrap();
    assert_eq!(FrameHeader::parse(&h, 100).unwrap(), FrameHeader { kind: Kind::ACCEPTED, len: 8 });
    assert_eq!(FrameHeader::parse(&h, 4), Err(WireError::Oversized { len: 8, max: 4 }));
    // The version before the Raft kinds, and one from the future.
    for v in [1, WIRE_VERSION + 1] {
        h[0] = v;
        assert_eq!(FrameHeader::parse(&h, 100), Err(WireError::Version(v)));
    }
    h[0] = WIRE_VERSION;
    h[1] = 99;
    assert_eq!(FrameHeader::parse(&h, 100), Err(WireError::UnknownKind(99)));
    h[1] = Kind::LAST + 1;
    assert_eq!(FrameHeader::parse(&h, 100), Err(WireError::UnknownKind(Kind::LAST + 1)));
    h[1] = Kind::RAFT_REPLY;
    assert!(FrameHeader::parse(&h, 100).is_ok());
    h[1] = Kind::SUBMIT;
    h[2..].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(FrameHeader::parse(&h, usize::MAX), Err(WireError::Oversized { max: MAX_FRAME_LEN, .. })));
}

#[test]
fn truncated_and_padded_frames_are_refused() {
    for m in every_message() {
        let frame = m.encode().unwrap();
        for cut in [HEADER_LEN, frame.len() - 1] {
            if cut >= HEADER_LEN && cut < frame.len() {
                let mut short = frame[..cut].to_vec();
                let len = (cut - HEADER_LEN) as u32;
                short[2..HEADER_LEN].copy_from_slice(&len.to_le_bytes());
                if m != Message::StatusRequest {
                    assert!(Message::decode_frame(&short, MAX_FRAME_LEN).is_err(), "{m:?} cut at {cut}");
                }
            }
        }
        let mut long = frame.clone();
        long.push(0);
        let len = (long.len() - HEADER_LEN) as u32;
        long[2..HEADER_LEN].copy_from_slice(&len.to_le_bytes());
        assert!(Message::decode_frame(&long, MAX_FRAME_LEN).is_err(), "{m:?} with a trailing byte");
    }
}

#[test]
fn huge_counts_do_not_allocate() {
    // A receipts frame that claims 2^20 entries in 10 bytes is refused as truncated.
    let mut payload = vec![0u8];
    payload.extend_from_slice(&(MAX_ENTRIES as u32).to_le_bytes());
    payload.extend_from_slice(&[0; 5]);
    assert_eq!(Message::decode(Kind::RECEIPTS, &payload), Err(WireError::Truncated("receipt entries")));
    payload[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(Message::decode(Kind::RECEIPTS, &payload), Err(WireError::TooMany { .. })));
}

#[test]
fn batches_above_the_limit_are_refused() {
    let m = Message::Submit { batch: 1, txs: raw(&signed_block(MAX_BATCH_TXS + 1)) };
    let frame = m.encode().unwrap();
    assert!(matches!(Message::decode_frame(&frame, MAX_FRAME_LEN), Err(WireError::TooMany { .. })));
}

/// A frame whose payload is `payload`, under kind `kind`.
fn frame_of(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![WIRE_VERSION, kind];
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn raft_frames_have_the_documented_layout() {
    let m = Message::RaftRequest { group: 0x0102_0304, rpc: RaftRpcKind::Vote, body: vec![7, 8] };
    assert_eq!(m.encode().unwrap(), frame_of(Kind::RAFT_REQUEST, &[4, 3, 2, 1, 1, 2, 0, 0, 0, 7, 8]));
    let m = Message::RaftReply { group: 5, rpc: RaftRpcKind::InstallSnapshot, result: Ok(vec![9]) };
    assert_eq!(m.encode().unwrap(), frame_of(Kind::RAFT_REPLY, &[5, 0, 0, 0, 2, 0, 1, 0, 0, 0, 9]));
    let m = Message::RaftReply { group: 5, rpc: RaftRpcKind::AppendEntries, result: Err("no".into()) };
    assert_eq!(m.encode().unwrap(), frame_of(Kind::RAFT_REPLY, &[5, 0, 0, 0, 0, 1, 2, 0, 0, 0, b'n', b'o']));
    // The body is opaque to the wire: any bytes, none included.
    assert_eq!(
        Message::decode(Kind::RAFT_REQUEST, &[1, 0, 0, 0, 2, 0, 0, 0, 0]),
        Ok(Message::RaftRequest { group: 1, rpc: RaftRpcKind::InstallSnapshot, body: vec![] })
    );
    assert_eq!(
        Message::decode(Kind::RAFT_REPLY, &[1, 0, 0, 0, 2, 0, 0, 0, 0, 0]),
        Ok(Message::RaftReply { group: 1, rpc: RaftRpcKind::InstallSnapshot, result: Ok(vec![]) })
    );
    // A body shorter or longer than its length.
    assert_eq!(Message::decode(Kind::RAFT_REQUEST, &[1, 0, 0, 0, 2, 2, 0, 0, 0, 7]), Err(WireError::Truncated("raft request body")));
    assert_eq!(Message::decode(Kind::RAFT_REQUEST, &[1, 0, 0, 0, 2, 0, 0, 0, 0, 7]), Err(WireError::Trailing(1)));
    assert_eq!(Message::decode(Kind::RAFT_REPLY, &[1, 0, 0, 0, 2, 0, 2, 0, 0, 0, 7]), Err(WireError::Truncated("raft reply body")));
    // The in-place encoder writes the same bytes.
    for body in [vec![], vec![1, 2, 3]] {
        let framed = encode_raft_request(9, RaftRpcKind::AppendEntries, |w| w.extend_from_slice(&body)).unwrap();
        assert_eq!(framed, Message::RaftRequest { group: 9, rpc: RaftRpcKind::AppendEntries, body }.encode().unwrap());
    }
}

#[test]
fn raft_frames_refuse_unknown_rpc_kinds_and_flags() {
    for kind in [Kind::RAFT_REQUEST, Kind::RAFT_REPLY] {
        for rpc in [3u8, 4, 0x80, u8::MAX] {
            assert_eq!(Message::decode(kind, &[1, 0, 0, 0, rpc, 0]), Err(WireError::Invalid("raft rpc kind")), "kind {kind} rpc {rpc}");
        }
        // Cut inside the group or before the rpc kind.
        for cut in 0..5 {
            assert!(matches!(Message::decode(kind, &[1, 0, 0, 0, 0][..cut]), Err(WireError::Truncated(_))), "kind {kind} cut {cut}");
        }
    }
    // A reply without its result flag, with a flag other than 0 or 1.
    assert_eq!(Message::decode(Kind::RAFT_REPLY, &[1, 0, 0, 0, 0]), Err(WireError::Truncated("raft result flag")));
    assert_eq!(Message::decode(Kind::RAFT_REPLY, &[1, 0, 0, 0, 0, 2]), Err(WireError::Invalid("raft result flag")));
}

#[test]
fn raft_error_text_is_bounded_and_utf8() {
    let reply = |text: String| Message::RaftReply { group: 1, rpc: RaftRpcKind::AppendEntries, result: Err(text) };
    let at_limit = reply("x".repeat(MAX_RAFT_ERROR_LEN));
    assert_eq!(Message::decode_frame(&at_limit.encode().unwrap(), MAX_FRAME_LEN).unwrap(), at_limit);

    // Above the limit: refused when encoding, and when decoding (before the text is read).
    let over = MAX_RAFT_ERROR_LEN + 1;
    let too_long = WireError::TooMany { what: "raft error text bytes", got: over, max: MAX_RAFT_ERROR_LEN };
    assert_eq!(reply("x".repeat(over)).encode(), Err(too_long.clone()));
    let mut payload = vec![1, 0, 0, 0, 0, 1];
    payload.extend_from_slice(&(over as u32).to_le_bytes());
    payload.extend_from_slice(&vec![b'x'; over]);
    assert_eq!(Message::decode(Kind::RAFT_REPLY, &payload), Err(too_long));
    // A length far above the limit, with nothing behind it, is refused the same way.
    payload.truncate(6);
    payload.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(Message::decode(Kind::RAFT_REPLY, &payload), Err(WireError::TooMany { .. })));

    // Text shorter than announced, longer than announced, or not UTF-8.
    let ok = reply("abc".into()).encode().unwrap();
    let payload = &ok[HEADER_LEN..];
    assert_eq!(Message::decode(Kind::RAFT_REPLY, &payload[..payload.len() - 1]), Err(WireError::Truncated("raft error text")));
    assert_eq!(Message::decode(Kind::RAFT_REPLY, &[payload, &[0]].concat()), Err(WireError::Trailing(1)));
    let mut bad = payload.to_vec();
    let last = bad.len() - 1;
    bad[last] = 0xff;
    assert_eq!(Message::decode(Kind::RAFT_REPLY, &bad), Err(WireError::Invalid("raft error text (not UTF-8)")));
}

#[test]
fn raft_bodies_are_bounded_by_the_frame() {
    // The largest body that fits: the frame's limit less the group, the rpc kind and the
    // body's length.
    let body = vec![0xab; MAX_FRAME_LEN - 9];
    let m = Message::RaftRequest { group: 1, rpc: RaftRpcKind::InstallSnapshot, body };
    let frame = m.encode().unwrap();
    assert_eq!(frame.len(), HEADER_LEN + MAX_FRAME_LEN);
    assert_eq!(Message::decode_frame(&frame, MAX_FRAME_LEN).unwrap(), m);
    // One byte more is not encoded, and not accepted.
    let m = Message::RaftRequest { group: 1, rpc: RaftRpcKind::InstallSnapshot, body: vec![0xab; MAX_FRAME_LEN - 8] };
    assert_eq!(m.encode(), Err(WireError::Oversized { len: MAX_FRAME_LEN + 1, max: MAX_FRAME_LEN }));
    assert_eq!(
        encode_raft_request(1, RaftRpcKind::InstallSnapshot, |w| w.resize(w.len() + MAX_FRAME_LEN - 8, 0xab)),
        Err(WireError::Oversized { len: MAX_FRAME_LEN + 1, max: MAX_FRAME_LEN })
    );
    let m = Message::RaftReply { group: 1, rpc: RaftRpcKind::AppendEntries, result: Ok(vec![0; MAX_FRAME_LEN - 9]) };
    assert!(matches!(m.encode(), Err(WireError::Oversized { .. })));
    // A receiver's smaller limit is checked in the header.
    let small = Message::RaftRequest { group: 1, rpc: RaftRpcKind::Vote, body: vec![0; 100] }.encode().unwrap();
    assert!(matches!(Message::decode_frame(&small, 64), Err(WireError::Oversized { len: 109, max: 64 })));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_payloads_never_panic(kind in 0u8..=Kind::LAST + 1, bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::decode(kind, &bytes);
    }

    #[test]
    fn mutated_entries_never_panic(which in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = which.get(&ENTRIES).encode_entry();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(p) = Proposal::decode_entry(&bytes) {
            prop_assert_eq!(Proposal::decode_entry(&p.encode_entry()).unwrap(), p);
        }
    }

    #[test]
    fn mutated_frames_never_panic(which in 0usize..MESSAGES.len(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let m = &MESSAGES[which];
        let mut frame = m.encode().unwrap();
        let i = at.index(frame.len());
        frame[i] = byte;
        if let Ok(decoded) = Message::decode_frame(&frame, MAX_FRAME_LEN) {
            // Whatever decodes must encode back to the same bytes' meaning.
            prop_assert_eq!(Message::decode_frame(&decoded.encode().unwrap(), MAX_FRAME_LEN).unwrap(), decoded);
        }
    }

    #[test]
    fn raft_messages_round_trip(
        group in any::<u32>(),
        rpc in prop::sample::select(RaftRpcKind::ALL.to_vec()),
        body in proptest::collection::vec(any::<u8>(), 0..256),
        text in proptest::option::of("\\PC{0,64}"),
    ) {
        let request = Message::RaftRequest { group, rpc, body: body.clone() };
        let result = match text { Some(t) => Err(t), None => Ok(body) };
        let reply = Message::RaftReply { group, rpc, result };
        for m in [request, reply] {
            let frame = m.encode().unwrap();
            prop_assert_eq!(Message::decode_frame(&frame, MAX_FRAME_LEN).unwrap(), m.clone());
            // Every cut of the payload, and every extra byte, is refused.
            for cut in 0..frame.len() - HEADER_LEN {
                prop_assert!(Message::decode(m.kind(), &frame[HEADER_LEN..HEADER_LEN + cut]).is_err());
            }
            prop_assert_eq!(Message::decode(m.kind(), &[&frame[HEADER_LEN..], &[0]].concat()), Err(WireError::Trailing(1)));
        }
    }
}

/// Seeds for the fuzz targets (`net/fuzz`): one valid frame of every kind, so the fuzzer starts
/// from the signed paths it could not reach from nothing. Run with
/// `cargo test -p occam-net write_fuzz_seeds -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (target, strip) in [("frame", 0), ("payload", HEADER_LEN - 1)] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, m) in MESSAGES.iter().enumerate() {
            let frame = m.encode().unwrap();
            // The payload target takes the kind byte, then the payload.
            let bytes = if strip == 0 { frame } else { [&[m.kind()][..], &frame[HEADER_LEN..]].concat() };
            std::fs::write(dir.join(format!("seed-{i:02}")), bytes).unwrap();
        }
    }
    let dir = root.join("entry");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, p) in every_entry().iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), p.encode_entry()).unwrap();
    }
    let dir = root.join("blocks");
    std::fs::create_dir_all(&dir).unwrap();
    let block = signed_block(3);
    std::fs::write(dir.join("seed-signed"), block.encode()).unwrap();
    std::fs::write(dir.join("seed-aggregated"), block.aggregate().unwrap().encode()).unwrap();
}
