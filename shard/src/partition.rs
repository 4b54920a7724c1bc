//! Partitioners: which shard owns a state key.
//!
//! Three policies implement [`Partitioner`]:
//!
//! - [`HashPartitioner`] spreads keys uniformly by a re-mix of [`Key::hash64`]. It works for any
//!   key, native or foreign, but places each key on its own: two keys of one account with
//!   different tags (say a SmallBank checking and savings balance) may land on different shards.
//! - [`RangePartitioner`] splits the key's *id field* (see [`key_id`]) into contiguous ranges.
//! - [`MapPartitioner`] assigns listed ids to explicit shards and hashes the rest.
//!
//! [`partitioner_by_spec`] builds one of them from a short text spec (`hash`, `range`,
//! `range:B1,B2,...`, `map:PATH`), as given on a command line.
//!
//! # The id field
//!
//! Native keys ([`Key::from_parts`]) carry the account, customer or record id in bytes
//! `16..24`, little-endian. Range and map partitioners read that field from every key, whatever
//! its tag, so all of an account's keys live on one shard.
//!
//! # Independence from the engine's hashing
//!
//! The engine's hash tables use the low bits of [`Key::hash64`] and its 64 state partitions
//! bits `40..46`. Were a shard chosen from those bits, all keys of one shard would crowd into a
//! few buckets and partitions. The hash partitioner therefore re-mixes the hash with a salted
//! SplitMix64 finaliser before taking the shard from the high half of the result.
//!
//! # Map file format
//!
//! A map file is UTF-8 text with one `ID SHARD` pair per line:
//!
//! ```text
//! # hot accounts pinned to shard 0
//! 17 0
//! 42, 0
//! 1000000   3   # a trailing comment
//! ```
//!
//! - `ID` is a decimal `u64` (the id field of the keys it places), `SHARD` a decimal shard
//!   number below the shard count; they are separated by whitespace or a comma.
//! - `#` starts a comment that runs to the end of the line; blank lines are ignored.
//! - An id may be listed only once. A line may hold at most [`MAX_MAP_LINE_LEN`] bytes and a
//!   file at most [`MAX_MAP_ENTRIES`] entries.
//! - Ids not listed fall back to a [`HashPartitioner`] over the same shard count.
//!
//! Every parse error names its 1-based line number.

use occam_engine::key::Key;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// A shard number, `0..shards`.
pub type ShardId = u32;

/// The largest shard count any partitioner accepts.
pub const MAX_SHARDS: usize = 1024;

/// The most entries a partition map may hold.
pub const MAX_MAP_ENTRIES: usize = 10_000_000;

/// The longest line, in bytes without its line ending, a partition map may hold.
pub const MAX_MAP_LINE_LEN: usize = 4096;

/// Decides which shard owns each state key.
pub trait Partitioner: Send + Sync + fmt::Debug {
    /// Number of shards (>= 1).
    fn shards(&self) -> usize;
    /// The shard owning `key`; always < shards().
    fn shard_of(&self, key: &Key) -> ShardId;
    /// A short description for reports, e.g. "hash", "range:3 bounds", "map:FILE (120 entries)".
    fn describe(&self) -> String;
}

/// Why a partitioner could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// The shard count is 0 or above [`MAX_SHARDS`].
    #[error("shard count {0} is out of range 1..={MAX_SHARDS}")]
    BadShardCount(usize),
    /// Range bounds are not strictly increasing.
    #[error("range bound {index} ({value}) is not above the previous bound ({prev}); bounds must be strictly increasing")]
    BoundsNotIncreasing {
        /// Index of the offending bound.
        index: usize,
        /// The bound before it.
        prev: u64,
        /// The offending bound.
        value: u64,
    },
    /// A range spec lists the wrong number of bounds for the shard count.
    #[error("{got} range bounds given, {need} needed (one fewer than the shard count)")]
    WrongBoundCount {
        /// Bounds given.
        got: usize,
        /// Bounds needed.
        need: usize,
    },
    /// An even range split has fewer ids than shards, so some shard would own no id.
    #[error("cannot split {ids} ids evenly over {shards} shards: every shard needs at least one id")]
    TooFewIds {
        /// The id count.
        ids: u64,
        /// The shard count.
        shards: usize,
    },
    /// A range bound in a spec is not a decimal `u64`.
    #[error("range bound `{0}` is not a decimal u64")]
    BadBound(String),
    /// A map line is malformed.
    #[error("partition map line {line}: {reason}")]
    MapLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A map line names a shard not below the shard count.
    #[error("partition map line {line}: shard {shard} is out of range for {shards} shards")]
    ShardOutOfRange {
        /// 1-based line number.
        line: usize,
        /// The shard named.
        shard: u64,
        /// The shard count.
        shards: usize,
    },
    /// A map lists an id a second time.
    #[error("partition map line {line}: id {id} is listed twice")]
    DuplicateId {
        /// 1-based line number of the second listing.
        line: usize,
        /// The id.
        id: u64,
    },
    /// A map holds more than [`MAX_MAP_ENTRIES`] entries.
    #[error("partition map line {line}: more than {limit} entries")]
    TooManyEntries {
        /// 1-based line number of the first entry over the limit.
        line: usize,
        /// The limit.
        limit: usize,
    },
    /// A map file could not be read.
    #[error("cannot read partition map {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A partitioner spec is not one of `hash`, `modulo`, `range`, `range:B1,...`, `map:PATH`.
    #[error("unknown partitioner spec `{0}` (expected hash, modulo, range, range:B1,B2,... or map:PATH)")]
    UnknownSpec(String),
}

