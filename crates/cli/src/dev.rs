//! `tessera dev`: meta and several storage nodes in one process, for trying
//! Tessera on one machine. The same code runs as separate processes in
//! production; only the wiring differs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use tessera_types::Policy;

use crate::servers::{self, NodeOpts};

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Directory for the cluster file, metadata and every node's fragments.
    #[arg(long, default_value = "tessera-dev")]
    pub data: PathBuf,
    /// Number of storage nodes.
    #[arg(long, default_value_t = 6)]
    pub nodes: usize,
    /// Default policy for new buckets.
    #[arg(long, default_value = "ec:4+2")]
    pub policy: Policy,
    /// Meta's QUIC address; nodes take the ports after it.
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub meta_listen: SocketAddr,
    /// Run meta as a Raft group of this many replicas in this process (1, 3 or 5; the others on --meta-listen's port + 50, + 51, ...), to try failover and `tessera meta status`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=7))]
    pub meta_replicas: u8,
    /// Bytes each node offers (default: an equal share of the file system under --data, which every node of dev shares).
    #[arg(long, value_parser = crate::units::parse_size)]
    pub node_capacity: Option<u64>,
    /// Serve meta's Prometheus metrics on http://ADDR/metrics.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// The S3 endpoint's HTTP address (default: meta's IP, port 9000).
    #[arg(long)]
    pub s3_listen: Option<SocketAddr>,
    /// Accept only S3 requests signed for this region (default: any).
    #[arg(long)]
    pub s3_region: Option<String>,
    /// Serve virtual-hosted-style S3 requests for BUCKET.DOMAIN (repeatable).
    #[arg(long = "s3-domain")]
    pub s3_domains: Vec<String>,
    /// The admin API and web console's HTTP address (default: meta's IP, port 9001).
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// The NBD server's address for block volumes (HOST:PORT or unix:PATH; default: meta's IP, port 10809).
    #[arg(long, value_parser = crate::volume_cmds::parse_nbd_listen)]
    pub nbd_listen: Option<crate::volume_cmds::NbdListen>,
    /// Access key id of the key dev creates (default: random).
    #[arg(long)]
    pub access_key: Option<String>,
    /// Its secret (default: random).
    #[arg(long)]
    pub secret_key: Option<String>,
    /// The length of a day for S3 lifecycle rules (their Days count in these; shorten it only to test rules).
    #[arg(long, value_parser = crate::units::parse_duration, default_value = "1d")]
    pub lifecycle_day: std::time::Duration,
}

