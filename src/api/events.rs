//! `GET /api/v1/events`: the audit log, newest first, filtered and paginated by id.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::ApiError;
use super::openapi::ErrorBody;
use super::{AppState, Query};
use crate::clock::parse_time;
use crate::config::Role;
use crate::store::{EventFilter, EventRow};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Events about this host.
    ip: Option<String>,
    /// Events about this prefix (URL-encoded: `203.0.113.0%2F24`).
    prefix: Option<String>,
    /// Event kind (`notification`, `escalate`, `announced`, `withdrawn`, `refused`, ...).
    kind: Option<String>,
    /// Who caused it: a token name, `fastnetmon`, `checker`.
    actor: Option<String>,
    /// From this time on (RFC 3339 or Unix milliseconds).
    since: Option<String>,
    /// Up to this time (RFC 3339 or Unix milliseconds).
    until: Option<String>,
    /// Page: events with an id below this (the previous page's `next_before`).
    before: Option<i64>,
    /// 1..=1000, default 100.
    limit: Option<i64>,
}

/// One page of the audit log, newest first.
#[derive(Serialize, ToSchema)]
struct EventPage {
    events: Vec<EventRow>,
    /// Pass as `before` for the next page; null on the last page.
    next_before: Option<i64>,
}

/// The audit log: every notification, decision, announcement, withdrawal, refusal and error,
/// with who or what caused it. Never edited.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    params(EventsQuery),
    security(("bearer" = []), ("basic" = [])),
    responses(
        (status = 200, body = EventPage),
        (status = "default", description = "An error", body = ErrorBody)
    )
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
    caller.require(Role::Read)?;
    let time = |field: &str, v: &Option<String>| -> Result<Option<i64>, ApiError> {
        v.as_deref()
            .map(|s| {
                parse_time(s).ok_or_else(|| {
                    ApiError::unprocessable(format!("invalid field `{field}`"))
                        .detail("expected RFC 3339 (2026-11-25T12:00:00Z) or Unix milliseconds")
                })
            })
            .transpose()
    };
    let ip =
        q.ip.as_deref()
            .map(super::hosts::parse_ip)
            .transpose()?
            .map(|i| i.to_string());
    let prefix = q
        .prefix
        .as_deref()
        .map(super::escalations::parse_prefix)
        .transpose()?
        .map(|p| p.to_string());
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::unprocessable("invalid field `limit`").detail("must be 1..=1000"));
    }
    let filter = EventFilter {
        ip,
        prefix,
        kind: q.kind.clone(),
        actor: q.actor.clone(),
        since: time("since", &q.since)?,
        until: time("until", &q.until)?,
        before_id: q.before,
        limit,
    };
    let events = state.store.events(&filter).await?;
    let next = if events.len() as i64 == limit {
        events.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Json(EventPage {
        events,
        next_before: next,
    }))
}
