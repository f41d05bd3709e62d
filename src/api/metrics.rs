//! `GET /metrics`: Prometheus text exposition. Gauges that mirror the ledger are refreshed from
//! the store at scrape time, so they can never drift from what the API shows.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::ApiError;
use super::openapi::ErrorBody;
use super::AppState;
use crate::clock::now_ms;
use crate::config::Role;
use crate::metrics::{metrics, SourceLabels, StateLabels};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(scrape))
}

/// Prometheus (OpenMetrics) text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security(("bearer" = []), ("basic" = [])),
    responses(
        (status = 200, description = "Metrics", content_type = "application/openmetrics-text", body = String),
        (status = "default", description = "An error", body = ErrorBody)
    )
)]
async fn scrape(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Role::Read)?;
    let m = metrics();
    m.banned_hosts
        .set(state.store.count_hosts(Some("banned")).await?);
    let counts = state.store.count_escalations_by_state().await?;
    for s in ["pending", "active", "withdrawn", "refused", "failed"] {
        let n = counts
            .iter()
            .find(|(state, _)| state == s)
            .map_or(0, |(_, n)| *n);
        m.escalations
            .get_or_create(&StateLabels { state: s.into() })
            .set(n);
    }
    let now = now_ms();
    for source in state.sources.all() {
        let l = SourceLabels {
            source: source.name().into(),
        };
        m.source_healthy
            .get_or_create(&l)
            .set(i64::from(source.healthy(now)));
        if let Some(t) = source.last_success() {
            m.source_last_success.get_or_create(&l).set(t / 1000);
        }
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    ))
}
