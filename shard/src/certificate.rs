//! Block certificates: a quorum of a shard's validators vouching for one block.
//!
//! Each replica signs a [`Vote`] on `(chain, shard, validator-set epoch, height, block hash, state
//! root)` with its BLS key ([`SignedVote`]). The leader collects the votes ([`QuorumCollector`], or
//! [`Certificate::from_votes`] for a batch) and, once strictly more than two thirds of the
//! [`ValidatorSet`] have signed, aggregates them into a [`Certificate`]: the vote, a
//! [`SignerBitmap`] naming the signers and one 96-byte aggregate signature. Anyone holding the
//! validator set checks a certificate with [`Certificate::verify`] at the cost of about one
//! signature verification, whatever the number of signers.
//!
//! Aggregating signatures of one message is safe against rogue keys because a key joins a
//! validator set only with a valid proof of possession ([`ValidatorSet::new`]).
//!
//! A shard's validators change when a replica is replaced. Each set has an **epoch** and names
//! its members by id (a node id in a cluster); votes sign the epoch, and a certificate carries
//! its set's member ids, so whoever holds the members' keys rebuilds the set that signed it
//! ([`ValidatorSet::with_ids`]) and checks it.
//!
//! Everything here is sans-IO: pure functions and state machines over values. Votes and
//! certificates travel in a versioned, bounded wire format ([`Certificate::encode`],
//! [`Certificate::decode`], [`SignedVote::encode`], [`SignedVote::decode`]) whose decoders
//! return a typed [`DecodeError`] and never panic.

mod bitmap;
mod codec;
mod collector;

pub use bitmap::SignerBitmap;
pub use codec::{DecodeError, SIGNED_VOTE_ENCODED_LEN, WIRE_VERSION};
pub use collector::QuorumCollector;

use occam_engine::crypto::{BatchVerifier, CryptoError, KeyRegistry, ProofOfPossession, PublicKey, SecretKey, Signature, SignedMessage};
use std::sync::Arc;

/// The most validators a set may have.
pub const MAX_VALIDATORS: usize = 4096;
/// The longest signer bitmap, in bytes: one bit per validator of the largest set.
pub const MAX_BITMAP_LEN: usize = MAX_VALIDATORS.div_ceil(8);
/// Domain separation prefix of a vote's signing bytes.
pub const VOTE_DOMAIN: &[u8; 14] = b"occam/vote/v3\0";
/// Length of a vote's fields: chain (8), shard (4), epoch (8), height (8), block hash (32),
/// state root (32).
pub const VOTE_FIELDS_LEN: usize = 8 + 4 + 8 + 8 + 32 + 32;
/// Length of [`Vote::signing_bytes`].
pub const SIGNING_BYTES_LEN: usize = VOTE_DOMAIN.len() + VOTE_FIELDS_LEN;

/// Why a validator set, vote or certificate was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// A validator set needs at least one member.
    #[error("a validator set needs at least one member")]
    EmptyValidatorSet,
    /// More members than [`MAX_VALIDATORS`].
    #[error("a validator set has at most {max} members, got {got}")]
    TooManyValidators {
        /// Members offered.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// A member's key appears earlier in the list.
    #[error("validator set member {index}: key already in the set")]
    DuplicateValidator {
        /// Position of the repeated key in the member list.
        index: usize,
    },
    /// A member's proof of possession does not verify for its key.
    #[error("validator set member {index}: proof of possession does not verify for its key")]
    BadProofOfPossession {
        /// Position of the member in the member list.
        index: usize,
    },
    /// The key registry refused a member for another reason.
    #[error("validator set member {index}: {source}")]
    Registry {
        /// Position of the member in the member list.
        index: usize,
        /// What the registry said.
        source: CryptoError,
    },
    /// The signer bitmap is not exactly one bit per validator, rounded up to whole bytes.
    #[error("signer bitmap has {got} bytes, a set of {validators} validators needs {expected}")]
    BitmapLength {
        /// Bytes in the bitmap.
        got: usize,
        /// Bytes the set needs.
        expected: usize,
        /// Size of the set.
        validators: usize,
    },
    /// A signer index that names no member of the set.
    #[error("signer {signer} is outside the validator set of {validators}")]
    SignerOutsideSet {
        /// The index.
        signer: u32,
        /// Size of the set.
        validators: usize,
    },
    /// Fewer signers than the set's quorum.
    #[error("{got} signers, a quorum needs {need}")]
    TooFewSigners {
        /// Distinct signers.
        got: usize,
        /// The set's quorum.
        need: usize,
    },
    /// The aggregate signature does not verify for the signers in the bitmap and the vote.
    #[error("the aggregate signature does not verify for the signers in the bitmap over the vote")]
    BadSignature,
    /// A vote for another (chain, shard, epoch, height, block hash, state root) than the one being certified.
    #[error("validator {signer} voted for a different (chain, shard, epoch, height, block hash, state root)")]
    VoteMismatch {
        /// Who cast the vote.
        signer: u32,
    },
    /// Two votes from the same validator.
    #[error("validator {0} voted twice")]
    DuplicateSigner(u32),
    /// A vote whose signature does not verify for its signer.
    #[error("the vote of validator {0} has a signature that does not verify")]
    BadVoteSignature(u32),
    /// The votes' signatures sum to an invalid aggregate (the identity).
    #[error("the vote signatures do not aggregate: {0}")]
    Aggregate(CryptoError),
    /// The verifier cannot build the set a certificate names (a member it does not know, or
    /// members that may not certify this shard).
    #[error("the certificate's validator set is not one this verifier accepts: {0}")]
    UnknownSet(String),
    /// Member ids not strictly ascending, or not one per member.
    #[error("validator set member ids must be strictly ascending, one per member: {0}")]
    BadMemberIds(String),
    /// A vote or certificate of another validator-set epoch than the set it is checked against.
    #[error("signed in validator-set epoch {signed}, checked against the set of epoch {set}")]
    WrongEpoch {
        /// The epoch the vote names.
        signed: u64,
        /// The set's epoch.
        set: u64,
    },
    /// A certificate naming other members than the set it is checked against.
    #[error("the certificate names validators {named:?}, the set of its epoch has {set:?}")]
    WrongMembers {
        /// The member ids the certificate names.
        named: Vec<u32>,
        /// The set's member ids.
        set: Vec<u32>,
    },
}

