//! The semantics of each native transaction kind, and the keys each declares.

use super::{tag, Failure, NativeOutput, TxKind, KV_VALUE_LEN};
use crate::key::Key;
use crate::value::Value;
use crate::vm::{Interrupt, View};

/// `rounds` chained blake3 hashes of 32 bytes, starting from `seed`: the emulated VM cost.
pub fn burn(rounds: u32, seed: u64) -> [u8; 32] {
    let mut buf = [0u8; 32];
    buf[..8].copy_from_slice(&seed.to_le_bytes());
    for _ in 0..rounds {
        buf = *blake3::hash(&buf).as_bytes();
    }
    buf
}

/// The YCSB record value derived from `seed` for `record`.
pub(crate) fn kv_value(record: u64, seed: u64) -> Value {
    let mut v = [0u8; KV_VALUE_LEN];
    let mut x = record ^ seed.rotate_left(17) ^ 0x5851_F42D_4C95_7F2D;
    for chunk in v.chunks_mut(8) {
        x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    Value::from_slice(&v)
}

pub(crate) fn pool_value(r0: u64, r1: u64) -> Value {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&r0.to_le_bytes());
    b[8..].copy_from_slice(&r1.to_le_bytes());
    Value::from_slice(&b)
}

pub(crate) fn collection_value(minted: u64, max_supply: u64, price: u64) -> Value {
    let mut b = [0u8; 24];
    b[..8].copy_from_slice(&minted.to_le_bytes());
    b[8..16].copy_from_slice(&max_supply.to_le_bytes());
    b[16..].copy_from_slice(&price.to_le_bytes());
    Value::from_slice(&b)
}

fn words<const N: usize>(v: &Value) -> Option<[u64; N]> {
    let b = v.as_bytes();
    if b.len() != N * 8 {
        return None;
    }
    let mut out = [0u64; N];
    for (i, w) in out.iter_mut().enumerate() {
        *w = u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().ok()?);
    }
    Some(out)
}

fn acct(id: u64) -> Key {
    Key::from_parts(tag::ACCOUNT, id, 0)
}
fn checking(id: u64) -> Key {
    Key::from_parts(tag::SB_CHECKING, id, 0)
}
fn savings(id: u64) -> Key {
    Key::from_parts(tag::SB_SAVINGS, id, 0)
}
fn record(id: u64) -> Key {
    Key::from_parts(tag::KV, id, 0)
}
fn token_balance(token: u64, holder: u64) -> Key {
    Key::from_parts(tag::TOKEN_BALANCE, token, holder)
}
fn allowance(token: u64, owner: u64, spender: u64) -> Key {
    Key::from_parts3(tag::TOKEN_ALLOWANCE, token, owner, spender)
}
fn pool(id: u64) -> Key {
    Key::from_parts(tag::AMM_POOL, id, 0)
}
fn amm_balance(pool: u64, side: u64, trader: u64) -> Key {
    Key::from_parts(tag::AMM_BALANCE, pool * 2 + side, trader)
}
fn collection(id: u64) -> Key {
    Key::from_parts(tag::NFT_COLLECTION, id, 0)
}
fn holdings(collection: u64, holder: u64) -> Key {
    Key::from_parts(tag::NFT_HOLDINGS, collection, holder)
}
fn treasury(collection: u64) -> Key {
    Key::from_parts(tag::NFT_TREASURY, collection, 0)
}

/// A `u64` at `key`; `missing` if absent or malformed.
fn read_u64<V: View>(view: &mut V, key: &Key, missing: Failure) -> Result<Result<u64, Failure>, Interrupt> {
    Ok(view.read(key)?.and_then(|v| v.as_u64()).ok_or(missing))
}

/// A `u64` at `key`, 0 if absent (ERC-20 balances and allowances).
fn read_u64_or_zero<V: View>(view: &mut V, key: &Key) -> Result<u64, Interrupt> {
    Ok(view.read(key)?.and_then(|v| v.as_u64()).unwrap_or(0))
}

macro_rules! tri {
    ($e:expr) => {
        match $e? {
            Ok(v) => v,
            Err(f) => return Ok(Err(f)),
        }
    };
}

