//! `tessera bench-machine`: the limits of the machine Tessera runs on, the
//! figures every Tessera benchmark is read against. A storage path can go
//! no faster than the disk takes synced writes, than memory copies, or than
//! the transport carries bytes; `tools/bench-all` prints each Tessera figure
//! as a share of the limit that bounds it.
//!
//! Measured: sequential writes with `fdatasync` after each 4 MiB (what a
//! node does per fragment), 4 KiB writes each followed by `fdatasync` (what
//! a write-ahead log does per commit), memory copy, and loopback throughput
//! over plain TCP and over QUIC with mutual TLS configured exactly as the
//! cluster's own connections are.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bench::random_bytes;
use crate::units::parse_size;

#[derive(Args, Debug)]
pub struct MachineArgs {
    /// Directory on the disk to measure (a scratch file is written and
    /// removed there); use the file system the nodes keep fragments on.
    #[arg(long)]
    pub dir: PathBuf,
    /// Bytes to write for the sequential disk figure.
    #[arg(long, value_parser = parse_size, default_value = "1GiB")]
    pub disk_bytes: u64,
    /// Bytes to send over each loopback transport.
    #[arg(long, value_parser = parse_size, default_value = "2GiB")]
    pub net_bytes: u64,
    /// Streams in parallel on the QUIC connection (fragments travel on
    /// several streams of one connection at once).
    #[arg(long, default_value_t = 4)]
    pub streams: usize,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The machine's limits. Throughputs in MiB/s (2^20 bytes per second).
#[derive(Debug, Serialize)]
pub struct MachineLimits {
    /// Sequential writes of 4 MiB, each followed by fdatasync.
    pub disk_write_fdatasync_mib_s: f64,
    /// 4 KiB writes per second, each followed by fdatasync.
    pub disk_sync_4k_writes_per_s: f64,
    /// Memory copy (one thread, 64 MiB buffers).
    pub memcpy_mib_s: f64,
    /// One TCP connection on 127.0.0.1, 1 MiB writes.
    pub tcp_loopback_mib_s: f64,
    /// CPU seconds (both ends) per GiB over loopback TCP.
    pub tcp_cpu_s_per_gib: f64,
    /// One QUIC connection with mutual TLS on 127.0.0.1, `streams` streams.
    pub quic_loopback_mib_s: f64,
    /// CPU seconds (both ends) per GiB over loopback QUIC.
    pub quic_cpu_s_per_gib: f64,
    pub cores: usize,
}

const MIB: f64 = (1u64 << 20) as f64;
const GIB: f64 = (1u64 << 30) as f64;
/// Write size of the sequential disk figure and of the network senders.
const DISK_BLOCK: usize = 4 << 20;
const NET_BLOCK: usize = 1 << 20;
/// How long the 4 KiB synced-write figure runs.
const SYNC_4K_FOR: Duration = Duration::from_secs(3);

pub async fn run(args: MachineArgs) -> Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let step = |what: &str| {
        if !args.json {
            eprintln!("measuring {what}...");
        }
    };
    step("disk writes with fdatasync");
    let dir = args.dir.clone();
    let disk_bytes = args.disk_bytes;
    let disk = tokio::task::spawn_blocking(move || disk_write_fdatasync(&dir, disk_bytes))
        .await
        .context("disk task")??;
    step("4 KiB synced writes");
    let dir = args.dir.clone();
    let sync4k = tokio::task::spawn_blocking(move || sync_4k_writes(&dir))
        .await
        .context("disk task")??;
    step("memory copy");
    let memcpy = tokio::task::spawn_blocking(memcpy_mib_s)
        .await
        .context("memcpy task")?;
    step("loopback TCP");
    let (tcp, tcp_cpu) = tcp_loopback(args.net_bytes).await?;
    step("loopback QUIC (mutual TLS)");
    let (quic, quic_cpu) = quic_loopback(args.net_bytes, args.streams.max(1)).await?;
    let limits = MachineLimits {
        disk_write_fdatasync_mib_s: disk,
        disk_sync_4k_writes_per_s: sync4k,
        memcpy_mib_s: memcpy,
        tcp_loopback_mib_s: tcp,
        tcp_cpu_s_per_gib: tcp_cpu,
        quic_loopback_mib_s: quic,
        quic_cpu_s_per_gib: quic_cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&limits)?);
    } else {
        println!("machine limits ({} cores):", limits.cores);
        println!(
            "  disk write, fdatasync per 4 MiB   {:>9.1} MiB/s",
            limits.disk_write_fdatasync_mib_s
        );
        println!(
            "  4 KiB writes with fdatasync       {:>9.0} /s",
            limits.disk_sync_4k_writes_per_s
        );
        println!(
            "  memory copy                       {:>9.0} MiB/s",
            limits.memcpy_mib_s
        );
        println!(
            "  loopback TCP                      {:>9.1} MiB/s  ({:.2} CPU s/GiB)",
            limits.tcp_loopback_mib_s, limits.tcp_cpu_s_per_gib
        );
        println!(
            "  loopback QUIC, mutual TLS         {:>9.1} MiB/s  ({:.2} CPU s/GiB)",
            limits.quic_loopback_mib_s, limits.quic_cpu_s_per_gib
        );
    }
    Ok(())
}

fn scratch_file(dir: &std::path::Path, name: &str) -> Result<(PathBuf, std::fs::File)> {
    let path = dir.join(format!(
        ".tessera-bench-machine-{}-{name}",
        std::process::id()
    ));
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok((path, file))
}

