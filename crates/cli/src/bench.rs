//! `tessera bench`: load through the S3 API with the AWS SDK for Rust, as an
//! application would drive it. Workers PUT objects of one size for a while,
//! then GET them back for a while; each phase reports operations and bytes
//! per second, latency percentiles, and (with `--cpu-of`) the CPU time each
//! named server process spent per GiB moved.
//!
//! Every object gets its own bytes by default: a content-addressed store
//! would otherwise write one body once and look faster than it is.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::units::{human_bytes, parse_duration, parse_size};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The S3 endpoint, for example http://127.0.0.1:9000.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint: String,
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    pub access_key: String,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub secret_key: String,
    /// Region to sign for.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Bucket to use (created if missing).
    #[arg(long, default_value = "tessera-bench")]
    pub bucket: String,
    /// Bytes per object (4KiB, 1MiB, 64MiB, ...).
    #[arg(long, value_parser = parse_size, default_value = "1MiB")]
    pub size: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// How long each phase (PUT, then GET) runs.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub duration: Duration,
    /// Leave the objects in the bucket afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// PUT the same bytes for every object (by default each object's body is
    /// distinct in every 4 KiB block, so no store can skip a write by
    /// recognising the content).
    #[arg(long)]
    pub same_body: bool,
    /// Report the CPU seconds process PID spent in each phase, under NAME
    /// (NAME=PID; repeat for each process, for example the gateway, meta and
    /// each node). Read from /proc/PID/stat (user + system time).
    #[arg(long = "cpu-of", value_parser = parse_named_pid)]
    pub cpu_of: Vec<(String, u32)>,
}

fn parse_named_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PID, got {s:?}"))?;
    let pid = pid
        .parse::<u32>()
        .map_err(|_| format!("{pid:?} is not a process id"))?;
    Ok((name.to_string(), pid))
}

/// Distance in bytes between the stamps that make each object's body
/// distinct: 4 KiB, the smallest block any store deduplicates by.
const STAMP_EVERY: usize = 4096;

/// `base` with the object number written into the first 8 bytes of every
/// 4 KiB block, so no two objects share a block.
fn distinct_body(base: &[u8], object: u64) -> bytes::Bytes {
    let mut body = base.to_vec();
    let stamp = object.to_le_bytes();
    for block in body.chunks_mut(STAMP_EVERY) {
        let n = block.len().min(stamp.len());
        for (b, s) in block[..n].iter_mut().zip(stamp) {
            *b ^= s;
        }
    }
    body.into()
}

/// `len` random bytes: bodies no store can compress or deduplicate.
pub(crate) fn random_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::Rng::fill(&mut rand::thread_rng(), &mut v[..]);
    v
}

/// CPU time (user + system) a process has used so far, in seconds, from
/// /proc/PID/stat (proc(5): fields 14 and 15, in clock ticks).
pub(crate) fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from its closing ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a constant of the running system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) / ticks as f64)
}

/// CPU time of this process (the benchmark's client) so far, in seconds.
pub(crate) fn own_cpu_seconds() -> Option<f64> {
    process_cpu_seconds(std::process::id())
}

/// The CPU seconds each process spent in one phase.
#[derive(Debug, Serialize)]
pub struct ProcessCpu {
    pub name: String,
    pub cpu_s: f64,
    /// CPU seconds per GiB of object bytes moved in the phase.
    pub cpu_s_per_gib: f64,
}

struct CpuMeter {
    procs: Vec<(String, u32, Option<f64>)>,
}

impl CpuMeter {
    fn start(named: &[(String, u32)]) -> Self {
        let mut procs: Vec<(String, u32, Option<f64>)> = named
            .iter()
            .map(|(n, p)| (n.clone(), *p, process_cpu_seconds(*p)))
            .collect();
        procs.push(("client".into(), std::process::id(), own_cpu_seconds()));
        CpuMeter { procs }
    }

    fn finish(self, bytes: u64) -> Vec<ProcessCpu> {
        let gib = bytes as f64 / (1u64 << 30) as f64;
        self.procs
            .into_iter()
            .filter_map(|(name, pid, before)| {
                let used = process_cpu_seconds(pid)? - before?;
                Some(ProcessCpu {
                    name,
                    cpu_s: used,
                    cpu_s_per_gib: if gib > 0.0 { used / gib } else { 0.0 },
                })
            })
            .collect()
    }
}

/// One phase's figures.
#[derive(Debug, Serialize)]
pub struct PhaseResult {
    pub op: &'static str,
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub ops_per_s: f64,
    pub mib_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// CPU seconds per process in this phase: the `--cpu-of` processes and
    /// the client, with their sum over the servers as `servers`.
    pub cpu: Vec<ProcessCpu>,
}

