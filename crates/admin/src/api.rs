//! The JSON API under `/v1/`: every route but the OpenAPI document needs
//! `Authorization: Bearer TOKEN` with a token meta knows (by its hash).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tessera_proto::ErrorCode;
use tessera_sdk::Client;
use tessera_types::NodeId;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{OpenApi, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::history::{History, SAMPLE_EVERY_S, Sample};
use crate::status::{
    BucketDocument, KeyDocument, NodeDocument, RepairStatusDocument, StatusDocument, VolumeDocument,
};
use crate::token::token_hash;

/// What every handler shares: the SDK client to meta, and the console's
/// chart history.
#[derive(Clone)]
pub struct AppState {
    pub client: Client,
    pub history: Arc<Mutex<History>>,
}

impl AppState {
    pub fn new(client: Client) -> Self {
        AppState {
            client,
            history: Arc::default(),
        }
    }

    /// Samples the cluster for the charts every [`SAMPLE_EVERY_S`]
    /// seconds, for as long as the admin endpoint runs.
    pub async fn sample_forever(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(SAMPLE_EVERY_S));
        loop {
            tick.tick().await;
            // A failed status leaves a gap; the page says meta is unreachable.
            if let Ok(s) = self.status().await
                && let Ok(mut h) = self.history.lock()
            {
                h.push(Sample::new(&s));
            }
        }
    }

    /// Whether meta knows `token`: `Ok` or a 401 (503 if meta cannot say).
    pub async fn check_token(&self, token: &str) -> Result<(), ApiError> {
        match self.client.admin_token(&token_hash(token)).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(ErrorCode::NotFound) => {
                Err(ApiError::unauthorized("unknown admin token"))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn status(&self) -> Result<StatusDocument, ApiError> {
        let status = self.client.status().await?;
        let garbage = self.client.garbage().await?;
        let lifecycle = self.client.lifecycle_status().await?;
        Ok(StatusDocument::new(&status, &garbage).with_lifecycle(&lifecycle))
    }

    pub async fn buckets(&self) -> Result<Vec<BucketDocument>, ApiError> {
        let buckets = self.client.list_buckets().await?;
        let grants = self.client.grants(None, None).await?;
        let usage = self.client.bucket_usage().await?;
        Ok(BucketDocument::list(&buckets, &grants, &usage))
    }

    pub async fn volumes(&self) -> Result<Vec<VolumeDocument>, ApiError> {
        let now = crate::console::now_ms();
        let vols = self.client.list_volumes().await?;
        Ok(vols.iter().map(|v| VolumeDocument::new(v, now)).collect())
    }

    pub async fn keys(&self) -> Result<Vec<KeyDocument>, ApiError> {
        let keys = self.client.list_keys().await?;
        let grants = self.client.grants(None, None).await?;
        Ok(KeyDocument::list(&keys, &grants))
    }

    /// Starts draining node `id` (meta refuses an unknown node).
    pub async fn drain(&self, id: &str) -> Result<NodeActionDocument, ApiError> {
        let node = parse_node(id)?;
        self.client.drain_node(node).await?;
        Ok(NodeActionDocument {
            node: node.to_string(),
            admin: "draining",
        })
    }

    /// Removes node `id` (meta refuses while it holds fragments).
    pub async fn remove(&self, id: &str) -> Result<NodeActionDocument, ApiError> {
        let node = parse_node(id)?;
        self.client.remove_node(node).await?;
        Ok(NodeActionDocument {
            node: node.to_string(),
            admin: "removed",
        })
    }
}

fn parse_node(id: &str) -> Result<NodeId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad_request(format!("{id:?} is not a node id (16 hex digits)")))
}

/// The token of `Authorization: Bearer TOKEN` (RFC 6750 section 2.1).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

async fn require_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = bearer(req.headers()).ok_or_else(|| {
        ApiError::unauthorized(
            "send Authorization: Bearer TOKEN (make a token with `tessera admin-token create`)",
        )
    })?;
    state.check_token(token).await?;
    Ok(next.run(req).await)
}

/// What a drain or removal did.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeActionDocument {
    pub node: String,
    /// The node's admin state now: `draining` or `removed`.
    pub admin: &'static str,
}

/// A deep scrub request's number.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScrubStartedDocument {
    pub seq: u64,
}

/// The OpenAPI document of `/v1/`, served at `/v1/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera admin API",
        description = "Cluster status, nodes, buckets, keys, repair and scrub. Every path needs `Authorization: Bearer TOKEN` (`tessera admin-token create`); refusals answer `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        get_status,
        list_nodes,
        get_node,
        drain_node,
        remove_node,
        list_buckets,
        list_volumes,
        list_keys,
        get_repair,
        start_scrub
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// Cluster status: the document `tessera status --json` prints.
#[utoipa::path(get, path = "/v1/status", tag = "cluster",
    responses(
        (status = 200, body = StatusDocument),
        (status = 401, description = "no token or an unknown one", body = ErrorBody),
    ))]
async fn get_status(State(s): State<AppState>) -> Result<Json<StatusDocument>, ApiError> {
    Ok(Json(s.status().await?))
}

/// Every node of the cluster map.
#[utoipa::path(get, path = "/v1/nodes", tag = "nodes",
    responses((status = 200, body = Vec<NodeDocument>), (status = 401, body = ErrorBody)))]
async fn list_nodes(State(s): State<AppState>) -> Result<Json<Vec<NodeDocument>>, ApiError> {
    Ok(Json(s.status().await?.nodes))
}

