use super::*;
use proptest::prelude::*;
use rand::SeedableRng;

fn key(i: u64) -> SecretKey {
    let mut seed = [7u8; 32];
    seed[..8].copy_from_slice(&i.to_le_bytes());
    SecretKey::from_seed(&seed).unwrap()
}

/// The first compressed encodings (flag byte `first`, then a small big-endian x) that decode as
/// points of the curve but fail validation: almost every curve point is outside the
/// prime-order subgroup, whose cofactor is huge.
fn off_subgroup(len: usize, first: u8) -> Vec<u8> {
    (1u16..4096)
        .map(|x| {
            let mut b = vec![0u8; len];
            b[0] = first;
            b[len - 2..].copy_from_slice(&x.to_be_bytes());
            b
        })
        .find(|b| {
            if len == PUBLIC_KEY_LEN {
                blst::min_pk::PublicKey::from_bytes(b).is_ok()
            } else {
                blst::min_pk::Signature::from_bytes(b).is_ok()
            }
        })
        .expect("some small x is on the curve")
}

#[test]
fn sign_and_verify() {
    let sk = key(1);
    let pk = sk.public_key();
    let sig = sk.sign(b"hello");
    assert_eq!(sig.verify(&pk, b"hello"), Ok(()));
    assert_eq!(sig.verify(&pk, b"hellO"), Err(CryptoError::BadSignature));
    assert_eq!(sig.verify(&key(2).public_key(), b"hello"), Err(CryptoError::BadSignature));
    // Encodings round-trip.
    assert_eq!(PublicKey::from_bytes(&pk.to_bytes()), Ok(pk));
    assert_eq!(Signature::from_bytes(&sig.to_bytes()), Ok(sig));
    assert_eq!(SecretKey::from_bytes(&sk.to_bytes()).unwrap().public_key(), pk);
    // A proof of possession is not a signature of the key's bytes under the signing tag.
    let pop = sk.prove_possession();
    assert!(pop.verify(&pk).is_ok());
    assert!(Signature::from_bytes(&pop.to_bytes()).unwrap().verify(&pk, &pk.to_bytes()).is_err());
}

#[test]
fn malformed_encodings_are_typed_errors() {
    assert!(matches!(PublicKey::from_bytes(&[0u8; 47]), Err(CryptoError::WrongLength { expected: 48, got: 47, .. })));
    assert!(matches!(Signature::from_bytes(&[0u8; 97]), Err(CryptoError::WrongLength { expected: 96, got: 97, .. })));
    assert!(matches!(ProofOfPossession::from_bytes(&[]), Err(CryptoError::WrongLength { .. })));
    assert!(matches!(SecretKey::from_bytes(&[1u8; 31]), Err(CryptoError::WrongLength { .. })));
    assert!(matches!(SecretKey::from_bytes(&[0u8; 32]), Err(CryptoError::BadSecretKey)));
    assert!(matches!(SecretKey::from_seed(&[1u8; 16]), Err(CryptoError::BadSecretKey)));
    // No compression flag, or garbage.
    assert!(matches!(PublicKey::from_bytes(&[0u8; 48]), Err(CryptoError::BadPoint { .. })));
    assert!(matches!(PublicKey::from_bytes(&[0xff; 48]), Err(CryptoError::BadPoint { .. })));
    assert!(matches!(Signature::from_bytes(&[0x1f; 96]), Err(CryptoError::BadPoint { .. })));
    // The identity (compressed point at infinity).
    let mut inf = [0u8; 48];
    inf[0] = 0xc0;
    assert!(matches!(PublicKey::from_bytes(&inf), Err(CryptoError::Identity { .. })));
    let mut inf = [0u8; 96];
    inf[0] = 0xc0;
    assert!(matches!(Signature::from_bytes(&inf), Err(CryptoError::Identity { .. })));
    // On the curve, outside the subgroup.
    assert!(matches!(PublicKey::from_bytes(&off_subgroup(48, 0x80)), Err(CryptoError::NotInSubgroup { .. })));
    assert!(matches!(Signature::from_bytes(&off_subgroup(96, 0x80)), Err(CryptoError::NotInSubgroup { .. })));
    assert!(matches!(ProofOfPossession::from_bytes(&off_subgroup(96, 0x80)), Err(CryptoError::NotInSubgroup { .. })));
    // Not on the curve: some small x has no point.
    let off_curve = (1u16..4096)
        .map(|x| {
            let mut b = vec![0u8; 48];
            b[0] = 0x80;
            b[46..].copy_from_slice(&x.to_be_bytes());
            b
        })
        .find(|b| blst::min_pk::PublicKey::from_bytes(b).is_err())
        .unwrap();
    assert!(matches!(PublicKey::from_bytes(&off_curve), Err(CryptoError::BadPoint { .. })));
}

