//! Exact arithmetic in every native kind (issue 15).
//!
//! One property test per kind, over extreme values (0, 1, `u64::MAX`, `i64::MIN`/`MAX`, reserves
//! and amounts near the limits), each checked against a reference written with big integers
//! (`num-bigint`): the output, and the whole state after the transaction, must be what the
//! reference computes, and where the exact result does not fit its field the transaction must
//! fail with `overflow` and write nothing. States respect the genesis supply bound (a credited
//! supply totals at most `u64::MAX`), which is what keeps unchecked credits from wrapping; the
//! bound itself is tested at the end, with blocks of extreme transactions on every executor.

use num_bigint::{BigInt, BigUint};
use occam_engine::exec::EXECUTOR_NAMES;
use occam_engine::native::book::{Book, Round, LEVELS, ROUNDS};
use occam_engine::native::keys::*;
use occam_engine::native::{AssetKind, Failure, GenesisConfig, NativeOutput, NativeTx, NativeVm, Supply, TxKind};
use occam_engine::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::BTreeMap;

const MAX: u64 = u64::MAX;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// What a reference expects: the output and the writes of a success, or a failure.
type Expected = Result<(u64, Vec<(Key, Option<Value>)>), Failure>;

fn words(w: &[u64]) -> Value {
    Value::from_slice(&w.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
}

fn put(key: Key, v: u64) -> (Key, Option<Value>) {
    (key, Some(Value::from_u64(v)))
}

fn put_words(key: Key, w: &[u64]) -> (Key, Option<Value>) {
    (key, Some(words(w)))
}

fn big(x: u64) -> BigUint {
    BigUint::from(x)
}

/// A big integer that the reference knows fits 64 bits (a credit within the supply bound).
fn small(x: BigUint) -> u64 {
    u64::try_from(&x).expect("within the supply bound")
}

/// `x` as a `u64`, or the failure a kind must give when it does not fit.
fn fit(x: &BigUint) -> Result<u64, Failure> {
    u64::try_from(x).map_err(|_| Failure::Overflow)
}

/// `x` as an `i64` (a SmallBank balance), or `overflow`.
fn fit_i(x: &BigInt) -> Result<i64, Failure> {
    i64::try_from(x).map_err(|_| Failure::Overflow)
}

/// Runs `kind` alone on `entries` with the sequential executor and checks it against
/// `expected`: the same output, and a state that is `entries` with exactly the expected writes
/// (none for a failure). Also checks that it writes only keys it declares.
fn check(entries: &[(Key, Value)], kind: TxKind, expected: Expected) -> Result<(), TestCaseError> {
    let mut state = CommittedState::from_entries(entries.to_vec());
    let tx = NativeTx::new(kind.clone());
    let mut declared = Vec::new();
    NativeVm.declared_keys(&tx, &mut declared);
    let mut seq = executor_by_name::<NativeVm>("sequential", 1).expect("sequential");
    let out = seq.execute_and_commit(&NativeVm, &mut state, std::slice::from_ref(&tx)).expect("runs");
    for (k, _) in out.write_set.iter() {
        prop_assert!(declared.contains(k), "{kind:?} wrote undeclared {k:?}");
    }
    let mut want: BTreeMap<Key, Value> = entries.iter().cloned().collect();
    let output: NativeOutput = match expected {
        Ok((v, writes)) => {
            for (k, w) in writes {
                match w {
                    Some(w) => want.insert(k, w),
                    None => want.remove(&k),
                };
            }
            Ok(v)
        }
        Err(f) => Err(f),
    };
    prop_assert_eq!(out.outputs[0], output, "{:?}", kind);
    prop_assert_eq!(state.sorted_entries(), want.into_iter().collect::<Vec<_>>(), "{:?}", kind);
    Ok(())
}

/// Extreme and ordinary `u64`s.
fn x64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(2),
        Just(MAX),
        Just(MAX - 1),
        Just(i64::MAX as u64),
        Just(i64::MAX as u64 + 1),
        Just(1 << 32),
        0u64..1_000,
        (MAX - 1_000)..=MAX,
        any::<u64>(),
    ]
}

/// Extreme and ordinary `i64`s.
fn xi64() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MIN + 1),
        Just(-1),
        Just(0),
        Just(1),
        Just(i64::MAX - 1),
        Just(i64::MAX),
        -1_000i64..1_000,
        any::<i64>(),
    ]
}

const CASES: u32 = 1024;

// ---------------------------------------------------------------------------------------------
// Payments
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// `transfer`: the debit is checked, the credit is exact because both balances share one
    /// supply below 2^64.
    #[test]
    fn transfer_is_exact(x in x64(), y in x64(), amount in x64(), to_self in any::<bool>()) {
        let y = y.min(MAX - x);
        let to = if to_self { 0 } else { 1 };
        let entries = [(account(0), Value::from_u64(x)), (account(1), Value::from_u64(y))];
        let expected = if amount > x {
            Err(Failure::InsufficientFunds)
        } else {
            let credited = if to_self { big(x) } else { big(y) + amount };
            Ok((x - amount, vec![put(account(0), x - amount), put(account(to), small(credited))]))
        };
        check(&entries, TxKind::Transfer { from: 0, to, amount }, expected)?;
    }
}

// ---------------------------------------------------------------------------------------------
// SmallBank
// ---------------------------------------------------------------------------------------------

