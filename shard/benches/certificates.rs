//! Certificate verification against a single signature verification.
//!
//! - `single_verify`: one `Signature::verify` of a vote, the baseline.
//! - `certificate_verify/N`: `Certificate::verify` of a full-quorum certificate over a set of N.
//! - `collector_to_quorum/64`: a fresh `QuorumCollector` fed the 43 votes that complete it.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, SamplingMode};
use occam_engine::crypto::SecretKey;
use occam_shard::{Certificate, QuorumCollector, SignedVote, ValidatorSet, Vote};
use std::hint::black_box;
use std::time::Duration;

fn secret(i: u32) -> SecretKey {
    let mut seed = [0xa5u8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    SecretKey::from_seed(&seed).expect("32 bytes of key material")
}

fn validators(n: u32) -> (Vec<SecretKey>, ValidatorSet) {
    let keys: Vec<SecretKey> = (0..n).map(secret).collect();
    let members: Vec<_> = keys.iter().map(|k| (k.public_key(), k.prove_possession())).collect();
    let set = ValidatorSet::new(&members).expect("valid members");
    (keys, set)
}

const VOTE: Vote = Vote { chain_id: 1, shard: 1, epoch: 0, height: 42, block_hash: [7; 32], state_root: [9; 32] };

/// The votes of validators `0..quorum`.
fn quorum_votes(keys: &[SecretKey], set: &ValidatorSet) -> Vec<SignedVote> {
    (0..set.quorum() as u32).map(|i| SignedVote::sign(VOTE, i, &keys[i as usize])).collect()
}

fn benches(c: &mut Criterion) {
    let key = secret(0);
    let public = key.public_key();
    let message = VOTE.signing_bytes();
    let signature = key.sign(&message);
    c.bench_function("single_verify", |b| b.iter(|| black_box(&signature).verify(black_box(&public), black_box(&message)).unwrap()));

    let mut group = c.benchmark_group("certificate_verify");
    for n in [4u32, 16, 64, 256] {
        let (keys, set) = validators(n);
        let certificate = Certificate::from_votes(&set, &quorum_votes(&keys, &set), None).expect("a quorum of valid votes");
        certificate.verify(&set).expect("a valid certificate");
        group.bench_with_input(BenchmarkId::from_parameter(n), &certificate, |b, certificate| {
            b.iter(|| black_box(certificate).verify(black_box(&set)).unwrap())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("collector_to_quorum");
    // About 43 signature verifications per iteration: flat sampling keeps the run short.
    group.sampling_mode(SamplingMode::Flat);
    let (keys, set) = validators(64);
    let votes = quorum_votes(&keys, &set);
    group.bench_function(BenchmarkId::from_parameter(64), |b| {
        b.iter_batched(
            || QuorumCollector::new(set.clone(), VOTE),
            |mut collector| {
                let mut certificate = None;
                for v in &votes {
                    certificate = collector.add(*v).unwrap();
                }
                certificate.expect("the last vote completes the quorum")
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = certificates;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(certificates);
