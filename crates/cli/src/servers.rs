//! `init`, `meta` and `node`: the server roles as separate processes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tessera_meta::MetaConfig;
use tessera_net::{ClusterCa, Identity, role};
use tessera_node::NodeConfig;
use tessera_sdk::ClusterConfig;
use tessera_types::Policy;
use tracing::info;

/// Writes a file readable only by its owner (keys, the cluster file),
/// atomically and durably: a full disk leaves the old file or none.
fn write_private(path: &Path, contents: &str) -> Result<()> {
    tessera_net::write_atomically(path, contents.as_bytes(), true)
        .with_context(|| format!("writing {}", path.display()))
}

/// Creates DIR/cluster.toml with a new CA and client credentials.
pub fn create_cluster(
    dir: &Path,
    meta: &str,
    policy: Policy,
    force: bool,
) -> Result<ClusterConfig> {
    let file = dir.join("cluster.toml");
    if file.exists() && !force {
        bail!(
            "{} already exists (use --force to replace the cluster's CA and credentials)",
            file.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = hex::encode(rand::random::<[u8; 4]>());
    let ca = ClusterCa::generate(&name)?;
    let (cert, key) = ca.issue(role::CLIENT)?;
    write_private(&dir.join("ca.pem"), ca.cert_pem())?;
    write_private(&dir.join("ca.key"), &ca.key_pem())?;
    write_private(&dir.join("client.pem"), &cert)?;
    write_private(&dir.join("client.key"), &key)?;
    let cfg = ClusterConfig {
        meta: meta.to_string(),
        ca_cert: "ca.pem".into(),
        ca_key: Some("ca.key".into()),
        cert: "client.pem".into(),
        key: "client.key".into(),
        default_policy: Some(policy.to_string()),
        down_after: None,
        out_after: None,
        gc_grace: None,
        bucket_owner: None,
        dir: dir.to_path_buf(),
    };
    save_cluster(&cfg, &file)?;
    Ok(cfg)
}

/// Writes cluster file `file` (readable by its owner only).
pub fn save_cluster(cfg: &ClusterConfig, file: &Path) -> Result<()> {
    let text = format!(
        "# Tessera cluster file. Clients need meta, ca_cert, cert and key;\n\
         # only servers and admins need ca_key.\n{}",
        cfg.to_toml()
    );
    write_private(file, &text)
}

pub fn init(dir: &Path, meta: &str, policy: Policy, force: bool) -> Result<()> {
    create_cluster(dir, meta, policy, force)?;
    println!(
        "created cluster file {}",
        dir.join("cluster.toml").display()
    );
    println!(
        "next: tessera meta --cluster {0}/cluster.toml --data META_DIR",
        dir.display()
    );
    println!(
        "      tessera node --cluster {0}/cluster.toml --data NODE_DIR --listen ADDR",
        dir.display()
    );
    Ok(())
}

/// A client of the cluster that `c` names, for the CLI's client commands.
pub async fn connect(c: &crate::args::ClusterArg) -> Result<tessera_sdk::Client> {
    let cfg = load_cluster(&c.cluster)?;
    tessera_sdk::Client::connect(&cfg)
        .await
        .with_context(|| format!("cannot reach the cluster's meta at {}", cfg.meta))
}

pub fn load_cluster(path: &Path) -> Result<ClusterConfig> {
    ClusterConfig::load(path).with_context(|| {
        format!(
            "cannot use cluster file {} (create one with `tessera init` or `tessera dev`)",
            path.display()
        )
    })
}

/// A server's identity: its own certificate, issued by the cluster CA at
/// first start and kept in `data/tls/`, or put there by the operator.
/// `role` (one of `tessera_net::role`) is the certificate's common name:
/// meta replicas accept Raft's RPCs only from `meta`.
pub fn server_identity(cfg: &ClusterConfig, data: &Path, role: &str) -> Result<Identity> {
    let tls = data.join("tls");
    let (cert_path, key_path) = (
        tls.join(format!("{role}.pem")),
        tls.join(format!("{role}.key")),
    );
    let ca_pem = cfg.ca_cert_pem()?;
    if !cert_path.exists() {
        let ca = cfg.ca()?.with_context(|| {
            format!(
                "no certificate at {} and the cluster file has no ca_key to issue one",
                cert_path.display()
            )
        })?;
        std::fs::create_dir_all(&tls).with_context(|| format!("creating {}", tls.display()))?;
        let (cert, key) = ca.issue(role)?;
        write_private(&key_path, &key)?;
        write_private(&cert_path, &cert)?;
    }
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    Ok(Identity::from_pem(
        &ca_pem,
        &read(&cert_path)?,
        &read(&key_path)?,
    )?)
}

/// How `tessera meta` runs, from its flags.
#[derive(Default)]
pub struct MetaOpts {
    pub listen: Option<SocketAddr>,
    pub down_after: Option<Duration>,
    pub out_after: Option<Duration>,
    pub gc_grace: Option<Duration>,
    pub upload_expiry: Option<Duration>,
    /// The length of a lifecycle day (default one day).
    pub lifecycle_day: Option<Duration>,
    /// Most lifecycle expiries per second.
    pub lifecycle_rate: Option<u32>,
    /// Run the repairer in the meta process, like this.
    pub repair: Option<crate::args::RepairArgs>,
    pub metrics: Option<SocketAddr>,
    pub snapshot_every: u64,
    /// Serve the admin API and console here.
    pub admin: Option<SocketAddr>,
}

pub fn meta_config(cfg: &ClusterConfig, data: &Path, opts: &MetaOpts) -> Result<MetaConfig> {
    let (listen, down_after, out_after) = (opts.listen, opts.down_after, opts.out_after);
    let endpoints: Vec<String> = cfg.meta_endpoints().into_iter().map(String::from).collect();
    let addrs = cfg.meta_addrs()?;
    let listen = match listen {
        Some(l) => l,
        None => addrs[0],
    };
    let mut mc = MetaConfig::new(listen, data.to_path_buf());
    // 0: not given (`MetaOpts::default()`, as `tessera dev` builds it).
    if opts.snapshot_every > 0 {
        mc.snapshot_every = opts.snapshot_every;
    }
    match addrs.iter().position(|a| *a == listen) {
        Some(i) => {
            mc.advertise = endpoints[i].clone();
            if endpoints.len() > 1 {
                mc.group = endpoints;
            }
        }
        // A lone meta listening elsewhere than the file says (tests, a
        // port chosen at start): still the group of one.
        None if endpoints.len() <= 1 => {}
        // A replica about to be added with `tessera meta add`.
        None => mc.group = endpoints,
    }
    // The command line wins over the cluster file, which wins over defaults.
    let from_file = |v: &Option<String>, name: &str| -> Result<Option<Duration>> {
        v.as_deref()
            .map(|s| {
                crate::units::parse_duration(s)
                    .map_err(|e| anyhow::anyhow!("cluster file {name}: {e}"))
            })
            .transpose()
    };
    if let Some(d) = down_after.or(from_file(&cfg.down_after, "down_after")?) {
        mc.down_after = d;
    }
    if let Some(d) = out_after.or(from_file(&cfg.out_after, "out_after")?) {
        mc.out_after = d;
    }
    if let Some(d) = opts.gc_grace.or(from_file(&cfg.gc_grace, "gc_grace")?) {
        mc.gc_grace = d;
    }
    if let Some(d) = opts.upload_expiry {
        mc.upload_expiry = d;
    }
    if let Some(d) = opts.lifecycle_day {
        if d.is_zero() {
            bail!("--lifecycle-day must be longer than zero");
        }
        mc.lifecycle_day = d;
    }
    if let Some(n) = opts.lifecycle_rate {
        mc.lifecycle_rate = n.max(1);
    }
    if mc.out_after <= mc.down_after {
        bail!(
            "out-after ({:?}) must be longer than down-after ({:?})",
            mc.out_after,
            mc.down_after
        );
    }
    if let Some(p) = cfg.default_policy()? {
        mc.default_policy = p;
    }
    Ok(mc)
}

pub async fn wait_for_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

/// Serves `/metrics` (Prometheus text format) and `/health` over plain HTTP.
pub async fn serve_metrics(
    addr: SocketAddr,
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
) -> Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let render = render.clone();
                async move {
                    let content_type = [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )];
                    (content_type, render())
                }
            }),
        )
        .route("/health", get(|| async { "ok\n" }));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics on {addr}"))?;
    info!(%addr, "metrics on http://{addr}/metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}

pub fn meta_renderer(
    meta: std::sync::Arc<tessera_meta::Meta>,
) -> impl Fn() -> String + Clone + Send + Sync + 'static {
    move || {
        meta.metrics_text()
            .unwrap_or_else(|e| format!("# error: {e}\n"))
    }
}

