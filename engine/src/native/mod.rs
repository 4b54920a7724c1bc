//! The native VM: the transaction kinds of common blockchain benchmarks, written in Rust.
//!
//! | kind | models | contention |
//! | --- | --- | --- |
//! | `Transfer` | a payment between accounts | per account; the credit is a commutative add |
//! | SmallBank (six kinds) | the classic OLTP banking benchmark | per customer |
//! | YCSB `KvRead`/`KvUpdate`/`KvRmw`/`KvInsert` | key-value stores | per record |
//! | `TokenTransfer`/`TokenApprove`/`TokenTransferFrom` | an ERC-20 token | per holder |
//! | `AmmSwap` | a constant-product pool (Uniswap v2) | per pool: few pools, heavy |
//! | `NftMint` | a collection minted by many buyers | one counter per collection: a hot key |
//! | `TokenIssue`/`TokenRetire` | capped assets (carbon allowances) | the registry on issue; retired totals commute |
//! | `Item*` | unique items with an owner and a hash-chained history | per item, in order |
//! | `Notarize` | evidence stored once, chained per submitter | per submitter |
//! | `DocIssue`/`Grant`/`Revoke`/`DocUpdate`/`DocRead` | documents with access grants | issuer serial counters; per subject |
//! | `Order`/`Clear`/`Settle` | per-market call auctions ([`book`]) | one book per market: a hot key |
//! | `Receivable*` | supply-chain receivables | credit lines and financiers |
//!
//! Every kind declares its keys ([`Vm::declared_keys`]), so the `declared` executor applies.
//! Failures are typed ([`Failure`]) and write nothing, except the emulated VM cost (below).
//!
//! **Exact arithmetic.** Every kind computes its result exactly (in 128 bits, or 256 for a
//! swap) or fails with [`Failure::Overflow`]; nothing wraps, saturates or panics. A credit
//! (`view.add`) wraps by definition, so kinds credit with it only a supply that they conserve
//! or cap and that genesis bounds below 2^64 ([`Supply`], [`GenesisConfig::check`]): native
//! money, tokens, AMM pools and credit lines. SmallBank deposits create money without bound,
//! so SmallBank reads every balance it credits and checks it stays within `i64`.
//!
//! **Emulated cost.** [`NativeTx::work_rounds`] chained blake3 rounds are run before the
//! transaction logic and the digest is written to the sender's work slot, so the work cannot
//! be optimised away and a heavier VM (Move, EVM: 3–100 µs a transaction) can be emulated.

pub mod book;
pub mod keys;
mod logic;
pub mod signed;

pub use logic::burn;

use crate::key::Key;
use crate::value::Value;
use crate::vm::{Interrupt, View, Vm};
use serde::{Deserialize, Serialize};

/// Key tags of the native VM's state.
pub mod tag {
    /// Native account balance: `(id)`.
    pub const ACCOUNT: u8 = 1;
    /// SmallBank checking balance (two's-complement i64): `(customer)`.
    pub const SB_CHECKING: u8 = 2;
    /// SmallBank savings balance (two's-complement i64): `(customer)`.
    pub const SB_SAVINGS: u8 = 3;
    /// YCSB record: `(record)`.
    pub const KV: u8 = 4;
    /// Token balance: `(token, holder)`.
    pub const TOKEN_BALANCE: u8 = 5;
    /// Token allowance: `(token; owner, spender)`.
    pub const TOKEN_ALLOWANCE: u8 = 6;
    /// AMM pool reserves, 16 bytes `reserve0 ‖ reserve1`: `(pool)`.
    pub const AMM_POOL: u8 = 7;
    /// AMM trader balance: `(pool * 2 + side, trader)`.
    pub const AMM_BALANCE: u8 = 8;
    /// NFT collection, 24 bytes `minted ‖ max_supply ‖ price`: `(collection)`.
    pub const NFT_COLLECTION: u8 = 9;
    /// NFT holdings, 16 bytes `count ‖ last token id`: `(collection, holder)`.
    pub const NFT_HOLDINGS: u8 = 10;
    /// Proceeds of an NFT collection: `(collection)`.
    pub const NFT_TREASURY: u8 = 11;
    /// Digest of the emulated VM work of a sender: `(sender)`.
    pub const WORK: u8 = 12;
    /// A signer's next nonce (see [`super::signed`]): `(signer)`.
    pub const NONCE: u8 = 13;
    /// A capped asset's registry, 16 bytes `issued ‖ cap`: `(token)`.
    pub const TOKEN_REGISTRY: u8 = 14;
    /// Total retired (burnt) amount of an asset: `(token)`.
    pub const TOKEN_RETIRED: u8 = 15;
    /// Hash-chained event history, 40 bytes `count ‖ head digest`: `(item)`.
    pub const HISTORY: u8 = 16;
    /// Current owner or custodian of a unique item: `(item)`.
    pub const OWNER: u8 = 17;
    /// A stored document digest, 16 bytes `writer ‖ digest`: `(subject, slot)`.
    pub const DOCUMENT: u8 = 18;
    /// An access grant, `1`: `(subject, grantee)`.
    pub const GRANT: u8 = 19;
    /// An issuer's serial-number counter: `(issuer)`.
    pub const SERIAL: u8 = 20;
    /// A call-auction order book (see [`super::book`]): `(market)`.
    pub const BOOK: u8 = 21;
    /// A trader's open order, 32 bytes `epoch ‖ sell ‖ qty ‖ level`: `(market, trader)`.
    pub const ORDER: u8 = 22;
    /// A receivable, 32 bytes `holder ‖ amount ‖ issuer ‖ financed`: `(receivable)`.
    pub const RECEIVABLE: u8 = 23;
    /// An issuer's remaining credit line: `(issuer)`.
    pub const CREDIT_LINE: u8 = 24;
    /// A notarised evidence record, 16 bytes `submitter ‖ digest`: `(evidence)`.
    pub const EVIDENCE: u8 = 25;
    /// The public key that owns an account: only a transaction signed by it may act for the
    /// account (see [`super::signed`]); the compressed key, 48 bytes for BLS: `(account)`.
    pub const OWNER_KEY: u8 = 26;
    /// Reserved for a node's replicated bookkeeping in a shard's state (its cross-shard round
    /// records); no native transaction reads or writes such a key, and a foreign VM must not.
    pub const SYSTEM: u8 = 0xFF;
}

