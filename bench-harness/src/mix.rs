//! Workload files: transaction mixes defined in TOML, without writing Rust.
//!
//! A file names id **pools** (who or what transactions touch: customers, gateways, items,
//! zones…) and transaction **templates** (a native kind, a weight and where each field comes
//! from). The built-in scenarios (`payments`, `trace`, `energy-market`, …) are such files,
//! embedded in the binary; `occam workloads --show NAME` prints one to start from.
//!
//! ```toml
//! name = "payments"
//! description = "Cross-border payments through gateways and market makers"
//!
//! [pools.customers]          # count defaults to --accounts, distribution to --distribution
//! [pools.gateways]
//! count = 8
//! distribution = "zipf:1.1"
//!
//! [[tx]]
//! kind = "transfer"
//! weight = 45
//! from = "customers"         # a pool name: an id drawn from the pool
//! to = "gateways"
//! amount = [10, 5000]        # a number, or an inclusive range
//! ```
//!
//! **Pools.** `count` (a number, or `"accounts"` for the bench's `--accounts`, the default),
//! `distribution` (a spec as for `--distribution`; the bench's by default), `fresh = true`
//! (every draw is a new id: new items, receivables, evidence), and genesis settings for what
//! the pool's ids hold: `balance` (accounts, asset holdings, credit lines; default
//! 1,000,000,000), `cap` (issuable supply of an asset registry; default: all that keeps the
//! asset's supply below 2^64), `supply` and `price` (an NFT collection). Pools get disjoint id
//! ranges, in name order; fresh ids lie above all of them. A file whose genesis would fund a
//! supply (native money, a token with its cap, an AMM pool side, credit) past 2^64 − 1, or a
//! SmallBank balance past `i64::MAX`, is refused, so that no credit can wrap.
//!
//! **Fields.** Every field of the kind (see `occam workloads --kinds`) takes a pool name or a
//! constant id; numbers take a constant or `[lo, hi]`; flags (`sell`, `audit`, `zero_for_one`)
//! take `true`/`false` or a probability. Unset numbers and flags have per-kind defaults; asset
//! fields (`token`, `pool`, `market`, `collection`) default to id 0; id fields are required.
//!
//! **Memories** link transactions into realistic sequences. `remember = "NAME"` records what
//! a transaction created (an item and its owner, a grant, a receivable and its holder, an
//! open order) in a bounded ring; `recall = "NAME"` draws such a record to fill the fields it
//! names (for instance the item and current owner of a hand-over), and `forget = true` removes
//! it (the old owner no longer holds the item). A recall draws a random record, or with
//! `oldest = true` the oldest one (redeeming receivables in the order they were financed). A
//! full memory drops its oldest record. A random recall that forgets moves the newest record
//! into the gap (O(1)), so on a memory also recalled at random with `forget`, `oldest` means
//! "among the oldest". A recalling template whose memory is still
//! empty uses its explicit fields if it has all of them, and otherwise another template.
//!
//! **Genesis** follows from the templates: every field that needs state (a paying account, a
//! token holder, a market's book, an issuer's credit line…) gets it for every id of its pool.

use crate::distribution::{Distribution, KeyChooser};
use crate::workload::GENESIS_BALANCE;
use occam_engine::key::Key;
use occam_engine::native::{keys, AssetKind, NativeTx, NativeVm, Supply, TxKind};
use occam_engine::value::Value;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

/// Most templates per file.
pub const MAX_TEMPLATES: usize = 64;
/// Most pools per file.
pub const MAX_POOLS: usize = 64;
/// Most ids in one pool.
pub const MAX_POOL_IDS: u64 = 1 << 32;
/// Most genesis entries a file may ask for.
pub const MAX_GENESIS: usize = 20_000_000;
/// Records kept per memory; a full memory drops its oldest.
pub const MEMORY_CAPACITY: usize = 4096;
/// Fresh ids start here, above every pool's range.
pub const FRESH_BASE: u64 = 1 << 40;

