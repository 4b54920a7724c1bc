//! Signed native transactions, replay protection, and the two block forms with their codecs.
//!
//! A [`SignedTx`] carries its signer (a number in the chain's [`KeyRegistry`], admitted with a
//! proof of possession), a nonce and a BLS signature over [`TxHeader::signing_bytes`]: a
//! domain-separated, canonical encoding that includes the chain id, so a transaction signed for
//! one chain is worthless on another. [`SignedVm`] executes verified transactions: a
//! transaction whose signature failed verification fails with [`SignedFailure::BadSignature`],
//! one whose signer does not own an account it spends from with [`SignedFailure::NotOwner`],
//! and a wrong or reused nonce with [`SignedFailure::BadNonce`]; each changes nothing and stays
//! in the block, as every failure does. Accounts belong to keys: an account's owner record
//! holds its owner's public key ([`round_robin_owners`] writes them at genesis).
//!
//! Blocks travel in one of two forms: [`SignedBlock`] (one 96-byte signature per transaction)
//! or [`AggregatedBlock`] (one aggregate signature for the whole block, checked with
//! `aggregate_verify`). Both decoders are bounded and return a typed [`CodecError`].

use super::{tag, NativeOutput, NativeTx, NativeVm, TxKind};
use crate::crypto::{BatchVerifier, CryptoError, KeyRegistry, PublicKey, SecretKey, Signature, SIGNATURE_LEN};
use crate::exec::MAX_BLOCK_TXS;
use crate::key::Key;
use crate::value::Value;
use crate::vm::{Interrupt, View, Vm};

