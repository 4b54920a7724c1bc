//! The keys of the native VM's state, one constructor per [`tag`]. Public so that
//! embedders and workload generators can build genesis entries and inspect state.

use super::tag;
use crate::key::Key;

/// Native account balance.
pub fn account(id: u64) -> Key {
    Key::from_parts(tag::ACCOUNT, id, 0)
}
/// SmallBank checking balance.
pub fn checking(id: u64) -> Key {
    Key::from_parts(tag::SB_CHECKING, id, 0)
}
/// SmallBank savings balance.
pub fn savings(id: u64) -> Key {
    Key::from_parts(tag::SB_SAVINGS, id, 0)
}
/// YCSB record.
pub fn record(id: u64) -> Key {
    Key::from_parts(tag::KV, id, 0)
}
/// Token balance of `holder`.
pub fn token_balance(token: u64, holder: u64) -> Key {
    Key::from_parts(tag::TOKEN_BALANCE, token, holder)
}
/// Allowance of `spender` over `owner`'s tokens.
pub fn allowance(token: u64, owner: u64, spender: u64) -> Key {
    Key::from_parts3(tag::TOKEN_ALLOWANCE, token, owner, spender)
}
/// AMM pool reserves.
pub fn pool(id: u64) -> Key {
    Key::from_parts(tag::AMM_POOL, id, 0)
}
/// AMM trader balance on `side` (0 or 1) of `pool`: the side in `sub`, so every pool id has
/// its own keys (no arithmetic on the id that could wrap).
pub fn amm_balance(pool: u64, side: u64, trader: u64) -> Key {
    Key::from_parts3(tag::AMM_BALANCE, side, pool, trader)
}
/// NFT collection.
pub fn collection(id: u64) -> Key {
    Key::from_parts(tag::NFT_COLLECTION, id, 0)
}
/// NFT holdings of `holder` in `collection`.
pub fn holdings(collection: u64, holder: u64) -> Key {
    Key::from_parts(tag::NFT_HOLDINGS, collection, holder)
}
/// Proceeds of an NFT collection.
pub fn treasury(collection: u64) -> Key {
    Key::from_parts(tag::NFT_TREASURY, collection, 0)
}
/// Emulated-work digest of `sender`.
pub fn work(sender: u64) -> Key {
    Key::from_parts(tag::WORK, sender, 0)
}
/// Registry (issued ‖ cap) of a capped asset.
pub fn registry(token: u64) -> Key {
    Key::from_parts(tag::TOKEN_REGISTRY, token, 0)
}
/// Retired total of an asset.
pub fn retired(token: u64) -> Key {
    Key::from_parts(tag::TOKEN_RETIRED, token, 0)
}
/// Hash-chained history of an item or subject.
pub fn history(id: u64) -> Key {
    Key::from_parts(tag::HISTORY, id, 0)
}
/// Owner of a unique item.
pub fn owner(item: u64) -> Key {
    Key::from_parts(tag::OWNER, item, 0)
}
/// Document `slot` of `subject`.
pub fn document(subject: u64, slot: u64) -> Key {
    Key::from_parts(tag::DOCUMENT, subject, slot)
}
/// Grant of `subject` to `grantee`.
pub fn grant(subject: u64, grantee: u64) -> Key {
    Key::from_parts(tag::GRANT, subject, grantee)
}
/// Serial counter of an issuer.
pub fn serial(issuer: u64) -> Key {
    Key::from_parts(tag::SERIAL, issuer, 0)
}
/// Order book of a market.
pub fn book(market: u64) -> Key {
    Key::from_parts(tag::BOOK, market, 0)
}
/// Open order of `trader` in `market`.
pub fn order(market: u64, trader: u64) -> Key {
    Key::from_parts(tag::ORDER, market, trader)
}
/// A receivable.
pub fn receivable(id: u64) -> Key {
    Key::from_parts(tag::RECEIVABLE, id, 0)
}
/// Remaining credit line of an issuer.
pub fn credit_line(issuer: u64) -> Key {
    Key::from_parts(tag::CREDIT_LINE, issuer, 0)
}
/// A notarised evidence record.
pub fn evidence(id: u64) -> Key {
    Key::from_parts(tag::EVIDENCE, id, 0)
}

/// The owner key of `account` (see [`tag::OWNER_KEY`]).
pub fn owner_key(account: u64) -> Key {
    Key::from_parts(tag::OWNER_KEY, account, 0)
}
