//! State keys: fixed 32-byte identifiers, hashed once with a cheap mixer.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Length of every state key in bytes.
pub const KEY_LEN: usize = 32;

/// A fixed-size state key.
///
/// Keys are opaque to the engine. The native VM builds them from a one-byte tag and two
/// little-endian `u64` fields (see [`Key::from_parts`]); a foreign VM may put anything in them,
/// for example a 32-byte hash of an account address and a storage slot.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key(pub [u8; KEY_LEN]);

impl Key {
    /// Builds a key from a tag and two integer fields: `tag | 0…0 | a (LE) | b (LE)`.
    #[inline]
    pub const fn from_parts(tag: u8, a: u64, b: u64) -> Self {
        let mut bytes = [0u8; KEY_LEN];
        bytes[0] = tag;
        let a = a.to_le_bytes();
        let b = b.to_le_bytes();
        let mut i = 0;
        while i < 8 {
            bytes[16 + i] = a[i];
            bytes[24 + i] = b[i];
            i += 1;
        }
        Key(bytes)
    }

    /// Like [`Key::from_parts`] with a third field in bytes 8..16.
    #[inline]
    pub const fn from_parts3(tag: u8, sub: u64, a: u64, b: u64) -> Self {
        let mut k = Key::from_parts(tag, a, b);
        let s = sub.to_le_bytes();
        let mut i = 0;
        while i < 8 {
            k.0[8 + i] = s[i];
            i += 1;
        }
        k
    }

    /// The tag byte of a key built with [`Key::from_parts`].
    #[inline]
    pub fn tag(&self) -> u8 {
        self.0[0]
    }

    /// A 64-bit mix of all 32 bytes. Cheap (four multiplies) and good enough to spread
    /// structured keys over hash tables and partitions; it is not a cryptographic hash.
    #[inline]
    pub fn hash64(&self) -> u64 {
        const M: u64 = 0x9E37_79B9_7F4A_7C15;
        let w = |i: usize| u64::from_le_bytes(self.0[i * 8..i * 8 + 8].try_into().unwrap());
        let mut h = w(0).wrapping_mul(M) ^ w(1);
        h = h.rotate_left(23).wrapping_mul(M) ^ w(2);
        h = h.rotate_left(23).wrapping_mul(M) ^ w(3);
        h = (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^ (h >> 32)
    }

    /// Lower-case hex of the key, for recordings and messages.
    pub fn to_hex(&self) -> String {
        hex_encode(&self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Key> {
        let bytes = hex_decode(s)?;
        Some(Key(bytes.try_into().ok()?))
    }
}

impl std::hash::Hash for Key {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash64());
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.to_hex())
    }
}

/// Lower-case hex of a byte string.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// Parses lower- or upper-case hex; `None` on odd length or a non-hex digit.
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes().chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

/// A `Hasher` for maps keyed by [`Key`] that uses the key's own [`Key::hash64`].
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys hashed through `Hash` (a length prefix then the array);
        // fold whatever arrives so the hasher stays correct for any input.
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(29) ^ u64::from_le_bytes(w)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 ^= v;
    }
}

/// `BuildHasher` for [`KeyHasher`].
pub type KeyBuildHasher = std::hash::BuildHasherDefault<KeyHasher>;

/// A `HashMap` keyed by [`Key`] with the cheap key hasher.
pub type KeyMap<V> = std::collections::HashMap<Key, V, KeyBuildHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let k = Key::from_parts(7, 42, u64::MAX);
        assert_eq!(Key::from_hex(&k.to_hex()), Some(k));
        assert_eq!(Key::from_hex("zz"), None);
        assert_eq!(Key::from_hex("abc"), None);
    }

    #[test]
    fn hash_spreads_sequential_ids() {
        let mut buckets = [0u32; 16];
        for i in 0..16_000u64 {
            buckets[(Key::from_parts(1, i, 0).hash64() % 16) as usize] += 1;
        }
        assert!(buckets.iter().all(|&b| (800..1200).contains(&b)), "{buckets:?}");
    }
}