fn sb_kind() -> impl Strategy<Value = TxKind> {
    let other = || prop_oneof![Just(0u64), Just(1u64)];
    prop_oneof![
        Just(TxKind::SbBalance { a: 0 }),
        x64().prop_map(|amount| TxKind::SbDepositChecking { a: 0, amount }),
        xi64().prop_map(|amount| TxKind::SbTransactSavings { a: 0, amount }),
        other().prop_map(|b| TxKind::SbAmalgamate { a: 0, b }),
        x64().prop_map(|amount| TxKind::SbWriteCheck { a: 0, amount }),
        (other(), x64()).prop_map(|(to, amount)| TxKind::SbSendPayment { from: 0, to, amount }),
    ]
}

fn sb_put(key: Key, v: i64) -> (Key, Option<Value>) {
    put(key, v as u64)
}

/// SmallBank over customers 0 and 1 with checking `c` and savings `s`, in big integers.
fn sb_reference(c: [i64; 2], s: [i64; 2], kind: &TxKind) -> Expected {
    let (c0, s0) = (BigInt::from(c[0]), BigInt::from(s[0]));
    let valid = |amount: u64| amount <= i64::MAX as u64;
    match *kind {
        TxKind::SbBalance { .. } => Ok((fit_i(&(c0 + s0))? as u64, vec![])),
        TxKind::SbDepositChecking { amount, .. } => {
            if amount == 0 || !valid(amount) {
                return Err(Failure::InvalidAmount);
            }
            let new = fit_i(&(c0 + amount))?;
            Ok((amount, vec![sb_put(checking(0), new)]))
        }
        TxKind::SbTransactSavings { amount, .. } => {
            let new = s0 + amount;
            if new < BigInt::ZERO {
                return Err(Failure::InsufficientFunds);
            }
            let new = fit_i(&new)?;
            Ok((new as u64, vec![sb_put(savings(0), new)]))
        }
        TxKind::SbAmalgamate { b, .. } => {
            let total = fit_i(&(c0 + s0))?;
            let base = if b == 0 { 0 } else { c[1] };
            let credited = fit_i(&(BigInt::from(base) + total))?;
            let mut writes = vec![sb_put(checking(0), 0), sb_put(savings(0), 0)];
            writes.push(sb_put(checking(b), credited));
            Ok((total as u64, writes))
        }
        TxKind::SbWriteCheck { amount, .. } => {
            if !valid(amount) {
                return Err(Failure::InvalidAmount);
            }
            let penalty = u64::from(c0.clone() + s0 < BigInt::from(amount));
            let new = fit_i(&(c0 - amount - penalty))?;
            Ok((new as u64, vec![sb_put(checking(0), new)]))
        }
        TxKind::SbSendPayment { to, amount, .. } => {
            if !valid(amount) {
                return Err(Failure::InvalidAmount);
            }
            if c0 < BigInt::from(amount) {
                return Err(Failure::InsufficientFunds);
            }
            let new = c[0] - amount as i64;
            let base = if to == 0 { new } else { c[1] };
            let credited = fit_i(&(BigInt::from(base) + amount))?;
            Ok((new as u64, vec![sb_put(checking(0), new), sb_put(checking(to), credited)]))
        }
        _ => unreachable!("not a SmallBank kind"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES * 2))]

    /// Every SmallBank kind on signed balances at the limits: exact, or `overflow` (before,
    /// balances wrapped through two's complement).
    #[test]
    fn smallbank_is_exact(c0 in xi64(), s0 in xi64(), c1 in xi64(), s1 in xi64(), kind in sb_kind()) {
        let entries = [
            (checking(0), Value::from_u64(c0 as u64)),
            (savings(0), Value::from_u64(s0 as u64)),
            (checking(1), Value::from_u64(c1 as u64)),
            (savings(1), Value::from_u64(s1 as u64)),
        ];
        let expected = sb_reference([c0, c1], [s0, s1], &kind);
        check(&entries, kind, expected)?;
    }
}