/// What a replica signs: a block of a shard of a chain at a height, and the state root it
/// leads to, in one epoch of the shard's validator set. The chain id keeps a vote (and so a
/// certificate) of one chain from counting on another run by the same validators; the epoch
/// keeps a vote from counting for another set than the one its signer belonged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Vote {
    /// The chain.
    pub chain_id: u64,
    /// The shard.
    pub shard: u32,
    /// The validator set's epoch ([`ValidatorSet::epoch`]).
    pub epoch: u64,
    /// The block's height.
    pub height: u64,
    /// The block's hash.
    pub block_hash: [u8; 32],
    /// The state root after executing the block.
    pub state_root: [u8; 32],
}

impl Vote {
    /// The canonical, domain-separated bytes a replica signs: [`VOTE_DOMAIN`], then the chain id
    /// (u64 LE), the shard (u32 LE), the epoch (u64 LE), the height (u64 LE), the block hash and
    /// the state root.
    pub fn signing_bytes(&self) -> [u8; SIGNING_BYTES_LEN] {
        let mut out = [0u8; SIGNING_BYTES_LEN];
        out[..VOTE_DOMAIN.len()].copy_from_slice(VOTE_DOMAIN);
        out[VOTE_DOMAIN.len()..].copy_from_slice(&self.field_bytes());
        out
    }

    /// The vote's fields as they appear in signing bytes and on the wire.
    fn field_bytes(&self) -> [u8; VOTE_FIELDS_LEN] {
        let mut out = [0u8; VOTE_FIELDS_LEN];
        out[..8].copy_from_slice(&self.chain_id.to_le_bytes());
        out[8..12].copy_from_slice(&self.shard.to_le_bytes());
        out[12..20].copy_from_slice(&self.epoch.to_le_bytes());
        out[20..28].copy_from_slice(&self.height.to_le_bytes());
        out[28..60].copy_from_slice(&self.block_hash);
        out[60..].copy_from_slice(&self.state_root);
        out
    }
}

/// The validators of a shard in one epoch: public keys admitted with a valid proof of
/// possession, indexed from 0 in the order given, each with its member id (a node id).
/// Cloning is cheap (the keys are shared).
#[derive(Debug, Clone)]
pub struct ValidatorSet {
    registry: Arc<KeyRegistry>,
    ids: Arc<[u32]>,
    epoch: u64,
}

impl ValidatorSet {
    /// A set of `members` in epoch 0, in this order, with member ids `0..n`. Every member's
    /// proof of possession must verify for its key; duplicate keys, an empty list and more
    /// than [`MAX_VALIDATORS`] members are rejected.
    pub fn new(members: &[(PublicKey, ProofOfPossession)]) -> Result<ValidatorSet, CertificateError> {
        let ids: Vec<u32> = (0..members.len().min(MAX_VALIDATORS + 1) as u32).collect();
        ValidatorSet::with_ids(0, &ids, members)
    }

