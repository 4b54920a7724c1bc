//! The wire codec: every decode error on hand-made inputs, and proptest fuzzing of both
//! decoders with arbitrary and mutated inputs.

mod common;

use common::{signed, validators, vote};
use occam_engine::crypto::CryptoError;
use occam_shard::certificate::{DecodeError, SIGNED_VOTE_ENCODED_LEN};
use occam_shard::{Certificate, QuorumCollector, SignedVote, MAX_BITMAP_LEN};
use proptest::prelude::*;
use std::sync::OnceLock;

/// A valid encoded certificate (7 validators, 5 signers) and a valid encoded signed vote.
fn samples() -> &'static (Vec<u8>, Vec<u8>) {
    static SAMPLES: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let (keys, set) = validators(7);
        let mut collector = QuorumCollector::new(set, vote());
        let certificate = (0..5).filter_map(|i| collector.add(signed(&keys, vote(), i)).unwrap()).next().unwrap();
        (certificate.encode(), signed(&keys, vote(), 6).encode())
    })
}

fn certificate_bytes() -> Vec<u8> {
    samples().0.clone()
}

fn vote_bytes() -> Vec<u8> {
    samples().1.clone()
}

/// Offset of the member count in a certificate encoding.
const MEMBERS_AT: usize = 1 + 92;
/// Offset of the bitmap length in a certificate encoding of the 7-validator sample.
const BITMAP_LEN_AT: usize = MEMBERS_AT + 2 + 4 * 7;

#[test]
fn samples_decode() {
    let certificate = Certificate::decode(&certificate_bytes()).unwrap();
    assert_eq!(certificate.encode(), certificate_bytes());
    assert_eq!(vote_bytes().len(), SIGNED_VOTE_ENCODED_LEN);
    assert_eq!(SignedVote::decode(&vote_bytes()).unwrap().encode(), vote_bytes());
}

#[test]
fn decode_rejects_unknown_version() {
    for version in [0u8, 1, 2, 4, 0xff] {
        let mut c = certificate_bytes();
        c[0] = version;
        assert_eq!(Certificate::decode(&c), Err(DecodeError::UnknownVersion(version)));
        let mut v = vote_bytes();
        v[0] = version;
        assert_eq!(SignedVote::decode(&v), Err(DecodeError::UnknownVersion(version)));
    }
}

#[test]
fn decode_rejects_empty_input() {
    assert_eq!(Certificate::decode(&[]), Err(DecodeError::Truncated { what: "version byte", need: 1, left: 0 }));
    assert_eq!(SignedVote::decode(&[]), Err(DecodeError::Truncated { what: "version byte", need: 1, left: 0 }));
}

#[test]
fn decode_rejects_every_truncation() {
    let c = certificate_bytes();
    for len in 0..c.len() {
        assert!(matches!(Certificate::decode(&c[..len]), Err(DecodeError::Truncated { .. })), "certificate cut to {len}");
    }
    let v = vote_bytes();
    for len in 0..v.len() {
        assert!(matches!(SignedVote::decode(&v[..len]), Err(DecodeError::Truncated { .. })), "signed vote cut to {len}");
    }
    // The error names the field being read.
    assert_eq!(Certificate::decode(&c[..18]), Err(DecodeError::Truncated { what: "epoch", need: 8, left: 5 }));
    assert_eq!(Certificate::decode(&c[..26]), Err(DecodeError::Truncated { what: "height", need: 8, left: 5 }));
    assert_eq!(Certificate::decode(&c[..MEMBERS_AT + 3]), Err(DecodeError::Truncated { what: "member ids", need: 28, left: 1 }));
    assert_eq!(Certificate::decode(&c[..BITMAP_LEN_AT + 2]), Err(DecodeError::Truncated { what: "signer bitmap", need: 1, left: 0 }));
    assert_eq!(Certificate::decode(&c[..c.len() - 1]), Err(DecodeError::Truncated { what: "signature", need: 96, left: 95 }));
    assert_eq!(SignedVote::decode(&v[..96]), Err(DecodeError::Truncated { what: "signer index", need: 4, left: 3 }));
}

#[test]
fn decode_rejects_member_count_over_limit() {
    let mut c = certificate_bytes();
    for len in [occam_shard::MAX_VALIDATORS + 1, u16::MAX as usize] {
        c[MEMBERS_AT..MEMBERS_AT + 2].copy_from_slice(&(len as u16).to_le_bytes());
        assert_eq!(Certificate::decode(&c), Err(DecodeError::TooManyMembers { len, max: occam_shard::MAX_VALIDATORS }));
    }
}

#[test]
fn decode_rejects_bitmap_length_over_limit() {
    let mut c = certificate_bytes();
    for len in [MAX_BITMAP_LEN + 1, u16::MAX as usize] {
        c[BITMAP_LEN_AT..BITMAP_LEN_AT + 2].copy_from_slice(&(len as u16).to_le_bytes());
        assert_eq!(Certificate::decode(&c), Err(DecodeError::BitmapTooLong { len, max: MAX_BITMAP_LEN }));
    }
}

