//! QUIC packet size over real paths: two endpoints in network namespaces
//! joined by veth pairs of a chosen MTU, as root. Every path must carry
//! data, and each connection must discover the largest packet its path
//! carries: Ethernet's 1,500-byte MTU, jumbo frames, and a jumbo link
//! whose path runs through a 1,500-byte link further on (the router drops
//! larger packets, and the sender's interface does not know).
//!
//! Needs root and `ip` (iproute2); without them the test says so and
//! passes.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use tessera_net::{ClusterCa, Endpoint, Identity};

/// The namespaces of one test case, deleted (with their links) on drop.
struct Namespaces {
    names: Vec<String>,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "delete", name]).status();
        }
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn in_ns(ns: &str, args: &[&str]) -> Result<()> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    ip(&all)
}

/// Whether namespaces can be made here (root, iproute2).
fn can_make_namespaces() -> bool {
    if !rustix::process::geteuid().is_root() {
        return false;
    }
    let probe = format!("tq-probe-{}", std::process::id());
    let ok = ip(&["netns", "add", &probe]).is_ok();
    let _ = Command::new("ip")
        .args(["netns", "delete", &probe])
        .status();
    ok
}

/// Client namespace `a` (10.77.N.1) and server namespace `b`: joined by
/// one veth of `mtus[0]`, or through router namespace `r` when two MTUs
/// are given (a-r the first, r-b the second; b is 10.77.(N+100).2).
/// Returns the namespaces and the server's address.
fn make_path(case: u8, mtus: &[u32]) -> Result<(Namespaces, String, String, String)> {
    let tag = format!("{}-{case}", std::process::id());
    let (a, b, r) = (
        format!("tq{tag}a"),
        format!("tq{tag}b"),
        format!("tq{tag}r"),
    );
    let mut spaces = Namespaces { names: Vec::new() };
    for ns in [&a, &b] {
        ip(&["netns", "add", ns])?;
        spaces.names.push(ns.clone());
        in_ns(ns, &["link", "set", "lo", "up"])?;
    }
    let net1 = format!("10.77.{case}");
    let mtu1 = mtus[0].to_string();
    let (va, vb) = (format!("v{tag}a"), format!("v{tag}b"));
    match mtus {
        [_] => {
            ip(&[
                "link", "add", &va, "netns", &a, "mtu", &mtu1, "type", "veth", "peer", "name", &vb,
                "netns", &b, "mtu", &mtu1,
            ])?;
            in_ns(&a, &["addr", "add", &format!("{net1}.1/24"), "dev", &va])?;
            in_ns(&b, &["addr", "add", &format!("{net1}.2/24"), "dev", &vb])?;
            in_ns(&a, &["link", "set", &va, "up"])?;
            in_ns(&b, &["link", "set", &vb, "up"])?;
            Ok((spaces, a, b, format!("{net1}.2")))
        }
        [_, second] => {
            ip(&["netns", "add", &r])?;
            spaces.names.push(r.clone());
            let net2 = format!("10.77.{}", case + 100);
            let mtu2 = second.to_string();
            let (vra, vrb) = (format!("v{tag}ra"), format!("v{tag}rb"));
            ip(&[
                "link", "add", &va, "netns", &a, "mtu", &mtu1, "type", "veth", "peer", "name",
                &vra, "netns", &r, "mtu", &mtu1,
            ])?;
            ip(&[
                "link", "add", &vrb, "netns", &r, "mtu", &mtu2, "type", "veth", "peer", "name",
                &vb, "netns", &b, "mtu", &mtu2,
            ])?;
            in_ns(&a, &["addr", "add", &format!("{net1}.1/24"), "dev", &va])?;
            in_ns(&r, &["addr", "add", &format!("{net1}.2/24"), "dev", &vra])?;
            in_ns(&r, &["addr", "add", &format!("{net2}.1/24"), "dev", &vrb])?;
            in_ns(&b, &["addr", "add", &format!("{net2}.2/24"), "dev", &vb])?;
            for (ns, dev) in [(&a, &va), (&r, &vra), (&r, &vrb), (&b, &vb)] {
                in_ns(ns, &["link", "set", dev, "up"])?;
            }
            in_ns(
                &a,
                &["route", "add", "default", "via", &format!("{net1}.2")],
            )?;
            in_ns(
                &b,
                &["route", "add", "default", "via", &format!("{net2}.1")],
            )?;
            let forward = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &r,
                    "sysctl",
                    "-qw",
                    "net.ipv4.ip_forward=1",
                ])
                .status()?;
            ensure!(forward.success(), "cannot turn on forwarding in {r}");
            Ok((spaces, a, b, format!("{net2}.2")))
        }
        _ => bail!("one or two MTUs"),
    }
}