// ---------------------------------------------------------------------------------------------
// YCSB
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// YCSB has no arithmetic, only value mixing: extreme ids and seeds read back what was
    /// written, and a read-modify-write writes what an update with the mixed seed writes.
    #[test]
    fn ycsb_handles_extreme_ids_and_seeds(r in x64(), seed in x64()) {
        let (k, v) = NativeVm::kv_record(r);
        let first = u64::from_le_bytes(v.as_bytes()[..8].try_into().unwrap());
        let entries = [(k, v.clone())];
        check(&entries, TxKind::KvRead { record: r }, Ok((first, vec![])))?;
        check(&entries, TxKind::KvInsert { record: r, seed }, Err(Failure::RecordExists))?;
        let mut updated = CommittedState::from_entries(entries.to_vec());
        let mut seq = executor_by_name::<NativeVm>("sequential", 1).unwrap();
        seq.execute_and_commit(&NativeVm, &mut updated, &[NativeTx::new(TxKind::KvUpdate { record: r, seed: seed ^ first })]).unwrap();
        let mixed = updated.get(&record(r)).cloned();
        check(&entries, TxKind::KvRmw { record: r, seed }, Ok((first, vec![(record(r), mixed)])))?;
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens and capped assets
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// ERC-20 transfer, approve and transferFrom at the limits.
    #[test]
    fn token_is_exact(b0 in x64(), b1 in x64(), allowed in x64(), amount in x64(), to_self in any::<bool>(), which in 0u8..3) {
        let b1 = b1.min(MAX - b0);
        let to = if to_self { 0 } else { 1 };
        let entries = [
            (token_balance(0, 0), Value::from_u64(b0)),
            (token_balance(0, 1), Value::from_u64(b1)),
            (allowance(0, 0, 2), Value::from_u64(allowed)),
        ];
        let moved = |writes: &mut Vec<(Key, Option<Value>)>| {
            writes.push(put(token_balance(0, 0), b0 - amount));
            writes.push(put(token_balance(0, to), if to_self { b0 } else { small(big(b1) + amount) }));
        };
        let (kind, expected) = match which {
            0 => {
                let expected = if amount > b0 {
                    Err(Failure::InsufficientFunds)
                } else {
                    let mut w = vec![];
                    moved(&mut w);
                    Ok((b0 - amount, w))
                };
                (TxKind::TokenTransfer { token: 0, from: 0, to, amount }, expected)
            }
            1 => (TxKind::TokenApprove { token: 0, owner: 0, spender: 2, amount }, Ok((amount, vec![put(allowance(0, 0, 2), amount)]))),
            _ => {
                let expected = if amount > allowed {
                    Err(Failure::InsufficientAllowance)
                } else if amount > b0 {
                    Err(Failure::InsufficientFunds)
                } else {
                    let mut w = vec![put(allowance(0, 0, 2), allowed - amount)];
                    moved(&mut w);
                    Ok((b0 - amount, w))
                };
                (TxKind::TokenTransferFrom { token: 0, spender: 2, from: 0, to, amount }, expected)
            }
        };
        check(&entries, kind, expected)?;
    }

    /// Issuing within a cap and retiring: the credited holder and the retired total stay
    /// within the asset's supply (holdings plus what the registry may still issue).
    #[test]
    fn capped_assets_are_exact(issued in x64(), cap in x64(), held in x64(), retired_total in x64(), amount in x64()) {
        // Issue: the holder's balance plus the registry's headroom is the supply.
        let headroom = cap.saturating_sub(issued);
        let held_issue = held.min(MAX - headroom);
        let entries = [NativeVm::registry(0, issued, cap), (token_balance(0, 1), Value::from_u64(held_issue))];
        let total = big(issued) + amount;
        let expected = if amount == 0 {
            Err(Failure::InvalidAmount)
        } else if total > big(cap) {
            Err(Failure::CapExceeded)
        } else {
            let total = small(total);
            Ok((total, vec![put_words(registry(0), &[total, cap]), put(token_balance(0, 1), small(big(held_issue) + amount))]))
        };
        check(&entries, TxKind::TokenIssue { token: 0, to: 1, amount }, expected)?;

        // Retire: the holder's balance plus the retired total is the supply.
        let retired_total = retired_total.min(MAX - held);
        let entries = [(token_balance(0, 1), Value::from_u64(held)), (retired(0), Value::from_u64(retired_total))];
        let expected = if amount == 0 {
            Err(Failure::InvalidAmount)
        } else if amount > held {
            Err(Failure::InsufficientFunds)
        } else {
            Ok((held - amount, vec![put(token_balance(0, 1), held - amount), put(retired(0), small(big(retired_total) + amount))]))
        };
        check(&entries, TxKind::TokenRetire { token: 0, holder: 1, amount }, expected)?;
    }
}

// ---------------------------------------------------------------------------------------------
// AMM
// ---------------------------------------------------------------------------------------------

/// The exact constant-product output: ⌊r_out × in × 997 / (r_in × 1000 + in × 997)⌋.
fn swap_out(r_in: u64, r_out: u64, amount_in: u64) -> u64 {
    let fee = big(amount_in) * 997u32;
    small(big(r_out) * &fee / (big(r_in) * 1000u32 + &fee))
}

fn amm_reference(r: [u64; 2], bal: [u64; 2], zero_for_one: bool, amount_in: u64, min_out: u64) -> Expected {
    if amount_in == 0 {
        return Err(Failure::InvalidAmount);
    }
    let (i, o) = if zero_for_one { (0, 1) } else { (1, 0) };
    if bal[i] < amount_in {
        return Err(Failure::InsufficientFunds);
    }
    let out = swap_out(r[i], r[o], amount_in);
    let new_in = fit(&(big(r[i]) + amount_in))?;
    if out == 0 || out < min_out {
        return Err(Failure::Slippage);
    }
    let mut reserves = r;
    reserves[i] = new_in;
    reserves[o] = r[o] - out;
    Ok((
        out,
        vec![
            put_words(pool(0), &reserves),
            put(amm_balance(0, i as u64, 7), bal[i] - amount_in),
            put(amm_balance(0, o as u64, 7), small(big(bal[o]) + out)),
        ],
    ))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES * 2))]

    /// Swaps on reserves and amounts up to `u64::MAX`, where `reserve × amount × 997` passes
    /// 2^128 (before, the u128 product wrapped), against the exact big-integer formula; the
    /// slippage limit is tried at the exact output and one above it.
    #[test]
    fn amm_swap_is_exact(r0 in x64(), r1 in x64(), b0 in x64(), b1 in x64(), zero_for_one in any::<bool>(), amount_in in x64(), limit in 0u8..5, any_limit in x64()) {
        let r = [r0, r1];
        let (i, o) = if zero_for_one { (0, 1) } else { (1, 0) };
        // The credited side's supply (reserve and balance) is within the bound; the paid side
        // need not be, so that the reserve can overflow.
        let mut bal = [b0, b1];
        bal[o] = bal[o].min(MAX - r[o]);
        let exact = if amount_in == 0 { 0 } else { swap_out(r[i], r[o], amount_in) };
        let min_out = [0, exact, exact.saturating_add(1), MAX, any_limit][limit as usize];
        let entries = [
            (pool(0), words(&r)),
            (amm_balance(0, 0, 7), Value::from_u64(bal[0])),
            (amm_balance(0, 1, 7), Value::from_u64(bal[1])),
        ];
        let kind = TxKind::AmmSwap { pool: 0, trader: 7, zero_for_one, amount_in, min_out };
        check(&entries, kind, amm_reference(r, bal, zero_for_one, amount_in, min_out))?;
    }
}

