//! Shared by the integration tests: an NBD server over in-memory exports,
//! started in-process on a 127.0.0.1 ephemeral TCP port and a unix socket,
//! and helpers to run the real clients against it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use tessera_nbd::{MemoryDevice, MemoryExports, NbdOptions, NbdServer};

/// A running server; stops when dropped.
pub struct TestServer {
    pub exports: Arc<MemoryExports>,
    pub tcp: SocketAddr,
    pub unix: PathBuf,
    pub dir: tempfile::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestServer {
    /// A server over `exports`.
    pub fn start(exports: Arc<MemoryExports>, options: NbdOptions) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let unix = dir.path().join("nbd.sock");
        let server = NbdServer::new(exports.clone(), options);
        let tcp = runtime.block_on(async {
            let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = tcp.local_addr().unwrap();
            let unix_listener = tokio::net::UnixListener::bind(&unix).unwrap();
            let s = server.clone();
            tokio::spawn(async move { s.serve_tcp(tcp).await });
            tokio::spawn(async move { server.serve_unix(unix_listener).await });
            addr
        });
        Self {
            exports,
            tcp,
            unix,
            dir,
            runtime: Some(runtime),
        }
    }

    /// The exports most tests use: `disk` (64 MiB, 4096-byte blocks),
    /// `disk512` (64 MiB, 512-byte blocks), `disk@snap` (a read-only
    /// snapshot of `disk` holding 1 MiB of 0xa5 at 4 MiB).
    pub fn standard() -> Self {
        Self::standard_with(NbdOptions::default())
    }

    /// [`TestServer::standard`] with other options.
    pub fn standard_with(options: NbdOptions) -> Self {
        let exports = Arc::new(MemoryExports::new());
        let disk = MemoryDevice::new(64 << 20, 4096).with_description("a 64 MiB test disk");
        disk.write_now(4 << 20, &vec![0xa5; 1 << 20]);
        exports.insert("disk@snap", Arc::new(disk.snapshot()));
        // The writable disk starts empty: tests write their own data.
        exports.insert(
            "disk",
            Arc::new(MemoryDevice::new(64 << 20, 4096).with_description("a 64 MiB test disk")),
        );
        exports.insert("disk512", Arc::new(MemoryDevice::new(64 << 20, 512)));
        Self::start(exports, options)
    }

    /// `nbd://127.0.0.1:PORT/EXPORT`.
    pub fn uri(&self, export: &str) -> String {
        format!("nbd://{}/{}", self.tcp, export)
    }

    /// `nbd+unix:///EXPORT?socket=PATH`.
    pub fn unix_uri(&self, export: &str) -> String {
        format!("nbd+unix:///{}?socket={}", export, self.unix.display())
    }

    pub fn device(&self, name: &str) -> Arc<MemoryDevice> {
        self.exports.device(name).unwrap()
    }

    /// Runs `f` on the server's runtime (for Rust-side clients).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.as_ref().unwrap().block_on(f)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Whether `tool` is on PATH. Missing: the test fails when CI=true (a CI
/// machine must have every client: tools/lib/prereqs.sh installs them),
/// and is skipped with a message otherwise.
pub fn have_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "{tool} is missing (CI=true): install it with tools/lib/prereqs.sh (ensure_nbd_tools)"
            );
        }
        eprintln!(
            "skipping: {tool} is not installed (tools/lib/prereqs.sh ensure_nbd_tools installs it)"
        );
    }
    found
}

/// Runs a command, panicking with its output if it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// A raw image of `size` bytes with data in a few places and holes
/// elsewhere (made sparse with truncate, so the holes are real).
pub fn sparse_image(path: &Path, size: u64) -> Vec<u8> {
    let mut contents = vec![0u8; size as usize];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for (start, len) in [
        (1u64 << 20, 3u64 << 20),
        (9 << 20, 20480),
        (size - 8192, 8192),
    ] {
        for b in &mut contents[start as usize..(start + len) as usize] {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
    }
    let file = std::fs::File::create(path).unwrap();
    file.set_len(size).unwrap();
    use std::os::unix::fs::FileExt;
    for (start, len) in [
        (1u64 << 20, 3u64 << 20),
        (9 << 20, 20480),
        (size - 8192, 8192),
    ] {
        file.write_all_at(&contents[start as usize..(start + len) as usize], start)
            .unwrap();
    }
    contents
}
