use super::*;
use crate::crypto::{BatchVerifier, SignedMessage};
use crate::exec::executor_by_name;
use crate::native::GenesisConfig;
use crate::state::CommittedState;
use proptest::prelude::*;

const CHAIN: u64 = 7;

fn keys(n: u64) -> (Vec<SecretKey>, KeyRegistry) {
    let sks: Vec<SecretKey> = (0..n)
        .map(|i| {
            let mut seed = [3u8; 32];
            seed[..8].copy_from_slice(&i.to_le_bytes());
            SecretKey::from_seed(&seed).unwrap()
        })
        .collect();
    let mut reg = KeyRegistry::new();
    for sk in &sks {
        reg.register(sk.public_key(), &sk.prove_possession()).unwrap();
    }
    (sks, reg)
}

fn every_kind() -> Vec<TxKind> {
    use TxKind::*;
    vec![
        Transfer { from: 1, to: 2, amount: 3 },
        SbAmalgamate { a: 1, b: 2 },
        SbBalance { a: 4 },
        SbDepositChecking { a: 1, amount: 9 },
        SbSendPayment { from: 1, to: 2, amount: 3 },
        SbTransactSavings { a: 1, amount: -5 },
        SbWriteCheck { a: 1, amount: 2 },
        KvRead { record: 8 },
        KvUpdate { record: 8, seed: 1 },
        KvRmw { record: 8, seed: 2 },
        KvInsert { record: 8, seed: 3 },
        TokenTransfer { token: 0, from: 1, to: 2, amount: 3 },
        TokenApprove { token: 0, owner: 1, spender: 2, amount: 3 },
        TokenTransferFrom { token: 0, spender: 2, from: 1, to: 3, amount: 1 },
        AmmSwap { pool: 0, trader: 1, zero_for_one: true, amount_in: 10, min_out: 0 },
        NftMint { collection: 0, minter: 1 },
        TokenIssue { token: 1, to: 2, amount: 3 },
        TokenRetire { token: 1, holder: 2, amount: 3 },
        ItemRegister { item: 9, owner: 1, event: 2 },
        ItemHandover { item: 9, from: 1, to: 2, event: 3 },
        ItemEvent { item: 9, actor: 4, event: 5 },
        ItemLookup { item: 9 },
        Notarize { evidence: 7, submitter: 1, digest: 99 },
        DocIssue { issuer: 1, subject: 2, slot: 3, digest: 4 },
        Grant { subject: 2, grantee: 5 },
        Revoke { subject: 2, grantee: 5 },
        DocUpdate { subject: 2, slot: 3, writer: 5, digest: 6 },
        DocRead { subject: 2, slot: 3, reader: 5, audit: true },
        Order { market: 1, trader: 2, sell: true, qty: 3, level: 4 },
        Clear { market: 1 },
        Settle { market: 1, trader: 2 },
        ReceivableIssue { issuer: 1, receivable: 2, to: 3, amount: 4 },
        ReceivableSplit { receivable: 2, holder: 3, new_receivable: 5, to: 6, amount: 1 },
        ReceivableFinance { receivable: 2, holder: 3, financier: 7, discount_bp: 100 },
        ReceivableRedeem { receivable: 2, holder: 7, issuer: 1 },
    ]
}

fn signed_block(sks: &[SecretKey], kinds: &[TxKind]) -> SignedBlock {
    let txs = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let signer = (i % sks.len()) as u32;
            let nonce = (i / sks.len()) as u64;
            TxHeader { signer, nonce, body: NativeTx { kind: k.clone(), work_rounds: i as u32 % 3 } }.sign(CHAIN, &sks[signer as usize])
        })
        .collect();
    SignedBlock { chain_id: CHAIN, txs }
}

