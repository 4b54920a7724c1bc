//! Built-in workloads: named transaction mixes of the native VM, generated from a seed.
//!
//! | name | mix |
//! | --- | --- |
//! | `transfer` | native transfers, amount 1–100 |
//! | `smallbank` | Amalgamate 15, Balance 15, DepositChecking 15, SendPayment 25, TransactSavings 15, WriteCheck 15 |
//! | `ycsb-a` / `-b` / `-c` / `-d` / `-f` | read/update 50/50, 95/5, read only, read/insert 95/5, read/read-modify-write 50/50 |
//! | `token` | ERC-20 transfer 80, approve 10, transferFrom 10 (on recently approved pairs) |
//! | `amm-swap[:POOLS]` | swaps on POOLS constant-product pools (default 8; few pools = heavy contention) |
//! | `nft-mint[:COLLECTIONS]` | mints on COLLECTIONS collections (default 1: one hot counter) |
//! | scenarios | `payments`, `supply-finance`, `trace`, `provenance`, `notary`, `credentials`, `health-records`, `energy-market`, `carbon`, `nft-drop`: workload files built in (see [`crate::mix`]) |
//! | `PATH.toml` | a workload file |
//!
//! The key distribution picks accounts, customers, records, holders, traders and minters.
//! Generation is deterministic in the seed (ChaCha8), so a run can be reproduced exactly.

use crate::distribution::{Distribution, KeyChooser};
use crate::mix::{Mix, MixGenerator, SCENARIOS};
use occam_engine::key::Key;
use occam_engine::native::{GenesisConfig, NativeTx, NativeVm, TxKind};
use occam_engine::value::Value;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;
use std::str::FromStr;

/// Starting balance of every account in generated workloads.
pub const GENESIS_BALANCE: u64 = 1_000_000_000;

/// Upper bound on AMM traders (each holds two balances per pool).
pub const AMM_TRADERS_MAX: u64 = 10_000;

/// Upper bound on pools and collections, so that genesis stays small.
pub const POOLS_MAX: u64 = 1 << 16;

/// A YCSB core workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ycsb {
    /// 50 % read, 50 % update.
    A,
    /// 95 % read, 5 % update.
    B,
    /// 100 % read.
    C,
    /// 95 % read, 5 % insert.
    D,
    /// 50 % read, 50 % read-modify-write.
    F,
}

/// A workload: a built-in generator, or a mix from a workload file (built-in scenarios are
/// such files).
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    /// Native transfers.
    Transfer,
    /// The SmallBank mix.
    SmallBank,
    /// A YCSB mix.
    Ycsb(Ycsb),
    /// ERC-20 token traffic.
    Token,
    /// AMM swaps over this many pools.
    AmmSwap {
        /// Number of pools.
        pools: u64,
    },
    /// NFT mints over this many collections.
    NftMint {
        /// Number of collections.
        collections: u64,
    },
    /// A transaction mix from a workload file or a built-in scenario.
    Mix(std::sync::Arc<Mix>),
}

/// A workload name that does not parse, or a workload file that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkloadError {
    /// Neither a built-in name nor a file.
    #[error("unknown workload {0:?}; expected transfer, smallbank, ycsb-a|b|c|d|f, token, amm-swap[:POOLS], nft-mint[:COLLECTIONS], a scenario ({1}) or a workload file (PATH.toml)")]
    Unknown(String, String),
    /// A workload file or scenario that does not load.
    #[error("{0}")]
    File(String),
    /// A built-in workload's genesis would fund a supply past its limit.
    #[error("{0}; lower --accounts")]
    Supply(#[from] occam_engine::native::SupplyError),
}

