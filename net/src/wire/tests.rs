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
    let vote = Vote { chain_id: 7, shard: 1, height: 9, block_hash: [3; 32], state_root: [4; 32] };
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
        Message::Refused { batch: 42, reason: Refusal::Throttled },
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
            cross_writes: entries(),
            block: Some(block.aggregate().unwrap()),
        }),
        Message::Propose(Proposal { shard: 2, height: 6, parent: [9; 32], cross_writes: entries(), block: None }),
        Message::Vote(SignedVote::sign(Vote { chain_id: 7, shard: 0, height: 1, block_hash: [1; 32], state_root: [2; 32] }, 3, &key(3))),
        Message::Commit(certificate()),
        Message::StatusRequest,
        Message::Status(vec![ReplicaStatus { shard: 1, replica: 2, height: 3, root: [4; 32], pending: 5 }]),
        Message::Read { id: 7, keys: vec![Key::from_parts(1, 2, 3), Key::from_parts(9, 1, 0)] },
        Message::Values { id: 7, values: entries() },
        Message::Sync { shard: 2, from: 17 },
        Message::Cross { shard: 1, message: CrossMessage::ReadRequest { block: 3, keys: vec![Key::from_parts(1, 2, 3)] } },
        Message::Cross { shard: 1, message: CrossMessage::ReadReply { block: 3, from: 1, values: entries() } },
        Message::Cross { shard: 1, message: CrossMessage::Apply { block: 3, writes: entries() } },
        Message::Cross { shard: 1, message: CrossMessage::Applied { block: 3, from: 1 } },
    ]
}

static MESSAGES: std::sync::LazyLock<Vec<Message>> = std::sync::LazyLock::new(every_message);

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
fn enum_tables_are_in_wire_order() {
    for (i, r) in Refusal::ALL.iter().enumerate() {
        assert_eq!(*r as usize, i);
    }
    for (i, s) in TxStatus::ALL.iter().enumerate() {
        assert_eq!(*s as usize, i);
    }
}

#[test]
fn headers_are_checked_before_the_payload() {
    let frame = Message::Accepted { batch: 1 }.encode().unwrap();
    let mut h: [u8; HEADER_LEN] = frame[..HEADER_LEN].try_into().unwrap();
    assert_eq!(FrameHeader::parse(&h, 100).unwrap(), FrameHeader { kind: Kind::ACCEPTED, len: 8 });
    assert_eq!(FrameHeader::parse(&h, 4), Err(WireError::Oversized { len: 8, max: 4 }));
    h[0] = 2;
    assert_eq!(FrameHeader::parse(&h, 100), Err(WireError::Version(2)));
    h[0] = WIRE_VERSION;
    h[1] = 99;
    assert_eq!(FrameHeader::parse(&h, 100), Err(WireError::UnknownKind(99)));
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_payloads_never_panic(kind in 0u8..16, bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::decode(kind, &bytes);
    }

    #[test]
    fn mutated_frames_never_panic(which in 0usize..18, at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let m = &MESSAGES[which];
        let mut frame = m.encode().unwrap();
        let i = at.index(frame.len());
        frame[i] = byte;
        if let Ok(decoded) = Message::decode_frame(&frame, MAX_FRAME_LEN) {
            // Whatever decodes must encode back to the same bytes' meaning.
            prop_assert_eq!(Message::decode_frame(&decoded.encode().unwrap(), MAX_FRAME_LEN).unwrap(), decoded);
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
    let dir = root.join("blocks");
    std::fs::create_dir_all(&dir).unwrap();
    let block = signed_block(3);
    std::fs::write(dir.join("seed-signed"), block.encode()).unwrap();
    std::fs::write(dir.join("seed-aggregated"), block.aggregate().unwrap().encode()).unwrap();
}