#[test]
fn registry_needs_a_valid_proof_of_possession() {
    let mut reg = KeyRegistry::new();
    let (a, b) = (key(1), key(2));
    // Someone else's proof does not admit a key.
    assert_eq!(reg.register(a.public_key(), &b.prove_possession()), Err(CryptoError::BadProofOfPossession));
    // A signature of the key under the signing tag is not a proof either.
    let fake = ProofOfPossession::from_bytes(&a.sign(&a.public_key().to_bytes()).to_bytes()).unwrap();
    assert_eq!(reg.register(a.public_key(), &fake), Err(CryptoError::BadProofOfPossession));
    assert_eq!(reg.register(a.public_key(), &a.prove_possession()), Ok(0));
    assert_eq!(reg.register(a.public_key(), &a.prove_possession()), Err(CryptoError::DuplicateKey));
    assert_eq!(reg.register_bytes(&b.public_key().to_bytes(), &b.prove_possession().to_bytes()), Ok(1));
    assert!(matches!(reg.register_bytes(&[0u8; 48], &b.prove_possession().to_bytes()), Err(CryptoError::BadPoint { .. })));
    assert_eq!(reg.len(), 2);
    assert_eq!(reg.id_of(&b.public_key()), Some(1));
    assert_eq!(reg.get(0), Some(&a.public_key()));
}

struct Batch {
    keys: Vec<PublicKey>,
    messages: Vec<Vec<u8>>,
    signatures: Vec<Signature>,
}

impl Batch {
    fn new(n: usize) -> Self {
        let sks: Vec<SecretKey> = (0..8).map(key).collect();
        let messages: Vec<Vec<u8>> = (0..n).map(|i| format!("tx {i}").into_bytes()).collect();
        let signatures = messages.iter().enumerate().map(|(i, m)| sks[i % 8].sign(m)).collect();
        Batch { keys: (0..n).map(|i| sks[i % 8].public_key()).collect(), messages, signatures }
    }

    fn items(&self) -> Vec<SignedMessage<'_>> {
        (0..self.keys.len())
            .map(|i| SignedMessage { key: &self.keys[i], message: &self.messages[i], signature: &self.signatures[i] })
            .collect()
    }
}

#[test]
fn batch_verification_names_exactly_the_forged_signatures() {
    for threads in [1, 3] {
        let verifier = BatchVerifier::new(threads).unwrap();
        assert_eq!(verifier.verify(&[]), Vec::<bool>::new());
        let mut batch = Batch::new(200);
        assert!(verifier.verify(&batch.items()).iter().all(|&v| v));
        assert!(verifier.verify_all(&batch.items()));
        // One forged signature: a valid signature, but of another message.
        batch.signatures[77] = key(3).sign(&batch.messages[77]);
        let verdicts = verifier.verify(&batch.items());
        assert_eq!(verdicts.iter().filter(|v| !**v).count(), 1, "x{threads}");
        assert!(!verdicts[77]);
        assert!(!verifier.verify_all(&batch.items()));
        // Several, including neighbours and both ends.
        for i in [0, 5, 6, 150, 199] {
            batch.signatures[i] = batch.signatures[(i + 1) % 200];
        }
        let verdicts = verifier.verify(&batch.items());
        let bad: Vec<usize> = (0..200).filter(|&i| !verdicts[i]).collect();
        assert_eq!(bad, vec![0, 5, 6, 77, 150, 199], "x{threads}");
        // Every other signature forged (dense: both halves fail, checked one by one).
        let mut dense = Batch::new(64);
        for i in (1..64).step_by(2) {
            dense.signatures[i] = dense.signatures[i - 1];
        }
        let verdicts = verifier.verify(&dense.items());
        assert!((0..64).all(|i| verdicts[i] == (i % 2 == 0)), "x{threads}");
    }
}