/// The size of a YCSB record value in bytes.
pub const KV_VALUE_LEN: usize = 32;

/// A native transaction: a kind plus the emulated VM cost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeTx {
    /// What it does.
    #[serde(flatten)]
    pub kind: TxKind,
    /// Chained blake3 rounds to run first (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub work_rounds: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl NativeTx {
    /// A transaction of `kind` with no emulated cost.
    pub fn new(kind: TxKind) -> Self {
        NativeTx { kind, work_rounds: 0 }
    }
}

/// The native transaction kinds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TxKind {
    /// Move `amount` from account `from` to account `to` (created if absent).
    Transfer {
        /// Debited account.
        from: u64,
        /// Credited account.
        to: u64,
        /// Amount.
        amount: u64,
    },
    /// SmallBank Amalgamate: move all of `a`'s savings and checking into `b`'s checking.
    SbAmalgamate {
        /// Source customer.
        a: u64,
        /// Destination customer.
        b: u64,
    },
    /// SmallBank Balance: read-only total of checking and savings.
    SbBalance {
        /// Customer.
        a: u64,
    },
    /// SmallBank DepositChecking: credit checking (read and written, so that the balance is
    /// checked to stay within `i64`).
    SbDepositChecking {
        /// Customer.
        a: u64,
        /// Amount (> 0).
        amount: u64,
    },
    /// SmallBank SendPayment: checking to checking, failing on insufficient funds.
    SbSendPayment {
        /// Payer.
        from: u64,
        /// Payee.
        to: u64,
        /// Amount.
        amount: u64,
    },
    /// SmallBank TransactSavings: add a signed amount to savings, failing below zero.
    SbTransactSavings {
        /// Customer.
        a: u64,
        /// Signed amount.
        amount: i64,
    },
    /// SmallBank WriteCheck: debit checking; a check larger than the total costs 1 extra.
    SbWriteCheck {
        /// Customer.
        a: u64,
        /// Amount.
        amount: u64,
    },
    /// YCSB read of a record.
    KvRead {
        /// Record id.
        record: u64,
    },
    /// YCSB blind update of a record.
    KvUpdate {
        /// Record id.
        record: u64,
        /// Seed of the new value.
        seed: u64,
    },
    /// YCSB read-modify-write of a record.
    KvRmw {
        /// Record id.
        record: u64,
        /// Seed mixed into the value.
        seed: u64,
    },
    /// YCSB insert of a new record (fails if it exists).
    KvInsert {
        /// Record id.
        record: u64,
        /// Seed of the value.
        seed: u64,
    },
    /// ERC-20 transfer.
    TokenTransfer {
        /// Token id.
        token: u64,
        /// Sender.
        from: u64,
        /// Recipient.
        to: u64,
        /// Amount.
        amount: u64,
    },
    /// ERC-20 approve: set `spender`'s allowance over `owner`'s balance.
    TokenApprove {
        /// Token id.
        token: u64,
        /// Owner.
        owner: u64,
        /// Spender.
        spender: u64,
        /// Allowance.
        amount: u64,
    },
    /// ERC-20 transferFrom by an approved spender.
    TokenTransferFrom {
        /// Token id.
        token: u64,
        /// Spender (the caller).
        spender: u64,
        /// Owner of the funds.
        from: u64,
        /// Recipient.
        to: u64,
        /// Amount.
        amount: u64,
    },
    /// Constant-product swap (0.3 % fee).
    AmmSwap {
        /// Pool.
        pool: u64,
        /// Trader.
        trader: u64,
        /// True to sell asset 0 for asset 1.
        zero_for_one: bool,
        /// Amount sold.
        amount_in: u64,
        /// Least acceptable amount bought (slippage limit).
        min_out: u64,
    },
    /// Mint the next token of a collection, paying its price from a native account.
    NftMint {
        /// Collection.
        collection: u64,
        /// Buyer.
        minter: u64,
    },
    /// Issue `amount` of a capped asset to `to`, within its registry's cap (allowances,
    /// certificates). The registry is read and written: issuance of one asset is serial.
    TokenIssue {
        /// Asset (token) id; needs a registry.
        token: u64,
        /// Recipient.
        to: u64,
        /// Amount (> 0).
        amount: u64,
    },
    /// Retire (burn) `amount` of `holder`'s asset; the asset's retired total grows (a
    /// commutative add).
    TokenRetire {
        /// Asset (token) id.
        token: u64,
        /// Holder whose balance is retired.
        holder: u64,
        /// Amount (> 0).
        amount: u64,
    },
    /// Register a new unique item owned by `owner`, starting its hash-chained history.
    ItemRegister {
        /// Item id (fails if registered).
        item: u64,
        /// First owner or custodian.
        owner: u64,
        /// Event code recorded in the history.
        event: u64,
    },
    /// Pass an item from its current owner `from` to `to`, recording the event.
    ItemHandover {
        /// Item id.
        item: u64,
        /// Current owner (checked).
        from: u64,
        /// New owner.
        to: u64,
        /// Event code recorded in the history.
        event: u64,
    },
    /// Record an event (inspection, service, repair) by `actor` in a registered item's history.
    ItemEvent {
        /// Item id.
        item: u64,
        /// Who records it.
        actor: u64,
        /// Event code.
        event: u64,
    },
    /// Read an item's owner and history (a recall or authenticity lookup). Read-only.
    ItemLookup {
        /// Item id.
        item: u64,
    },
    /// Store an evidence digest under `evidence` (fails if present) and chain it into the
    /// submitter's history, which timestamps it by position.
    Notarize {
        /// Evidence id (derived from the digest by the client).
        evidence: u64,
        /// Submitter.
        submitter: u64,
        /// Digest.
        digest: u64,
    },
    /// An authority issues document `slot` of `subject` (a licence, a certificate), numbered
    /// by the issuer's serial counter (read and written: issuance per issuer is serial).
    DocIssue {
        /// Issuing authority.
        issuer: u64,
        /// Holder of the document.
        subject: u64,
        /// Document type.
        slot: u64,
        /// Digest of the document.
        digest: u64,
    },
    /// `subject` grants `grantee` access to its documents.
    Grant {
        /// Owner of the documents.
        subject: u64,
        /// Who gets access.
        grantee: u64,
    },
    /// `subject` revokes `grantee`'s access (fails if there is none).
    Revoke {
        /// Owner of the documents.
        subject: u64,
        /// Whose access ends.
        grantee: u64,
    },
    /// `writer` (the subject or a grantee) writes document `slot` of `subject`; the write is
    /// chained into the subject's history.
    DocUpdate {
        /// Owner of the document.
        subject: u64,
        /// Document type.
        slot: u64,
        /// Who writes (checked against the grants).
        writer: u64,
        /// New digest.
        digest: u64,
    },
    /// `reader` (the subject or a grantee) reads document `slot` of `subject`; with `audit`
    /// the access is chained into the subject's history.
    DocRead {
        /// Owner of the document.
        subject: u64,
        /// Document type.
        slot: u64,
        /// Who reads (checked against the grants).
        reader: u64,
        /// Record the access in the subject's history.
        audit: bool,
    },
    /// Place an order in a call auction (see [`book`]), escrowing the goods (asset `market`)
    /// or the money (native balance). One open order per trader and market.
    Order {
        /// Market (also the id of the traded asset).
        market: u64,
        /// Trader.
        trader: u64,
        /// True to sell the asset, false to buy it.
        sell: bool,
        /// Quantity (> 0).
        qty: u64,
        /// Price level, `0..book::LEVELS`; the price is `level + 1`.
        level: u64,
    },
    /// Clear a market's auction at the uniform price that matches the most volume, and open
    /// the next round.
    Clear {
        /// Market.
        market: u64,
    },
    /// Settle a trader's order after its round cleared: fills are paid at the clearing
    /// price and the rest of the escrow is refunded (see [`book`] for the rounding).
    Settle {
        /// Market.
        market: u64,
        /// Trader.
        trader: u64,
    },
    /// Issue a receivable of `amount` to supplier `to`, against the issuer's credit line.
    ReceivableIssue {
        /// Issuing (core) enterprise.
        issuer: u64,
        /// New receivable id (fails if present).
        receivable: u64,
        /// First holder.
        to: u64,
        /// Face value (> 0).
        amount: u64,
    },
    /// Split `amount` off a held receivable into a new one held by `to` (paying a supplier
    /// further down the chain).
    ReceivableSplit {
        /// Receivable split.
        receivable: u64,
        /// Its holder (checked).
        holder: u64,
        /// New receivable id (fails if present).
        new_receivable: u64,
        /// Holder of the new one.
        to: u64,
        /// Face value split off (> 0, below the receivable's).
        amount: u64,
    },
    /// Sell a held receivable to `financier`, who pays its face value less `discount_bp`.
    ReceivableFinance {
        /// Receivable.
        receivable: u64,
        /// Its holder (checked).
        holder: u64,
        /// Buyer (a bank or factor), paying from its native balance.
        financier: u64,
        /// Discount in basis points (≤ 10,000).
        discount_bp: u64,
    },
    /// At maturity the issuer pays the holder the face value; the receivable is removed and
    /// the issuer's credit line restored.
    ReceivableRedeem {
        /// Receivable.
        receivable: u64,
        /// Its holder (checked).
        holder: u64,
        /// Its issuer (checked), who pays.
        issuer: u64,
    },
}

