//! A per-market call auction: orders collect in rounds and clear together at one price.
//!
//! Peer-to-peer energy markets and many exchange openings work this way. Every order of a
//! market reads and writes the market's book, so a busy market is a hot key. The traded asset
//! of market `m` is token `m`; money is the native balance. Price level `l` (`0..LEVELS`)
//! means a price of `l + 1` per unit.
//!
//! **Clearing.** A bid at level `b` is willing at every price level `≤ b`; an ask at level `a`
//! at every level `≥ a`. The round clears at the level `p` that maximises the matched volume
//! `m = min(demand(p), supply(p))` (ties go to the lowest level, the buyers' side). The book
//! keeps the last [`ROUNDS`] rounds' results, so an order settles against its own round.
//!
//! **Fills conserve.** Every eligible order on the shorter side fills completely. An order of
//! quantity `q` on the longer side (total `L`) is due `q·m/L`, a fraction: it *receives*
//! the floor and *gives* the ceiling (a buyer gets ⌊q·m/L⌋ units and pays for ⌈q·m/L⌉; a seller
//! delivers ⌈q·m/L⌉ units and is paid for ⌊q·m/L⌋). Summed over a side, the floors are at most
//! `m` and the ceilings at least `m`, so no settlement pays out more goods or money than the
//! round's escrow holds; the rounding remainder (under one unit per order) stays in escrow.
//! An order whose round has left the book (more than [`ROUNDS`] rounds ago) cannot settle:
//! its escrow stays locked, which also creates nothing.
//!
//! **Exact.** Volumes are summed in 128 bits and every product is checked: a result that does
//! not fit 64 bits fails with [`Failure::Overflow`] and changes nothing. Escrow bounds every
//! volume by a supply below 2^64 (a bid escrows at least its quantity in money, an ask its
//! quantity in goods), so a book built by `order` transactions never reaches it.

use super::Failure;
use crate::value::Value;

/// Price levels per book.
pub const LEVELS: usize = 8;

/// Cleared rounds a book remembers.
pub const ROUNDS: usize = 16;

/// The result of one cleared round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// The level it cleared at, if it matched anything.
    pub level: Option<u64>,
    /// Matched volume.
    pub matched: u64,
    /// Eligible bid volume at the clearing level.
    pub demand: u64,
    /// Eligible ask volume at the clearing level.
    pub supply: u64,
}

/// What one order gets from its round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fill {
    /// Units the trader receives (buy) or is paid for (sell): the floor of its due.
    pub credited: u64,
    /// Units the trader pays for (buy) or delivers (sell): the ceiling of its due.
    pub debited: u64,
    /// Price per unit.
    pub price: u64,
}

/// What settling an order credits back to its trader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payout {
    /// Units filled: bought (buy) or sold (sell); the settlement's output.
    pub filled: u64,
    /// Units of the market's asset credited: bought (buy) or refunded (sell).
    pub goods: u64,
    /// Money credited: the refund of a bid's escrow (buy) or the proceeds (sell).
    pub money: u64,
}

/// The money a bid of `qty` at `level` escrows: `qty × (level + 1)`; [`Failure::Overflow`] if
/// it does not fit.
pub fn bid_escrow(qty: u64, level: u64) -> Result<u64, Failure> {
    level.checked_add(1).and_then(|price| qty.checked_mul(price)).ok_or(Failure::Overflow)
}

/// The state of one market's book.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Book {
    /// Current round; orders placed now carry it.
    pub epoch: u64,
    /// Bid quantity per level in the current round.
    pub bids: [u64; LEVELS],
    /// Ask quantity per level in the current round.
    pub asks: [u64; LEVELS],
    /// Results of the last [`ROUNDS`] rounds, round `e` at `e % ROUNDS`.
    pub rounds: [Round; ROUNDS],
}

const WORDS: usize = 1 + 2 * LEVELS + 4 * ROUNDS;

impl Book {
    /// The encoded book.
    pub fn to_value(&self) -> Value {
        let mut words = Vec::with_capacity(WORDS);
        words.push(self.epoch);
        words.extend_from_slice(&self.bids);
        words.extend_from_slice(&self.asks);
        for r in &self.rounds {
            words.extend([r.level.map_or(0, |l| l + 1), r.matched, r.demand, r.supply]);
        }
        super::logic::words_value(&words)
    }

    /// Decodes a book; `None` if the value is not one.
    pub fn from_value(v: &Value) -> Option<Book> {
        let words = super::logic::words::<WORDS>(v)?;
        let w = |i: usize| words[i];
        let mut book = Book { epoch: w(0), ..Book::default() };
        for l in 0..LEVELS {
            book.bids[l] = w(1 + l);
            book.asks[l] = w(1 + LEVELS + l);
        }
        for (i, r) in book.rounds.iter_mut().enumerate() {
            let at = 1 + 2 * LEVELS + 4 * i;
            *r = Round { level: w(at).checked_sub(1), matched: w(at + 1), demand: w(at + 2), supply: w(at + 3) };
        }
        Some(book)
    }

