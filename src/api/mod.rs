//! The HTTP API: FastNetMon's notifications in, status and overrides out. One router per
//! resource; `router(state)` builds the whole app so tests drive it with `oneshot` or over TCP.

pub mod auth;
pub mod error;
mod escalations;
mod events;
mod health;
mod hosts;
pub mod idle;
pub mod json;
mod metrics;
pub mod notifications;
pub mod openapi;
mod write;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use axum::{Extension, Router};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::bgp::Speaker;
use crate::checker::CheckerHandle;
use crate::config::Config;
use crate::decision::Policy;
use crate::sources::Sources;
use crate::store::Store;
use auth::Tokens;
use error::ApiError;

/// What every handler can reach, behind one `Arc`: axum clones the state for every request,
/// and a clone of each field was a dozen atomic increments (and as many decrements) shared
/// between the cores, about 1.5% of the service's time at 25,000 notifications/s.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The state's fields (see `AppState`).
pub struct Shared {
    pub config: Arc<Config>,
    pub policy: Arc<Policy>,
    pub store: Store,
    pub tokens: Tokens,
    pub checker: CheckerHandle,
    pub speaker: Arc<dyn Speaker>,
    /// Health of the live FastNetMon sources.
    pub sources: Sources,
}

/// Every route of the API together with its OpenAPI documentation: one builder, so neither can
/// exist without the other.
pub fn documented_routes(max_write_bytes: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(notifications::router())
        .merge(write::router(max_write_bytes))
        .merge(hosts::router())
        .merge(escalations::router())
        .merge(events::router())
        .merge(health::router())
        .merge(metrics::router())
        .routes(routes!(openapi::document))
}

/// The OpenAPI 3 document of the API, as `/api/v1/openapi.json` serves it.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    documented_routes(0).into_openapi()
}

pub fn router(state: AppState) -> Router {
    let max_body = state.config.server.max_body_bytes;
    let timeout = state.config.server.request_timeout;
    let max_write = state.config.server.max_write_bytes;
    let (routes, doc) = documented_routes(max_write).split_for_parts();
    let doc = doc.to_json().unwrap_or_else(|e| {
        tracing::error!(error = %e, "the OpenAPI document could not be rendered");
        "{}".to_string()
    });
    routes
        .layer(Extension(openapi::Document(Arc::new(doc))))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(count_request))
        .layer(axum::middleware::from_fn(limit_headers))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout.max(Duration::from_millis(1)),
        ))
        .layer(
            // A span for what handlers log, at debug: the access log itself is `count_request`'s.
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let path = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map(MatchedPath::as_str)
                        .unwrap_or("(unmatched)");
                    tracing::debug_span!("http", method = %req.method(), path = %path)
                })
                .on_response(()),
        )
        .with_state(state)
}

/// Counts every request by method, matched route and status (the route, not the raw path, so
/// the label set stays bounded whatever clients send), and logs it: server errors as warnings,
/// client errors at info, the rest at debug (health checks, scrapes and tens of thousands of
/// notifications a second under attack would drown everything else at info; the audit log
/// has every notification).
async fn count_request(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "(unmatched)".into());
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let elapsed = started.elapsed().as_secs_f64();
    let status = resp.status();
    let latency_ms = elapsed * 1000.0;
    if status.is_server_error() {
        tracing::warn!(%method, %route, status = status.as_u16(), latency_ms, "request");
    } else if status.is_client_error() {
        tracing::info!(%method, %route, status = status.as_u16(), latency_ms, "request");
    } else {
        tracing::debug!(%method, %route, status = status.as_u16(), latency_ms, "request");
    }
    let m = crate::metrics::metrics();
    m.http_requests
        .get_or_create(&crate::metrics::HttpLabels {
            method: method.clone(),
            route: route.clone(),
            status: status.as_u16().to_string(),
        })
        .inc();
    m.http_request_duration
        .get_or_create(&crate::metrics::RouteLabels { method, route })
        .observe(elapsed);
    resp
}

/// The most header bytes (names, values and separators) a request may carry. FastNetMon sends a
/// few hundred; hyper's own limits (100 headers, ~400 KB) are far looser.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// 431 for requests whose headers exceed `MAX_HEADER_BYTES`, before any handler reads them.
async fn limit_headers(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    let size: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if size > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers too large",
        )
        .detail(format!(
            "{size} bytes of headers; at most {MAX_HEADER_BYTES}"
        ))
        .into_response();
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// `limit`/`offset` with sane bounds.
pub(crate) fn page(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64), ApiError> {
    let limit = limit.unwrap_or(100);
    let offset = offset.unwrap_or(0);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::unprocessable("invalid field `limit`").detail("must be 1..=1000"));
    }
    if offset < 0 {
        return Err(ApiError::unprocessable("invalid field `offset`").detail("must be >= 0"));
    }
    Ok((limit, offset))
}

/// Path parameters in the API's error format (axum's own rejection of, say, `%FF` is plain
/// text).
pub(crate) struct Path<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> axum::extract::FromRequestParts<S>
    for Path<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|rej| {
                ApiError::new(rej.status(), "invalid path parameter").detail(rej.body_text())
            })
    }
}

/// Query strings parsed in the API's error format.
pub(crate) struct Query<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for Query<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(q)
            .map(Query)
            .map_err(|e| ApiError::unprocessable("invalid query string").detail(e.to_string()))
    }
}