pub async fn run_meta(cluster: &Path, data: &Path, opts: MetaOpts) -> Result<()> {
    let cfg = load_cluster(cluster)?;
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let identity = server_identity(&cfg, data, role::META)?;
    let running = tessera_meta::start(meta_config(&cfg, data, &opts)?, &identity).await?;
    if let Some(addr) = opts.metrics {
        serve_metrics(addr, meta_renderer(running.meta.clone())).await?;
    }
    let admin = match opts.admin {
        Some(addr) => Some(serve_admin(&cfg, addr).await?),
        None => None,
    };
    // The repairer runs where the leader is: a follower's would only be
    // told `NotLeader`, and two at once would plan the same moves twice.
    let repairer = opts.repair.as_ref().map(|r| {
        let (cfg, r) = (cfg.clone(), r.clone());
        tessera_meta::while_leading(running.meta.clone(), move || {
            crate::heal_cmds::repair_forever(cfg.clone(), r.clone())
        })
    });
    // A storage error stops the replica's Raft (a full or failing disk):
    // it leaves the group to the others and exits 1, saying what to do.
    let failed = tokio::select! {
        signal = wait_for_signal() => {
            signal?;
            None
        }
        why = running.meta.stopped() => Some(why),
    };
    if let Some(r) = repairer {
        r.abort();
    }
    if let Some(a) = admin {
        a.abort();
    }
    if let Some(why) = failed {
        tracing::error!(data = %data.display(), cause = %why, "meta replica stopped: its storage failed");
        bail!(
            "meta replica stopped: writing its data directory {} failed ({why}). The rest of \
             the group serves without it. Free space on that disk (or replace it), then start \
             this replica again: it catches up from the group's log or a snapshot",
            data.display()
        );
    }
    info!("meta shutting down");
    running.shutdown().await;
    Ok(())
}