/// Executes one native transaction. Checks come before writes, so a failure writes nothing.
pub(crate) fn execute<V: View>(kind: &TxKind, view: &mut V) -> Result<NativeOutput, Interrupt> {
    Ok(Ok(match *kind {
        TxKind::Transfer { from, to, amount } => {
            let balance = tri!(read_u64(view, &acct(from), Failure::UnknownAccount));
            if balance < amount {
                return Ok(Err(Failure::InsufficientFunds));
            }
            view.write(acct(from), Value::from_u64(balance - amount));
            view.add(acct(to), amount);
            balance - amount
        }
        TxKind::SbBalance { a } => {
            let c = tri!(read_u64(view, &checking(a), Failure::UnknownAccount));
            let s = tri!(read_u64(view, &savings(a), Failure::UnknownAccount));
            (c as i64).wrapping_add(s as i64) as u64
        }
        TxKind::SbDepositChecking { a, amount } => {
            if amount == 0 || amount > i64::MAX as u64 {
                return Ok(Err(Failure::InvalidAmount));
            }
            view.add(checking(a), amount);
            amount
        }
        TxKind::SbTransactSavings { a, amount } => {
            let s = tri!(read_u64(view, &savings(a), Failure::UnknownAccount)) as i64;
            let new = match s.checked_add(amount) {
                Some(v) if v >= 0 => v,
                Some(_) => return Ok(Err(Failure::InsufficientFunds)),
                None => return Ok(Err(Failure::InvalidAmount)),
            };
            view.write(savings(a), Value::from_u64(new as u64));
            new as u64
        }
        TxKind::SbAmalgamate { a, b } => {
            let c = tri!(read_u64(view, &checking(a), Failure::UnknownAccount)) as i64;
            let s = tri!(read_u64(view, &savings(a), Failure::UnknownAccount)) as i64;
            let total = c.wrapping_add(s);
            view.write(checking(a), Value::from_u64(0));
            view.write(savings(a), Value::from_u64(0));
            view.add(checking(b), total as u64);
            total as u64
        }
        TxKind::SbWriteCheck { a, amount } => {
            if amount > i64::MAX as u64 {
                return Ok(Err(Failure::InvalidAmount));
            }
            let c = tri!(read_u64(view, &checking(a), Failure::UnknownAccount)) as i64;
            let s = tri!(read_u64(view, &savings(a), Failure::UnknownAccount)) as i64;
            let amount = amount as i64;
            let debit = if c.wrapping_add(s) < amount { amount.wrapping_add(1) } else { amount };
            let new = c.wrapping_sub(debit);
            view.write(checking(a), Value::from_u64(new as u64));
            new as u64
        }
        TxKind::SbSendPayment { from, to, amount } => {
            if amount > i64::MAX as u64 {
                return Ok(Err(Failure::InvalidAmount));
            }
            let c = tri!(read_u64(view, &checking(from), Failure::UnknownAccount)) as i64;
            if c < amount as i64 {
                return Ok(Err(Failure::InsufficientFunds));
            }
            let new = c - amount as i64;
            view.write(checking(from), Value::from_u64(new as u64));
            view.add(checking(to), amount);
            new as u64
        }
        TxKind::KvRead { record: r } => match view.read(&record(r))? {
            Some(v) => u64::from_le_bytes(v.as_bytes().get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8])),
            None => return Ok(Err(Failure::RecordNotFound)),
        },
        TxKind::KvUpdate { record: r, seed } => {
            view.write(record(r), kv_value(r, seed));
            seed
        }
        TxKind::KvRmw { record: r, seed } => {
            let Some(old) = view.read(&record(r))? else {
                return Ok(Err(Failure::RecordNotFound));
            };
            let mix = u64::from_le_bytes(old.as_bytes().get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]));
            view.write(record(r), kv_value(r, seed ^ mix));
            mix
        }
        TxKind::KvInsert { record: r, seed } => {
            if view.read(&record(r))?.is_some() {
                return Ok(Err(Failure::RecordExists));
            }
            view.write(record(r), kv_value(r, seed));
            r
        }
        TxKind::TokenTransfer { token, from, to, amount } => {
            let balance = read_u64_or_zero(view, &token_balance(token, from))?;
            if balance < amount {
                return Ok(Err(Failure::InsufficientFunds));
            }
            view.write(token_balance(token, from), Value::from_u64(balance - amount));
            view.add(token_balance(token, to), amount);
            balance - amount
        }
        TxKind::TokenApprove { token, owner, spender, amount } => {
            view.write(allowance(token, owner, spender), Value::from_u64(amount));
            amount
        }
        TxKind::TokenTransferFrom { token, spender, from, to, amount } => {
            let allowed = read_u64_or_zero(view, &allowance(token, from, spender))?;
            if allowed < amount {
                return Ok(Err(Failure::InsufficientAllowance));
            }
            let balance = read_u64_or_zero(view, &token_balance(token, from))?;
            if balance < amount {
                return Ok(Err(Failure::InsufficientFunds));
            }
            view.write(allowance(token, from, spender), Value::from_u64(allowed - amount));
            view.write(token_balance(token, from), Value::from_u64(balance - amount));
            view.add(token_balance(token, to), amount);
            balance - amount
        }
        TxKind::AmmSwap { pool: p, trader, zero_for_one, amount_in, min_out } => {
            if amount_in == 0 {
                return Ok(Err(Failure::InvalidAmount));
            }
            let Some([r0, r1]) = view.read(&pool(p))?.as_ref().and_then(words::<2>) else {
                return Ok(Err(Failure::UnknownPool));
            };
            let (side_in, r_in, r_out) = if zero_for_one { (0, r0, r1) } else { (1, r1, r0) };
            let balance = read_u64_or_zero(view, &amm_balance(p, side_in, trader))?;
            if balance < amount_in {
                return Ok(Err(Failure::InsufficientFunds));
            }
            let in_fee = amount_in as u128 * 997;
            let out = (r_out as u128 * in_fee / (r_in as u128 * 1000 + in_fee)) as u64;
            let Some(new_in) = r_in.checked_add(amount_in) else {
                return Ok(Err(Failure::InvalidAmount));
            };
            if out == 0 || out < min_out {
                return Ok(Err(Failure::Slippage));
            }
            let (n0, n1) = if zero_for_one { (new_in, r_out - out) } else { (r_out - out, new_in) };
            view.write(pool(p), pool_value(n0, n1));
            view.write(amm_balance(p, side_in, trader), Value::from_u64(balance - amount_in));
            view.add(amm_balance(p, 1 - side_in, trader), out);
            out
        }
        TxKind::NftMint { collection: c, minter } => {
            let Some([minted, max_supply, price]) = view.read(&collection(c))?.as_ref().and_then(words::<3>) else {
                return Ok(Err(Failure::UnknownCollection));
            };
            if minted >= max_supply {
                return Ok(Err(Failure::SoldOut));
            }
            let balance = tri!(read_u64(view, &acct(minter), Failure::UnknownAccount));
            if balance < price {
                return Ok(Err(Failure::InsufficientFunds));
            }
            let held = view.read(&holdings(c, minter))?.as_ref().and_then(words::<2>).map_or(0, |[n, _]| n);
            view.write(acct(minter), Value::from_u64(balance - price));
            view.write(collection(c), collection_value(minted + 1, max_supply, price));
            view.write(holdings(c, minter), pool_value(held + 1, minted));
            view.add(treasury(c), price);
            minted
        }
    }))
}

