//! `tessera mount`: argument checks, running in the background unless
//! `--foreground`, and a clean unmount on SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use tessera_sdk::{Client, ClusterConfig};

/// What `tessera mount` was asked.
#[derive(Debug, clap::Args)]
pub struct MountArgs {
    /// BUCKET or BUCKET/PREFIX: what the mount point shows.
    pub target: String,
    /// An existing, empty directory.
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub cluster: crate::args::ClusterArg,
    /// Refuse every change (EROFS).
    #[arg(long)]
    pub read_only: bool,
    /// Stay attached to the terminal (otherwise the mount runs in the
    /// background once it is ready).
    #[arg(long)]
    pub foreground: bool,
    /// Owner of files and directories that record none (default: the
    /// caller).
    #[arg(long)]
    pub uid: Option<u32>,
    #[arg(long)]
    pub gid: Option<u32>,
    /// Let other users than the one mounting use the mount.
    #[arg(long)]
    pub allow_other: bool,
    /// Act with this S3 access key's grant on the bucket: without one
    /// everything is EACCES, with `read` every change is.
    #[arg(long)]
    pub access_key: Option<String>,
    /// Serve Prometheus metrics (`/metrics`) and `/health` on this address.
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// The line a foreground mount prints when it is ready; the background
/// launcher waits for it.
const READY: &str = "tessera mount: ready";

pub async fn run(args: MountArgs) -> Result<()> {
    if !args.foreground {
        return launch_in_background(&args);
    }
    let (bucket, prefix) = match args.target.split_once('/') {
        Some((b, p)) if !p.trim_matches('/').is_empty() => {
            (b.to_string(), format!("{}/", p.trim_matches('/')))
        }
        Some((b, _)) => (b.to_string(), String::new()),
        None => (args.target.clone(), String::new()),
    };
    let cfg = ClusterConfig::load(&args.cluster.cluster)?;
    let client = Client::connect(&cfg)
        .await
        .with_context(|| format!("cannot reach the cluster's meta at {}", cfg.meta))?;
    // SAFETY: getuid and getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let config = tessera_fuse::MountConfig {
        bucket: bucket.clone(),
        prefix,
        read_only: args.read_only,
        uid: args.uid.unwrap_or(uid),
        gid: args.gid.unwrap_or(gid),
        access_key: args.access_key.clone(),
    };
    let mounted = tessera_fuse::mount(client, &args.mountpoint, config, args.allow_other)
        .await
        .with_context(|| {
            format!(
                "cannot mount {} at {}",
                args.target,
                args.mountpoint.display()
            )
        })?;
    if let Some(addr) = args.metrics_listen {
        crate::servers::serve_metrics(addr, mounted.metrics()).await?;
    }
    tracing::info!(target = %args.target, at = %args.mountpoint.display(), "mounted");
    eprintln!("{READY}: {} at {}", args.target, args.mountpoint.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut gone = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = gone.tick() => {
                if mounted.finished() {
                    // Unmounted from outside (fusermount3 -u).
                    mounted.wait().await?;
                    return Ok(());
                }
            }
        }
    }
    tracing::info!("unmounting after saving open files");
    mounted.unmount().await?;
    Ok(())
}

/// Starts this same command with `--foreground` in its own session and
/// returns once it says the mount is ready, or fails with what it said.
fn launch_in_background(args: &MountArgs) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding the tessera binary")?;
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    argv.push("--foreground".into());
    // The mount outlives this process, so its log goes to a file rather
    // than to a terminal or pipe that is about to close.
    let log_path = std::env::temp_dir().join(format!("tessera-mount.{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut child = std::process::Command::new(exe)
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the mount process")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let said = std::fs::read_to_string(&log_path).unwrap_or_default();
        if said.lines().any(|l| l.starts_with(READY)) {
            eprintln!(
                "mounted {} at {} (process {}, log {}; unmount with `fusermount3 -u {}` or kill -TERM {})",
                args.target,
                args.mountpoint.display(),
                child.id(),
                log_path.display(),
                args.mountpoint.display(),
                child.id()
            );
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("mount failed ({status}):\n{}", said.trim_end());
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "mount did not become ready within 60 s:\n{}",
                said.trim_end()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
