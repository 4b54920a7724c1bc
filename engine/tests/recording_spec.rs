//! `RECORDING.md`, the normative spec of the recording format, checked against the engine: every
//! transaction kind has its section and every failure its row (so the spec cannot fall behind
//! the code), and the spec's formulas and worked example give what the engine computes. The
//! formulas are re-implemented here from the spec's text, not taken from the engine.

use occam_engine::exec::{BlockExecutor, SequentialExecutor};
use occam_engine::key::{hex_encode, Key};
use occam_engine::native::{burn, keys, Failure, NativeOutput, NativeTx, NativeVm, TxKind};
use occam_engine::state::CommittedState;
use occam_engine::value::Value;
use serde::de::value::{Error as DeError, MapDeserializer, StrDeserializer};
use serde::Deserialize;
use std::collections::BTreeSet;

fn spec() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../RECORDING.md")).expect("RECORDING.md at the repository root")
}

/// The part of the spec from the heading starting with `heading` to the next `## ` heading.
fn section<'a>(spec: &'a str, heading: &str) -> &'a str {
    let start = spec.find(&format!("\n{heading}")).unwrap_or_else(|| panic!("RECORDING.md has no heading {heading:?}")) + 1;
    let rest = &spec[start..];
    let end = rest[1..].find("\n## ").map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

/// The names serde accepts, read from the error it gives for a name that no variant has
/// ("unknown variant `?`, expected one of `a`, `b`, …"): the names a recording uses, taken
/// from the serde derives themselves, so a new variant shows up here without a list to update.
fn accepted_names(err: DeError) -> BTreeSet<String> {
    let msg = err.to_string();
    let (_, list) = msg.split_once("expected one of ").unwrap_or_else(|| panic!("unexpected serde message: {msg}"));
    list.split(", ").map(|s| s.trim_matches('`').to_string()).collect()
}

/// Every `kind` a transaction of a recording can have.
fn kind_names() -> BTreeSet<String> {
    let de = MapDeserializer::<_, DeError>::new([("kind", "?")].into_iter());
    let names = accepted_names(TxKind::deserialize(de).expect_err("no kind is named ?"));
    assert!(names.contains("transfer") && names.contains("receivable-redeem"), "{names:?}");
    names
}

/// Every failure name an output can have.
fn failure_names() -> BTreeSet<String> {
    let names = accepted_names(Failure::deserialize(StrDeserializer::<DeError>::new("?")).expect_err("no failure is named ?"));
    assert!(names.contains("unknown-account") && names.contains("insufficient-funds"), "{names:?}");
    names
}

/// Compares what the code has with what the spec lists, naming both differences.
fn assert_listed(what: &str, code: &BTreeSet<String>, spec: &BTreeSet<String>) {
    let missing: Vec<_> = code.difference(spec).collect();
    let stale: Vec<_> = spec.difference(code).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "RECORDING.md is out of date: {what} without an entry there: {missing:?}; entries for no {what}: {stale:?}"
    );
}

#[test]
fn every_transaction_kind_has_a_section_of_its_own() {
    let spec = spec();
    // "### `transfer`": one heading per kind in section 9.
    let headings: BTreeSet<String> =
        section(&spec, "## 9.").lines().filter_map(|l| l.strip_prefix("### `")?.strip_suffix('`')).map(String::from).collect();
    assert_listed("transaction kinds", &kind_names(), &headings);
}