#[derive(Debug, Serialize)]
struct BenchResult {
    endpoint: String,
    object_size: u64,
    concurrency: usize,
    duration_s: f64,
    phases: Vec<PhaseResult>,
}

/// An SDK client for an S3 endpoint, path style, with static credentials
/// (TLS through rustls with ring, like the rest of Tessera).
pub fn s3_client(endpoint: &str, region: &str, access_key: &str, secret_key: &str) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(region.to_string()))
        .credentials_provider(Credentials::new(
            access_key, secret_key, None, None, "tessera",
        ))
        .force_path_style(true)
        .http_client(http)
        .build();
    Client::from_conf(config)
}

pub async fn run(args: BenchArgs) -> Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let client = s3_client(
        &args.endpoint,
        &args.region,
        &args.access_key,
        &args.secret_key,
    );
    match client.head_bucket().bucket(&args.bucket).send().await {
        Ok(_) => {}
        Err(_) => {
            client
                .create_bucket()
                .bucket(&args.bucket)
                .send()
                .await
                .with_context(|| format!("creating bucket {} at {}", args.bucket, args.endpoint))?;
        }
    }
    let body = bytes::Bytes::from(random_bytes(args.size as usize));
    let same_body = args.same_body;
    let prefix = format!("bench-{:08x}/", rand::random::<u32>());

    let put = {
        let (client, body, prefix) = (client.clone(), body.clone(), prefix.clone());
        let bucket = args.bucket.clone();
        phase(&args, "PUT", move |worker, n| {
            let client = client.clone();
            let body = if same_body {
                body.clone()
            } else {
                distinct_body(&body, ((worker as u64) << 40) | n)
            };
            let key = format!("{prefix}{worker:04}/{n:08}");
            let bucket = bucket.clone();
            async move {
                client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(ByteStream::from(body))
                    .send()
                    .await?;
                Ok::<(), anyhow::Error>(())
            }
        })
        .await?
    };

    let get = {
        let (client, prefix) = (client.clone(), prefix.clone());
        // Each worker reads back what it wrote, in a loop.
        let per_worker: Vec<u64> = per_worker_counts(&client, &args.bucket, &prefix).await?;
        let per_worker = Arc::new(per_worker);
        let size = args.size;
        let bucket = args.bucket.clone();
        phase(&args, "GET", move |worker, n| {
            let (client, per_worker) = (client.clone(), per_worker.clone());
            let bucket = bucket.clone();
            let prefix = prefix.clone();
            async move {
                let count = per_worker.get(worker).copied().unwrap_or(0);
                if count == 0 {
                    bail!("worker {worker} wrote nothing to read back");
                }
                let key = format!("{prefix}{worker:04}/{:08}", n % count);
                let out = client.get_object().bucket(bucket).key(key).send().await?;
                let mut body = out.body;
                let mut got = 0u64;
                while let Some(bytes) = body.try_next().await? {
                    got += bytes.len() as u64;
                }
                if got != size {
                    bail!("GET returned {got} bytes, not {size}");
                }
                Ok(())
            }
        })
        .await?
    };

    if !args.keep {
        cleanup(&client, &args.bucket, &prefix).await?;
    }
    let result = BenchResult {
        endpoint: args.endpoint.clone(),
        object_size: args.size,
        concurrency: args.concurrency,
        duration_s: args.duration.as_secs_f64(),
        phases: vec![put, get],
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!(
            "{} objects of {}, {} in flight, {:.0} s per phase, against {}",
            result.phases[0].ops,
            human_bytes(args.size),
            args.concurrency,
            result.duration_s,
            args.endpoint
        );
        println!(
            "{:<4} {:>9} {:>10} {:>10} {:>9} {:>9} {:>9} {:>7}",
            "op", "ops", "ops/s", "MiB/s", "p50 ms", "p99 ms", "max ms", "errors"
        );
        for p in &result.phases {
            println!(
                "{:<4} {:>9} {:>10.1} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>7}",
                p.op, p.ops, p.ops_per_s, p.mib_per_s, p.p50_ms, p.p99_ms, p.max_ms, p.errors
            );
        }
        for p in &result.phases {
            if p.cpu.is_empty() {
                continue;
            }
            let per: Vec<String> = p
                .cpu
                .iter()
                .map(|c| format!("{} {:.2}", c.name, c.cpu_s_per_gib))
                .collect();
            println!("{} CPU s/GiB: {}", p.op, per.join(", "));
        }
    }
    if result.phases.iter().any(|p| p.ops == 0) {
        bail!("a phase completed no operations");
    }
    Ok(())
}

