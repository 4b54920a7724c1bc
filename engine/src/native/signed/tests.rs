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
    TxKind::examples()
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

/// Genesis for `cfg` with accounts `0..cfg.accounts` owned round robin by the registry's keys.
fn owned_genesis(cfg: &GenesisConfig, reg: &KeyRegistry) -> CommittedState {
    let mut entries = NativeVm::genesis(cfg);
    entries.extend(round_robin_owners(0..cfg.accounts, reg.keys()));
    CommittedState::from_entries(entries)
}

#[test]
fn nonces_stop_replays_on_every_executor() {
    let genesis = GenesisConfig { accounts: 10, balance: 100, native_accounts: true, ..Default::default() };
    let (_, reg) = keys(2);
    let vm = SignedVm::new(std::sync::Arc::new(reg.clone()));
    // Signer `s` owns the even (0) or odd (1) accounts.
    let header = |signer: u32, nonce, to| TxHeader {
        signer,
        nonce,
        body: NativeTx::new(TxKind::Transfer { from: u64::from(signer), to, amount: 1 }),
    };
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
        let mut state = owned_genesis(&genesis, &reg);
        let mut exec = executor_by_name::<SignedVm>(name, threads).unwrap();
        let out = exec.execute_and_commit(&vm, &mut state, &block).unwrap();
        let got: Vec<Result<(), SignedFailure>> = out.outputs.iter().map(|o| o.as_ref().map(|_| ()).map_err(|e| *e)).collect();
        let want: Vec<Result<(), SignedFailure>> = expect.iter().map(|o| o.as_ref().map(|_| ()).map_err(|e| *e)).collect();
        assert_eq!(got, want, "{name}");
        assert_eq!(next_nonce(&state, 0), 2, "{name}");
        assert_eq!(next_nonce(&state, 1), 2, "{name}");
    }
}

#[test]
fn signers_spend_only_the_accounts_their_key_owns() {
    use crate::native::keys::{account, owner_key, receivable};
    let genesis = GenesisConfig { accounts: 6, balance: 100, native_accounts: true, credit_lines: true, ..Default::default() };
    let (_, mut reg) = keys(3);
    // Number 3 is key 0 again: it owns key 0's accounts (0 and 3), with nonces of its own.
    assert_eq!(reg.register_again(0), Ok(3));
    assert_eq!(reg.key_bytes(3), reg.key_bytes(0));
    assert_eq!(reg.id_of(reg.get(3).unwrap()), Some(0));
    assert!(reg.register_again(9).is_err());
    let owners = reg.keys()[..3].to_vec();
    let vm = SignedVm::new(std::sync::Arc::new(reg.clone()));
    let tx = |signer, nonce, kind| VerifiedTx { header: TxHeader { signer, nonce, body: NativeTx::new(kind) }, signature_ok: true };
    let pay = |from, to| TxKind::Transfer { from, to, amount: 10 };
    let block = vec![
        tx(1, 0, pay(0, 1)),                    // key 1 spends key 0's account
        tx(0, 0, pay(0, 1)),                    // its owner may
        tx(3, 0, pay(3, 1)),                    // so may its second number, from nonce 0
        tx(0, 1, pay(9, 1)),                    // account 9 has no owner: nobody may
        tx(2, 0, TxKind::KvRead { record: 0 }), // a read acts for nobody: no owner needed
        tx(2, 1, TxKind::ReceivableIssue { issuer: 2, receivable: 7, to: 5, amount: 50 }),
        // Account 5 (key 2) sells receivable 7 to account 4 (key 1): both must sign.
        tx(2, 2, TxKind::ReceivableFinance { receivable: 7, holder: 5, financier: 4, discount_bp: 100 }),
        tx(1, 0, TxKind::ReceivableFinance { receivable: 7, holder: 5, financier: 4, discount_bp: 100 }),
        // A number the registry does not know owns nothing, not even an account without owner.
        tx(99, 0, pay(9, 1)),
    ];
    let not_owner = |account| Err(SignedFailure::NotOwner { account });
    let expect: Vec<Result<bool, SignedFailure>> =
        vec![not_owner(0), Ok(true), Ok(true), not_owner(9), Ok(false), Ok(true), not_owner(4), not_owner(5), not_owner(9)];
    let mut roots = Vec::new();
    for (name, threads) in [("sequential", 1), ("parallel", 2), ("declared", 2), ("auto", 3)] {
        let mut state = CommittedState::from_entries(NativeVm::genesis(&genesis).into_iter().chain(round_robin_owners(0..6, &owners)));
        let mut exec = executor_by_name::<SignedVm>(name, threads).unwrap();
        let out = exec.execute_and_commit(&vm, &mut state, &block).unwrap();
        let got: Vec<Result<bool, SignedFailure>> = out.outputs.iter().map(|o| o.as_ref().map(|b| b.is_ok()).map_err(|e| *e)).collect();
        assert_eq!(got, expect, "{name}");
        // A refused transaction wrote nothing: not its nonce, not a balance.
        assert_eq!([0, 1, 2, 3, 99].map(|s| next_nonce(&state, s)), [1, 0, 2, 1, 0], "{name}");
        let balance = |id| state.get(&account(id)).and_then(Value::as_u64);
        assert_eq!([0, 1, 3, 4, 5, 9].map(balance), [Some(90), Some(120), Some(90), Some(100), Some(100), None], "{name}");
        assert!(state.get(&receivable(7)).is_some(), "{name}: the receivable was issued and never sold");
        assert!(state.get(&owner_key(1)).is_some());
        roots.push(state.root());
    }
    assert!(roots.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn every_kind_declares_the_owner_keys_it_checks() {
    use crate::native::keys::owner_key;
    for kind in every_kind() {
        let header = TxHeader { signer: 4, nonce: 0, body: NativeTx::new(kind.clone()) };
        let mut keys = Vec::new();
        assert!(signed_keys(&header, &mut keys));
        assert_eq!(keys[0], nonce_key(4));
        let authorities: Vec<u64> = kind.authorities().collect();
        for a in &authorities {
            assert!(keys.contains(&owner_key(*a)), "{}", kind.name());
            assert!(
                *a == kind.sender() || matches!(kind, TxKind::ReceivableFinance { financier, .. } if financier == *a),
                "{}",
                kind.name()
            );
        }
        let owners = keys.iter().filter(|k| k.tag() == tag::OWNER_KEY).count();
        assert_eq!(owners, authorities.len(), "{}", kind.name());
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