fn disk_write_fdatasync(dir: &std::path::Path, bytes: u64) -> Result<f64> {
    let (path, mut file) = scratch_file(dir, "seq")?;
    let block = random_bytes(DISK_BLOCK);
    let blocks = bytes.div_ceil(DISK_BLOCK as u64).max(1);
    let started = Instant::now();
    let result = (|| -> std::io::Result<()> {
        for _ in 0..blocks {
            file.write_all(&block)?;
            file.sync_data()?;
        }
        Ok(())
    })();
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    result.with_context(|| format!("writing {}", path.display()))?;
    Ok((blocks * DISK_BLOCK as u64) as f64 / MIB / secs)
}

fn sync_4k_writes(dir: &std::path::Path) -> Result<f64> {
    let (path, mut file) = scratch_file(dir, "4k")?;
    let block = random_bytes(4096);
    let started = Instant::now();
    let mut n = 0u64;
    let result = (|| -> std::io::Result<()> {
        while started.elapsed() < SYNC_4K_FOR {
            file.write_all(&block)?;
            file.sync_data()?;
            n += 1;
        }
        Ok(())
    })();
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    result.with_context(|| format!("writing {}", path.display()))?;
    Ok(n as f64 / secs)
}

fn memcpy_mib_s() -> f64 {
    let src = random_bytes(64 << 20);
    let mut dst = vec![0u8; src.len()];
    let started = Instant::now();
    let mut copied = 0u64;
    while started.elapsed() < Duration::from_secs(1) {
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
        copied += src.len() as u64;
    }
    copied as f64 / MIB / started.elapsed().as_secs_f64()
}

fn own_cpu_seconds() -> f64 {
    crate::bench::own_cpu_seconds().unwrap_or(0.0)
}

/// Sends `bytes` over one loopback TCP connection; returns (MiB/s, CPU s/GiB).
async fn tcp_loopback(bytes: u64) -> Result<(f64, f64)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a loopback TCP port")?;
    let addr = listener.local_addr()?;
    let sink = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; NET_BLOCK];
        let mut got = 0u64;
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        s.write_all(&[1]).await?;
        Ok::<u64, std::io::Error>(got)
    });
    let block = random_bytes(NET_BLOCK);
    let cpu = own_cpu_seconds();
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let mut sent = 0u64;
    while sent < bytes {
        s.write_all(&block).await?;
        sent += block.len() as u64;
    }
    s.shutdown().await?;
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).await?;
    let secs = started.elapsed().as_secs_f64();
    let got = sink.await.context("TCP sink")??;
    anyhow::ensure!(got == sent, "TCP sink got {got} of {sent} bytes");
    Ok((
        sent as f64 / MIB / secs,
        (own_cpu_seconds() - cpu) / (sent as f64 / GIB),
    ))
}

/// Sends `bytes` over one QUIC connection between two of the cluster's own
/// endpoints (mutual TLS with a throwaway CA, the cluster's transport
/// settings), on `streams` streams at once; returns (MiB/s, CPU s/GiB).
async fn quic_loopback(bytes: u64, streams: usize) -> Result<(f64, f64)> {
    let ca = tessera_net::ClusterCa::generate("bench-machine")?;
    let identity = |name: &str| -> Result<tessera_net::Identity> {
        let (cert, key) = ca.issue(name)?;
        Ok(tessera_net::Identity::from_pem(ca.cert_pem(), &cert, &key)?)
    };
    let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    let server = tessera_net::Endpoint::server(addr, &identity("server")?)?;
    let server_addr = server.local_addr()?;
    let serving = tokio::spawn(tessera_net::serve(
        server.clone(),
        |_peer, mut send, mut recv| async move {
            let mut buf = vec![0u8; NET_BLOCK];
            let mut got = 0u64;
            while let Ok(Some(n)) = recv.read(&mut buf).await {
                got += n as u64;
            }
            let _ = send.write_all(&got.to_le_bytes()).await;
            let _ = send.finish();
            let _ = send.stopped().await;
        },
    ));
    let client = tessera_net::Endpoint::client(&identity("client")?)?;
    let conn = client.connect(server_addr).await?;
    let block = bytes::Bytes::from(random_bytes(NET_BLOCK));
    let per_stream = bytes.div_ceil(streams as u64);
    let cpu = own_cpu_seconds();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let (conn, block) = (conn.clone(), block.clone());
        tasks.push(tokio::spawn(async move {
            let (mut send, mut recv) = conn.open_bi().await?;
            let mut sent = 0u64;
            while sent < per_stream {
                send.write_chunk(block.clone()).await?;
                sent += block.len() as u64;
            }
            send.finish()?;
            let mut got = [0u8; 8];
            recv.read_exact(&mut got).await?;
            anyhow::ensure!(
                u64::from_le_bytes(got) == sent,
                "QUIC sink got {} of {sent} bytes",
                u64::from_le_bytes(got)
            );
            Ok::<u64, anyhow::Error>(sent)
        }));
    }
    let mut sent = 0u64;
    for t in tasks {
        sent += t.await.context("QUIC sender")??;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = own_cpu_seconds() - cpu;
    let stats = conn.stats();
    eprintln!(
        "QUIC path: MTU {} bytes, {} packets sent, {} lost, congestion window {} bytes",
        stats.path.current_mtu, stats.path.sent_packets, stats.path.lost_packets, stats.path.cwnd
    );
    conn.close(0u32.into(), b"done");
    client.close();
    server.close();
    serving.abort();
    Ok((sent as f64 / MIB / secs, cpu / (sent as f64 / GIB)))
}
