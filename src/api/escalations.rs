//! Escalations: the ledger for operators (`GET`), and manual overrides (`POST` to force,
//! `DELETE` to withdraw and suppress). Overrides only write the ledger and wake the checker: the
//! checker is the one component that talks to the speaker.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use super::error::ApiError;
use super::json::Body;
use super::{page, AppState, Query};
use crate::clock::{ms, now_ms};
use crate::config::Role;
use crate::decision::{check_manual, Refusal, Rule};
use crate::store::{EscalationRow, NewEscalation};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/escalations", get(list).post(escalate))
        .route("/api/v1/escalations/{prefix}", get(one).delete(withdraw))
        // Unencoded `203.0.113.0/24` in the path, for people typing it by hand.
        .route(
            "/api/v1/escalations/{addr}/{len}",
            get(one_split).delete(withdraw_split),
        )
        .route("/api/v1/suppressions", get(suppressions))
        .route("/api/v1/suppressions/{prefix}", axum::routing::delete(lift))
        .route(
            "/api/v1/suppressions/{addr}/{len}",
            axum::routing::delete(lift_split),
        )
}

const STATES: [&str; 5] = ["pending", "active", "withdrawn", "refused", "failed"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Read)?;
    if let Some(s) = &q.state {
        if !STATES.contains(&s.as_str()) {
            return Err(ApiError::unprocessable("invalid field `state`")
                .detail(format!("expected one of {}", STATES.join(", "))));
        }
    }
    let (limit, offset) = page(q.limit, q.offset)?;
    let rows = state
        .store
        .list_escalations(q.state.as_deref(), limit, offset)
        .await?;
    let views: Vec<_> = rows.iter().map(EscalationRow::view).collect();
    Ok(Json(
        json!({ "escalations": views, "limit": limit, "offset": offset }),
    ))
}

pub(crate) fn parse_prefix(raw: &str) -> Result<IpNet, ApiError> {
    let net: IpNet = raw.trim().parse().map_err(|_| {
        ApiError::unprocessable("invalid prefix").detail(format!(
            "`{}` is not a CIDR prefix like 203.0.113.0/24 (URL-encode the slash: %2F)",
            raw.chars().take(64).collect::<String>()
        ))
    })?;
    if net.trunc() != net {
        return Err(ApiError::unprocessable("invalid prefix").detail(format!(
            "{net} has host bits set (did you mean {}?)",
            net.trunc()
        )));
    }
    Ok(net)
}

async fn show(state: &AppState, net: IpNet) -> Result<Json<serde_json::Value>, ApiError> {
    let history = state.store.escalation_history(&net.to_string()).await?;
    let current = history
        .iter()
        .find(|r| matches!(r.state.as_str(), "pending" | "active" | "failed"))
        .or_else(|| history.first())
        .ok_or_else(|| ApiError::not_found(format!("no escalation of {net}")))?;
    let suppression = state
        .store
        .active_suppressions(now_ms())
        .await?
        .into_iter()
        .find(|s| s.prefix == net.to_string());
    let mut body = serde_json::to_value(current.view()).unwrap_or_default();
    body["history"] =
        serde_json::to_value(history.iter().map(EscalationRow::view).collect::<Vec<_>>())
            .unwrap_or_default();
    body["suppression"] = serde_json::to_value(suppression).unwrap_or_default();
    Ok(Json(body))
}

async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Read)?;
    show(&state, parse_prefix(&raw)?).await
}