/// The reproducer of issue 15: both reserves at 2^63 − 1. Before: `Ok(14934964811917387)`.
#[test]
fn amm_swap_reproducer_of_issue_15() {
    let reserve = i64::MAX as u64;
    let amount_in = 3_313_746_342_408_571_411;
    let mut state = CommittedState::from_entries(vec![
        NativeVm::amm_pool(0, reserve),
        (amm_balance(0, 0, 8), Value::from_u64(4_000_000_000_000_000_000)),
        (amm_balance(0, 1, 8), Value::from_u64(4_000_000_000_000_000_000)),
    ]);
    let tx = NativeTx::new(TxKind::AmmSwap { pool: 0, trader: 8, zero_for_one: true, amount_in, min_out: 0 });
    let mut seq = executor_by_name::<NativeVm>("sequential", 1).unwrap();
    let out = seq.execute_and_commit(&NativeVm, &mut state, &[tx]).unwrap();
    assert_eq!(out.outputs, vec![Ok(2_432_489_240_362_992_312)]);
    assert_eq!(state.get(&pool(0)), Some(&words(&[reserve + amount_in, reserve - 2_432_489_240_362_992_312])));
}

// ---------------------------------------------------------------------------------------------
// NFT
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Minting at the limits of the counter, the price, the buyer's balance and its holdings.
    #[test]
    fn nft_mint_is_exact(minted in x64(), max_supply in x64(), price in x64(), balance in x64(), held in x64(), treasury_total in x64()) {
        // The buyer's balance and the proceeds share the native supply.
        let treasury_total = treasury_total.min(MAX - balance);
        let entries = [
            NativeVm::collection(0, minted, max_supply, price),
            (account(3), Value::from_u64(balance)),
            (holdings(0, 3), words(&[held, 5])),
            (treasury(0), Value::from_u64(treasury_total)),
        ];
        let expected = if minted >= max_supply {
            Err(Failure::SoldOut)
        } else if balance < price {
            Err(Failure::InsufficientFunds)
        } else if held == MAX {
            Err(Failure::Overflow)
        } else {
            Ok((
                minted,
                vec![
                    put(account(3), balance - price),
                    put_words(collection(0), &[minted + 1, max_supply, price]),
                    put_words(holdings(0, 3), &[held + 1, minted]),
                    put(treasury(0), small(big(treasury_total) + price)),
                ],
            ))
        };
        check(&entries, TxKind::NftMint { collection: 0, minter: 3 }, expected)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Histories, evidence, documents, grants
// ---------------------------------------------------------------------------------------------

/// The 40-byte history value `count ‖ head`.
fn history_value(count: u64, head: [u8; 32]) -> Value {
    let mut v = count.to_le_bytes().to_vec();
    v.extend_from_slice(&head);
    Value::from_slice(&v)
}

/// `head` with `event` chained in.
fn chained(head: [u8; 32], event: [u64; 3]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&head);
    for w in event {
        h.update(&w.to_le_bytes());
    }
    *h.finalize().as_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Every kind that appends to a history, with its count at the limit: the count is
    /// exact, and at `u64::MAX` the kind fails with `overflow` and writes nothing (before, it
    /// wrapped to 0). Document serial numbers likewise.
    #[test]
    fn histories_and_serials_are_exact(count in x64(), serial_now in x64(), head in any::<[u8; 32]>(), which in 0u8..6, event in x64()) {
        let (id, subject) = (4u64, 5u64);
        let mut entries = vec![
            (owner(id), Value::from_u64(1)),
            (history(id), history_value(count, head)),
            (history(subject), history_value(count, head)),
            (document(subject, 0), words(&[subject, 9])),
            (serial(2), Value::from_u64(serial_now)),
        ];
        let (kind, history_of, event_words, mut writes) = match which {
            0 => {
                entries.remove(0);
                (TxKind::ItemRegister { item: id, owner: 1, event }, id, [1, 1, event], vec![put(owner(id), 1)])
            }
            1 => (TxKind::ItemHandover { item: id, from: 1, to: 2, event }, id, [2, 2, event], vec![put(owner(id), 2)]),
            2 => (TxKind::ItemEvent { item: id, actor: 3, event }, id, [3, 3, event], vec![]),
            3 => (TxKind::Notarize { evidence: 77, submitter: subject, digest: event }, subject, [4, 77, event], vec![put_words(evidence(77), &[subject, event])]),
            4 => (TxKind::DocUpdate { subject, slot: 0, writer: subject, digest: event }, subject, [5, subject, 0], vec![put_words(document(subject, 0), &[subject, event])]),
            _ => (TxKind::DocRead { subject, slot: 0, reader: subject, audit: true }, subject, [6, subject, 0], vec![]),
        };
        let expected = if count == MAX {
            Err(Failure::Overflow)
        } else {
            writes.push((history(history_of), Some(history_value(count + 1, chained(head, event_words)))));
            Ok((if which == 5 { 9 } else { count + 1 }, writes))
        };
        check(&entries, kind, expected)?;

        let expected = if serial_now == MAX {
            Err(Failure::Overflow)
        } else {
            Ok((serial_now + 1, vec![put(serial(2), serial_now + 1), put_words(document(subject, 1), &[2, event])]))
        };
        check(&entries, TxKind::DocIssue { issuer: 2, subject, slot: 1, digest: event }, expected)?;
        // Grants carry no arithmetic.
        check(&entries, TxKind::Grant { subject, grantee: event }, Ok((1, vec![put(grant(subject, event), 1)])))?;
    }
}