impl TxKind {
    /// The account that pays for the transaction (its emulated work is recorded there).
    pub fn sender(&self) -> u64 {
        match *self {
            TxKind::Transfer { from, .. } => from,
            TxKind::SbAmalgamate { a, .. }
            | TxKind::SbBalance { a }
            | TxKind::SbDepositChecking { a, .. }
            | TxKind::SbTransactSavings { a, .. }
            | TxKind::SbWriteCheck { a, .. } => a,
            TxKind::SbSendPayment { from, .. } => from,
            TxKind::KvRead { record }
            | TxKind::KvUpdate { record, .. }
            | TxKind::KvRmw { record, .. }
            | TxKind::KvInsert { record, .. } => record,
            TxKind::TokenTransfer { from, .. } => from,
            TxKind::TokenApprove { owner, .. } => owner,
            TxKind::TokenTransferFrom { spender, .. } => spender,
            TxKind::AmmSwap { trader, .. } => trader,
            TxKind::NftMint { minter, .. } => minter,
            TxKind::TokenIssue { token, .. } => token,
            TxKind::TokenRetire { holder, .. } => holder,
            TxKind::ItemRegister { owner, .. } => owner,
            TxKind::ItemHandover { from, .. } => from,
            TxKind::ItemEvent { actor, .. } => actor,
            TxKind::ItemLookup { item } => item,
            TxKind::Notarize { submitter, .. } => submitter,
            TxKind::DocIssue { issuer, .. } => issuer,
            TxKind::Grant { subject, .. } | TxKind::Revoke { subject, .. } => subject,
            TxKind::DocUpdate { writer, .. } => writer,
            TxKind::DocRead { reader, .. } => reader,
            TxKind::Order { trader, .. } | TxKind::Settle { trader, .. } => trader,
            TxKind::Clear { market } => market,
            TxKind::ReceivableIssue { issuer, .. } => issuer,
            TxKind::ReceivableSplit { holder, .. } | TxKind::ReceivableFinance { holder, .. } => holder,
            TxKind::ReceivableRedeem { issuer, .. } => issuer,
        }
    }

