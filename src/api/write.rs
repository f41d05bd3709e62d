//! `POST /write`: InfluxDB line protocol as FastNetMon's InfluxDB export pushes it, the live
//! per-host counters of Community. Answers 204 (FastNetMon counts anything else as a failed
//! write), also when some lines were bad; 400 only when no line could be parsed.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::json::body_bytes;
use super::openapi::ErrorBody;
use super::{AppState, Query};
use crate::clock::{ms, now_ms};
use crate::config::Role;
use crate::decision::crossing;
use crate::fastnetmon::line_protocol::{self, LineError};
use crate::sources::influxdb::{self, Precision};
use crate::sources::{Cycle, INFLUXDB};

/// Bad lines named in a 400 answer.
const ERRORS_SHOWN: usize = 5;

pub fn router(max_bytes: usize) -> OpenApiRouter<AppState> {
    // A push carries every active host: its own, larger body limit (this layer runs after the
    // API-wide one, so it wins for this route).
    OpenApiRouter::new()
        .routes(routes!(write))
        .layer(DefaultBodyLimit::max(max_bytes))
}

/// InfluxDB 1.x `/write` parameters; the others (`db`, `rp`, `consistency`) are accepted and
/// ignored.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct WriteQuery {
    /// InfluxDB user: the token's name (optional).
    u: Option<String>,
    /// InfluxDB password: the token (FastNetMon's `influxdb_auth`).
    p: Option<String>,
    /// Timestamp precision: `ns` (default), `us`, `ms`, `s`, `m`, `h`.
    precision: Option<String>,
}

/// InfluxDB 1.x line protocol as FastNetMon's InfluxDB export sends it (`hosts_traffic`,
/// `hosts_ipv6_traffic`, `networks_traffic`): live per-host counters.
#[utoipa::path(
    post,
    path = "/write",
    tag = "notifications",
    params(WriteQuery),
    request_body(content = String, description = "InfluxDB line protocol", content_type = "text/plain"),
    security(("bearer" = []), ("basic" = [])),
    responses(
        (status = 204, description = "Stored"),
        (status = "default", description = "An error", body = ErrorBody)
    )
)]
async fn write(
    State(state): State<AppState>,
    Query(q): Query<WriteQuery>,
    req: Request,
) -> Result<StatusCode, ApiError> {
    let caller = state
        .tokens
        .authenticate(req.headers(), q.p.as_deref().map(|p| (q.u.as_deref(), p)))?;
    caller.require(Role::Notify)?;
    if let Some(enc) = req.headers().get(header::CONTENT_ENCODING) {
        if !enc.as_bytes().eq_ignore_ascii_case(b"identity") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "compressed bodies are not supported",
            )
            .detail("send the line protocol uncompressed (FastNetMon does)"));
        }
    }
    let precision = Precision::parse(q.precision.as_deref())
        .map_err(|e| ApiError::bad_request("invalid query parameter `precision`").detail(e))?;

    let received_at = now_ms();
    let started = Instant::now();
    let health = &state.sources.influxdb;
    health.enable(received_at);
    let body = body_bytes(req, &state).await?;

    // Parsing megabytes is CPU work: off the async workers.
    let parsed = tokio::task::spawn_blocking(move || {
        let text = String::from_utf8_lossy(&body);
        let parsed = line_protocol::parse(&text);
        let samples = line_protocol::samples(&parsed.points);
        (parsed, samples)
    })
    .await;
    let (parsed, samples) = parsed.map_err(|e| {
        tracing::error!(error = %e, "parsing a /write body failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot parse the body now, try again",
        )
    })?;
    let bad: Vec<&LineError> = parsed.errors.iter().chain(samples.errors.iter()).collect();
    if let (true, Some(first)) = (parsed.points.is_empty(), parsed.errors.first()) {
        let shown: Vec<_> = bad
            .iter()
            .take(ERRORS_SHOWN)
            .map(|e| json!({ "line": e.line, "reason": e.reason }))
            .collect();
        let msg = format!(
            "no line could be parsed ({} bad, first on line {}: {})",
            bad.len(),
            first.line,
            first.reason
        );
        health.failure(now_ms(), &msg, started.elapsed().as_secs_f64() * 1000.0);
        return Err(
            ApiError::bad_request("no line of the body is valid line protocol")
                .detail(json!({ "bad_lines": bad.len(), "errors": shown })),
        );
    }
    if let Some(first) = bad.first() {
        tracing::warn!(
            caller = %caller.name,
            bad_lines = bad.len(),
            first_line = first.line,
            first_reason = %first.reason,
            "lines of an InfluxDB push were ignored"
        );
    }

    let banned: HashSet<IpAddr> = if samples.hosts.is_empty() {
        HashSet::new()
    } else {
        state
            .store
            .banned_since()
            .await?
            .into_iter()
            .map(|(ip, _)| ip)
            .collect()
    };
    let push = influxdb::plan(&samples, &banned, precision, received_at);
    if let Err(e) = state
        .store
        .record_live_samples(&push.samples, ms(state.config.samples.history_interval))
        .await
    {
        health.failure(
            now_ms(),
            &format!("storing samples: {e}"),
            started.elapsed().as_secs_f64() * 1000.0,
        );
        return Err(e.into());
    }
    crate::metrics::metrics().samples_stored(INFLUXDB, push.samples.len() as u64);
    let now = now_ms();
    let max_age = ms(state.config.thresholds.sample_max_age);
    let mut crossing_hosts = push
        .samples
        .iter()
        .filter(|s| {
            now - s.at <= max_age
                && crossing(s.ip, &s.traffic, &state.policy.limits_for(s.ip)).is_some()
        })
        .map(|s| s.ip)
        .peekable();
    let crossed = crossing_hosts.peek().is_some();
    if crossed {
        // Only the crossing hosts' prefixes can have become wanted (a push of many of them
        // asks for a cycle over everything).
        state.checker.wake_for(crossing_hosts);
    }
    health.success(
        now,
        Cycle {
            ms: started.elapsed().as_secs_f64() * 1000.0,
            hosts: samples.hosts.len() as u64,
            samples: push.samples.len() as u64,
            host_errors: 0,
            host_error: bad
                .first()
                .map(|e| format!("line {}: {}", e.line, e.reason)),
            bad_lines: bad.len() as u64,
        },
    );
    tracing::debug!(
        caller = %caller.name,
        points = parsed.points.len(),
        hosts = samples.hosts.len(),
        networks = samples.networks.len(),
        stored = push.samples.len(),
        zero_filled = push.zero_filled,
        crossed,
        "InfluxDB push"
    );
    Ok(StatusCode::NO_CONTENT)
}
