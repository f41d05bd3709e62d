//! Escalations: the ledger for operators (`GET`), and manual overrides (`POST` to force,
//! `DELETE` to withdraw and suppress). Overrides only write the ledger and wake the checker: the
//! checker is the one component that talks to the speaker.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::ApiError;
use super::json::Body;
use super::openapi::ErrorBody;
use super::{page, AppState, Path, Query};
use crate::clock::{ms, now_ms};
use crate::config::Role;
use crate::decision::{check_manual, Refusal, Rule};
use crate::store::{EscalationRow, EscalationView, NewEscalation, SuppressionRow};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, escalate))
        .routes(routes!(one, withdraw))
        // Unencoded `203.0.113.0/24` in the path, for people typing it by hand.
        .routes(routes!(one_split, withdraw_split))
        .routes(routes!(suppressions))
        .routes(routes!(lift))
        .routes(routes!(lift_split))
}

const STATES: [&str; 5] = ["pending", "active", "withdrawn", "refused", "failed"];

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// `pending`, `active`, `withdrawn`, `refused` or `failed`.
    state: Option<String>,
    /// 1..=1000, default 100.
    limit: Option<i64>,
    /// Default 0.
    offset: Option<i64>,
}

#[derive(Serialize, ToSchema)]
struct EscalationList {
    escalations: Vec<EscalationView>,
    limit: i64,
    offset: i64,
}

/// An escalation with its history (every escalation of the prefix, newest first) and any
/// suppression of the prefix.
#[derive(Serialize, ToSchema)]
struct EscalationDetail {
    #[serde(flatten)]
    escalation: EscalationView,
    history: Vec<EscalationView>,
    suppression: Option<SuppressionRow>,
}

/// The escalations, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/escalations",
    tag = "escalations",
    params(ListQuery),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 200, body = EscalationList), (status = "default", description = "An error", body = ErrorBody))
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<EscalationList>, ApiError> {
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
    Ok(Json(EscalationList {
        escalations: rows.iter().map(EscalationRow::view).collect(),
        limit,
        offset,
    }))
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

async fn show(state: &AppState, net: IpNet) -> Result<Json<EscalationDetail>, ApiError> {
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
    Ok(Json(EscalationDetail {
        escalation: current.view(),
        history: history.iter().map(EscalationRow::view).collect(),
        suppression,
    }))
}

/// One prefix: its current (or latest) escalation, history and suppression.
#[utoipa::path(
    get,
    path = "/api/v1/escalations/{prefix}",
    tag = "escalations",
    params(("prefix" = String, Path, description = "URL-encoded prefix: `203.0.113.0%2F24`")),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 200, body = EscalationDetail), (status = "default", description = "An error", body = ErrorBody))
)]
async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<EscalationDetail>, ApiError> {
    caller.require(Role::Read)?;
    show(&state, parse_prefix(&raw)?).await
}

/// Like `GET /api/v1/escalations/{prefix}`, with the slash unencoded.
#[utoipa::path(
    get,
    path = "/api/v1/escalations/{addr}/{len}",
    tag = "escalations",
    params(("addr" = String, Path, description = "Network address: `203.0.113.0`"), ("len" = String, Path, description = "Prefix length: `24`")),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 200, body = EscalationDetail), (status = "default", description = "An error", body = ErrorBody))
)]
async fn one_split(
    State(state): State<AppState>,
    caller: Caller,
    Path((addr, len)): Path<(String, String)>,
) -> Result<Json<EscalationDetail>, ApiError> {
    caller.require(Role::Read)?;
    show(&state, parse_prefix(&format!("{addr}/{len}"))?).await
}

/// A manual escalation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ManualRequest {
    /// The covering prefix, like `203.0.113.0/24`; no host bits.
    #[schema(example = "203.0.113.0/24")]
    prefix: String,
    /// Why (1..=500 characters); kept in the audit log.
    reason: String,
    /// How long it holds (`"2h"`); without it, until deleted.
    #[serde(default)]
    #[schema(example = "2h")]
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