#[test]
fn decode_accepts_bitmap_at_limit() {
    let c = certificate_bytes();
    let mut long = c[..BITMAP_LEN_AT].to_vec();
    long.extend_from_slice(&(MAX_BITMAP_LEN as u16).to_le_bytes());
    long.extend_from_slice(&[0xff; MAX_BITMAP_LEN]);
    long.extend_from_slice(&c[c.len() - 96..]);
    let decoded = Certificate::decode(&long).unwrap();
    assert_eq!(decoded.signers.as_bytes().len(), MAX_BITMAP_LEN);
    assert_eq!(decoded.encode(), long);
}

#[test]
fn decode_rejects_trailing_bytes() {
    let mut c = certificate_bytes();
    c.extend_from_slice(&[0, 0, 0]);
    assert_eq!(Certificate::decode(&c), Err(DecodeError::TrailingBytes(3)));
    let mut v = vote_bytes();
    v.push(0);
    assert_eq!(SignedVote::decode(&v), Err(DecodeError::TrailingBytes(1)));
}

#[test]
fn decode_rejects_bad_signature_points() {
    let mut identity = [0u8; 96];
    identity[0] = 0xc0;
    type Expected = fn(&CryptoError) -> bool;
    let cases: [([u8; 96], Expected); 3] = [
        ([0u8; 96], |e| matches!(e, CryptoError::BadPoint { .. })),
        ([0xff; 96], |e| matches!(e, CryptoError::BadPoint { .. })),
        (identity, |e| matches!(e, CryptoError::Identity { .. })),
    ];
    for (signature, expected) in cases {
        let mut c = certificate_bytes();
        let at = c.len() - 96;
        c[at..].copy_from_slice(&signature);
        match Certificate::decode(&c) {
            Err(DecodeError::BadSignature(e)) => assert!(expected(&e), "{e:?}"),
            other => panic!("expected a bad signature point, got {other:?}"),
        }
        let mut v = vote_bytes();
        let at = v.len() - 96;
        v[at..].copy_from_slice(&signature);
        match SignedVote::decode(&v) {
            Err(DecodeError::BadSignature(e)) => assert!(expected(&e), "{e:?}"),
            other => panic!("expected a bad signature point, got {other:?}"),
        }
    }
}

#[test]
fn decode_is_only_structural() {
    // A flipped vote field or bitmap bit still decodes (and re-encodes): verify, not decode,
    // is what rejects it.
    let (_, set) = validators(7);
    for at in [5, 30, MEMBERS_AT + 6, BITMAP_LEN_AT + 2] {
        let mut c = certificate_bytes();
        c[at] ^= 0x40;
        let decoded = Certificate::decode(&c).unwrap();
        assert_eq!(decoded.encode(), c);
        assert!(decoded.verify(&set).is_err());
    }
}

/// One change to a valid encoding.
#[derive(Debug, Clone)]
enum Mutation {
    /// Flip bit `bit` of byte `at` (modulo the length).
    Flip { at: usize, bit: u8 },
    /// Overwrite byte `at` (modulo the length).
    Set { at: usize, byte: u8 },
    /// Keep the first `len` bytes (modulo length + 1).
    Truncate { len: usize },
    /// Append bytes.
    Extend { bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        proptest::collection::vec(any::<u8>(), 1..40).prop_map(|bytes| Mutation::Extend { bytes }),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        match m {
            Mutation::Flip { at, bit } if !bytes.is_empty() => {
                let i = at % bytes.len();
                bytes[i] ^= 1 << bit;
            }
            Mutation::Set { at, byte } if !bytes.is_empty() => {
                let i = at % bytes.len();
                bytes[i] = *byte;
            }
            Mutation::Truncate { len } => bytes.truncate(len % (bytes.len() + 1)),
            Mutation::Extend { bytes: more } => bytes.extend_from_slice(more),
            _ => {}
        }
    }
    bytes
}

/// Both decoders on `bytes`: no panic, and whatever decodes re-encodes to the same bytes.
fn check_decoders(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(certificate) = Certificate::decode(bytes) {
        prop_assert_eq!(certificate.encode(), bytes);
    }
    if let Ok(vote) = SignedVote::decode(bytes) {
        prop_assert_eq!(vote.encode(), bytes);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn fuzz_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        check_decoders(&bytes)?;
    }

    #[test]
    fn fuzz_arbitrary_bytes_after_valid_header(tail in proptest::collection::vec(any::<u8>(), 0..600)) {
        // Version 1 and a plausible vote, so the decoders get past the first fields.
        let mut bytes = certificate_bytes()[..BITMAP_LEN_AT].to_vec();
        bytes.extend_from_slice(&tail);
        check_decoders(&bytes)?;
    }

    #[test]
    fn fuzz_mutated_certificates(mutations in proptest::collection::vec(mutation(), 1..4)) {
        check_decoders(&mutate(certificate_bytes(), &mutations))?;
    }

    #[test]
    fn fuzz_mutated_signed_votes(mutations in proptest::collection::vec(mutation(), 1..4)) {
        check_decoders(&mutate(vote_bytes(), &mutations))?;
    }
}