/// The id field of a key: bytes `16..24` little-endian, the `a` argument of [`Key::from_parts`].
#[inline]
pub fn key_id(key: &Key) -> u64 {
    let mut id = [0u8; 8];
    id.copy_from_slice(&key.0[16..24]);
    u64::from_le_bytes(id)
}

fn check_shards(shards: usize) -> Result<(), PartitionError> {
    if (1..=MAX_SHARDS).contains(&shards) {
        Ok(())
    } else {
        Err(PartitionError::BadShardCount(shards))
    }
}

/// SplitMix64's finaliser: a bijective, well-avalanching 64-bit mix.
#[inline]
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Maps a 64-bit value onto `0..shards` from its high half (multiply-shift, no division).
#[inline]
fn scale(h: u64, shards: usize) -> ShardId {
    // (h >> 32) < 2^32 and shards <= MAX_SHARDS, so the product fits and the result is < shards.
    (((h >> 32) * shards as u64) >> 32) as ShardId
}

/// Salt of the hash partitioner's re-mix, so its choice is independent of the engine's use of
/// the raw [`Key::hash64`].
const HASH_SALT: u64 = 0x6F63_6361_6D2D_7368; // "occam-sh"

/// Uniform placement by a salted re-mix of [`Key::hash64`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashPartitioner {
    shards: usize,
}

impl HashPartitioner {
    /// A hash partitioner over `shards` shards (`1..=MAX_SHARDS`).
    pub fn new(shards: usize) -> Result<Self, PartitionError> {
        check_shards(shards)?;
        Ok(HashPartitioner { shards })
    }
}

impl Partitioner for HashPartitioner {
    fn shards(&self) -> usize {
        self.shards
    }

    #[inline]
    fn shard_of(&self, key: &Key) -> ShardId {
        scale(splitmix64(key.hash64() ^ HASH_SALT), self.shards)
    }

    fn describe(&self) -> String {
        "hash".to_string()
    }
}

/// Contiguous ranges of the id field ([`key_id`]): shard `i` owns ids in `[bounds[i-1], bounds[i])`,
/// shard 0 everything below `bounds[0]` and the last shard everything from the last bound up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangePartitioner {
    bounds: Vec<u64>,
}

impl RangePartitioner {
    /// A range partitioner with `bounds.len() + 1` shards; `bounds` must be strictly increasing
    /// and hold fewer than [`MAX_SHARDS`] values.
    pub fn new(bounds: Vec<u64>) -> Result<Self, PartitionError> {
        check_shards(bounds.len().saturating_add(1))?;
        for (index, pair) in bounds.windows(2).enumerate() {
            if pair[1] <= pair[0] {
                return Err(PartitionError::BoundsNotIncreasing { index: index + 1, prev: pair[0], value: pair[1] });
            }
        }
        Ok(RangePartitioner { bounds })
    }

    /// Splits ids `0..ids` evenly over `shards` shards (shard sizes differ by at most one; ids
    /// from `ids` up go to the last shard). Needs `ids >= shards` when `shards > 1`.
    pub fn even(shards: usize, ids: u64) -> Result<Self, PartitionError> {
        check_shards(shards)?;
        if shards > 1 && ids < shards as u64 {
            return Err(PartitionError::TooFewIds { ids, shards });
        }
        // ids * i / shards < ids <= u64::MAX for i < shards, computed without overflow in u128.
        let bounds = (1..shards).map(|i| (u128::from(ids) * i as u128 / shards as u128) as u64).collect();
        Self::new(bounds)
    }

