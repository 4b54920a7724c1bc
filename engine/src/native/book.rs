//! A per-market call auction: orders collect in rounds and clear together at one price.
//!
//! Peer-to-peer energy markets and many exchange openings work this way. Every order of a
//! market reads and writes the market's book, so a busy market is a hot key. The traded asset
//! of market `m` is token `m`; money is the native balance. Price level `l` (`0..LEVELS`)
//! means a price of `l + 1` per unit.
//!
//! **Clearing.** A bid at level `b` is willing at every price level `≤ b`; an ask at level `a`
//! at every level `≥ a`. The round clears at the level `p` that maximises the matched volume
//! `min(demand(p), supply(p))` (ties go to the lowest level, the buyers' side). Every eligible order on the
//! shorter side fills completely; the longer side fills pro rata, in parts per million,
//! rounded down, so never more is delivered than was matched.

use crate::value::Value;

/// Price levels per book.
pub const LEVELS: usize = 8;

/// Fill ratios are in parts of this.
pub const FILL_SCALE: u64 = 1_000_000;

/// The state of one market's book.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Book {
    /// Current round; orders placed now carry it.
    pub epoch: u64,
    /// The level the previous round cleared at, if it matched anything.
    pub cleared_level: Option<u64>,
    /// Fill ratio of eligible bids in the previous round, in parts of [`FILL_SCALE`].
    pub bid_fill: u64,
    /// Fill ratio of eligible asks in the previous round, in parts of [`FILL_SCALE`].
    pub ask_fill: u64,
    /// Bid quantity per level in the current round.
    pub bids: [u64; LEVELS],
    /// Ask quantity per level in the current round.
    pub asks: [u64; LEVELS],
}

const WORDS: usize = 4 + 2 * LEVELS;

impl Book {
    /// The encoded book.
    pub fn to_value(&self) -> Value {
        let mut words = [0u64; WORDS];
        words[0] = self.epoch;
        words[1] = self.cleared_level.map_or(0, |l| l + 1);
        words[2] = self.bid_fill;
        words[3] = self.ask_fill;
        words[4..4 + LEVELS].copy_from_slice(&self.bids);
        words[4 + LEVELS..].copy_from_slice(&self.asks);
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        Value::from_slice(&bytes)
    }

    /// Decodes a book; `None` if the value is not one.
    pub fn from_value(v: &Value) -> Option<Book> {
        let b = v.as_bytes();
        if b.len() != WORDS * 8 {
            return None;
        }
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let mut book = Book { epoch: w(0), cleared_level: w(1).checked_sub(1), bid_fill: w(2), ask_fill: w(3), ..Book::default() };
        for l in 0..LEVELS {
            book.bids[l] = w(4 + l);
            book.asks[l] = w(4 + LEVELS + l);
        }
        Some(book)
    }

    /// Clears the round: records the clearing level and fill ratios, empties the levels and
    /// opens the next round. Returns the matched volume.
    pub fn clear(&mut self) -> u64 {
        let mut best = (0u64, 0usize, 0u64, 0u64); // (matched, level, demand, supply)
        for p in 0..LEVELS {
            let demand: u64 = self.bids[p..].iter().fold(0, |a, &q| a.saturating_add(q));
            let supply: u64 = self.asks[..=p].iter().fold(0, |a, &q| a.saturating_add(q));
            let matched = demand.min(supply);
            if matched > best.0 {
                best = (matched, p, demand, supply);
            }
        }
        let (matched, level, demand, supply) = best;
        let ratio = |side: u64| if side == 0 { 0 } else { (matched as u128 * FILL_SCALE as u128 / side as u128) as u64 };
        self.cleared_level = (matched > 0).then_some(level as u64);
        self.bid_fill = ratio(demand);
        self.ask_fill = ratio(supply);
        self.bids = [0; LEVELS];
        self.asks = [0; LEVELS];
        self.epoch += 1;
        matched
    }

    /// The filled quantity of an order of the previous round (0 when it was not eligible or
    /// nothing matched), and the price per unit it fills at.
    pub fn fill(&self, sell: bool, qty: u64, level: u64) -> (u64, u64) {
        let Some(p) = self.cleared_level else { return (0, 0) };
        let (eligible, ratio) = if sell { (level <= p, self.ask_fill) } else { (level >= p, self.bid_fill) };
        if !eligible {
            return (0, p + 1);
        }
        ((qty as u128 * ratio as u128 / FILL_SCALE as u128) as u64, p + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clears_at_the_level_matching_most_and_fills_the_long_side_pro_rata() {
        let mut b = Book::default();
        b.bids[5] = 30; // willing up to price 6
        b.bids[2] = 50; // up to price 3
        b.asks[1] = 40; // from price 2
        b.asks[4] = 40; // from price 5
                        // Levels 1 and 2: demand 80, supply 40 → 40 (the lower wins). Level 4: 30 of 80.
        assert_eq!(b.clear(), 40);
        assert_eq!(b.cleared_level, Some(1));
        assert_eq!((b.bid_fill, b.ask_fill), (500_000, 1_000_000));
        assert_eq!(b.epoch, 1);
        assert_eq!(b.bids, [0; LEVELS]);
        assert_eq!(b.fill(false, 30, 5), (15, 2));
        assert_eq!(b.fill(false, 50, 2), (25, 2));
        assert_eq!(b.fill(true, 40, 1), (40, 2));
        assert_eq!(b.fill(true, 40, 4), (0, 2), "an ask above the price is not eligible");
        assert_eq!(b.fill(false, 10, 0), (0, 2), "a bid below the price is not eligible");
        assert_eq!(Book::from_value(&b.to_value()), Some(b));
    }

    #[test]
    fn an_empty_or_one_sided_round_matches_nothing() {
        let mut b = Book::default();
        b.bids[7] = 10;
        assert_eq!(b.clear(), 0);
        assert_eq!(b.cleared_level, None);
        assert_eq!(b.fill(false, 10, 7), (0, 0));
        assert_eq!(Book::from_value(&Value::from_u64(3)), None);
    }
}