/// Domain prefix of a transaction's signing bytes.
pub const TX_DOMAIN: &[u8] = b"occam/tx/v1\0";
/// Largest encoded transaction body (a kind tag, the work rounds and at most five fields).
pub const MAX_BODY_LEN: usize = 1 + 4 + 5 * 8;
/// Most emulated work rounds a decoded transaction may ask for (~4 ms of blake3): the field
/// comes from the sender, and without a bound one transaction could pin a core for minutes.
pub const MAX_WORK_ROUNDS: u32 = 1 << 16;
/// Version byte of [`SignedBlock`] encodings.
pub const SIGNED_BLOCK_VERSION: u8 = 1;
/// Version byte of [`AggregatedBlock`] encodings.
pub const AGGREGATED_BLOCK_VERSION: u8 = 2;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input ended early.
    #[error("truncated input while reading {0}")]
    Truncated(&'static str),
    /// Bytes left over after a complete value.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// A version byte this build does not know.
    #[error("unknown {what} version {got}")]
    Version {
        /// What was being decoded.
        what: &'static str,
        /// The version found.
        got: u8,
    },
    /// A transaction kind tag this build does not know.
    #[error("unknown transaction kind {0}")]
    UnknownKind(u8),
    /// A field out of its range (a boolean that is neither 0 nor 1, for instance).
    #[error("bad field: {0}")]
    BadField(&'static str),
    /// A length above the decoder's limit.
    #[error("{what}: {got} is over the limit of {max}")]
    TooLarge {
        /// What was being decoded.
        what: &'static str,
        /// Length found.
        got: usize,
        /// Limit.
        max: usize,
    },
    /// A signature that is not a valid point.
    #[error("signature: {0}")]
    Signature(#[from] CryptoError),
}

/// Field layout of each kind: its tag and its fields as `u64`s (signed ones as two's complement,
/// booleans as 0 or 1), in declaration order.
fn kind_fields(kind: &TxKind) -> (u8, Vec<u64>) {
    use TxKind::*;
    match *kind {
        Transfer { from, to, amount } => (1, vec![from, to, amount]),
        SbAmalgamate { a, b } => (2, vec![a, b]),
        SbBalance { a } => (3, vec![a]),
        SbDepositChecking { a, amount } => (4, vec![a, amount]),
        SbSendPayment { from, to, amount } => (5, vec![from, to, amount]),
        SbTransactSavings { a, amount } => (6, vec![a, amount as u64]),
        SbWriteCheck { a, amount } => (7, vec![a, amount]),
        KvRead { record } => (8, vec![record]),
        KvUpdate { record, seed } => (9, vec![record, seed]),
        KvRmw { record, seed } => (10, vec![record, seed]),
        KvInsert { record, seed } => (11, vec![record, seed]),
        TokenTransfer { token, from, to, amount } => (12, vec![token, from, to, amount]),
        TokenApprove { token, owner, spender, amount } => (13, vec![token, owner, spender, amount]),
        TokenTransferFrom { token, spender, from, to, amount } => (14, vec![token, spender, from, to, amount]),
        AmmSwap { pool, trader, zero_for_one, amount_in, min_out } => (15, vec![pool, trader, u64::from(zero_for_one), amount_in, min_out]),
        NftMint { collection, minter } => (16, vec![collection, minter]),
        TokenIssue { token, to, amount } => (17, vec![token, to, amount]),
        TokenRetire { token, holder, amount } => (18, vec![token, holder, amount]),
        ItemRegister { item, owner, event } => (19, vec![item, owner, event]),
        ItemHandover { item, from, to, event } => (20, vec![item, from, to, event]),
        ItemEvent { item, actor, event } => (21, vec![item, actor, event]),
        ItemLookup { item } => (22, vec![item]),
        Notarize { evidence, submitter, digest } => (23, vec![evidence, submitter, digest]),
        DocIssue { issuer, subject, slot, digest } => (24, vec![issuer, subject, slot, digest]),
        Grant { subject, grantee } => (25, vec![subject, grantee]),
        Revoke { subject, grantee } => (26, vec![subject, grantee]),
        DocUpdate { subject, slot, writer, digest } => (27, vec![subject, slot, writer, digest]),
        DocRead { subject, slot, reader, audit } => (28, vec![subject, slot, reader, u64::from(audit)]),
        Order { market, trader, sell, qty, level } => (29, vec![market, trader, u64::from(sell), qty, level]),
        Clear { market } => (30, vec![market]),
        Settle { market, trader } => (31, vec![market, trader]),
        ReceivableIssue { issuer, receivable, to, amount } => (32, vec![issuer, receivable, to, amount]),
        ReceivableSplit { receivable, holder, new_receivable, to, amount } => (33, vec![receivable, holder, new_receivable, to, amount]),
        ReceivableFinance { receivable, holder, financier, discount_bp } => (34, vec![receivable, holder, financier, discount_bp]),
        ReceivableRedeem { receivable, holder, issuer } => (35, vec![receivable, holder, issuer]),
    }
}

fn flag(v: u64, what: &'static str) -> Result<bool, CodecError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(CodecError::BadField(what)),
    }
}

/// Number of `u64` fields of kind `tag`, or `None` for an unknown tag.
fn field_count(tag: u8) -> Option<usize> {
    Some(match tag {
        3 | 8 | 22 | 30 => 1,
        2 | 4 | 6 | 7 | 9 | 10 | 11 | 16 | 25 | 26 | 31 => 2,
        1 | 5 | 17 | 18 | 19 | 21 | 23 | 35 => 3,
        12 | 13 | 20 | 24 | 27 | 28 | 32 | 34 => 4,
        14 | 15 | 29 | 33 => 5,
        _ => return None,
    })
}

fn kind_from_fields(tag: u8, f: &[u64]) -> Result<TxKind, CodecError> {
    use TxKind::*;
    Ok(match tag {
        1 => Transfer { from: f[0], to: f[1], amount: f[2] },
        2 => SbAmalgamate { a: f[0], b: f[1] },
        3 => SbBalance { a: f[0] },
        4 => SbDepositChecking { a: f[0], amount: f[1] },
        5 => SbSendPayment { from: f[0], to: f[1], amount: f[2] },
        6 => SbTransactSavings { a: f[0], amount: f[1] as i64 },
        7 => SbWriteCheck { a: f[0], amount: f[1] },
        8 => KvRead { record: f[0] },
        9 => KvUpdate { record: f[0], seed: f[1] },
        10 => KvRmw { record: f[0], seed: f[1] },
        11 => KvInsert { record: f[0], seed: f[1] },
        12 => TokenTransfer { token: f[0], from: f[1], to: f[2], amount: f[3] },
        13 => TokenApprove { token: f[0], owner: f[1], spender: f[2], amount: f[3] },
        14 => TokenTransferFrom { token: f[0], spender: f[1], from: f[2], to: f[3], amount: f[4] },
        15 => {
            AmmSwap { pool: f[0], trader: f[1], zero_for_one: flag(f[2], "zero_for_one must be 0 or 1")?, amount_in: f[3], min_out: f[4] }
        }
        16 => NftMint { collection: f[0], minter: f[1] },
        17 => TokenIssue { token: f[0], to: f[1], amount: f[2] },
        18 => TokenRetire { token: f[0], holder: f[1], amount: f[2] },
        19 => ItemRegister { item: f[0], owner: f[1], event: f[2] },
        20 => ItemHandover { item: f[0], from: f[1], to: f[2], event: f[3] },
        21 => ItemEvent { item: f[0], actor: f[1], event: f[2] },
        22 => ItemLookup { item: f[0] },
        23 => Notarize { evidence: f[0], submitter: f[1], digest: f[2] },
        24 => DocIssue { issuer: f[0], subject: f[1], slot: f[2], digest: f[3] },
        25 => Grant { subject: f[0], grantee: f[1] },
        26 => Revoke { subject: f[0], grantee: f[1] },
        27 => DocUpdate { subject: f[0], slot: f[1], writer: f[2], digest: f[3] },
        28 => DocRead { subject: f[0], slot: f[1], reader: f[2], audit: flag(f[3], "audit must be 0 or 1")? },
        29 => Order { market: f[0], trader: f[1], sell: flag(f[2], "sell must be 0 or 1")?, qty: f[3], level: f[4] },
        30 => Clear { market: f[0] },
        31 => Settle { market: f[0], trader: f[1] },
        32 => ReceivableIssue { issuer: f[0], receivable: f[1], to: f[2], amount: f[3] },
        33 => ReceivableSplit { receivable: f[0], holder: f[1], new_receivable: f[2], to: f[3], amount: f[4] },
        34 => ReceivableFinance { receivable: f[0], holder: f[1], financier: f[2], discount_bp: f[3] },
        35 => ReceivableRedeem { receivable: f[0], holder: f[1], issuer: f[2] },
        other => return Err(CodecError::UnknownKind(other)),
    })
}

/// Appends the canonical body encoding: kind tag, work rounds (u32 LE), fields (u64 LE).
pub fn encode_body(tx: &NativeTx, out: &mut Vec<u8>) {
    let (tag, fields) = kind_fields(&tx.kind);
    out.push(tag);
    out.extend_from_slice(&tx.work_rounds.to_le_bytes());
    for f in fields {
        out.extend_from_slice(&f.to_le_bytes());
    }
}

/// A reader over a byte slice whose every read names what it reads, for error messages.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
        if self.bytes.len() < n {
            return Err(CodecError::Truncated(what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("four bytes")))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("eight bytes")))
    }

    fn finish(self) -> Result<(), CodecError> {
        match self.bytes.len() {
            0 => Ok(()),
            n => Err(CodecError::Trailing(n)),
        }
    }
}

