//! What every HTTP request meets before the S3 protocol layer: a request
//! id (in `x-amz-request-id`, in every XML error body, which s3s leaves
//! without one, on the gateway's log lines while the request is served,
//! and sent with the request's fragment reads and writes to the nodes), S3's limit on the size of the header section, the
//! counters behind `/metrics`, and the one log line of each refusal: a 4xx
//! is the client's problem (INFO, with the request id and S3 error code),
//! a 5xx the server's (ERROR).

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

/// S3 refuses requests whose headers exceed 8 KiB.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// Error bodies are small; a bigger one is passed on untouched.
const MAX_ERROR_BODY: usize = 64 * 1024;

const METHODS: [&str; 6] = ["GET", "HEAD", "PUT", "POST", "DELETE", "OTHER"];
const CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

#[derive(Default)]
pub struct GatewayMetrics {
    /// Requests by method and status class.
    requests: [[AtomicU64; 4]; 6],
    /// Seconds spent answering, by method, in microseconds (to the headers
    /// of the response: streaming bodies are not included).
    micros: [AtomicU64; 6],
    in_flight: AtomicU64,
    header_refusals: AtomicU64,
}

fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::PUT => 2,
        Method::POST => 3,
        Method::DELETE => 4,
        _ => 5,
    }
}

impl GatewayMetrics {
    /// The Prometheus text of these counters, and of `meta_round_trips`:
    /// the request frames the gateway sent to meta (`MetaClient::round_trips`;
    /// a batch is one), which divided by requests says what each costs meta.
    pub fn render(&self, meta_round_trips: u64) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP tessera_s3_requests_total S3 requests answered, by method and status class.\n# TYPE tessera_s3_requests_total counter"
        );
        for (m, row) in METHODS.iter().zip(&self.requests) {
            for (c, n) in CLASSES.iter().zip(row) {
                let _ = writeln!(
                    out,
                    "tessera_s3_requests_total{{method=\"{m}\",status=\"{c}\"}} {}",
                    n.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP tessera_s3_request_seconds_total Time to the response headers, by method.\n# TYPE tessera_s3_request_seconds_total counter"
        );
        for (m, us) in METHODS.iter().zip(&self.micros) {
            let _ = writeln!(
                out,
                "tessera_s3_request_seconds_total{{method=\"{m}\"}} {:.6}",
                us.load(Ordering::Relaxed) as f64 / 1e6
            );
        }
        let _ = writeln!(
            out,
            "# HELP tessera_s3_requests_in_flight Requests being answered.\n# TYPE tessera_s3_requests_in_flight gauge\ntessera_s3_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tessera_s3_header_refusals_total Requests refused for oversize headers.\n# TYPE tessera_s3_header_refusals_total counter\ntessera_s3_header_refusals_total {}",
            self.header_refusals.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tessera_s3_meta_round_trips_total Request frames sent to meta (a batch of requests is one).\n# TYPE tessera_s3_meta_round_trips_total counter\ntessera_s3_meta_round_trips_total {meta_round_trips}"
        );
        out
    }
}

fn error_xml(code: &str, message: &str, id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>{id}</RequestId></Error>"
    )
}

/// The middleware: see the module comment.
pub async fn edge(
    State(metrics): State<Arc<GatewayMetrics>>,
    req: Request,
    next: Next,
) -> Response {
    let request = tessera_types::RequestId::random();
    let id = request.to_string();
    let started = Instant::now();
    let m = method_index(req.method());
    let is_head = req.method() == Method::HEAD;
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let mut response = if header_bytes > MAX_HEADER_BYTES {
        metrics.header_refusals.fetch_add(1, Ordering::Relaxed);
        let body = error_xml(
            "RequestHeaderSectionTooLarge",
            &format!(
                "Your request header section exceeds the maximum allowed size of {MAX_HEADER_BYTES} bytes."
            ),
            &id,
        );
        (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/xml")],
            if is_head { String::new() } else { body },
        )
            .into_response()
    } else {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        // The id goes with every fragment request the SDK makes for this
        // request (nodes log it), and on every line logged while serving it.
        let span = tracing::info_span!("request", request_id = %id);
        let response = tessera_sdk::with_request_id(request, next.run(req))
            .instrument(span)
            .await;
        let (response, code) = with_request_id_in_error(response, &id).await;
        log_refusal(response.status(), code.as_deref(), &id, &method, &path);
        response
    };
    metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    let class = match response.status().as_u16() {
        100..=299 => 0,
        300..=399 => 1,
        400..=499 => 2,
        _ => 3,
    };
    metrics.requests[m][class].fetch_add(1, Ordering::Relaxed);
    metrics.micros[m].fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-amz-request-id", v);
    }
    // A refusal may be answered before the request's body was read (a key
    // too long, a bad tag, a part number out of range). On a kept-alive
    // connection the unread body could then be taken for the next request
    // (boto3 saw hyper's bare "400 Bad Request" about once in five runs):
    // the connection is closed after such an answer instead.
    if has_body && response.status().as_u16() >= 400 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// One line per refused request, with its request id and S3 error code:
/// ERROR for the server's own failures (5xx), INFO for the rest: 4xx (a
/// malformed or unsigned request, a missing key: the client's to fix) and
/// 501 NotImplemented (an operation this gateway does not offer; nothing
/// failed).
fn log_refusal(status: StatusCode, code: Option<&str>, id: &str, method: &Method, path: &str) {
    let code = code.unwrap_or("-");
    let status_code = status.as_u16();
    if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED {
        tracing::error!(request_id = %id, %method, path = %path, status = status_code, code = %code, "request failed");
    } else if status.is_client_error() || status.is_server_error() {
        tracing::info!(request_id = %id, %method, path = %path, status = status_code, code = %code, "request refused");
    }
}

/// s3s logs at ERROR every refusal it serializes, malformed XML bodies and
/// every 5xx it answers, client errors included and without the request
/// id; [`edge`] logs each refusal itself at the level its status deserves.
/// Binaries that host the gateway filter their log output with this:
/// `false` for s3s's ERROR events.
pub fn keep_log_event(meta: &tracing::Metadata<'_>) -> bool {
    let from_s3s = meta.target() == "s3s" || meta.target().starts_with("s3s::");
    !(from_s3s && *meta.level() == tracing::Level::ERROR)
}

/// Puts `<RequestId>` into an S3 error body that lacks one; returns the
/// error's `<Code>` too.
async fn with_request_id_in_error(response: Response, id: &str) -> (Response, Option<String>) {
    let is_xml_error = response.status().as_u16() >= 400
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.contains("xml"));
    if !is_xml_error {
        return (response, None);
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
        // Too big to be an error document, or broken: say only the status.
        parts.headers.remove(header::CONTENT_LENGTH);
        return (Response::from_parts(parts, Body::empty()), None);
    };
    let text = String::from_utf8_lossy(&bytes);
    let code = text
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code.to_string());
    let body = match text.rfind("</Error>") {
        Some(at) if !text.contains("<RequestId>") => {
            format!("{}<RequestId>{id}</RequestId>{}", &text[..at], &text[at..])
        }
        _ => text.into_owned(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    (Response::from_parts(parts, Body::from(body)), code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn error_bodies_get_the_request_id() {
        let r = (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/xml")],
            "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code></Error>",
        )
            .into_response();
        let (r, code) = with_request_id_in_error(r, "ABC").await;
        assert_eq!(code.as_deref(), Some("NoSuchKey"));
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><RequestId>ABC</RequestId></Error>"
        );
    }
}
