use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use tessera_types::Policy;

use crate::units::{parse_duration, parse_host_port, parse_size};
use crate::{client_cmds, dev, heal_cmds, servers};

/// Tessera: erasure-coded distributed object and block storage.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as text, or as one JSON object each (for log collectors).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "TESSERA_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Run the admin commands `status --json`, `bucket ls --json`, `key ls
    /// --json`, `volume ls --json`, `node drain ID` and `node rm ID`
    /// through the admin HTTP API at URL (http://HOST:PORT) instead of
    /// meta's QUIC port; the token is read from TESSERA_ADMIN_TOKEN.
    #[arg(
        long = "admin",
        global = true,
        env = "TESSERA_ADMIN_URL",
        value_name = "URL"
    )]
    pub admin_url: Option<String>,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args, Clone)]
pub struct ClusterArg {
    /// The cluster file written by `tessera init` or `tessera dev`.
    #[arg(
        long,
        env = "TESSERA_CLUSTER",
        global = true,
        default_value = "cluster.toml"
    )]
    pub cluster: PathBuf,
}

/// How the repairer runs, wherever it runs (inside meta, or on its own).
#[derive(Debug, Args, Clone)]
pub struct RepairArgs {
    /// Bytes per second repair and rebalancing may read and write (for example 100MiB; 0: unlimited).
    #[arg(long, value_parser = parse_size, default_value = "256MiB")]
    pub repair_rate: u64,
    /// Chunks repaired at once.
    #[arg(long, default_value_t = 4)]
    pub repair_parallel: usize,
}