impl FromStr for Workload {
    type Err = WorkloadError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || WorkloadError::Unknown(s.to_string(), SCENARIOS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "));
        if let Some(mix) = Mix::scenario(s) {
            return mix.map(|m| Workload::Mix(std::sync::Arc::new(m))).map_err(|e| WorkloadError::File(e.to_string()));
        }
        if s.ends_with(".toml") {
            return Mix::load(std::path::Path::new(s))
                .map(|m| Workload::Mix(std::sync::Arc::new(m)))
                .map_err(|e| WorkloadError::File(e.to_string()));
        }
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let count = |default: u64| -> Result<u64, WorkloadError> {
            match arg {
                None => Ok(default),
                Some(a) => match a.parse::<u64>() {
                    Ok(v) if (1..=POOLS_MAX).contains(&v) => Ok(v),
                    _ => Err(err()),
                },
            }
        };
        let plain = |w: Workload| if arg.is_some() { Err(err()) } else { Ok(w) };
        match name {
            "transfer" => plain(Workload::Transfer),
            "smallbank" => plain(Workload::SmallBank),
            "ycsb-a" => plain(Workload::Ycsb(Ycsb::A)),
            "ycsb-b" => plain(Workload::Ycsb(Ycsb::B)),
            "ycsb-c" => plain(Workload::Ycsb(Ycsb::C)),
            "ycsb-d" => plain(Workload::Ycsb(Ycsb::D)),
            "ycsb-f" => plain(Workload::Ycsb(Ycsb::F)),
            "token" => plain(Workload::Token),
            "amm-swap" => Ok(Workload::AmmSwap { pools: count(8)? }),
            "nft-mint" => Ok(Workload::NftMint { collections: count(1)? }),
            _ => Err(err()),
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Transfer => write!(f, "transfer"),
            Workload::SmallBank => write!(f, "smallbank"),
            Workload::Ycsb(y) => write!(f, "ycsb-{}", format!("{y:?}").to_lowercase()),
            Workload::Token => write!(f, "token"),
            Workload::AmmSwap { pools } => write!(f, "amm-swap:{pools}"),
            Workload::NftMint { collections } => write!(f, "nft-mint:{collections}"),
            Workload::Mix(m) => write!(f, "{}", m.name),
        }
    }
}

impl Workload {
    /// Every built-in workload with its default parameters (without the scenarios).
    pub fn all() -> Vec<Workload> {
        ["transfer", "smallbank", "ycsb-a", "ycsb-b", "ycsb-c", "ycsb-d", "ycsb-f", "token", "amm-swap", "nft-mint"]
            .iter()
            .map(|s| s.parse().expect("built-in names parse"))
            .collect()
    }

    /// Every built-in scenario.
    pub fn scenarios() -> Vec<Workload> {
        SCENARIOS.iter().map(|(n, _)| n.parse().expect("built-in scenarios parse")).collect()
    }

    /// Checks that the workload can run with `accounts` ids and `dist` (a workload file's
    /// pool sizes and genesis limit depend on them).
    pub fn check(&self, accounts: u64, dist: Distribution) -> Result<(), WorkloadError> {
        match self {
            Workload::Mix(m) => m.bind(accounts, dist).map(drop).map_err(|e| WorkloadError::File(e.to_string())),
            _ => Ok(self.builtin_genesis(accounts).map_or(Ok(()), |g| g.check())?),
        }
    }

    /// The genesis state this workload needs over `accounts` ids.
    pub fn genesis_entries(&self, accounts: u64) -> Vec<(Key, Value)> {
        match self.builtin_genesis(accounts) {
            Some(g) => NativeVm::genesis(&g),
            None => self.bound_mix(accounts).map(|b| b.genesis()).unwrap_or_default(),
        }
    }

    /// The number of ids the workload draws from (the id space partitioners split).
    pub fn id_count(&self, accounts: u64) -> u64 {
        match self.builtin_genesis(accounts) {
            Some(g) => g.accounts,
            None => self.bound_mix(accounts).map_or(accounts, |b| b.id_count()),
        }
    }

    /// A mix bound to `accounts` (its genesis and id space do not depend on the distribution);
    /// `None` for a built-in generator, or a mix [`Workload::check`] refuses.
    fn bound_mix(&self, accounts: u64) -> Option<crate::mix::Bound> {
        match self {
            Workload::Mix(m) => m.bind(accounts, Distribution::Uniform).ok(),
            _ => None,
        }
    }

    /// The genesis settings of a built-in generator over `accounts` ids; `None` for a mix,
    /// whose genesis follows from its templates.
    fn builtin_genesis(&self, accounts: u64) -> Option<GenesisConfig> {
        let mut g = GenesisConfig { accounts, balance: GENESIS_BALANCE, ..Default::default() };
        match *self {
            Workload::Transfer => g.native_accounts = true,
            Workload::SmallBank => g.smallbank = true,
            Workload::Ycsb(_) => g.kv = true,
            Workload::Token => g.tokens = 1,
            Workload::AmmSwap { pools } => {
                g.accounts = accounts.min(AMM_TRADERS_MAX);
                g.amm_pools = pools;
            }
            Workload::NftMint { collections } => g.nft_collections = collections,
            Workload::Mix(_) => return None,
        }
        Some(g)
    }
}

