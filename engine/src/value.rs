//! State values: short byte strings stored inline, and the operations a transaction can write.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::fmt;

/// Values up to this many bytes are stored inline, without a heap allocation.
pub const VALUE_INLINE_LEN: usize = 32;

/// A state value: an arbitrary byte string (short ones inline).
#[derive(PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Value(SmallVec<[u8; VALUE_INLINE_LEN]>);

impl Clone for Value {
    // SmallVec's derived clone goes through an iterator; a slice copy is several times cheaper,
    // and values are cloned on every read.
    #[inline]
    fn clone(&self) -> Self {
        Value(SmallVec::from_slice(&self.0))
    }

    #[inline]
    fn clone_from(&mut self, source: &Self) {
        self.0.clear();
        self.0.extend_from_slice(&source.0);
    }
}

impl Value {
    /// A value holding a copy of `bytes`.
    #[inline]
    pub fn from_slice(bytes: &[u8]) -> Self {
        Value(SmallVec::from_slice(bytes))
    }

    /// The 8-byte little-endian encoding of `v` (how balances and counters are stored).
    #[inline]
    pub fn from_u64(v: u64) -> Self {
        Value::from_slice(&v.to_le_bytes())
    }

    /// The value as a little-endian `u64` if it is exactly 8 bytes long.
    #[inline]
    pub fn as_u64(&self) -> Option<u64> {
        Some(u64::from_le_bytes(self.0.as_slice().try_into().ok()?))
    }

    /// The raw bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the empty value (which is distinct from an absent key).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Value({})", crate::key::hex_encode(&self.0))
    }
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::key::hex_encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        crate::key::hex_decode(&s).map(|b| Value::from_slice(&b)).ok_or_else(|| serde::de::Error::custom("value is not valid hex"))
    }
}

/// The result of applying a commutative `Add` of `delta` to `base`.
///
/// This is the one definition of delta arithmetic that every executor uses: the base is read
/// as a little-endian `u64` (absent, or any length other than 8, counts as 0) and the sum
/// wraps. Wrapping keeps the operation total and order-independent, so credits to a hot
/// account commute and need not conflict. Signed balances (SmallBank) use two's complement.
#[inline]
pub fn apply_add(base: Option<&Value>, delta: u64) -> Value {
    let base = base.and_then(Value::as_u64).unwrap_or(0);
    Value::from_u64(base.wrapping_add(delta))
}

/// One write of a transaction, before it is resolved against the state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// Set the key to this value.
    Put(Value),
    /// Remove the key.
    Delete,
    /// Add this amount to the key's `u64` value (see [`apply_add`]); commutes with other adds.
    Add(u64),
}

impl WriteOp {
    /// Resolves the op against the value below it.
    #[inline]
    pub fn resolve(&self, base: Option<&Value>) -> Option<Value> {
        self.resolve_with(|| base)
    }

    /// Like [`WriteOp::resolve`], looking the value below up only for an `Add`.
    #[inline]
    pub fn resolve_with<'a>(&self, base: impl FnOnce() -> Option<&'a Value>) -> Option<Value> {
        match self {
            WriteOp::Put(v) => Some(v.clone()),
            WriteOp::Delete => None,
            WriteOp::Add(d) => Some(apply_add(base(), *d)),
        }
    }

    /// `self` followed by `next`, as one op.
    #[inline]
    pub fn then(&self, next: WriteOp) -> WriteOp {
        match (self, next) {
            (_, WriteOp::Put(v)) => WriteOp::Put(v),
            (_, WriteOp::Delete) => WriteOp::Delete,
            (WriteOp::Add(a), WriteOp::Add(b)) => WriteOp::Add(a.wrapping_add(b)),
            (WriteOp::Put(v), WriteOp::Add(b)) => WriteOp::Put(apply_add(Some(v), b)),
            (WriteOp::Delete, WriteOp::Add(b)) => WriteOp::Put(apply_add(None, b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_wraps_and_treats_odd_lengths_as_zero() {
        assert_eq!(apply_add(None, 5).as_u64(), Some(5));
        assert_eq!(apply_add(Some(&Value::from_u64(u64::MAX)), 2).as_u64(), Some(1));
        assert_eq!(apply_add(Some(&Value::from_slice(b"abc")), 3).as_u64(), Some(3));
    }

    #[test]
    fn ops_compose_like_applying_them_in_turn() {
        let base = Some(Value::from_u64(10));
        let ops = [WriteOp::Add(3), WriteOp::Put(Value::from_u64(1)), WriteOp::Delete];
        for a in &ops {
            for b in &ops {
                let stepwise = b.resolve(a.resolve(base.as_ref()).as_ref());
                assert_eq!(a.then(b.clone()).resolve(base.as_ref()), stepwise, "{a:?} then {b:?}");
            }
        }
    }
}