fn read_body(r: &mut Reader<'_>) -> Result<NativeTx, CodecError> {
    let tag = r.u8("transaction kind")?;
    let count = field_count(tag).ok_or(CodecError::UnknownKind(tag))?;
    let work_rounds = r.u32("work rounds")?;
    if work_rounds > MAX_WORK_ROUNDS {
        return Err(CodecError::TooLarge { what: "work rounds", got: work_rounds as usize, max: MAX_WORK_ROUNDS as usize });
    }
    let mut fields = [0u64; 5];
    for f in &mut fields[..count] {
        *f = r.u64("transaction field")?;
    }
    Ok(NativeTx { kind: kind_from_fields(tag, &fields[..count])?, work_rounds })
}

/// Decodes exactly one body encoded by [`encode_body`].
pub fn decode_body(bytes: &[u8]) -> Result<NativeTx, CodecError> {
    let mut r = Reader { bytes };
    let tx = read_body(&mut r)?;
    r.finish()?;
    Ok(tx)
}

/// The unsigned part of a signed transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxHeader {
    /// The signer's number in the chain's key registry.
    pub signer: u32,
    /// The signer's next nonce (0 for its first transaction).
    pub nonce: u64,
    /// What the transaction does.
    pub body: NativeTx,
}

impl TxHeader {
    /// The bytes a signer signs: [`TX_DOMAIN`], chain id, signer, nonce, body.
    pub fn signing_bytes(&self, chain_id: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(TX_DOMAIN.len() + 20 + MAX_BODY_LEN);
        out.extend_from_slice(TX_DOMAIN);
        out.extend_from_slice(&chain_id.to_le_bytes());
        self.encode(&mut out);
        out
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.signer.to_le_bytes());
        out.extend_from_slice(&self.nonce.to_le_bytes());
        encode_body(&self.body, out);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let signer = r.u32("signer")?;
        let nonce = r.u64("nonce")?;
        let body = read_body(r)?;
        Ok(TxHeader { signer, nonce, body })
    }

    /// Signs the header for `chain_id`.
    pub fn sign(self, chain_id: u64, key: &SecretKey) -> SignedTx {
        let signature = key.sign(&self.signing_bytes(chain_id));
        SignedTx { header: self, signature }
    }
}

