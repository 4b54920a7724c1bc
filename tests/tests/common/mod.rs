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
    let few = || 0u64..3;
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
        (asset(), id(), amount()).prop_map(|(token, to, amount)| TxKind::TokenIssue { token, to, amount }).boxed(),
        (asset(), id(), amount()).prop_map(|(token, holder, amount)| TxKind::TokenRetire { token, holder, amount }).boxed(),
        (id(), id(), 0u64..3).prop_map(|(item, owner, event)| TxKind::ItemRegister { item, owner, event }).boxed(),
        (id(), id(), id(), 0u64..3).prop_map(|(item, from, to, event)| TxKind::ItemHandover { item, from, to, event }).boxed(),
        (id(), id(), 0u64..3).prop_map(|(item, actor, event)| TxKind::ItemEvent { item, actor, event }).boxed(),
        id().prop_map(|item| TxKind::ItemLookup { item }).boxed(),
        (id(), id(), 0u64..3).prop_map(|(evidence, submitter, digest)| TxKind::Notarize { evidence, submitter, digest }).boxed(),
        (id(), id(), 0u64..2, 0u64..3)
            .prop_map(|(issuer, subject, slot, digest)| TxKind::DocIssue { issuer, subject, slot, digest })
            .boxed(),
        (id(), id()).prop_map(|(subject, grantee)| TxKind::Grant { subject, grantee }).boxed(),
        (id(), id()).prop_map(|(subject, grantee)| TxKind::Revoke { subject, grantee }).boxed(),
        (id(), 0u64..2, id(), 0u64..3)
            .prop_map(|(subject, slot, writer, digest)| TxKind::DocUpdate { subject, slot, writer, digest })
            .boxed(),
        (id(), 0u64..2, id(), any::<bool>())
            .prop_map(|(subject, slot, reader, audit)| TxKind::DocRead { subject, slot, reader, audit })
            .boxed(),
        // Markets and receivables use few ids, so that orders meet their settlements and
        // receivables their holders within a block.
        (few(), few(), any::<bool>(), 0u64..40, 0u64..9)
            .prop_map(|(market, trader, sell, qty, level)| TxKind::Order { market, trader, sell, qty, level })
            .boxed(),
        few().prop_map(|market| TxKind::Clear { market }).boxed(),
        (few(), few()).prop_map(|(market, trader)| TxKind::Settle { market, trader }).boxed(),
        (id(), few(), few(), amount())
            .prop_map(|(issuer, receivable, to, amount)| TxKind::ReceivableIssue { issuer, receivable, to, amount })
            .boxed(),
        (few(), few(), few(), few(), amount())
            .prop_map(|(receivable, holder, new_receivable, to, amount)| TxKind::ReceivableSplit {
                receivable,
                holder,
                new_receivable,
                to,
                amount,
            })
            .boxed(),
        (few(), few(), few(), prop_oneof![0u64..10_001, Just(10_001)])
            .prop_map(|(receivable, holder, financier, discount_bp)| TxKind::ReceivableFinance {
                receivable,
                holder,
                financier,
                discount_bp,
            })
            .boxed(),
        (few(), few(), id()).prop_map(|(receivable, holder, issuer)| TxKind::ReceivableRedeem { receivable, holder, issuer }).boxed(),
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
        let genesis = (
            (0..=ids, 0u64..150, any::<bool>(), any::<bool>(), any::<bool>()),
            (0u64..3, 0u64..3, 0u64..3, 0u64..3, 0u64..3, any::<bool>()),
        )
            .prop_map(
                |(
                    (accounts, balance, native_accounts, smallbank, kv),
                    (tokens, amm_pools, nft_collections, registries, markets, credit_lines),
                )| {
                    GenesisConfig {
                        accounts,
                        balance,
                        native_accounts,
                        smallbank,
                        kv,
                        tokens,
                        amm_pools,
                        nft_collections,
                        registries,
                        markets,
                        credit_lines,
                    }
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
