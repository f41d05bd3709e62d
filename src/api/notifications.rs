//! `POST /api/v1/notifications`: FastNetMon's JSON as it sends it (web callback, JSON notify
//! script, or our notify command forwarding a text-mode call). Answered 2xx only once committed.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::ApiError;
use super::json::body_bytes;
use super::openapi::ErrorBody;
use super::AppState;
use crate::clock::{now_ms, parse_time};
use crate::config::Role;
use crate::fastnetmon::{notification, ParseError, Scope};
use crate::store::{Incoming, Outcome};

/// Idempotency key header: a redelivered notification (spool, retry) is stored once.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// When FastNetMon produced the notification (RFC 3339 or Unix ms); set by the notify command.
pub const OBSERVED_AT: &str = "x-fnm-observed-at";
/// How it reached us: `notify_json`, `notify_text`, `spool`; default `web_callback`.
pub const SOURCE: &str = "x-fnm-source";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(receive))
}

/// What was done with a notification.
#[derive(Serialize, ToSchema)]
struct Accepted {
    /// The stored notification's id (null for a duplicate, which stores nothing).
    id: Option<i64>,
    outcome: Outcome,
}

pub(crate) fn parse_error(e: ParseError) -> ApiError {
    match e {
        ParseError::Syntax(d) => ApiError::bad_request("malformed JSON").detail(d),
        ParseError::Field { field, reason } => {
            ApiError::unprocessable(format!("invalid field `{field}`")).detail(reason)
        }
        ParseError::Script(d) => ApiError::unprocessable("invalid notification").detail(d),
    }
}

/// Reads our delivery headers; a bad one is the client's error, named.
pub(crate) fn delivery_meta(
    headers: &HeaderMap,
    received_at: i64,
) -> Result<(Option<String>, i64, String), ApiError> {
    let text = |name: &str| -> Result<Option<String>, ApiError> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|s| Some(s.trim().to_string()))
                .map_err(|_| ApiError::bad_request(format!("header `{name}` is not ASCII text"))),
        }
    };
    let key = text(IDEMPOTENCY_KEY)?;
    if let Some(k) = &key {
        if k.is_empty() || k.len() > 200 {
            return Err(ApiError::unprocessable(format!(
                "header `{IDEMPOTENCY_KEY}` must be 1..=200 characters"
            )));
        }
    }
    let observed_at = match text(OBSERVED_AT)? {
        None => received_at,
        Some(s) => {
            let t = parse_time(&s).ok_or_else(|| {
                ApiError::unprocessable(format!("header `{OBSERVED_AT}` is not a time"))
                    .detail("expected RFC 3339 or Unix milliseconds")
            })?;
            // A notification from the future would pin the host's state; clamp it.
            t.min(received_at)
        }
    };
    let source = match text(SOURCE)?.as_deref() {
        None => "web_callback".to_string(),
        Some(s @ ("web_callback" | "notify_json" | "notify_text" | "spool")) => s.to_string(),
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "header `{SOURCE}`: unknown source `{other}`"
            )))
        }
    };
    Ok((key, observed_at, source))
}

/// A FastNetMon JSON notification exactly as FastNetMon sends it (web callback or JSON notify
/// script): `ban`, `unban`, `attack_status`, `partial_block`/`partial_unblock`, host or hostgroup
/// scope. Answered 2xx only once durably stored.
#[utoipa::path(
    post,
    path = "/api/v1/notifications",
    tag = "notifications",
    request_body(content = Object, description = "FastNetMon's notification JSON", content_type = "application/json"),
    params(
        ("idempotency-key" = Option<String>, Header, description = "A repeated key stores nothing twice"),
        ("x-fnm-observed-at" = Option<String>, Header, description = "When FastNetMon produced it (RFC 3339 or Unix ms)"),
        ("x-fnm-source" = Option<String>, Header, description = "`web_callback` (default), `notify_json`, `notify_text`, `spool`")
    ),
    security(("bearer" = []), ("basic" = [])),
    responses(
        (status = 201, description = "Stored", body = Accepted),
        (status = 200, description = "A duplicate of one stored already", body = Accepted),
        (status = "default", description = "An error", body = ErrorBody)
    )
)]
async fn receive(
    State(state): State<AppState>,
    caller: Caller,
    req: Request,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    caller.require(Role::Notify)?;
    let received_at = now_ms();
    let (key, observed_at, source) = delivery_meta(req.headers(), received_at)?;
    let body = body_bytes(req, &state).await?;
    let parsed = notification::parse_json(&body).map_err(parse_error)?;
    let incoming = Incoming {
        notification: parsed,
        observed_at,
        received_at,
        idempotency_key: key,
        source,
        actor: caller.name.clone(),
        payload: String::from_utf8_lossy(&body).into_owned(),
    };
    let action = incoming.notification.action;
    let ip = match incoming.notification.scope {
        Scope::Host { ip } => Some(ip),
        Scope::Hostgroup { .. } => None,
    };
    let wake_now = crate::decision::acts_at_once(&incoming.notification, &state.policy);
    let recorded = state.store.record_notification(incoming).await?;
    crate::metrics::metrics().notification(action.as_str(), recorded.outcome.as_str());
    if recorded.wake_checker && wake_now {
        state.checker.wake();
    }
    // A host's state change at info; repeats, stale and duplicate deliveries at debug.
    // (`ip` is left out for a hostgroup; fields are only formatted when the line is logged.)
    let outcome = recorded.outcome.as_str();
    if matches!(recorded.outcome, Outcome::Banned | Outcome::Unbanned) {
        tracing::info!(action = action.as_str(), ip = ip.map(tracing::field::display), outcome, actor = %caller.name, "notification recorded");
    } else {
        tracing::debug!(action = action.as_str(), ip = ip.map(tracing::field::display), outcome, actor = %caller.name, "notification recorded");
    }
    let status = if recorded.outcome == Outcome::Duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(Accepted {
            id: recorded.id,
            outcome: recorded.outcome,
        }),
    ))
}