/// Serves the admin API and console on `addr` until the task is aborted.
pub async fn serve_admin(
    cfg: &ClusterConfig,
    addr: SocketAddr,
) -> Result<tokio::task::JoinHandle<()>> {
    let client = tessera_sdk::Client::connect(cfg)
        .await
        .with_context(|| format!("cannot reach the cluster's meta at {}", cfg.meta))?;
    Ok(tessera_admin::serve(addr, client).await?)
}

/// Serves the S3 gateway on `listen` until the task is dropped.
pub async fn serve_s3(
    cfg: &ClusterConfig,
    listen: SocketAddr,
    config: tessera_s3::GatewayConfig,
) -> Result<tokio::task::JoinHandle<()>> {
    let client = tessera_sdk::Client::connect(cfg)
        .await
        .with_context(|| format!("cannot reach the cluster's meta at {}", cfg.meta))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the S3 endpoint on {listen}"))?;
    info!(addr = %listen, "S3 endpoint on http://{listen}");
    // A response's headers and first body bytes leave in separate writes;
    // with Nagle's algorithm the second waits for the client's delayed ACK
    // (40 ms per small GET).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
    });
    // Bucket policies test the caller's address (aws:SourceIp).
    let app =
        tessera_s3::router(client, config).into_make_service_with_connect_info::<SocketAddr>();
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "S3 endpoint stopped");
        }
    }))
}

pub async fn run_s3(
    cluster: &Path,
    listen: SocketAddr,
    config: tessera_s3::GatewayConfig,
) -> Result<()> {
    let cfg = load_cluster(cluster)?;
    let task = serve_s3(&cfg, listen, config).await?;
    wait_for_signal().await?;
    task.abort();
    Ok(())
}

pub struct NodeOpts {
    pub data: PathBuf,
    pub listen: SocketAddr,
    pub advertise: Option<String>,
    pub zone: Option<String>,
    pub capacity: Option<u64>,
    pub heartbeat: Duration,
    pub upkeep: tessera_node::UpkeepConfig,
    pub metrics: Option<SocketAddr>,
}

pub fn node_config(cfg: &ClusterConfig, opts: NodeOpts) -> Result<NodeConfig> {
    Ok(NodeConfig {
        listen: opts.listen,
        advertise: opts.advertise,
        data_dir: opts.data,
        zone: opts.zone,
        capacity: opts.capacity,
        meta: cfg.meta_addrs()?,
        heartbeat_every: opts.heartbeat,
        upkeep: opts.upkeep,
    })
}

pub async fn run_node(cluster: &Path, opts: NodeOpts) -> Result<()> {
    let cfg = load_cluster(cluster)?;
    std::fs::create_dir_all(&opts.data)
        .with_context(|| format!("creating {}", opts.data.display()))?;
    let identity = server_identity(&cfg, &opts.data, role::NODE)?;
    let metrics = opts.metrics;
    let running = tessera_node::start(node_config(&cfg, opts)?, &identity).await?;
    if let Some(addr) = metrics {
        serve_metrics(addr, running.metrics_renderer()).await?;
    }
    wait_for_signal().await?;
    info!("node shutting down");
    running.shutdown().await;
    Ok(())
}