/// Runs `op(worker, n)` on `--concurrency` workers for `--duration`.
async fn phase<F, Fut>(args: &BenchArgs, name: &'static str, op: F) -> Result<PhaseResult>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let cpu = CpuMeter::start(&args.cpu_of);
    let started = Instant::now();
    let deadline = started + args.duration;
    let done = Arc::new(AtomicU64::new(0));
    let bar = ProgressBar::new(args.duration.as_secs().max(1));
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(name);
    let mut workers = Vec::new();
    for worker in 0..args.concurrency {
        let (op, done) = (op.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match op(worker, n).await {
                    Ok(()) => {
                        latencies.push(t.elapsed().as_micros() as u64);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
                n += 1;
            }
            (latencies, errors, first_error)
        }));
    }
    let ticker = {
        let (bar, done) = (bar.clone(), done.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                bar.set_position(started.elapsed().as_secs());
                let ops = done.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64().max(0.001);
                bar.set_message(format!("{ops} ops, {:.0} ops/s", ops as f64 / secs));
            }
        })
    };
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for w in workers {
        let (l, e, f) = w.await.context("bench worker")?;
        latencies.extend(l);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    ticker.abort();
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if let Some(e) = &first_error {
        eprintln!("{name}: {errors} requests failed; the first: {e}");
    }
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i] as f64 / 1000.0
    };
    let ops = latencies.len() as u64;
    let mut cpu = cpu.finish(ops * args.size);
    let servers: f64 = cpu
        .iter()
        .filter(|c| c.name != "client")
        .map(|c| c.cpu_s)
        .sum();
    if args.cpu_of.len() > 1 {
        let gib = (ops * args.size) as f64 / (1u64 << 30) as f64;
        cpu.push(ProcessCpu {
            name: "servers".into(),
            cpu_s: servers,
            cpu_s_per_gib: if gib > 0.0 { servers / gib } else { 0.0 },
        });
    }
    Ok(PhaseResult {
        op: name,
        ops,
        errors,
        seconds,
        ops_per_s: ops as f64 / seconds,
        mib_per_s: (ops * args.size) as f64 / seconds / (1024.0 * 1024.0),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: latencies.last().map_or(0.0, |&l| l as f64 / 1000.0),
        cpu,
    })
}

/// How many objects each worker wrote under `prefix`.
async fn per_worker_counts(client: &Client, bucket: &str, prefix: &str) -> Result<Vec<u64>> {
    let mut counts: Vec<u64> = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for o in page.context("listing what the PUT phase wrote")?.contents() {
            let worker = o
                .key()
                .and_then(|k| k.strip_prefix(prefix))
                .and_then(|k| k.split('/').next())
                .and_then(|w| w.parse::<usize>().ok());
            if let Some(w) = worker {
                if counts.len() <= w {
                    counts.resize(w + 1, 0);
                }
                counts[w] += 1;
            }
        }
    }
    Ok(counts)
}

/// Deletes what the run wrote, a thousand keys per request.
async fn cleanup(client: &Client, bucket: &str, prefix: &str) -> Result<()> {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .send()
            .await
            .context("listing objects to delete")?;
        let ids: Vec<ObjectIdentifier> = page
            .contents()
            .iter()
            .filter_map(|o| o.key())
            .filter_map(|k| ObjectIdentifier::builder().key(k).build().ok())
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let delete = Delete::builder()
            .set_objects(Some(ids))
            .quiet(true)
            .build()
            .context("building a batch delete")?;
        client
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .context("deleting the benchmark's objects")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_bodies_share_no_block() {
        // Like the bench's random base: no two of its own blocks alike.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let base: Vec<u8> = (0..3 * STAMP_EVERY + 100)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let a = distinct_body(&base, 1);
        let b = distinct_body(&base, 2 << 40);
        assert_eq!(a.len(), base.len());
        for (x, y) in a.chunks(STAMP_EVERY).zip(b.chunks(STAMP_EVERY)) {
            assert_ne!(x, y);
        }
        let mut blocks: Vec<&[u8]> = a.chunks(STAMP_EVERY).chain(b.chunks(STAMP_EVERY)).collect();
        blocks.sort();
        blocks.dedup();
        assert_eq!(blocks.len(), 8);
        // Short bodies (4 KiB objects and smaller) are stamped too.
        assert_ne!(distinct_body(&[0; 5], 1), distinct_body(&[0; 5], 2));
    }

    #[test]
    fn reads_cpu_time_of_a_process() {
        let s = own_cpu_seconds().expect("/proc/self/stat");
        assert!(s.is_finite() && s >= 0.0, "{s}");
        assert_eq!(process_cpu_seconds(u32::MAX), None);
        assert!(parse_named_pid("gateway=12").is_ok());
        assert!(parse_named_pid("gateway").is_err());
    }
}