/// A transaction with its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTx {
    /// Signer, nonce and body.
    pub header: TxHeader,
    /// The signer's signature of `header.signing_bytes(chain_id)`.
    pub signature: Signature,
}

fn read_signature(r: &mut Reader<'_>) -> Result<Signature, CodecError> {
    Ok(Signature::from_bytes(r.take(SIGNATURE_LEN, "signature")?)?)
}

fn read_count(r: &mut Reader<'_>) -> Result<usize, CodecError> {
    let n = r.u32("transaction count")? as usize;
    if n > MAX_BLOCK_TXS {
        return Err(CodecError::TooLarge { what: "transactions in a block", got: n, max: MAX_BLOCK_TXS });
    }
    Ok(n)
}

/// A block in which every transaction carries its own signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedBlock {
    /// The chain the transactions were signed for.
    pub chain_id: u64,
    /// The transactions, in order.
    pub txs: Vec<SignedTx>,
}

impl SignedBlock {
    /// `version 1 ‖ chain id ‖ count (u32) ‖ (signer ‖ nonce ‖ body ‖ signature)*`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13 + self.txs.len() * (12 + 40 + SIGNATURE_LEN));
        write_block_head(&mut out, self.chain_id, self.txs.len());
        for tx in &self.txs {
            tx.header.encode(&mut out);
            out.extend_from_slice(&tx.signature.to_bytes());
        }
        out
    }

    /// Decodes [`SignedBlock::encode`]; signatures are validated as points, not verified.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let raw = RawSignedBlock::decode(bytes)?;
        let txs = raw.txs.into_iter().map(RawSignedTx::validate).collect::<Result<_, _>>()?;
        Ok(SignedBlock { chain_id: raw.chain_id, txs })
    }

    /// The same transactions under one aggregate signature.
    pub fn aggregate(&self) -> Result<AggregatedBlock, CryptoError> {
        let sigs: Vec<Signature> = self.txs.iter().map(|t| t.signature).collect();
        Ok(AggregatedBlock {
            chain_id: self.chain_id,
            headers: self.txs.iter().map(|t| t.header.clone()).collect(),
            signature: Signature::aggregate(&sigs)?,
        })
    }
}

/// A signed transaction whose signature is still the 96 bytes it arrived as: decoding it costs
/// no curve arithmetic. [`RawSignedTx::validate`] decompresses the signature and checks it is
/// in the subgroup (about as costly as a tenth of a verification), so a node can leave that to
/// its verification threads instead of doing it on the ingress path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawSignedTx {
    /// Signer, nonce and body.
    pub header: TxHeader,
    /// The compressed signature, not yet validated.
    pub signature: [u8; SIGNATURE_LEN],
}

