//! The semantics of each native transaction kind, and the keys each declares.

use super::book::{bid_escrow, Book, Payout};
use super::keys::*;
use super::{Failure, NativeOutput, TxKind, KV_VALUE_LEN};
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

/// Little-endian words as a value, the layout of every multi-word native value (pool
/// reserves, collections, registries, orders, books…); up to 8 words without an allocation.
pub(crate) fn words_value(w: &[u64]) -> Value {
    if w.len() <= 8 {
        let mut buf = [0u8; 64];
        for (chunk, x) in buf.chunks_exact_mut(8).zip(w) {
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        return Value::from_slice(&buf[..w.len() * 8]);
    }
    Value::from_slice(&w.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
}

/// The words of a value written by [`words_value`]; `None` unless it has exactly `N`.
pub(crate) fn words<const N: usize>(v: &Value) -> Option<[u64; N]> {
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

/// A `u64` at `key`; `missing` if absent or malformed.
fn read_u64<V: View>(view: &mut V, key: &Key, missing: Failure) -> Result<Result<u64, Failure>, Interrupt> {
    Ok(view.read(key)?.and_then(|v| v.as_u64()).ok_or(missing))
}

/// A `u64` at `key`, 0 if absent or malformed: ERC-20 balances and allowances, and the base
/// of a credit, read as [`crate::value::apply_add`] reads it.
fn read_u64_or_zero<V: View>(view: &mut V, key: &Key) -> Result<u64, Interrupt> {
    Ok(view.read(key)?.and_then(|v| v.as_u64()).unwrap_or(0))
}

/// `x` as an `i64` (a SmallBank balance); [`Failure::Overflow`] if it does not fit.
fn exact_i64(x: i128) -> Result<i64, Failure> {
    i64::try_from(x).map_err(|_| Failure::Overflow)
}

/// `x` as a `u64`; [`Failure::Overflow`] if it does not fit.
fn exact_u64(x: u128) -> Result<u64, Failure> {
    u64::try_from(x).map_err(|_| Failure::Overflow)
}

/// ⌊a × b / d⌋ exactly, through a 256-bit product when `a × b` does not fit 128 bits; `None`
/// if `d` is 0 or the quotient does not fit 128 bits.
fn mul_div(a: u128, b: u128, d: u128) -> Option<u128> {
    if d == 0 {
        return None;
    }
    if let Some(p) = a.checked_mul(b) {
        return Some(p / d);
    }
    let (hi, lo) = mul_wide(a, b);
    if hi >= d {
        return None;
    }
    // Long division of hi ‖ lo by d, one bit at a time. The remainder stays below d; when
    // doubling it carries out of 128 bits, the true value (2^128 + r) exceeds d and the
    // difference is below d, so the wrapping subtraction is exact.
    let (mut r, mut q) = (hi, 0u128);
    for i in (0..128).rev() {
        let carry = r >> 127;
        r = (r << 1) | ((lo >> i) & 1);
        q <<= 1;
        if carry == 1 || r >= d {
            r = r.wrapping_sub(d);
            q |= 1;
        }
    }
    Some(q)
}

/// The 256-bit product of `a` and `b` as its (high, low) halves.
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    const LOW: u128 = u64::MAX as u128;
    let (a1, a0, b1, b0) = (a >> 64, a & LOW, b >> 64, b & LOW);
    let (p00, p01, p10, p11) = (a0 * b0, a0 * b1, a1 * b0, a1 * b1);
    // Each term is below 2^64, so the middle column (below 3 × 2^64) cannot overflow.
    let mid = (p00 >> 64) + (p01 & LOW) + (p10 & LOW);
    ((p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64)), (mid << 64) | (p00 & LOW))
}

/// The amount a constant-product pool with reserves `r_in` and `r_out` pays for `amount_in`
/// (> 0) after the 0.3 % fee: ⌊r_out × in' / (r_in × 1000 + in')⌋ with in' = amount_in × 997,
/// computed exactly. It is at most `r_out`, so it always fits.
fn swap_out(r_in: u64, r_out: u64, amount_in: u64) -> Result<u64, Failure> {
    let in_fee = amount_in as u128 * 997;
    let out = mul_div(r_out as u128, in_fee, r_in as u128 * 1000 + in_fee).ok_or(Failure::Overflow)?;
    exact_u64(out)
}

/// The value of a `Result<_, Failure>`, or return the failure as the transaction's output.
macro_rules! check {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(f) => return Ok(Err(f)),
        }
    };
}

/// Like [`check!`], for a read that may also be interrupted.
macro_rules! tri {
    ($e:expr) => {
        check!($e?)
    };
}