    /// The bounds, strictly increasing.
    pub fn bounds(&self) -> &[u64] {
        &self.bounds
    }
}

impl Partitioner for RangePartitioner {
    fn shards(&self) -> usize {
        self.bounds.len() + 1
    }

    #[inline]
    fn shard_of(&self, key: &Key) -> ShardId {
        let id = key_id(key);
        self.bounds.partition_point(|&b| b <= id) as ShardId
    }

    fn describe(&self) -> String {
        format!("range:{} bounds", self.bounds.len())
    }
}

/// A cheap hasher for the map's `u64` ids (SplitMix64). The map comes from the operator, so
/// hash flooding is not a concern.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        splitmix64(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 ^= v;
    }
}

type IdMap = HashMap<u64, ShardId, BuildHasherDefault<IdHasher>>;

/// Explicit placement of listed ids (the id field, [`key_id`]), with a [`HashPartitioner`] for
/// ids not in the map. See the [module docs](self) for the file format.
#[derive(Clone)]
pub struct MapPartitioner {
    map: IdMap,
    fallback: HashPartitioner,
    source: String,
}

impl fmt::Debug for MapPartitioner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The map may be millions of entries long: show its size, not its contents.
        f.debug_struct("MapPartitioner")
            .field("source", &self.source)
            .field("entries", &self.map.len())
            .field("shards", &self.fallback.shards)
            .finish()
    }
}

/// Accumulates map lines, checking each.
struct MapBuilder {
    map: IdMap,
    shards: usize,
}

impl MapBuilder {
    fn new(shards: usize) -> Result<Self, PartitionError> {
        check_shards(shards)?;
        Ok(MapBuilder { map: IdMap::default(), shards })
    }

    fn line(&mut self, line: usize, text: &str) -> Result<(), PartitionError> {
        let bad = |reason: String| PartitionError::MapLine { line, reason };
        if text.len() > MAX_MAP_LINE_LEN {
            return Err(bad(format!("line is longer than {MAX_MAP_LINE_LEN} bytes")));
        }
        let content = text.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            return Ok(());
        }
        let mut fields = content.split(|c: char| c.is_whitespace() || c == ',').filter(|f| !f.is_empty());
        let (Some(id), shard, extra) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad("expected `ID SHARD`".to_string()));
        };
        let Some(shard) = shard else {
            return Err(bad(format!("missing shard after id `{id}`")));
        };
        if let Some(extra) = extra {
            return Err(bad(format!("extra field `{extra}` after `ID SHARD`")));
        }
        let id = parse_decimal(id).ok_or_else(|| bad(format!("id `{id}` is not a decimal u64")))?;
        let shard = parse_decimal(shard).ok_or_else(|| bad(format!("shard `{shard}` is not a decimal number")))?;
        if shard >= self.shards as u64 {
            return Err(PartitionError::ShardOutOfRange { line, shard, shards: self.shards });
        }
        if self.map.contains_key(&id) {
            return Err(PartitionError::DuplicateId { line, id });
        }
        if self.map.len() >= MAX_MAP_ENTRIES {
            return Err(PartitionError::TooManyEntries { line, limit: MAX_MAP_ENTRIES });
        }
        self.map.insert(id, shard as ShardId);
        Ok(())
    }

    fn finish(self, source: String) -> Result<MapPartitioner, PartitionError> {
        Ok(MapPartitioner { map: self.map, fallback: HashPartitioner::new(self.shards)?, source })
    }
}

