//! Generators shared by the integration tests: random native transactions of every kind over
//! small id spaces, and random cases (genesis, blocks, threads) built from them.
#![allow(dead_code)] // each test file uses a different part

use occam_engine::native::{GenesisConfig, NativeTx, NativeVm, TxKind};
use occam_engine::prelude::*;
use proptest::prelude::*;

/// A random native transaction over ids `0..ids + 2` (the genesis creates at most `ids`
/// accounts, so some ids are always missing) and assets (tokens, pools, collections) `0..4`.
pub fn native_tx(ids: u64) -> impl Strategy<Value = NativeTx> {
    let id = move || 0..ids + 2;
    let asset = || 0u64..4;
    let amount = || prop_oneof![12 => 0u64..120, 1 => Just(u64::MAX), 1 => Just(i64::MAX as u64 + 1)];
    let signed = || prop_oneof![12 => -120i64..120, 1 => Just(i64::MIN), 1 => Just(i64::MAX)];
    let kind = prop::strategy::Union::new(vec![
        (id(), id(), amount()).prop_map(|(from, to, amount)| TxKind::Transfer { from, to, amount }).boxed(),
        (id(), id()).prop_map(|(a, b)| TxKind::SbAmalgamate { a, b }).boxed(),
        id().prop_map(|a| TxKind::SbBalance { a }).boxed(),
        (id(), amount()).prop_map(|(a, amount)| TxKind::SbDepositChecking { a, amount }).boxed(),
        (id(), id(), amount()).prop_map(|(from, to, amount)| TxKind::SbSendPayment { from, to, amount }).boxed(),
        (id(), signed()).prop_map(|(a, amount)| TxKind::SbTransactSavings { a, amount }).boxed(),
        (id(), amount()).prop_map(|(a, amount)| TxKind::SbWriteCheck { a, amount }).boxed(),
        id().prop_map(|record| TxKind::KvRead { record }).boxed(),
        (id(), 0u64..4).prop_map(|(record, seed)| TxKind::KvUpdate { record, seed }).boxed(),
        (id(), 0u64..4).prop_map(|(record, seed)| TxKind::KvRmw { record, seed }).boxed(),
        (id(), 0u64..4).prop_map(|(record, seed)| TxKind::KvInsert { record, seed }).boxed(),
        (asset(), id(), id(), amount()).prop_map(|(token, from, to, amount)| TxKind::TokenTransfer { token, from, to, amount }).boxed(),
        (asset(), id(), id(), amount())
            .prop_map(|(token, owner, spender, amount)| TxKind::TokenApprove { token, owner, spender, amount })
            .boxed(),
        (asset(), id(), id(), id(), amount())
            .prop_map(|(token, spender, from, to, amount)| TxKind::TokenTransferFrom { token, spender, from, to, amount })
            .boxed(),
        (asset(), id(), any::<bool>(), amount(), 0u64..60)
            .prop_map(|(pool, trader, zero_for_one, amount_in, min_out)| TxKind::AmmSwap { pool, trader, zero_for_one, amount_in, min_out })
            .boxed(),
        (asset(), id()).prop_map(|(collection, minter)| TxKind::NftMint { collection, minter }).boxed(),
    ]);
    (kind, 0u32..3).prop_map(|(kind, work_rounds)| NativeTx { kind, work_rounds })
}

#[derive(Debug, Clone)]
pub struct NativeCase {
    pub genesis: GenesisConfig,
    /// Collection 3, capped: `(max_supply, price)`, so `SoldOut` happens.
    pub capped: Option<(u64, u64)>,
    pub threads: usize,
    pub blocks: Vec<Vec<NativeTx>>,
}

impl NativeCase {
    pub fn state(&self) -> CommittedState {
        let mut entries = NativeVm::genesis(&self.genesis);
        if let Some((max_supply, price)) = self.capped {
            entries.push(NativeVm::collection(3, 0, max_supply, price));
        }
        CommittedState::from_entries(entries)
    }
}

pub fn native_case(max_block: usize) -> impl Strategy<Value = NativeCase> {
    (1u64..=12).prop_flat_map(move |ids| {
        let genesis = (0..=ids, 0u64..150, any::<bool>(), any::<bool>(), any::<bool>(), 0u64..3, 0u64..3, 0u64..3).prop_map(
            |(accounts, balance, native_accounts, smallbank, kv, tokens, amm_pools, nft_collections)| GenesisConfig {
                accounts,
                balance,
                native_accounts,
                smallbank,
                kv,
                tokens,
                amm_pools,
                nft_collections,
            },
        );
        (
            genesis,
            proptest::option::of((0u64..6, 0u64..3)),
            1usize..=8,
            prop::collection::vec(prop::collection::vec(native_tx(ids), 0..max_block), 1..=3),
        )
            .prop_map(|(genesis, capped, threads, blocks)| NativeCase { genesis, capped, threads, blocks })
    })
}