/// A workload file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MixError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not valid TOML or its shape is wrong.
    #[error("{origin}: {message}")]
    Syntax {
        /// The file or built-in scenario.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A setting is wrong; the message names it.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file or built-in scenario.
        origin: String,
        /// What is wrong, naming the template or pool.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    pools: BTreeMap<String, PoolSpec>,
    #[serde(default)]
    tx: Vec<TemplateSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CountSpec {
    Fixed(u64),
    Named(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolSpec {
    count: Option<CountSpec>,
    distribution: Option<String>,
    #[serde(default)]
    fresh: bool,
    balance: Option<u64>,
    cap: Option<u64>,
    supply: Option<u64>,
    price: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct TemplateSpec {
    kind: String,
    weight: u32,
    recall: Option<String>,
    #[serde(default)]
    oldest: bool,
    #[serde(default)]
    forget: bool,
    remember: Option<String>,
    #[serde(flatten)]
    fields: BTreeMap<String, toml::Value>,
}

/// State a field's ids need at genesis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// A funded native account.
    Account,
    /// A holding of the asset named by field `.0`.
    Holding(usize),
    /// SmallBank checking and savings.
    Customer,
    /// A YCSB record.
    Record,
    /// An AMM pool's reserves.
    AmmPool,
    /// Balances on both sides of the AMM pool named by field `.0`.
    AmmTrader(usize),
    /// An asset registry.
    Registry,
    /// An NFT collection.
    Collection,
    /// A market's book (its asset is the market id).
    Market,
    /// A credit line.
    CreditLine,
}

#[derive(Clone, Copy, Debug)]
enum Ty {
    /// An id; required unless recalled.
    Id(&'static [Need]),
    /// An asset id; defaults to 0.
    Asset(&'static [Need]),
    /// An unsigned number with a default range.
    Num(u64, u64),
    /// A signed number with a default range.
    Signed(i64, i64),
    /// A random 64-bit value (digests, seeds, event codes).
    Random,
    /// A flag with a default probability of being true.
    Flag(f64),
}

struct KindSpec {
    name: &'static str,
    fields: &'static [(&'static str, Ty)],
    /// Fields filled from a recalled record (subject, party, extra); "" for none.
    recall: [&'static str; 3],
    /// Fields recorded by `remember`; "@extra" carries the recalled record's extra.
    produce: [&'static str; 3],
    build: fn(&[u64]) -> TxKind,
}

const NONE: [&str; 3] = ["", "", ""];
const ACCOUNT: &[Need] = &[Need::Account];
const NO_NEED: &[Need] = &[];

/// Every native kind a workload file can use, with its fields in [`TxKind`] order.
static KINDS: &[KindSpec] = &[
    KindSpec {
        name: "transfer",
        fields: &[("from", Ty::Id(ACCOUNT)), ("to", Ty::Id(NO_NEED)), ("amount", Ty::Num(1, 100))],
        recall: NONE,
        produce: NONE,
        build: |f| TxKind::Transfer { from: f[0], to: f[1], amount: f[2] },
    },
    KindSpec {
        name: "sb-amalgamate",
        fields: &[("a", Ty::Id(&[Need::Customer])), ("b", Ty::Id(&[Need::Customer]))],
        recall: NONE,
        produce: NONE,
        build: |f| TxKind::SbAmalgamate { a: f[0], b: f[1] },
    },
    KindSpec {
        name: "sb-balance",
        fields: &[("a", Ty::Id(&[Need::Customer]))],
        recall: NONE,
        produce: NONE,
        build: |f| TxKind::SbBalance { a: f[0] },
    },
    KindSpec {
        name: "sb-deposit-checking",
        fields: &[("a", Ty::Id(&[Need::Customer])), ("amount", Ty::Num(1, 100))],
        recall: NONE,
        produce: NONE,
        build: |f| TxKind::SbDepositChecking { a: f[0], amount: f[1] },
    },
    KindSpec {
        name: "sb-send-payment",
        fields: &[("from", Ty::Id(&[Need::Customer])), ("to", Ty::Id(&[Need::Customer])), ("amount", Ty::Num(1, 100))],
        recall: NONE,
        produce: NONE,
        build: |f| TxKind::SbSendPayment { from: f[0], to: f[1], amount: f[2] },
    },
    KindSpec {
        name: "sb-transact-savings",
        fields: &[("a", Ty::Id(&[Need::Customer])), ("amount", Ty::Signed(-100, 100))],
        recall: NONE,
        produce: NONE,
        build: |f| TxKind::SbTransactSavings { a: f[0], amount: f[1] as i64 },
    },
    KindSpec {
        name: "sb-write-check",
        fields: &[("a", Ty::Id(&[Need::Customer])), ("amount", Ty::Num(1, 100))],
        recall: NONE,
        produce: NONE,
        build: |f| TxKind::SbWriteCheck { a: f[0], amount: f[1] },
    },
    KindSpec {
        name: "kv-read",
        fields: &[("record", Ty::Id(&[Need::Record]))],
        recall: NONE,
        produce: NONE,
        build: |f| TxKind::KvRead { record: f[0] },
    },
    KindSpec {
        name: "kv-update",
        fields: &[("record", Ty::Id(&[Need::Record])), ("seed", Ty::Random)],
        recall: NONE,
        produce: NONE,
        build: |f| TxKind::KvUpdate { record: f[0], seed: f[1] },
    },
    KindSpec {
        name: "kv-rmw",
        fields: &[("record", Ty::Id(&[Need::Record])), ("seed", Ty::Random)],
        recall: NONE,
        produce: NONE,
        build: |f| TxKind::KvRmw { record: f[0], seed: f[1] },
    },
    KindSpec {
        name: "kv-insert",
        fields: &[("record", Ty::Id(NO_NEED)), ("seed", Ty::Random)],
        recall: NONE,
        produce: NONE,
        build: |f| TxKind::KvInsert { record: f[0], seed: f[1] },
    },
    KindSpec {
        name: "token-transfer",
        fields: &[
            ("token", Ty::Asset(NO_NEED)),
            ("from", Ty::Id(&[Need::Holding(0)])),
            ("to", Ty::Id(NO_NEED)),
            ("amount", Ty::Num(1, 100)),
        ],
        recall: ["from", "token", ""],
        produce: NONE,
        build: |f| TxKind::TokenTransfer { token: f[0], from: f[1], to: f[2], amount: f[3] },
    },
    KindSpec {
        name: "token-approve",
        fields: &[("token", Ty::Asset(NO_NEED)), ("owner", Ty::Id(NO_NEED)), ("spender", Ty::Id(NO_NEED)), ("amount", Ty::Num(1000, 1000))],
        recall: NONE,
        produce: ["owner", "spender", "token"],
        build: |f| TxKind::TokenApprove { token: f[0], owner: f[1], spender: f[2], amount: f[3] },
    },
    KindSpec {
        name: "token-transfer-from",
        fields: &[
            ("token", Ty::Asset(NO_NEED)),
            ("spender", Ty::Id(NO_NEED)),
            ("from", Ty::Id(&[Need::Holding(0)])),
            ("to", Ty::Id(NO_NEED)),
            ("amount", Ty::Num(1, 100)),
        ],
        recall: ["from", "spender", "token"],
        produce: NONE,
        build: |f| TxKind::TokenTransferFrom { token: f[0], spender: f[1], from: f[2], to: f[3], amount: f[4] },
    },
    KindSpec {
        name: "amm-swap",
        fields: &[
            ("pool", Ty::Asset(&[Need::AmmPool])),
            ("trader", Ty::Id(&[Need::AmmTrader(0)])),
            ("zero_for_one", Ty::Flag(0.5)),
            ("amount_in", Ty::Num(1, 1000)),
            ("min_out", Ty::Num(0, 0)),
        ],
        recall: NONE,
        produce: NONE,
        build: |f| TxKind::AmmSwap { pool: f[0], trader: f[1], zero_for_one: f[2] != 0, amount_in: f[3], min_out: f[4] },
    },
    KindSpec {
        name: "nft-mint",
        fields: &[("collection", Ty::Asset(&[Need::Collection])), ("minter", Ty::Id(ACCOUNT))],
        recall: NONE,
        produce: ["minter", "collection", ""],
        build: |f| TxKind::NftMint { collection: f[0], minter: f[1] },
    },
    KindSpec {
        name: "token-issue",
        fields: &[("token", Ty::Asset(&[Need::Registry])), ("to", Ty::Id(NO_NEED)), ("amount", Ty::Num(1, 100))],
        recall: NONE,
        produce: ["to", "token", ""],
        build: |f| TxKind::TokenIssue { token: f[0], to: f[1], amount: f[2] },
    },
    KindSpec {
        name: "token-retire",
        fields: &[("token", Ty::Asset(NO_NEED)), ("holder", Ty::Id(&[Need::Holding(0)])), ("amount", Ty::Num(1, 10))],
        recall: ["holder", "token", ""],
        produce: NONE,
        build: |f| TxKind::TokenRetire { token: f[0], holder: f[1], amount: f[2] },
    },
    KindSpec {
        name: "item-register",
        fields: &[("item", Ty::Id(NO_NEED)), ("owner", Ty::Id(NO_NEED)), ("event", Ty::Random)],
        recall: NONE,
        produce: ["item", "owner", ""],
        build: |f| TxKind::ItemRegister { item: f[0], owner: f[1], event: f[2] },
    },
    KindSpec {
        name: "item-handover",
        fields: &[("item", Ty::Id(NO_NEED)), ("from", Ty::Id(NO_NEED)), ("to", Ty::Id(NO_NEED)), ("event", Ty::Random)],
        recall: ["item", "from", ""],
        produce: ["item", "to", ""],
        build: |f| TxKind::ItemHandover { item: f[0], from: f[1], to: f[2], event: f[3] },
    },
    KindSpec {
        name: "item-event",
        fields: &[("item", Ty::Id(NO_NEED)), ("actor", Ty::Id(NO_NEED)), ("event", Ty::Random)],
        recall: ["item", "", ""],
        produce: NONE,
        build: |f| TxKind::ItemEvent { item: f[0], actor: f[1], event: f[2] },
    },
    KindSpec {
        name: "item-lookup",
        fields: &[("item", Ty::Id(NO_NEED))],
        recall: ["item", "", ""],
        produce: NONE,
        build: |f| TxKind::ItemLookup { item: f[0] },
    },
    KindSpec {
        name: "notarize",
        fields: &[("evidence", Ty::Id(NO_NEED)), ("submitter", Ty::Id(NO_NEED)), ("digest", Ty::Random)],
        recall: NONE,
        produce: ["evidence", "submitter", ""],
        build: |f| TxKind::Notarize { evidence: f[0], submitter: f[1], digest: f[2] },
    },
    KindSpec {
        name: "doc-issue",
        fields: &[("issuer", Ty::Id(NO_NEED)), ("subject", Ty::Id(NO_NEED)), ("slot", Ty::Num(0, 0)), ("digest", Ty::Random)],
        recall: NONE,
        produce: ["subject", "issuer", "slot"],
        build: |f| TxKind::DocIssue { issuer: f[0], subject: f[1], slot: f[2], digest: f[3] },
    },
    KindSpec {
        name: "grant",
        fields: &[("subject", Ty::Id(NO_NEED)), ("grantee", Ty::Id(NO_NEED))],
        recall: ["subject", "", ""],
        produce: ["subject", "grantee", "@extra"],
        build: |f| TxKind::Grant { subject: f[0], grantee: f[1] },
    },
    KindSpec {
        name: "revoke",
        fields: &[("subject", Ty::Id(NO_NEED)), ("grantee", Ty::Id(NO_NEED))],
        recall: ["subject", "grantee", ""],
        produce: NONE,
        build: |f| TxKind::Revoke { subject: f[0], grantee: f[1] },
    },
    KindSpec {
        name: "doc-update",
        fields: &[("subject", Ty::Id(NO_NEED)), ("slot", Ty::Num(0, 0)), ("writer", Ty::Id(NO_NEED)), ("digest", Ty::Random)],
        recall: ["subject", "writer", "slot"],
        produce: ["subject", "writer", "slot"],
        build: |f| TxKind::DocUpdate { subject: f[0], slot: f[1], writer: f[2], digest: f[3] },
    },
    KindSpec {
        name: "doc-read",
        fields: &[("subject", Ty::Id(NO_NEED)), ("slot", Ty::Num(0, 0)), ("reader", Ty::Id(NO_NEED)), ("audit", Ty::Flag(1.0))],
        recall: ["subject", "reader", "slot"],
        produce: NONE,
        build: |f| TxKind::DocRead { subject: f[0], slot: f[1], reader: f[2], audit: f[3] != 0 },
    },
    KindSpec {
        name: "order",
        fields: &[
            ("market", Ty::Asset(&[Need::Market])),
            ("trader", Ty::Id(&[Need::Account, Need::Holding(0)])),
            ("sell", Ty::Flag(0.5)),
            ("qty", Ty::Num(1, 100)),
            ("level", Ty::Num(0, occam_engine::native::book::LEVELS as u64 - 1)),
        ],
        recall: NONE,
        produce: ["market", "trader", ""],
        build: |f| TxKind::Order { market: f[0], trader: f[1], sell: f[2] != 0, qty: f[3], level: f[4] },
    },
    KindSpec {
        name: "clear",
        fields: &[("market", Ty::Asset(&[Need::Market]))],
        recall: NONE,
        produce: NONE,
        build: |f| TxKind::Clear { market: f[0] },
    },
    KindSpec {
        name: "settle",
        fields: &[("market", Ty::Asset(&[Need::Market])), ("trader", Ty::Id(NO_NEED))],
        recall: ["market", "trader", ""],
        produce: NONE,
        build: |f| TxKind::Settle { market: f[0], trader: f[1] },
    },
    KindSpec {
        name: "receivable-issue",
        fields: &[
            ("issuer", Ty::Id(&[Need::CreditLine])),
            ("receivable", Ty::Id(NO_NEED)),
            ("to", Ty::Id(NO_NEED)),
            ("amount", Ty::Num(1_000, 100_000)),
        ],
        recall: NONE,
        produce: ["receivable", "to", "issuer"],
        build: |f| TxKind::ReceivableIssue { issuer: f[0], receivable: f[1], to: f[2], amount: f[3] },
    },
    KindSpec {
        name: "receivable-split",
        fields: &[
            ("receivable", Ty::Id(NO_NEED)),
            ("holder", Ty::Id(NO_NEED)),
            ("new_receivable", Ty::Id(NO_NEED)),
            ("to", Ty::Id(NO_NEED)),
            ("amount", Ty::Num(100, 5_000)),
        ],
        recall: ["receivable", "holder", ""],
        produce: ["new_receivable", "to", "@extra"],
        build: |f| TxKind::ReceivableSplit { receivable: f[0], holder: f[1], new_receivable: f[2], to: f[3], amount: f[4] },
    },
    KindSpec {
        name: "receivable-finance",
        fields: &[
            ("receivable", Ty::Id(NO_NEED)),
            ("holder", Ty::Id(NO_NEED)),
            ("financier", Ty::Id(ACCOUNT)),
            ("discount_bp", Ty::Num(100, 500)),
        ],
        recall: ["receivable", "holder", ""],
        produce: ["receivable", "financier", "@extra"],
        build: |f| TxKind::ReceivableFinance { receivable: f[0], holder: f[1], financier: f[2], discount_bp: f[3] },
    },
    KindSpec {
        name: "receivable-redeem",
        fields: &[("receivable", Ty::Id(NO_NEED)), ("holder", Ty::Id(NO_NEED)), ("issuer", Ty::Id(ACCOUNT))],
        recall: ["receivable", "holder", "issuer"],
        produce: NONE,
        build: |f| TxKind::ReceivableRedeem { receivable: f[0], holder: f[1], issuer: f[2] },
    },
];

/// The kinds a workload file can use, each with its fields, for `occam workloads --kinds`.
pub fn kinds_help() -> String {
    let mut out = String::new();
    for k in KINDS {
        let fields: Vec<String> = k
            .fields
            .iter()
            .map(|(name, ty)| match ty {
                Ty::Id(_) => format!("{name}=POOL|ID"),
                Ty::Asset(_) => format!("{name}=POOL|ID (default 0)"),
                Ty::Num(lo, hi) if lo == hi => format!("{name}=N (default {lo})"),
                Ty::Num(lo, hi) => format!("{name}=N|[LO,HI] (default [{lo},{hi}])"),
                Ty::Signed(lo, hi) => format!("{name}=N|[LO,HI] (default [{lo},{hi}])"),
                Ty::Random => format!("{name}=N|[LO,HI] (default random)"),
                Ty::Flag(p) => format!("{name}=BOOL|P (default {p})"),
            })
            .collect();
        let link = |v: &[&str; 3]| v.iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join(", ");
        out.push_str(&format!("{:<20} {}", k.name, fields.join("  ")));
        if k.recall != NONE {
            out.push_str(&format!("\n{:<20} recall fills: {}", "", link(&k.recall)));
        }
        if k.produce != NONE {
            out.push_str(&format!("\n{:<20} remember records: {}", "", link(&k.produce)));
        }
        out.push('\n');
    }
    out
}

/// Where a field's value comes from.
#[derive(Clone, Copy, Debug)]
enum Source {
    Pool(usize),
    Const(u64),
    Range(u64, u64),
    SignedRange(i64, i64),
    Random,
    Chance(f64),
    /// Only from the recalled record; the template cannot run without one.
    RecallOnly,
}

#[derive(Clone, Debug)]
struct Pool {
    name: String,
    offset: u64,
    count: u64,
    fresh: bool,
    dist: Distribution,
    balance: u64,
    cap: Option<u64>,
    supply: Option<u64>,
    price: Option<u64>,
}

#[derive(Clone, Debug)]
struct Template {
    kind: usize,
    weight: u32,
    sources: Vec<Source>,
    recall: Option<usize>,
    oldest: bool,
    forget: bool,
    remember: Option<usize>,
    /// Every field has a source of its own, so the template runs with an empty memory.
    standalone: bool,
}

/// A parsed, checked workload file: pools, templates and memories, before it is bound to a
/// bench's `--accounts` and `--distribution`.
#[derive(Clone, Debug)]
pub struct Mix {
    /// The workload's name, as reports show it.
    pub name: String,
    /// What it models.
    pub description: String,
    /// Where it came from: `built-in` or the file's path.
    pub origin: String,
    spec: std::sync::Arc<FileSpec>,
}

impl PartialEq for Mix {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.origin == other.origin
    }
}

/// The built-in scenarios: name and TOML source.
pub const SCENARIOS: &[(&str, &str)] = &[
    ("payments", include_str!("../workloads/payments.toml")),
    ("supply-finance", include_str!("../workloads/supply-finance.toml")),
    ("trace", include_str!("../workloads/trace.toml")),
    ("provenance", include_str!("../workloads/provenance.toml")),
    ("notary", include_str!("../workloads/notary.toml")),
    ("credentials", include_str!("../workloads/credentials.toml")),
    ("health-records", include_str!("../workloads/health-records.toml")),
    ("energy-market", include_str!("../workloads/energy-market.toml")),
    ("carbon", include_str!("../workloads/carbon.toml")),
    ("nft-drop", include_str!("../workloads/nft-drop.toml")),
];

impl Mix {
    /// The built-in scenario `name`, if there is one.
    pub fn scenario(name: &str) -> Option<Result<Mix, MixError>> {
        SCENARIOS.iter().find(|(n, _)| *n == name).map(|(_, src)| Mix::parse(src, "built-in"))
    }

    /// Reads a workload file.
    pub fn load(path: &Path) -> Result<Mix, MixError> {
        let src = std::fs::read_to_string(path).map_err(|source| MixError::Io { path: path.display().to_string(), source })?;
        Mix::parse(&src, &path.display().to_string())
    }

    /// Parses and checks a workload file's text; `origin` names it in errors.
    pub fn parse(src: &str, origin: &str) -> Result<Mix, MixError> {
        let spec: FileSpec = toml::from_str(src).map_err(|e| MixError::Syntax { origin: origin.to_string(), message: e.to_string() })?;
        let mix = Mix {
            name: spec.name.clone(),
            description: spec.description.clone(),
            origin: origin.to_string(),
            spec: std::sync::Arc::new(spec),
        };
        // Compile once with placeholder bench settings so that every error shows up now.
        mix.bind(1000, Distribution::Uniform)?;
        Ok(mix)
    }

    fn invalid(&self, message: String) -> MixError {
        MixError::Invalid { origin: self.origin.clone(), message }
    }

    /// Resolves pools and templates for a bench's `accounts` and `dist`.
    pub fn bind(&self, accounts: u64, dist: Distribution) -> Result<Bound, MixError> {
        let spec = &self.spec;
        if spec.name.is_empty() || spec.name.len() > 64 || !spec.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(self.invalid(format!("name {:?} must be 1-64 letters, digits, '-' or '_'", spec.name)));
        }
        if spec.pools.len() > MAX_POOLS {
            return Err(self.invalid(format!("{} pools, at most {MAX_POOLS}", spec.pools.len())));
        }
        if spec.tx.is_empty() || spec.tx.len() > MAX_TEMPLATES {
            return Err(self.invalid(format!("{} [[tx]] templates; need 1 to {MAX_TEMPLATES}", spec.tx.len())));
        }
        let mut pools = Vec::new();
        let (mut offset, mut fresh_index) = (0u64, 0u64);
        for (name, p) in &spec.pools {
            let what = format!("pool {name:?}");
            let count = match &p.count {
                None => accounts,
                Some(CountSpec::Fixed(n)) => *n,
                Some(CountSpec::Named(s)) if s == "accounts" => accounts,
                Some(CountSpec::Named(s)) => return Err(self.invalid(format!("{what}: count {s:?} must be a number or \"accounts\""))),
            };
            if !p.fresh && !(1..=MAX_POOL_IDS).contains(&count) {
                return Err(self.invalid(format!("{what}: count {count} must be 1 to {MAX_POOL_IDS}")));
            }
            let pool_dist = match &p.distribution {
                None => dist,
                Some(s) => s.parse().map_err(|e| self.invalid(format!("{what}: {e}")))?,
            };
            if matches!((p.supply, p.price), (Some(0), _)) {
                return Err(self.invalid(format!("{what}: supply must be at least 1")));
            }
            let start = if p.fresh {
                fresh_index += 1;
                FRESH_BASE * fresh_index
            } else {
                offset
            };
            pools.push(Pool {
                name: name.clone(),
                offset: start,
                count,
                fresh: p.fresh,
                dist: pool_dist,
                balance: p.balance.unwrap_or(GENESIS_BALANCE),
                cap: p.cap,
                supply: p.supply,
                price: p.price,
            });
            if !p.fresh {
                offset += count;
            }
        }
        let mut memories: Vec<String> = Vec::new();
        let mut memory_of = |name: &str| -> usize {
            match memories.iter().position(|m| m == name) {
                Some(i) => i,
                None => {
                    memories.push(name.to_string());
                    memories.len() - 1
                }
            }
        };
        let mut templates = Vec::new();
        let mut recalled: Vec<(usize, usize)> = Vec::new();
        let mut remembered: Vec<usize> = Vec::new();
        for (i, t) in spec.tx.iter().enumerate() {
            let what = format!("[[tx]] #{} ({})", i + 1, t.kind);
            let kind = KINDS
                .iter()
                .position(|k| k.name == t.kind)
                .ok_or_else(|| self.invalid(format!("{what}: unknown kind; `occam workloads --kinds` lists them")))?;
            let k = &KINDS[kind];
            if t.weight == 0 {
                return Err(self.invalid(format!("{what}: weight must be at least 1")));
            }
            for field in t.fields.keys() {
                if !k.fields.iter().any(|(n, _)| n == field) {
                    let known: Vec<&str> = k.fields.iter().map(|(n, _)| *n).collect();
                    return Err(self.invalid(format!("{what}: unknown field {field:?}; {} has {}", k.name, known.join(", "))));
                }
            }
            if t.recall.is_some() && k.recall == NONE {
                return Err(self.invalid(format!("{what}: {} cannot recall (nothing of it comes from a memory)", k.name)));
            }
            if t.remember.is_some() && k.produce == NONE {
                return Err(self.invalid(format!("{what}: {} creates nothing to remember", k.name)));
            }
            if (t.forget || t.oldest) && t.recall.is_none() {
                return Err(self.invalid(format!("{what}: forget and oldest need recall")));
            }
            let mut sources = Vec::new();
            for (name, ty) in k.fields {
                let recalled_field = t.recall.is_some() && k.recall.contains(name);
                let source = match t.fields.get(*name) {
                    Some(v) => self.source(&what, name, *ty, v, &pools)?,
                    None => match *ty {
                        Ty::Id(_) if recalled_field => Source::RecallOnly,
                        Ty::Id(_) => return Err(self.invalid(format!("{what}: field {name:?} is required (a pool name or an id)"))),
                        Ty::Asset(_) => Source::Const(0),
                        Ty::Num(lo, hi) if lo == hi => Source::Const(lo),
                        Ty::Num(lo, hi) => Source::Range(lo, hi),
                        Ty::Signed(lo, hi) => Source::SignedRange(lo, hi),
                        Ty::Random => Source::Random,
                        Ty::Flag(p) => Source::Chance(p),
                    },
                };
                sources.push(source);
            }
            let standalone = !sources.iter().any(|s| matches!(s, Source::RecallOnly));
            let recall = t.recall.as_deref().map(&mut memory_of);
            let remember = t.remember.as_deref().map(&mut memory_of);
            if let Some(m) = recall {
                recalled.push((i, m));
            }
            if let Some(m) = remember {
                remembered.push(m);
            }
            templates.push(Template { kind, weight: t.weight, sources, recall, oldest: t.oldest, forget: t.forget, remember, standalone });
        }
        for (i, m) in recalled {
            if !remembered.contains(&m) {
                return Err(self.invalid(format!("[[tx]] #{}: recall {:?} but no template remembers it", i + 1, memories[m])));
            }
        }
        if !templates.iter().any(|t| t.standalone) {
            return Err(self.invalid("every template needs a memory; at least one must run on its own fields".into()));
        }
        let bound = Bound { name: self.name.clone(), pools, templates, memories: memories.len() };
        let size = bound.genesis_size();
        if size > MAX_GENESIS as u128 {
            return Err(self.invalid(format!("genesis of {size} entries is over the limit of {MAX_GENESIS}; lower the pool counts")));
        }
        bound.supply().check().map_err(|e| self.invalid(format!("{e}; lower the pools' balance, cap or count")))?;
        Ok(bound)
    }

    fn source(&self, what: &str, field: &str, ty: Ty, v: &toml::Value, pools: &[Pool]) -> Result<Source, MixError> {
        let bad = |expected: &str| self.invalid(format!("{what}: field {field:?} = {v} must be {expected}"));
        let uint = |x: &toml::Value| x.as_integer().and_then(|i| u64::try_from(i).ok());
        match ty {
            Ty::Id(_) | Ty::Asset(_) => match v {
                toml::Value::String(name) => pools
                    .iter()
                    .position(|p| &p.name == name)
                    .map(Source::Pool)
                    .ok_or_else(|| self.invalid(format!("{what}: field {field:?} names pool {name:?}, which is not defined"))),
                _ => uint(v).map(Source::Const).ok_or_else(|| bad("a pool name or an id")),
            },
            Ty::Num(..) | Ty::Random => match v {
                toml::Value::Array(a) if a.len() == 2 => match (uint(&a[0]), uint(&a[1])) {
                    (Some(lo), Some(hi)) if lo <= hi => Ok(Source::Range(lo, hi)),
                    _ => Err(bad("[LO, HI] with 0 <= LO <= HI")),
                },
                _ => uint(v).map(Source::Const).ok_or_else(|| bad("a number >= 0 or [LO, HI]")),
            },
            Ty::Signed(..) => match v {
                toml::Value::Array(a) if a.len() == 2 => match (a[0].as_integer(), a[1].as_integer()) {
                    (Some(lo), Some(hi)) if lo <= hi => Ok(Source::SignedRange(lo, hi)),
                    _ => Err(bad("[LO, HI] with LO <= HI")),
                },
                _ => v.as_integer().map(|i| Source::SignedRange(i, i)).ok_or_else(|| bad("a number or [LO, HI]")),
            },
            Ty::Flag(_) => match v {
                toml::Value::Boolean(b) => Ok(Source::Chance(if *b { 1.0 } else { 0.0 })),
                toml::Value::Float(p) if (0.0..=1.0).contains(p) => Ok(Source::Chance(*p)),
                _ => Err(bad("true, false or a probability in 0..=1")),
            },
        }
    }
}

/// One need of one template field: the ids that need it, the assets (for holdings) and the
/// pool whose genesis settings apply.
type NeedAt<'a> = (Need, std::ops::Range<u64>, std::ops::Range<u64>, Option<&'a Pool>);

/// A workload file bound to the bench's settings: ready to build genesis and generate.
#[derive(Clone, Debug)]
pub struct Bound {
    name: String,
    pools: Vec<Pool>,
    templates: Vec<Template>,
    memories: usize,
}

impl Bound {
    /// The number of ids in the pools (not counting fresh ids): the id space for partitioners.
    pub fn id_count(&self) -> u64 {
        self.pools.iter().filter(|p| !p.fresh).map(|p| p.count).sum::<u64>().max(1)
    }

    /// The ids a source covers at genesis: a pool's (none for a fresh one) or one constant.
    fn ids(&self, s: &Source) -> std::ops::Range<u64> {
        match *s {
            Source::Pool(p) if !self.pools[p].fresh => self.pools[p].offset..self.pools[p].offset + self.pools[p].count,
            Source::Const(c) => c..c + 1,
            _ => 0..0,
        }
    }

    /// The pool behind a source, for its genesis settings.
    fn pool_of(&self, s: &Source) -> Option<&Pool> {
        match *s {
            Source::Pool(p) => Some(&self.pools[p]),
            _ => None,
        }
    }

    /// Every (need, ids, asset ids, settings pool) the templates ask for.
    fn needs(&self) -> Vec<NeedAt<'_>> {
        let mut out = Vec::new();
        for t in &self.templates {
            for (i, (_, ty)) in KINDS[t.kind].fields.iter().enumerate() {
                let (Ty::Id(needs) | Ty::Asset(needs)) = ty else { continue };
                for &need in *needs {
                    let asset = match need {
                        Need::Holding(a) | Need::AmmTrader(a) => self.ids(&t.sources[a]),
                        _ => 0..1,
                    };
                    out.push((need, self.ids(&t.sources[i]), asset, self.pool_of(&t.sources[i])));
                }
            }
        }
        out
    }

    fn genesis_size(&self) -> u128 {
        self.needs()
            .iter()
            .map(|(need, ids, assets, _)| {
                let per = match need {
                    Need::Customer | Need::AmmTrader(_) => 2,
                    _ => 1,
                };
                per * (ids.end - ids.start) as u128 * (assets.end - assets.start) as u128
            })
            .sum()
    }

    /// What the genesis funds, asset by asset (a need that several templates share counts
    /// once); a registry without a cap counts nothing, as it gets the room left.
    fn supply(&self) -> Supply {
        let mut seen = Vec::new();
        let mut s = Supply::default();
        for (need, ids, assets, pool) in self.needs() {
            let at = (std::mem::discriminant(&need), ids.clone(), assets.clone(), pool.map(|p| p.name.as_str()));
            if seen.contains(&at) {
                continue;
            }
            seen.push(at);
            let balance = pool.map_or(GENESIS_BALANCE, |p| p.balance) as u128;
            let held = (ids.end - ids.start) as u128 * balance;
            match need {
                Need::Account => s.add(AssetKind::Native, 0..1, held),
                Need::CreditLine => s.add(AssetKind::Credit, 0..1, held),
                Need::Customer => s.add(AssetKind::Customer, ids, balance),
                Need::Holding(_) => s.add(AssetKind::Token, assets, held),
                Need::AmmTrader(_) => s.add(AssetKind::AmmPool, assets, held),
                Need::AmmPool => s.add(AssetKind::AmmPool, ids, balance),
                Need::Registry => s.add(AssetKind::Token, ids, pool.and_then(|p| p.cap).map_or(0, u128::from)),
                Need::Record | Need::Collection | Need::Market => {}
            }
        }
        s
    }

    /// The genesis state the templates need, sorted by key, each key once.
    pub fn genesis(&self) -> Vec<(Key, Value)> {
        let mut out: BTreeMap<Key, Value> = BTreeMap::new();
        let supply = self.supply();
        for (need, ids, assets, pool) in self.needs() {
            let balance = pool.map_or(GENESIS_BALANCE, |p| p.balance);
            let b = Value::from_u64(balance);
            let cap = match need {
                Need::Registry => pool.and_then(|p| p.cap).unwrap_or_else(|| supply.room(AssetKind::Token, ids.clone())),
                _ => 0,
            };
            for id in ids.clone() {
                match need {
                    Need::Account => drop(out.insert(keys::account(id), b.clone())),
                    Need::CreditLine => drop(out.insert(keys::credit_line(id), b.clone())),
                    Need::Customer => {
                        out.insert(keys::checking(id), b.clone());
                        out.insert(keys::savings(id), b.clone());
                    }
                    Need::Record => {
                        let (k, v) = NativeVm::kv_record(id);
                        out.insert(k, v);
                    }
                    Need::Holding(_) => out.extend(assets.clone().map(|a| (keys::token_balance(a, id), b.clone()))),
                    Need::AmmTrader(_) => {
                        for a in assets.clone() {
                            out.insert(keys::amm_balance(a, 0, id), b.clone());
                            out.insert(keys::amm_balance(a, 1, id), b.clone());
                        }
                    }
                    Need::AmmPool => {
                        let (k, v) = NativeVm::amm_pool(id, balance);
                        out.insert(k, v);
                    }
                    Need::Registry => {
                        let (k, v) = NativeVm::registry(id, 0, cap);
                        out.insert(k, v);
                    }
                    Need::Collection => {
                        let (k, v) = NativeVm::collection(
                            id,
                            0,
                            pool.and_then(|p| p.supply).unwrap_or(u64::MAX),
                            pool.and_then(|p| p.price).unwrap_or(1),
                        );
                        out.insert(k, v);
                    }
                    Need::Market => {
                        let (k, v) = NativeVm::market(id);
                        out.insert(k, v);
                    }
                }
            }
        }
        out.into_iter().collect()
    }

    /// A generator of this mix's transactions.
    pub fn generator(&self) -> MixGenerator {
        let choosers = self.pools.iter().map(|p| KeyChooser::new(p.count.max(1), p.dist)).collect();
        let total = self.templates.iter().map(|t| t.weight as u64).sum();
        MixGenerator {
            bound: self.clone(),
            choosers,
            next_fresh: vec![0; self.pools.len()],
            memories: vec![VecDeque::new(); self.memories],
            total,
        }
    }

    /// The workload's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Generates a mix's transactions; keeps the memories between transactions.
#[derive(Clone, Debug)]
pub struct MixGenerator {
    bound: Bound,
    choosers: Vec<KeyChooser>,
    next_fresh: Vec<u64>,
    memories: Vec<VecDeque<[u64; 3]>>,
    total: u64,
}

impl MixGenerator {
    fn pick_template(&self, rng: &mut ChaCha8Rng) -> usize {
        let mut roll = rng.gen_range(0..self.total);
        for (i, t) in self.bound.templates.iter().enumerate() {
            if roll < t.weight as u64 {
                return i;
            }
            roll -= t.weight as u64;
        }
        unreachable!("roll below the total weight")
    }

    fn value(&mut self, s: &Source, rng: &mut ChaCha8Rng) -> u64 {
        match *s {
            Source::Pool(p) => {
                let pool = &self.bound.pools[p];
                if pool.fresh {
                    self.next_fresh[p] += 1;
                    pool.offset + self.next_fresh[p]
                } else {
                    pool.offset + self.choosers[p].sample(rng)
                }
            }
            Source::Const(c) => c,
            Source::Range(lo, hi) => rng.gen_range(lo..=hi),
            Source::SignedRange(lo, hi) => rng.gen_range(lo..=hi) as u64,
            Source::Random => rng.gen(),
            Source::Chance(p) => u64::from(rng.gen_bool(p)),
            Source::RecallOnly => unreachable!("recall-only fields are filled from memory"),
        }
    }

    /// The next transaction's kind.
    pub fn next_kind(&mut self, rng: &mut ChaCha8Rng) -> TxKind {
        // A recalling template with an empty memory yields to another roll, then to the first
        // standalone template.
        let mut choice = None;
        for _ in 0..8 {
            let i = self.pick_template(rng);
            let t = &self.bound.templates[i];
            let empty = t.recall.is_some_and(|m| self.memories[m].is_empty());
            if !empty || t.standalone {
                choice = Some(i);
                break;
            }
        }
        let i = choice.unwrap_or_else(|| self.bound.templates.iter().position(|t| t.standalone).expect("checked at bind"));
        let t = &self.bound.templates[i];
        let (k, recall, oldest, forget, remember) = (&KINDS[t.kind], t.recall, t.oldest, t.forget, t.remember);
        let recalled = recall.and_then(|m| {
            let mem = &self.memories[m];
            (!mem.is_empty()).then(|| {
                let at = if oldest { 0 } else { rng.gen_range(0..mem.len()) };
                (at, mem[at])
            })
        });
        let mut f = [0u64; 5];
        for (j, (name, _)) in k.fields.iter().enumerate() {
            let slot = k.recall.iter().position(|r| r == name);
            f[j] = match (recalled, slot) {
                (Some((_, rec)), Some(s)) => rec[s],
                _ => {
                    let source = self.bound.templates[i].sources[j];
                    self.value(&source, rng)
                }
            };
        }
        if let (Some(m), Some((at, _))) = (recall, recalled) {
            if forget {
                if oldest {
                    self.memories[m].pop_front();
                } else {
                    self.memories[m].swap_remove_back(at);
                }
            }
        }
        if let Some(m) = remember {
            let extra = recalled.map_or(0, |(_, r)| r[2]);
            let mut rec = [0u64; 3];
            for (s, name) in k.produce.iter().enumerate() {
                rec[s] = match *name {
                    "" => 0,
                    "@extra" => extra,
                    n => f[k.fields.iter().position(|(fname, _)| *fname == n).expect("produced fields exist")],
                };
            }
            let mem = &mut self.memories[m];
            if mem.len() == MEMORY_CAPACITY {
                mem.pop_front();
            }
            mem.push_back(rec);
        }
        (k.build)(&f[..k.fields.len()])
    }

    /// The next transaction with `work_rounds` of emulated cost.
    pub fn next_tx(&mut self, rng: &mut ChaCha8Rng, work_rounds: u32) -> NativeTx {
        NativeTx { kind: self.next_kind(rng), work_rounds }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_kind_builds_with_its_declared_field_count() {
        for k in KINDS {
            let kind = (k.build)(&[1, 2, 3, 4, 5][..k.fields.len()]);
            assert_eq!(kind.name(), k.name, "table entry and kind agree");
            for link in k.recall.iter().chain(&k.produce) {
                assert!(link.is_empty() || *link == "@extra" || k.fields.iter().any(|(n, _)| n == link), "{}: {link}", k.name);
            }
        }
    }

    #[test]
    fn every_scenario_parses_and_generates() {
        for (name, _) in SCENARIOS {
            let mix = Mix::scenario(name).unwrap().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(mix.name, *name);
            assert!(!mix.description.is_empty(), "{name} says what it models");
            let bound = mix.bind(500, Distribution::Zipf(0.8)).unwrap();
            let genesis = bound.genesis();
            assert!(genesis.windows(2).all(|w| w[0].0 < w[1].0), "{name}: genesis sorted, each key once");
            let mut g = bound.generator();
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            let kinds: std::collections::BTreeSet<&str> = (0..5000).map(|_| g.next_kind(&mut rng).name()).collect();
            let expected: std::collections::BTreeSet<&str> = bound.templates.iter().map(|t| KINDS[t.kind].name).collect();
            assert_eq!(kinds, expected, "{name}: every template is reached");
        }
    }

    /// Most of every scenario's transactions succeed: the memories keep the sequences
    /// realistic (an item is handed over by its holder, a grant is used by its grantee).
    #[test]
    fn scenarios_generate_mostly_valid_transactions() {
        use occam_engine::exec::{BlockExecutor, SequentialExecutor};
        use occam_engine::state::CommittedState;
        for (name, _) in SCENARIOS {
            let bound = Mix::scenario(name).unwrap().unwrap().bind(2000, Distribution::Uniform).unwrap();
            let mut state = CommittedState::from_entries(bound.genesis());
            let mut g = bound.generator();
            let mut rng = ChaCha8Rng::seed_from_u64(5);
            let mut failures: BTreeMap<String, (u32, u32)> = BTreeMap::new();
            for _ in 0..4 {
                let block: Vec<NativeTx> = (0..2500).map(|_| g.next_tx(&mut rng, 0)).collect();
                let out = SequentialExecutor::new().execute_and_commit(&NativeVm, &mut state, &block).unwrap();
                for (tx, o) in block.iter().zip(&out.outputs) {
                    let e = failures.entry(tx.kind.name().to_string()).or_default();
                    e.1 += 1;
                    if let Err(f) = o {
                        e.0 += 1;
                        *failures.entry(format!("{} {f}", tx.kind.name())).or_default() = (0, 0);
                    }
                }
            }
            let (failed, total) = failures.values().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            let share = failed as f64 / total as f64;
            assert!(share < 0.25, "{name}: {:.1}% failed: {failures:?}", share * 100.0);
        }
    }

    fn err(src: &str) -> String {
        Mix::parse(src, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn bad_files_name_what_is_wrong() {
        let base = "name = \"x\"\n[pools.a]\ncount = 10\n";
        assert!(err("name = ").starts_with("test.toml: "));
        assert!(err("name = \"x\"\nfoo = 1\n").contains("unknown field `foo`"));
        assert!(err(base).contains("[[tx]] templates"));
        assert!(err(&format!("{base}[[tx]]\nkind = \"teleport\"\nweight = 1\n")).contains("#1 (teleport): unknown kind"));
        assert!(err(&format!("{base}[[tx]]\nkind = \"transfer\"\nweight = 1\nfrom = \"a\"\n")).contains("field \"to\" is required"));
        assert!(err(&format!("{base}[[tx]]\nkind = \"transfer\"\nweight = 1\nfrom = \"a\"\nto = \"b\"\n"))
            .contains("pool \"b\", which is not defined"));
        assert!(err(&format!("{base}[[tx]]\nkind = \"transfer\"\nweight = 1\nfrom = \"a\"\nto = \"a\"\nqty = 3\n"))
            .contains("unknown field \"qty\""));
        assert!(err(&format!("{base}[[tx]]\nkind = \"transfer\"\nweight = 0\nfrom = \"a\"\nto = \"a\"\n")).contains("weight"));
        assert!(err(&format!("{base}[[tx]]\nkind = \"transfer\"\nweight = 1\nfrom = \"a\"\nto = \"a\"\namount = [5, 1]\n"))
            .contains("LO <= HI"));
        assert!(err(&format!("{base}[[tx]]\nkind = \"item-lookup\"\nweight = 1\nrecall = \"m\"\n")).contains("no template remembers"));
        assert!(err("name = \"x\"\n[pools.a]\ncount = 0\n[[tx]]\nkind = \"kv-read\"\nweight = 1\nrecord = \"a\"\n").contains("count 0"));
        assert!(err("name = \"x\"\n[pools.a]\ndistribution = \"zipf\"\n[[tx]]\nkind = \"kv-read\"\nweight = 1\nrecord = \"a\"\n")
            .contains("pool \"a\": bad distribution"));
        assert!(err("name = \"x\"\n[pools.a]\ncount = 4000000000\n[[tx]]\nkind = \"order\"\nweight = 1\nmarket = \"a\"\ntrader = \"a\"\n")
            .contains("genesis"));
    }

    /// A file whose genesis would fund a supply past 2^64 − 1 is refused; a registry without
    /// a cap may issue what is left of its asset's supply.
    #[test]
    fn genesis_supplies_stay_below_2_pow_64() {
        let swaps = |traders: u64| {
            format!(
                "name = \"x\"\n[pools.pool]\ncount = 1\nbalance = {}\n[pools.traders]\ncount = {traders}\nbalance = 4000000000000000000\n\
                 [[tx]]\nkind = \"amm-swap\"\nweight = 1\npool = \"pool\"\ntrader = \"traders\"\n\
                 [[tx]]\nkind = \"amm-swap\"\nweight = 1\npool = \"pool\"\ntrader = \"traders\"\nzero_for_one = false\n",
                i64::MAX
            )
        };
        // 2^63 − 1 + 2 × 4e18 fits (the two templates share their needs); a third trader does not.
        assert!(Mix::parse(&swaps(2), "t").is_ok());
        assert!(err(&swaps(3)).contains("AMM pool 0"), "{}", err(&swaps(3)));
        let carbon = |cap: &str| {
            format!(
                "name = \"x\"\n[pools.registries]\ncount = 1\n{cap}\n[pools.holders]\ncount = 4\nbalance = 1000\n\
                 [[tx]]\nkind = \"token-issue\"\nweight = 1\ntoken = \"registries\"\nto = \"holders\"\n\
                 [[tx]]\nkind = \"token-transfer\"\nweight = 1\ntoken = \"registries\"\nfrom = \"holders\"\nto = \"holders\"\n"
            )
        };
        // Pools take ids in name order: holders 0..4, then the registry, token 4.
        assert!(err(&carbon(&format!("cap = {}", u64::MAX - 3999))).contains("token 4"));
        let bound = Mix::parse(&carbon(&format!("cap = {}", u64::MAX - 4000)), "t").unwrap().bind(10, Distribution::Uniform).unwrap();
        assert!(bound.genesis().contains(&NativeVm::registry(4, 0, u64::MAX - 4000)));
        let bound = Mix::parse(&carbon(""), "t").unwrap().bind(10, Distribution::Uniform).unwrap();
        assert!(bound.genesis().contains(&NativeVm::registry(4, 0, u64::MAX - 4000)), "the default cap is the room left");
        assert!(err(
            "name = \"x\"\n[pools.c]\ncount = 2\nbalance = 9223372036854775808\n[[tx]]\nkind = \"sb-balance\"\nweight = 1\na = \"c\"\n"
        )
        .contains("SmallBank"));
    }

    #[test]
    fn memories_link_transactions_into_sequences() {
        let src = r#"
            name = "chain"
            [pools.people]
            count = 5
            [pools.items]
            fresh = true
            [[tx]]
            kind = "item-register"
            weight = 1
            item = "items"
            owner = "people"
            remember = "held"
            [[tx]]
            kind = "item-handover"
            weight = 3
            to = "people"
            recall = "held"
            forget = true
            remember = "held"
        "#;
        let bound = Mix::parse(src, "t").unwrap().bind(100, Distribution::Uniform).unwrap();
        let mut g = bound.generator();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut owner: std::collections::HashMap<u64, u64> = Default::default();
        for _ in 0..2000 {
            match g.next_kind(&mut rng) {
                TxKind::ItemRegister { item, owner: o, .. } => {
                    assert!(item > FRESH_BASE && owner.insert(item, o).is_none(), "fresh ids are new");
                }
                TxKind::ItemHandover { item, from, to, .. } => {
                    assert_eq!(owner.insert(item, to), Some(from), "hand-overs come from the current owner");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
