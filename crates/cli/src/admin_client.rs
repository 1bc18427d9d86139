//! The CLI's admin commands over the admin HTTP API (`--admin URL`, the
//! bearer token in `TESSERA_ADMIN_TOKEN`), for operators who reach a
//! cluster through its admin endpoint (a management network, a proxy)
//! rather than through meta's QUIC port with the cluster's certificates.
//! The API answers the same documents as the QUIC path's `--json`, so the
//! two print the same thing; without `--admin` nothing here is used.

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Where the admin API is and the token it takes.
pub struct AdminApi {
    base: String,
    token: String,
}

impl AdminApi {
    /// `base` is the admin endpoint (`http://HOST:PORT`); the token comes
    /// from `TESSERA_ADMIN_TOKEN`, never from the command line, so it does
    /// not show in `ps`.
    pub fn new(base: &str) -> Result<Self> {
        let token = std::env::var("TESSERA_ADMIN_TOKEN").map_err(|_| {
            anyhow!(
                "--admin needs the admin token in TESSERA_ADMIN_TOKEN \
                 (make one with `tessera admin-token create`)"
            )
        })?;
        let base = base.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            bail!(
                "--admin {base}: expected http://HOST:PORT (the admin endpoint serves plain HTTP)"
            );
        }
        Ok(AdminApi { base, token })
    }

    /// `method` on `path` (under `/v1/`); the JSON answer of a 2xx, or the
    /// API's error message for anything else.
    pub async fn call(&self, method: Method, path: &str) -> Result<serde_json::Value> {
        let url = format!("{}{path}", self.base);
        let request = Request::builder()
            .method(method.clone())
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.token))
            .body(Full::new(Bytes::new()))
            .context("building the admin API request")?;
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let response = client
            .request(request)
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.base))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("{method} {url}: the answer broke off"))?
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body)
            .with_context(|| format!("{method} {url}: answered {status} without JSON"))?;
        if status.is_success() {
            return Ok(json);
        }
        let message = json["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| json.to_string());
        if status == StatusCode::UNAUTHORIZED {
            bail!("the admin API refused the token in TESSERA_ADMIN_TOKEN: {message}");
        }
        bail!("{message}")
    }

    /// GET `path` and print its document as one line of JSON.
    pub async fn print(&self, path: &str) -> Result<()> {
        println!(
            "{}",
            serde_json::to_string(&self.call(Method::GET, path).await?)?
        );
        Ok(())
    }
}