/// Parses a non-empty run of ASCII digits as a `u64` (no sign, no overflow).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl MapPartitioner {
    /// Parses a map from text (see the [module docs](self)) for `shards` shards.
    pub fn from_text(text: &str, shards: usize) -> Result<Self, PartitionError> {
        let mut builder = MapBuilder::new(shards)?;
        for (i, line) in text.lines().enumerate() {
            builder.line(i + 1, line)?;
        }
        builder.finish("<text>".to_string())
    }

    /// Reads a map file (see the [module docs](self)) for `shards` shards. The file is read a
    /// line at a time, so an oversized one fails on its first over-long line rather than being
    /// read whole.
    pub fn load(path: &Path, shards: usize) -> Result<Self, PartitionError> {
        let io = |source| PartitionError::Io { path: path.to_path_buf(), source };
        let mut builder = MapBuilder::new(shards)?;
        let mut reader = BufReader::new(std::fs::File::open(path).map_err(io)?);
        let mut buf = Vec::new();
        let mut line = 0usize;
        loop {
            buf.clear();
            // Read at most one byte past the line limit (plus "\r\n"), so a huge line cannot
            // exhaust memory; `MapBuilder::line` then rejects it as too long.
            let n = (&mut reader).take(MAX_MAP_LINE_LEN as u64 + 3).read_until(b'\n', &mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            line += 1;
            if buf.last() == Some(&b'\n') {
                buf.pop();
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
            }
            let text =
                std::str::from_utf8(&buf).map_err(|_| PartitionError::MapLine { line, reason: "line is not valid UTF-8".to_string() })?;
            builder.line(line, text)?;
        }
        builder.finish(path.display().to_string())
    }

    /// Number of ids listed in the map.
    pub fn entries(&self) -> usize {
        self.map.len()
    }

    /// The shard the map lists for `id`, if any.
    pub fn mapped(&self, id: u64) -> Option<ShardId> {
        self.map.get(&id).copied()
    }
}

impl Partitioner for MapPartitioner {
    fn shards(&self) -> usize {
        self.fallback.shards
    }

    #[inline]
    fn shard_of(&self, key: &Key) -> ShardId {
        match self.map.get(&key_id(key)) {
            Some(&shard) => shard,
            None => self.fallback.shard_of(key),
        }
    }

    fn describe(&self) -> String {
        format!("map:{} ({} entries)", self.source, self.map.len())
    }
}

/// Placement by the key's id modulo the shard count: the keys of id `a` (an account's balance,
/// savings and checking, the nonce of signer `a`) all live on shard `a % shards`. With the
/// benchmark's signing convention (account `a` signs with key `a % signers`) and `signers` a
/// multiple of `shards`, an account's transactions and its signer's nonce share a shard, which
/// is what a node cluster needs to keep single-account transactions single-shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuloPartitioner {
    shards: usize,
}

impl ModuloPartitioner {
    /// A modulo partitioner over `shards` shards (`1..=MAX_SHARDS`).
    pub fn new(shards: usize) -> Result<Self, PartitionError> {
        check_shards(shards)?;
        Ok(ModuloPartitioner { shards })
    }
}

impl Partitioner for ModuloPartitioner {
    fn shards(&self) -> usize {
        self.shards
    }

    #[inline]
    fn shard_of(&self, key: &Key) -> ShardId {
        (key_id(key) % self.shards as u64) as ShardId
    }

    fn describe(&self) -> String {
        format!("modulo ({} shards)", self.shards)
    }
}