#[test]
fn bodies_and_blocks_round_trip() {
    let (sks, reg) = keys(3);
    for kind in every_kind() {
        let tx = NativeTx { kind, work_rounds: 5 };
        let mut bytes = Vec::new();
        encode_body(&tx, &mut bytes);
        assert!(bytes.len() <= MAX_BODY_LEN);
        assert_eq!(decode_body(&bytes), Ok(tx));
    }
    let block = signed_block(&sks, &every_kind());
    let bytes = block.encode();
    assert_eq!(SignedBlock::decode(&bytes), Ok(block.clone()));
    let agg = block.aggregate().unwrap();
    let agg_bytes = agg.encode();
    assert_eq!(AggregatedBlock::decode(&agg_bytes), Ok(agg.clone()));
    assert_eq!(agg.verify(&reg, CHAIN), Ok(()));
    assert_eq!(agg.verify(&reg, CHAIN + 1), Err(SignedFailure::WrongChain { expected: CHAIN + 1, got: CHAIN }));
    assert_eq!(agg.verify_on(&reg, CHAIN, &BatchVerifier::new(3).unwrap()), Ok(()));
    // One 96-byte signature instead of one per transaction.
    assert_eq!(bytes.len() - agg_bytes.len(), (block.txs.len() - 1) * SIGNATURE_LEN);
}

#[test]
fn malformed_blocks_are_typed_errors() {
    let (sks, _) = keys(2);
    let bytes = signed_block(&sks, &every_kind()).encode();
    assert_eq!(SignedBlock::decode(&[]), Err(CodecError::Truncated("version")));
    assert!(matches!(SignedBlock::decode(&[9]), Err(CodecError::Version { got: 9, .. })));
    assert!(matches!(AggregatedBlock::decode(&bytes), Err(CodecError::Version { got: 1, .. })));
    for cut in [1, 9, 13, 20, bytes.len() - 1] {
        assert!(matches!(SignedBlock::decode(&bytes[..cut]), Err(CodecError::Truncated(_))), "cut at {cut}");
    }
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(SignedBlock::decode(&long), Err(CodecError::Trailing(1)));
    // A count far above the limit is refused before anything is allocated for it.
    let mut huge = bytes[..9].to_vec();
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(SignedBlock::decode(&huge), Err(CodecError::TooLarge { .. })));
    // Unknown kind, a boolean that is not 0 or 1.
    assert_eq!(decode_body(&[99, 0, 0, 0, 0]), Err(CodecError::UnknownKind(99)));
    let mut swap = Vec::new();
    encode_body(&NativeTx::new(TxKind::AmmSwap { pool: 0, trader: 1, zero_for_one: true, amount_in: 1, min_out: 0 }), &mut swap);
    swap[5 + 16] = 2;
    assert!(matches!(decode_body(&swap), Err(CodecError::BadField(_))));
    // A sender asking for more emulated work than the limit.
    let mut heavy = Vec::new();
    encode_body(&NativeTx { kind: TxKind::SbBalance { a: 1 }, work_rounds: MAX_WORK_ROUNDS + 1 }, &mut heavy);
    assert!(matches!(decode_body(&heavy), Err(CodecError::TooLarge { what: "work rounds", .. })));
    // A signature that is not a point: the last transaction's signature zeroed.
    let mut bad_sig = bytes.clone();
    let n = bad_sig.len();
    bad_sig[n - SIGNATURE_LEN..].fill(0);
    assert!(matches!(SignedBlock::decode(&bad_sig), Err(CodecError::Signature(_))));
}

#[test]
fn forged_or_foreign_signatures_fail_verification() {
    let (sks, reg) = keys(4);
    let mut block = signed_block(&sks, &every_kind());
    // Signed by the wrong key, and signed for another chain.
    block.txs[3].signature = sks[0].sign(&block.txs[3].header.signing_bytes(CHAIN));
    block.txs[9].signature = sks[1].sign(&block.txs[9].header.signing_bytes(CHAIN + 1));
    let messages: Vec<Vec<u8>> = block.txs.iter().map(|t| t.header.signing_bytes(CHAIN)).collect();
    let items: Vec<SignedMessage<'_>> = block
        .txs
        .iter()
        .zip(&messages)
        .map(|(t, m)| SignedMessage { key: reg.get(t.header.signer).unwrap(), message: m, signature: &t.signature })
        .collect();
    let verdicts = BatchVerifier::new(2).unwrap().verify(&items);
    let bad: Vec<usize> = (0..verdicts.len()).filter(|&i| !verdicts[i]).collect();
    assert_eq!(bad, vec![3, 9]);
    assert_eq!(block.aggregate().unwrap().verify(&reg, CHAIN), Err(SignedFailure::BadSignature));
    assert_eq!(block.aggregate().unwrap().verify_on(&reg, CHAIN, &BatchVerifier::new(2).unwrap()), Err(SignedFailure::BadSignature));
    let mut unknown = block.aggregate().unwrap();
    unknown.headers[0].signer = 99;
    assert_eq!(unknown.verify(&reg, CHAIN), Err(SignedFailure::UnknownSigner));
}

