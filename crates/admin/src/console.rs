//! The web console: server-rendered pages (minijinja templates compiled
//! into the binary) that htmx refreshes and acts on, with htmx itself and
//! the stylesheet embedded too, so the console needs no network but the
//! admin address. A login form takes an admin token and keeps it in an
//! HttpOnly, SameSite=Strict cookie; actions are POSTs that must also carry
//! htmx's `HX-Request` header, which a form on another site cannot send.

use std::sync::LazyLock;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use minijinja::Environment;
use serde::{Deserialize, Serialize};

use crate::api::AppState;
use crate::error::ApiError;
use crate::history::{Charts, History};
use crate::status::{BucketDocument, KeyDocument, StatusDocument, VolumeDocument, human_bytes};

/// htmx 2 (npm package `htmx.org`, BSD-0 licence), as published.
const HTMX_JS: &str = include_str!("../assets/htmx.min.js");
const CONSOLE_CSS: &str = include_str!("../assets/console.css");
const COOKIE: &str = "tessera_admin";

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, text) in [
        ("layout.html", include_str!("../templates/layout.html")),
        ("login.html", include_str!("../templates/login.html")),
        ("index.html", include_str!("../templates/index.html")),
        ("overview.html", include_str!("../templates/overview.html")),
    ] {
        if let Err(e) = env.add_template(name, text) {
            // The templates are part of the binary and tested: a broken one
            // is a build mistake, shown on every page rather than hidden.
            tracing::error!(template = name, error = %e, "console template does not parse");
        }
    }
    env.add_filter("bytes", human_bytes);
    env.add_filter("fixed2", |x: f64| format!("{x:.2}"));
    env.add_filter("seconds", |ms: Option<u64>| match ms {
        Some(ms) => format!("{:.1} s", ms as f64 / 1000.0),
        None => "never".to_string(),
    });
    env
});

fn render(name: &str, ctx: impl Serialize) -> Response {
    match TEMPLATES
        .get_template(name)
        .and_then(|t| t.render(minijinja::Value::from_serialize(&ctx)))
    {
        Ok(html) => Html(html).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("console template {name}: {e}"),
        )
            .into_response(),
    }
}

/// The cluster at a glance, as the templates show it.
#[derive(Serialize)]
struct Overview {
    status: StatusDocument,
    buckets: Vec<BucketDocument>,
    volumes: Vec<VolumeDocument>,
    keys: Vec<KeyDocument>,
    summary: Summary,
    charts: Charts,
    /// The outcome of the action that rendered this page, if any.
    message: Option<Message>,
}

#[derive(Serialize)]
struct Message {
    ok: bool,
    text: String,
}

#[derive(Serialize, Debug, PartialEq)]
struct Summary {
    /// `ok`, `degraded` (redundancy reduced, or nodes not up) or
    /// `critical` (chunks at risk or lost).
    health: &'static str,
    up: usize,
    down: usize,
    out: usize,
    draining: usize,
    capacity: u64,
    used: u64,
    /// Percent of capacity used, 0-100.
    used_percent: u64,
    /// Seconds until the oldest garbage is collected (0: due now).
    garbage_collect_in_s: Option<u64>,
}

impl Summary {
    fn new(s: &StatusDocument, now_ms: u64) -> Self {
        let count = |state: &str| s.nodes.iter().filter(|n| n.state == state).count();
        let (up, down, out) = (count("up"), count("down"), count("out"));
        let capacity: u64 = s.nodes.iter().map(|n| n.capacity).sum();
        let used: u64 = s.nodes.iter().map(|n| n.used.min(n.capacity)).sum();
        let health = if s.chunks.at_risk + s.chunks.lost > 0 {
            "critical"
        } else if s.chunks.degraded > 0 || down + out > 0 {
            "degraded"
        } else {
            "ok"
        };
        Summary {
            health,
            up,
            down,
            out,
            draining: s.nodes.iter().filter(|n| n.admin == "draining").count(),
            capacity,
            used,
            used_percent: (used as u128 * 100)
                .checked_div(capacity as u128)
                .unwrap_or(0) as u64,
            garbage_collect_in_s: s
                .garbage
                .collect_from_ms
                .map(|at| at.saturating_sub(now_ms) / 1000),
        }
    }
}

