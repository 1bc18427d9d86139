//! Serves in-memory exports over NBD, to try clients against the protocol
//! layer: `cargo run -p tessera-nbd --example memory_server -- 127.0.0.1:10809`
//! then e.g. `nbdinfo --list nbd://127.0.0.1` or `nbdinfo --map nbd://127.0.0.1/disk`.
//! Exports: `disk` (1 GiB, 4096-byte blocks), `disk512` (64 MiB, 512-byte
//! blocks) and `disk@snap` (a read-only snapshot of `disk` with 1 MiB of data).

use std::sync::Arc;

use tessera_nbd::{MemoryDevice, MemoryExports, NbdOptions, NbdServer};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:10809".to_string());
    let exports = Arc::new(MemoryExports::new());
    let disk = MemoryDevice::new(1 << 30, 4096).with_description("1 GiB in memory");
    disk.write_now(4 << 20, &vec![0xa5; 1 << 20]);
    exports.insert("disk@snap", Arc::new(disk.snapshot()));
    exports.insert("disk", Arc::new(disk));
    exports.insert("disk512", Arc::new(MemoryDevice::new(64 << 20, 512)));
    let server = NbdServer::new(exports, NbdOptions::default());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("serving NBD on {addr}");
    server.serve_tcp(listener).await;
    Ok(())
}