/// Builds a partitioner over `shards` shards from a spec:
///
/// - `hash`: [`HashPartitioner`];
/// - `modulo`: [`ModuloPartitioner`];
/// - `range`: [`RangePartitioner::even`] over ids `0..ids`;
/// - `range:B1,B2,...`: [`RangePartitioner::new`] with explicit decimal bounds, exactly
///   `shards - 1` of them (`range:` alone for one shard);
/// - `map:PATH`: [`MapPartitioner::load`].
///
/// `ids` is used only by `range`.
pub fn partitioner_by_spec(spec: &str, shards: usize, ids: u64) -> Result<Box<dyn Partitioner>, PartitionError> {
    check_shards(shards)?;
    if spec == "hash" {
        return Ok(Box::new(HashPartitioner::new(shards)?));
    }
    if spec == "modulo" {
        return Ok(Box::new(ModuloPartitioner::new(shards)?));
    }
    if spec == "range" {
        return Ok(Box::new(RangePartitioner::even(shards, ids)?));
    }
    if let Some(list) = spec.strip_prefix("range:") {
        let bounds = if list.trim().is_empty() {
            Vec::new()
        } else {
            list.split(',')
                .map(|b| parse_decimal(b.trim()).ok_or_else(|| PartitionError::BadBound(b.trim().to_string())))
                .collect::<Result<Vec<u64>, _>>()?
        };
        if bounds.len() != shards - 1 {
            return Err(PartitionError::WrongBoundCount { got: bounds.len(), need: shards - 1 });
        }
        return Ok(Box::new(RangePartitioner::new(bounds)?));
    }
    if let Some(path) = spec.strip_prefix("map:") {
        if path.is_empty() {
            return Err(PartitionError::UnknownSpec(spec.to_string()));
        }
        return Ok(Box::new(MapPartitioner::load(Path::new(path), shards)?));
    }
    Err(PartitionError::UnknownSpec(spec.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The engine's state partition of a key (bits 40..46 of its hash).
    fn engine_partition(key: &Key) -> usize {
        ((key.hash64() >> 40) & 63) as usize
    }

    fn account(id: u64) -> Key {
        Key::from_parts(1, id, 0)
    }

    /// A fresh file under the temp dir, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(contents: &str) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let name = format!("occam-partition-test-{}-{}.txt", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn modulo_keeps_an_account_and_its_signer_together() {
        let p = partitioner_by_spec("modulo", 4, 0).unwrap();
        for a in [0u64, 1, 7, 1_000_003] {
            let signer = a % 1024;
            assert_eq!(p.shard_of(&account(a)), (a % 4) as ShardId);
            assert_eq!(p.shard_of(&Key::from_parts(9, signer, 0)), p.shard_of(&account(a)));
        }
    }

    #[test]
    fn key_id_reads_the_a_field() {
        assert_eq!(key_id(&Key::from_parts(3, 0xDEAD_BEEF, 7)), 0xDEAD_BEEF);
        assert_eq!(key_id(&Key::from_parts3(6, 9, 5, 7)), 5);
    }

    #[test]
    fn hash_in_range_for_every_small_count() {
        for shards in 1..=16 {
            let p = HashPartitioner::new(shards).unwrap();
            assert_eq!(p.shards(), shards);
            let mut seen = vec![false; shards];
            for i in 0..10_000 {
                let s = p.shard_of(&account(i)) as usize;
                assert!(s < shards);
                seen[s] = true;
            }
            assert!(seen.iter().all(|&x| x), "{shards} shards: some shard got no key");
        }
        assert_eq!(HashPartitioner::new(1).unwrap().describe(), "hash");
    }

    #[test]
    fn hash_rejects_bad_counts() {
        assert!(matches!(HashPartitioner::new(0), Err(PartitionError::BadShardCount(0))));
        assert!(matches!(HashPartitioner::new(MAX_SHARDS + 1), Err(PartitionError::BadShardCount(_))));
        assert!(HashPartitioner::new(MAX_SHARDS).is_ok());
    }

    #[test]
    fn hash_balances_load() {
        const N: u64 = 100_000;
        for shards in [2usize, 4, 8] {
            let p = HashPartitioner::new(shards).unwrap();
            let mut load = vec![0u64; shards];
            for i in 0..N {
                load[p.shard_of(&account(i)) as usize] += 1;
            }
            let mean = N as f64 / shards as f64;
            for &l in &load {
                assert!((l as f64 - mean).abs() <= 0.05 * mean, "{shards} shards: {load:?}");
            }
        }
    }

    /// Guards against a shard choice correlated with the bits the engine uses: every shard's keys
    /// must cover all 64 state partitions and all of the low-bit hash buckets, evenly.
    #[test]
    fn hash_shards_spread_over_engine_partitions_and_buckets() {
        const N: u64 = 100_000;
        for shards in [2usize, 8] {
            let p = HashPartitioner::new(shards).unwrap();
            let mut parts = vec![[0u32; 64]; shards];
            let mut buckets = vec![[0u32; 64]; shards];
            for i in 0..N {
                let k = account(i);
                let s = p.shard_of(&k) as usize;
                parts[s][engine_partition(&k)] += 1;
                buckets[s][(k.hash64() & 63) as usize] += 1;
            }
            let expected = N as f64 / (shards * 64) as f64;
            for s in 0..shards {
                for (what, cells) in [("partition", &parts[s]), ("bucket", &buckets[s])] {
                    assert!(cells.iter().all(|&c| c > 0), "{shards} shards, shard {s}: an empty {what}: {cells:?}");
                    assert!(cells.iter().all(|&c| f64::from(c) > expected / 2.0), "{shards} shards, shard {s}: uneven {what}s: {cells:?}");
                }
            }
        }
    }

    #[test]
    fn range_bounds_are_half_open() {
        let p = RangePartitioner::new(vec![10, 20, 30]).unwrap();
        assert_eq!(p.shards(), 4);
        assert_eq!(p.describe(), "range:3 bounds");
        let cases = [(0, 0), (9, 0), (10, 1), (19, 1), (20, 2), (29, 2), (30, 3), (31, 3), (u64::MAX, 3)];
        for (id, shard) in cases {
            assert_eq!(p.shard_of(&account(id)), shard, "id {id}");
        }
        // The id field decides, whatever the tag and other fields.
        assert_eq!(p.shard_of(&Key::from_parts3(6, 99, 25, 1)), 2);

        let one = RangePartitioner::new(Vec::new()).unwrap();
        assert_eq!(one.shards(), 1);
        assert_eq!(one.shard_of(&account(u64::MAX)), 0);
    }

    #[test]
    fn range_even_splits() {
        let p = RangePartitioner::even(4, 1000).unwrap();
        assert_eq!(p.bounds(), &[250, 500, 750]);
        for id in 0..1000u64 {
            assert_eq!(p.shard_of(&account(id)), (id / 250) as ShardId);
        }
        assert_eq!(p.shard_of(&account(5000)), 3);

        let uneven = RangePartitioner::even(3, 10).unwrap();
        assert_eq!(uneven.bounds(), &[3, 6]);
        assert_eq!(RangePartitioner::even(1, 0).unwrap().shards(), 1);
        assert_eq!(RangePartitioner::even(2, u64::MAX).unwrap().bounds(), &[u64::MAX / 2]);
        assert_eq!(RangePartitioner::even(MAX_SHARDS, MAX_SHARDS as u64).unwrap().shards(), MAX_SHARDS);
    }

    #[test]
    fn range_rejects_bad_bounds() {
        assert!(matches!(RangePartitioner::new(vec![10, 10]), Err(PartitionError::BoundsNotIncreasing { index: 1, prev: 10, value: 10 })));
        assert!(matches!(RangePartitioner::new(vec![1, 20, 5]), Err(PartitionError::BoundsNotIncreasing { index: 2, prev: 20, value: 5 })));
        assert!(matches!(RangePartitioner::new((0..MAX_SHARDS as u64).collect()), Err(PartitionError::BadShardCount(_))));
        assert!(matches!(RangePartitioner::even(0, 10), Err(PartitionError::BadShardCount(0))));
        assert!(matches!(RangePartitioner::even(4, 3), Err(PartitionError::TooFewIds { ids: 3, shards: 4 })));
    }

    #[test]
    fn map_parses_comments_blanks_and_separators() {
        let text = "# pinned accounts\n\n17 0\n  42, 2   # trailing comment\n7,1\r\n\t99\t3\n   \n# end";
        let p = MapPartitioner::from_text(text, 4).unwrap();
        assert_eq!(p.entries(), 4);
        assert_eq!(p.shards(), 4);
        assert_eq!(p.describe(), "map:<text> (4 entries)");
        for (id, shard) in [(17, 0), (42, 2), (7, 1), (99, 3)] {
            assert_eq!(p.mapped(id), Some(shard));
            assert_eq!(p.shard_of(&account(id)), shard);
            assert_eq!(p.shard_of(&Key::from_parts(2, id, 0)), shard, "all tags of an id follow the map");
        }
        let hash = HashPartitioner::new(4).unwrap();
        for id in (1000..2000).chain([0, 1, u64::MAX]) {
            assert_eq!(p.mapped(id), None);
            assert_eq!(p.shard_of(&account(id)), hash.shard_of(&account(id)), "id {id} falls back to hash");
        }
        assert_eq!(MapPartitioner::from_text("", 2).unwrap().entries(), 0);
    }

    #[test]
    fn map_errors_name_the_line() {
        let line_of = |text: &str| match MapPartitioner::from_text(text, 4) {
            Err(PartitionError::MapLine { line, reason }) => (line, reason),
            other => panic!("{text:?}: expected MapLine, got {other:?}"),
        };
        let (line, reason) = line_of("1 0\n# c\nx 1\n");
        assert_eq!(line, 3);
        assert!(reason.contains("`x`"), "{reason}");
        assert_eq!(line_of("1 0\n2 -1\n").0, 2);
        assert_eq!(line_of("1 0\n+2 1\n").0, 2);
        assert_eq!(line_of("18446744073709551616 0").0, 1);
        let (line, reason) = line_of("1 0\n\n5\n");
        assert_eq!(line, 3);
        assert!(reason.contains("missing shard"), "{reason}");
        let (line, reason) = line_of("1 0\n2 1 3\n");
        assert_eq!(line, 2);
        assert!(reason.contains("extra field `3`"), "{reason}");
        assert_eq!(line_of(" , \n").0, 1);
        let long = format!("1 0\n{}1 0\n", " ".repeat(MAX_MAP_LINE_LEN));
        assert_eq!(line_of(&long).0, 2);

        assert!(matches!(
            MapPartitioner::from_text("1 0\n\n2 4\n", 4),
            Err(PartitionError::ShardOutOfRange { line: 3, shard: 4, shards: 4 })
        ));
        assert!(matches!(MapPartitioner::from_text("1 0\n2 1\n# x\n1 1\n", 4), Err(PartitionError::DuplicateId { line: 4, id: 1 })));
        assert!(matches!(MapPartitioner::from_text("1 0", 0), Err(PartitionError::BadShardCount(0))));
    }

    #[test]
    fn map_load_reads_a_file() {
        let file = TempFile::new("# test map\n5 1\n6,0\n\n1000000 2 # big\n");
        let p = MapPartitioner::load(&file.0, 3).unwrap();
        assert_eq!(p.entries(), 3);
        assert_eq!(p.shard_of(&account(5)), 1);
        assert_eq!(p.shard_of(&account(6)), 0);
        assert_eq!(p.shard_of(&account(1_000_000)), 2);
        assert_eq!(p.describe(), format!("map:{} (3 entries)", file.0.display()));
        assert!(format!("{p:?}").contains("entries: 3"));
    }

    #[test]
    fn map_load_errors() {
        let missing = std::env::temp_dir().join("occam-partition-test-no-such-file.txt");
        match MapPartitioner::load(&missing, 2) {
            Err(e @ PartitionError::Io { .. }) => {
                let PartitionError::Io { path, .. } = &e else { unreachable!() };
                assert_eq!(path, &missing);
                assert!(e.to_string().contains(&missing.display().to_string()), "{e}");
            }
            other => panic!("expected Io, got {other:?}"),
        }

        let bad = TempFile::new("1 0\n2 0\n3 9\n");
        assert!(matches!(MapPartitioner::load(&bad.0, 4), Err(PartitionError::ShardOutOfRange { line: 3, shard: 9, .. })));

        let crlf = TempFile::new("1 0\r\n2 1\r\n3\r\n");
        assert!(matches!(MapPartitioner::load(&crlf.0, 2), Err(PartitionError::MapLine { line: 3, .. })));

        let long = TempFile::new(&format!("1 0\n{}\n", "9".repeat(MAX_MAP_LINE_LEN * 10)));
        assert!(matches!(MapPartitioner::load(&long.0, 2), Err(PartitionError::MapLine { line: 2, .. })));

        let path = std::env::temp_dir().join(format!("occam-partition-test-{}-utf8.txt", std::process::id()));
        std::fs::write(&path, b"1 0\n\xff 1\n").unwrap();
        let result = MapPartitioner::load(&path, 2);
        let _ = std::fs::remove_file(&path);
        assert!(matches!(result, Err(PartitionError::MapLine { line: 2, .. })), "{result:?}");
    }

    #[test]
    fn specs_accepted() {
        let p = partitioner_by_spec("hash", 8, 0).unwrap();
        assert_eq!((p.shards(), p.describe().as_str()), (8, "hash"));

        let p = partitioner_by_spec("range", 4, 1000).unwrap();
        assert_eq!((p.shards(), p.describe().as_str()), (4, "range:3 bounds"));
        assert_eq!(p.shard_of(&account(499)), 1);
        assert_eq!(p.shard_of(&account(500)), 2);

        let p = partitioner_by_spec("range:10, 20,30", 4, 0).unwrap();
        assert_eq!(p.shards(), 4);
        assert_eq!(p.shard_of(&account(20)), 2);

        assert_eq!(partitioner_by_spec("range:", 1, 0).unwrap().shards(), 1);

        let file = TempFile::new("3 1\n");
        let p = partitioner_by_spec(&format!("map:{}", file.0.display()), 2, 0).unwrap();
        assert_eq!(p.shards(), 2);
        assert_eq!(p.shard_of(&account(3)), 1);
        assert!(p.describe().ends_with("(1 entries)"), "{}", p.describe());
    }

    #[test]
    fn specs_rejected() {
        let err = |spec: &str, shards: usize, ids: u64| partitioner_by_spec(spec, shards, ids).unwrap_err();
        for spec in ["", "Hash", "hash:", "hashx", " hash", "ranges", "map", "map:", "random"] {
            assert!(matches!(err(spec, 2, 100), PartitionError::UnknownSpec(s) if s == spec), "{spec:?}");
        }
        assert!(matches!(err("hash", 0, 0), PartitionError::BadShardCount(0)));
        assert!(matches!(err("hash", MAX_SHARDS + 1, 0), PartitionError::BadShardCount(_)));
        assert!(matches!(err("range", 4, 2), PartitionError::TooFewIds { ids: 2, shards: 4 }));
        assert!(matches!(err("range:10,20", 4, 0), PartitionError::WrongBoundCount { got: 2, need: 3 }));
        assert!(matches!(err("range:", 2, 0), PartitionError::WrongBoundCount { got: 0, need: 1 }));
        assert!(matches!(err("range:10,x,30", 4, 0), PartitionError::BadBound(b) if b == "x"));
        assert!(matches!(err("range:10,,30", 4, 0), PartitionError::BadBound(b) if b.is_empty()));
        assert!(matches!(err("range:10,-20,30", 4, 0), PartitionError::BadBound(_)));
        assert!(matches!(err("range:30,20,10", 4, 0), PartitionError::BoundsNotIncreasing { index: 1, .. }));
        let missing = std::env::temp_dir().join("occam-partition-test-no-such-file.txt");
        assert!(matches!(err(&format!("map:{}", missing.display()), 2, 0), PartitionError::Io { path, .. } if path == missing));
        assert!(matches!(err("map:/dev/null", 0, 0), PartitionError::BadShardCount(0)));
    }

    #[test]
    fn partitioners_are_send_sync_objects() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<HashPartitioner>();
        assert_send_sync::<RangePartitioner>();
        assert_send_sync::<MapPartitioner>();
        assert_send_sync::<Box<dyn Partitioner>>();
        assert_send_sync::<PartitionError>();
    }

    /// Every partitioner kind over `shards` shards, built from the proptest's inputs.
    fn all_kinds(shards: usize, ids: u64, bounds: &[u64], map: &[(u64, u32)]) -> Vec<Box<dyn Partitioner>> {
        let mut bounds: Vec<u64> = bounds.to_vec();
        bounds.sort_unstable();
        bounds.dedup();
        bounds.truncate(shards - 1);
        let mut seen = std::collections::HashSet::new();
        let text: String =
            map.iter().filter(|&&(id, _)| seen.insert(id)).map(|&(id, s)| format!("{id} {}\n", s as usize % shards)).collect();
        let mut kinds: Vec<Box<dyn Partitioner>> = vec![
            Box::new(HashPartitioner::new(shards).unwrap()),
            Box::new(RangePartitioner::even(shards, ids.max(shards as u64)).unwrap()),
            Box::new(RangePartitioner::new(bounds).unwrap()),
        ];
        kinds.push(Box::new(MapPartitioner::from_text(&text, shards).unwrap()));
        kinds
    }

    proptest! {
        #[test]
        fn every_partitioner_is_in_range_and_deterministic(
            keys in proptest::collection::vec(any::<[u8; 32]>(), 1..32),
            shards in 1usize..=64,
            ids in any::<u64>(),
            bounds in proptest::collection::vec(any::<u64>(), 0..64),
            map in proptest::collection::vec((0u64..64, any::<u32>()), 0..32),
        ) {
            let first = all_kinds(shards, ids, &bounds, &map);
            let second = all_kinds(shards, ids, &bounds, &map);
            for (a, b) in first.iter().zip(&second) {
                prop_assert!(a.shards() <= shards);
                for bytes in &keys {
                    let mut key = Key(*bytes);
                    let s = a.shard_of(&key);
                    prop_assert!((s as usize) < a.shards(), "{} gave {} of {}", a.describe(), s, a.shards());
                    prop_assert_eq!(s, a.shard_of(&key));
                    prop_assert_eq!(s, b.shard_of(&key));
                    // Also probe the ids the map lists.
                    key.0[16..24].copy_from_slice(&(bytes[0] as u64 % 64).to_le_bytes());
                    let s = a.shard_of(&key);
                    prop_assert!((s as usize) < a.shards());
                    prop_assert_eq!(s, b.shard_of(&key));
                }
            }
        }
    }
}
