//! `tessera mount`: argument checks, running in the background unless
//! `--foreground`, where its log goes, and a clean unmount on
//! SIGINT/SIGTERM.

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

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
    /// Append the mount's log to this file. In the background the default
    /// is /var/log/tessera/mount-MOUNTPOINT.log (the mount point with `/`
    /// as `-`) where that can be written, else the same name under
    /// $XDG_STATE_HOME/tessera (~/.local/state/tessera); under systemd
    /// (JOURNAL_STREAM set) the journal. In the foreground: stderr.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Set by the background launcher on the process it starts: say
    /// "ready", or why mounting failed, on stdout (a pipe to the launcher),
    /// then let go of it.
    #[arg(long, hide = true)]
    pub notify_stdout: bool,
}

/// The line a foreground mount writes to its log when it is ready.
const READY: &str = "tessera mount: ready";
/// What the mount process says on its stdout pipe when it is ready; any
/// other text there is why it failed.
const READY_NOTICE: &str = "ready";
/// How long the launcher waits for the mount process to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// With `--foreground --log PATH`: makes PATH (appended to) this process's
/// stderr, before logging starts, so that every line (panics included)
/// goes there. Errors: PATH cannot be opened.
pub fn redirect_stderr(args: &MountArgs) -> Result<()> {
    use std::os::fd::AsRawFd;
    let Some(path) = args.log.as_ref().filter(|_| args.foreground) else {
        return Ok(());
    };
    let file = open_log(path)?;
    // SAFETY: dup2 of a file descriptor we own onto fd 2; no memory is
    // touched, and `file` closes only its own descriptor when dropped.
    if unsafe { libc::dup2(file.as_raw_fd(), libc::STDERR_FILENO) } < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("logging to {}", path.display()));
    }
    Ok(())
}

/// Opens `path` to append to, making its directory if needed.
fn open_log(path: &Path) -> Result<std::fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the log directory {}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening the log file {}", path.display()))
}

pub async fn run(args: MountArgs, log_ready: Result<()>) -> Result<()> {
    if !args.foreground {
        return launch_in_background(&args);
    }
    let notify = args.notify_stdout;
    let result = match log_ready {
        Ok(()) => serve(args).await,
        Err(e) => Err(e),
    };
    if notify && let Err(e) = &result {
        // Before readiness, the launcher is reading: it prints this. After
        // it, stdout is /dev/null and this goes nowhere, as it should.
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{e:#}");
        let _ = out.flush();
    }
    result
}

/// Tells the launcher (if any) the mount is ready, then points stdout at
/// /dev/null: the launcher exits and its end of the pipe closes.
fn say_ready(notify: bool) {
    if !notify {
        return;
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{READY_NOTICE}");
    let _ = out.flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 of a descriptor we own onto fd 1; touches no memory.
        unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

async fn serve(args: MountArgs) -> Result<()> {
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
    say_ready(args.notify_stdout);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut gone = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = gone.tick() => {
                if mounted.finished() {
                    // Unmounted from outside (fusermount3 -u).
                    mounted.wait().await?;
                    tracing::info!(at = %args.mountpoint.display(), "unmounted from outside; exiting");
                    return Ok(());
                }
            }
        }
    }
    tracing::info!("unmounting after saving open files");
    mounted.unmount().await?;
    Ok(())
}

/// Where a background mount of `mountpoint` logs when not told: see
/// `MountArgs::log`. Errors: neither place can be written.
fn default_log_path(mountpoint: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(mountpoint)
        .with_context(|| format!("resolving {}", mountpoint.display()))?;
    let name = format!(
        "mount-{}.log",
        abs.to_string_lossy().trim_matches('/').replace('/', "-")
    );
    let system = Path::new("/var/log/tessera");
    if std::fs::create_dir_all(system).is_ok() && open_log(&system.join(&name)).is_ok() {
        return Ok(system.join(name));
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::home_dir().map(|h| h.join(".local/state")))
        .context("no place for the mount's log: /var/log/tessera is not writable and HOME is not set (give --log)")?
        .join("tessera");
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    Ok(state.join(name))
}

/// Starts this same command with `--foreground` in its own process group
/// and returns once it says on its stdout (a pipe) that the mount is
/// ready, or fails with what it said instead.
fn launch_in_background(args: &MountArgs) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding the tessera binary")?;
    let mut argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    argv.push("--foreground".into());
    argv.push("--notify-stdout".into());
    // The mount outlives this process: its log goes where an operator
    // looks, not to a terminal that is about to close.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let log = match &args.log {
        Some(p) => Some(std::path::absolute(p).unwrap_or_else(|_| p.clone())),
        None if journal => None,
        None => {
            let p = default_log_path(&args.mountpoint)?;
            argv.push("--log".into());
            argv.push(p.clone().into());
            Some(p)
        }
    };
    // Until the child takes the log as its stderr itself (an argument it
    // cannot parse, say), what it says goes to the same file.
    let stderr = match &log {
        Some(p) => Stdio::from(open_log(p)?),
        None => Stdio::inherit(),
    };
    let mut child = std::process::Command::new(exe)
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .context("starting the mount process")?;
    let stdout = child.stdout.take().context("the mount process's stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let log_name = log
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the journal".into());
    let deadline = std::time::Instant::now() + READY_WITHIN;
    let mut said = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line == READY_NOTICE => {
                eprintln!(
                    "mounted {} at {} (process {}, log {log_name}; unmount with `fusermount3 -u {}` or kill -TERM {})",
                    args.target,
                    args.mountpoint.display(),
                    child.id(),
                    args.mountpoint.display(),
                    child.id()
                );
                return Ok(());
            }
            Ok(line) => said.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait()?;
                if said.is_empty() {
                    bail!(
                        "the mount process exited ({status}) before the mount was ready; see {log_name}"
                    );
                }
                bail!("{}", said.join("\n"));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the mount did not become ready within {} s; see {log_name}",
                    READY_WITHIN.as_secs()
                );
            }
        }
    }
}
