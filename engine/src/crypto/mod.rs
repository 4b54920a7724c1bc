//! BLS12-381 signatures: keys, proofs of possession, aggregation and batch verification.
//!
//! Built on `blst` in its minimal-public-key-size variant (`min_pk`: 48-byte public keys in G1,
//! 96-byte signatures in G2) with the proof-of-possession ciphersuite of the IETF BLS draft:
//! messages are signed under [`SIGN_DST`], and a key proves that its owner holds the secret by
//! signing its own encoding under [`POP_DST`]. A key joins an account registry or a validator
//! set only with a valid proof ([`KeyRegistry::register`]), which is what makes aggregating
//! signatures over the same message safe (no rogue-key attack).
//!
//! Points are validated once, when they are decoded: a [`PublicKey`] or [`Signature`] value is
//! always on the curve, in the prime-order subgroup and not the identity, so verification never
//! repeats those checks. Every decoder returns a typed [`CryptoError`] and never panics.
//!
//! `blst` is built with its `no-threads` feature: its own thread pool would compete with the
//! executors' workers and with [`BatchVerifier`]'s pool for the same cores. All parallel
//! verification goes through [`BatchVerifier`], whose thread count the caller chooses.

mod batch;

pub use batch::{BatchVerifier, SignedMessage};

use blst::min_pk;
use blst::BLST_ERROR;
use std::fmt;

/// Length of an encoded (compressed) public key.
pub const PUBLIC_KEY_LEN: usize = 48;
/// Length of an encoded (compressed) signature or proof of possession.
pub const SIGNATURE_LEN: usize = 96;
/// Length of an encoded secret key.
pub const SECRET_KEY_LEN: usize = 32;
/// Domain separation tag of signatures (the proof-of-possession ciphersuite's signing tag).
pub const SIGN_DST: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";
/// Domain separation tag of proofs of possession.
pub const POP_DST: &[u8] = b"BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

/// Why a key, signature or proof was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The encoding has the wrong length.
    #[error("{what}: expected {expected} bytes, got {got}")]
    WrongLength {
        /// What was being decoded.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Length received.
        got: usize,
    },
    /// The bytes are not a valid compressed point (bad flags or coordinates off the curve).
    #[error("{what}: not a point of the curve ({reason})")]
    BadPoint {
        /// What was being decoded.
        what: &'static str,
        /// What blst found wrong.
        reason: &'static str,
    },
    /// The point is on the curve but outside the prime-order subgroup.
    #[error("{what}: point outside the prime-order subgroup")]
    NotInSubgroup {
        /// What was being decoded.
        what: &'static str,
    },
    /// The identity point, which no honest key or signature is.
    #[error("{what}: the identity point is not allowed")]
    Identity {
        /// What was being decoded.
        what: &'static str,
    },
    /// Key material for key generation shorter than 32 bytes, or a secret key out of range.
    #[error("bad secret key material")]
    BadSecretKey,
    /// A proof of possession that does not verify against its key.
    #[error("proof of possession does not verify for this key")]
    BadProofOfPossession,
    /// The key is registered already.
    #[error("public key already registered")]
    DuplicateKey,
    /// A signature (single, aggregate or batch) that does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// An aggregate of nothing, or lists of different lengths.
    #[error("{0}")]
    BadInput(&'static str),
}

/// Maps a blst error met while decoding or checking `what`.
fn decode_error(what: &'static str, e: BLST_ERROR) -> CryptoError {
    match e {
        BLST_ERROR::BLST_POINT_NOT_IN_GROUP => CryptoError::NotInSubgroup { what },
        BLST_ERROR::BLST_PK_IS_INFINITY => CryptoError::Identity { what },
        BLST_ERROR::BLST_POINT_NOT_ON_CURVE => CryptoError::BadPoint { what, reason: "not on the curve" },
        BLST_ERROR::BLST_BAD_ENCODING => CryptoError::BadPoint { what, reason: "bad encoding" },
        BLST_ERROR::BLST_VERIFY_FAIL => CryptoError::BadSignature,
        _ => CryptoError::BadPoint { what, reason: "rejected" },
    }
}

fn check_len(what: &'static str, bytes: &[u8], expected: usize) -> Result<(), CryptoError> {
    if bytes.len() == expected {
        Ok(())
    } else {
        Err(CryptoError::WrongLength { what, expected, got: bytes.len() })
    }
}

