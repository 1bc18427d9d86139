//! Erasure coding and hashing speed: both Reed-Solomon crates at ec:4+2,
//! 8+3 and 10+4 with 1 MiB fragments, BLAKE3, and MD5 (the ETag) one
//! message at a time against many at once in `Md5Lanes`. Throughput counts the data
//! bytes of a chunk (K MiB), so the numbers compare directly to disk and
//! network speeds. Results: BENCHMARKS.md.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngCore, SeedableRng};
use tessera_codec::{ChunkCodec, ErasureBackend, ReedSolomonErasure, ReedSolomonSimd};
use tessera_types::Policy;

const FRAGMENT: usize = 1 << 20;
const LAYOUTS: [(usize, usize); 3] = [(4, 2), (8, 3), (10, 4)];

fn backends() -> Vec<Arc<dyn ErasureBackend>> {
    vec![
        Arc::new(ReedSolomonErasure::default()),
        Arc::new(ReedSolomonSimd),
    ]
}

fn shards(k: usize) -> Vec<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    (0..k)
        .map(|_| {
            let mut s = vec![0u8; FRAGMENT];
            rng.fill_bytes(&mut s);
            s
        })
        .collect()
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for (k, m) in LAYOUTS {
        let data = shards(k);
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        g.throughput(Throughput::Bytes((k * FRAGMENT) as u64));
        for b in backends() {
            let mut parity = vec![vec![0u8; FRAGMENT]; m];
            g.bench_with_input(
                BenchmarkId::new(b.name(), format!("ec:{k}+{m}")),
                &refs,
                |bench, refs| bench.iter(|| b.encode(refs, &mut parity).unwrap()),
            );
        }
    }
    g.finish();
}

/// The worst case a reader meets: M data fragments lost, rebuilt from parity.
fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for (k, m) in LAYOUTS {
        let data = shards(k);
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        g.throughput(Throughput::Bytes((k * FRAGMENT) as u64));
        for b in backends() {
            let mut parity = vec![vec![0u8; FRAGMENT]; m];
            b.encode(&refs, &mut parity).unwrap();
            let full: Vec<Option<Vec<u8>>> = data
                .iter()
                .chain(parity.iter())
                .cloned()
                .map(Some)
                .collect();
            g.bench_with_input(
                BenchmarkId::new(b.name(), format!("ec:{k}+{m}")),
                &full,
                |bench, full| {
                    bench.iter_batched(
                        || {
                            let mut s = full.clone();
                            for lost in s.iter_mut().take(m) {
                                *lost = None;
                            }
                            s
                        },
                        |mut s| b.reconstruct_data(k, m, &mut s).unwrap(),
                        criterion::BatchSize::LargeInput,
                    )
                },
            );
        }
    }
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let mut g = c.benchmark_group("blake3");
    for size in [FRAGMENT, 4 * FRAGMENT] {
        let data = shards(1).remove(0).repeat(size / FRAGMENT);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{}MiB", size >> 20)),
            &data,
            |bench, d| bench.iter(|| blake3::hash(d)),
        );
    }
    g.finish();
}

/// MD5 of 4 MiB bodies: the `md-5` crate on one message, then `Md5Lanes`
/// hashing 1, 4 and 16 messages at once (as that many PUTs in flight would
/// feed it). Throughput counts all messages' bytes.
fn md5(c: &mut Criterion) {
    use md5::Digest;
    let mut g = c.benchmark_group("md5");
    let body = bytes::Bytes::from(shards(4).concat());
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("md-5/1", |bench| bench.iter(|| md5::Md5::digest(&body)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for (name, kernel) in [
        ("scalar", tessera_codec::Md5Kernel::Scalar),
        ("detected", tessera_codec::Md5Kernel::detect()),
    ] {
        let lanes = tessera_codec::Md5Lanes::start(kernel).unwrap();
        for n in [1usize, 4, 16] {
            g.throughput(Throughput::Bytes((n * body.len()) as u64));
            g.bench_function(format!("lanes-{name}/{n}"), |bench| {
                bench.iter(|| {
                    rt.block_on(async {
                        let mut streams = Vec::new();
                        for _ in 0..n {
                            let mut s = lanes.stream();
                            s.update(body.clone()).await.unwrap();
                            streams.push(s);
                        }
                        for s in streams {
                            s.finish().await.unwrap();
                        }
                    })
                })
            });
        }
    }
    g.finish();
}

/// Repair's CPU for one lost data fragment of a 4 MiB ec:4+2 chunk, from
/// the K fragments read: the old way (decode the chunk, encode it again,
/// which hashes the chunk and every fragment) against `rebuild_fragments`
/// and one hash of the rebuilt fragment. Throughput counts the rebuilt
/// fragment's bytes.
fn repair(c: &mut Criterion) {
    let mut g = c.benchmark_group("repair");
    let codec = ChunkCodec::default();
    let policy: Policy = "ec:4+2".parse().unwrap();
    let chunk = shards(4).concat();
    let enc = codec.encode(policy, chunk.clone().into()).unwrap();
    let read: Vec<Option<Vec<u8>>> = enc
        .fragments
        .iter()
        .enumerate()
        .map(|(i, f)| (i != 0 && i != 5).then(|| f.to_vec()))
        .collect();
    g.throughput(Throughput::Bytes(FRAGMENT as u64));
    g.bench_function("decode+encode", |bench| {
        bench.iter_batched(
            || read.clone(),
            |frags| {
                let pieces = codec
                    .decode(policy, chunk.len(), &enc.hashes, frags)
                    .unwrap();
                let again = codec.encode(policy, pieces.concat().into()).unwrap();
                assert_eq!(again.hashes[0], enc.hashes[0]);
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("rebuild_fragments", |bench| {
        bench.iter_batched(
            || read.clone(),
            |frags| {
                let out = codec
                    .rebuild_fragments(policy, chunk.len(), frags, &[0])
                    .unwrap();
                assert_eq!(tessera_codec::hash(&out[0].1), enc.hashes[0]);
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = encode, decode, hashing, md5, repair
}
criterion_main!(benches);
