//! Cross-origin resource sharing (S3 User Guide, "Using cross-origin
//! resource sharing (CORS)"; S3 API reference, "Appendix: OPTIONS
//! object"): a bucket's CORS rules answer browsers' preflight `OPTIONS`
//! requests and add `Access-Control-*` headers to the answers of
//! cross-origin requests (presigned ones too: the headers depend only on
//! the `Origin` and the method, never on who signed).
//!
//! The matching is pure ([`preflight`], [`rule_for`]); [`cors`] is the
//! middleware that reads the bucket's rules from meta only for requests
//! that carry an `Origin`.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tessera_proto::{CorsRule, ErrorCode};
use tessera_sdk::Client;

use crate::gateway::bucket_of_request;

/// Methods a CORS rule may allow (S3 API reference, PutBucketCors,
/// `AllowedMethod`).
pub(crate) const CORS_METHODS: [&str; 5] = ["GET", "PUT", "HEAD", "POST", "DELETE"];

/// Whether `text` matches `pattern`, in which one `*` stands for any run
/// of characters (S3 allows at most one per origin and header).
fn wildcard(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.len() >= head.len() + tail.len() && text.starts_with(head) && text.ends_with(tail)
        }
    }
}

fn origin_allowed(rule: &CorsRule, origin: &str) -> bool {
    rule.allowed_origins.iter().any(|o| wildcard(o, origin))
}

fn method_allowed(rule: &CorsRule, method: &str) -> bool {
    rule.allowed_methods.iter().any(|m| m == method)
}

/// Header names compare without regard to case.
fn header_allowed(rule: &CorsRule, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    rule.allowed_headers
        .iter()
        .any(|h| wildcard(&h.to_ascii_lowercase(), &name))
}

/// The first rule allowing a preflight from `origin` for `method` with
/// every header of `headers` (S3 evaluates rules in order and the first
/// match wins).
pub(crate) fn preflight<'r>(
    rules: &'r [CorsRule],
    origin: &str,
    method: &str,
    headers: &[&str],
) -> Option<&'r CorsRule> {
    rules.iter().find(|r| {
        origin_allowed(r, origin)
            && method_allowed(r, method)
            && headers.iter().all(|h| header_allowed(r, h))
    })
}

/// The first rule allowing an actual request from `origin` by `method`.
pub(crate) fn rule_for<'r>(
    rules: &'r [CorsRule],
    origin: &str,
    method: &str,
) -> Option<&'r CorsRule> {
    rules
        .iter()
        .find(|r| origin_allowed(r, origin) && method_allowed(r, method))
}