/// Executes one native transaction. Checks come before writes, so a failure writes nothing.
///
/// Arithmetic is exact: a result that does not fit its field fails with
/// [`Failure::Overflow`]. Credits (`view.add`) are left unchecked only where the credited
/// supply is conserved and bounded below 2^64 at genesis (see [`super::Supply`]), so they
/// cannot wrap; SmallBank creates money without bound, so its credits read the balance.
pub(crate) fn execute<V: View>(kind: &TxKind, view: &mut V) -> Result<NativeOutput, Interrupt> {
    Ok(Ok(match *kind {
        TxKind::Transfer { from, to, amount } => {
            let balance = tri!(read_u64(view, &account(from), Failure::UnknownAccount));
            if balance < amount {
                return Ok(Err(Failure::InsufficientFunds));
            }
            view.write(account(from), Value::from_u64(balance - amount));
            view.add(account(to), amount);
            balance - amount
        }
        TxKind::SbBalance { a } => {
            let c = tri!(read_u64(view, &checking(a), Failure::UnknownAccount)) as i64;
            let s = tri!(read_u64(view, &savings(a), Failure::UnknownAccount)) as i64;
            check!(exact_i64(c as i128 + s as i128)) as u64
        }
        TxKind::SbDepositChecking { a, amount } => {
            if amount == 0 || amount > i64::MAX as u64 {
                return Ok(Err(Failure::InvalidAmount));
            }
            let c = read_u64_or_zero(view, &checking(a))? as i64;
            let new = check!(exact_i64(c as i128 + amount as i128));
            view.write(checking(a), Value::from_u64(new as u64));
            amount
        }
        TxKind::SbTransactSavings { a, amount } => {
            let s = tri!(read_u64(view, &savings(a), Failure::UnknownAccount)) as i64;
            let new = s as i128 + amount as i128;
            if new < 0 {
                return Ok(Err(Failure::InsufficientFunds));
            }
            let new = check!(exact_i64(new));
            view.write(savings(a), Value::from_u64(new as u64));
            new as u64
        }
        TxKind::SbAmalgamate { a, b } => {
            let c = tri!(read_u64(view, &checking(a), Failure::UnknownAccount)) as i64;
            let s = tri!(read_u64(view, &savings(a), Failure::UnknownAccount)) as i64;
            let total = check!(exact_i64(c as i128 + s as i128));
            // Amalgamating into oneself empties the accounts first.
            let base = if b == a { 0 } else { read_u64_or_zero(view, &checking(b))? as i64 };
            let credited = check!(exact_i64(base as i128 + total as i128));
            view.write(checking(a), Value::from_u64(0));
            view.write(savings(a), Value::from_u64(0));
            view.write(checking(b), Value::from_u64(credited as u64));
            total as u64
        }
        TxKind::SbWriteCheck { a, amount } => {
            if amount > i64::MAX as u64 {
                return Ok(Err(Failure::InvalidAmount));
            }
            let c = tri!(read_u64(view, &checking(a), Failure::UnknownAccount)) as i64;
            let s = tri!(read_u64(view, &savings(a), Failure::UnknownAccount)) as i64;
            let penalty = i128::from((c as i128 + s as i128) < amount as i128);
            let new = check!(exact_i64(c as i128 - amount as i128 - penalty));
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
            let base = if to == from { new } else { read_u64_or_zero(view, &checking(to))? as i64 };
            let credited = check!(exact_i64(base as i128 + amount as i128));
            view.write(checking(from), Value::from_u64(new as u64));
            view.write(checking(to), Value::from_u64(credited as u64));
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
            let out = check!(swap_out(r_in, r_out, amount_in));
            let Some(new_in) = r_in.checked_add(amount_in) else {
                return Ok(Err(Failure::Overflow));
            };
            if out == 0 || out < min_out {
                return Ok(Err(Failure::Slippage));
            }
            let (n0, n1) = if zero_for_one { (new_in, r_out - out) } else { (r_out - out, new_in) };
            view.write(pool(p), words_value(&[n0, n1]));
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
            let balance = tri!(read_u64(view, &account(minter), Failure::UnknownAccount));
            if balance < price {
                return Ok(Err(Failure::InsufficientFunds));
            }
            let held = view.read(&holdings(c, minter))?.as_ref().and_then(words::<2>).map_or(0, |[n, _]| n);
            let Some(held) = held.checked_add(1) else {
                return Ok(Err(Failure::Overflow));
            };
            view.write(account(minter), Value::from_u64(balance - price));
            view.write(collection(c), words_value(&[minted + 1, max_supply, price]));
            view.write(holdings(c, minter), words_value(&[held, minted]));
            view.add(treasury(c), price);
            minted
        }
        TxKind::TokenIssue { token, to, amount } => {
            if amount == 0 {
                return Ok(Err(Failure::InvalidAmount));
            }
            let Some([issued, cap]) = view.read(&registry(token))?.as_ref().and_then(words::<2>) else {
                return Ok(Err(Failure::UnknownAsset));
            };
            let total = match issued.checked_add(amount) {
                Some(t) if t <= cap => t,
                _ => return Ok(Err(Failure::CapExceeded)),
            };
            view.write(registry(token), words_value(&[total, cap]));
            view.add(token_balance(token, to), amount);
            total
        }
        TxKind::TokenRetire { token, holder, amount } => {
            if amount == 0 {
                return Ok(Err(Failure::InvalidAmount));
            }
            let balance = read_u64_or_zero(view, &token_balance(token, holder))?;
            if balance < amount {
                return Ok(Err(Failure::InsufficientFunds));
            }
            view.write(token_balance(token, holder), Value::from_u64(balance - amount));
            view.add(retired(token), amount);
            balance - amount
        }
        TxKind::ItemRegister { item, owner: first, event } => {
            if view.read(&owner(item))?.is_some() {
                return Ok(Err(Failure::RecordExists));
            }
            let count = tri!(append_history(view, item, [1, first, event]));
            view.write(owner(item), Value::from_u64(first));
            count
        }
        TxKind::ItemHandover { item, from, to, event } => {
            let current = tri!(read_u64(view, &owner(item), Failure::RecordNotFound));
            if current != from {
                return Ok(Err(Failure::NotOwner));
            }
            let count = tri!(append_history(view, item, [2, to, event]));
            view.write(owner(item), Value::from_u64(to));
            count
        }
        TxKind::ItemEvent { item, actor, event } => {
            tri!(read_u64(view, &owner(item), Failure::RecordNotFound));
            tri!(append_history(view, item, [3, actor, event]))
        }
        TxKind::ItemLookup { item } => {
            tri!(read_u64(view, &owner(item), Failure::RecordNotFound));
            history_count(view, item)?
        }
        TxKind::Notarize { evidence: e, submitter, digest } => {
            if view.read(&evidence(e))?.is_some() {
                return Ok(Err(Failure::RecordExists));
            }
            let count = tri!(append_history(view, submitter, [4, e, digest]));
            view.write(evidence(e), words_value(&[submitter, digest]));
            count
        }
        TxKind::DocIssue { issuer, subject, slot, digest } => {
            let Some(number) = read_u64_or_zero(view, &serial(issuer))?.checked_add(1) else {
                return Ok(Err(Failure::Overflow));
            };
            view.write(serial(issuer), Value::from_u64(number));
            view.write(document(subject, slot), words_value(&[issuer, digest]));
            number
        }
        TxKind::Grant { subject, grantee } => {
            view.write(grant(subject, grantee), Value::from_u64(1));
            1
        }
        TxKind::Revoke { subject, grantee } => {
            if view.read(&grant(subject, grantee))?.is_none() {
                return Ok(Err(Failure::NotAuthorized));
            }
            view.delete(grant(subject, grantee));
            0
        }
        TxKind::DocUpdate { subject, slot, writer, digest } => {
            if writer != subject && view.read(&grant(subject, writer))?.is_none() {
                return Ok(Err(Failure::NotAuthorized));
            }
            let count = tri!(append_history(view, subject, [5, writer, slot]));
            view.write(document(subject, slot), words_value(&[writer, digest]));
            count
        }
        TxKind::DocRead { subject, slot, reader, audit } => {
            if reader != subject && view.read(&grant(subject, reader))?.is_none() {
                return Ok(Err(Failure::NotAuthorized));
            }
            let Some([_, digest]) = view.read(&document(subject, slot))?.as_ref().and_then(words::<2>) else {
                return Ok(Err(Failure::RecordNotFound));
            };
            if audit {
                tri!(append_history(view, subject, [6, reader, slot]));
            }
            digest
        }
        TxKind::Order { market, trader, sell, qty, level } => {
            let Some(mut b) = view.read(&book(market))?.as_ref().and_then(Book::from_value) else {
                return Ok(Err(Failure::UnknownMarket));
            };
            if qty == 0 || level >= super::book::LEVELS as u64 {
                return Ok(Err(Failure::InvalidAmount));
            }
            if view.read(&order(market, trader))?.is_some() {
                return Ok(Err(Failure::OrderOpen));
            }
            let (escrow_key, escrow) =
                if sell { (token_balance(market, trader), qty) } else { (account(trader), check!(bid_escrow(qty, level))) };
            let balance = read_u64_or_zero(view, &escrow_key)?;
            if balance < escrow {
                return Ok(Err(Failure::InsufficientFunds));
            }
            let side = if sell { &mut b.asks } else { &mut b.bids };
            let Some(total) = side[level as usize].checked_add(qty) else {
                return Ok(Err(Failure::Overflow));
            };
            side[level as usize] = total;
            view.write(escrow_key, Value::from_u64(balance - escrow));
            view.write(order(market, trader), order_value(b.epoch, sell, qty, level));
            view.write(book(market), b.to_value());
            b.epoch
        }
        TxKind::Clear { market } => {
            let Some(mut b) = view.read(&book(market))?.as_ref().and_then(Book::from_value) else {
                return Ok(Err(Failure::UnknownMarket));
            };
            let matched = check!(b.clear());
            view.write(book(market), b.to_value());
            matched
        }
        TxKind::Settle { market, trader } => {
            let Some(b) = view.read(&book(market))?.as_ref().and_then(Book::from_value) else {
                return Ok(Err(Failure::UnknownMarket));
            };
            let Some([epoch, sell, qty, level]) = view.read(&order(market, trader))?.as_ref().and_then(words::<4>) else {
                return Ok(Err(Failure::RecordNotFound));
            };
            if epoch >= b.epoch {
                return Ok(Err(Failure::NotCleared));
            }
            let Some(round) = b.round(epoch) else {
                return Ok(Err(Failure::Expired));
            };
            let Payout { filled, goods, money } = check!(Book::payout(&round, sell != 0, qty, level));
            view.delete(order(market, trader));
            if goods > 0 {
                view.add(token_balance(market, trader), goods);
            }
            if money > 0 {
                view.add(account(trader), money);
            }
            filled
        }
        TxKind::ReceivableIssue { issuer, receivable: r, to, amount } => {
            if amount == 0 {
                return Ok(Err(Failure::InvalidAmount));
            }
            if view.read(&receivable(r))?.is_some() {
                return Ok(Err(Failure::RecordExists));
            }
            let line = tri!(read_u64(view, &credit_line(issuer), Failure::UnknownAccount));
            if line < amount {
                return Ok(Err(Failure::InsufficientFunds));
            }
            view.write(credit_line(issuer), Value::from_u64(line - amount));
            view.write(receivable(r), receivable_value(to, amount, issuer, false));
            line - amount
        }
        TxKind::ReceivableSplit { receivable: r, holder, new_receivable, to, amount } => {
            let [h, face, issuer, financed] = tri!(read_receivable(view, r));
            if h != holder {
                return Ok(Err(Failure::NotOwner));
            }
            if amount == 0 || amount >= face {
                return Ok(Err(Failure::InvalidAmount));
            }
            if new_receivable == r || view.read(&receivable(new_receivable))?.is_some() {
                return Ok(Err(Failure::RecordExists));
            }
            view.write(receivable(r), receivable_value(h, face - amount, issuer, financed != 0));
            view.write(receivable(new_receivable), receivable_value(to, amount, issuer, financed != 0));
            face - amount
        }
        TxKind::ReceivableFinance { receivable: r, holder, financier, discount_bp } => {
            let [h, face, issuer, financed] = tri!(read_receivable(view, r));
            if h != holder {
                return Ok(Err(Failure::NotOwner));
            }
            if financed != 0 {
                return Ok(Err(Failure::AlreadyFinanced));
            }
            if discount_bp > 10_000 {
                return Ok(Err(Failure::InvalidAmount));
            }
            // At most `face`, so it fits.
            let price = check!(exact_u64(face as u128 * (10_000 - discount_bp) as u128 / 10_000));
            let balance = tri!(read_u64(view, &account(financier), Failure::UnknownAccount));
            if balance < price {
                return Ok(Err(Failure::InsufficientFunds));
            }
            view.write(account(financier), Value::from_u64(balance - price));
            view.add(account(holder), price);
            view.write(receivable(r), receivable_value(financier, face, issuer, true));
            price
        }
        TxKind::ReceivableRedeem { receivable: r, holder, issuer } => {
            let [h, face, i, _] = tri!(read_receivable(view, r));
            if h != holder || i != issuer {
                return Ok(Err(Failure::NotOwner));
            }
            let balance = tri!(read_u64(view, &account(issuer), Failure::UnknownAccount));
            if balance < face {
                return Ok(Err(Failure::InsufficientFunds));
            }
            view.write(account(issuer), Value::from_u64(balance - face));
            view.add(account(holder), face);
            view.add(credit_line(issuer), face);
            view.delete(receivable(r));
            face
        }
    }))
}