/// Escalate a prefix by hand. The same safety rails apply as to the checker's decisions; a
/// refusal names the rule (409 for `max_active` and `foreign_route`, 422 otherwise). The checker
/// does not withdraw it before its duration ends or it is deleted.
#[utoipa::path(
    post,
    path = "/api/v1/escalations",
    tag = "escalations",
    request_body = ManualRequest,
    security(("bearer" = []), ("basic" = [])),
    responses(
        (status = 201, description = "Recorded; the checker announces it", body = EscalationView),
        (status = 409, description = "Already escalated, or refused by `max_active`", body = ErrorBody),
        (status = 422, description = "Invalid, or refused by a rail (the rule is named)", body = ErrorBody),
        (status = "default", description = "An error", body = ErrorBody)
    )
)]
async fn escalate(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<ManualRequest>,
) -> Result<(StatusCode, Json<EscalationView>), ApiError> {
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
    Ok((StatusCode::CREATED, Json(row.view())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct WithdrawQuery {
    /// Keep the checker from re-escalating the prefix this long (`"30m"`).
    suppress: Option<String>,
    /// Why; kept in the audit log.
    reason: Option<String>,
}

/// What a manual withdrawal did.
#[derive(Serialize, ToSchema)]
struct Withdrawal {
    prefix: String,
    /// The escalation being withdrawn, if one was live.
    #[serde(skip_serializing_if = "Option::is_none")]
    escalation_id: Option<i64>,
    /// `withdrawing` when an escalation was live.
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    suppressed_until: Option<String>,
}

async fn do_withdraw(
    state: &AppState,
    caller: &Caller,
    net: IpNet,
    q: WithdrawQuery,
) -> Result<(StatusCode, Json<Withdrawal>), ApiError> {
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
    let mut body = Withdrawal {
        suppressed_until: suppress.map(|d| crate::clock::rfc3339(now + ms(d))),
        prefix,
        escalation_id: None,
        state: None,
    };
    if let Some(row) = found {
        state
            .store
            .request_withdraw(row.id, &body.prefix, now, &caller.name, &reason)
            .await?;
        state.checker.wake();
        body.escalation_id = Some(row.id);
        body.state = Some("withdrawing");
    }
    Ok((StatusCode::ACCEPTED, Json(body)))
}

/// Withdraw a prefix by hand, optionally suppressing it (`?suppress=30m`): the checker does not
/// re-escalate it while suppressed. With `suppress`, a prefix that is not escalated is
/// suppressed all the same.
#[utoipa::path(
    delete,
    path = "/api/v1/escalations/{prefix}",
    tag = "escalations",
    params(("prefix" = String, Path, description = "URL-encoded prefix: `203.0.113.0%2F24`"), WithdrawQuery),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 202, description = "The checker withdraws it", body = Withdrawal), (status = "default", description = "An error", body = ErrorBody))
)]
async fn withdraw(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    Query(q): Query<WithdrawQuery>,
) -> Result<(StatusCode, Json<Withdrawal>), ApiError> {
    caller.require(Role::Admin)?;
    do_withdraw(&state, &caller, parse_prefix(&raw)?, q).await
}

/// Like `DELETE /api/v1/escalations/{prefix}`, with the slash unencoded.
#[utoipa::path(
    delete,
    path = "/api/v1/escalations/{addr}/{len}",
    tag = "escalations",
    params(("addr" = String, Path, description = "Network address: `203.0.113.0`"), ("len" = String, Path, description = "Prefix length: `24`"), WithdrawQuery),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 202, description = "The checker withdraws it", body = Withdrawal), (status = "default", description = "An error", body = ErrorBody))
)]
async fn withdraw_split(
    State(state): State<AppState>,
    caller: Caller,
    Path((addr, len)): Path<(String, String)>,
    Query(q): Query<WithdrawQuery>,
) -> Result<(StatusCode, Json<Withdrawal>), ApiError> {
    caller.require(Role::Admin)?;
    do_withdraw(&state, &caller, parse_prefix(&format!("{addr}/{len}"))?, q).await
}

#[derive(Serialize, ToSchema)]
struct SuppressionList {
    suppressions: Vec<SuppressionRow>,
}

/// Prefixes the checker must not escalate, and until when.
#[utoipa::path(
    get,
    path = "/api/v1/suppressions",
    tag = "escalations",
    security(("bearer" = []), ("basic" = [])),
    responses((status = 200, body = SuppressionList), (status = "default", description = "An error", body = ErrorBody))
)]
async fn suppressions(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SuppressionList>, ApiError> {
    caller.require(Role::Read)?;
    let suppressions = state.store.active_suppressions(now_ms()).await?;
    Ok(Json(SuppressionList { suppressions }))
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

/// Lift a suppression.
#[utoipa::path(
    delete,
    path = "/api/v1/suppressions/{prefix}",
    tag = "escalations",
    params(("prefix" = String, Path, description = "URL-encoded prefix: `203.0.113.0%2F24`")),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 204, description = "Lifted"), (status = "default", description = "An error", body = ErrorBody))
)]
async fn lift(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    do_lift(&state, &caller, parse_prefix(&raw)?).await
}

/// Like `DELETE /api/v1/suppressions/{prefix}`, with the slash unencoded.
#[utoipa::path(
    delete,
    path = "/api/v1/suppressions/{addr}/{len}",
    tag = "escalations",
    params(("addr" = String, Path, description = "Network address: `203.0.113.0`"), ("len" = String, Path, description = "Prefix length: `24`")),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 204, description = "Lifted"), (status = "default", description = "An error", body = ErrorBody))
)]
async fn lift_split(
    State(state): State<AppState>,
    caller: Caller,
    Path((addr, len)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    do_lift(&state, &caller, parse_prefix(&format!("{addr}/{len}"))?).await
}