    /// The accounts whose owner must sign this transaction (see [`signed::SignedVm`]): the
    /// sender, for every kind that spends, moves or acts with an account's rights, and for
    /// `ReceivableFinance` also the financier, whose money it spends.
    ///
    /// Kinds that act for nobody need no owner: reads (`SbBalance`, `KvRead`, `ItemLookup`),
    /// SmallBank's deposit (it only adds money), the YCSB writes (records are not accounts:
    /// YCSB models an open key-value store), and `Clear` and `Settle`, which only run an
    /// auction's rules (clearing a round, paying a trader what the cleared round owes it).
    pub fn authorities(&self) -> impl Iterator<Item = u64> {
        use TxKind::*;
        let (first, second) = match *self {
            SbBalance { .. } | SbDepositChecking { .. } | KvRead { .. } | KvUpdate { .. } | KvRmw { .. } | KvInsert { .. } => (None, None),
            ItemLookup { .. } | Clear { .. } | Settle { .. } => (None, None),
            ReceivableFinance { holder, financier, .. } => (Some(holder), (financier != holder).then_some(financier)),
            _ => (Some(self.sender()), None),
        };
        first.into_iter().chain(second)
    }

    /// One transaction of every kind, each field a distinct value (11, 12, …; a signed amount
    /// negative): for tests and tools that must cover every kind.
    pub fn examples() -> Vec<TxKind> {
        use TxKind::*;
        vec![
            Transfer { from: 11, to: 12, amount: 13 },
            SbAmalgamate { a: 11, b: 12 },
            SbBalance { a: 11 },
            SbDepositChecking { a: 11, amount: 12 },
            SbSendPayment { from: 11, to: 12, amount: 13 },
            SbTransactSavings { a: 11, amount: -12 },
            SbWriteCheck { a: 11, amount: 12 },
            KvRead { record: 11 },
            KvUpdate { record: 11, seed: 12 },
            KvRmw { record: 11, seed: 12 },
            KvInsert { record: 11, seed: 12 },
            TokenTransfer { token: 11, from: 12, to: 13, amount: 14 },
            TokenApprove { token: 11, owner: 12, spender: 13, amount: 14 },
            TokenTransferFrom { token: 11, spender: 12, from: 13, to: 14, amount: 15 },
            AmmSwap { pool: 11, trader: 12, zero_for_one: true, amount_in: 13, min_out: 14 },
            NftMint { collection: 11, minter: 12 },
            TokenIssue { token: 11, to: 12, amount: 13 },
            TokenRetire { token: 11, holder: 12, amount: 13 },
            ItemRegister { item: 11, owner: 12, event: 13 },
            ItemHandover { item: 11, from: 12, to: 13, event: 14 },
            ItemEvent { item: 11, actor: 12, event: 13 },
            ItemLookup { item: 11 },
            Notarize { evidence: 11, submitter: 12, digest: 13 },
            DocIssue { issuer: 11, subject: 12, slot: 13, digest: 14 },
            Grant { subject: 11, grantee: 12 },
            Revoke { subject: 11, grantee: 12 },
            DocUpdate { subject: 11, slot: 12, writer: 13, digest: 14 },
            DocRead { subject: 11, slot: 12, reader: 13, audit: true },
            Order { market: 11, trader: 12, sell: true, qty: 13, level: 14 },
            Clear { market: 11 },
            Settle { market: 11, trader: 12 },
            ReceivableIssue { issuer: 11, receivable: 12, to: 13, amount: 14 },
            ReceivableSplit { receivable: 11, holder: 12, new_receivable: 13, to: 14, amount: 15 },
            ReceivableFinance { receivable: 11, holder: 12, financier: 13, discount_bp: 14 },
            ReceivableRedeem { receivable: 11, holder: 12, issuer: 13 },
        ]
    }

