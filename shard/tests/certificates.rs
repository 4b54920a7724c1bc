//! Block certificates: the happy path for several set sizes, and every rejection, each its own test.

mod common;

use common::{secret, signed, validators, vote, votes};
use occam_engine::crypto::{BatchVerifier, SecretKey, Signature};
use occam_shard::{Certificate, CertificateError, QuorumCollector, SignedVote, SignerBitmap, ValidatorSet, Vote, MAX_VALIDATORS};

/// A certificate of validators `signers` (any count, even under quorum) with a matching bitmap.
fn certificate_of(keys: &[SecretKey], set: &ValidatorSet, vote: Vote, signers: &[u32]) -> Certificate {
    let mut bitmap = SignerBitmap::for_set(set);
    for &i in signers {
        assert!(bitmap.set(i, true));
    }
    let signatures: Vec<Signature> = signers.iter().map(|&i| signed(keys, vote, i).signature).collect();
    Certificate { vote, members: set.ids().to_vec(), signers: bitmap, signature: Signature::aggregate(&signatures).unwrap() }
}

fn verifier() -> BatchVerifier {
    BatchVerifier::new(2).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Happy path
// ---------------------------------------------------------------------------------------------

/// Feeds votes 0, 1, … to a collector: the certificate comes at exactly the quorum, verifies,
/// round-trips through the codec, equals the batch-built one, and later votes give `Ok(None)`.
fn happy_path(n: u32, quorum: usize) {
    let (keys, set) = validators(n);
    assert_eq!(set.len(), n as usize);
    assert_eq!(set.quorum(), quorum);
    let vote = vote();
    let mut collector = QuorumCollector::new(set.clone(), vote);
    let mut certificate = None;
    for i in 0..n {
        let out = collector.add(signed(&keys, vote, i)).unwrap();
        if (i as usize) + 1 == quorum {
            certificate = Some(out.expect("the quorum-th vote completes the certificate"));
        } else {
            assert_eq!(out, None, "vote {i} of a set of {n}");
        }
        assert_eq!(collector.count(), i as usize + 1);
    }
    let certificate = certificate.unwrap();
    assert_eq!(collector.certificate(), Some(&certificate));
    assert_eq!(certificate.signers.count(), quorum);
    assert_eq!(certificate.signers.iter().collect::<Vec<_>>(), (0..quorum as u32).collect::<Vec<_>>());
    assert_eq!(certificate.signers.as_bytes().len(), (n as usize).div_ceil(8));
    assert_eq!(certificate.verify(&set), Ok(()));

    let bytes = certificate.encode();
    assert_eq!(bytes.len(), 1 + 92 + 2 + 4 * n as usize + 2 + (n as usize).div_ceil(8) + 96);
    let decoded = Certificate::decode(&bytes).unwrap();
    assert_eq!(decoded, certificate);
    assert_eq!(decoded.verify(&set), Ok(()));
    assert_eq!(decoded.encode(), bytes);

    // The same votes aggregated in one go, batch-verified or one by one.
    let quorum_votes = votes(&keys, vote, quorum as u32);
    assert_eq!(Certificate::from_votes(&set, &quorum_votes, Some(&verifier())), Ok(certificate.clone()));
    assert_eq!(Certificate::from_votes(&set, &quorum_votes, None), Ok(certificate.clone()));
    // All n votes make a certificate too.
    let all = Certificate::from_votes(&set, &votes(&keys, vote, n), Some(&verifier())).unwrap();
    assert_eq!(all.signers.count(), n as usize);
    assert_eq!(all.verify(&set), Ok(()));
}

#[test]
fn happy_path_4_validators() {
    happy_path(4, 3);
}

#[test]
fn happy_path_7_validators() {
    happy_path(7, 5);
}

#[test]
fn happy_path_64_validators() {
    happy_path(64, 43);
}

#[test]
fn collector_accepts_votes_in_any_order() {
    let (keys, set) = validators(7);
    let mut collector = QuorumCollector::new(set.clone(), vote());
    for i in [6, 2, 5, 0] {
        assert_eq!(collector.add(signed(&keys, vote(), i)), Ok(None));
    }
    let certificate = collector.add(signed(&keys, vote(), 3)).unwrap().unwrap();
    assert_eq!(certificate.signers.iter().collect::<Vec<_>>(), vec![0, 2, 3, 5, 6]);
    assert_eq!(certificate.verify(&set), Ok(()));
}

#[test]
fn signed_vote_round_trips() {
    let keys = [secret(0), secret(1)];
    let v = signed(&keys, vote(), 1);
    let bytes = v.encode();
    assert_eq!(bytes.len(), occam_shard::certificate::SIGNED_VOTE_ENCODED_LEN);
    assert_eq!(SignedVote::decode(&bytes), Ok(v));
    let (_, set) = validators(2);
    assert_eq!(v.verify(&set), Ok(()));
}

#[test]
fn validator_set_lookups() {
    let (keys, set) = validators(5);
    assert!(!set.is_empty());
    assert_eq!(set.quorum(), 4);
    assert_eq!(set.key(4), Some(&keys[4].public_key()));
    assert_eq!(set.key(5), None);
    assert_eq!(set.index_of(&keys[2].public_key()), Some(2));
    assert_eq!(set.index_of(&secret(99).public_key()), None);
    assert_eq!(set.keys().len(), 5);
}

// ---------------------------------------------------------------------------------------------
// Validator set
// ---------------------------------------------------------------------------------------------

#[test]
fn set_rejects_someone_elses_proof_of_possession() {
    let (a, b, c) = (secret(0), secret(1), secret(2));
    // c presents b's proof as its own.
    let members = [(a.public_key(), a.prove_possession()), (b.public_key(), b.prove_possession()), (c.public_key(), b.prove_possession())];
    assert_eq!(ValidatorSet::new(&members).unwrap_err(), CertificateError::BadProofOfPossession { index: 2 });
}

#[test]
fn set_rejects_duplicate_keys() {
    let (a, b) = (secret(0), secret(1));
    let members = [(a.public_key(), a.prove_possession()), (b.public_key(), b.prove_possession()), (a.public_key(), a.prove_possession())];
    assert_eq!(ValidatorSet::new(&members).unwrap_err(), CertificateError::DuplicateValidator { index: 2 });
}

#[test]
fn set_rejects_empty() {
    assert_eq!(ValidatorSet::new(&[]).unwrap_err(), CertificateError::EmptyValidatorSet);
}

#[test]
fn set_rejects_more_than_max_validators() {
    let a = secret(0);
    let members = vec![(a.public_key(), a.prove_possession()); MAX_VALIDATORS + 1];
    assert_eq!(
        ValidatorSet::new(&members).unwrap_err(),
        CertificateError::TooManyValidators { got: MAX_VALIDATORS + 1, max: MAX_VALIDATORS }
    );
}

// ---------------------------------------------------------------------------------------------
// Certificate::verify
// ---------------------------------------------------------------------------------------------

#[test]
fn verify_rejects_bitmap_bit_outside_set() {
    // 7 validators: one bitmap byte, bit 7 is padding.
    let (keys, set) = validators(7);
    let mut certificate = certificate_of(&keys, &set, vote(), &[0, 1, 2, 3, 4]);
    assert_eq!(certificate.verify(&set), Ok(()));
    assert!(certificate.signers.set(7, true));
    assert_eq!(certificate.verify(&set), Err(CertificateError::SignerOutsideSet { signer: 7, validators: 7 }));
}

#[test]
fn verify_rejects_bitmap_too_long() {
    let (keys, set) = validators(7);
    let mut certificate = certificate_of(&keys, &set, vote(), &[0, 1, 2, 3, 4]);
    let mut bytes = certificate.signers.as_bytes().to_vec();
    bytes.push(0);
    certificate.signers = SignerBitmap::from_bytes(&bytes).unwrap();
    assert_eq!(certificate.verify(&set), Err(CertificateError::BitmapLength { got: 2, expected: 1, validators: 7 }));
}

#[test]
fn verify_rejects_bitmap_too_short() {
    let (keys, set) = validators(9);
    let mut certificate = certificate_of(&keys, &set, vote(), &[0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(certificate.verify(&set), Ok(()));
    certificate.signers = SignerBitmap::from_bytes(&certificate.signers.as_bytes()[..1]).unwrap();
    assert_eq!(certificate.verify(&set), Err(CertificateError::BitmapLength { got: 1, expected: 2, validators: 9 }));
}

#[test]
fn verify_rejects_too_few_signers() {
    // A genuine aggregate of 4 of 7 signatures, bitmap matching: still under the quorum of 5.
    let (keys, set) = validators(7);
    let certificate = certificate_of(&keys, &set, vote(), &[0, 1, 2, 3]);
    assert_eq!(certificate.verify(&set), Err(CertificateError::TooFewSigners { got: 4, need: 5 }));
}

#[test]
fn verify_rejects_bitmap_bit_moved_to_non_signer() {
    // Validators 0..5 signed; the bitmap claims 6 instead of 4.
    let (keys, set) = validators(7);
    let mut certificate = certificate_of(&keys, &set, vote(), &[0, 1, 2, 3, 4]);
    assert!(certificate.signers.set(4, false));
    assert!(certificate.signers.set(6, true));
    assert_eq!(certificate.signers.count(), 5);
    assert_eq!(certificate.verify(&set), Err(CertificateError::BadSignature));
}

#[test]
fn verify_rejects_signer_dropped_from_bitmap() {
    // Six signed (more than the quorum of 5); the bitmap names only five of them.
    let (keys, set) = validators(7);
    let mut certificate = certificate_of(&keys, &set, vote(), &[0, 1, 2, 3, 4, 5]);
    assert_eq!(certificate.verify(&set), Ok(()));
    assert!(certificate.signers.set(5, false));
    assert_eq!(certificate.verify(&set), Err(CertificateError::BadSignature));
}

#[test]
fn verify_rejects_non_signer_added_to_bitmap() {
    let (keys, set) = validators(7);
    let mut certificate = certificate_of(&keys, &set, vote(), &[0, 1, 2, 3, 4]);
    assert!(certificate.signers.set(6, true));
    assert_eq!(certificate.verify(&set), Err(CertificateError::BadSignature));
}

#[test]
fn verify_rejects_certificate_for_another_vote() {
    let (keys, set) = validators(4);
    let good = certificate_of(&keys, &set, vote(), &[0, 1, 2]);
    for tamper in [
        |v: &mut Vote| v.chain_id += 1,
        |v: &mut Vote| v.shard += 1,
        |v: &mut Vote| v.height += 1,
        |v: &mut Vote| v.block_hash[31] ^= 1,
        |v: &mut Vote| v.state_root[0] ^= 0x80,
    ] {
        let mut certificate = good.clone();
        tamper(&mut certificate.vote);
        assert_eq!(certificate.verify(&set), Err(CertificateError::BadSignature));
    }
}

#[test]
fn verify_rejects_certificate_of_another_set() {
    let (keys, set) = validators(4);
    let certificate = certificate_of(&keys, &set, vote(), &[0, 1, 2]);
    let other: Vec<SecretKey> = (100..104).map(secret).collect();
    let members: Vec<_> = other.iter().map(|k| (k.public_key(), k.prove_possession())).collect();
    let other_set = ValidatorSet::new(&members).unwrap();
    assert_eq!(certificate.verify(&other_set), Err(CertificateError::BadSignature));
}

// ---------------------------------------------------------------------------------------------
// Epochs: a set that changed members
// ---------------------------------------------------------------------------------------------

/// Validators 0, 1, 2 and 4 (3 replaced by 4) in epoch 9: keys by member id.
fn replaced_set() -> (Vec<SecretKey>, ValidatorSet) {
    let keys: Vec<SecretKey> = (0..5).map(secret).collect();
    let ids = [0, 1, 2, 4];
    let members: Vec<_> = ids.iter().map(|&i| (keys[i as usize].public_key(), keys[i as usize].prove_possession())).collect();
    (keys, ValidatorSet::with_ids(9, &ids, &members).unwrap())
}

#[test]
fn set_with_ids_maps_ids_to_signer_indexes() {
    let (_, set) = replaced_set();
    assert_eq!((set.epoch(), set.ids()), (9, &[0, 1, 2, 4][..]));
    assert_eq!([0, 1, 2, 3, 4].map(|id| set.index_of_id(id)), [Some(0), Some(1), Some(2), None, Some(3)]);
}

#[test]
fn set_with_ids_rejects_unsorted_repeated_or_missing_ids() {
    let keys: Vec<SecretKey> = (0..3).map(secret).collect();
    let members: Vec<_> = keys.iter().map(|k| (k.public_key(), k.prove_possession())).collect();
    for ids in [&[0, 2, 1][..], &[0, 1, 1], &[0, 1], &[0, 1, 2, 3]] {
        assert!(matches!(ValidatorSet::with_ids(1, ids, &members), Err(CertificateError::BadMemberIds(_))), "{ids:?}");
    }
}

#[test]
fn certificate_of_an_epoch_verifies_only_against_that_epoch_and_members() {
    let (keys, set) = replaced_set();
    let vote = Vote { epoch: 9, ..vote() };
    // Signer index 3 is member 4.
    let votes: Vec<SignedVote> = [0u32, 1, 3].iter().map(|&i| SignedVote::sign(vote, i, &keys[set.ids()[i as usize] as usize])).collect();
    let certificate = from_votes_both(&set, &votes).unwrap();
    assert_eq!(certificate.members, vec![0, 1, 2, 4]);
    certificate.verify(&set).unwrap();
    assert_eq!(Certificate::decode(&certificate.encode()).unwrap(), certificate);

    // The same members in another epoch: the signatures name epoch 9.
    let members: Vec<_> = set.ids().iter().map(|&i| (keys[i as usize].public_key(), keys[i as usize].prove_possession())).collect();
    let later = ValidatorSet::with_ids(10, set.ids(), &members).unwrap();
    assert_eq!(certificate.verify(&later), Err(CertificateError::WrongEpoch { signed: 9, set: 10 }));
    // Relabelled with another epoch, the signature no longer matches.
    let mut relabelled = certificate.clone();
    relabelled.vote.epoch = 10;
    assert_eq!(relabelled.verify(&later), Err(CertificateError::BadSignature));
    // Naming other members than the set's.
    let mut renamed = certificate.clone();
    renamed.members = vec![0, 1, 2, 3];
    assert!(matches!(renamed.verify(&set), Err(CertificateError::WrongMembers { .. })));
    // A vote of another epoch is refused by the collector and by from_votes, and a signed vote
    // is checked against its epoch.
    let mut collector = QuorumCollector::new(set.clone(), vote);
    let old = SignedVote::sign(Vote { epoch: 8, ..vote }, 0, &keys[0]);
    assert_eq!(collector.add(old), Err(CertificateError::VoteMismatch { signer: 0 }));
    assert_eq!(old.verify(&set), Err(CertificateError::WrongEpoch { signed: 8, set: 9 }));
    assert_eq!(Certificate::from_votes(&set, &[old], None), Err(CertificateError::WrongEpoch { signed: 8, set: 9 }));
}

// ---------------------------------------------------------------------------------------------
// Certificate::from_votes
// ---------------------------------------------------------------------------------------------

/// `from_votes` with a batch verifier and without give the same answer.
fn from_votes_both(set: &ValidatorSet, votes: &[SignedVote]) -> Result<Certificate, CertificateError> {
    let batch = Certificate::from_votes(set, votes, Some(&verifier()));
    assert_eq!(batch, Certificate::from_votes(set, votes, None));
    batch
}

#[test]
fn from_votes_rejects_signer_outside_set() {
    let (keys, set) = validators(4);
    let mut votes = votes(&keys, vote(), 3);
    // A vote genuinely signed by an outsider, claiming index 4 of a set of 4.
    votes.push(SignedVote::sign(vote(), 4, &secret(4)));
    assert_eq!(from_votes_both(&set, &votes), Err(CertificateError::SignerOutsideSet { signer: 4, validators: 4 }));
}

#[test]
fn from_votes_rejects_duplicate_signer() {
    let (keys, set) = validators(4);
    let mut votes = votes(&keys, vote(), 3);
    votes.push(votes[1]);
    assert_eq!(from_votes_both(&set, &votes), Err(CertificateError::DuplicateSigner(1)));
}

#[test]
fn from_votes_rejects_too_few_signers() {
    let (keys, set) = validators(7);
    assert_eq!(from_votes_both(&set, &votes(&keys, vote(), 4)), Err(CertificateError::TooFewSigners { got: 4, need: 5 }));
    assert_eq!(from_votes_both(&set, &[]), Err(CertificateError::TooFewSigners { got: 0, need: 5 }));
}

#[test]
fn from_votes_rejects_vote_for_another_block() {
    let (keys, set) = validators(4);
    let mut votes = votes(&keys, vote(), 3);
    votes.push(signed(&keys, Vote { block_hash: [0x33; 32], ..vote() }, 3));
    assert_eq!(from_votes_both(&set, &votes), Err(CertificateError::VoteMismatch { signer: 3 }));
}

#[test]
fn from_votes_rejects_vote_for_another_state_root() {
    let (keys, set) = validators(4);
    let mut votes = votes(&keys, vote(), 3);
    votes.insert(1, signed(&keys, Vote { state_root: [0x44; 32], ..vote() }, 3));
    assert_eq!(from_votes_both(&set, &votes), Err(CertificateError::VoteMismatch { signer: 3 }));
}

#[test]
fn from_votes_rejects_vote_for_another_height() {
    let (keys, set) = validators(4);
    let mut votes = votes(&keys, vote(), 3);
    votes.push(signed(&keys, Vote { height: vote().height + 1, ..vote() }, 3));
    assert_eq!(from_votes_both(&set, &votes), Err(CertificateError::VoteMismatch { signer: 3 }));
}

#[test]
fn from_votes_rejects_vote_for_another_shard() {
    let (keys, set) = validators(4);
    let mut votes = votes(&keys, vote(), 3);
    votes.push(signed(&keys, Vote { shard: vote().shard + 1, ..vote() }, 3));
    assert_eq!(from_votes_both(&set, &votes), Err(CertificateError::VoteMismatch { signer: 3 }));
}

#[test]
fn from_votes_rejects_forged_signature() {
    let (keys, set) = validators(7);
    let mut votes = votes(&keys, vote(), 6);
    // Validator 2's vote signed with validator 6's key.
    votes[2].signature = keys[6].sign(&vote().signing_bytes());
    assert_eq!(from_votes_both(&set, &votes), Err(CertificateError::BadVoteSignature(2)));
}

#[test]
fn from_votes_rejects_signature_of_another_vote() {
    let (keys, set) = validators(7);
    let mut votes = votes(&keys, vote(), 5);
    // Validator 4's signature of another height, relabelled as a vote for this one.
    votes[4].signature = signed(&keys, Vote { height: 1, ..vote() }, 4).signature;
    assert_eq!(from_votes_both(&set, &votes), Err(CertificateError::BadVoteSignature(4)));
}

// ---------------------------------------------------------------------------------------------
// QuorumCollector
// ---------------------------------------------------------------------------------------------

/// Feeds votes 0..quorum-1 after `errors` and checks the certificate still comes at exactly
/// the quorum-th valid vote: the rejected votes changed nothing.
fn finishes_at_quorum_after(collector: &mut QuorumCollector, keys: &[SecretKey], from: u32) {
    let set = collector.set().clone();
    let quorum = set.quorum() as u32;
    for i in from..quorum - 1 {
        assert_eq!(collector.add(signed(keys, *collector.vote(), i)), Ok(None));
    }
    let certificate = collector.add(signed(keys, *collector.vote(), quorum - 1)).unwrap().expect("quorum");
    assert_eq!(certificate.signers.iter().collect::<Vec<_>>(), (0..quorum).collect::<Vec<_>>());
    assert_eq!(certificate.verify(&set), Ok(()));
}

#[test]
fn collector_rejects_signer_outside_set() {
    let (keys, set) = validators(4);
    let mut collector = QuorumCollector::new(set, vote());
    assert_eq!(collector.add(signed(&keys, vote(), 0)), Ok(None));
    let outsider = SignedVote::sign(vote(), 4, &secret(4));
    assert_eq!(collector.add(outsider), Err(CertificateError::SignerOutsideSet { signer: 4, validators: 4 }));
    assert_eq!(
        collector.add(SignedVote { signer: u32::MAX, ..outsider }),
        Err(CertificateError::SignerOutsideSet { signer: u32::MAX, validators: 4 })
    );
    assert_eq!(collector.count(), 1);
    finishes_at_quorum_after(&mut collector, &keys, 1);
}

#[test]
fn collector_rejects_duplicate_signer() {
    let (keys, set) = validators(4);
    let mut collector = QuorumCollector::new(set, vote());
    assert_eq!(collector.add(signed(&keys, vote(), 0)), Ok(None));
    assert_eq!(collector.add(signed(&keys, vote(), 1)), Ok(None));
    assert_eq!(collector.add(signed(&keys, vote(), 1)), Err(CertificateError::DuplicateSigner(1)));
    assert_eq!(collector.count(), 2);
    assert_eq!(collector.signers().iter().collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(collector.certificate(), None);
    finishes_at_quorum_after(&mut collector, &keys, 2);
}

#[test]
fn collector_rejects_votes_for_other_block_root_height_shard() {
    let (keys, set) = validators(4);
    let mut collector = QuorumCollector::new(set, vote());
    assert_eq!(collector.add(signed(&keys, vote(), 0)), Ok(None));
    let others = [
        Vote { block_hash: [0x33; 32], ..vote() },
        Vote { state_root: [0x44; 32], ..vote() },
        Vote { height: vote().height - 1, ..vote() },
        Vote { shard: vote().shard + 1, ..vote() },
        Vote { chain_id: vote().chain_id + 1, ..vote() },
    ];
    for other in others {
        assert_eq!(collector.add(signed(&keys, other, 1)), Err(CertificateError::VoteMismatch { signer: 1 }), "{other:?}");
    }
    assert_eq!(collector.count(), 1);
    finishes_at_quorum_after(&mut collector, &keys, 1);
}

#[test]
fn collector_rejects_forged_signature() {
    let (keys, set) = validators(4);
    let mut collector = QuorumCollector::new(set, vote());
    let mut forged = signed(&keys, vote(), 0);
    forged.signature = keys[3].sign(&vote().signing_bytes());
    assert_eq!(collector.add(forged), Err(CertificateError::BadVoteSignature(0)));
    assert_eq!(collector.count(), 0);
    // Validator 0 can still vote after a forgery in its name.
    finishes_at_quorum_after(&mut collector, &keys, 0);
}

#[test]
fn collector_emits_once_and_keeps_checking() {
    let (keys, set) = validators(4);
    let mut collector = QuorumCollector::new(set.clone(), vote());
    finishes_at_quorum_after(&mut collector, &keys, 0);
    // After the certificate: a duplicate and a forgery are still errors, a fresh vote is Ok(None).
    assert_eq!(collector.add(signed(&keys, vote(), 0)), Err(CertificateError::DuplicateSigner(0)));
    let mut forged = signed(&keys, vote(), 3);
    forged.signature = keys[0].sign(&vote().signing_bytes());
    assert_eq!(collector.add(forged), Err(CertificateError::BadVoteSignature(3)));
    assert_eq!(collector.add(signed(&keys, vote(), 3)), Ok(None));
    assert_eq!(collector.count(), 4);
    let certificate = collector.certificate().unwrap();
    assert_eq!(certificate.signers.count(), 3);
    assert_eq!(certificate.verify(&set), Ok(()));
}