    /// Clears the current round: records its result, empties the levels and opens the next
    /// round. Returns the matched volume; [`Failure::Overflow`], leaving the book as it was, if
    /// the clearing level's demand or supply does not fit 64 bits or the epoch is at its end.
    pub fn clear(&mut self) -> Result<u64, Failure> {
        let next = self.epoch.checked_add(1).ok_or(Failure::Overflow)?;
        // Eight levels of 64 bits sum well within 128 bits.
        let (mut best, mut level) = ((0u128, 0u128, 0u128), None);
        for p in 0..LEVELS {
            let demand: u128 = self.bids[p..].iter().map(|&q| q as u128).sum();
            let supply: u128 = self.asks[..=p].iter().map(|&q| q as u128).sum();
            let matched = demand.min(supply);
            if matched > best.0 {
                (best, level) = ((matched, demand, supply), Some(p as u64));
            }
        }
        let fit = |x: u128| u64::try_from(x).map_err(|_| Failure::Overflow);
        let round = Round { level, matched: fit(best.0)?, demand: fit(best.1)?, supply: fit(best.2)? };
        self.rounds[(self.epoch % ROUNDS as u64) as usize] = round;
        self.bids = [0; LEVELS];
        self.asks = [0; LEVELS];
        self.epoch = next;
        Ok(round.matched)
    }

    /// The result of round `epoch`, if it has cleared and is still kept.
    pub fn round(&self, epoch: u64) -> Option<Round> {
        (epoch < self.epoch && self.epoch - epoch <= ROUNDS as u64).then(|| self.rounds[(epoch % ROUNDS as u64) as usize])
    }

    /// What an order of `round` gets: nothing when the round matched nothing or the order was
    /// not eligible (priced out), otherwise its due, rounded as the module doc says.
    /// [`Failure::Overflow`] if the due does not fit 64 bits (an order larger than its side).
    pub fn fill(round: &Round, sell: bool, qty: u64, level: u64) -> Result<Fill, Failure> {
        let none = Fill { credited: 0, debited: 0, price: 0 };
        let Some(p) = round.level else { return Ok(none) };
        let (eligible, side) = if sell { (level <= p, round.supply) } else { (level >= p, round.demand) };
        if !eligible || side == 0 {
            return Ok(none);
        }
        // Both factors are below 2^64, so the product fits 128 bits.
        let due = qty as u128 * round.matched as u128;
        let side = side as u128;
        let fit = |x: u128| u64::try_from(x).map_err(|_| Failure::Overflow);
        Ok(Fill { credited: fit(due / side)?, debited: fit(due.div_ceil(side))?, price: fit(p as u128 + 1)? })
    }