/// Builds an endpoint with its socket in namespace `ns`: a thread enters
/// the namespace to bind it (a socket keeps the namespace it was made in).
fn endpoint_in(
    ns: &str,
    rt: &tokio::runtime::Handle,
    make: impl FnOnce() -> Result<Endpoint> + Send,
) -> Result<Endpoint> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(format!("/run/netns/{ns}"))
                .with_context(|| format!("opening namespace {ns}"))?;
            rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .context("entering the namespace")?;
            let _runtime = rt.enter();
            make()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("endpoint thread panicked"))?
    })
}

/// Sends `per_round` bytes each way per round over one connection until
/// the client's packet size reaches `at_least`, or 60 s pass. Returns the
/// client's packet size (UDP payload bytes) at the end.
async fn exchange(ns_client: &str, ns_server: &str, server_ip: &str, at_least: u16) -> Result<u16> {
    let ca = ClusterCa::generate("path-mtu")?;
    let identity = |name: &str| -> Result<Identity> {
        let (cert, key) = ca.issue(name)?;
        Ok(Identity::from_pem(ca.cert_pem(), &cert, &key)?)
    };
    let rt = tokio::runtime::Handle::current();
    let server_addr: SocketAddr = format!("{server_ip}:7443").parse()?;
    let server_id = identity("server")?;
    let server = endpoint_in(ns_server, &rt, || {
        Ok(Endpoint::server(server_addr, &server_id)?)
    })?;
    let serving = tokio::spawn(tessera_net::serve(
        server.clone(),
        |_peer, mut send, mut recv| async move {
            // Echo: every byte back, so both directions carry full packets.
            while let Ok(Some(chunk)) = recv.read_chunk(1 << 20, true).await {
                if send.write_chunk(chunk.bytes).await.is_err() {
                    return;
                }
            }
            let _ = send.finish();
            let _ = send.stopped().await;
        },
    ));
    let client_id = identity("client")?;
    let client = endpoint_in(ns_client, &rt, || Ok(Endpoint::client(&client_id)?))?;
    let conn = client.connect(server_addr).await?;
    let block = Bytes::from(
        (0..1u32 << 20)
            .map(|i| (i * 7 + 3) as u8)
            .collect::<Vec<u8>>(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut rounds = 0;
    loop {
        let (mut send, mut recv) = conn.open_bi().await?;
        let out = block.clone();
        let writer = tokio::spawn(async move {
            send.write_chunk(out).await?;
            send.finish()?;
            Ok::<_, anyhow::Error>(())
        });
        let back = recv.read_to_end(2 << 20).await?;
        writer.await??;
        ensure!(
            back == block,
            "round {rounds}: the echo differs from what was sent"
        );
        rounds += 1;
        let mtu = conn.stats().path.current_mtu;
        if mtu >= at_least || Instant::now() > deadline {
            conn.close(0u32.into(), b"done");
            client.close();
            server.close();
            serving.abort();
            eprintln!("{ns_client} -> {ns_server}: {rounds} MiB each way, packets of {mtu} bytes");
            return Ok(mtu);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_grow_to_what_each_path_carries() -> Result<()> {
    if !can_make_namespaces() {
        eprintln!("skipped: needs root and `ip netns` to build veth paths");
        return Ok(());
    }
    // (case, MTUs along the path, lowest and highest UDP payload allowed:
    // at most the path MTU less 28 bytes of IPv4 and UDP headers; quinn's
    // binary search stops once a step is under 20 bytes, which can leave
    // it a few tens of bytes short).
    let cases: [(u8, &[u32], u16, u16); 3] = [
        (1, &[1500], 1400, 1472),
        (2, &[9000], 8800, 8972),
        (3, &[9000, 1500], 1400, 1472),
    ];
    for (case, mtus, low, high) in cases {
        let (_spaces, a, b, server_ip) = make_path(case, mtus)?;
        let mtu = exchange(&a, &b, &server_ip, low).await?;
        ensure!(
            (low..=high).contains(&mtu),
            "path with MTUs {mtus:?}: packets of {mtu} bytes, expected {low}-{high}"
        );
    }
    Ok(())
}
