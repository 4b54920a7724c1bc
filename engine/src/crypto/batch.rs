//! Batch verification with random linear combinations, a verdict per signature.
//!
//! `n` signatures are checked together by `verify_multiple_aggregate_signatures`: each pair is
//! weighted by a fresh random 64-bit scalar, and the products of pairings collapse into one
//! final exponentiation, so a batch costs about `n` Miller loops plus one exponentiation
//! instead of `n` of each. A forger who does not know the scalars in advance passes with
//! probability about 2^-64.
//!
//! A batch is split into one chunk per thread of the verifier's own pool. A chunk that fails is
//! bisected: halves are checked as batches again, down to single signatures, so the verdicts
//! name exactly the bad ones, at a cost of about `log2(n)` extra batch checks per isolated bad
//! signature; where both halves fail, the rest is checked one signature at a time (see
//! `bisect`), so that a block of forgeries costs little more than verifying it plainly.

use super::{CryptoError, PublicKey, Signature, SIGN_DST};
use blst::{blst_fp12, blst_p1_affine, blst_p2_affine, blst_scalar, min_pk, Pairing, BLST_ERROR};
use rand::RngCore;
use rayon::prelude::*;

/// One signature to check: who signed what.
#[derive(Clone, Copy, Debug)]
pub struct SignedMessage<'a> {
    /// The signer's (validated) key.
    pub key: &'a PublicKey,
    /// The signed bytes.
    pub message: &'a [u8],
    /// The (validated) signature.
    pub signature: &'a Signature,
}

/// Below this many signatures per thread, a batch is not split further.
const MIN_CHUNK: usize = 16;

/// Verifies batches of signatures on a pool of its own threads.
pub struct BatchVerifier {
    pool: rayon::ThreadPool,
    threads: usize,
}

impl std::fmt::Debug for BatchVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchVerifier").field("threads", &self.threads).finish()
    }
}