fn order_value(epoch: u64, sell: bool, qty: u64, level: u64) -> Value {
    words_value(&[epoch, sell as u64, qty, level])
}

fn receivable_value(holder: u64, amount: u64, issuer: u64, financed: bool) -> Value {
    words_value(&[holder, amount, issuer, financed as u64])
}

fn read_receivable<V: View>(view: &mut V, r: u64) -> Result<Result<[u64; 4], Failure>, Interrupt> {
    Ok(view.read(&receivable(r))?.as_ref().and_then(words::<4>).ok_or(Failure::RecordNotFound))
}

/// The number of events in `id`'s history (0 if none).
fn history_count<V: View>(view: &mut V, id: u64) -> Result<u64, Interrupt> {
    Ok(view.read(&history(id))?.map_or(0, |v| u64::from_le_bytes(v.as_bytes().get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]))))
}

/// Chains `event` into `id`'s history: `head' = blake3(head ‖ event)`, count + 1. Returns the
/// new count, the event's position: the history timestamps what it records. A count already
/// at `u64::MAX` fails with [`Failure::Overflow`] before anything is written, so callers
/// append after their other checks and before their other writes.
fn append_history<V: View>(view: &mut V, id: u64, event: [u64; 3]) -> Result<Result<u64, Failure>, Interrupt> {
    let (count, head) = match view.read(&history(id))? {
        Some(v) if v.len() == 40 => {
            let b = v.as_bytes();
            (u64::from_le_bytes(b[..8].try_into().expect("8 bytes")), <[u8; 32]>::try_from(&b[8..]).expect("32 bytes"))
        }
        _ => (0, [0u8; 32]),
    };
    let Some(count) = count.checked_add(1) else {
        return Ok(Err(Failure::Overflow));
    };
    let mut h = blake3::Hasher::new();
    h.update(&head);
    for w in event {
        h.update(&w.to_le_bytes());
    }
    let mut out = [0u8; 40];
    out[..8].copy_from_slice(&count.to_le_bytes());
    out[8..].copy_from_slice(h.finalize().as_bytes());
    view.write(history(id), Value::from_slice(&out));
    Ok(Ok(count))
}