// ---------------------------------------------------------------------------------------------
// Call auctions
// ---------------------------------------------------------------------------------------------

fn level_qty() -> impl Strategy<Value = [u64; LEVELS]> {
    prop::array::uniform8(prop_oneof![3 => Just(0u64), 3 => x64()])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Placing an order: the bid's escrow `qty × price` and the level's total are exact or
    /// `overflow`.
    #[test]
    fn order_is_exact(epoch in x64(), bids in level_qty(), asks in level_qty(), sell in any::<bool>(), qty in x64(), level in prop_oneof![0u64..8, x64()], balance in x64()) {
        let book0 = Book { epoch, bids, asks, ..Book::default() };
        let escrow_key = if sell { token_balance(1, 3) } else { account(3) };
        let entries = [(book(1), book0.to_value()), (escrow_key, Value::from_u64(balance))];
        let expected = (|| {
            if qty == 0 || level >= LEVELS as u64 {
                return Err(Failure::InvalidAmount);
            }
            let escrow = if sell { qty } else { fit(&(big(qty) * (big(level) + 1u32)))? };
            if balance < escrow {
                return Err(Failure::InsufficientFunds);
            }
            let mut b = book0.clone();
            let side = if sell { &mut b.asks } else { &mut b.bids };
            side[level as usize] = fit(&(big(side[level as usize]) + qty))?;
            Ok((
                epoch,
                vec![
                    put(escrow_key, balance - escrow),
                    put_words(order(1, 3), &[epoch, sell as u64, qty, level]),
                    (book(1), Some(b.to_value())),
                ],
            ))
        })();
        check(&entries, TxKind::Order { market: 1, trader: 3, sell, qty, level }, expected)?;
    }

    /// Clearing sums levels exactly: the round at the level that matches most, or `overflow`
    /// when its demand or supply passes 64 bits (before, the sums saturated).
    #[test]
    fn clear_is_exact(epoch in prop_oneof![x64(), Just(MAX)], bids in level_qty(), asks in level_qty()) {
        let book0 = Book { epoch, bids, asks, ..Book::default() };
        let entries = [(book(1), book0.to_value())];
        let expected = (|| {
            if epoch == MAX {
                return Err(Failure::Overflow);
            }
            let (mut best, mut at) = ((BigUint::ZERO, BigUint::ZERO, BigUint::ZERO), None);
            for p in 0..LEVELS {
                let demand: BigUint = bids[p..].iter().map(|&q| big(q)).sum();
                let supply: BigUint = asks[..=p].iter().map(|&q| big(q)).sum();
                let matched = demand.clone().min(supply.clone());
                if matched > best.0 {
                    (best, at) = ((matched, demand, supply), Some(p as u64));
                }
            }
            let round = Round { level: at, matched: fit(&best.0)?, demand: fit(&best.1)?, supply: fit(&best.2)? };
            let mut b = Book { epoch: epoch + 1, ..book0.clone() };
            b.bids = [0; LEVELS];
            b.asks = [0; LEVELS];
            b.rounds[(epoch % ROUNDS as u64) as usize] = round;
            Ok((round.matched, vec![(book(1), Some(b.to_value()))]))
        })();
        check(&entries, TxKind::Clear { market: 1 }, expected)?;
    }

    /// Settling pays out exactly the floors and ceilings of `qty × matched / side` times the
    /// price, or fails with `overflow` (before, a seller's proceeds saturated and a buyer's
    /// refund could wrap).
    #[test]
    fn settle_is_exact(
        e in x64(),
        lag in 0u64..18,
        level_at in prop_oneof![Just(None), (0u64..8).prop_map(Some), x64().prop_map(|l| Some(l.min(MAX - 1)))],
        matched in x64(), demand in x64(), supply in x64(),
        sell in any::<bool>(), qty in x64(), level in prop_oneof![0u64..8, x64()],
        money_held in x64(), goods_held in x64(),
    ) {
        let e = e.min(MAX - 18);
        let round = Round { level: level_at, matched, demand, supply };
        let mut b = Book { epoch: e + 1 + lag, ..Book::default() };
        b.rounds[(e % ROUNDS as u64) as usize] = round;
        // The reference: fills are floors and ceilings of the exact due.
        let payout = (|| -> Result<(u64, u64, u64), Failure> {
            let side = if sell { supply } else { demand };
            let eligible = level_at.is_some_and(|p| if sell { level <= p } else { level >= p });
            let (credited, debited, price) = match level_at {
                Some(p) if eligible && side > 0 => {
                    let due = big(qty) * matched;
                    (fit(&(&due / side))?, fit(&((&due + side - 1u32) / side))?, fit(&(big(p) + 1u32))?)
                }
                _ => (0, 0, 0),
            };
            if sell {
                let goods = qty.checked_sub(debited).ok_or(Failure::Overflow)?;
                Ok((credited, goods, fit(&(big(credited) * price))?))
            } else {
                // The escrow the bid placed, and what it pays: both must fit, like the refund.
                let escrow = fit(&(big(qty) * fit(&(big(level) + 1u32))?))?;
                let paid = fit(&(big(debited) * price))?;
                Ok((credited, credited, escrow.checked_sub(paid).ok_or(Failure::Overflow)?))
            }
        })();
        // Credits stay within the supply bound.
        let (goods, money) = payout.map_or((0, 0), |(_, g, m)| (g, m));
        let (money_held, goods_held) = (money_held.min(MAX - money), goods_held.min(MAX - goods));
        let entries = [
            (book(1), b.to_value()),
            (order(1, 3), words(&[e, sell as u64, qty, level])),
            (account(3), Value::from_u64(money_held)),
            (token_balance(1, 3), Value::from_u64(goods_held)),
        ];
        let expected = if lag >= ROUNDS as u64 {
            Err(Failure::Expired)
        } else {
            payout.map(|(filled, goods, money)| {
                let mut w = vec![(order(1, 3), None)];
                if goods > 0 {
                    w.push(put(token_balance(1, 3), goods_held + goods));
                }
                if money > 0 {
                    w.push(put(account(3), money_held + money));
                }
                (filled, w)
            })
        };
        check(&entries, TxKind::Settle { market: 1, trader: 3 }, expected)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Receivables
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Issue, split, finance and redeem with face values, credit lines, discounts and balances
    /// at the limits.
    #[test]
    fn receivables_are_exact(face in x64(), amount in x64(), line in x64(), bp in prop_oneof![Just(0u64), Just(1), Just(9_999), Just(10_000), Just(10_001), x64()], payer in x64(), payee in x64()) {
        let receivable_of = |holder: u64, face: u64, financed: bool| words(&[holder, face, 0, financed as u64]);
        // Issue.
        let entries = [(credit_line(0), Value::from_u64(line))];
        let expected = if amount == 0 {
            Err(Failure::InvalidAmount)
        } else if line < amount {
            Err(Failure::InsufficientFunds)
        } else {
            Ok((line - amount, vec![put(credit_line(0), line - amount), (receivable(9), Some(receivable_of(1, amount, false)))]))
        };
        check(&entries, TxKind::ReceivableIssue { issuer: 0, receivable: 9, to: 1, amount }, expected)?;

        // Split.
        let entries = [(receivable(9), receivable_of(1, face, false))];
        let expected = if amount == 0 || amount >= face {
            Err(Failure::InvalidAmount)
        } else {
            Ok((face - amount, vec![(receivable(9), Some(receivable_of(1, face - amount, false))), (receivable(10), Some(receivable_of(2, amount, false)))]))
        };
        check(&entries, TxKind::ReceivableSplit { receivable: 9, holder: 1, new_receivable: 10, to: 2, amount }, expected)?;

        // Finance: the financier (3) pays the holder (1); both hold native money.
        let payee_f = payee.min(MAX - payer);
        let entries = [(receivable(9), receivable_of(1, face, false)), (account(3), Value::from_u64(payer)), (account(1), Value::from_u64(payee_f))];
        let expected = (|| {
            if bp > 10_000 {
                return Err(Failure::InvalidAmount);
            }
            let price = small(big(face) * (10_000 - bp) / 10_000u32);
            if payer < price {
                return Err(Failure::InsufficientFunds);
            }
            Ok((price, vec![put(account(3), payer - price), put(account(1), payee_f + price), (receivable(9), Some(receivable_of(3, face, true)))]))
        })();
        check(&entries, TxKind::ReceivableFinance { receivable: 9, holder: 1, financier: 3, discount_bp: bp }, expected)?;

        // Redeem: the issuer (0) pays the holder (1) and its credit line grows back; the line
        // and the open face values share the credit supply.
        let line_r = line.min(MAX - face);
        let entries = [(receivable(9), receivable_of(1, face, true)), (account(0), Value::from_u64(payer)), (account(1), Value::from_u64(payee_f)), (credit_line(0), Value::from_u64(line_r))];
        let expected = if payer < face {
            Err(Failure::InsufficientFunds)
        } else {
            Ok((face, vec![put(account(0), payer - face), put(account(1), payee_f + face), put(credit_line(0), line_r + face), (receivable(9), None)]))
        };
        check(&entries, TxKind::ReceivableRedeem { receivable: 9, holder: 1, issuer: 0 }, expected)?;
    }
}

// ---------------------------------------------------------------------------------------------
// The supply bound
// ---------------------------------------------------------------------------------------------

/// Every supply of a genesis, counted from its entries with big integers: native money,
/// tokens (holdings plus registry headroom), each side of each pool, credit lines, and the
/// largest SmallBank balance (as unsigned bits: above `i64::MAX` is a negative balance).
fn supplies(cfg: &GenesisConfig) -> Vec<(AssetKind, u64, BigUint)> {
    let state = CommittedState::from_entries(NativeVm::genesis(cfg));
    let get = |k: Key| big(state.get(&k).and_then(Value::as_u64).unwrap_or(0));
    let ids = 0..cfg.accounts;
    let mut out = vec![(AssetKind::Native, 0, ids.clone().map(|i| get(account(i))).sum())];
    out.push((AssetKind::Credit, 0, ids.clone().map(|i| get(credit_line(i))).sum()));
    for t in 0..4 {
        let headroom = state.get(&registry(t)).map_or(0, |v| {
            let w: Vec<u64> = v.as_bytes().chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
            w[1].saturating_sub(w[0])
        });
        out.push((AssetKind::Token, t, ids.clone().map(|i| get(token_balance(t, i))).sum::<BigUint>() + headroom));
        for side in 0..2 {
            let reserve = state.get(&pool(t)).map_or(0, |v| u64::from_le_bytes(v.as_bytes()[side * 8..side * 8 + 8].try_into().unwrap()));
            out.push((AssetKind::AmmPool, t, ids.clone().map(|i| get(amm_balance(t, side as u64, i))).sum::<BigUint>() + reserve));
        }
    }
    for i in ids {
        out.push((AssetKind::Customer, i, get(checking(i)).max(get(savings(i)))));
    }
    out
}

fn genesis_config() -> impl Strategy<Value = GenesisConfig> {
    let balance = prop_oneof![x64(), Just(MAX / 2), Just(MAX / 3), Just(MAX / 3 + 1), Just(MAX / 8), Just(MAX / 8 + 1)];
    (0u64..5, balance, any::<[bool; 4]>(), (0u64..3, 0u64..3, 0u64..3, 0u64..3, 0u64..3)).prop_map(|(accounts, balance, flags, counts)| {
        let mut g = GenesisConfig { accounts, balance, ..GenesisConfig::default() };
        [g.native_accounts, g.smallbank, g.kv, g.credit_lines] = flags;
        (g.tokens, g.amm_pools, g.nft_collections, g.registries, g.markets) = counts;
        g
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES * 2))]

    /// `GenesisConfig::check` accepts a configuration exactly when every supply of the genesis
    /// it builds, counted from the entries, is within its limit; and it names one that is not.
    #[test]
    fn genesis_check_is_exact(cfg in genesis_config()) {
        let over: Vec<_> = supplies(&cfg).into_iter().filter(|(kind, _, total)| *total > big(kind.limit())).collect();
        match cfg.check() {
            Ok(()) => prop_assert!(over.is_empty(), "accepted, but over: {over:?}"),
            Err(e) => {
                prop_assert!(over.iter().any(|(kind, id, total)| *kind == e.kind && *id == e.id && BigUint::from(e.total) == *total), "{e}: {over:?}");
            }
        }
    }
}