async fn overview(state: &AppState, message: Option<Message>) -> Result<Overview, ApiError> {
    let status = state.status().await?;
    let charts = match state.history.lock() {
        Ok(h) => h.charts(),
        Err(_) => History::default().charts(),
    };
    Ok(Overview {
        charts,
        summary: Summary::new(&status, now_ms()),
        buckets: state.buckets().await?,
        volumes: state.volumes().await?,
        keys: state.keys().await?,
        status,
        message,
    })
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

/// Whether the request's cookie holds a token meta knows.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<bool, ApiError> {
    let Some(token) = cookie_token(headers) else {
        return Ok(false);
    };
    match state.check_token(token).await {
        Ok(()) => Ok(true),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => Ok(false),
        Err(e) => Err(e),
    }
}

#[derive(Serialize)]
struct LoginPage {
    error: Option<&'static str>,
}

async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match signed_in(&state, &headers).await {
        Ok(true) => match overview(&state, None).await {
            Ok(o) => render("index.html", o),
            Err(e) => e.into_response(),
        },
        Ok(false) => render("login.html", LoginPage { error: None }),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    let token = form.token.trim();
    match state.check_token(token).await {
        Ok(()) => {
            let mut resp = Redirect::to("/").into_response();
            // A token is 64 hex digits; anything else is not one and was
            // refused above, so it cannot break the header.
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
            )) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            let mut resp = render(
                "login.html",
                LoginPage {
                    error: Some("That token is not known to this cluster."),
                },
            );
            *resp.status_mut() = StatusCode::UNAUTHORIZED;
            resp
        }
        Err(e) => e.into_response(),
    }
}

