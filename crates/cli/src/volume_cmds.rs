//! Block volumes from the command line (`tessera volume ...`) and the NBD
//! server (`tessera nbd`): Tessera volumes as the exports of
//! `tessera_nbd`'s protocol server.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use serde_json::Value;
use tessera_nbd::{
    BlockDevice, DeviceError, ExportSummary, Exports, Extent, NbdOptions, NbdServer,
};
use tessera_sdk::{Client, ClusterConfig, ErrorCode, SdkError, Volume, VolumeInfo};
use tracing::{info, warn};

use crate::args::VolumeCommand;
use crate::servers::connect;
use crate::units::human_bytes;

/// `NAME@SNAP` as (NAME, SNAP).
fn split_snapshot(s: &str) -> Result<(&str, &str)> {
    match s.split_once('@') {
        Some((v, snap)) if !v.is_empty() && !snap.is_empty() => Ok((v, snap)),
        _ => bail!("{s:?}: expected VOLUME@SNAPSHOT"),
    }
}

/// The JSON document of a volume (`volume ls --json`, `volume info --json`):
/// the admin API's `GET /v1/volumes` document.
pub fn volume_document(v: &VolumeInfo, now_ms: u64) -> Value {
    serde_json::to_value(tessera_admin::status::VolumeDocument::new(v, now_ms))
        .unwrap_or(Value::Null)
}

/// This machine's host name (`localhost` if the kernel does not say).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub async fn volume(command: VolumeCommand) -> Result<()> {
    use VolumeCommand as V;
    match command {
        V::Create {
            name,
            size,
            policy,
            block_size,
            cluster,
        } => {
            let client = connect(&cluster).await?;
            let v = client
                .create_volume(&name, size, policy, block_size)
                .await?;
            println!(
                "volume {} created: {} ({}), {}, blocks of {} bytes",
                v.name,
                human_bytes(v.size),
                v.size,
                v.policy,
                v.block_size
            );
        }
        V::Ls { json, cluster } => {
            let client = connect(&cluster).await?;
            let vols = client.list_volumes().await?;
            let now = now_ms();
            if json {
                let docs: Vec<Value> = vols.iter().map(|v| volume_document(v, now)).collect();
                println!("{}", serde_json::to_string(&docs)?);
            } else {
                println!(
                    "{:<24} {:>12} {:>10} {:>12} {:>9}",
                    "NAME", "SIZE", "POLICY", "ALLOCATED", "SNAPSHOTS"
                );
                for v in &vols {
                    println!(
                        "{:<24} {:>12} {:>10} {:>12} {:>9}",
                        v.name,
                        human_bytes(v.size),
                        v.policy.to_string(),
                        human_bytes(v.allocated),
                        v.snapshots.len()
                    );
                }
            }
        }
        V::Info {
            name,
            json,
            cluster,
        } => {
            let client = connect(&cluster).await?;
            let v = client.volume_info(&name).await?;
            let doc = volume_document(&v, now_ms());
            if json {
                println!("{}", serde_json::to_string(&doc)?);
            } else {
                println!("name:       {}", v.name);
                println!("size:       {} ({} bytes)", human_bytes(v.size), v.size);
                println!("policy:     {}", v.policy);
                println!("block size: {}", v.block_size);
                println!("allocated:  {}", human_bytes(v.allocated));
                if let Some(o) = &v.origin {
                    println!("cloned from {o}");
                }
                match &v.attachment {
                    Some(a) if doc["attached"] == Value::Bool(true) => {
                        println!("attached:   by {} (epoch {})", a.holder, a.epoch)
                    }
                    _ => println!("attached:   no"),
                }
                for s in &v.snapshots {
                    println!("snapshot:   {}@{}", v.name, s.name);
                }
            }
        }
        V::Resize {
            name,
            size,
            allow_shrink,
            cluster,
        } => {
            let client = connect(&cluster).await?;
            let v = client.resize_volume(&name, size, allow_shrink).await?;
            println!("volume {} is now {}", v.name, human_bytes(v.size));
        }
        V::Rm { name, cluster } => {
            let client = connect(&cluster).await?;
            if name.contains('@') {
                let (vol, snap) = split_snapshot(&name)?;
                client.delete_snapshot(vol, snap).await?;
            } else {
                client.delete_volume(&name).await?;
            }
            println!("removed {name}");
        }
        V::Snapshot {
            name,
            snapshot,
            cluster,
        } => {
            let client = connect(&cluster).await?;
            client.snapshot_volume(&name, &snapshot).await?;
            println!("snapshot {name}@{snapshot} taken");
        }
        V::Snapshots {
            name,
            json,
            cluster,
        } => {
            let client = connect(&cluster).await?;
            let v = client.volume_info(&name).await?;
            if json {
                println!("{}", volume_document(&v, now_ms())["snapshots"]);
            } else {
                for s in &v.snapshots {
                    println!(
                        "{}@{}  {}  clones: {}",
                        v.name,
                        s.name,
                        human_bytes(s.allocated),
                        s.clones
                    );
                }
            }
        }
        V::Clone {
            source,
            new_name,
            cluster,
        } => {
            let (vol, snap) = split_snapshot(&source)?;
            let client = connect(&cluster).await?;
            client.clone_volume(vol, snap, &new_name).await?;
            println!("volume {new_name} cloned from {source}");
        }
        V::Rollback { source, cluster } => {
            let (vol, snap) = split_snapshot(&source)?;
            let client = connect(&cluster).await?;
            client.rollback_volume(vol, snap).await?;
            println!("volume {vol} rolled back to {source}");
        }
    }
    Ok(())
}