impl RawSignedTx {
    /// Validates the signature as a point (not against the signer's key).
    pub fn validate(self) -> Result<SignedTx, CodecError> {
        Ok(SignedTx { header: self.header, signature: Signature::from_bytes(&self.signature)? })
    }
}

impl From<&SignedTx> for RawSignedTx {
    fn from(tx: &SignedTx) -> Self {
        RawSignedTx { header: tx.header.clone(), signature: tx.signature.to_bytes() }
    }
}

/// A [`SignedBlock`] whose signatures are not decoded yet: the same bytes, read without curve
/// arithmetic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawSignedBlock {
    /// The chain the transactions were signed for.
    pub chain_id: u64,
    /// The transactions, in order.
    pub txs: Vec<RawSignedTx>,
}

impl RawSignedBlock {
    /// The encoding of [`SignedBlock::encode`].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13 + self.txs.len() * (12 + 40 + SIGNATURE_LEN));
        write_block_head(&mut out, self.chain_id, self.txs.len());
        for tx in &self.txs {
            tx.header.encode(&mut out);
            out.extend_from_slice(&tx.signature);
        }
        out
    }

    /// Decodes [`SignedBlock::encode`] without touching the signatures.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader { bytes };
        let version = r.u8("version")?;
        if version != SIGNED_BLOCK_VERSION {
            return Err(CodecError::Version { what: "signed block", got: version });
        }
        let chain_id = r.u64("chain id")?;
        let n = read_count(&mut r)?;
        // Bounded by the input: every transaction takes at least 109 bytes.
        let mut txs = Vec::with_capacity(n.min(r.bytes.len() / 109));
        for _ in 0..n {
            let header = TxHeader::read(&mut r)?;
            let signature = r.take(SIGNATURE_LEN, "signature")?.try_into().expect("took SIGNATURE_LEN bytes");
            txs.push(RawSignedTx { header, signature });
        }
        r.finish()?;
        Ok(RawSignedBlock { chain_id, txs })
    }
}

fn write_block_head(out: &mut Vec<u8>, chain_id: u64, n: usize) {
    out.push(SIGNED_BLOCK_VERSION);
    out.extend_from_slice(&chain_id.to_le_bytes());
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

/// A block whose transactions share one aggregate signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregatedBlock {
    /// The chain the transactions were signed for.
    pub chain_id: u64,
    /// The transactions, in order, without signatures.
    pub headers: Vec<TxHeader>,
    /// The aggregate of every transaction's signature.
    pub signature: Signature,
}

impl AggregatedBlock {
    /// `version 2 ‖ chain id ‖ count (u32) ‖ (signer ‖ nonce ‖ body)* ‖ aggregate signature`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13 + self.headers.len() * 52 + SIGNATURE_LEN);
        out.push(AGGREGATED_BLOCK_VERSION);
        out.extend_from_slice(&self.chain_id.to_le_bytes());
        out.extend_from_slice(&(self.headers.len() as u32).to_le_bytes());
        for h in &self.headers {
            h.encode(&mut out);
        }
        out.extend_from_slice(&self.signature.to_bytes());
        out
    }

    /// Decodes [`AggregatedBlock::encode`]; the signature is validated, not verified.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader { bytes };
        let version = r.u8("version")?;
        if version != AGGREGATED_BLOCK_VERSION {
            return Err(CodecError::Version { what: "aggregated block", got: version });
        }
        let chain_id = r.u64("chain id")?;
        let n = read_count(&mut r)?;
        let mut headers = Vec::with_capacity(n.min(r.bytes.len() / 13));
        for _ in 0..n {
            headers.push(TxHeader::read(&mut r)?);
        }
        let signature = read_signature(&mut r)?;
        r.finish()?;
        Ok(AggregatedBlock { chain_id, headers, signature })
    }

    /// Checks that the block was signed for `chain_id` and its aggregate signature against
    /// every signer's registered key, on one thread.
    pub fn verify(&self, registry: &KeyRegistry, chain_id: u64) -> Result<(), SignedFailure> {
        self.check_chain(chain_id)?;
        let (keys, messages) = self.pairs(registry)?;
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        self.signature.aggregate_verify(&keys, &refs).map_err(|_| SignedFailure::BadSignature)
    }

    /// [`AggregatedBlock::verify`] on all of `verifier`'s threads.
    pub fn verify_on(&self, registry: &KeyRegistry, chain_id: u64, verifier: &BatchVerifier) -> Result<(), SignedFailure> {
        self.check_chain(chain_id)?;
        let (keys, messages) = self.pairs(registry)?;
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        verifier.aggregate_verify(&self.signature, &keys, &refs).map_err(|_| SignedFailure::BadSignature)
    }

    fn check_chain(&self, chain_id: u64) -> Result<(), SignedFailure> {
        match self.chain_id == chain_id {
            true => Ok(()),
            false => Err(SignedFailure::WrongChain { expected: chain_id, got: self.chain_id }),
        }
    }

    /// Each transaction's signer key and signing bytes.
    fn pairs<'r>(&self, registry: &'r KeyRegistry) -> Result<(Vec<&'r PublicKey>, Vec<Vec<u8>>), SignedFailure> {
        let keys = self.headers.iter().map(|h| registry.get(h.signer).ok_or(SignedFailure::UnknownSigner)).collect::<Result<_, _>>()?;
        Ok((keys, self.headers.iter().map(|h| h.signing_bytes(self.chain_id)).collect()))
    }
}

