//! `GET /api/v1/hosts[/{ip}]`: what FastNetMon told us about each host, and its latest traffic.

use std::net::IpAddr;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Caller;
use super::error::ApiError;
use super::{page, AppState, Query};
use crate::clock::{now_ms, rfc3339, Millis};
use crate::config::Role;
use crate::decision::CoveringPrefix;
use crate::store::{HostFilter, HostRow, SampleRow};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/hosts", get(list))
        .route("/api/v1/hosts/{ip}", get(one))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct TrafficView {
    pub in_bps: i64,
    pub out_bps: i64,
    pub in_pps: i64,
    pub out_pps: i64,
    pub in_mbps: f64,
    pub out_mbps: f64,
    pub at: String,
    pub age_seconds: f64,
    pub source: String,
}

pub fn traffic_view(s: &SampleRow, now: Millis) -> TrafficView {
    TrafficView {
        in_bps: s.in_bps,
        out_bps: s.out_bps,
        in_pps: s.in_pps,
        out_pps: s.out_pps,
        in_mbps: s.in_bps as f64 / 1e6,
        out_mbps: s.out_bps as f64 / 1e6,
        at: rfc3339(s.at),
        age_seconds: ((now - s.at).max(0)) as f64 / 1000.0,
        source: s.source.clone(),
    }
}

#[derive(Serialize)]
struct HostView {
    #[serde(flatten)]
    host: HostRow,
    covering_prefix: String,
    traffic: Option<TrafficView>,
}

async fn view(state: &AppState, host: HostRow, now: Millis) -> Result<HostView, ApiError> {
    let ip: IpAddr = host
        .ip
        .parse()
        .map_err(|_| ApiError::from(crate::store::StoreError::Corrupt("host ip".into())))?;
    let sample = state.store.latest_sample(ip).await?;
    Ok(HostView {
        covering_prefix: CoveringPrefix::of(ip, &state.policy).to_string(),
        traffic: sample.as_ref().map(|s| traffic_view(s, now)),
        host,
    })
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Read)?;
    if let Some(s) = &q.state {
        if s != "banned" && s != "unbanned" {
            return Err(ApiError::unprocessable("invalid field `state`")
                .detail("expected `banned` or `unbanned`"));
        }
    }
    let (limit, offset) = page(q.limit, q.offset)?;
    let filter = HostFilter {
        state: q.state.clone(),
        limit,
        offset,
    };
    let rows = state.store.list_hosts(&filter).await?;
    let total = state.store.count_hosts(q.state.as_deref()).await?;
    let now = now_ms();
    let mut hosts = Vec::with_capacity(rows.len());
    for r in rows {
        hosts.push(view(&state, r, now).await?);
    }
    Ok(Json(json!({
        "hosts": hosts,
        "total": total,
        "limit": limit,
        "offset": offset,
    })))
}

pub(crate) fn parse_ip(raw: &str) -> Result<IpAddr, ApiError> {
    raw.trim_end_matches("/32")
        .trim_end_matches("/128")
        .parse()
        .map_err(|_| {
            ApiError::unprocessable("invalid IP address").detail(format!(
                "`{}` is not an IPv4 or IPv6 address",
                raw.chars().take(64).collect::<String>()
            ))
        })
}

async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Read)?;
    let ip = parse_ip(&raw)?;
    let host = state
        .store
        .get_host(ip)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no host {ip}")))?;
    let episodes = state.store.episodes(ip).await?;
    let v = view(&state, host, now_ms()).await?;
    let mut body = serde_json::to_value(v).unwrap_or_default();
    body["episodes"] = serde_json::to_value(episodes).unwrap_or_default();
    Ok(Json(body))
}
