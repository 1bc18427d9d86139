use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tessera_net::{ClusterCa, Identity};
use tessera_types::Policy;

use crate::SdkError;

/// The cluster file: where meta is and which certificates to use. Relative
/// paths are relative to the file's own directory, so a cluster directory can
/// be moved or copied whole.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// QUIC address of the meta service: `HOST:PORT`, or the replicas of a
    /// meta group separated by commas (`HOST:PORT,HOST:PORT,HOST:PORT`).
    pub meta: String,
    pub ca_cert: PathBuf,
    /// Only on servers and admin machines: lets meta and nodes issue their own
    /// certificates at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_key: Option<PathBuf>,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Policy for buckets created without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_policy: Option<String>,
    /// Meta: a node silent this long is down (for example "30s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_after: Option<String>,
    /// Meta: a node silent this long is out (for example "10m").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_after: Option<String>,
    /// Meta: unreferenced data is deleted once older than this (for example "6h").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc_grace: Option<String>,
    /// The S3 access key id that owns buckets `tessera bucket create` makes
    /// without `--owner` (`tessera dev` sets its key here, so that its key
    /// can use what its CLI creates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_owner: Option<String>,
    #[serde(skip)]
    pub dir: PathBuf,
}

pub use tessera_net::check_host_port;

/// `IP:PORT`, or `HOST:PORT` resolved now (an IPv4 answer first).
fn resolve_endpoint(meta: &str) -> Result<SocketAddr, SdkError> {
    tessera_net::resolve_host_port(meta)
        .map_err(|why| SdkError::Config(format!("meta endpoint {meta:?}: {why}")))
}

fn read(path: &Path) -> Result<String, SdkError> {
    std::fs::read_to_string(path)
        .map_err(|e| SdkError::Config(format!("reading {}: {e}", path.display())))
}

impl ClusterConfig {
    pub fn load(path: &Path) -> Result<Self, SdkError> {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&read(path)?, &dir)
            .map_err(|e| SdkError::Config(format!("{}: {e}", path.display())))
    }

    /// A cluster file's text, with relative paths taken from `dir`.
    /// Errors: `Config` naming what is wrong (TOML syntax, a missing or
    /// mistyped field, a meta address that is not `HOST:PORT`).
    pub fn parse(text: &str, dir: &Path) -> Result<Self, SdkError> {
        let mut cfg: ClusterConfig =
            toml::from_str(text).map_err(|e| SdkError::Config(e.to_string()))?;
        if cfg.meta_endpoints().is_empty() {
            return Err(SdkError::Config("meta: no endpoint".into()));
        }
        for m in cfg.meta_endpoints() {
            check_host_port(m).map_err(SdkError::Config)?;
        }
        cfg.dir = dir.to_path_buf();
        Ok(cfg)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    /// The meta endpoints as written (`HOST:PORT` each, in order).
    pub fn meta_endpoints(&self) -> Vec<&str> {
        self.meta
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// The first meta endpoint's address (see `meta_addrs`).
    pub fn meta_addr(&self) -> Result<SocketAddr, SdkError> {
        self.meta_addrs()?
            .first()
            .copied()
            .ok_or_else(|| SdkError::Config("meta = \"\": no meta endpoint".into()))
    }

    /// Every meta endpoint's address, in order: `IP:PORT`, or `HOST:PORT`
    /// resolved now (an IPv4 answer first). Errors: `Config` for an
    /// endpoint that is not `HOST:PORT` or does not resolve.
    pub fn meta_addrs(&self) -> Result<Vec<SocketAddr>, SdkError> {
        self.meta_endpoints()
            .into_iter()
            .map(resolve_endpoint)
            .collect()
    }

    pub fn default_policy(&self) -> Result<Option<Policy>, SdkError> {
        self.default_policy
            .as_deref()
            .map(|p| {
                p.parse()
                    .map_err(|e: tessera_types::TypesError| SdkError::Config(e.to_string()))
            })
            .transpose()
    }

    /// The client identity the file names.
    pub fn identity(&self) -> Result<Identity, SdkError> {
        Identity::from_pem(
            &read(&self.resolve(&self.ca_cert))?,
            &read(&self.resolve(&self.cert))?,
            &read(&self.resolve(&self.key))?,
        )
        .map_err(|e| SdkError::Config(e.to_string()))
    }

    /// The CA, when this file carries its key.
    pub fn ca(&self) -> Result<Option<ClusterCa>, SdkError> {
        let Some(key) = &self.ca_key else {
            return Ok(None);
        };
        let ca = ClusterCa::from_pem(
            &read(&self.resolve(&self.ca_cert))?,
            &read(&self.resolve(key))?,
        )
        .map_err(|e| SdkError::Config(e.to_string()))?;
        Ok(Some(ca))
    }

    pub fn ca_cert_pem(&self) -> Result<String, SdkError> {
        read(&self.resolve(&self.ca_cert))
    }
}