async fn one_split(
    State(state): State<AppState>,
    caller: Caller,
    Path((addr, len)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Read)?;
    show(&state, parse_prefix(&format!("{addr}/{len}"))?).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManualRequest {
    prefix: String,
    reason: String,
    #[serde(default)]
    duration: Option<String>,
}

fn parse_duration(field: &str, s: &str) -> Result<Duration, ApiError> {
    let d = humantime::parse_duration(s).map_err(|e| {
        ApiError::unprocessable(format!("invalid field `{field}`"))
            .detail(format!("`{s}`: {e} (write it like \"30m\" or \"2h\")"))
    })?;
    if d.is_zero() || d > Duration::from_secs(366 * 24 * 3600) {
        return Err(ApiError::unprocessable(format!("invalid field `{field}`"))
            .detail("must be longer than 0s and at most a year"));
    }
    Ok(d)
}

async fn escalate(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<ManualRequest>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    caller.require(Role::Admin)?;
    let net = parse_prefix(&req.prefix)?;
    let reason = req.reason.trim();
    if reason.is_empty() || reason.len() > 500 {
        return Err(
            ApiError::unprocessable("invalid field `reason`").detail("must be 1..=500 characters")
        );
    }
    let duration = req
        .duration
        .as_deref()
        .map(|d| parse_duration("duration", d))
        .transpose()?;
    let now = now_ms();
    let live = state.store.live_escalations().await?;
    if let Some(existing) = live.iter().find(|r| r.prefix == net.to_string()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{net} is already escalated ({})", existing.state),
        )
        .detail(json!({ "escalation": existing.view() })));
    }
    let prefix = check_manual(net, live.len(), &state.policy).map_err(|r| {
        tracing::warn!(prefix = %net, rule = r.rule.as_str(), actor = %caller.name, "manual escalation refused");
        ApiError::refused(&r)
    })?;
    let route = state.checker.route_for(prefix.net()).ok_or_else(|| {
        ApiError::refused(&Refusal {
            rule: Rule::OutsideOurs,
            reason: format!("no next hop configured for the family of {net}"),
        })
    })?;
    // Forcing a prefix by hand overrides a suppression of it.
    state
        .store
        .lift_suppression(&net.to_string(), &caller.name, now)
        .await?;
    let row = state
        .store
        .insert_escalation(&NewEscalation {
            route,
            state: "pending",
            origin: "manual",
            reason: reason.to_string(),
            rule: None,
            hosts: Vec::new(),
            dry_run: state.config.escalation.dry_run,
            expires_at: duration.map(|d| now + ms(d)),
            created_by: caller.name.clone(),
            at: now,
            detail: json!({ "kind": "manual", "text": reason }),
        })
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Db(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                ApiError::new(StatusCode::CONFLICT, format!("{net} is already escalated"))
            }
            other => other.into(),
        })?;
    state.checker.wake();
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(row.view()).unwrap_or_default()),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WithdrawQuery {
    suppress: Option<String>,
    reason: Option<String>,
}

async fn do_withdraw(
    state: &AppState,
    caller: &Caller,
    net: IpNet,
    q: WithdrawQuery,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    caller.require(Role::Admin)?;
    let suppress = q
        .suppress
        .as_deref()
        .map(|d| parse_duration("suppress", d))
        .transpose()?;
    let reason = q
        .reason
        .unwrap_or_else(|| format!("manual withdrawal by {}", caller.name));
    let now = now_ms();
    let prefix = net.to_string();
    let live = state.store.live_escalations().await?;
    let found = live.into_iter().find(|r| r.prefix == prefix);
    if found.is_none() && suppress.is_none() {
        return Err(ApiError::not_found(format!("{net} is not escalated")));
    }
    if let Some(d) = suppress {
        state
            .store
            .suppress(&prefix, now + ms(d), &reason, &caller.name, now)
            .await?;
    }
    let mut body = json!({ "prefix": prefix });
    if let Some(row) = found {
        state
            .store
            .request_withdraw(row.id, &prefix, now, &caller.name, &reason)
            .await?;
        state.checker.wake();
        body["escalation_id"] = json!(row.id);
        body["state"] = json!("withdrawing");
    }
    if let Some(d) = suppress {
        body["suppressed_until"] = json!(crate::clock::rfc3339(now + ms(d)));
    }
    Ok((StatusCode::ACCEPTED, Json(body)))
}

async fn withdraw(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    Query(q): Query<WithdrawQuery>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    caller.require(Role::Admin)?;
    do_withdraw(&state, &caller, parse_prefix(&raw)?, q).await
}

async fn withdraw_split(
    State(state): State<AppState>,
    caller: Caller,
    Path((addr, len)): Path<(String, String)>,
    Query(q): Query<WithdrawQuery>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    caller.require(Role::Admin)?;
    do_withdraw(&state, &caller, parse_prefix(&format!("{addr}/{len}"))?, q).await
}

async fn suppressions(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Read)?;
    let rows = state.store.active_suppressions(now_ms()).await?;
    Ok(Json(json!({ "suppressions": rows })))
}

async fn do_lift(state: &AppState, caller: &Caller, net: IpNet) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    if state
        .store
        .lift_suppression(&net.to_string(), &caller.name, now_ms())
        .await?
    {
        state.checker.wake();
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("{net} is not suppressed")))
    }
}

async fn lift(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    do_lift(&state, &caller, parse_prefix(&raw)?).await
}

async fn lift_split(
    State(state): State<AppState>,
    caller: Caller,
    Path((addr, len)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    do_lift(&state, &caller, parse_prefix(&format!("{addr}/{len}"))?).await
}