/// Why a signed transaction failed before its body ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignedFailure {
    /// The signature did not verify (or was never checked).
    #[error("bad signature")]
    BadSignature,
    /// The signer is not in the registry.
    #[error("unknown signer")]
    UnknownSigner,
    /// The block was signed for another chain.
    #[error("signed for chain {got}, this is chain {expected}")]
    WrongChain {
        /// This chain.
        expected: u64,
        /// The block's chain.
        got: u64,
    },
    /// The nonce is not the signer's next one (reused, or ahead of it).
    #[error("bad nonce: expected {expected}, got {got}")]
    BadNonce {
        /// The signer's next nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// The signer's key does not own an account the transaction acts for
    /// ([`TxKind::authorities`]), or the account has no owner.
    #[error("not the owner of account {account}")]
    NotOwner {
        /// The account.
        account: u64,
    },
}

/// The output of a signed transaction: the body's output, or why it did not run.
pub type SignedOutput = Result<NativeOutput, SignedFailure>;

/// A signed transaction with the verdict of signature verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedTx {
    /// Signer, nonce and body.
    pub header: TxHeader,
    /// True if the signature verified against the signer's registered key.
    pub signature_ok: bool,
}

/// The key of a signer's next nonce.
pub fn nonce_key(signer: u32) -> Key {
    Key::from_parts(tag::NONCE, u64::from(signer), 0)
}

/// The signer whose next nonce `key` holds, if it is a [`nonce_key`].
pub fn nonce_signer(key: &Key) -> Option<u32> {
    if key.tag() != tag::NONCE {
        return None;
    }
    let a = u64::from_le_bytes(key.0[16..24].try_into().expect("8 bytes"));
    let signer = u32::try_from(a).ok()?;
    (nonce_key(signer) == *key).then_some(signer)
}

/// A signer's next nonce in `state` (0 before its first transaction).
pub fn next_nonce(state: &crate::state::CommittedState, signer: u32) -> u64 {
    state.get(&nonce_key(signer)).and_then(Value::as_u64).unwrap_or(0)
}

/// Every key a signed transaction may touch: its signer's nonce, the owner keys of the
/// accounts it acts for ([`TxKind::authorities`]) and its body's keys. `false` if the body
/// does not declare its keys. Nodes route by these keys, and [`SignedVm`] declares them.
pub fn signed_keys(header: &TxHeader, keys: &mut Vec<Key>) -> bool {
    keys.push(nonce_key(header.signer));
    keys.extend(header.body.kind.authorities().map(super::keys::owner_key));
    NativeVm.declared_keys(&header.body, keys)
}

