//! The admin HTTP API and the web console: JSON under `/v1/` for scripts
//! and automation (described by an OpenAPI document generated from this
//! code, served at `/v1/openapi.json`), and server-rendered HTML pages with
//! htmx at `/` for people. Both read and change the cluster through
//! `tessera-sdk` calls to meta, like the CLI.
//!
//! Owns the HTTP shapes of cluster status, nodes, buckets, keys and repair
//! progress; admin tokens (drawn here, only their BLAKE3 hash goes to
//! meta); the console's templates and embedded assets. It must not hold
//! storage or placement logic, nor decide anything meta decides (a node
//! that still holds data is refused by meta, not here).

mod api;
mod console;
mod error;
mod history;
pub mod status;
pub mod token;

use std::net::SocketAddr;

use axum::Router;
use tessera_sdk::Client;
use tracing::info;

pub use api::ApiDoc;
pub use error::AdminError;
pub use status::{StatusDocument, ThroughputDocument, human_bytes};

/// The whole admin surface: `/v1/...` (bearer token), `/v1/openapi.json`
/// (open), and the console at `/` (a cookie set by its login form).
fn router(state: api::AppState) -> Router {
    api::routes(state.clone()).merge(console::routes(state))
}

/// Serves the admin API and console on `addr`, and samples the cluster
/// for the console's charts, until the returned task is aborted.
pub async fn serve(
    addr: SocketAddr,
    client: Client,
) -> Result<tokio::task::JoinHandle<()>, AdminError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })?;
    info!(%addr, "admin API and console on http://{addr}/");
    let state = api::AppState::new(client);
    let app = router(state.clone());
    Ok(tokio::spawn(async move {
        tokio::select! {
            served = axum::serve(listener, app).into_future() => {
                if let Err(e) = served {
                    tracing::warn!(error = %e, "admin endpoint stopped");
                }
            }
            () = state.sample_forever() => {}
        }
    }))
}