    /// What settling an order of `round` credits back (see [`Book::fill`]): a buyer gets the
    /// units it was credited and its escrow less what it pays; a seller gets the units it did
    /// not deliver and the price of those it is paid for. [`Failure::Overflow`] where a product
    /// does not fit 64 bits or the fill exceeds the order (neither happens to orders that
    /// `order` transactions placed and a round that `clear` recorded).
    pub fn payout(round: &Round, sell: bool, qty: u64, level: u64) -> Result<Payout, Failure> {
        let f = Book::fill(round, sell, qty, level)?;
        let paid = f.credited.checked_mul(f.price).ok_or(Failure::Overflow);
        let charged = f.debited.checked_mul(f.price).ok_or(Failure::Overflow);
        let (goods, money) = if sell {
            (qty.checked_sub(f.debited).ok_or(Failure::Overflow)?, paid?)
        } else {
            (f.credited, bid_escrow(qty, level)?.checked_sub(charged?).ok_or(Failure::Overflow)?)
        };
        Ok(Payout { filled: f.credited, goods, money })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clears_at_the_level_matching_most_and_rounds_the_long_side_conservatively() {
        let mut b = Book::default();
        b.bids[5] = 30; // willing up to price 6
        b.bids[2] = 50; // up to price 3
        b.asks[1] = 40; // from price 2
        b.asks[4] = 40; // from price 5
                        // Levels 1 and 2: demand 80, supply 40 → 40 (the lower wins). Level 4: 30 of 80.
        assert_eq!(b.clear(), Ok(40));
        let r = b.round(0).unwrap();
        assert_eq!(r, Round { level: Some(1), matched: 40, demand: 80, supply: 40 });
        assert_eq!((b.epoch, b.bids), (1, [0; LEVELS]));
        assert_eq!(Book::fill(&r, false, 30, 5), Ok(Fill { credited: 15, debited: 15, price: 2 }));
        assert_eq!(Book::fill(&r, true, 40, 1), Ok(Fill { credited: 40, debited: 40, price: 2 }));
        assert_eq!(Book::fill(&r, true, 40, 4).unwrap().credited, 0, "an ask above the price is not eligible");
        assert_eq!(Book::fill(&r, false, 10, 0).unwrap().debited, 0, "a bid below the price is not eligible");
        // Three bids of 1 against an ask of 2: each bid is due 2/3.
        let r = Round { level: Some(0), matched: 2, demand: 3, supply: 2 };
        assert_eq!(Book::fill(&r, false, 1, 0), Ok(Fill { credited: 0, debited: 1, price: 1 }));
        assert_eq!(Book::from_value(&b.to_value()), Some(b));
    }

    #[test]
    fn rounds_are_kept_for_a_while_and_empty_rounds_match_nothing() {
        let mut b = Book::default();
        b.bids[7] = 10;
        assert_eq!(b.clear(), Ok(0));
        assert_eq!(b.round(0).unwrap().level, None);
        assert_eq!(Book::fill(&b.round(0).unwrap(), false, 10, 7).unwrap().credited, 0);
        assert_eq!(b.round(1), None, "not cleared yet");
        for _ in 0..ROUNDS {
            b.clear().unwrap();
        }
        assert_eq!(b.round(0), None, "forgotten");
        assert!(b.round(1).is_some());
        assert_eq!(Book::from_value(&Value::from_u64(3)), None);
    }

    /// Whatever the orders, settling all of them pays out no more than was escrowed.
    #[test]
    fn settling_every_order_never_creates_goods_or_money() {
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for _ in 0..500 {
            let mut b = Book::default();
            let orders: Vec<(bool, u64, u64)> = (0..1 + next(12)).map(|_| (next(2) == 1, 1 + next(50), next(LEVELS as u64))).collect();
            let (mut goods_in, mut money_in) = (0u128, 0u128);
            for &(sell, qty, level) in &orders {
                if sell {
                    b.asks[level as usize] += qty;
                    goods_in += qty as u128;
                } else {
                    b.bids[level as usize] += qty;
                    money_in += (qty * (level + 1)) as u128;
                }
            }
            b.clear().unwrap();
            let r = b.round(0).unwrap();
            let (mut goods_out, mut money_out) = (0u128, 0u128);
            for &(sell, qty, level) in &orders {
                let f = Book::fill(&r, sell, qty, level).unwrap();
                assert!(f.credited <= f.debited && f.debited <= qty);
                let p = Book::payout(&r, sell, qty, level).unwrap();
                assert_eq!(p.filled, f.credited);
                goods_out += p.goods as u128;
                money_out += p.money as u128;
            }
            assert!(goods_out <= goods_in && money_out <= money_in, "{orders:?}");
        }
    }

    #[test]
    fn clearing_and_settling_fail_rather_than_wrap() {
        let mut b = Book { epoch: u64::MAX, ..Book::default() };
        assert_eq!(b.clear(), Err(Failure::Overflow), "the last epoch cannot close");
        assert_eq!(b, Book { epoch: u64::MAX, ..Book::default() }, "and the book is unchanged");
        // Volumes past 64 bits: before, demand saturated at u64::MAX.
        let mut b = Book { bids: [u64::MAX; LEVELS], asks: [u64::MAX; LEVELS], ..Book::default() };
        let before = b.clone();
        assert_eq!(b.clear(), Err(Failure::Overflow));
        assert_eq!(b, before);
        b.bids = [0; LEVELS];
        b.bids[0] = u64::MAX;
        b.asks[0] = u64::MAX;
        assert_eq!(b.clear(), Ok(u64::MAX), "the largest volume that fits clears exactly");
        let r = b.round(0).unwrap();
        assert_eq!(Book::fill(&r, true, u64::MAX, 0), Ok(Fill { credited: u64::MAX, debited: u64::MAX, price: 1 }));
        let wide = Round { level: Some(7), matched: u64::MAX, demand: u64::MAX, supply: u64::MAX };
        // A seller paid 8 per unit for more than u64::MAX / 8 units: before, it saturated.
        assert_eq!(Book::payout(&wide, true, u64::MAX, 0), Err(Failure::Overflow));
        assert_eq!(Book::payout(&wide, true, u64::MAX / 8, 0).map(|p| p.money), Ok(u64::MAX / 8 * 8));
        assert_eq!(Book::payout(&wide, false, u64::MAX, 7), Err(Failure::Overflow), "the bid could not have escrowed");
        assert_eq!(bid_escrow(u64::MAX / 8, 7), Ok(u64::MAX / 8 * 8));
        assert_eq!(bid_escrow(1, u64::MAX), Err(Failure::Overflow));
        // An order larger than its side (not a state `order` builds) fails instead of truncating.
        let small = Round { level: Some(0), matched: 2, demand: 3, supply: 1 };
        assert_eq!(Book::fill(&small, true, u64::MAX, 0), Err(Failure::Overflow));
        assert_eq!(Book::fill(&Round { level: Some(u64::MAX), ..small }, true, 1, 0), Err(Failure::Overflow));
    }
}