pub async fn run(args: DevArgs) -> Result<()> {
    if args.nodes < args.policy.fragments() {
        bail!(
            "{} needs at least {} nodes, --nodes is {}",
            args.policy,
            args.policy.fragments(),
            args.nodes
        );
    }
    let file = args.data.join("cluster.toml");
    let replicas: Vec<SocketAddr> = (0..u16::from(args.meta_replicas))
        .map(|i| match i {
            0 => args.meta_listen,
            i => SocketAddr::new(args.meta_listen.ip(), args.meta_listen.port() + 49 + i),
        })
        .collect();
    let endpoints = replicas
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let cfg = if file.exists() {
        let cfg = servers::load_cluster(&file)?;
        if cfg.meta_addrs()? != replicas {
            bail!(
                "{} names meta {} but --meta-listen and --meta-replicas make {}",
                file.display(),
                cfg.meta,
                endpoints
            );
        }
        cfg
    } else {
        servers::create_cluster(&args.data, &endpoints, args.policy, false)?
    };

    let mut metas = Vec::new();
    for (i, addr) in replicas.iter().enumerate() {
        let meta_dir = match i {
            0 => args.data.join("meta"),
            i => args.data.join(format!("meta-{i}")),
        };
        let identity = servers::server_identity(&cfg, &meta_dir, tessera_net::role::META)?;
        let opts = servers::MetaOpts {
            listen: Some(*addr),
            lifecycle_day: Some(args.lifecycle_day),
            ..servers::MetaOpts::default()
        };
        let mut meta_cfg = servers::meta_config(&cfg, &meta_dir, &opts)?;
        meta_cfg.default_policy = args.policy;
        metas.push(
            tessera_meta::start(meta_cfg, &identity)
                .await
                .with_context(|| format!("starting meta replica {i} on {addr}"))?,
        );
    }

    // Every node's directory is on the one file system under --data: each
    // offering all of it would count the disk once per node, and "full"
    // would mean nothing.
    let node_capacity = args
        .node_capacity
        .unwrap_or_else(|| tessera_node::file_system_capacity(&args.data) / args.nodes as u64);
    let mut nodes = Vec::new();
    for i in 0..args.nodes {
        let data = args.data.join(format!("node-{i}"));
        let listen = SocketAddr::new(
            args.meta_listen.ip(),
            args.meta_listen.port() + 1 + i as u16,
        );
        let identity = servers::server_identity(&cfg, &data, tessera_net::role::NODE)?;
        let opts = NodeOpts {
            data,
            listen,
            advertise: None,
            zone: None,
            capacity: Some(node_capacity),
            heartbeat: Duration::from_secs(2),
            upkeep: tessera_node::UpkeepConfig::default(),
            metrics: None,
        };
        let node = tessera_node::start(servers::node_config(&cfg, opts)?, &identity)
            .await
            .with_context(|| format!("starting node {i} on {listen}"))?;
        nodes.push(node);
    }

    // Ready when every node has reported in.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        // Liveness is the leader's: ask whichever replica leads.
        let Some(leader) = metas.iter().find(|m| m.meta.is_leader()) else {
            if tokio::time::Instant::now() > deadline {
                bail!("the meta replicas elected no leader");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let map = leader.meta.cluster_map()?;
        let up = map
            .nodes
            .iter()
            .filter(|n| {
                n.state == tessera_proto::NodeState::Up && nodes.iter().any(|r| r.id == n.id)
            })
            .count();
        if up == nodes.len() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("only {up} of {} nodes registered with meta", nodes.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let repairer = crate::heal_cmds::spawn_repairer(
        cfg.clone(),
        crate::args::RepairArgs {
            repair_rate: 256 << 20,
            repair_parallel: 4,
        },
    );

    // One access key, as given or drawn, owning what it creates over S3.
    let admin = tessera_sdk::Client::connect(&cfg).await?;
    let key = match &args.access_key {
        Some(id) => match admin.access_key(id).await {
            Ok(k) => k,
            Err(_) => {
                admin
                    .create_key("dev", Some(id.clone()), args.secret_key.clone())
                    .await?
            }
        },
        None => {
            admin
                .create_key("dev", None, args.secret_key.clone())
                .await?
        }
    };
    // What dev's CLI creates belongs to dev's key: `tessera bucket create`
    // and the S3 key it prints work on the same buckets.
    let mut cfg = cfg;
    if cfg.bucket_owner.as_deref() != Some(key.id.as_str()) {
        cfg.bucket_owner = Some(key.id.clone());
        servers::save_cluster(&cfg, &file)?;
    }
    let s3_listen = args
        .s3_listen
        .unwrap_or_else(|| SocketAddr::new(args.meta_listen.ip(), 9000));
    // SSE-S3's master key lives beside the cluster's data (made once).
    let master = tessera_s3::MasterKey::load_or_create(&args.data.join("sse-master.key"))?;
    let gateway = tessera_s3::GatewayConfig {
        region: args.s3_region.clone(),
        domains: args.s3_domains.clone(),
        sse_master_key: Some(std::sync::Arc::new(master)),
    };
    let s3 = servers::serve_s3(&cfg, s3_listen, gateway).await?;
    let admin_listen = args
        .admin_listen
        .unwrap_or_else(|| SocketAddr::new(args.meta_listen.ip(), 9001));
    let admin_server = servers::serve_admin(&cfg, admin_listen).await?;
    let nbd_listen = args.nbd_listen.clone().unwrap_or_else(|| {
        crate::volume_cmds::NbdListen::Tcp(SocketAddr::new(args.meta_listen.ip(), 10809))
    });
    let nbd = crate::volume_cmds::serve_nbd(&cfg, &nbd_listen, false, None).await?;
    // A token for this run (meta keeps only its hash).
    let admin_token = tessera_admin::token::create_token(&admin, "dev").await?;

    let cluster = std::fs::canonicalize(&file).unwrap_or(file);
    println!(
        "Tessera dev cluster is up: meta on {}, {} nodes, default policy {}",
        endpoints,
        nodes.len(),
        args.policy
    );
    println!(
        "Each node offers {} ({}).",
        crate::units::human_bytes(node_capacity),
        if args.node_capacity.is_some() {
            "--node-capacity".to_string()
        } else {
            format!(
                "an equal share of the file system under {}",
                args.data.display()
            )
        }
    );
    println!("S3 endpoint: http://{s3_listen}");
    println!("  export AWS_ACCESS_KEY_ID={}", key.id);
    println!("  export AWS_SECRET_ACCESS_KEY={}", key.secret);
    println!("  aws --endpoint-url http://{s3_listen} s3 mb s3://demo");
    println!("Console: http://{admin_listen}/");
    println!("  admin token: {admin_token}");
    println!("  curl -H 'Authorization: Bearer {admin_token}' http://{admin_listen}/v1/status");
    match &nbd_listen {
        crate::volume_cmds::NbdListen::Tcp(a) => {
            println!("NBD (block volumes): nbd://{a}/VOLUME");
            println!("  tessera volume create disk1 --size 10GiB");
            println!("  nbdinfo nbd://{a}/disk1");
        }
        crate::volume_cmds::NbdListen::Unix(p) => {
            println!(
                "NBD (block volumes): nbd+unix:///VOLUME?socket={}",
                p.display()
            )
        }
    }
    println!();
    println!("  export TESSERA_CLUSTER={}", cluster.display());
    println!("  tessera bucket create demo");
    println!("  tessera put ./some-file demo/some-file");
    println!("  tessera get demo/some-file ./copy");
    println!("  tessera status");
    println!();
    println!("Press Ctrl-C to stop.");

    servers::wait_for_signal().await?;
    repairer.abort();
    s3.abort();
    nbd.stop().await;
    admin_server.abort();
    for n in nodes {
        n.shutdown().await;
    }
    for m in metas {
        m.shutdown().await;
    }
    Ok(())
}
