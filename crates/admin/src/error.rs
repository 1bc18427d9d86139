//! The admin endpoint's errors, and how a failure becomes an HTTP answer:
//! a status code and `{"error": {"code": ..., "message": ...}}`.

use std::net::SocketAddr;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tessera_proto::ErrorCode;
use tessera_sdk::SdkError;

/// Starting the admin endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("binding the admin endpoint on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Every error answer's body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, for scripts: `unauthorized`, `not_found`, `conflict`,
    /// `bad_request`, `unavailable` (meta could not be reached) or
    /// `internal`.
    pub code: &'static str,
    /// For people.
    pub message: String,
}

/// A refused or failed admin request.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
        }
    }
}

impl From<SdkError> for ApiError {
    /// Meta's refusals keep their class; anything else means meta (or the
    /// way to it) failed.
    fn from(e: SdkError) -> Self {
        let (status, code) = match e.code() {
            Some(ErrorCode::NotFound) => (StatusCode::NOT_FOUND, "not_found"),
            Some(ErrorCode::Conflict) => (StatusCode::CONFLICT, "conflict"),
            Some(ErrorCode::BadRequest) => (StatusCode::BAD_REQUEST, "bad_request"),
            Some(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            None => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        let message = match &e {
            SdkError::Remote(r) => r.message.clone(),
            other => other.to_string(),
        };
        ApiError {
            status,
            code,
            message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if unauthorized {
            // RFC 6750 section 3: a 401 names the scheme it wants.
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tessera-admin\""),
            );
        }
        resp
    }
}