async fn logout() -> Response {
    let mut resp = Redirect::to("/").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("tessera_admin=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    resp
}

/// The overview fragment htmx polls.
async fn overview_fragment(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match signed_in(&state, &headers).await {
        Ok(true) => match overview(&state, None).await {
            Ok(o) => render("overview.html", o),
            Err(e) => e.into_response(),
        },
        Ok(false) => ApiError::unauthorized("sign in again").into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Clone, Copy)]
enum NodeAction {
    Drain,
    Remove,
}

async fn act(state: &AppState, headers: &HeaderMap, id: &str, action: NodeAction) -> Response {
    if !headers.contains_key("hx-request") {
        return ApiError::bad_request("console actions come from the console (HX-Request)")
            .into_response();
    }
    match signed_in(state, headers).await {
        Ok(true) => {}
        Ok(false) => return ApiError::unauthorized("sign in again").into_response(),
        Err(e) => return e.into_response(),
    }
    let done = match action {
        NodeAction::Drain => state
            .drain(id)
            .await
            .map(|_| format!("Node {id} is draining: the repairer moves its fragments away.")),
        NodeAction::Remove => state
            .remove(id)
            .await
            .map(|_| format!("Node {id} was removed from the cluster.")),
    };
    let message = match done {
        Ok(text) => Message { ok: true, text },
        Err(e) => Message {
            ok: false,
            text: e.message,
        },
    };
    match overview(state, Some(message)).await {
        Ok(o) => render("overview.html", o),
        Err(e) => e.into_response(),
    }
}

async fn drain(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    act(&state, &headers, &id, NodeAction::Drain).await
}

async fn remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    act(&state, &headers, &id, NodeAction::Remove).await
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// `/`, `/login`, `/logout`, `/ui/...` and `/assets/...`.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/ui/overview", get(overview_fragment))
        .route("/ui/nodes/{id}/drain", post(drain))
        .route("/ui/nodes/{id}/remove", post(remove))
        .route(
            "/assets/htmx.min.js",
            get(|| async { asset("text/javascript", HTMX_JS) }),
        )
        .route(
            "/assets/console.css",
            get(|| async { asset("text/css", CONSOLE_CSS) }),
        )
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{
        BalanceDocument, ChunkHealthDocument, GarbageDocument, NodeDocument, RepairDocument,
        ScrubDocument,
    };

    fn node(id: &str, state: &str, admin: &str) -> NodeDocument {
        NodeDocument {
            id: id.into(),
            addr: "127.0.0.1:7701".into(),
            state: state.into(),
            admin: admin.into(),
            capacity: 1000,
            used: 250,
            zone: None,
            last_seen_ms: Some(400),
            fragments: 3,
            stored: 30,
            scrub: ScrubDocument {
                seq_done: 0,
                running: false,
                checked: 0,
                found: 0,
                last_done_ms: 0,
            },
            write_bytes_per_s: 0,
            read_bytes_per_s: 0,
        }
    }

    fn status(nodes: Vec<NodeDocument>, degraded: u64, at_risk: u64) -> StatusDocument {
        StatusDocument {
            epoch: 1,
            default_policy: "ec:4+2".into(),
            nodes,
            buckets: 1,
            objects: 2,
            chunks: ChunkHealthDocument {
                total: 10,
                healthy: 10 - degraded - at_risk,
                degraded,
                at_risk,
                lost: 0,
                misplaced: 0,
            },
            repair: RepairDocument {
                pending_fragments: 0,
                pending_bytes: 0,
                moving_fragments: 0,
                rebuilt_fragments: 0,
                rebuilt_bytes: 0,
                moved_fragments: 0,
                moved_bytes: 0,
                rate_bytes_per_s: 0,
                eta_s: None,
                active: false,
            },
            balance: BalanceDocument {
                fullest_over_fair: 1.0,
                max_deviation: 0.0,
            },
            scrub_seq: 0,
            corrupt_reports: 0,
            recent_corrupt: vec![],
            garbage: GarbageDocument {
                chunks: 1,
                fragments: 6,
                bytes: 600,
                oldest_ms: Some(1_000),
                collect_from_ms: Some(61_000),
                grace_ms: 60_000,
            },
            throughput: Default::default(),
            lifecycle: Default::default(),
        }
    }

    #[test]
    fn health_is_the_worst_of_nodes_and_chunks() {
        let all_up = vec![node("a", "up", "active"), node("b", "up", "draining")];
        let s = Summary::new(&status(all_up.clone(), 0, 0), 31_000);
        assert_eq!(
            (s.health, s.up, s.draining, s.used_percent),
            ("ok", 2, 1, 25)
        );
        assert_eq!(s.garbage_collect_in_s, Some(30));
        let one_down = vec![node("a", "up", "active"), node("b", "down", "active")];
        assert_eq!(
            Summary::new(&status(one_down, 0, 0), 31_000).health,
            "degraded"
        );
        assert_eq!(
            Summary::new(&status(all_up.clone(), 2, 0), 31_000).health,
            "degraded"
        );
        assert_eq!(
            Summary::new(&status(all_up, 0, 1), 31_000).health,
            "critical"
        );
        assert_eq!(Summary::new(&status(vec![], 0, 0), 31_000).used_percent, 0);
    }

    #[test]
    fn every_template_renders_an_overview() {
        let s = status(vec![node("00000000000000aa", "up", "active")], 0, 0);
        let o = Overview {
            charts: History::default().charts(),
            summary: Summary::new(&s, 31_000),
            status: s,
            buckets: vec![],
            volumes: vec![],
            keys: vec![],
            message: Some(Message {
                ok: false,
                text: "refused <b>".into(),
            }),
        };
        for name in ["index.html", "overview.html"] {
            let html = TEMPLATES
                .get_template(name)
                .unwrap()
                .render(minijinja::Value::from_serialize(&o))
                .unwrap();
            assert!(html.contains("00000000000000aa"), "{name}");
            assert!(html.contains("refused &lt;b&gt;"), "{name} escapes");
        }
        let login = TEMPLATES
            .get_template("login.html")
            .unwrap()
            .render(minijinja::Value::from_serialize(LoginPage { error: None }))
            .unwrap();
        assert!(login.contains("name=\"token\""));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; tessera_admin=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_token(&h), Some("abc"));
        h.insert(header::COOKIE, "tessera_admin=".parse().unwrap());
        assert_eq!(cookie_token(&h), None);
    }
}