/// Owner records for accounts `ids`, dealt round robin: account `id` is owned by
/// `keys[id % keys.len()]` (nothing if `keys` is empty). How `occam` clusters and the
/// signature benchmark assign genesis accounts to their signers' keys; a chain may assign
/// owners any way it likes, as long as every account that can be spent from has one.
pub fn round_robin_owners<'k>(ids: std::ops::Range<u64>, keys: &'k [PublicKey]) -> impl Iterator<Item = (Key, Value)> + 'k {
    let n = keys.len() as u64;
    ids.filter(move |_| n > 0).map(move |id| (super::keys::owner_key(id), Value::from_slice(&keys[(id % n) as usize].to_bytes())))
}

/// The native VM behind signatures, nonces and account owners. Signature verification happens
/// before execution (in batches, see [`crate::crypto::BatchVerifier`]); this VM takes its
/// verdicts.
///
/// Before the body runs it checks, in this order, and a failure writes nothing at all:
/// 1. the signature verified ([`SignedFailure::BadSignature`]);
/// 2. the signer's key owns every account the body acts for ([`TxKind::authorities`]): the
///    account's owner record ([`super::tag::OWNER_KEY`], set at genesis, see
///    [`round_robin_owners`]) holds exactly the signer's registered key
///    ([`SignedFailure::NotOwner`]; an account without a record has no owner and cannot be
///    spent from);
/// 3. the nonce is the signer's next one ([`SignedFailure::BadNonce`]).
///
/// Then the nonce is spent and the body runs; a body's failure still spends the nonce. A key
/// registered under several numbers ([`KeyRegistry::register_again`]) owns the same accounts
/// through each of them, with separate nonces. The caller must also check that a block was
/// signed for its chain (`SignedBlock::chain_id`, `AggregatedBlock::verify`).
///
/// **A custom VM** does the same: keep an owner record per account in state, declare it, and
/// check it against the signer's key before any write, with a failure that writes nothing.
/// Wrap the VM's transactions with their signer's number (or key) and the verifier's verdict
/// the way [`VerifiedTx`] does; ownership must be checked inside execution, against the
/// state the transaction sees, never by the node beforehand, so every executor and replica
/// decides it identically.
#[derive(Clone, Debug)]
pub struct SignedVm {
    registry: std::sync::Arc<KeyRegistry>,
}

impl SignedVm {
    /// A VM whose signers are numbered by `registry`.
    pub fn new(registry: std::sync::Arc<KeyRegistry>) -> Self {
        SignedVm { registry }
    }

    /// The first account of `tx` that the signer does not own, if any.
    fn foreign_account<V: View>(&self, tx: &VerifiedTx, view: &mut V) -> Result<Option<u64>, Interrupt> {
        // A signer the registry does not know owns nothing (its signature cannot have verified
        // either; this is only a second line).
        let signer = self.registry.key_bytes(tx.header.signer);
        for account in tx.header.body.kind.authorities() {
            let owner = view.read(&super::keys::owner_key(account))?;
            match (owner, signer) {
                (Some(o), Some(k)) if o.as_bytes() == &k[..] => {}
                _ => return Ok(Some(account)),
            }
        }
        Ok(None)
    }
}

impl Vm for SignedVm {
    type Tx = VerifiedTx;
    type Output = SignedOutput;

    fn execute<V: View>(&self, tx: &VerifiedTx, view: &mut V) -> Result<SignedOutput, Interrupt> {
        if !tx.signature_ok {
            return Ok(Err(SignedFailure::BadSignature));
        }
        if let Some(account) = self.foreign_account(tx, view)? {
            return Ok(Err(SignedFailure::NotOwner { account }));
        }
        let key = nonce_key(tx.header.signer);
        let expected = view.read(&key)?.and_then(|v| v.as_u64()).unwrap_or(0);
        if tx.header.nonce != expected {
            return Ok(Err(SignedFailure::BadNonce { expected, got: tx.header.nonce }));
        }
        // The nonce is spent even if the body fails, as on any account-based chain.
        view.write(key, Value::from_u64(expected + 1));
        Ok(Ok(NativeVm.execute(&tx.header.body, view)?))
    }

    fn declared_keys(&self, tx: &VerifiedTx, keys: &mut Vec<Key>) -> bool {
        if tx.signature_ok {
            return signed_keys(&tx.header, keys);
        }
        true
    }
}

#[cfg(test)]
mod tests;