    /// The set of `epoch` whose members are `members`, with member ids `ids` (strictly
    /// ascending, one per member; signer index `i` is member `ids[i]`). Checked as
    /// [`ValidatorSet::new`] checks, and the ids as said.
    pub fn with_ids(epoch: u64, ids: &[u32], members: &[(PublicKey, ProofOfPossession)]) -> Result<ValidatorSet, CertificateError> {
        if ids.len() != members.len() {
            return Err(CertificateError::BadMemberIds(format!("{} ids for {} members", ids.len(), members.len())));
        }
        if let Some(w) = ids.windows(2).find(|w| w[0] >= w[1]) {
            return Err(CertificateError::BadMemberIds(format!("{} is followed by {}", w[0], w[1])));
        }
        if members.is_empty() {
            return Err(CertificateError::EmptyValidatorSet);
        }
        if members.len() > MAX_VALIDATORS {
            return Err(CertificateError::TooManyValidators { got: members.len(), max: MAX_VALIDATORS });
        }
        let mut registry = KeyRegistry::new();
        for (index, (key, proof)) in members.iter().enumerate() {
            registry.register(*key, proof).map_err(|e| match e {
                CryptoError::DuplicateKey => CertificateError::DuplicateValidator { index },
                CryptoError::BadProofOfPossession => CertificateError::BadProofOfPossession { index },
                source => CertificateError::Registry { index, source },
            })?;
        }
        Ok(ValidatorSet { registry: Arc::new(registry), ids: ids.into(), epoch })
    }

    /// The set's epoch: the votes and certificates of this set name it.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The member ids, by signer index.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// The signer index of member `id`, if it belongs to the set.
    pub fn index_of_id(&self, id: u32) -> Option<u32> {
        self.ids.binary_search(&id).ok().map(|i| i as u32)
    }

    /// Number of validators.
    pub fn len(&self) -> usize {
        self.registry.len()
    }

    /// Always false: a set has at least one member.
    pub fn is_empty(&self) -> bool {
        self.registry.is_empty()
    }

    /// The key of validator `index`.
    pub fn key(&self, index: u32) -> Option<&PublicKey> {
        self.registry.get(index)
    }

    /// The index of `key`, if it belongs to the set.
    pub fn index_of(&self, key: &PublicKey) -> Option<u32> {
        self.registry.id_of(key)
    }

    /// All keys, by index.
    pub fn keys(&self) -> &[PublicKey] {
        self.registry.keys()
    }

    /// The smallest number of validators that is strictly more than two thirds of the set:
    /// `2 * n / 3 + 1`.
    pub fn quorum(&self) -> usize {
        2 * self.len() / 3 + 1
    }

    /// The key of `signer`, or [`CertificateError::SignerOutsideSet`].
    fn signer_key(&self, signer: u32) -> Result<&PublicKey, CertificateError> {
        self.key(signer).ok_or(CertificateError::SignerOutsideSet { signer, validators: self.len() })
    }

    /// [`CertificateError::WrongEpoch`] unless `vote` names this set's epoch.
    fn check_epoch(&self, vote: &Vote) -> Result<(), CertificateError> {
        match vote.epoch == self.epoch {
            true => Ok(()),
            false => Err(CertificateError::WrongEpoch { signed: vote.epoch, set: self.epoch }),
        }
    }
}

/// One validator's signed vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedVote {
    /// What was voted for.
    pub vote: Vote,
    /// The signer's index in the validator set.
    pub signer: u32,
    /// The signer's signature of [`Vote::signing_bytes`].
    pub signature: Signature,
}

impl SignedVote {
    /// Validator `signer` signs `vote` with its key.
    pub fn sign(vote: Vote, signer: u32, key: &SecretKey) -> SignedVote {
        SignedVote { vote, signer, signature: key.sign(&vote.signing_bytes()) }
    }

    /// Checks that the vote names `set`'s epoch, that the signer belongs to `set` and that the
    /// signature verifies for its key.
    pub fn verify(&self, set: &ValidatorSet) -> Result<(), CertificateError> {
        set.check_epoch(&self.vote)?;
        let key = set.signer_key(self.signer)?;
        self.signature.verify(key, &self.vote.signing_bytes()).map_err(|_| CertificateError::BadVoteSignature(self.signer))
    }
}

/// Proof that a quorum of a validator set voted for [`Certificate::vote`]: the set's member
/// ids, the signers and the aggregate of their signatures. Check it with
/// [`Certificate::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// What was certified (naming the set's epoch).
    pub vote: Vote,
    /// The member ids of the set that signed ([`ValidatorSet::ids`]): what a verifier needs to
    /// know whose keys to check it with. Not signed: a certificate verifies only against a set
    /// with exactly these members, so changing them makes it fail.
    pub members: Vec<u32>,
    /// Who signed.
    pub signers: SignerBitmap,
    /// The aggregate of the signers' signatures of [`Vote::signing_bytes`].
    pub signature: Signature,
}

