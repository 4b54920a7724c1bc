//! The wire format of votes and certificates: versioned and bounded.
//!
//! ```text
//! signed vote:  version (1) | vote (92) | signer u32 LE (4) | signature (96)
//! certificate:  version (1) | vote (92) | members u16 LE (2) | member ids u32 LE… |
//!               bitmap length u16 LE (2) | bitmap | signature (96)
//! vote:         chain u64 LE | shard u32 LE | epoch u64 LE | height u64 LE | block hash (32) |
//!               state root (32)
//! ```
//!
//! Decoding checks lengths before it copies anything, so it allocates at most
//! [`MAX_VALIDATORS`] member ids and the bitmap's [`MAX_BITMAP_LEN`] bytes, never panics, and rejects trailing bytes: whatever decodes
//! re-encodes to the same bytes. Signatures are validated points (in the subgroup, not the
//! identity) once decoded; whether they verify is [`Certificate::verify`]'s business.

use super::{Certificate, SignedVote, SignerBitmap, Vote, MAX_BITMAP_LEN, MAX_VALIDATORS, VOTE_FIELDS_LEN};
use occam_engine::crypto::{CryptoError, Signature, SIGNATURE_LEN};

/// The version byte that starts every encoding (2: votes name their chain; 3: votes name their
/// validator-set epoch, certificates their set's members).
pub const WIRE_VERSION: u8 = 3;
/// Length of an encoded [`SignedVote`].
pub const SIGNED_VOTE_ENCODED_LEN: usize = 1 + VOTE_FIELDS_LEN + 4 + SIGNATURE_LEN;

/// Why bytes do not decode as a vote or certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The version byte is not [`WIRE_VERSION`].
    #[error("unknown wire version {0} (expected {WIRE_VERSION})")]
    UnknownVersion(u8),
    /// The input ends inside a field.
    #[error("input truncated while reading the {what}: needed {need} bytes, {left} left")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Its length.
        need: usize,
        /// Bytes left in the input.
        left: usize,
    },
    /// A signer bitmap longer than [`MAX_BITMAP_LEN`].
    #[error("signer bitmap of {len} bytes, at most {max} allowed")]
    BitmapTooLong {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More member ids than [`MAX_VALIDATORS`].
    #[error("{len} validator set members, at most {max} allowed")]
    TooManyMembers {
        /// Announced count.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes after the end of the encoding.
    #[error("{0} trailing bytes after the encoding")]
    TrailingBytes(usize),
    /// The signature bytes are not a valid signature point.
    #[error("bad signature point: {0}")]
    BadSignature(#[source] CryptoError),
}

/// Reads fields off the front of the input.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, need: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < need {
            return Err(DecodeError::Truncated { what, need, left: self.rest.len() });
        }
        let (head, rest) = self.rest.split_at(need);
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn version(&mut self) -> Result<(), DecodeError> {
        match self.array::<1>("version byte")? {
            [WIRE_VERSION] => Ok(()),
            [v] => Err(DecodeError::UnknownVersion(v)),
        }
    }

    fn vote(&mut self) -> Result<Vote, DecodeError> {
        Ok(Vote {
            chain_id: u64::from_le_bytes(self.array("chain id")?),
            shard: u32::from_le_bytes(self.array("shard")?),
            epoch: u64::from_le_bytes(self.array("epoch")?),
            height: u64::from_le_bytes(self.array("height")?),
            block_hash: self.array("block hash")?,
            state_root: self.array("state root")?,
        })
    }

    fn signature(&mut self) -> Result<Signature, DecodeError> {
        Signature::from_bytes(self.take(SIGNATURE_LEN, "signature")?).map_err(DecodeError::BadSignature)
    }

    fn finish(self) -> Result<(), DecodeError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

impl SignedVote {
    /// The wire encoding ([`SIGNED_VOTE_ENCODED_LEN`] bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SIGNED_VOTE_ENCODED_LEN);
        out.push(WIRE_VERSION);
        out.extend_from_slice(&self.vote.field_bytes());
        out.extend_from_slice(&self.signer.to_le_bytes());
        out.extend_from_slice(&self.signature.to_bytes());
        out
    }

    /// Decodes [`SignedVote::encode`]; the signature is a valid point but not yet checked.
    pub fn decode(bytes: &[u8]) -> Result<SignedVote, DecodeError> {
        let mut r = Reader { rest: bytes };
        r.version()?;
        let vote = r.vote()?;
        let signer = u32::from_le_bytes(r.array("signer index")?);
        let signature = r.signature()?;
        r.finish()?;
        Ok(SignedVote { vote, signer, signature })
    }
}

impl Certificate {
    /// The wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        let bitmap = self.signers.as_bytes();
        let mut out = Vec::with_capacity(1 + VOTE_FIELDS_LEN + 2 + 4 * self.members.len() + 2 + bitmap.len() + SIGNATURE_LEN);
        out.push(WIRE_VERSION);
        out.extend_from_slice(&self.vote.field_bytes());
        // Every certificate comes from a set of at most MAX_VALIDATORS (4,096) members.
        out.extend_from_slice(&(self.members.len().min(MAX_VALIDATORS) as u16).to_le_bytes());
        for id in self.members.iter().take(MAX_VALIDATORS) {
            out.extend_from_slice(&id.to_le_bytes());
        }
        // A bitmap never exceeds MAX_BITMAP_LEN (512) bytes, so its length fits a u16.
        out.extend_from_slice(&(bitmap.len() as u16).to_le_bytes());
        out.extend_from_slice(bitmap);
        out.extend_from_slice(&self.signature.to_bytes());
        out
    }

    /// Decodes [`Certificate::encode`]. Only the encoding is checked (the signature is a valid
    /// point, the bitmap within bounds): check the certificate with [`Certificate::verify`].
    pub fn decode(bytes: &[u8]) -> Result<Certificate, DecodeError> {
        let mut r = Reader { rest: bytes };
        r.version()?;
        let vote = r.vote()?;
        let count = usize::from(u16::from_le_bytes(r.array("member count")?));
        if count > MAX_VALIDATORS {
            return Err(DecodeError::TooManyMembers { len: count, max: MAX_VALIDATORS });
        }
        let ids = r.take(4 * count, "member ids")?;
        let members = ids.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let len = usize::from(u16::from_le_bytes(r.array("bitmap length")?));
        if len > MAX_BITMAP_LEN {
            return Err(DecodeError::BitmapTooLong { len, max: MAX_BITMAP_LEN });
        }
        let signers = SignerBitmap::from_bytes(r.take(len, "signer bitmap")?)?;
        let signature = r.signature()?;
        r.finish()?;
        Ok(Certificate { vote, members, signers, signature })
    }
}