/// `n` deterministic signing keys derived from `seed` (for benchmarks and test clusters, not
/// wallets: anyone who knows the seed knows the keys), and their registry, every key admitted
/// with its proof of possession. Signer `i` of a seed is the same key everywhere, so a load
/// client and the nodes it talks to agree on the registry without exchanging it.
pub fn deterministic_signers(n: u32, seed: u64) -> Result<(Vec<SecretKey>, KeyRegistry), CryptoError> {
    use rayon::prelude::*;
    let keys: Vec<SecretKey> = (0..n)
        .into_par_iter()
        .map(|i| {
            let mut material = [0u8; 32];
            material[..8].copy_from_slice(&seed.to_le_bytes());
            material[8..12].copy_from_slice(&i.to_le_bytes());
            material[12..].copy_from_slice(b"occam-bench-signer--");
            SecretKey::from_seed(&material)
        })
        .collect::<Result<_, _>>()?;
    let proofs: Vec<_> = keys.par_iter().map(SecretKey::prove_possession).collect();
    let mut registry = KeyRegistry::new();
    for (k, p) in keys.iter().zip(&proofs) {
        registry.register(k.public_key(), p)?;
    }
    Ok((keys, registry))
}

/// A secret key. Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct SecretKey(min_pk::SecretKey);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public_key())
    }
}

impl SecretKey {
    /// Derives a key from at least 32 bytes of secret key material (IETF `KeyGen`).
    pub fn from_seed(seed: &[u8]) -> Result<Self, CryptoError> {
        min_pk::SecretKey::key_gen(seed, &[]).map(SecretKey).map_err(|_| CryptoError::BadSecretKey)
    }

    /// A fresh key from a cryptographically secure generator.
    pub fn random(rng: &mut (impl rand::RngCore + rand::CryptoRng)) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Self::from_seed(&seed).expect("32 bytes of key material are enough")
    }

    /// The key's 32-byte big-endian scalar.
    pub fn to_bytes(&self) -> [u8; SECRET_KEY_LEN] {
        self.0.to_bytes()
    }

    /// Decodes [`SecretKey::to_bytes`]; rejects zero and out-of-range scalars.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        check_len("secret key", bytes, SECRET_KEY_LEN)?;
        min_pk::SecretKey::from_bytes(bytes).map(SecretKey).map_err(|_| CryptoError::BadSecretKey)
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.sk_to_pk())
    }

    /// Signs `message` under [`SIGN_DST`].
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message, SIGN_DST, &[]))
    }

    /// The proof that the holder of this key knows it: its public key signed under [`POP_DST`].
    pub fn prove_possession(&self) -> ProofOfPossession {
        ProofOfPossession(Signature(self.0.sign(&self.public_key().to_bytes(), POP_DST, &[])))
    }
}

/// A public key, validated when it was made: on the curve, in the subgroup, not the identity.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(min_pk::PublicKey);

impl PublicKey {
    /// Decodes and validates a compressed public key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        check_len("public key", bytes, PUBLIC_KEY_LEN)?;
        min_pk::PublicKey::key_validate(bytes).map(PublicKey).map_err(|e| decode_error("public key", e))
    }

    /// The compressed encoding.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0.compress()
    }

    fn raw(&self) -> &min_pk::PublicKey {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.to_bytes();
        write!(f, "{}…", crate::key::hex_encode(&b[..6]))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl std::hash::Hash for PublicKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.to_bytes().hash(state);
    }
}

/// A signature, validated when it was decoded (in the subgroup, not the identity).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(min_pk::Signature);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", crate::key::hex_encode(&self.to_bytes()[..6]))
    }
}

impl Signature {
    /// Decodes and validates a compressed signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        check_len("signature", bytes, SIGNATURE_LEN)?;
        min_pk::Signature::sig_validate(bytes, true).map(Signature).map_err(|e| decode_error("signature", e))
    }

    /// The compressed encoding.
    pub fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        self.0.compress()
    }

    /// Checks this signature of `message` by `key`.
    pub fn verify(&self, key: &PublicKey, message: &[u8]) -> Result<(), CryptoError> {
        match self.0.verify(false, message, SIGN_DST, &[], key.raw(), false) {
            BLST_ERROR::BLST_SUCCESS => Ok(()),
            _ => Err(CryptoError::BadSignature),
        }
    }

    /// The aggregate (sum) of `signatures`, which may be over different messages.
    pub fn aggregate(signatures: &[Signature]) -> Result<Signature, CryptoError> {
        if signatures.is_empty() {
            return Err(CryptoError::BadInput("aggregate of no signatures"));
        }
        let refs: Vec<&min_pk::Signature> = signatures.iter().map(|s| &s.0).collect();
        let agg = min_pk::AggregateSignature::aggregate(&refs, false).map_err(|e| decode_error("signature", e))?;
        let sig = agg.to_signature();
        // A sum of valid points can still be the identity (a signature and its negation).
        sig.validate(true).map_err(|e| decode_error("aggregate signature", e))?;
        Ok(Signature(sig))
    }

    /// Checks an aggregate of one signature per `(key, message)` pair, messages in any order
    /// and not necessarily distinct (safe because every key proved possession).
    pub fn aggregate_verify(&self, keys: &[&PublicKey], messages: &[&[u8]]) -> Result<(), CryptoError> {
        if keys.is_empty() || keys.len() != messages.len() {
            return Err(CryptoError::BadInput("aggregate verification needs as many messages as keys, at least one"));
        }
        let raw: Vec<&min_pk::PublicKey> = keys.iter().map(|k| k.raw()).collect();
        match self.0.aggregate_verify(false, messages, SIGN_DST, &raw, false) {
            BLST_ERROR::BLST_SUCCESS => Ok(()),
            _ => Err(CryptoError::BadSignature),
        }
    }

    /// Checks an aggregate of signatures of one `message` by all of `keys`.
    pub fn fast_aggregate_verify(&self, keys: &[&PublicKey], message: &[u8]) -> Result<(), CryptoError> {
        if keys.is_empty() {
            return Err(CryptoError::BadInput("fast aggregate verification needs at least one key"));
        }
        let raw: Vec<&min_pk::PublicKey> = keys.iter().map(|k| k.raw()).collect();
        match self.0.fast_aggregate_verify(false, message, SIGN_DST, &raw) {
            BLST_ERROR::BLST_SUCCESS => Ok(()),
            _ => Err(CryptoError::BadSignature),
        }
    }

    fn raw(&self) -> &min_pk::Signature {
        &self.0
    }
}

