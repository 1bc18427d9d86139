//! Meta commits per second: one meta process (RocksDB, fsync on), many
//! concurrent small-object commits over QUIC with mutual TLS, the way S3
//! gateways and mounts commit small files. Prints commits per second and
//! latency percentiles; results in BENCHMARKS.md.
//!
//! `cargo bench --bench meta_commits [-- CONCURRENCY SECONDS CONNECTIONS
//! REPLICAS]` (64, 10, 1 and 1 by default). With REPLICAS 3 (or 5) meta
//! is a Raft group of that many replicas in this process, each with its
//! own RocksDB directories on the same disk, talking over loopback QUIC.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tessera_meta::MetaConfig;
use tessera_meta_client::MetaClient;
use tessera_net::{ClusterCa, Endpoint, Identity};
use tessera_proto::{MetaResponse, NewObject, Proposal};

// The allocator the `tessera` binary runs meta with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn identity(ca: &ClusterCa, name: &str) -> Identity {
    let (cert, key) = ca.issue(name).expect("issuing a certificate");
    Identity::from_pem(ca.cert_pem(), &cert, &key).expect("loading an identity")
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let concurrency: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(64);
    let seconds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let connections: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let replicas: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(run(
        concurrency,
        Duration::from_secs(seconds),
        connections,
        replicas,
    ));
}

/// A loopback address with a port free now.
fn free_addr() -> std::net::SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("a free port");
    s.local_addr().expect("its address")
}

async fn run(concurrency: usize, duration: Duration, connections: usize, replicas: usize) {
    let dir = tempfile::tempdir_in(std::env::var("TMPDIR").unwrap_or_else(|_| ".".into()))
        .expect("a temp dir");
    let ca = ClusterCa::generate("bench").expect("a CA");
    let server = identity(&ca, "meta");
    let addrs: Vec<std::net::SocketAddr> = (0..replicas.max(1)).map(|_| free_addr()).collect();
    let group: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    let mut metas = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let mut config = MetaConfig::new(*addr, dir.path().join(format!("meta-{i}")));
        if replicas > 1 {
            config.group = group.clone();
        }
        metas.push(
            tessera_meta::start(config, &server)
                .await
                .expect("starting meta"),
        );
    }
    // Each client its own endpoint and so its own QUIC connection, as
    // separate gateways would have.
    let clients: Vec<MetaClient> = (0..connections.max(1))
        .map(|_| {
            MetaClient::with_group(
                Endpoint::client(&identity(&ca, "client")).expect("an endpoint"),
                addrs.clone(),
                Duration::from_secs(1),
            )
        })
        .collect();
    let client = clients[0].clone();
    client
        .call(Proposal::CreateBucket {
            name: "bench".into(),
            policy: None,
        })
        .await
        .expect("creating the bucket");
    let stop = Arc::new(AtomicBool::new(false));
    let body = vec![7u8; 1024];
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let client = clients[t % clients.len()].clone();
            let (stop, body) = (stop.clone(), body.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    let resp = client
                        .call(Proposal::CommitObject {
                            bucket: "bench".into(),
                            key: format!("t{t}/{i}"),
                            object: NewObject::inline(&body),
                            write: None,
                            condition: Default::default(),
                        })
                        .await;
                    match resp {
                        Ok(MetaResponse::Object(_)) => latencies.push(at.elapsed()),
                        other => panic!("commit failed: {other:?}"),
                    }
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("a commit task"));
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "meta commits: {replicas} replica(s), {concurrency} concurrent, {:.1} s: {} commits, {:.0} commits/s, p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        elapsed.as_secs_f64(),
        all.len(),
        all.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        all[all.len() - 1],
    );
    for meta in metas {
        meta.shutdown().await;
    }
}