    /// A short name of the kind, for reports.
    pub fn name(&self) -> &'static str {
        match self {
            TxKind::Transfer { .. } => "transfer",
            TxKind::SbAmalgamate { .. } => "sb-amalgamate",
            TxKind::SbBalance { .. } => "sb-balance",
            TxKind::SbDepositChecking { .. } => "sb-deposit-checking",
            TxKind::SbSendPayment { .. } => "sb-send-payment",
            TxKind::SbTransactSavings { .. } => "sb-transact-savings",
            TxKind::SbWriteCheck { .. } => "sb-write-check",
            TxKind::KvRead { .. } => "kv-read",
            TxKind::KvUpdate { .. } => "kv-update",
            TxKind::KvRmw { .. } => "kv-rmw",
            TxKind::KvInsert { .. } => "kv-insert",
            TxKind::TokenTransfer { .. } => "token-transfer",
            TxKind::TokenApprove { .. } => "token-approve",
            TxKind::TokenTransferFrom { .. } => "token-transfer-from",
            TxKind::AmmSwap { .. } => "amm-swap",
            TxKind::NftMint { .. } => "nft-mint",
            TxKind::TokenIssue { .. } => "token-issue",
            TxKind::TokenRetire { .. } => "token-retire",
            TxKind::ItemRegister { .. } => "item-register",
            TxKind::ItemHandover { .. } => "item-handover",
            TxKind::ItemEvent { .. } => "item-event",
            TxKind::ItemLookup { .. } => "item-lookup",
            TxKind::Notarize { .. } => "notarize",
            TxKind::DocIssue { .. } => "doc-issue",
            TxKind::Grant { .. } => "grant",
            TxKind::Revoke { .. } => "revoke",
            TxKind::DocUpdate { .. } => "doc-update",
            TxKind::DocRead { .. } => "doc-read",
            TxKind::Order { .. } => "order",
            TxKind::Clear { .. } => "clear",
            TxKind::Settle { .. } => "settle",
            TxKind::ReceivableIssue { .. } => "receivable-issue",
            TxKind::ReceivableSplit { .. } => "receivable-split",
            TxKind::ReceivableFinance { .. } => "receivable-finance",
            TxKind::ReceivableRedeem { .. } => "receivable-redeem",
        }
    }
}