/// Tessera volumes as NBD exports: `NAME` is the volume, attached as its
/// only writer while any connection uses it; `NAME@SNAP` its snapshot,
/// read-only.
pub struct VolumeExports {
    client: Client,
    /// Who attaches (`host/pid`), shown by `volume info`.
    holder: String,
    /// Take volumes over from writers presumed dead.
    force: bool,
}

impl VolumeExports {
    pub fn new(client: Client, force: bool) -> Self {
        VolumeExports {
            client,
            holder: format!("nbd {}/{}", host_name(), std::process::id()),
            force,
        }
    }
}

/// An SDK error as the NBD errors the server answers with.
fn device_error(e: SdkError) -> DeviceError {
    let message = e.to_string();
    match e.code() {
        Some(ErrorCode::NoSuchVolume | ErrorCode::NotFound) => DeviceError::NotFound(message),
        Some(ErrorCode::VolumeBusy) => DeviceError::Busy(message),
        Some(ErrorCode::Fenced) => DeviceError::Shutdown(message),
        Some(ErrorCode::NoSpace) => DeviceError::NoSpace(message),
        Some(ErrorCode::BadRequest) => DeviceError::Invalid(message),
        _ => match e {
            SdkError::InvalidRange { .. } | SdkError::Invalid(_) => DeviceError::Invalid(message),
            _ => DeviceError::Io(message),
        },
    }
}

#[async_trait]
impl Exports for VolumeExports {
    async fn list(&self) -> Result<Vec<ExportSummary>, DeviceError> {
        let vols = self.client.list_volumes().await.map_err(device_error)?;
        let mut out = Vec::new();
        for v in vols {
            out.push(ExportSummary {
                name: v.name.clone(),
                description: format!("{} volume, {}", human_bytes(v.size), v.policy),
            });
            for s in &v.snapshots {
                out.push(ExportSummary {
                    name: format!("{}@{}", v.name, s.name),
                    description: format!("snapshot of {} (read-only)", v.name),
                });
            }
        }
        Ok(out)
    }

    async fn open(&self, name: &str) -> Result<Arc<dyn BlockDevice>, DeviceError> {
        let volume = match name.split_once('@') {
            Some((vol, snap)) => self.client.open_snapshot(vol, snap).await,
            None => {
                self.client
                    .open_volume(name, &self.holder, self.force)
                    .await
            }
        }
        .map_err(device_error)?;
        info!(export = name, epoch = volume.info().epoch, "volume opened");
        Ok(Arc::new(VolumeDevice {
            name: name.to_string(),
            volume,
        }))
    }
}

/// One open volume as an NBD block device.
struct VolumeDevice {
    name: String,
    volume: Volume,
}

#[async_trait]
impl BlockDevice for VolumeDevice {
    fn size(&self) -> u64 {
        self.volume.size()
    }

    fn block_size(&self) -> u32 {
        self.volume.block_size()
    }

    fn read_only(&self) -> bool {
        self.volume.read_only()
    }

    fn description(&self) -> String {
        let i = self.volume.info();
        format!("Tessera volume {}, {}", self.name, i.policy)
    }

    async fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>, DeviceError> {
        self.volume
            .read_at(offset, len as u64)
            .await
            .map_err(device_error)
    }

    async fn write(&self, offset: u64, data: Vec<u8>, fua: bool) -> Result<(), DeviceError> {
        self.volume
            .write_at(offset, &data, fua)
            .await
            .map_err(device_error)
    }

    async fn flush(&self) -> Result<(), DeviceError> {
        self.volume.flush().await.map_err(device_error)
    }

    async fn trim(&self, offset: u64, len: u32) -> Result<(), DeviceError> {
        self.volume
            .trim(offset, len as u64, false)
            .await
            .map_err(device_error)
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        len: u32,
        _no_hole: bool,
        fua: bool,
    ) -> Result<(), DeviceError> {
        // Zeros are never stored: a thin volume reads a hole as zeros, and
        // NO_HOLE (keep it allocated) cannot be promised by a thin device.
        self.volume
            .trim(offset, len as u64, fua)
            .await
            .map_err(device_error)
    }

