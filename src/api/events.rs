//! `GET /api/v1/events`: the audit log, newest first, filtered and paginated by id.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use super::error::ApiError;
use super::{AppState, Query};
use crate::clock::parse_time;
use crate::config::Role;
use crate::store::EventFilter;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/events", get(list))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    ip: Option<String>,
    prefix: Option<String>,
    kind: Option<String>,
    actor: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<i64>,
    limit: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<EventsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
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
    Ok(Json(json!({ "events": events, "next_before": next })))
}
