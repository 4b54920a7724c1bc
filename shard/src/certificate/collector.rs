//! The leader's vote collector.

use super::{Certificate, CertificateError, SignedVote, SignerBitmap, ValidatorSet, Vote, SIGNING_BYTES_LEN};
use occam_engine::crypto::Signature;

/// Collects the votes for one [`Vote`] until a quorum of the set has signed, then hands out the
/// certificate, once. A sans-IO state machine: feed it votes as they arrive with
/// [`QuorumCollector::add`].
///
/// Every vote is checked before it is stored (same vote, known signer, first vote of that
/// signer, valid signature); a vote that fails leaves the collector as it was.
#[derive(Debug, Clone)]
pub struct QuorumCollector {
    set: ValidatorSet,
    vote: Vote,
    message: [u8; SIGNING_BYTES_LEN],
    signers: SignerBitmap,
    signatures: Vec<Signature>,
    certificate: Option<Certificate>,
}

impl QuorumCollector {
    /// A collector of votes for `vote` by the members of `set` (cloning a set is cheap).
    pub fn new(set: ValidatorSet, vote: Vote) -> QuorumCollector {
        let signers = SignerBitmap::for_set(&set);
        QuorumCollector {
            message: vote.signing_bytes(),
            signatures: Vec::with_capacity(set.quorum()),
            set,
            vote,
            signers,
            certificate: None,
        }
    }

    /// Checks and stores `v`. Returns the certificate when `v` completes the quorum, exactly
    /// once; `Ok(None)` before and after. An error leaves the collector unchanged.
    pub fn add(&mut self, v: SignedVote) -> Result<Option<Certificate>, CertificateError> {
        if v.vote != self.vote {
            return Err(CertificateError::VoteMismatch { signer: v.signer });
        }
        self.set.check_epoch(&v.vote)?;
        let key = self.set.key(v.signer).ok_or(CertificateError::SignerOutsideSet { signer: v.signer, validators: self.set.len() })?;
        if self.signers.contains(v.signer) {
            return Err(CertificateError::DuplicateSigner(v.signer));
        }
        v.signature.verify(key, &self.message).map_err(|_| CertificateError::BadVoteSignature(v.signer))?;
        if self.certificate.is_none() && self.signatures.len() + 1 == self.set.quorum() {
            let mut all = self.signatures.clone();
            all.push(v.signature);
            let signature = Signature::aggregate(&all).map_err(CertificateError::Aggregate)?;
            let mut signers = self.signers.clone();
            signers.set(v.signer, true);
            let certificate = Certificate { vote: self.vote, members: self.set.ids().to_vec(), signers, signature };
            self.store(v);
            self.certificate = Some(certificate.clone());
            return Ok(Some(certificate));
        }
        self.store(v);
        Ok(None)
    }

    fn store(&mut self, v: SignedVote) {
        self.signers.set(v.signer, true);
        self.signatures.push(v.signature);
    }

    /// The vote being collected.
    pub fn vote(&self) -> &Vote {
        &self.vote
    }

    /// The validator set.
    pub fn set(&self) -> &ValidatorSet {
        &self.set
    }

    /// The validators whose votes were accepted so far.
    pub fn signers(&self) -> &SignerBitmap {
        &self.signers
    }

    /// Number of votes accepted so far.
    pub fn count(&self) -> usize {
        self.signatures.len()
    }

    /// The certificate, once the quorum was reached (the one [`QuorumCollector::add`] returned).
    pub fn certificate(&self) -> Option<&Certificate> {
        self.certificate.as_ref()
    }
}