/// Appends the keys `kind` may touch.
pub(crate) fn declared_keys(kind: &TxKind, keys: &mut Vec<Key>) {
    match *kind {
        TxKind::Transfer { from, to, .. } => keys.extend([acct(from), acct(to)]),
        TxKind::SbBalance { a } | TxKind::SbTransactSavings { a, .. } | TxKind::SbWriteCheck { a, .. } => {
            keys.extend([checking(a), savings(a)])
        }
        TxKind::SbDepositChecking { a, .. } => keys.push(checking(a)),
        TxKind::SbAmalgamate { a, b } => keys.extend([checking(a), savings(a), checking(b)]),
        TxKind::SbSendPayment { from, to, .. } => keys.extend([checking(from), checking(to)]),
        TxKind::KvRead { record: r }
        | TxKind::KvUpdate { record: r, .. }
        | TxKind::KvRmw { record: r, .. }
        | TxKind::KvInsert { record: r, .. } => keys.push(record(r)),
        TxKind::TokenTransfer { token, from, to, .. } => keys.extend([token_balance(token, from), token_balance(token, to)]),
        TxKind::TokenApprove { token, owner, spender, .. } => keys.push(allowance(token, owner, spender)),
        TxKind::TokenTransferFrom { token, spender, from, to, .. } => {
            keys.extend([allowance(token, from, spender), token_balance(token, from), token_balance(token, to)])
        }
        TxKind::AmmSwap { pool: p, trader, .. } => keys.extend([pool(p), amm_balance(p, 0, trader), amm_balance(p, 1, trader)]),
        TxKind::NftMint { collection: c, minter } => keys.extend([collection(c), acct(minter), holdings(c, minter), treasury(c)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::{GenesisConfig, NativeTx, NativeVm};
    use crate::state::CommittedState;
    use crate::vm::Vm;

    /// Runs one transaction on a state and commits it; returns the output.
    fn run(state: &mut CommittedState, kind: TxKind) -> NativeOutput {
        use crate::exec::{BlockExecutor, SequentialExecutor};
        let tx = NativeTx::new(kind);
        let mut declared = Vec::new();
        assert!(NativeVm.declared_keys(&tx, &mut declared));
        let out = SequentialExecutor::new().execute_and_commit(&NativeVm, state, std::slice::from_ref(&tx)).unwrap();
        for (k, _) in out.write_set.iter() {
            assert!(declared.contains(k), "{} wrote undeclared {k:?}", tx.kind.name());
        }
        out.outputs[0]
    }

    fn genesis() -> CommittedState {
        CommittedState::from_entries(NativeVm::genesis(&GenesisConfig {
            accounts: 4,
            balance: 100,
            native_accounts: true,
            smallbank: true,
            kv: true,
            tokens: 1,
            amm_pools: 1,
            nft_collections: 1,
        }))
    }

    fn u(state: &CommittedState, key: Key) -> Option<u64> {
        state.get(&key).and_then(Value::as_u64)
    }

    #[test]
    fn transfer_moves_funds_and_fails_cleanly() {
        let mut s = genesis();
        assert_eq!(run(&mut s, TxKind::Transfer { from: 0, to: 9, amount: 30 }), Ok(70));
        assert_eq!(u(&s, acct(9)), Some(30), "recipient created");
        let root = s.root();
        assert_eq!(run(&mut s, TxKind::Transfer { from: 0, to: 1, amount: 71 }), Err(Failure::InsufficientFunds));
        assert_eq!(run(&mut s, TxKind::Transfer { from: 77, to: 1, amount: 1 }), Err(Failure::UnknownAccount));
        assert_eq!(s.root(), root, "failures write nothing");
        assert_eq!(run(&mut s, TxKind::Transfer { from: 1, to: 1, amount: 50 }), Ok(50));
        assert_eq!(u(&s, acct(1)), Some(100), "self-transfer is a no-op");
    }

    #[test]
    fn smallbank_semantics() {
        let mut s = genesis();
        assert_eq!(run(&mut s, TxKind::SbBalance { a: 0 }), Ok(200));
        assert_eq!(run(&mut s, TxKind::SbBalance { a: 99 }), Err(Failure::UnknownAccount));
        assert_eq!(run(&mut s, TxKind::SbDepositChecking { a: 0, amount: 5 }), Ok(5));
        assert_eq!(run(&mut s, TxKind::SbDepositChecking { a: 0, amount: 0 }), Err(Failure::InvalidAmount));
        assert_eq!(u(&s, checking(0)), Some(105));
        assert_eq!(run(&mut s, TxKind::SbTransactSavings { a: 0, amount: -100 }), Ok(0));
        assert_eq!(run(&mut s, TxKind::SbTransactSavings { a: 0, amount: -1 }), Err(Failure::InsufficientFunds));
        assert_eq!(run(&mut s, TxKind::SbAmalgamate { a: 1, b: 2 }), Ok(200));
        assert_eq!((u(&s, checking(1)), u(&s, savings(1)), u(&s, checking(2))), (Some(0), Some(0), Some(300)));
        // A check over the total costs a penalty of 1 and may go negative.
        assert_eq!(run(&mut s, TxKind::SbWriteCheck { a: 3, amount: 250 }), Ok((100i64 - 251) as u64));
        assert_eq!(run(&mut s, TxKind::SbWriteCheck { a: 2, amount: 50 }), Ok(250));
        assert_eq!(run(&mut s, TxKind::SbSendPayment { from: 2, to: 0, amount: 251 }), Err(Failure::InsufficientFunds));
        assert_eq!(run(&mut s, TxKind::SbSendPayment { from: 2, to: 0, amount: 250 }), Ok(0));
        assert_eq!(u(&s, checking(0)), Some(355));
    }

    #[test]
    fn ycsb_semantics() {
        let mut s = genesis();
        let first = u64::from_le_bytes(kv_value(1, 0).as_bytes()[..8].try_into().unwrap());
        assert_eq!(run(&mut s, TxKind::KvRead { record: 1 }), Ok(first));
        assert_eq!(run(&mut s, TxKind::KvRead { record: 50 }), Err(Failure::RecordNotFound));
        assert_eq!(run(&mut s, TxKind::KvUpdate { record: 1, seed: 9 }), Ok(9));
        assert_eq!(s.get(&record(1)), Some(&kv_value(1, 9)));
        assert_eq!(run(&mut s, TxKind::KvRmw { record: 50, seed: 1 }), Err(Failure::RecordNotFound));
        assert!(run(&mut s, TxKind::KvRmw { record: 1, seed: 1 }).is_ok());
        assert_ne!(s.get(&record(1)), Some(&kv_value(1, 9)));
        assert_eq!(run(&mut s, TxKind::KvInsert { record: 1, seed: 1 }), Err(Failure::RecordExists));
        assert_eq!(run(&mut s, TxKind::KvInsert { record: 50, seed: 1 }), Ok(50));
        assert!(s.get(&record(50)).is_some());
    }

    #[test]
    fn token_semantics() {
        let mut s = genesis();
        assert_eq!(run(&mut s, TxKind::TokenTransfer { token: 0, from: 0, to: 1, amount: 40 }), Ok(60));
        assert_eq!(run(&mut s, TxKind::TokenTransfer { token: 0, from: 7, to: 1, amount: 1 }), Err(Failure::InsufficientFunds));
        let tf = |amount| TxKind::TokenTransferFrom { token: 0, spender: 2, from: 1, to: 3, amount };
        assert_eq!(run(&mut s, tf(10)), Err(Failure::InsufficientAllowance));
        assert_eq!(run(&mut s, TxKind::TokenApprove { token: 0, owner: 1, spender: 2, amount: 200 }), Ok(200));
        assert_eq!(run(&mut s, tf(141)), Err(Failure::InsufficientFunds), "holder 1 has 140");
        assert_eq!(run(&mut s, tf(140)), Ok(0));
        assert_eq!(u(&s, token_balance(0, 3)), Some(240));
        assert_eq!(u(&s, allowance(0, 1, 2)), Some(60));
        assert_eq!(run(&mut s, tf(1)), Err(Failure::InsufficientFunds));
    }

    #[test]
    fn amm_semantics() {
        let mut s = genesis();
        // Reserves are 400 / 400; 100 in with 0.3% fee gives 79 out.
        let swap = |amount_in, min_out| TxKind::AmmSwap { pool: 0, trader: 1, zero_for_one: true, amount_in, min_out };
        assert_eq!(run(&mut s, swap(100, 80)), Err(Failure::Slippage));
        assert_eq!(run(&mut s, swap(100, 79)), Ok(79));
        assert_eq!(s.get(&pool(0)), Some(&pool_value(500, 321)));
        assert_eq!((u(&s, amm_balance(0, 0, 1)), u(&s, amm_balance(0, 1, 1))), (Some(0), Some(179)));
        assert_eq!(run(&mut s, swap(1, 0)), Err(Failure::InsufficientFunds));
        assert_eq!(run(&mut s, swap(0, 0)), Err(Failure::InvalidAmount));
        assert_eq!(
            run(&mut s, TxKind::AmmSwap { pool: 5, trader: 1, zero_for_one: true, amount_in: 1, min_out: 0 }),
            Err(Failure::UnknownPool)
        );
    }

    #[test]
    fn nft_semantics() {
        let mut s = genesis();
        assert_eq!(run(&mut s, TxKind::NftMint { collection: 0, minter: 2 }), Ok(0));
        assert_eq!(run(&mut s, TxKind::NftMint { collection: 0, minter: 2 }), Ok(1));
        assert_eq!(s.get(&holdings(0, 2)), Some(&pool_value(2, 1)));
        assert_eq!(u(&s, treasury(0)), Some(2));
        assert_eq!(u(&s, acct(2)), Some(98));
        assert_eq!(run(&mut s, TxKind::NftMint { collection: 3, minter: 2 }), Err(Failure::UnknownCollection));
        assert_eq!(run(&mut s, TxKind::NftMint { collection: 0, minter: 40 }), Err(Failure::UnknownAccount));
        let (k, v) = NativeVm::collection(1, 1, 1, 1);
        s.apply(&crate::state::WriteSet::from_entries(vec![(k, Some(v))]), None);
        assert_eq!(run(&mut s, TxKind::NftMint { collection: 1, minter: 2 }), Err(Failure::SoldOut));
    }

    #[test]
    fn work_is_written_and_deterministic() {
        let mut s = genesis();
        let tx = NativeTx { kind: TxKind::Transfer { from: 0, to: 1, amount: 1 }, work_rounds: 10 };
        use crate::exec::{BlockExecutor, SequentialExecutor};
        let out = SequentialExecutor::new().execute_and_commit(&NativeVm, &mut s, &[tx]).unwrap();
        assert_eq!(out.write_set.len(), 3);
        assert_eq!(s.get(&Key::from_parts(tag::WORK, 0, 0)).map(|v| v.as_bytes().to_vec()), Some(burn(10, 0)[..8].to_vec()));
        assert_ne!(burn(10, 0), burn(11, 0));
    }
}