/// Why a native transaction failed. A failed transaction stays in the block and writes
/// nothing but its emulated-work digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "kebab-case")]
pub enum Failure {
    /// The paying account does not exist.
    #[error("unknown account")]
    UnknownAccount,
    /// The balance is below the amount.
    #[error("insufficient funds")]
    InsufficientFunds,
    /// The spender's allowance is below the amount.
    #[error("insufficient allowance")]
    InsufficientAllowance,
    /// A YCSB record does not exist.
    #[error("record not found")]
    RecordNotFound,
    /// A YCSB insert hit an existing record.
    #[error("record already exists")]
    RecordExists,
    /// The pool does not exist.
    #[error("unknown pool")]
    UnknownPool,
    /// The swap would return less than `min_out` (or nothing).
    #[error("slippage limit exceeded")]
    Slippage,
    /// The collection does not exist.
    #[error("unknown collection")]
    UnknownCollection,
    /// Every token of the collection is minted.
    #[error("collection sold out")]
    SoldOut,
    /// A zero or otherwise invalid amount.
    #[error("invalid amount")]
    InvalidAmount,
    /// The asset has no registry (it cannot be issued).
    #[error("unknown asset")]
    UnknownAsset,
    /// Issuing the amount would exceed the asset's cap.
    #[error("cap exceeded")]
    CapExceeded,
    /// The caller does not own or hold the item or receivable, or is not its issuer.
    #[error("not the owner")]
    NotOwner,
    /// The caller has no grant from the subject.
    #[error("not authorized")]
    NotAuthorized,
    /// The market does not exist.
    #[error("unknown market")]
    UnknownMarket,
    /// The trader already has an order in this market.
    #[error("order already open")]
    OrderOpen,
    /// The order's auction round has not cleared yet.
    #[error("round not cleared")]
    NotCleared,
    /// The order's round has left the book (see [`book::ROUNDS`]); its escrow stays locked.
    #[error("round expired")]
    Expired,
    /// The receivable is already financed.
    #[error("already financed")]
    AlreadyFinanced,
    /// The exact result does not fit its field (a balance, a reserve, a total, a counter).
    #[error("arithmetic overflow")]
    Overflow,
}

/// A native transaction's output: a kind-specific number on success, or a typed failure.
///
/// The number is the new balance (`Transfer`, `SbSendPayment`…), the total (`SbBalance`), the
/// first 8 bytes of the record (`KvRead`), the amount bought (`AmmSwap`) or the token id
/// (`NftMint`).
pub type NativeOutput = Result<u64, Failure>;

/// The native VM. Stateless: all state lives in the committed state.
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeVm;

/// What [`NativeVm::genesis`] creates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisConfig {
    /// Accounts (and SmallBank customers, YCSB records, token holders, traders) `0..accounts`.
    pub accounts: u64,
    /// Starting balance of every account.
    pub balance: u64,
    /// Create native account balances.
    pub native_accounts: bool,
    /// Create SmallBank checking and savings.
    pub smallbank: bool,
    /// Create YCSB records.
    pub kv: bool,
    /// Tokens `0..tokens`, every holder funded.
    pub tokens: u64,
    /// AMM pools `0..amm_pools`, every trader funded on both sides.
    pub amm_pools: u64,
    /// NFT collections `0..nft_collections`, unlimited supply, price 1.
    pub nft_collections: u64,
    /// Registries for tokens `0..registries` (issuable up to `balance × accounts`, at least
    /// `balance`).
    #[serde(default)]
    pub registries: u64,
    /// Call-auction markets `0..markets`; every trader holds `balance` of each traded asset.
    #[serde(default)]
    pub markets: u64,
    /// Give every account a credit line of `balance` (receivable issuers).
    #[serde(default)]
    pub credit_lines: bool,
}

impl GenesisConfig {
    /// Checks that every supply this genesis funds stays within its limit (see [`Supply`]),
    /// so that no credit can wrap. [`NativeVm::genesis`] builds whatever it is given: check first.
    pub fn check(&self) -> Result<(), SupplyError> {
        self.supply().check()
    }

    /// What this genesis funds, asset by asset.
    pub fn supply(&self) -> Supply {
        let (n, balance) = (self.accounts, self.balance as u128);
        let funded = n as u128 * balance;
        let mut s = Supply::default();
        if self.funds_accounts() {
            s.add(AssetKind::Native, 0..1, funded);
        }
        if self.smallbank {
            s.add(AssetKind::Customer, 0..n, balance);
        }
        s.add(AssetKind::Token, 0..self.tokens.max(self.markets), funded);
        s.add(AssetKind::Token, 0..self.registries, self.registry_cap() as u128);
        s.add(AssetKind::AmmPool, 0..self.amm_pools, self.amm_reserve() as u128 + funded);
        if self.credit_lines {
            s.add(AssetKind::Credit, 0..1, funded);
        }
        s
    }

