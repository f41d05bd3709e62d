//! The one HTTP error type: every failure becomes a status and a JSON body
//! `{"error": "...", "detail": ...}`. Internal errors are logged with context and answered
//! without leaking details.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::decision::{Refusal, Rule};
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub detail: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            detail: Value::Null,
        }
    }

    pub fn detail(mut self, detail: impl Into<Value>) -> Self {
        self.detail = detail.into();
        self
    }

    pub fn bad_request(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error)
    }

    pub fn unprocessable(error: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, error)
    }

    pub fn not_found(error: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, error)
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "missing or invalid credentials")
    }

    pub fn forbidden(needed: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            format!("this needs the {needed} role"),
        )
    }

    /// A safety rail refused the request: 409 for the cap (it may pass later), 422 otherwise.
    pub fn refused(r: &Refusal) -> Self {
        let status = match r.rule {
            Rule::MaxActive | Rule::ForeignRoute => StatusCode::CONFLICT,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(status, format!("refused by rule {}", r.rule.as_str()))
            .detail(json!({ "rule": r.rule.as_str(), "reason": r.reason }))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.error });
        if !self.detail.is_null() {
            body["detail"] = self.detail;
        }
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer, Basic realm=\"fnm-escalator\""),
            );
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "storage error while serving a request");
        // 503, not 500: the client (FastNetMon's notify command) should retry or spool.
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage unavailable, try again",
        )
    }
}
