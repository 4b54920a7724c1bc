//! Transaction signers: the keys that own a cluster's accounts, and where they live.
//!
//! A cluster has `signers` signing keys (`cluster.toml`). Genesis account `id` belongs to key
//! `id % signers` (its owner record holds that key, see
//! [`occam_engine::native::signed::round_robin_owners`]), and only a transaction signed by
//! that key can spend from it. Each key has [`SIGNER_LANES`] signer numbers, key `k` being
//! numbers `k + lane × signers`, each with its own nonces: lane 0 for transactions a shard's
//! leader takes, lane 1 for cross-shard ones, which the coordinator takes, so neither path's
//! transactions can overtake the other's and spend a nonce out of turn.
//!
//! The keys come in one of two modes:
//!
//! - **Keys** (`occam cluster init`, the default): fresh random keys. Their public keys, each
//!   with its proof of possession, are in `signers.pub`, which `cluster.toml` names together
//!   with its blake3 digest (`signer_keys`); their secret keys are in `signers.key`, written
//!   with mode 0600, which `occam load` reads and nodes never need. Whoever lacks
//!   `signers.key` cannot spend from any account.
//! - **Bench** (`occam cluster init --bench-signers`): the keys derive from `signer_seed` in
//!   `cluster.toml` ([`occam_engine::crypto::deterministic_signers`]). Anyone who can read the
//!   cluster file can sign as any signer and spend every account: a convenience for
//!   benchmarks and tests, never for a chain.

use super::{hex, invalid, read_toml, write_file, ClusterConfig, ConfigError};
use occam_engine::crypto::{deterministic_signers, KeyRegistry, SecretKey};
use occam_engine::key::hex_encode;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Signer numbers per signing key (see the module documentation).
pub const SIGNER_LANES: u32 = 2;
/// The most signing keys a cluster may have.
pub const MAX_SIGNERS: u32 = 1 << 20;
/// The public key file `occam cluster init` writes next to `cluster.toml`.
pub const PUBLIC_FILE: &str = "signers.pub";
/// The secret key file `occam cluster init` writes next to `cluster.toml` (mode 0600).
pub const SECRET_FILE: &str = "signers.key";

/// Where a cluster's signer public keys are: `cluster.toml`'s `signer_keys`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SignerKeysRef {
    /// The public key file, relative to the cluster file.
    pub file: PathBuf,
    /// The blake3 digest of its bytes (hex): a node refuses a file that differs.
    pub blake3: String,
}

/// One signer's public key and its proof of possession (hex).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PublicSigner {
    /// BLS public key, compressed (hex).
    pub key: String,
    /// Its proof of possession (hex).
    pub pop: String,
}

/// `signers.pub`: the signers' public keys, in key order.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PublicSignerFile {
    /// The chain the keys sign for.
    pub chain_id: u64,
    /// Key `k` at index `k`.
    pub signers: Vec<PublicSigner>,
}

/// `signers.key`: the signers' secret keys (hex), in key order. Mode 0600.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSignerFile {
    /// The chain the keys sign for.
    pub chain_id: u64,
    /// Key `k` at index `k`.
    pub secrets: Vec<String>,
}

/// The signer number of `key`'s `lane` in a cluster of `signers` keys.
pub fn signer_number(signers: u32, key: u32, lane: u32) -> u32 {
    key + lane * signers
}

/// The key whose transactions may spend genesis account `account`.
pub fn owner_of(signers: u32, account: u64) -> u32 {
    (account % u64::from(signers)) as u32
}

/// `n` fresh random keys for chain `chain_id`: the public file and the secret file.
pub fn generate(n: u32, chain_id: u64) -> (PublicSignerFile, SecretSignerFile) {
    use rayon::prelude::*;
    let keys: Vec<SecretKey> = (0..n).map(|_| SecretKey::random(&mut rand::rngs::OsRng)).collect();
    let signers = keys
        .par_iter()
        .map(|k| PublicSigner { key: hex_encode(&k.public_key().to_bytes()), pop: hex_encode(&k.prove_possession().to_bytes()) })
        .collect();
    let secrets = keys.iter().map(|k| hex_encode(&k.to_bytes())).collect();
    (PublicSignerFile { chain_id, signers }, SecretSignerFile { chain_id, secrets })
}

/// The reference a cluster file keeps to `public` once [`write_files`] has written it.
pub fn reference(public: &PublicSignerFile) -> SignerKeysRef {
    SignerKeysRef { file: PUBLIC_FILE.into(), blake3: blake3::hash(super::to_toml(public).as_bytes()).to_hex().to_string() }
}

/// Writes `signers.pub` and `signers.key` (mode 0600) into `dir`.
pub fn write_files(dir: &Path, public: &PublicSignerFile, secret: &SecretSignerFile) -> Result<(), ConfigError> {
    write_file(&dir.join(PUBLIC_FILE), &super::to_toml(public), false)?;
    write_file(&dir.join(SECRET_FILE), &super::to_toml(secret), true)
}