/// A proof of possession: the key's own encoding signed under [`POP_DST`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ProofOfPossession(Signature);

impl ProofOfPossession {
    /// Decodes and validates a proof (a compressed signature).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        check_len("proof of possession", bytes, SIGNATURE_LEN)?;
        min_pk::Signature::sig_validate(bytes, true)
            .map(|s| ProofOfPossession(Signature(s)))
            .map_err(|e| decode_error("proof of possession", e))
    }

    /// The compressed encoding.
    pub fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        self.0.to_bytes()
    }

    /// Checks the proof against `key`.
    pub fn verify(&self, key: &PublicKey) -> Result<(), CryptoError> {
        match self.0 .0.verify(false, &key.to_bytes(), POP_DST, &[], key.raw(), false) {
            BLST_ERROR::BLST_SUCCESS => Ok(()),
            _ => Err(CryptoError::BadProofOfPossession),
        }
    }
}

/// Public keys admitted with a valid proof of possession, numbered in order of admission: an
/// account registry, or the members of a validator set.
#[derive(Clone, Debug, Default)]
pub struct KeyRegistry {
    keys: Vec<PublicKey>,
    /// Each number's key, compressed (what account owner records hold).
    bytes: Vec<[u8; PUBLIC_KEY_LEN]>,
    index: std::collections::HashMap<[u8; PUBLIC_KEY_LEN], u32>,
}

impl KeyRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits `key` if `proof` shows possession of it; returns its number.
    pub fn register(&mut self, key: PublicKey, proof: &ProofOfPossession) -> Result<u32, CryptoError> {
        if self.index.contains_key(&key.to_bytes()) {
            return Err(CryptoError::DuplicateKey);
        }
        proof.verify(&key)?;
        let id = self.next_id()?;
        self.index.insert(key.to_bytes(), id);
        self.bytes.push(key.to_bytes());
        self.keys.push(key);
        Ok(id)
    }

    /// Registers the key numbered `id` under a new number as well, and returns that number.
    /// Its proof of possession was checked when it was first admitted. For transaction
    /// signers: each number keeps its own nonces, so one owner can send on independent paths
    /// (a shard's leader and the cross-shard coordinator) without one path's transactions
    /// overtaking the other's. A validator set never does this (a member would count twice).
    pub fn register_again(&mut self, id: u32) -> Result<u32, CryptoError> {
        let key = *self.get(id).ok_or(CryptoError::BadInput("no such key to register again"))?;
        let again = self.next_id()?;
        self.bytes.push(self.bytes[id as usize]);
        self.keys.push(key);
        Ok(again)
    }

    fn next_id(&self) -> Result<u32, CryptoError> {
        u32::try_from(self.keys.len()).map_err(|_| CryptoError::BadInput("registry full"))
    }

    /// The compressed key numbered `id`.
    pub fn key_bytes(&self, id: u32) -> Option<&[u8; PUBLIC_KEY_LEN]> {
        self.bytes.get(id as usize)
    }

    /// Decodes a key and its proof and admits them; every failure is a typed error.
    pub fn register_bytes(&mut self, key: &[u8], proof: &[u8]) -> Result<u32, CryptoError> {
        let key = PublicKey::from_bytes(key)?;
        let proof = ProofOfPossession::from_bytes(proof)?;
        self.register(key, &proof)
    }

    /// The key numbered `id`.
    pub fn get(&self, id: u32) -> Option<&PublicKey> {
        self.keys.get(id as usize)
    }

    /// The first number of `key`, if registered.
    pub fn id_of(&self, key: &PublicKey) -> Option<u32> {
        self.index.get(&key.to_bytes()).copied()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True if no key is registered.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// All keys, in order of admission.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }
}

#[cfg(test)]
mod tests;