/// Supplies at exactly `u64::MAX` are accepted, one more is refused, and the room left is what
/// a registry may still issue.
#[test]
fn supply_bound_is_tight() {
    let cfg = |balance| GenesisConfig { accounts: 3, balance, native_accounts: true, ..Default::default() };
    assert_eq!(cfg(MAX / 3).check(), Ok(()));
    let e = cfg(MAX / 3 + 1).check().unwrap_err();
    assert_eq!((e.kind, e.id, e.total), (AssetKind::Native, 0, 3 * (MAX as u128 / 3 + 1)));
    assert!(e.to_string().contains("native money"), "{e}");
    let sb = GenesisConfig { accounts: 1, balance: i64::MAX as u64 + 1, smallbank: true, ..Default::default() };
    assert_eq!(sb.check().unwrap_err().kind, AssetKind::Customer, "a SmallBank balance must be a valid i64");

    let mut s = Supply::default();
    s.add(AssetKind::Token, 0..10, 5);
    s.add(AssetKind::Token, 4..6, MAX as u128 - 5);
    s.add(AssetKind::Native, 0..1, MAX as u128);
    assert_eq!(s.check(), Ok(()));
    assert_eq!((s.total(AssetKind::Token, 5), s.total(AssetKind::Token, 6)), (MAX as u128, 5));
    assert_eq!((s.room(AssetKind::Token, 0..4), s.room(AssetKind::Token, 0..5), s.room(AssetKind::Token, 6..7)), (MAX - 5, 0, MAX - 5));
    s.add(AssetKind::Token, 5..6, 1);
    let e = s.check().unwrap_err();
    assert_eq!((e.kind, e.id, e.total), (AssetKind::Token, 5, MAX as u128 + 1));
}