#[test]
fn nonces_stop_replays_on_every_executor() {
    let genesis = GenesisConfig { accounts: 10, balance: 100, native_accounts: true, ..Default::default() };
    let header = |signer, nonce, to| TxHeader { signer, nonce, body: NativeTx::new(TxKind::Transfer { from: 0, to, amount: 1 }) };
    let ok = |h: TxHeader| VerifiedTx { header: h, signature_ok: true };
    let block = vec![
        ok(header(0, 0, 1)),
        ok(header(0, 0, 2)), // replay of nonce 0
        ok(header(0, 1, 3)),
        ok(header(0, 5, 4)), // ahead
        ok(header(1, 0, 5)),
        VerifiedTx { header: header(1, 1, 6), signature_ok: false },
        ok(header(1, 1, 7)),
    ];
    let expect: Vec<SignedOutput> = vec![
        Ok(Ok(99)),
        Err(SignedFailure::BadNonce { expected: 1, got: 0 }),
        Ok(Ok(98)),
        Err(SignedFailure::BadNonce { expected: 2, got: 5 }),
        Ok(Ok(97)),
        Err(SignedFailure::BadSignature),
        Ok(Ok(96)),
    ];
    for (name, threads) in [("sequential", 1), ("parallel", 2), ("declared", 2), ("auto", 3)] {
        let mut state = CommittedState::from_entries(NativeVm::genesis(&genesis));
        let mut exec = executor_by_name::<SignedVm>(name, threads).unwrap();
        let out = exec.execute_and_commit(&SignedVm, &mut state, &block).unwrap();
        let got: Vec<Result<(), SignedFailure>> = out.outputs.iter().map(|o| o.as_ref().map(|_| ()).map_err(|e| *e)).collect();
        let want: Vec<Result<(), SignedFailure>> = expect.iter().map(|o| o.as_ref().map(|_| ()).map_err(|e| *e)).collect();
        assert_eq!(got, want, "{name}");
        assert_eq!(next_nonce(&state, 0), 2, "{name}");
        assert_eq!(next_nonce(&state, 1), 2, "{name}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Decoders over arbitrary bytes and over damaged valid encodings: a typed error or a value
    /// that re-encodes to exactly the input.
    #[test]
    fn decoders_never_panic(
        noise in prop::collection::vec(any::<u8>(), 0..400),
        cut in 0usize..2000,
        flip in 0usize..2000,
        version in prop::sample::select(vec![1u8, 2]),
    ) {
        let (sks, _) = keys(2);
        let block = signed_block(&sks, &every_kind()[..4]);
        let valid = if version == 1 { block.encode() } else { block.aggregate().unwrap().encode() };
        let mut damaged = valid.clone();
        damaged.truncate(cut.min(valid.len()));
        if let Some(b) = damaged.get_mut(flip % valid.len().max(1)) {
            *b ^= 0x5a;
        }
        let mut prefixed = vec![version];
        prefixed.extend_from_slice(&noise);
        for input in [&noise, &damaged, &prefixed] {
            if let Ok(b) = SignedBlock::decode(input) {
                prop_assert_eq!(&b.encode(), input);
            }
            if let Ok(b) = AggregatedBlock::decode(input) {
                prop_assert_eq!(&b.encode(), input);
            }
            if let Ok(tx) = decode_body(input) {
                let mut again = Vec::new();
                encode_body(&tx, &mut again);
                prop_assert_eq!(&again, input);
            }
        }
    }
}

#[test]
fn nonce_signer_inverts_nonce_key_and_nothing_else() {
    for s in [0u32, 1, 7, u32::MAX] {
        assert_eq!(nonce_signer(&nonce_key(s)), Some(s));
    }
    assert_eq!(nonce_signer(&Key::from_parts(tag::NONCE, u64::from(u32::MAX) + 1, 0)), None, "a signer past u32");
    assert_eq!(nonce_signer(&Key::from_parts(tag::NONCE, 3, 1)), None, "a second field");
    assert_eq!(nonce_signer(&Key::from_parts(tag::NONCE.wrapping_add(1), 3, 0)), None, "another tag");
}
