//! # occam-shard
//!
//! The shard layer:
//!
//! - [`partition`]: which shard owns a key (by hash, by id range, or by an explicit map).
//! - [`engine`]: the embedded sharded engine — shards executing at once, cross-shard
//!   transactions through the [`protocol`], one documented serial order, a combined root.
//! - [`protocol`]: the cross-shard protocol (deterministic read exchange) as sans-IO state
//!   machines.
//! - [`certificate`]: block certificates — replicas' BLS votes on (chain, shard, height, block hash,
//!   state root) aggregated into one signature and a signer bitmap.
//!
//! ```
//! use occam_engine::crypto::SecretKey;
//! use occam_shard::{QuorumCollector, SignedVote, ValidatorSet, Vote};
//!
//! let keys: Vec<SecretKey> = (0..4u8).map(|i| SecretKey::from_seed(&[i + 1; 32]).unwrap()).collect();
//! let members: Vec<_> = keys.iter().map(|k| (k.public_key(), k.prove_possession())).collect();
//! let set = ValidatorSet::new(&members).unwrap();
//! let vote = Vote { chain_id: 1, shard: 0, epoch: 0, height: 7, block_hash: [1; 32], state_root: [2; 32] };
//!
//! let mut collector = QuorumCollector::new(set.clone(), vote);
//! assert_eq!(collector.add(SignedVote::sign(vote, 0, &keys[0])).unwrap(), None);
//! assert_eq!(collector.add(SignedVote::sign(vote, 1, &keys[1])).unwrap(), None);
//! let certificate = collector.add(SignedVote::sign(vote, 2, &keys[2])).unwrap().expect("3 of 4 is a quorum");
//! certificate.verify(&set).unwrap();
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod certificate;
pub mod engine;
pub mod partition;
pub mod protocol;

pub use certificate::{
    Certificate, CertificateError, DecodeError, QuorumCollector, SignedVote, SignerBitmap, ValidatorSet, Vote, MAX_BITMAP_LEN,
    MAX_VALIDATORS,
};
