//! BLS signature micro-benchmarks (blst, min_pk, proof-of-possession ciphersuite).
//!
//! ```text
//! cargo bench -p occam-engine --bench signatures
//! RUSTFLAGS="-C target-cpu=native" cargo bench -p occam-engine --bench signatures   # host CPU
//! ```
//!
//! - `sign`, `verify`: one signature of a ~70-byte transaction message.
//! - `batch_per_core/N`: a batch of N signatures on one verifier thread; criterion's
//!   throughput is signatures per second, so the time per signature per core is 1/throughput,
//!   to compare with `verify`.
//! - `batch_all_cores/N`: the same batches on one verifier thread per core.
//! - `aggregate_verify/one_thread/N`: one aggregate signature over N transactions (an
//!   aggregated block), on one thread; `aggregate_verify/all_cores/N`: the same on one verifier
//!   thread per core.
//!
//! Messages are distinct and keys come from a pool of 64, as in a block from many senders.

#![allow(missing_docs)] // criterion_group! generates an undocumented `pub fn`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use occam_engine::crypto::{BatchVerifier, PublicKey, SecretKey, Signature, SignedMessage};
use std::hint::black_box;
use std::time::Duration;

struct Signed {
    keys: Vec<PublicKey>,
    messages: Vec<Vec<u8>>,
    signatures: Vec<Signature>,
}

impl Signed {
    fn new(n: usize) -> Self {
        let sks: Vec<SecretKey> = (0..64u8).map(|i| SecretKey::from_seed(&[i + 1; 32]).expect("seed")).collect();
        let messages: Vec<Vec<u8>> =
            (0..n).map(|i| format!("occam/tx/v1 chain 1 signer {} nonce {i} transfer 1 -> 2 amount 3", i % 64).into_bytes()).collect();
        let signatures = messages.iter().enumerate().map(|(i, m)| sks[i % 64].sign(m)).collect();
        Signed { keys: (0..n).map(|i| sks[i % 64].public_key()).collect(), messages, signatures }
    }

    fn items(&self) -> Vec<SignedMessage<'_>> {
        (0..self.keys.len())
            .map(|i| SignedMessage { key: &self.keys[i], message: &self.messages[i], signature: &self.signatures[i] })
            .collect()
    }
}

fn single(c: &mut Criterion) {
    let sk = SecretKey::from_seed(&[9; 32]).expect("seed");
    let pk = sk.public_key();
    let msg = Signed::new(1).messages.remove(0);
    let sig = sk.sign(&msg);
    let mut g = c.benchmark_group("single");
    g.bench_function("sign", |b| b.iter(|| black_box(sk.sign(black_box(&msg)))));
    g.bench_function("verify", |b| b.iter(|| black_box(sig.verify(&pk, black_box(&msg))).expect("valid")));
    g.finish();
}

fn batches(c: &mut Criterion) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let one = BatchVerifier::new(1).expect("pool");
    let all = BatchVerifier::new(cores).expect("pool");
    for (name, verifier, sizes) in [("batch_per_core", &one, &[64usize, 256, 1024, 4096][..]), ("batch_all_cores", &all, &[1024, 4096][..])]
    {
        let mut g = c.benchmark_group(name);
        g.sample_size(10);
        for &n in sizes {
            let signed = Signed::new(n);
            let items = signed.items();
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::from_parameter(n), &items, |b, items| {
                b.iter(|| assert!(verifier.verify_all(black_box(items))))
            });
        }
        g.finish();
    }
}

fn aggregates(c: &mut Criterion) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let all = BatchVerifier::new(cores).expect("pool");
    let mut g = c.benchmark_group("aggregate_verify");
    g.sample_size(10);
    for n in [256usize, 1024] {
        let signed = Signed::new(n);
        let agg = Signature::aggregate(&signed.signatures).expect("aggregate");
        let keys: Vec<&PublicKey> = signed.keys.iter().collect();
        let messages: Vec<&[u8]> = signed.messages.iter().map(Vec::as_slice).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("one_thread", n), |b| {
            b.iter(|| agg.aggregate_verify(black_box(&keys), black_box(&messages)).expect("valid"))
        });
        g.bench_function(BenchmarkId::new("all_cores", n), |b| {
            b.iter(|| all.aggregate_verify(&agg, black_box(&keys), black_box(&messages)).expect("valid"))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = single, batches, aggregates
}
criterion_main!(benches);