/// The `Access-Control-*` headers `rule` gives a request from `origin`;
/// `requested_headers` only for a preflight. A rule allowing every origin
/// (`*`) answers `*` and no credentials, as S3 does; any other echoes the
/// origin and allows credentials.
pub(crate) fn allow_headers(
    rule: &CorsRule,
    origin: &str,
    requested_headers: &[&str],
) -> Vec<(HeaderName, String)> {
    let any_origin = rule.allowed_origins.iter().any(|o| o == "*");
    let mut out = vec![(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        if any_origin { "*" } else { origin }.to_string(),
    )];
    out.push((
        header::ACCESS_CONTROL_ALLOW_METHODS,
        rule.allowed_methods.join(", "),
    ));
    if !any_origin {
        out.push((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true".into()));
    }
    if !requested_headers.is_empty() {
        out.push((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            requested_headers.join(", "),
        ));
    }
    if !rule.expose_headers.is_empty() {
        out.push((
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            rule.expose_headers.join(", "),
        ));
    }
    if let Some(age) = rule.max_age_seconds {
        out.push((header::ACCESS_CONTROL_MAX_AGE, age.to_string()));
    }
    out
}

/// What a CORS answer varies by, for caches between browser and gateway.
const VARY: &str = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method";

/// What the middleware needs: meta, and the gateway's virtual-host domains
/// to find the bucket a request names.
#[derive(Clone)]
pub struct CorsState {
    pub client: Client,
    pub domains: Vec<String>,
}

fn header_str<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A refusal in S3's error form (the edge adds the request id).
fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    (status, [(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

fn insert_all(headers: &mut HeaderMap, pairs: Vec<(HeaderName, String)>) {
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    headers.insert(header::VARY, HeaderValue::from_static(VARY));
}

/// The middleware: answers `OPTIONS` preflights from the bucket's rules
/// and adds the matching rule's headers to other requests with an
/// `Origin`. Requests without one cost nothing.
pub async fn cors(State(state): State<CorsState>, req: Request, next: Next) -> Response {
    let origin = header_str(req.headers(), &header::ORIGIN).map(str::to_string);
    let bucket = bucket_of_request(req.headers(), req.uri(), &state.domains);
    if req.method() == Method::OPTIONS {
        return answer_preflight(&state, req.headers(), origin, bucket).await;
    }
    let (Some(origin), Some(bucket)) = (origin, bucket) else {
        return next.run(req).await;
    };
    let method = req.method().as_str().to_string();
    let (mut response, access) = tokio::join!(next.run(req), state.client.bucket_access(&bucket));
    if let Ok(access) = access
        && let Some(rule) = rule_for(&access.cors, &origin, &method)
    {
        insert_all(response.headers_mut(), allow_headers(rule, &origin, &[]));
    }
    response
}

/// A preflight (S3 API reference, "Appendix: OPTIONS object"): 400 without
/// `Origin` or with an `Access-Control-Request-Method` that no rule could
/// name, 403 (as for no match) without that header, 403
/// `AccessForbidden` when the bucket has no CORS rules or none allows the
/// request, else 200 with the first matching rule's headers. Preflights
/// are never signed.
async fn answer_preflight(
    state: &CorsState,
    headers: &HeaderMap,
    origin: Option<String>,
    bucket: Option<String>,
) -> Response {
    let Some(origin) = origin else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Insufficient information. Origin request header needed.",
        );
    };
    // Without a method to ask about, no rule can allow the request.
    let method = header_str(headers, &header::ACCESS_CONTROL_REQUEST_METHOD).unwrap_or("");
    if !method.is_empty() && !CORS_METHODS.contains(&method) {
        return refusal(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Invalid Access-Control-Request-Method.",
        );
    }
    let Some(bucket) = bucket else {
        return refusal(
            StatusCode::FORBIDDEN,
            "AccessForbidden",
            "CORSResponse: Bucket not found",
        );
    };
    let requested: Vec<&str> = header_str(headers, &header::ACCESS_CONTROL_REQUEST_HEADERS)
        .map(|h| {
            h.split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let access = match state.client.bucket_access(&bucket).await {
        Ok(a) => a,
        Err(e) if e.code() == Some(ErrorCode::NoSuchBucket) => {
            return refusal(
                StatusCode::NOT_FOUND,
                "NoSuchBucket",
                "The specified bucket does not exist",
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading CORS rules");
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "Please reduce your request rate.",
            );
        }
    };
    if access.cors.is_empty() {
        return refusal(
            StatusCode::FORBIDDEN,
            "AccessForbidden",
            "CORSResponse: CORS is not enabled for this bucket.",
        );
    }
    let Some(rule) = preflight(&access.cors, &origin, method, &requested) else {
        return refusal(
            StatusCode::FORBIDDEN,
            "AccessForbidden",
            "CORSResponse: This CORS request is not allowed. This is usually because the evaluation of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
        );
    };
    let mut response = StatusCode::OK.into_response();
    insert_all(
        response.headers_mut(),
        allow_headers(rule, &origin, &requested),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> CorsRule {
        CorsRule {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_methods: methods.iter().map(|s| s.to_string()).collect(),
            allowed_headers: headers.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn origins_match_with_one_wildcard() {
        assert!(wildcard("*", ""));
        assert!(wildcard("*", "https://a.example"));
        assert!(wildcard("https://*.example", "https://a.example"));
        assert!(!wildcard("https://*.example", "http://a.example"));
        assert!(wildcard("*suffix", "foo.suffix"));
        assert!(wildcard("start*end", "startend"));
        assert!(!wildcard("start*end", "starten"));
        // The head and tail may not overlap.
        assert!(!wildcard("ab*ba", "aba"));
        assert!(wildcard("https://exact", "https://exact"));
        assert!(!wildcard("https://exact", "https://exact.evil"));
    }

    #[test]
    fn preflight_needs_origin_method_and_every_header_and_takes_the_first_rule() {
        let rules = vec![
            rule(&["https://a.example"], &["GET"], &[]),
            rule(
                &["https://*.example"],
                &["PUT", "POST"],
                &["x-amz-*", "Content-Type"],
            ),
            rule(&["*"], &["GET"], &["*"]),
        ];
        let first = preflight(&rules, "https://a.example", "GET", &[]).unwrap();
        assert_eq!(first, &rules[0]);
        // A header the first rule does not allow falls to a later rule.
        let any = preflight(&rules, "https://a.example", "GET", &["X-Custom"]).unwrap();
        assert_eq!(any, &rules[2]);
        let put = preflight(
            &rules,
            "https://b.example",
            "PUT",
            &["x-amz-meta-a", "content-type"],
        )
        .unwrap();
        assert_eq!(put, &rules[1]);
        assert!(preflight(&rules, "https://b.example", "PUT", &["x-other"]).is_none());
        assert!(preflight(&rules, "https://b.example", "DELETE", &[]).is_none());
        assert!(preflight(&rules, "https://evil.test", "PUT", &[]).is_none());
        assert!(preflight(&[], "https://a.example", "GET", &[]).is_none());
        // Methods compare exactly (S3's are upper-case).
        assert!(rule_for(&rules, "https://b.example", "put").is_none());
        assert_eq!(
            rule_for(&rules, "https://b.example", "POST"),
            Some(&rules[1])
        );
    }

    #[test]
    fn answers_echo_the_origin_unless_any_origin_is_allowed() {
        let mut r = rule(&["https://a.example"], &["GET", "PUT"], &["*"]);
        r.expose_headers = vec!["ETag".into(), "x-amz-request-id".into()];
        r.max_age_seconds = Some(3000);
        let got = allow_headers(&r, "https://a.example", &["x-amz-date"]);
        let get = |name: &HeaderName| got.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(
            get(&header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("https://a.example")
        );
        assert_eq!(get(&header::ACCESS_CONTROL_ALLOW_METHODS), Some("GET, PUT"));
        assert_eq!(get(&header::ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));
        assert_eq!(
            get(&header::ACCESS_CONTROL_ALLOW_HEADERS),
            Some("x-amz-date")
        );
        assert_eq!(
            get(&header::ACCESS_CONTROL_EXPOSE_HEADERS),
            Some("ETag, x-amz-request-id")
        );
        assert_eq!(get(&header::ACCESS_CONTROL_MAX_AGE), Some("3000"));
        let any = allow_headers(&rule(&["*"], &["GET"], &[]), "https://b", &[]);
        assert_eq!(any[0].1, "*");
        assert!(
            !any.iter()
                .any(|(n, _)| n == header::ACCESS_CONTROL_ALLOW_CREDENTIALS
                    || n == header::ACCESS_CONTROL_ALLOW_HEADERS
                    || n == header::ACCESS_CONTROL_MAX_AGE)
        );
    }
}