/// One node.
#[utoipa::path(get, path = "/v1/nodes/{id}", tag = "nodes",
    params(("id" = String, Path, description = "node id, 16 hex digits")),
    responses(
        (status = 200, body = NodeDocument),
        (status = 400, description = "not a node id", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "no such node", body = ErrorBody),
    ))]
async fn get_node(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<NodeDocument>, ApiError> {
    let node = parse_node(&id)?.to_string();
    s.status()
        .await?
        .nodes
        .into_iter()
        .find(|n| n.id == node)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no node {node}")))
}

/// Drains a node: it takes nothing new and the repairer moves its
/// fragments away (as `tessera node drain`).
#[utoipa::path(post, path = "/v1/nodes/{id}/drain", tag = "nodes",
    params(("id" = String, Path, description = "node id, 16 hex digits")),
    responses(
        (status = 202, description = "draining", body = NodeActionDocument),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "no such node", body = ErrorBody),
    ))]
async fn drain_node(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<NodeActionDocument>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(s.drain(&id).await?)))
}

/// Removes a node from the cluster map; refused while meta's records still
/// place fragments on it (drain it first), as `tessera node rm`.
#[utoipa::path(post, path = "/v1/nodes/{id}/remove", tag = "nodes",
    params(("id" = String, Path, description = "node id, 16 hex digits")),
    responses(
        (status = 200, description = "removed", body = NodeActionDocument),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "no such node", body = ErrorBody),
        (status = 409, description = "the node still holds fragments", body = ErrorBody),
    ))]
async fn remove_node(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<NodeActionDocument>, ApiError> {
    Ok(Json(s.remove(&id).await?))
}

/// Buckets with their policy, grants and usage (objects and bytes).
#[utoipa::path(get, path = "/v1/buckets", tag = "buckets",
    responses((status = 200, body = Vec<BucketDocument>), (status = 401, body = ErrorBody)))]
async fn list_buckets(State(s): State<AppState>) -> Result<Json<Vec<BucketDocument>>, ApiError> {
    Ok(Json(s.buckets().await?))
}

/// Block volumes with size, policy, allocation, snapshots and lease: the
/// document `tessera volume ls --json` prints.
#[utoipa::path(get, path = "/v1/volumes", tag = "volumes",
    responses((status = 200, body = Vec<VolumeDocument>), (status = 401, body = ErrorBody)))]
async fn list_volumes(State(s): State<AppState>) -> Result<Json<Vec<VolumeDocument>>, ApiError> {
    Ok(Json(s.volumes().await?))
}

/// S3 access keys (without secrets) and their grants: the document
/// `tessera key ls --json` prints.
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, body = Vec<KeyDocument>), (status = 401, body = ErrorBody)))]
async fn list_keys(State(s): State<AppState>) -> Result<Json<Vec<KeyDocument>>, ApiError> {
    Ok(Json(s.keys().await?))
}

/// Chunk health, repair progress and each node's deep scrub.
#[utoipa::path(get, path = "/v1/repair", tag = "repair",
    responses((status = 200, body = RepairStatusDocument), (status = 401, body = ErrorBody)))]
async fn get_repair(State(s): State<AppState>) -> Result<Json<RepairStatusDocument>, ApiError> {
    Ok(Json(RepairStatusDocument::new(&s.status().await?)))
}

/// Starts a deep scrub of every node (as `tessera scrub now`).
#[utoipa::path(post, path = "/v1/scrub", tag = "repair",
    responses((status = 202, body = ScrubStartedDocument), (status = 401, body = ErrorBody)))]
async fn start_scrub(
    State(s): State<AppState>,
) -> Result<(StatusCode, Json<ScrubStartedDocument>), ApiError> {
    let seq = s.client.start_scrub().await?;
    Ok((StatusCode::ACCEPTED, Json(ScrubStartedDocument { seq })))
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn no_such_route() -> ApiError {
    ApiError::not_found("no such admin API path (see /v1/openapi.json)")
}

/// `/v1/...`: the authenticated API and its open OpenAPI document.
pub fn routes(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/status", get(get_status))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/nodes/{id}", get(get_node))
        .route("/v1/nodes/{id}/drain", post(drain_node))
        .route("/v1/nodes/{id}/remove", post(remove_node))
        .route("/v1/buckets", get(list_buckets))
        .route("/v1/keys", get(list_keys))
        .route("/v1/volumes", get(list_volumes))
        .route("/v1/repair", get(get_repair))
        .route("/v1/scrub", post(start_scrub))
        .route("/v1/{*rest}", axum::routing::any(no_such_route))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state);
    Router::new()
        .route("/v1/openapi.json", get(openapi_json))
        .merge(api)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_as_rfc_6750_says() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            bearer(&h).map(str::to_string)
        };
        assert_eq!(with("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(with("bearer abc").as_deref(), Some("abc"));
        assert_eq!(with("Basic abc"), None);
        assert_eq!(with("Bearer "), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn the_openapi_document_names_every_route_and_the_bearer_scheme() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        for path in [
            "/v1/status",
            "/v1/nodes",
            "/v1/nodes/{id}",
            "/v1/nodes/{id}/drain",
            "/v1/nodes/{id}/remove",
            "/v1/buckets",
            "/v1/keys",
            "/v1/repair",
            "/v1/scrub",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert!(doc["components"]["schemas"]["StatusDocument"].is_object());
    }
}
