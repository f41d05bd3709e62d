//! `GET /api/v1/hosts[/{ip}]`: what FastNetMon told us about each host, and its latest traffic.

use std::net::IpAddr;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::ApiError;
use super::openapi::ErrorBody;
use super::{page, AppState, Path, Query};
use crate::clock::{now_ms, rfc3339, Millis};
use crate::config::Role;
use crate::decision::CoveringPrefix;
use crate::store::{EpisodeRow, HostFilter, HostRow, SampleRow};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(one))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// `banned` or `unbanned`.
    state: Option<String>,
    /// 1..=1000, default 100.
    limit: Option<i64>,
    /// Default 0.
    offset: Option<i64>,
}

/// The newest traffic sample of a host (bits and packets per second).
#[derive(Debug, Serialize, ToSchema)]
pub struct TrafficView {
    pub in_bps: i64,
    pub out_bps: i64,
    pub in_pps: i64,
    pub out_pps: i64,
    pub in_mbps: f64,
    pub out_mbps: f64,
    #[schema(format = DateTime)]
    pub at: String,
    pub age_seconds: f64,
    /// Where the sample came from: `notification`, `influxdb`, `fastnetmon_api`.
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

#[derive(Serialize, ToSchema)]
struct HostView {
    #[serde(flatten)]
    host: HostRow,
    covering_prefix: String,
    traffic: Option<TrafficView>,
}

#[derive(Serialize, ToSchema)]
struct HostList {
    hosts: Vec<HostView>,
    total: i64,
    limit: i64,
    offset: i64,
}

/// A host with its ban episodes, newest first.
#[derive(Serialize, ToSchema)]
struct HostDetail {
    #[serde(flatten)]
    host: HostView,
    episodes: Vec<EpisodeRow>,
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

/// Hosts FastNetMon told us about, with state and latest traffic.
#[utoipa::path(
    get,
    path = "/api/v1/hosts",
    tag = "hosts",
    params(ListQuery),
    security(("bearer" = []), ("basic" = [])),
    responses(
        (status = 200, body = HostList),
        (status = "default", description = "An error", body = ErrorBody)
    )
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<HostList>, ApiError> {
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
    Ok(Json(HostList {
        hosts,
        total,
        limit,
        offset,
    }))
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

/// One host, with its ban episodes.
#[utoipa::path(
    get,
    path = "/api/v1/hosts/{ip}",
    tag = "hosts",
    params(("ip" = String, Path, description = "IPv4 or IPv6 address")),
    security(("bearer" = []), ("basic" = [])),
    responses(
        (status = 200, body = HostDetail),
        (status = "default", description = "An error", body = ErrorBody)
    )
)]
async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<HostDetail>, ApiError> {
    caller.require(Role::Read)?;
    let ip = parse_ip(&raw)?;
    let host = state
        .store
        .get_host(ip)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no host {ip}")))?;
    let episodes = state.store.episodes(ip).await?;
    let host = view(&state, host, now_ms()).await?;
    Ok(Json(HostDetail { host, episodes }))
}
