//! Key distributions: which of `n` ids a generated transaction touches.

use rand::Rng;
use rand_distr::{Distribution as _, Zipf};
use std::fmt;
use std::str::FromStr;

/// How ids are drawn from `0..n`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Distribution {
    /// Every id equally likely.
    Uniform,
    /// Zipf with exponent `theta` over ranks, scrambled so that hot ids are spread out.
    Zipf(f64),
    /// With probability `p` one of `keys` hot ids, otherwise any id.
    Hotspot {
        /// Probability of choosing a hot id.
        p: f64,
        /// Number of hot ids.
        keys: u64,
    },
}

/// A distribution spec that does not parse.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("bad distribution {spec:?}: {why} (expected uniform, zipf:THETA or hotspot:PROBABILITY:KEYS)")]
pub struct DistributionError {
    spec: String,
    why: &'static str,
}

impl FromStr for Distribution {
    type Err = DistributionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| DistributionError { spec: s.to_string(), why };
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            ["uniform"] => Ok(Distribution::Uniform),
            ["zipf", theta] => {
                let theta: f64 = theta.parse().map_err(|_| err("THETA is not a number"))?;
                if !(0.0..=10.0).contains(&theta) {
                    return Err(err("THETA must be in 0..=10"));
                }
                Ok(Distribution::Zipf(theta))
            }
            ["hotspot", p, keys] => {
                let p: f64 = p.parse().map_err(|_| err("PROBABILITY is not a number"))?;
                if !(0.0..=1.0).contains(&p) {
                    return Err(err("PROBABILITY must be in 0..=1"));
                }
                let keys: u64 = keys.parse().map_err(|_| err("KEYS is not a whole number"))?;
                if keys == 0 {
                    return Err(err("KEYS must be at least 1"));
                }
                Ok(Distribution::Hotspot { p, keys })
            }
            _ => Err(err("unknown form")),
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distribution::Uniform => write!(f, "uniform"),
            Distribution::Zipf(t) => write!(f, "zipf:{t}"),
            Distribution::Hotspot { p, keys } => write!(f, "hotspot:{p}:{keys}"),
        }
    }
}

/// Draws ids from `0..n` with a [`Distribution`].
#[derive(Clone, Debug)]
pub struct KeyChooser {
    n: u64,
    dist: Distribution,
    zipf: Option<Zipf<f64>>,
    stride: u64,
}

/// A large prime; multiplying ranks by it (mod n) is a bijection whenever it does not divide n.
const SCRAMBLE: u64 = 2_654_435_761;

impl KeyChooser {
    /// A chooser over `0..n` (`n` ≥ 1).
    pub fn new(n: u64, dist: Distribution) -> Self {
        let n = n.max(1);
        let zipf = match dist {
            Distribution::Zipf(theta) => Some(Zipf::new(n, theta).expect("validated theta, n >= 1")),
            _ => None,
        };
        let stride = if n.is_multiple_of(SCRAMBLE) { 1 } else { SCRAMBLE % n };
        KeyChooser { n, dist, zipf, stride: stride.max(1) }
    }

    /// Number of ids.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// Always false (a chooser has at least one id).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Maps a popularity rank to an id, spreading neighbouring ranks over the id space.
    #[inline]
    fn scramble(&self, rank: u64) -> u64 {
        ((rank as u128 * self.stride as u128) % self.n as u128) as u64
    }

    /// Draws one id.
    #[inline]
    pub fn sample<R: Rng>(&self, rng: &mut R) -> u64 {
        match self.dist {
            Distribution::Uniform => rng.gen_range(0..self.n),
            Distribution::Zipf(_) => {
                let rank = self.zipf.as_ref().expect("zipf set").sample(rng) as u64 - 1;
                self.scramble(rank.min(self.n - 1))
            }
            Distribution::Hotspot { p, keys } => {
                if rng.gen_bool(p) {
                    self.scramble(rng.gen_range(0..keys.min(self.n)))
                } else {
                    rng.gen_range(0..self.n)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn parses_and_rejects() {
        assert_eq!("uniform".parse(), Ok(Distribution::Uniform));
        assert_eq!("zipf:0.99".parse(), Ok(Distribution::Zipf(0.99)));
        assert_eq!("hotspot:0.9:10".parse(), Ok(Distribution::Hotspot { p: 0.9, keys: 10 }));
        for bad in ["", "zipf", "zipf:x", "zipf:-1", "hotspot:2:1", "hotspot:0.5:0", "hotspot:0.5", "normal"] {
            assert!(bad.parse::<Distribution>().is_err(), "{bad}");
        }
        let d: Distribution = "hotspot:0.5:3".parse().unwrap();
        assert_eq!(d.to_string().parse::<Distribution>().unwrap(), d);
    }

    #[test]
    fn scramble_is_a_bijection() {
        for n in [1u64, 2, 10, 97, 1000, 4096] {
            let c = KeyChooser::new(n, Distribution::Uniform);
            let mut seen: Vec<u64> = (0..n).map(|r| c.scramble(r)).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn skew_concentrates_draws() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let top_share = |d: Distribution, rng: &mut rand_chacha::ChaCha8Rng| {
            let c = KeyChooser::new(10_000, d);
            let mut counts = std::collections::HashMap::new();
            for _ in 0..20_000 {
                *counts.entry(c.sample(rng)).or_insert(0u32) += 1;
            }
            let mut v: Vec<u32> = counts.into_values().collect();
            v.sort_unstable_by(|a, b| b.cmp(a));
            v.iter().take(10).sum::<u32>() as f64 / 20_000.0
        };
        let uniform = top_share(Distribution::Uniform, &mut rng);
        let zipf = top_share(Distribution::Zipf(0.99), &mut rng);
        let hot = top_share(Distribution::Hotspot { p: 0.9, keys: 10 }, &mut rng);
        assert!(uniform < 0.01, "{uniform}");
        assert!(zipf > 0.1, "{zipf}");
        assert!(hot > 0.85, "{hot}");
        let one = KeyChooser::new(100, Distribution::Hotspot { p: 1.0, keys: 1 });
        assert!((0..100).all(|_| one.sample(&mut rng) == one.sample(&mut rng)));
    }
}