/// A supply of exactly `u64::MAX`, gathered into one account by transfers, or issued to one
/// holder up to its registry's cap, lands exactly on `u64::MAX` on every executor: the bound
/// is tight and the credits never wrap.
#[test]
fn supplies_at_the_limit_gather_without_wrapping() {
    let third = MAX / 3;
    let mut entries = vec![
        (account(0), Value::from_u64(third)),
        (account(1), Value::from_u64(third)),
        (account(2), Value::from_u64(MAX - 2 * third)),
        (token_balance(0, 1), Value::from_u64(third)),
        NativeVm::registry(0, 0, MAX - third),
    ];
    entries.sort();
    let block: Vec<NativeTx> = [
        TxKind::Transfer { from: 1, to: 0, amount: third },
        TxKind::Transfer { from: 2, to: 0, amount: MAX - 2 * third },
        TxKind::TokenIssue { token: 0, to: 1, amount: MAX - third - 1 },
        TxKind::TokenIssue { token: 0, to: 1, amount: 2 },
        TxKind::TokenIssue { token: 0, to: 1, amount: 1 },
        TxKind::Transfer { from: 0, to: 0, amount: MAX },
    ]
    .into_iter()
    .map(NativeTx::new)
    .collect();
    let expected: Vec<NativeOutput> = vec![Ok(0), Ok(0), Ok(MAX - third - 1), Err(Failure::CapExceeded), Ok(MAX - third), Ok(0)];
    for name in EXECUTOR_NAMES {
        for threads in [1, 4] {
            let mut state = CommittedState::from_entries(entries.clone());
            let mut exec = executor_by_name::<NativeVm>(name, threads).unwrap();
            let out = exec.execute_and_commit(&NativeVm, &mut state, &block).unwrap();
            assert_eq!(out.outputs, expected, "{name} × {threads}");
            assert_eq!(state.get(&account(0)), Some(&Value::from_u64(MAX)), "{name}");
            assert_eq!(state.get(&token_balance(0, 1)), Some(&Value::from_u64(MAX)), "{name}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Every executor on extreme blocks
// ---------------------------------------------------------------------------------------------

/// A transaction of any kind with extreme amounts, over ids `0..6` and assets `0..2`.
fn extreme_tx() -> impl Strategy<Value = NativeTx> {
    let id = || 0u64..6;
    let asset = || 0u64..2;
    prop_oneof![
        (id(), id(), x64()).prop_map(|(from, to, amount)| TxKind::Transfer { from, to, amount }),
        (id(), id()).prop_map(|(a, b)| TxKind::SbAmalgamate { a, b }),
        id().prop_map(|a| TxKind::SbBalance { a }),
        (id(), x64()).prop_map(|(a, amount)| TxKind::SbDepositChecking { a, amount }),
        (id(), id(), x64()).prop_map(|(from, to, amount)| TxKind::SbSendPayment { from, to, amount }),
        (id(), xi64()).prop_map(|(a, amount)| TxKind::SbTransactSavings { a, amount }),
        (id(), x64()).prop_map(|(a, amount)| TxKind::SbWriteCheck { a, amount }),
        (asset(), id(), id(), x64()).prop_map(|(token, from, to, amount)| TxKind::TokenTransfer { token, from, to, amount }),
        (asset(), id(), any::<bool>(), x64()).prop_map(|(pool, trader, zero_for_one, amount_in)| TxKind::AmmSwap {
            pool,
            trader,
            zero_for_one,
            amount_in,
            min_out: 0
        }),
        (asset(), id()).prop_map(|(collection, minter)| TxKind::NftMint { collection, minter }),
        (asset(), id(), x64()).prop_map(|(token, to, amount)| TxKind::TokenIssue { token, to, amount }),
        (asset(), id(), x64()).prop_map(|(token, holder, amount)| TxKind::TokenRetire { token, holder, amount }),
        (asset(), id(), any::<bool>(), x64(), 0u64..8).prop_map(|(market, trader, sell, qty, level)| TxKind::Order {
            market,
            trader,
            sell,
            qty,
            level
        }),
        asset().prop_map(|market| TxKind::Clear { market }),
        (asset(), id()).prop_map(|(market, trader)| TxKind::Settle { market, trader }),
        (id(), id(), id(), x64()).prop_map(|(issuer, receivable, to, amount)| TxKind::ReceivableIssue { issuer, receivable, to, amount }),
        (id(), id(), id(), x64()).prop_map(|(receivable, holder, financier, discount_bp)| TxKind::ReceivableFinance {
            receivable,
            holder,
            financier,
            discount_bp
        }),
        (id(), id(), id()).prop_map(|(receivable, holder, issuer)| TxKind::ReceivableRedeem { receivable, holder, issuer }),
    ]
    .prop_map(NativeTx::new)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Blocks of extreme transactions on the largest genesis the bound allows: every executor
    /// gives the sequential outputs, write set and root, and nothing panics.
    #[test]
    fn executors_agree_on_extreme_blocks(balance in prop_oneof![Just(MAX / 8), Just(i64::MAX as u64 / 4), x64().prop_map(|b| b / 8)], block in prop::collection::vec(extreme_tx(), 1..48), threads in 2usize..5) {
        let cfg = GenesisConfig::full(4, balance);
        prop_assert_eq!(cfg.check(), Ok(()));
        let genesis = CommittedState::from_entries(NativeVm::genesis(&cfg));
        let mut reference = genesis.clone();
        let want = executor_by_name::<NativeVm>("sequential", 1).unwrap().execute_and_commit(&NativeVm, &mut reference, &block).unwrap();
        for name in EXECUTOR_NAMES.iter().filter(|n| **n != "sequential") {
            let mut state = genesis.clone();
            let got = executor_by_name::<NativeVm>(name, threads).unwrap().execute_and_commit(&NativeVm, &mut state, &block).unwrap();
            prop_assert_eq!(&got.outputs, &want.outputs, "{}", name);
            prop_assert_eq!(got.write_set.sorted(), want.write_set.sorted(), "{}", name);
            prop_assert_eq!(state.root(), reference.root(), "{}", name);
        }
    }
}