impl Certificate {
    /// Checks the certificate against `set`: the set's epoch and members, a bitmap of exactly
    /// the set's size with no bit beyond it, at least a quorum of signers, and an aggregate
    /// signature that verifies for exactly those signers over the vote's signing bytes. Costs
    /// about one signature verification plus one point addition per signer.
    pub fn verify(&self, set: &ValidatorSet) -> Result<(), CertificateError> {
        set.check_epoch(&self.vote)?;
        if self.members != set.ids() {
            return Err(CertificateError::WrongMembers { named: self.members.clone(), set: set.ids().to_vec() });
        }
        let validators = set.len();
        let expected = SignerBitmap::len_for(validators);
        if self.signers.as_bytes().len() != expected {
            return Err(CertificateError::BitmapLength { got: self.signers.as_bytes().len(), expected, validators });
        }
        let keys = self.signers.iter().map(|signer| set.signer_key(signer)).collect::<Result<Vec<&PublicKey>, _>>()?;
        if keys.len() < set.quorum() {
            return Err(CertificateError::TooFewSigners { got: keys.len(), need: set.quorum() });
        }
        self.signature.fast_aggregate_verify(&keys, &self.vote.signing_bytes()).map_err(|_| CertificateError::BadSignature)
    }

    /// Aggregates `votes` into a certificate. The votes must all be for the same [`Vote`],
    /// come from distinct members of `set`, reach its quorum and carry valid signatures. The
    /// signatures are checked in one batch on `verifier` if one is given, one by one
    /// otherwise; the first bad one is named ([`CertificateError::BadVoteSignature`]).
    pub fn from_votes(set: &ValidatorSet, votes: &[SignedVote], verifier: Option<&BatchVerifier>) -> Result<Certificate, CertificateError> {
        let need = set.quorum();
        let Some(first) = votes.first() else {
            return Err(CertificateError::TooFewSigners { got: 0, need });
        };
        let vote = first.vote;
        set.check_epoch(&vote)?;
        let mut signers = SignerBitmap::for_set(set);
        let mut keys = Vec::with_capacity(votes.len());
        for v in votes {
            if v.vote != vote {
                return Err(CertificateError::VoteMismatch { signer: v.signer });
            }
            keys.push(set.signer_key(v.signer)?);
            if signers.contains(v.signer) {
                return Err(CertificateError::DuplicateSigner(v.signer));
            }
            signers.set(v.signer, true);
        }
        if votes.len() < need {
            return Err(CertificateError::TooFewSigners { got: votes.len(), need });
        }
        let message = vote.signing_bytes();
        match verifier {
            Some(verifier) => {
                let items: Vec<SignedMessage<'_>> =
                    votes.iter().zip(&keys).map(|(v, key)| SignedMessage { key, message: &message, signature: &v.signature }).collect();
                let verdicts = verifier.verify(&items);
                if let Some((v, _)) = votes.iter().zip(&verdicts).find(|(_, ok)| !**ok) {
                    return Err(CertificateError::BadVoteSignature(v.signer));
                }
            }
            None => {
                for (v, key) in votes.iter().zip(&keys) {
                    v.signature.verify(key, &message).map_err(|_| CertificateError::BadVoteSignature(v.signer))?;
                }
            }
        }
        let signatures: Vec<Signature> = votes.iter().map(|v| v.signature).collect();
        let signature = Signature::aggregate(&signatures).map_err(CertificateError::Aggregate)?;
        Ok(Certificate { vote, members: set.ids().to_vec(), signers, signature })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_bytes_layout() {
        let vote = Vote {
            chain_id: 0x1817_1615_1413_1211,
            shard: 0x0403_0201,
            epoch: 0x2827_2625_2423_2221,
            height: 0x0c0b_0a09_0807_0605,
            block_hash: [0xaa; 32],
            state_root: [0xbb; 32],
        };
        let b = vote.signing_bytes();
        assert_eq!(&b[..14], b"occam/vote/v3\0");
        assert_eq!(&b[14..22], &[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]);
        assert_eq!(&b[22..26], &[1, 2, 3, 4]);
        assert_eq!(&b[26..34], &[0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28]);
        assert_eq!(&b[34..42], &[5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(&b[42..74], &[0xaa; 32]);
        assert_eq!(&b[74..], &[0xbb; 32]);
    }

    #[test]
    fn quorum_is_more_than_two_thirds() {
        for n in 1..=64usize {
            let q = 2 * n / 3 + 1;
            assert!(3 * q > 2 * n, "n = {n}");
            assert!(3 * (q - 1) <= 2 * n, "n = {n}");
        }
    }
}