/// Section 13's table: the fields each kind acts for are the ones `TxKind::authorities` names.
#[test]
fn the_owner_table_is_what_the_engine_checks() {
    let spec = spec();
    let table: std::collections::BTreeMap<String, String> = section(&spec, "## 13.")
        .lines()
        .filter_map(|l| {
            let (kind, rest) = l.strip_prefix("| `")?.split_once("` | ")?;
            Some((kind.to_string(), rest.trim_end_matches(" |").replace('`', "")))
        })
        .collect();
    // Every field a distinct value, so an authority names its field.
    let kinds = TxKind::examples();
    assert_eq!(kinds.iter().map(|k| k.name().to_string()).collect::<BTreeSet<_>>(), kind_names(), "an example of every kind");
    for kind in &kinds {
        let fields = serde_json::to_value(kind).unwrap();
        let name_of = |v: u64| fields.as_object().unwrap().iter().find(|(k, f)| *k != "kind" && f.as_u64() == Some(v)).unwrap().0.clone();
        let names: Vec<String> = kind.authorities().map(name_of).collect();
        let want = if names.is_empty() { "—".to_string() } else { names.join(", ") };
        assert_eq!(table.get(kind.name()), Some(&want), "RECORDING.md section 13, {}", kind.name());
    }
}

#[test]
fn every_failure_has_a_row_in_the_failure_table() {
    let spec = spec();
    // "| `unknown-account` | meaning |": one row per failure in section 10.
    let rows: BTreeSet<String> =
        section(&spec, "## 10.").lines().filter_map(|l| Some(l.strip_prefix("| `")?.split_once('`')?.0)).map(String::from).collect();
    assert_listed("failures", &failure_names(), &rows);
}

/// `K3(tag, sub, a, b)` of the spec's section 4.
fn k3(tag: u8, sub: u64, a: u64, b: u64) -> Key {
    let mut k = [0u8; 32];
    k[0] = tag;
    k[8..16].copy_from_slice(&sub.to_le_bytes());
    k[16..24].copy_from_slice(&a.to_le_bytes());
    k[24..32].copy_from_slice(&b.to_le_bytes());
    Key(k)
}

/// `leaf(key, value)` of section 11.
fn leaf(key: &Key, value: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&key.0);
    h.update(&(value.len() as u32).to_le_bytes());
    h.update(value);
    *h.finalize().as_bytes()
}

/// `S` of section 11: the leaves as little-endian 256-bit integers, summed modulo 2^256.
fn sum_of_leaves(state: &CommittedState) -> [u8; 32] {
    let mut sum = [0u8; 32];
    for (k, v) in state.sorted_entries() {
        let mut carry = 0u16;
        for (s, l) in sum.iter_mut().zip(leaf(&k, v.as_bytes())) {
            let t = *s as u16 + l as u16 + carry;
            *s = t as u8;
            carry = t >> 8;
        }
    }
    sum
}

/// The root of section 11, from the spec's formula.
fn spec_root(state: &CommittedState) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"occam/state-root/v1");
    h.update(&sum_of_leaves(state));
    h.finalize().to_hex().to_string()
}

fn run(state: &mut CommittedState, txs: &[NativeTx]) -> Vec<NativeOutput> {
    SequentialExecutor::new().execute_and_commit(&NativeVm, state, txs).expect("block runs").outputs
}