/// Appends the keys `kind` may touch.
pub(crate) fn declared_keys(kind: &TxKind, keys: &mut Vec<Key>) {
    match *kind {
        TxKind::Transfer { from, to, .. } => keys.extend([account(from), account(to)]),
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
        TxKind::NftMint { collection: c, minter } => keys.extend([collection(c), account(minter), holdings(c, minter), treasury(c)]),
        TxKind::TokenIssue { token, to, .. } => keys.extend([registry(token), token_balance(token, to)]),
        TxKind::TokenRetire { token, holder, .. } => keys.extend([token_balance(token, holder), retired(token)]),
        TxKind::ItemRegister { item, .. }
        | TxKind::ItemHandover { item, .. }
        | TxKind::ItemEvent { item, .. }
        | TxKind::ItemLookup { item } => keys.extend([owner(item), history(item)]),
        TxKind::Notarize { evidence: e, submitter, .. } => keys.extend([evidence(e), history(submitter)]),
        TxKind::DocIssue { issuer, subject, slot, .. } => keys.extend([serial(issuer), document(subject, slot)]),
        TxKind::Grant { subject, grantee } | TxKind::Revoke { subject, grantee } => keys.push(grant(subject, grantee)),
        TxKind::DocUpdate { subject, slot, writer: other, .. } | TxKind::DocRead { subject, slot, reader: other, .. } => {
            keys.extend([grant(subject, other), document(subject, slot), history(subject)])
        }
        TxKind::Order { market, trader, .. } | TxKind::Settle { market, trader } => {
            keys.extend([book(market), order(market, trader), token_balance(market, trader), account(trader)])
        }
        TxKind::Clear { market } => keys.push(book(market)),
        TxKind::ReceivableIssue { issuer, receivable: r, .. } => keys.extend([receivable(r), credit_line(issuer)]),
        TxKind::ReceivableSplit { receivable: r, new_receivable, .. } => keys.extend([receivable(r), receivable(new_receivable)]),
        TxKind::ReceivableFinance { receivable: r, holder, financier, .. } => {
            keys.extend([receivable(r), account(financier), account(holder)])
        }
        TxKind::ReceivableRedeem { receivable: r, holder, issuer } => {
            keys.extend([receivable(r), account(issuer), account(holder), credit_line(issuer)])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::{GenesisConfig, NativeTx, NativeVm};
    use crate::state::CommittedState;
    use crate::vm::Vm;
    use proptest::prelude::*;

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
        CommittedState::from_entries(NativeVm::genesis(&GenesisConfig::full(4, 100)))
    }

    fn u(state: &CommittedState, key: Key) -> Option<u64> {
        state.get(&key).and_then(Value::as_u64)
    }

    #[test]
    fn transfer_moves_funds_and_fails_cleanly() {
        let mut s = genesis();
        assert_eq!(run(&mut s, TxKind::Transfer { from: 0, to: 9, amount: 30 }), Ok(70));
        assert_eq!(u(&s, account(9)), Some(30), "recipient created");
        let root = s.root();
        assert_eq!(run(&mut s, TxKind::Transfer { from: 0, to: 1, amount: 71 }), Err(Failure::InsufficientFunds));
        assert_eq!(run(&mut s, TxKind::Transfer { from: 77, to: 1, amount: 1 }), Err(Failure::UnknownAccount));
        assert_eq!(s.root(), root, "failures write nothing");
        assert_eq!(run(&mut s, TxKind::Transfer { from: 1, to: 1, amount: 50 }), Ok(50));
        assert_eq!(u(&s, account(1)), Some(100), "self-transfer is a no-op");
    }

    #[test]
    fn smallbank_semantics() {
        let mut s = genesis();
        assert_eq!(run(&mut s, TxKind::SbBalance { a: 0 }), Ok(200));
        assert_eq!(run(&mut s, TxKind::SbBalance { a: 99 }), Err(Failure::UnknownAccount));
        assert_eq!(run(&mut s, TxKind::SbDepositChecking { a: 0, amount: 5 }), Ok(5));
        assert_eq!(run(&mut s, TxKind::SbDepositChecking { a: 0, amount: 0 }), Err(Failure::InvalidAmount));
        assert_eq!(u(&s, checking(0)), Some(105));
        assert_eq!(run(&mut s, TxKind::SbDepositChecking { a: 77, amount: 5 }), Ok(5), "an absent balance counts as 0");
        assert_eq!(u(&s, checking(77)), Some(5));
        let root = s.root();
        assert_eq!(run(&mut s, TxKind::SbDepositChecking { a: 77, amount: i64::MAX as u64 }), Err(Failure::Overflow));
        assert_eq!(run(&mut s, TxKind::SbSendPayment { from: 77, to: 77, amount: 5 }), Ok(0), "a self-payment is a no-op");
        assert_eq!(s.root(), root);
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
        assert_eq!(s.get(&pool(0)), Some(&words_value(&[500, 321])));
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
        assert_eq!(s.get(&holdings(0, 2)), Some(&words_value(&[2, 1])));
        assert_eq!(u(&s, treasury(0)), Some(2));
        assert_eq!(u(&s, account(2)), Some(98));
        assert_eq!(run(&mut s, TxKind::NftMint { collection: 3, minter: 2 }), Err(Failure::UnknownCollection));
        assert_eq!(run(&mut s, TxKind::NftMint { collection: 0, minter: 40 }), Err(Failure::UnknownAccount));
        let (k, v) = NativeVm::collection(1, 1, 1, 1);
        s.apply(&crate::state::WriteSet::from_entries(vec![(k, Some(v))]), None);
        assert_eq!(run(&mut s, TxKind::NftMint { collection: 1, minter: 2 }), Err(Failure::SoldOut));
    }

    #[test]
    fn capped_assets_issue_trade_and_retire() {
        let mut s = genesis();
        // The cap is balance × accounts = 400.
        assert_eq!(run(&mut s, TxKind::TokenIssue { token: 0, to: 9, amount: 399 }), Ok(399));
        assert_eq!(s.get(&registry(0)), Some(&words_value(&[399, 400])), "issued ‖ cap");
        assert_eq!(run(&mut s, TxKind::TokenIssue { token: 0, to: 9, amount: 2 }), Err(Failure::CapExceeded));
        assert_eq!(run(&mut s, TxKind::TokenIssue { token: 0, to: 9, amount: 0 }), Err(Failure::InvalidAmount));
        assert_eq!(run(&mut s, TxKind::TokenIssue { token: 3, to: 9, amount: 1 }), Err(Failure::UnknownAsset));
        assert_eq!(u(&s, token_balance(0, 9)), Some(399));
        assert_eq!(run(&mut s, TxKind::TokenRetire { token: 0, holder: 9, amount: 400 }), Err(Failure::InsufficientFunds));
        assert_eq!(run(&mut s, TxKind::TokenRetire { token: 0, holder: 9, amount: 99 }), Ok(300));
        assert_eq!(run(&mut s, TxKind::TokenRetire { token: 0, holder: 1, amount: 1 }), Ok(99));
        assert_eq!(u(&s, retired(0)), Some(100));
    }

    #[test]
    fn items_keep_owner_and_a_hash_chained_history() {
        let mut s = genesis();
        assert_eq!(run(&mut s, TxKind::ItemLookup { item: 7 }), Err(Failure::RecordNotFound));
        assert_eq!(run(&mut s, TxKind::ItemHandover { item: 7, from: 1, to: 2, event: 0 }), Err(Failure::RecordNotFound));
        assert_eq!(run(&mut s, TxKind::ItemRegister { item: 7, owner: 1, event: 5 }), Ok(1));
        assert_eq!(run(&mut s, TxKind::ItemRegister { item: 7, owner: 2, event: 5 }), Err(Failure::RecordExists));
        let head = s.get(&history(7)).cloned();
        assert_eq!(run(&mut s, TxKind::ItemHandover { item: 7, from: 2, to: 3, event: 1 }), Err(Failure::NotOwner));
        assert_eq!(run(&mut s, TxKind::ItemHandover { item: 7, from: 1, to: 3, event: 1 }), Ok(2));
        assert_eq!(u(&s, owner(7)), Some(3));
        assert_eq!(run(&mut s, TxKind::ItemEvent { item: 7, actor: 0, event: 9 }), Ok(3));
        assert_eq!(run(&mut s, TxKind::ItemLookup { item: 7 }), Ok(3));
        assert_ne!(s.get(&history(7)).cloned(), head, "the head moves with every event");
        // The same events in another order give another head.
        let mut t = genesis();
        run(&mut t, TxKind::ItemRegister { item: 7, owner: 1, event: 5 }).unwrap();
        run(&mut t, TxKind::ItemEvent { item: 7, actor: 0, event: 9 }).unwrap();
        run(&mut t, TxKind::ItemHandover { item: 7, from: 1, to: 3, event: 1 }).unwrap();
        assert_ne!(s.get(&history(7)), t.get(&history(7)));
    }

    #[test]
    fn notary_and_documents_check_grants() {
        let mut s = genesis();
        assert_eq!(run(&mut s, TxKind::Notarize { evidence: 42, submitter: 1, digest: 7 }), Ok(1));
        assert_eq!(run(&mut s, TxKind::Notarize { evidence: 42, submitter: 2, digest: 7 }), Err(Failure::RecordExists));
        assert_eq!(run(&mut s, TxKind::Notarize { evidence: 43, submitter: 1, digest: 8 }), Ok(2));
        assert_eq!(run(&mut s, TxKind::DocIssue { issuer: 0, subject: 5, slot: 1, digest: 77 }), Ok(1));
        assert_eq!(run(&mut s, TxKind::DocIssue { issuer: 0, subject: 6, slot: 1, digest: 78 }), Ok(2));
        let read = |reader, audit| TxKind::DocRead { subject: 5, slot: 1, reader, audit };
        assert_eq!(run(&mut s, read(5, false)), Ok(77), "the subject reads its own");
        assert_eq!(run(&mut s, read(2, true)), Err(Failure::NotAuthorized));
        assert_eq!(run(&mut s, TxKind::Revoke { subject: 5, grantee: 2 }), Err(Failure::NotAuthorized));
        assert_eq!(run(&mut s, TxKind::Grant { subject: 5, grantee: 2 }), Ok(1));
        assert_eq!(run(&mut s, read(2, true)), Ok(77));
        assert!(s.get(&history(5)).is_some(), "the audited read is logged");
        assert_eq!(run(&mut s, TxKind::DocRead { subject: 5, slot: 2, reader: 2, audit: false }), Err(Failure::RecordNotFound));
        assert_eq!(run(&mut s, TxKind::DocUpdate { subject: 5, slot: 2, writer: 2, digest: 3 }), Ok(2));
        assert_eq!(run(&mut s, TxKind::DocUpdate { subject: 5, slot: 2, writer: 3, digest: 4 }), Err(Failure::NotAuthorized));
        assert_eq!(run(&mut s, TxKind::Revoke { subject: 5, grantee: 2 }), Ok(0));
        assert_eq!(run(&mut s, read(2, false)), Err(Failure::NotAuthorized));
    }

    #[test]
    fn call_auction_escrows_clears_and_settles() {
        let mut s = genesis();
        let order = |trader, sell, qty, level| TxKind::Order { market: 1, trader, sell, qty, level };
        assert_eq!(run(&mut s, TxKind::Order { market: 9, trader: 0, sell: true, qty: 1, level: 0 }), Err(Failure::UnknownMarket));
        assert_eq!(run(&mut s, order(0, true, 1, 8)), Err(Failure::InvalidAmount));
        assert_eq!(run(&mut s, order(0, false, 30, 4)), Err(Failure::InsufficientFunds), "30 × price 5 > 100");
        assert_eq!(run(&mut s, order(0, false, 20, 4)), Ok(0));
        assert_eq!(run(&mut s, order(0, false, 1, 4)), Err(Failure::OrderOpen));
        assert_eq!(run(&mut s, order(1, true, 10, 1)), Ok(0));
        assert_eq!(run(&mut s, order(2, true, 30, 3)), Ok(0));
        assert_eq!((u(&s, account(0)), u(&s, token_balance(1, 1))), (Some(0), Some(90)), "escrowed");
        assert_eq!(run(&mut s, TxKind::Settle { market: 1, trader: 0 }), Err(Failure::NotCleared));
        // Demand 20 at levels ≤ 4; supply 10 from level 1, 40 from level 3: 20 match at level 3.
        assert_eq!(run(&mut s, TxKind::Clear { market: 1 }), Ok(20));
        assert_eq!(run(&mut s, TxKind::Settle { market: 1, trader: 0 }), Ok(20));
        assert_eq!((u(&s, account(0)), u(&s, token_balance(1, 0))), (Some(20), Some(120)), "paid 4 each, refunded 20");
        assert_eq!(run(&mut s, TxKind::Settle { market: 1, trader: 1 }), Ok(5), "asks fill pro rata: 20 of 40");
        assert_eq!((u(&s, account(1)), u(&s, token_balance(1, 1))), (Some(120), Some(95)));
        assert_eq!(run(&mut s, TxKind::Settle { market: 1, trader: 1 }), Err(Failure::RecordNotFound));
        // Trader 2 settles after a later round cleared, still against its own round.
        assert_eq!(run(&mut s, order(3, true, 1, 0)), Ok(1));
        assert_eq!(run(&mut s, TxKind::Clear { market: 1 }), Ok(0));
        assert_eq!(run(&mut s, TxKind::Settle { market: 1, trader: 2 }), Ok(15));
        assert_eq!((u(&s, account(2)), u(&s, token_balance(1, 2))), (Some(160), Some(85)));
        // An order whose round has left the book cannot settle; its escrow stays locked.
        for _ in 0..crate::native::book::ROUNDS {
            run(&mut s, TxKind::Clear { market: 1 }).unwrap();
        }
        let root = s.root();
        assert_eq!(run(&mut s, TxKind::Settle { market: 1, trader: 3 }), Err(Failure::Expired));
        assert_eq!(s.root(), root);
    }

    #[test]
    fn receivables_issue_split_finance_and_redeem() {
        let mut s = genesis();
        let issue = |r, amount| TxKind::ReceivableIssue { issuer: 0, receivable: r, to: 1, amount };
        assert_eq!(run(&mut s, issue(100, 101)), Err(Failure::InsufficientFunds), "credit line 100");
        assert_eq!(run(&mut s, issue(100, 60)), Ok(40));
        assert_eq!(run(&mut s, issue(100, 10)), Err(Failure::RecordExists));
        assert_eq!(run(&mut s, TxKind::ReceivableIssue { issuer: 9, receivable: 5, to: 1, amount: 1 }), Err(Failure::UnknownAccount));
        let split = |holder, new_receivable, amount| TxKind::ReceivableSplit { receivable: 100, holder, new_receivable, to: 2, amount };
        assert_eq!(run(&mut s, split(2, 101, 10)), Err(Failure::NotOwner));
        assert_eq!(run(&mut s, split(1, 101, 60)), Err(Failure::InvalidAmount));
        assert_eq!(run(&mut s, split(1, 100, 10)), Err(Failure::RecordExists));
        assert_eq!(run(&mut s, split(1, 101, 20)), Ok(40));
        let finance = |r, holder| TxKind::ReceivableFinance { receivable: r, holder, financier: 3, discount_bp: 500 };
        assert_eq!(run(&mut s, finance(101, 2)), Ok(19));
        assert_eq!((u(&s, account(3)), u(&s, account(2))), (Some(81), Some(119)));
        assert_eq!(run(&mut s, finance(101, 3)), Err(Failure::AlreadyFinanced));
        let redeem = |holder, issuer| TxKind::ReceivableRedeem { receivable: 101, holder, issuer };
        assert_eq!(run(&mut s, redeem(2, 0)), Err(Failure::NotOwner));
        assert_eq!(run(&mut s, redeem(3, 1)), Err(Failure::NotOwner));
        assert_eq!(run(&mut s, redeem(3, 0)), Ok(20));
        assert_eq!((u(&s, account(3)), u(&s, account(0)), u(&s, credit_line(0))), (Some(101), Some(80), Some(60)));
        assert_eq!(run(&mut s, redeem(3, 0)), Err(Failure::RecordNotFound));
    }

    fn wide() -> impl Strategy<Value = u128> {
        prop_oneof![
            Just(0),
            Just(1),
            Just(u128::MAX),
            Just(u128::MAX - 1),
            Just(1 << 127),
            Just(u64::MAX as u128),
            Just(u64::MAX as u128 + 1),
            0u128..1_000,
            any::<u64>().prop_map(u128::from),
            any::<u128>(),
        ]
    }

    proptest! {
        /// `mul_div` is ⌊a × b / d⌋ of the big-integer reference, or `None` where that does
        /// not fit 128 bits or `d` is 0.
        #[test]
        fn mul_div_is_exact(a in wide(), b in wide(), d in wide()) {
            use num_bigint::BigUint;
            let exact = (d > 0).then(|| BigUint::from(a) * b / d).and_then(|q| u128::try_from(q).ok());
            prop_assert_eq!(mul_div(a, b, d), exact);
        }
    }

    #[test]
    fn work_is_written_and_deterministic() {
        let mut s = genesis();
        let tx = NativeTx { kind: TxKind::Transfer { from: 0, to: 1, amount: 1 }, work_rounds: 10 };
        use crate::exec::{BlockExecutor, SequentialExecutor};
        let out = SequentialExecutor::new().execute_and_commit(&NativeVm, &mut s, &[tx]).unwrap();
        assert_eq!(out.write_set.len(), 3);
        assert_eq!(s.get(&work(0)).map(|v| v.as_bytes().to_vec()), Some(burn(10, 0)[..8].to_vec()));
        assert_ne!(burn(10, 0), burn(11, 0));
    }
}