impl BatchVerifier {
    /// A verifier on `threads` threads (at least one; named `occam-verify-N`).
    pub fn new(threads: usize) -> Result<Self, CryptoError> {
        let threads = threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("occam-verify-{i}"))
            .build()
            .map_err(|_| CryptoError::BadInput("could not start the verifier's threads"))?;
        Ok(BatchVerifier { pool, threads })
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Checks every signature; `verdicts[i]` is true exactly when `items[i]` verifies.
    pub fn verify(&self, items: &[SignedMessage<'_>]) -> Vec<bool> {
        let mut verdicts = vec![false; items.len()];
        if items.is_empty() {
            return verdicts;
        }
        let chunk = items.len().div_ceil(self.threads).max(MIN_CHUNK);
        self.pool.install(|| {
            items.par_chunks(chunk).zip(verdicts.par_chunks_mut(chunk)).for_each(|(items, out)| {
                let mut rng = rand::thread_rng();
                if batch_ok(items, &mut rng) {
                    out.fill(true);
                } else {
                    bisect(items, out, &mut rng);
                }
            });
        });
        verdicts
    }

    /// Checks one aggregate `signature` of `messages[i]` by `keys[i]` for every `i` (an
    /// aggregated block), on all the verifier's threads: each thread accumulates the Miller
    /// loops of its share of the pairs, the accumulators are merged, and one final
    /// exponentiation compares the product with the signature's pairing. The same check as
    /// [`Signature::aggregate_verify`], which runs on one thread.
    pub fn aggregate_verify(&self, signature: &Signature, keys: &[&PublicKey], messages: &[&[u8]]) -> Result<(), CryptoError> {
        if keys.is_empty() || keys.len() != messages.len() {
            return Err(CryptoError::BadInput("aggregate verification needs as many messages as keys, at least one"));
        }
        let chunk = keys.len().div_ceil(self.threads).max(MIN_CHUNK);
        let merged = self.pool.install(|| {
            keys.par_chunks(chunk)
                .zip(messages.par_chunks(chunk))
                .map(|(keys, messages)| {
                    let mut acc = Pairing::new(true, SIGN_DST);
                    for (key, message) in keys.iter().zip(messages) {
                        let point: &blst_p1_affine = key.raw().into();
                        // No signature with the pairs (the signature is paired once, below);
                        // keys were validated when decoded.
                        let no_signature: Option<&blst_p2_affine> = None;
                        if acc.aggregate(point, false, &no_signature, false, message, &[]) != BLST_ERROR::BLST_SUCCESS {
                            return None;
                        }
                    }
                    acc.commit();
                    Some(acc)
                })
                .reduce_with(|a, b| {
                    let (mut a, b) = (a?, b?);
                    (a.merge(&b) == BLST_ERROR::BLST_SUCCESS).then_some(a)
                })
        });
        let Some(Some(acc)) = merged else { return Err(CryptoError::BadSignature) };
        let mut signature_pairing = blst_fp12::default();
        let point: &blst_p2_affine = signature.raw().into();
        Pairing::aggregated(&mut signature_pairing, point);
        if acc.finalverify(Some(&signature_pairing)) {
            Ok(())
        } else {
            Err(CryptoError::BadSignature)
        }
    }

    /// True if every signature verifies (no bisection: the caller only wants a yes or no).
    pub fn verify_all(&self, items: &[SignedMessage<'_>]) -> bool {
        self.verify_groups(&[items])[0]
    }

    /// Checks each group as a whole: `verdicts[g]` is true exactly when every signature of
    /// `groups[g]` verifies. No bisection: a group with a bad signature costs one batch check
    /// per chunk, whoever's it is (a node refuses a client batch whole on a bad signature). The
    /// groups are checked side by side on the verifier's threads, large ones split into chunks.
    pub fn verify_groups(&self, groups: &[&[SignedMessage<'_>]]) -> Vec<bool> {
        let total: usize = groups.iter().map(|g| g.len()).sum();
        let chunk = total.div_ceil(self.threads).max(MIN_CHUNK);
        let work: Vec<(usize, &[SignedMessage<'_>])> =
            groups.iter().enumerate().flat_map(|(g, items)| items.chunks(chunk).map(move |c| (g, c))).collect();
        let ok: Vec<bool> = self.pool.install(|| work.par_iter().map(|(_, c)| batch_ok(c, &mut rand::thread_rng())).collect());
        let mut verdicts = vec![true; groups.len()];
        for ((g, _), ok) in work.iter().zip(ok) {
            verdicts[*g] &= ok;
        }
        verdicts
    }
}

/// Finds the bad signatures of a batch known to fail; `out` gets one verdict per item.
///
/// When the left half passes, the right half must hold a bad signature and is bisected without
/// being checked as a whole. When both halves fail, bad signatures are dense (a hostile block,
/// say) and halving further would cost more than it saves: each half is then checked one
/// signature at a time, which bounds the cost of an all-bad batch at about two batch passes
/// plus one single verification per signature.
fn bisect(items: &[SignedMessage<'_>], out: &mut [bool], rng: &mut impl RngCore) {
    if items.len() == 1 {
        out[0] = single_ok(&items[0]);
        return;
    }
    let mid = items.len() / 2;
    let (left, right) = items.split_at(mid);
    let (out_left, out_right) = out.split_at_mut(mid);
    if batch_ok(left, rng) {
        out_left.fill(true);
        bisect(right, out_right, rng);
    } else if batch_ok(right, rng) {
        out_right.fill(true);
        bisect(left, out_left, rng);
    } else {
        for (item, verdict) in items.iter().zip(out.iter_mut()) {
            *verdict = single_ok(item);
        }
    }
}

fn single_ok(item: &SignedMessage<'_>) -> bool {
    item.signature.verify(item.key, item.message).is_ok()
}

/// One random-linear-combination check of `items`.
fn batch_ok(items: &[SignedMessage<'_>], rng: &mut impl RngCore) -> bool {
    match items {
        [] => true,
        [one] => single_ok(one),
        _ => {
            let messages: Vec<&[u8]> = items.iter().map(|i| i.message).collect();
            let keys: Vec<&min_pk::PublicKey> = items.iter().map(|i| i.key.raw()).collect();
            let signatures: Vec<&min_pk::Signature> = items.iter().map(|i| i.signature.raw()).collect();
            let scalars: Vec<blst_scalar> = items
                .iter()
                .map(|_| {
                    let mut b = [0u8; 32];
                    // Non-zero: a zero weight would drop its signature from the check.
                    let r = std::iter::repeat_with(|| rng.next_u64()).find(|&r| r != 0).expect("an endless generator");
                    b[..8].copy_from_slice(&r.to_le_bytes());
                    blst_scalar { b }
                })
                .collect();
            min_pk::Signature::verify_multiple_aggregate_signatures(&messages, SIGN_DST, &keys, false, &signatures, false, &scalars, 64)
                == BLST_ERROR::BLST_SUCCESS
        }
    }
}