/// Shard placement for generated transactions: which shard an account id's key lives on, and
/// the share of two-party transactions that must span two shards. Applies to `transfer` (both
/// ends are native accounts); other workloads keep the cross-shard share their keys give.
#[derive(Clone)]
pub struct Placement {
    /// The shard of account `id`.
    pub shard_of: std::sync::Arc<dyn Fn(u64) -> u32 + Send + Sync>,
    /// Share of cross-shard transfers, 0 to 1.
    pub cross_share: f64,
}

impl std::fmt::Debug for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placement").field("cross_share", &self.cross_share).finish()
    }
}

/// Generates the transactions of one workload.
#[derive(Clone, Debug)]
pub struct Generator {
    placement: Option<Placement>,
    workload: Workload,
    ids: KeyChooser,
    rng: ChaCha8Rng,
    work_rounds: u32,
    next_record: u64,
    approvals: Vec<(u64, u64)>,
    approval_cursor: usize,
    mix: Option<MixGenerator>,
}

const APPROVALS_KEPT: usize = 1024;

impl Generator {
    /// A generator over `accounts` ids with the given distribution, seed and emulated cost.
    ///
    /// # Panics
    ///
    /// If a workload file cannot run with `accounts` and `dist`; [`Workload::check`] reports
    /// that as an error first (the bench checks its settings before it generates).
    pub fn new(workload: Workload, accounts: u64, dist: Distribution, seed: u64, work_rounds: u32) -> Self {
        let ids = workload.id_count(accounts).max(1);
        let mix = match &workload {
            Workload::Mix(m) => Some(m.bind(accounts, dist).unwrap_or_else(|e| panic!("{e} (Workload::check reports this)")).generator()),
            _ => None,
        };
        Generator {
            mix,
            placement: None,
            workload,
            ids: KeyChooser::new(ids, dist),
            rng: ChaCha8Rng::seed_from_u64(seed),
            work_rounds,
            next_record: ids,
            approvals: Vec::new(),
            approval_cursor: 0,
        }
    }

    /// Places two-party transactions on shards as `placement` says.
    pub fn with_placement(mut self, placement: Placement) -> Self {
        self.placement = Some(placement);
        self
    }

    /// A counterpart for `from`: from the key distribution, on `from`'s shard or on another
    /// one as the placement's share says (by rejection: up to 256 draws, then any id).
    fn counterpart(&mut self, from: u64) -> u64 {
        let Some(p) = self.placement.clone() else { return self.id() };
        let cross = self.rng.gen_bool(p.cross_share.clamp(0.0, 1.0));
        let home = (p.shard_of)(from);
        for _ in 0..256 {
            let to = self.id();
            if ((p.shard_of)(to) != home) == cross {
                return to;
            }
        }
        self.id()
    }

    /// The next `n` transactions.
    pub fn block(&mut self, n: usize) -> Vec<NativeTx> {
        (0..n).map(|_| self.next_tx()).collect()
    }

    fn id(&mut self) -> u64 {
        self.ids.sample(&mut self.rng)
    }

    /// The next transaction.
    pub fn next_tx(&mut self) -> NativeTx {
        if let Some(mix) = &mut self.mix {
            return mix.next_tx(&mut self.rng, self.work_rounds);
        }
        let kind = match self.workload {
            Workload::Transfer => {
                let from = self.id();
                let to = self.counterpart(from);
                TxKind::Transfer { from, to, amount: self.rng.gen_range(1..=100) }
            }
            Workload::SmallBank => self.smallbank(),
            Workload::Ycsb(y) => self.ycsb(y),
            Workload::Token => self.token(),
            Workload::AmmSwap { pools } => {
                let pool = self.rng.gen_range(0..pools);
                let trader = self.id();
                // One swap in twenty asks for more than any pool can give: a slippage failure.
                let min_out = if self.rng.gen_ratio(1, 20) { u64::MAX } else { 0 };
                TxKind::AmmSwap { pool, trader, zero_for_one: self.rng.gen(), amount_in: self.rng.gen_range(1..=1000), min_out }
            }
            Workload::NftMint { collections } => {
                let collection = self.rng.gen_range(0..collections);
                TxKind::NftMint { collection, minter: self.id() }
            }
            Workload::Mix(_) => unreachable!("a mix always has its generator"),
        };
        NativeTx { kind, work_rounds: self.work_rounds }
    }