    /// Whether native accounts are created: for payments, and to pay for mints and bids.
    fn funds_accounts(&self) -> bool {
        self.native_accounts || self.nft_collections > 0 || self.markets > 0 || self.credit_lines
    }

    /// The cap of every registry: `balance × accounts`, at least `balance`.
    fn registry_cap(&self) -> u64 {
        self.balance.saturating_mul(self.accounts.max(1))
    }

    /// Both reserves of every AMM pool: `balance × accounts`, at least `balance`, at most 2^62 − 1.
    fn amm_reserve(&self) -> u64 {
        self.registry_cap().min(u64::MAX / 4)
    }

    /// State for every kind over ids `0..accounts`: one asset, pool, collection and registry,
    /// two markets (market 1 trades its own asset), and credit lines.
    pub fn full(accounts: u64, balance: u64) -> Self {
        GenesisConfig {
            accounts,
            balance,
            native_accounts: true,
            smallbank: true,
            kv: true,
            tokens: 1,
            amm_pools: 1,
            nft_collections: 1,
            registries: 1,
            markets: 2,
            credit_lines: true,
        }
    }
}

/// A kind of asset whose supply genesis bounds; an asset is a kind and an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssetKind {
    /// Native money (id 0): account balances, NFT proceeds, bids in escrow.
    Native,
    /// Token `id`: holdings, its retired total, asks in escrow, and what its registry may
    /// still issue (its cap less what it has issued).
    Token,
    /// Either side of AMM pool `id`: its reserve and the traders' balances on that side.
    AmmPool,
    /// Credit (id 0): issuers' credit lines and the face value of open receivables.
    Credit,
    /// SmallBank customer `id`: its checking and its savings balance, each a signed `i64`.
    Customer,
}

impl AssetKind {
    /// The most an asset of this kind may total: `u64::MAX` (a credit wraps past it), and
    /// `i64::MAX` for each SmallBank balance.
    pub fn limit(self) -> u64 {
        match self {
            AssetKind::Customer => i64::MAX as u64,
            _ => u64::MAX,
        }
    }
}

/// A supply over its limit: the asset and what it would total.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} would total {total} at genesis, over the limit of {}", describe(*kind, *id), kind.limit())]
pub struct SupplyError {
    /// The kind of asset.
    pub kind: AssetKind,
    /// The asset's id (0 for native money and credit).
    pub id: u64,
    /// What it would total (saturated at `u128::MAX`).
    pub total: u128,
}

fn describe(kind: AssetKind, id: u64) -> String {
    match kind {
        AssetKind::Native => "native money".into(),
        AssetKind::Token => format!("token {id} (holdings and registry cap)"),
        AssetKind::AmmPool => format!("a side of AMM pool {id} (reserve and traders' balances)"),
        AssetKind::Credit => "credit (credit lines)".into(),
        AssetKind::Customer => format!("each balance of SmallBank customer {id}"),
    }
}

/// What a genesis funds, asset by asset, to be checked against each asset's limit.
///
/// Every kind conserves native money, tokens, AMM pool sides and credit, or creates them only
/// within a registry's cap; so if genesis keeps each such supply (with caps counted in full)
/// within `u64::MAX`, no balance, reserve or total can reach 2^64 and no credit wraps.
/// SmallBank, which creates money without bound, checks each balance it writes instead; its
/// genesis balances must be valid `i64`s.
#[derive(Clone, Debug, Default)]
pub struct Supply {
    parts: Vec<(AssetKind, std::ops::Range<u64>, u128)>,
}

impl Supply {
    /// Counts `each` for every asset of `kind` whose id is in `ids` (`0..1` for native money
    /// and credit). Parts that overlap add up.
    pub fn add(&mut self, kind: AssetKind, ids: std::ops::Range<u64>, each: u128) {
        if !ids.is_empty() && each > 0 {
            self.parts.push((kind, ids, each));
        }
    }

    /// What asset `id` of `kind` totals (saturated at `u128::MAX`).
    pub fn total(&self, kind: AssetKind, id: u64) -> u128 {
        self.parts.iter().filter(|(k, ids, _)| *k == kind && ids.contains(&id)).fold(0u128, |t, (_, _, each)| t.saturating_add(*each))
    }