    async fn block_status(&self, offset: u64, len: u32) -> Result<Vec<Extent>, DeviceError> {
        let runs = self
            .volume
            .allocation(offset, len as u64)
            .await
            .map_err(device_error)?;
        Ok(runs
            .into_iter()
            .map(|a| Extent {
                len: a.len as u32,
                hole: a.hole,
                zero: a.hole,
            })
            .collect())
    }

    async fn close(&self) {
        if let Err(e) = self.volume.close().await {
            warn!(export = %self.name, error = %e, "closing the volume failed: writes not flushed are lost");
        } else {
            info!(export = %self.name, "volume closed");
        }
    }
}

/// Where `tessera nbd` listens: `HOST:PORT` or `unix:PATH`.
#[derive(Debug, Clone)]
pub enum NbdListen {
    Tcp(std::net::SocketAddr),
    Unix(std::path::PathBuf),
}

pub fn parse_nbd_listen(s: &str) -> Result<NbdListen, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("unix: needs a path".into());
        }
        return Ok(NbdListen::Unix(path.into()));
    }
    s.parse()
        .map(NbdListen::Tcp)
        .map_err(|e| format!("{s:?}: expected HOST:PORT or unix:PATH ({e})"))
}

/// TLS for `tessera nbd`: required of every client (NBD's FORCEDTLS,
/// through `NBD_OPT_STARTTLS`), with client certificates from the cluster
/// CA.
#[derive(Debug, Clone, Default)]
pub struct NbdTls {
    /// The server's certificate and key (PEM files), signed by the cluster
    /// CA and naming the host clients dial; when absent, one is issued at
    /// start from the cluster CA (the cluster file must hold its key).
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

/// The rustls configuration for NBD's TLS: the server's certificate (given,
/// or issued now for `listen`'s address and this host's name), client
/// certificates checked against the cluster CA.
fn nbd_tls_config(
    cfg: &ClusterConfig,
    listen: &NbdListen,
    tls: &NbdTls,
) -> Result<Arc<rustls::ServerConfig>> {
    let ca_pem = cfg.ca_cert_pem()?;
    let identity = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => tessera_net::Identity::from_pem(
            &ca_pem,
            &std::fs::read_to_string(cert)
                .with_context(|| format!("reading {}", cert.display()))?,
            &std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?,
        )?,
        (None, None) => {
            let Some(ca) = cfg.ca()? else {
                bail!(
                    "--tls needs --tls-cert and --tls-key (a certificate from the cluster CA naming this host), or a cluster file that holds the CA's key"
                );
            };
            let mut names = Vec::new();
            if let NbdListen::Tcp(addr) = listen {
                names.push(addr.ip().to_string());
            }
            names.push(host_name());
            names.push("localhost".into());
            let (cert, key) = ca.issue_for("tessera nbd", &names)?;
            tessera_net::Identity::from_pem(&ca_pem, &cert, &key)?
        }
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    Ok(identity.tls_server_config()?)
}

/// A running NBD server: stop it with `stop`, which flushes and detaches
/// the volumes it has open.
pub struct NbdService {
    server: NbdServer,
    task: tokio::task::JoinHandle<()>,
}

impl NbdService {
    /// Stops accepting, then flushes and detaches every open volume (so
    /// another server may attach at once, without `--force`).
    pub async fn stop(self) {
        self.task.abort();
        self.server.close_devices().await;
    }
}

/// Starts serving volumes over NBD on `listen`, with TLS required when
/// `tls` is given.
pub async fn serve_nbd(
    cfg: &ClusterConfig,
    listen: &NbdListen,
    force: bool,
    tls: Option<&NbdTls>,
) -> Result<NbdService> {
    let client = Client::connect(cfg)
        .await
        .with_context(|| format!("cannot reach the cluster's meta at {}", cfg.meta))?;
    let options = match tls {
        Some(t) => NbdOptions {
            tls: Some(nbd_tls_config(cfg, listen, t)?),
            tls_required: true,
            ..NbdOptions::default()
        },
        None => NbdOptions::default(),
    };
    let server = NbdServer::new(Arc::new(VolumeExports::new(client, force)), options);
    let serving = server.clone();
    let task = match listen {
        NbdListen::Tcp(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the NBD server on {addr}"))?;
            info!(addr = %addr, "NBD server on nbd://{addr}/VOLUME");
            tokio::spawn(async move { serving.serve_tcp(l).await })
        }
        NbdListen::Unix(path) => {
            let _ = std::fs::remove_file(path);
            let l = tokio::net::UnixListener::bind(path)
                .with_context(|| format!("binding the NBD server on {}", path.display()))?;
            info!(path = %path.display(), "NBD server on nbd+unix:///VOLUME?socket={}", path.display());
            tokio::spawn(async move { serving.serve_unix(l).await })
        }
    };
    Ok(NbdService { server, task })
}
