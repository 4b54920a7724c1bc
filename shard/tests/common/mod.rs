//! Deterministic validator sets and votes shared by the integration tests.
#![allow(dead_code)]

use occam_engine::crypto::SecretKey;
use occam_shard::{SignedVote, ValidatorSet, Vote};

/// The secret key of test validator `i` (distinct seeds, deterministic).
pub fn secret(i: u32) -> SecretKey {
    let mut seed = [0x5au8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    SecretKey::from_seed(&seed).expect("32 bytes of key material")
}

/// `n` validators: their secret keys and the set of their public keys.
pub fn validators(n: u32) -> (Vec<SecretKey>, ValidatorSet) {
    let keys: Vec<SecretKey> = (0..n).map(secret).collect();
    let members: Vec<_> = keys.iter().map(|k| (k.public_key(), k.prove_possession())).collect();
    let set = ValidatorSet::new(&members).expect("valid members");
    (keys, set)
}

/// The vote most tests certify.
pub fn vote() -> Vote {
    Vote { chain_id: 7, shard: 3, epoch: 0, height: 1_000, block_hash: [0x11; 32], state_root: [0x22; 32] }
}

/// Validator `i` signs `vote`.
pub fn signed(keys: &[SecretKey], vote: Vote, i: u32) -> SignedVote {
    SignedVote::sign(vote, i, &keys[i as usize])
}

/// Votes of validators `0..count`.
pub fn votes(keys: &[SecretKey], vote: Vote, count: u32) -> Vec<SignedVote> {
    (0..count).map(|i| signed(keys, vote, i)).collect()
}