#[test]
fn groups_are_judged_whole_and_apart() {
    for threads in [1, 3] {
        let verifier = BatchVerifier::new(threads).unwrap();
        assert_eq!(verifier.verify_groups(&[]), Vec::<bool>::new());
        let good = Batch::new(100);
        let mut one_bad = Batch::new(40);
        one_bad.signatures[39] = key(5).sign(b"something else");
        let small = Batch::new(3);
        let mut small_bad = Batch::new(1);
        small_bad.signatures[0] = key(6).sign(b"not tx 0");
        let (g, b, s, sb) = (good.items(), one_bad.items(), small.items(), small_bad.items());
        let verdicts = verifier.verify_groups(&[&g, &b, &s, &[], &sb, &g]);
        assert_eq!(verdicts, vec![true, false, true, true, false, true], "x{threads}");
    }
}

#[test]
fn aggregates_of_a_block_and_of_one_message() {
    let batch = Batch::new(50);
    let agg = Signature::aggregate(&batch.signatures).unwrap();
    let keys: Vec<&PublicKey> = batch.keys.iter().collect();
    let messages: Vec<&[u8]> = batch.messages.iter().map(|m| m.as_slice()).collect();
    assert_eq!(agg.aggregate_verify(&keys, &messages), Ok(()));
    let mut swapped = messages.clone();
    swapped.swap(3, 4);
    assert_eq!(agg.aggregate_verify(&keys, &swapped), Err(CryptoError::BadSignature));
    assert!(matches!(agg.aggregate_verify(&keys[..3], &messages), Err(CryptoError::BadInput(_))));
    // The same check on several threads, including chunks that end mid-block.
    for threads in [1, 2, 5] {
        let verifier = BatchVerifier::new(threads).unwrap();
        assert_eq!(verifier.aggregate_verify(&agg, &keys, &messages), Ok(()), "x{threads}");
        assert_eq!(verifier.aggregate_verify(&agg, &keys, &swapped), Err(CryptoError::BadSignature), "x{threads}");
        assert_eq!(verifier.aggregate_verify(&agg, &keys[1..], &messages[1..]), Err(CryptoError::BadSignature), "x{threads}");
        let other = Signature::aggregate(&batch.signatures[1..]).unwrap();
        assert_eq!(verifier.aggregate_verify(&other, &keys, &messages), Err(CryptoError::BadSignature), "x{threads}");
        assert!(matches!(verifier.aggregate_verify(&agg, &keys[..3], &messages), Err(CryptoError::BadInput(_))));
    }
    assert!(matches!(Signature::aggregate(&[]), Err(CryptoError::BadInput(_))));
    // Many signers, one message.
    let sks: Vec<SecretKey> = (10..26).map(key).collect();
    let sigs: Vec<Signature> = sks.iter().map(|k| k.sign(b"vote")).collect();
    let pks: Vec<PublicKey> = sks.iter().map(SecretKey::public_key).collect();
    let refs: Vec<&PublicKey> = pks.iter().collect();
    let agg = Signature::aggregate(&sigs).unwrap();
    assert_eq!(agg.fast_aggregate_verify(&refs, b"vote"), Ok(()));
    assert_eq!(agg.fast_aggregate_verify(&refs[1..], b"vote"), Err(CryptoError::BadSignature));
    assert_eq!(agg.fast_aggregate_verify(&refs, b"veto"), Err(CryptoError::BadSignature));
}

#[test]
fn random_keys_differ() {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    assert_ne!(SecretKey::random(&mut rng).public_key(), SecretKey::random(&mut rng).public_key());
    assert!(!format!("{:?}", key(1)).contains(&crate::key::hex_encode(&key(1).to_bytes())));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Decoders over arbitrary bytes: a typed error or a value that re-encodes to the input.
    #[test]
    fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), flag in prop::sample::select(vec![0x80u8, 0xa0, 0xc0, 0x00, 0xff])) {
        let mut flagged = bytes.clone();
        if let Some(b) = flagged.first_mut() {
            *b = flag | (*b & 0x1f);
        }
        for input in [&bytes, &flagged] {
            if let Ok(pk) = PublicKey::from_bytes(input) {
                prop_assert_eq!(&pk.to_bytes()[..], &input[..]);
            }
            if let Ok(sig) = Signature::from_bytes(input) {
                prop_assert_eq!(&sig.to_bytes()[..], &input[..]);
            }
            if let Ok(pop) = ProofOfPossession::from_bytes(input) {
                prop_assert_eq!(&pop.to_bytes()[..], &input[..]);
            }
            let _ = SecretKey::from_bytes(input);
            let _ = KeyRegistry::new().register_bytes(input, input);
        }
    }
}