/// A node's own upkeep: deep scrub and garbage collection.
#[derive(Debug, Args, Clone)]
pub struct UpkeepArgs {
    /// Deep-scrub everything this node holds this long after the last scrub (`tessera scrub now` starts one at once).
    #[arg(long, value_parser = parse_duration, default_value = "7d")]
    pub scrub_interval: Duration,
    /// Bytes per second a deep scrub reads (0: unlimited).
    #[arg(long, value_parser = parse_size, default_value = "64MiB")]
    pub scrub_rate: u64,
    /// How often to look for fragment files no record refers to (deleted once older than meta's --gc-grace).
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub gc_interval: Duration,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a cluster: its CA, client credentials and the cluster file DIR/cluster.toml.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Address the meta service will listen on, as clients reach it; for a highly available meta group, each replica's, separated by commas (HOST:PORT,HOST:PORT,HOST:PORT: three or five).
        #[arg(long, value_parser = crate::units::parse_meta_endpoints)]
        meta: String,
        /// Default policy for buckets created without one.
        #[arg(long, default_value = "ec:4+2")]
        policy: Policy,
        /// Overwrite an existing cluster file and CA.
        #[arg(long)]
        force: bool,
    },
    /// Run a metadata service replica on an address the cluster file names, or manage the meta group (`tessera meta status|add|remove`).
    #[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
    Meta {
        #[command(subcommand)]
        admin: Option<MetaCommand>,
        #[command(flatten)]
        cluster: ClusterArg,
        /// Directory for the metadata store (the Raft log and the state).
        #[arg(long, required = true)]
        data: Option<PathBuf>,
        /// Listen here: one of the cluster file's meta endpoints (default: the first), or the address of a replica that `tessera meta add` will add.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// A node silent this long is down (default 30s, or the cluster file's down_after).
        #[arg(long, value_parser = parse_duration)]
        down_after: Option<Duration>,
        /// A node silent this long is out (default 10m, or the cluster file's out_after).
        #[arg(long, value_parser = parse_duration)]
        out_after: Option<Duration>,
        /// Data no record refers to (deleted or overwritten objects, failed writes, replaced fragments) is deleted once older than this (default 6h, or the cluster file's gc_grace).
        #[arg(long, value_parser = parse_duration)]
        gc_grace: Option<Duration>,
        /// Multipart uploads neither completed nor aborted this long after they began are aborted.
        #[arg(long, value_parser = parse_duration, default_value = "7d")]
        upload_expiry: Duration,
        /// The length of a day for S3 lifecycle rules (their Days count in these; shorten it only to test rules).
        #[arg(long, value_parser = parse_duration, default_value = "1d")]
        lifecycle_day: Duration,
        /// Most expiries the lifecycle worker applies per second.
        #[arg(long, default_value_t = 100)]
        lifecycle_rate: u32,
        /// Do not run the repairer in this process (run `tessera repairer` instead).
        #[arg(long)]
        no_repair: bool,
        #[command(flatten)]
        repair: RepairArgs,
        /// Serve Prometheus metrics on http://ADDR/metrics.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// Snapshot the state every this many Raft log entries (the log behind a snapshot is purged; a replica that falls further behind, or a new one, gets the snapshot).
        #[arg(long, default_value_t = 20_000)]
        snapshot_every: u64,
        /// Serve the admin HTTP API (/v1/) and the web console (/) on http://ADDR/.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
    },
    /// Run the repairer on its own: rebuilds lost fragments, drains nodes, rebalances (meta runs one unless --no-repair).
    Repairer {
        #[command(flatten)]
        cluster: ClusterArg,
        #[command(flatten)]
        repair: RepairArgs,
    },
    /// Run the S3-compatible HTTP gateway.
    S3 {
        #[command(flatten)]
        cluster: ClusterArg,
        /// HTTP address to serve S3 on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Accept only requests signed for this region (default: any).
        #[arg(long)]
        region: Option<String>,
        /// Serve virtual-hosted-style requests for BUCKET.DOMAIN (repeatable).
        #[arg(long = "domain")]
        domains: Vec<String>,
        /// The master key for SSE-S3: a file of 64 hex digits (32 random
        /// bytes, e.g. `openssl rand -hex 32`). Without it, SSE-S3 writes
        /// and bucket default encryption are refused (NotImplemented);
        /// SSE-C needs no key here.
        #[arg(long, value_name = "FILE")]
        sse_master_key: Option<PathBuf>,
    },
    /// Block volumes: create, list, inspect, resize, remove, snapshot, clone, roll back.
    Volume {
        #[command(subcommand)]
        command: VolumeCommand,
    },
    /// Serve block volumes over NBD: export VOLUME (read-write, one writer at a time) or VOLUME@SNAP (read-only).
    Nbd {
        #[command(flatten)]
        cluster: ClusterArg,
        /// HOST:PORT, or unix:PATH for a Unix socket.
        #[arg(long, value_parser = crate::volume_cmds::parse_nbd_listen, default_value = "127.0.0.1:10809")]
        listen: crate::volume_cmds::NbdListen,
        /// Take volumes over from a writer that is presumed dead (it is fenced: it can never write again).
        #[arg(long)]
        force: bool,
        /// Require TLS (NBD STARTTLS) and client certificates from the cluster CA.
        #[arg(long)]
        tls: bool,
        /// The server's certificate (PEM, from the cluster CA, naming the host clients dial); default: issued at start from the cluster CA's key.
        #[arg(long, requires = "tls")]
        tls_cert: Option<PathBuf>,
        /// Its private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// S3 access keys: create, list, remove.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Deep scrub: every node re-reads and re-hashes what it holds.
    Scrub {
        #[command(subcommand)]
        command: ScrubCommand,
    },
    /// Run a storage node, or manage one (`tessera node drain ID`, `tessera node rm ID`).
    #[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
    Node {
        #[command(subcommand)]
        admin: Option<NodeCommand>,
        #[command(flatten)]
        cluster: ClusterArg,
        /// Directory for fragment files.
        #[arg(long, required = true)]
        data: Option<PathBuf>,
        /// QUIC address to serve fragments on.
        #[arg(long, required = true)]
        listen: Option<SocketAddr>,
        /// Address clients use to reach this node, if not --listen.
        #[arg(long)]
        advertise: Option<String>,
        /// Failure domain (rack, room, site); fragments of a chunk spread over zones.
        #[arg(long)]
        zone: Option<String>,
        /// Bytes offered to the cluster (for example 500G); default: the file system size.
        #[arg(long, value_parser = parse_size)]
        capacity: Option<u64>,
        /// Interval between heartbeats to meta.
        #[arg(long, value_parser = parse_duration, default_value = "2s")]
        heartbeat: Duration,
        #[command(flatten)]
        upkeep: UpkeepArgs,
        /// Serve Prometheus metrics on http://ADDR/metrics.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
    },
    /// Run a whole cluster in one process: meta and storage nodes on 127.0.0.1.
    Dev(dev::DevArgs),
    /// Load an S3 endpoint with PUTs then GETs of one object size; report
    /// throughput and latency percentiles.
    Bench(crate::bench::BenchArgs),
    /// Measure this machine's limits (synced disk writes, memory copy,
    /// loopback TCP and QUIC), the figures benchmarks are read against.
    BenchMachine(crate::machine::MachineArgs),
    /// Create, list and remove buckets.
    Bucket {
        #[command(subcommand)]
        command: BucketCommand,
    },
    /// Store a file (or stdin, `-`) as BUCKET/KEY.
    Put {
        file: PathBuf,
        target: String,
        #[arg(long)]
        content_type: Option<String>,
        /// User metadata as NAME=VALUE; repeatable.
        #[arg(long = "meta", value_name = "NAME=VALUE")]
        user_meta: Vec<String>,
        /// Cut the object into chunks of this size (at most 64MiB).
        #[arg(long, value_parser = parse_size, default_value = "4MiB")]
        chunk_size: u64,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Read BUCKET/KEY into a file (or stdout, `-`).
    Get {
        source: String,
        file: PathBuf,
        /// Only these bytes: START-END (inclusive, as HTTP ranges).
        #[arg(long)]
        range: Option<String>,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// List objects in BUCKET[/PREFIX].
    Ls {
        target: String,
        /// List every key instead of grouping by '/'.
        #[arg(long, short)]
        recursive: bool,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Delete BUCKET/KEY.
    Rm {
        target: String,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Mount BUCKET (or BUCKET/PREFIX) as a file system through FUSE.
    ///
    /// Files are objects (a/b/c.txt is the object a/b/c.txt) and
    /// directories are key prefixes; empty directories are kept by meta
    /// and never show in S3 listings. Consistency is close-to-open, as NFS:
    /// a file's writes are durable in the cluster and visible to other
    /// mounts, S3 and the SDK once close or fsync returns; every open looks
    /// at the cluster afresh. Renames of files and whole directories are
    /// atomic and copy no data; a write rewrites only the chunks it
    /// touches. Modes, owners and mtimes are kept as x-amz-meta-tessera-*
    /// metadata. Hard links (EPERM) and extended attributes (ENOTSUP) are
    /// not supported. SIGINT/SIGTERM save open files and unmount;
    /// `fusermount3 -u` works too.
    Mount(crate::mount::MountArgs),
    /// Rename BUCKET/KEY to KEY2 in the same bucket, or every object under
    /// BUCKET/PREFIX/ to PREFIX2/ (both ending in '/'): one atomic metadata
    /// step, no data copied.
    Mv {
        /// BUCKET/KEY or BUCKET/PREFIX/
        from: String,
        /// The new key or prefix (without the bucket).
        to: String,
        /// Replace an existing object at the new key.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Show an object's metadata and where its chunks are.
    Stat {
        target: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Admin API tokens: `tessera admin-token create` makes one.
    AdminToken {
        #[command(subcommand)]
        command: AdminTokenCommand,
    },
    /// S3 storage classes mapped to policies: objects written in a mapped class, or moved to it by a lifecycle transition, are stored (re-encoded) in its policy.
    StorageClass {
        #[command(subcommand)]
        command: StorageClassCommand,
    },
    /// Show nodes (up, down or out; capacity, usage) and cluster totals.
    Status {
        /// Print one JSON object, for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum MetaCommand {
    /// The meta group: leader, term, and each replica's role and replication lag.
    Status {
        /// Print {leader, term, committed, members: [{id, addr, role, match_index, lag}]}.
        #[arg(long)]
        json: bool,
    },
    /// Add the replica listening at ADDR (start it first with `tessera meta --listen ADDR`): it catches up, then votes.
    Add {
        #[arg(value_parser = parse_host_port)]
        addr: String,
    },
    /// Remove replica ID from the group (see `tessera meta status` for ids).
    Remove { id: u64 },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Move every fragment off node ID (it takes nothing new meanwhile, and stays readable).
    Drain {
        id: String,
        /// Return only when the node holds nothing.
        #[arg(long)]
        wait: bool,
    },
    /// Remove node ID from the cluster; refused while it still holds fragments.
    Rm { id: String },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an access key (it may create buckets); prints its id and secret.
    Create {
        name: String,
        /// Print {"access_key": ..., "secret_key": ...}.
        #[arg(long)]
        json: bool,
        /// Use this key id instead of a random one (16-128 letters and digits).
        #[arg(long)]
        access_key: Option<String>,
        /// Use this secret instead of a random one.
        #[arg(long)]
        secret_key: Option<String>,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// List access keys (without secrets) and their grants.
    Ls {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Remove an access key and its grants.
    Rm {
        id: String,
        #[command(flatten)]
        cluster: ClusterArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a thin volume (nothing is stored until written).
    Create {
        name: String,
        /// Bytes, for example 100GiB.
        #[arg(long, value_parser = parse_size)]
        size: u64,
        /// ec:K+M or rep:N (default: the cluster's).
        #[arg(long)]
        policy: Option<Policy>,
        /// 512 or 4096.
        #[arg(long, default_value_t = 4096)]
        block_size: u32,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// List volumes: name, size, policy, bytes allocated, snapshots.
    Ls {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// One volume in detail.
    Info {
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Grow a volume (shrinking drops data and needs --allow-shrink).
    Resize {
        name: String,
        #[arg(long, value_parser = parse_size)]
        size: u64,
        #[arg(long)]
        allow_shrink: bool,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Remove a volume with its snapshots (refused while attached or cloned from), or one snapshot (NAME@SNAP).
    Rm {
        name: String,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Take a snapshot of what the volume's writer has flushed (constant time).
    Snapshot {
        name: String,
        snapshot: String,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// List a volume's snapshots.
    Snapshots {
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Make a new volume from a snapshot (NAME@SNAP), sharing its data until written.
    Clone {
        source: String,
        new_name: String,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Make a volume read as one of its snapshots again (NAME@SNAP); refused while attached.
    Rollback {
        source: String,
        #[command(flatten)]
        cluster: ClusterArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum StorageClassCommand {
    /// Map CLASS (STANDARD_IA, ONEZONE_IA, GLACIER_IR, INTELLIGENT_TIERING, REDUCED_REDUNDANCY) to POLICY (ec:K+M or rep:N); STANDARD is always the bucket's policy.
    Set {
        class: String,
        policy: Policy,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Remove CLASS's mapping: its new writes take the bucket's policy; what is stored keeps its chunks.
    Rm {
        class: String,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// List the mapped classes and their policies.
    Ls {
        /// Print [{"class", "policy"}].
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminTokenCommand {
    /// Make a token for the admin API and console; prints it (the only
    /// time it is shown: meta keeps only its hash).
    Create {
        /// What to call it.
        #[arg(long, default_value = "admin")]
        name: String,
        /// Print {"token": ...}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// List tokens: the id (the start of the token's hash), name and creation time.
    Ls {
        /// Print [{"id", "name", "created_ms"}].
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Revoke the token whose id (as `ls` shows it, or any 8 or more of its first hex digits) is ID.
    Rm {
        id: String,
        #[command(flatten)]
        cluster: ClusterArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScrubCommand {
    /// Start a deep scrub of every node now.
    Now {
        /// Return only when every up node has finished it, with a summary.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        cluster: ClusterArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum BucketCommand {
    /// Create a bucket.
    Create {
        name: String,
        /// ec:K+M or rep:N; default: the cluster's default policy.
        #[arg(long)]
        policy: Option<Policy>,
        /// S3 access key id that owns the bucket (default: the cluster
        /// file's `bucket_owner`, which `tessera dev` sets to its key).
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// List buckets: creation time, policy, current objects, size (bytes
    /// of current and noncurrent versions) and name.
    Ls {
        /// Print the buckets as the admin API's GET /v1/buckets answers
        /// them (with grants and usage).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Remove an empty bucket.
    Rm {
        name: String,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Grant access key KEY read, write or owner access to BUCKET.
    Allow {
        bucket: String,
        key: String,
        /// read (list, get), write (and put, delete) or owner (and delete the bucket, grant).
        permission: tessera_proto::Permission,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Take away access key KEY's grant on BUCKET.
    Deny {
        bucket: String,
        key: String,
        #[command(flatten)]
        cluster: ClusterArg,
    },
}

fn init_logging(default: &str, format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // openraft says at INFO what an operator needs at DEBUG (every snapshot
    // step, every startup state); its warnings and errors stay.
    let asked = std::env::var("TESSERA_LOG").unwrap_or_default();
    if !asked.contains("openraft")
        && let Ok(quiet) = "openraft=warn".parse()
    {
        filter = filter.add_directive(quiet);
    }
    let keep = || tracing_subscriber::filter::filter_fn(tessera_s3::keep_log_event);
    let text = (format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_filter(keep())
    });
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(keep())
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .try_init();
}

pub async fn run(cli: Cli) -> Result<()> {
    if let Some(url) = &cli.admin_url {
        init_logging("warn", cli.log_format);
        return through_admin_api(url, cli.command).await;
    }
    match cli.command {
        Command::Init {
            dir,
            meta,
            policy,
            force,
        } => {
            init_logging("warn", cli.log_format);
            servers::init(&dir, &meta, policy, force)
        }
        Command::Meta {
            admin: Some(command),
            cluster,
            ..
        } => {
            init_logging("warn", cli.log_format);
            client_cmds::meta_group(command, &cluster).await
        }
        Command::Meta {
            admin: None,
            cluster,
            data,
            listen,
            down_after,
            out_after,
            gc_grace,
            upload_expiry,
            lifecycle_day,
            lifecycle_rate,
            no_repair,
            repair,
            metrics_listen,
            snapshot_every,
            admin_listen,
        } => {
            init_logging("info", cli.log_format);
            let Some(data) = data else {
                anyhow::bail!("tessera meta needs --data");
            };
            let opts = servers::MetaOpts {
                listen,
                down_after,
                out_after,
                gc_grace,
                upload_expiry: Some(upload_expiry),
                lifecycle_day: Some(lifecycle_day),
                lifecycle_rate: Some(lifecycle_rate),
                repair: (!no_repair).then_some(repair),
                metrics: metrics_listen,
                snapshot_every,
                admin: admin_listen,
            };
            servers::run_meta(&cluster.cluster, &data, opts).await
        }
        Command::Repairer { cluster, repair } => {
            init_logging("info", cli.log_format);
            heal_cmds::run_repairer(&cluster, &repair).await
        }
        Command::S3 {
            cluster,
            listen,
            region,
            domains,
            sse_master_key,
        } => {
            init_logging("info", cli.log_format);
            let sse_master_key = match sse_master_key {
                Some(path) => Some(std::sync::Arc::new(tessera_s3::MasterKey::load(&path)?)),
                None => None,
            };
            let config = tessera_s3::GatewayConfig {
                region,
                domains,
                sse_master_key,
            };
            servers::run_s3(&cluster.cluster, listen, config).await
        }
        Command::Key { command } => {
            init_logging("warn", cli.log_format);
            client_cmds::key(command).await
        }
        Command::Volume { command } => {
            init_logging("warn", cli.log_format);
            crate::volume_cmds::volume(command).await
        }
        Command::Nbd {
            cluster,
            listen,
            force,
            tls,
            tls_cert,
            tls_key,
        } => {
            init_logging("info", cli.log_format);
            let cfg = servers::load_cluster(&cluster.cluster)?;
            let tls = tls.then_some(crate::volume_cmds::NbdTls {
                cert: tls_cert,
                key: tls_key,
            });
            let service = crate::volume_cmds::serve_nbd(&cfg, &listen, force, tls.as_ref()).await?;
            servers::wait_for_signal().await?;
            tracing::info!("stopping: flushing and detaching open volumes");
            service.stop().await;
            Ok(())
        }
        Command::Scrub { command } => {
            init_logging("warn", cli.log_format);
            heal_cmds::scrub(command).await
        }
        Command::Node {
            admin: Some(command),
            cluster,
            ..
        } => {
            init_logging("warn", cli.log_format);
            heal_cmds::node(command, &cluster).await
        }
        Command::Node {
            admin: None,
            cluster,
            data,
            listen,
            advertise,
            zone,
            capacity,
            heartbeat,
            upkeep,
            metrics_listen,
        } => {
            init_logging("info", cli.log_format);
            let (Some(data), Some(listen)) = (data, listen) else {
                anyhow::bail!("tessera node needs --data and --listen");
            };
            let opts = servers::NodeOpts {
                data,
                listen,
                advertise,
                zone,
                capacity,
                heartbeat,
                upkeep: tessera_node::UpkeepConfig {
                    scrub_interval: upkeep.scrub_interval,
                    scrub_rate: upkeep.scrub_rate,
                    gc_interval: upkeep.gc_interval,
                },
                metrics: metrics_listen,
            };
            servers::run_node(&cluster.cluster, opts).await
        }
        Command::Dev(args) => {
            init_logging("info,quinn=warn", cli.log_format);
            dev::run(args).await
        }
        Command::Mount(args) => {
            // Before logging starts, so that it writes to the file.
            let log_ready = crate::mount::redirect_stderr(&args);
            init_logging(
                if args.foreground { "info" } else { "warn" },
                cli.log_format,
            );
            crate::mount::run(args, log_ready).await
        }
        Command::Bench(args) => {
            init_logging("warn", cli.log_format);
            crate::bench::run(args).await
        }
        Command::BenchMachine(args) => {
            init_logging("warn", cli.log_format);
            crate::machine::run(args).await
        }
        command => {
            init_logging("warn", cli.log_format);
            client_cmds::run(command).await
        }
    }
}

/// The admin commands that `--admin URL` sends to the admin HTTP API; any
/// other command is refused rather than quietly taking the QUIC path.
async fn through_admin_api(url: &str, command: Command) -> Result<()> {
    use crate::admin_client::AdminApi;
    use hyper::Method;
    let api = AdminApi::new(url)?;
    match command {
        Command::Status { json: true, .. } => api.print("/v1/status").await,
        Command::Bucket {
            command: BucketCommand::Ls { json: true, .. },
        } => api.print("/v1/buckets").await,
        Command::Key {
            command: KeyCommand::Ls { json: true, .. },
        } => api.print("/v1/keys").await,
        Command::Volume {
            command: VolumeCommand::Ls { json: true, .. },
        } => api.print("/v1/volumes").await,
        Command::Node {
            admin: Some(NodeCommand::Drain { id, wait: false }),
            ..
        } => {
            api.call(Method::POST, &format!("/v1/nodes/{id}/drain"))
                .await?;
            println!(
                "node {id} is draining: it takes no new fragments and the repairer moves its fragments away"
            );
            Ok(())
        }
        Command::Node {
            admin: Some(NodeCommand::Rm { id }),
            ..
        } => {
            api.call(Method::POST, &format!("/v1/nodes/{id}/remove"))
                .await?;
            println!("node {id} removed from the cluster");
            Ok(())
        }
        _ => anyhow::bail!(
            "--admin takes `status --json`, `bucket ls --json`, `key ls --json`, \
             `volume ls --json`, `node drain ID` (without --wait) and `node rm ID`; \
             run this command without --admin (it talks to meta over QUIC)"
        ),
    }
}
