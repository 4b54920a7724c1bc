//! The signer bitmap of a certificate.

use super::{DecodeError, ValidatorSet, MAX_BITMAP_LEN};

/// Which validators signed: bit `i` (least significant first within byte `i / 8`) is set when
/// validator `i` signed. A certificate's bitmap holds exactly `ceil(n / 8)` bytes for a set of
/// `n` validators, and never more than [`MAX_BITMAP_LEN`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SignerBitmap {
    bytes: Vec<u8>,
}

impl SignerBitmap {
    /// Bytes of a bitmap for a set of `validators`.
    pub fn len_for(validators: usize) -> usize {
        validators.div_ceil(8)
    }

    /// An empty bitmap sized for `set`.
    pub fn for_set(set: &ValidatorSet) -> SignerBitmap {
        SignerBitmap { bytes: vec![0; Self::len_for(set.len())] }
    }

    /// A bitmap of these bytes; at most [`MAX_BITMAP_LEN`] of them.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignerBitmap, DecodeError> {
        if bytes.len() > MAX_BITMAP_LEN {
            return Err(DecodeError::BitmapTooLong { len: bytes.len(), max: MAX_BITMAP_LEN });
        }
        Ok(SignerBitmap { bytes: bytes.to_vec() })
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Number of bits the bitmap can hold (eight per byte).
    pub fn capacity(&self) -> usize {
        self.bytes.len() * 8
    }

    /// True if bit `index` is set.
    pub fn contains(&self, index: u32) -> bool {
        let byte = (index / 8) as usize;
        self.bytes.get(byte).is_some_and(|b| b >> (index % 8) & 1 == 1)
    }

    /// Sets (`signed`) or clears bit `index`. Returns false, changing nothing, if `index` is
    /// beyond the bitmap's capacity.
    pub fn set(&mut self, index: u32, signed: bool) -> bool {
        let byte = (index / 8) as usize;
        let mask = 1u8 << (index % 8);
        match self.bytes.get_mut(byte) {
            Some(b) if signed => *b |= mask,
            Some(b) => *b &= !mask,
            None => return false,
        }
        true
    }

    /// Number of bits set.
    pub fn count(&self) -> usize {
        self.bytes.iter().map(|b| b.count_ones() as usize).sum()
    }

    /// The indices of the bits set, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.bytes.iter().enumerate().flat_map(|(i, &b)| {
            // At most MAX_BITMAP_LEN bytes, so every index fits a u32.
            let base = (i as u32) * 8;
            (0..8u32).filter(move |bit| b >> bit & 1 == 1).map(move |bit| base + bit)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_lsb_first() {
        let mut m = SignerBitmap::from_bytes(&[0, 0]).unwrap();
        assert!(m.set(0, true));
        assert!(m.set(9, true));
        assert!(m.set(15, true));
        assert!(!m.set(16, true));
        assert_eq!(m.as_bytes(), &[0b0000_0001, 0b1000_0010]);
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![0, 9, 15]);
        assert_eq!(m.count(), 3);
        assert!(m.contains(9) && !m.contains(8) && !m.contains(16) && !m.contains(u32::MAX));
        assert!(m.set(9, false));
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![0, 15]);
        assert_eq!(m.capacity(), 16);
    }

    #[test]
    fn length_is_bounded() {
        assert!(SignerBitmap::from_bytes(&[0; MAX_BITMAP_LEN]).is_ok());
        assert_eq!(
            SignerBitmap::from_bytes(&[0; MAX_BITMAP_LEN + 1]),
            Err(DecodeError::BitmapTooLong { len: MAX_BITMAP_LEN + 1, max: MAX_BITMAP_LEN })
        );
        assert_eq!(SignerBitmap::len_for(1), 1);
        assert_eq!(SignerBitmap::len_for(8), 1);
        assert_eq!(SignerBitmap::len_for(9), 2);
        assert_eq!(SignerBitmap::len_for(4096), MAX_BITMAP_LEN);
    }
}
