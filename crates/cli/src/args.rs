use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use tessera_types::Policy;

use crate::units::{parse_duration, parse_host_port, parse_size};
use crate::{client_cmds, dev, servers};

/// Tessera: erasure-coded distributed object and block storage.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a cluster: its CA, client credentials and the cluster file DIR/cluster.toml.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Address the meta service will listen on, as clients reach it.
        #[arg(long, value_parser = parse_host_port)]
        meta: String,
        /// Default policy for buckets created without one.
        #[arg(long, default_value = "ec:4+2")]
        policy: Policy,
        /// Overwrite an existing cluster file and CA.
        #[arg(long)]
        force: bool,
    },
    /// Run the metadata service on the address the cluster file names.
    Meta {
        #[command(flatten)]
        cluster: ClusterArg,
        /// Directory for the metadata store.
        #[arg(long)]
        data: PathBuf,
        /// Listen here instead of the cluster file's address.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// A node silent this long is down (default 30s, or the cluster file's down_after).
        #[arg(long, value_parser = parse_duration)]
        down_after: Option<Duration>,
        /// A node silent this long is out (default 10m, or the cluster file's out_after).
        #[arg(long, value_parser = parse_duration)]
        out_after: Option<Duration>,
        /// Serve Prometheus metrics on http://ADDR/metrics.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
    },
    /// Run a storage node.
    Node {
        #[command(flatten)]
        cluster: ClusterArg,
        /// Directory for fragment files.
        #[arg(long)]
        data: PathBuf,
        /// QUIC address to serve fragments on.
        #[arg(long)]
        listen: SocketAddr,
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
        /// Serve Prometheus metrics on http://ADDR/metrics.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
    },
    /// Run a whole cluster in one process: meta and storage nodes on 127.0.0.1.
    Dev(dev::DevArgs),
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
    /// Show an object's metadata and where its chunks are.
    Stat {
        target: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArg,
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
pub enum BucketCommand {
    /// Create a bucket.
    Create {
        name: String,
        /// ec:K+M or rep:N; default: the cluster's default policy.
        #[arg(long)]
        policy: Option<Policy>,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// List buckets.
    Ls {
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Remove an empty bucket.
    Rm {
        name: String,
        #[command(flatten)]
        cluster: ClusterArg,
    },
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init {
            dir,
            meta,
            policy,
            force,
        } => {
            init_logging("warn");
            servers::init(&dir, &meta, policy, force)
        }
        Command::Meta {
            cluster,
            data,
            listen,
            down_after,
            out_after,
            metrics_listen,
        } => {
            init_logging("info");
            let liveness = (down_after, out_after);
            servers::run_meta(&cluster.cluster, &data, listen, liveness, metrics_listen).await
        }
        Command::Node {
            cluster,
            data,
            listen,
            advertise,
            zone,
            capacity,
            heartbeat,
            metrics_listen,
        } => {
            init_logging("info");
            let opts = servers::NodeOpts {
                data,
                listen,
                advertise,
                zone,
                capacity,
                heartbeat,
                metrics: metrics_listen,
            };
            servers::run_node(&cluster.cluster, opts).await
        }
        Command::Dev(args) => {
            init_logging("info,quinn=warn");
            dev::run(args).await
        }
        command => {
            init_logging("warn");
            client_cmds::run(command).await
        }
    }
}