fn base(cluster_file: Option<&Path>) -> Result<&Path, ConfigError> {
    let file = cluster_file
        .ok_or_else(|| invalid("the cluster's signer keys are in files named relative to cluster.toml, and no cluster file was given"))?;
    Ok(file.parent().unwrap_or(Path::new(".")))
}

/// The cluster's signer registry: every key under each of its [`SIGNER_LANES`] numbers
/// (numbers `0..signers × SIGNER_LANES`). In keys mode it reads the public file named by the
/// cluster file at `cluster_file`, and refuses one whose digest, chain or count differs, or
/// a key without a valid proof of possession.
pub fn registry(cluster: &ClusterConfig, cluster_file: Option<&Path>) -> Result<Arc<KeyRegistry>, ConfigError> {
    let mut registry = match (&cluster.signer_keys, cluster.signer_seed) {
        (Some(r), _) => public_registry(cluster, &base(cluster_file)?.join(&r.file), &r.blake3)?,
        (None, Some(seed)) => {
            deterministic_signers(cluster.signers, seed).map_err(|e| invalid(format!("deriving the bench signers: {e}")))?.1
        }
        (None, None) => return Err(invalid("the cluster file names no signers: neither signer_keys nor signer_seed")),
    };
    for lane in 1..SIGNER_LANES {
        for k in 0..cluster.signers {
            let n = registry.register_again(k).map_err(|e| invalid(format!("signer lanes: {e}")))?;
            debug_assert_eq!(n, signer_number(cluster.signers, k, lane));
        }
    }
    Ok(Arc::new(registry))
}

/// Refuses a key file of another chain, or with another number of keys than the cluster's.
fn check_file(cluster: &ClusterConfig, path: &Path, chain_id: u64, keys: usize) -> Result<(), ConfigError> {
    if chain_id == cluster.chain_id && keys == cluster.signers as usize {
        return Ok(());
    }
    Err(invalid(format!(
        "{}: {keys} keys for chain {chain_id}, but the cluster file says {} keys for chain {}",
        path.display(),
        cluster.signers,
        cluster.chain_id
    )))
}

fn public_registry(cluster: &ClusterConfig, path: &Path, digest: &str) -> Result<KeyRegistry, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io { path: path.into(), error })?;
    let found = blake3::hash(text.as_bytes()).to_hex().to_string();
    if !found.eq_ignore_ascii_case(digest) {
        return Err(invalid(format!(
            "{}: blake3 {found}, but the cluster file expects {digest}: not this cluster's signer keys",
            path.display()
        )));
    }
    let file: PublicSignerFile =
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source: Box::new(source) })?;
    check_file(cluster, path, file.chain_id, file.signers.len())?;
    let mut registry = KeyRegistry::new();
    for (i, s) in file.signers.iter().enumerate() {
        registry
            .register_bytes(&hex(&s.key, "a signer key")?, &hex(&s.pop, "a signer proof of possession")?)
            .map_err(|e| invalid(format!("{}: signer {i}: {e}", path.display())))?;
    }
    Ok(registry)
}

/// The secret key of every signing key (key `k` at index `k`), checked against `registry`.
/// In keys mode they come from `secret_file` (default: `signers.key` next to the cluster
/// file); in bench mode they derive from the seed, and `secret_file` must be absent.
pub fn secret_keys(
    cluster: &ClusterConfig,
    registry: &KeyRegistry,
    cluster_file: Option<&Path>,
    secret_file: Option<&Path>,
) -> Result<Vec<SecretKey>, ConfigError> {
    let keys = match (&cluster.signer_keys, cluster.signer_seed) {
        (None, Some(seed)) => {
            if let Some(p) = secret_file {
                return Err(invalid(format!(
                    "{}: this cluster's signers are bench signers (signer_seed); it has no secret key file",
                    p.display()
                )));
            }
            deterministic_signers(cluster.signers, seed).map_err(|e| invalid(format!("deriving the bench signers: {e}")))?.0
        }
        (Some(_), _) => {
            let path = match secret_file {
                Some(p) => p.to_path_buf(),
                None => base(cluster_file)?.join(SECRET_FILE),
            };
            let file: SecretSignerFile = read_toml(&path)?;
            check_file(cluster, &path, file.chain_id, file.secrets.len())?;
            file.secrets
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    SecretKey::from_bytes(&hex(s, "a signer secret key")?).map_err(|e| invalid(format!("{}: key {i}: {e}", path.display())))
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        (None, None) => return Err(invalid("the cluster file names no signers: neither signer_keys nor signer_seed")),
    };
    for (k, key) in keys.iter().enumerate() {
        if registry.key_bytes(k as u32) != Some(&key.public_key().to_bytes()) {
            return Err(invalid(format!("signer secret key {k} does not match the cluster's public key {k}")));
        }
    }
    Ok(keys)
}