    fn smallbank(&mut self) -> TxKind {
        let roll = self.rng.gen_range(0..100);
        let a = self.id();
        match roll {
            0..15 => TxKind::SbAmalgamate { a, b: self.id() },
            15..30 => TxKind::SbBalance { a },
            30..45 => TxKind::SbDepositChecking { a, amount: self.rng.gen_range(1..=100) },
            45..70 => TxKind::SbSendPayment { from: a, to: self.id(), amount: self.rng.gen_range(1..=100) },
            70..85 => TxKind::SbTransactSavings { a, amount: self.rng.gen_range(-100..=100) },
            _ => TxKind::SbWriteCheck { a, amount: self.rng.gen_range(1..=100) },
        }
    }

    fn ycsb(&mut self, y: Ycsb) -> TxKind {
        let roll = self.rng.gen_range(0..100);
        let seed = self.rng.gen();
        let (write_share, write) = match y {
            Ycsb::A => (50, 'u'),
            Ycsb::B => (5, 'u'),
            Ycsb::C => (0, 'u'),
            Ycsb::D => (5, 'i'),
            Ycsb::F => (50, 'm'),
        };
        if roll >= write_share {
            return TxKind::KvRead { record: self.id() };
        }
        match write {
            'u' => TxKind::KvUpdate { record: self.id(), seed },
            'm' => TxKind::KvRmw { record: self.id(), seed },
            _ => {
                let record = self.next_record;
                self.next_record += 1;
                TxKind::KvInsert { record, seed }
            }
        }
    }

    fn token(&mut self) -> TxKind {
        let roll = self.rng.gen_range(0..100);
        let amount = self.rng.gen_range(1..=100);
        if roll < 80 || (roll >= 90 && self.approvals.is_empty()) {
            let (from, to) = (self.id(), self.id());
            return TxKind::TokenTransfer { token: 0, from, to, amount };
        }
        if roll < 90 {
            let (owner, spender) = (self.id(), self.id());
            if self.approvals.len() < APPROVALS_KEPT {
                self.approvals.push((owner, spender));
            } else {
                self.approvals[self.approval_cursor] = (owner, spender);
                self.approval_cursor = (self.approval_cursor + 1) % APPROVALS_KEPT;
            }
            return TxKind::TokenApprove { token: 0, owner, spender, amount: 1_000 };
        }
        let (from, spender) = self.approvals[self.rng.gen_range(0..self.approvals.len())];
        TxKind::TokenTransferFrom { token: 0, spender, from, to: self.id(), amount }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_rejected() {
        for w in Workload::all().into_iter().chain(Workload::scenarios()) {
            assert_eq!(w.to_string().parse::<Workload>().as_ref(), Ok(&w));
        }
        assert_eq!("amm-swap:2".parse(), Ok(Workload::AmmSwap { pools: 2 }));
        for bad in
            ["", "transfer:3", "amm-swap:0", "amm-swap:x", "nft-mint:99999999", "ycsb-e", "tpcc", "payments:2", "/nonexistent/x.toml"]
        {
            assert!(bad.parse::<Workload>().is_err(), "{bad}");
        }
    }

    #[test]
    fn generation_is_deterministic_and_follows_the_mix() {
        let gen = || Generator::new(Workload::SmallBank, 1000, Distribution::Uniform, 7, 0);
        let a = gen().block(4000);
        assert_eq!(a, gen().block(4000));
        let pay = a.iter().filter(|t| matches!(t.kind, TxKind::SbSendPayment { .. })).count();
        assert!((850..1150).contains(&pay), "SendPayment share off: {pay}/4000");
        let inserts: Vec<u64> = Generator::new(Workload::Ycsb(Ycsb::D), 10, Distribution::Uniform, 1, 0)
            .block(2000)
            .into_iter()
            .filter_map(|t| match t.kind {
                TxKind::KvInsert { record, .. } => Some(record),
                _ => None,
            })
            .collect();
        assert!(!inserts.is_empty());
        assert!(inserts.windows(2).all(|w| w[1] == w[0] + 1) && inserts[0] == 10, "fresh ids in order");
    }
}