    /// The most that may still be added to every asset of `kind` with an id in `ids`
    /// without passing the limit: 0 where one is already at or over it.
    pub fn room(&self, kind: AssetKind, ids: std::ops::Range<u64>) -> u64 {
        // A total only rises where a part starts, so the largest is at one of these ids.
        let starts = self.parts.iter().filter(|(k, _, _)| *k == kind).map(|(_, p, _)| p.start);
        let most = std::iter::once(ids.start).chain(starts).filter(|id| ids.contains(id)).map(|id| self.total(kind, id)).max();
        (kind.limit() as u128).saturating_sub(most.unwrap_or(0)) as u64
    }

    /// Checks every asset against its limit.
    pub fn check(&self) -> Result<(), SupplyError> {
        // A total only rises where a part starts, so checking there checks every id.
        for &(kind, ref ids, _) in &self.parts {
            let total = self.total(kind, ids.start);
            if total > kind.limit() as u128 {
                return Err(SupplyError { kind, id: ids.start, total });
            }
        }
        Ok(())
    }
}

impl NativeVm {
    /// Native accounts `0..n`, each holding `balance`.
    pub fn genesis_accounts(n: u64, balance: u64) -> impl Iterator<Item = (Key, Value)> {
        (0..n).map(move |i| (keys::account(i), Value::from_u64(balance)))
    }

    /// The genesis entries described by `cfg`. Its supplies are bounded only if
    /// [`GenesisConfig::check`] accepts it.
    pub fn genesis(cfg: &GenesisConfig) -> Vec<(Key, Value)> {
        let n = cfg.accounts;
        let mut out = Vec::new();
        if cfg.funds_accounts() {
            out.extend(Self::genesis_accounts(n, cfg.balance));
        }
        if cfg.smallbank {
            for i in 0..n {
                out.push((keys::checking(i), Value::from_u64(cfg.balance)));
                out.push((keys::savings(i), Value::from_u64(cfg.balance)));
            }
        }
        if cfg.kv {
            out.extend((0..n).map(Self::kv_record));
        }
        for t in 0..cfg.tokens {
            out.extend((0..n).map(|i| (keys::token_balance(t, i), Value::from_u64(cfg.balance))));
        }
        for p in 0..cfg.amm_pools {
            out.push(Self::amm_pool(p, cfg.amm_reserve()));
            for side in 0..2 {
                out.extend((0..n).map(|i| (keys::amm_balance(p, side, i), Value::from_u64(cfg.balance))));
            }
        }
        for c in 0..cfg.nft_collections {
            out.push(Self::collection(c, 0, u64::MAX, 1));
        }
        for t in 0..cfg.registries {
            out.push(Self::registry(t, 0, cfg.registry_cap()));
        }
        for m in 0..cfg.markets {
            out.push(Self::market(m));
            if m >= cfg.tokens {
                out.extend((0..n).map(|i| (keys::token_balance(m, i), Value::from_u64(cfg.balance))));
            }
        }
        if cfg.credit_lines {
            out.extend((0..n).map(|i| (keys::credit_line(i), Value::from_u64(cfg.balance))));
        }
        out
    }

    /// YCSB record `id` as genesis creates it.
    pub fn kv_record(id: u64) -> (Key, Value) {
        (keys::record(id), logic::kv_value(id, 0))
    }

    /// An AMM pool with both reserves at `reserve`.
    pub fn amm_pool(pool: u64, reserve: u64) -> (Key, Value) {
        (keys::pool(pool), logic::words_value(&[reserve, reserve]))
    }

    /// The registry of a capped asset with `issued` of `cap` issued.
    pub fn registry(token: u64, issued: u64, cap: u64) -> (Key, Value) {
        (keys::registry(token), logic::words_value(&[issued, cap]))
    }

    /// An empty call-auction market (round 0).
    pub fn market(market: u64) -> (Key, Value) {
        (keys::book(market), book::Book::default().to_value())
    }

    /// An NFT collection with a supply cap and price, for tests and custom genesis.
    pub fn collection(collection: u64, minted: u64, max_supply: u64, price: u64) -> (Key, Value) {
        (keys::collection(collection), logic::words_value(&[minted, max_supply, price]))
    }
}

impl Vm for NativeVm {
    type Tx = NativeTx;
    type Output = NativeOutput;

    #[inline]
    fn execute<V: View>(&self, tx: &NativeTx, view: &mut V) -> Result<NativeOutput, Interrupt> {
        if tx.work_rounds > 0 {
            let sender = tx.kind.sender();
            let digest = burn(tx.work_rounds, sender);
            view.write(keys::work(sender), Value::from_slice(&digest[..8]));
        }
        logic::execute(&tx.kind, view)
    }

    #[inline]
    fn declared_keys(&self, tx: &NativeTx, keys: &mut Vec<Key>) -> bool {
        if tx.work_rounds > 0 {
            keys.push(keys::work(tx.kind.sender()));
        }
        logic::declared_keys(&tx.kind, keys);
        true
    }
}