/// Section 12, number by number: the spec shows what the engine computes, and the spec's
/// formulas arrive at the same roots as the engine.
#[test]
fn the_worked_example_is_what_the_engine_computes() {
    let spec = spec();
    let example = section(&spec, "## 12.");
    let shows = |hex: &str| assert!(example.contains(hex), "section 12 of RECORDING.md should show {hex}");
    let mut state = CommittedState::from_entries(NativeVm::genesis_accounts(4, 1_000_000_000));

    shows(&keys::account(2).to_hex());
    shows(&k3(1, 0, 2, 0).to_hex());
    shows(&hex_encode(&1_000_000_000u64.to_le_bytes()));
    shows(&hex_encode(&leaf(&keys::account(0), &1_000_000_000u64.to_le_bytes())));
    shows(&hex_encode(&sum_of_leaves(&state)));
    assert_eq!(spec_root(&state), state.root().to_hex());
    shows(&state.root().to_hex());

    let transfer = |from, to, amount| NativeTx::new(TxKind::Transfer { from, to, amount });
    let outputs = run(&mut state, &[transfer(0, 2, 29), transfer(3, 2, 27), transfer(1, 1, 49)]);
    assert_eq!(outputs, vec![Ok(999_999_971), Ok(999_999_973), Ok(999_999_951)]);
    for (k, v) in state.sorted_entries() {
        shows(&format!("{{\"key\":\"{}\",\"value\":\"{}\"}}", k.to_hex(), hex_encode(v.as_bytes())));
        shows(&hex_encode(&leaf(&k, v.as_bytes())));
    }
    shows(&hex_encode(&sum_of_leaves(&state)));
    assert_eq!(spec_root(&state), state.root().to_hex());
    shows(&state.root().to_hex());

    // The failed transaction writes its work digest, and nothing else.
    let before = state.sorted_entries();
    let failing = NativeTx { kind: TxKind::Transfer { from: 7, to: 0, amount: 5 }, work_rounds: 2 };
    assert_eq!(run(&mut state, &[failing]), vec![Err(Failure::UnknownAccount)]);
    let mut buf = [0u8; 32];
    buf[..8].copy_from_slice(&7u64.to_le_bytes());
    for _ in 0..2 {
        buf = *blake3::hash(&buf).as_bytes();
    }
    assert_eq!(buf, burn(2, 7));
    shows(&hex_encode(&buf));
    let work = (k3(12, 0, 7, 0), Value::from_slice(&buf[..8]));
    assert_eq!(state.sorted_entries(), before.into_iter().chain([work.clone()]).collect::<Vec<_>>());
    shows(&format!("{{\"key\":\"{}\",\"value\":\"{}\"}}", work.0.to_hex(), hex_encode(work.1.as_bytes())));
    shows(&hex_encode(&leaf(&work.0, work.1.as_bytes())));
    assert_eq!(spec_root(&state), state.root().to_hex());
    shows(&state.root().to_hex());
}

/// The key layouts, `kv_value`, the history chain and the empty book of sections 4, 5 and 9.
#[test]
fn the_spec_formulas_are_what_the_engine_computes() {
    for (id, seed) in [(0u64, 0u64), (1, 0), (77, 0), (u64::MAX, 0)] {
        let mut x = id ^ seed.rotate_left(17) ^ 0x5851_F42D_4C95_7F2D;
        let mut value = Vec::new();
        for _ in 0..4 {
            x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
            value.extend_from_slice(&x.to_le_bytes());
        }
        assert_eq!(NativeVm::kv_record(id), (k3(4, 0, id, 0), Value::from_slice(&value)));
    }
    assert_eq!(keys::allowance(3, 4, 5), k3(6, 3, 4, 5), "token in sub, owner in a, spender in b");
    assert_eq!(keys::amm_balance(3, 1, 9), k3(8, 1, 3, 9));
    assert_eq!(keys::order(2, 9), k3(22, 0, 2, 9));
    assert_eq!(keys::document(5, 1), k3(18, 0, 5, 1));
    assert_eq!(NativeVm::market(4), (k3(21, 0, 4, 0), Value::from_slice(&[0u8; 81 * 8])));

    // item-register appends [1, owner, event] to an empty history.
    let mut state = CommittedState::new();
    let out = run(&mut state, &[NativeTx::new(TxKind::ItemRegister { item: 7, owner: 3, event: 9 })]);
    assert_eq!(out, vec![Ok(1)]);
    let mut h = blake3::Hasher::new();
    h.update(&[0u8; 32]);
    for w in [1u64, 3, 9] {
        h.update(&w.to_le_bytes());
    }
    let mut history = 1u64.to_le_bytes().to_vec();
    history.extend_from_slice(h.finalize().as_bytes());
    assert_eq!(state.get(&k3(16, 0, 7, 0)), Some(&Value::from_slice(&history)));
    assert_eq!(state.get(&k3(17, 0, 7, 0)), Some(&Value::from_u64(3)));
}
