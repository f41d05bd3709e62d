//! `POST /api/v1/notifications`: FastNetMon's JSON as it sends it (web callback, JSON notify
//! script, or our notify command forwarding a text-mode call). Answered 2xx only once durably
//! stored: committed, or under load in the ingest journal (see `store::record`).

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

/// Host state changes logged one by one in a second, at most. Under a carpet-bombing attack
/// FastNetMon bans thousands of hosts a second: a line each would flood the journal (whose
/// rate limit then drops lines, the ones that matter too) and took a sixth of the service's
/// time at 30,000 notifications/s. The rest are counted, and the count is logged with the next
/// change logged or within a second (`log_held_back`); every one of them is in the audit log
/// (`/api/v1/events`).
const LOGGED_PER_SECOND: u32 = 20;

static STATE_CHANGES: LogBudget = LogBudget::new(LOGGED_PER_SECOND);

/// Logs the count of state changes held back in a second that has ended, once a second, so
/// that a burst's count is not left waiting for the next change; and what is left at shutdown.
pub async fn log_held_back(mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => STATE_CHANGES.report(now_ms(), false),
        }
    }
    STATE_CHANGES.report(now_ms(), true);
}

/// A budget of log lines per wall-clock second.
struct LogBudget {
    per_second: u32,
    /// (the second, lines logged in it, lines held back since the last report)
    window: std::sync::Mutex<(i64, u32, u64)>,
}

impl LogBudget {
    const fn new(per_second: u32) -> LogBudget {
        LogBudget {
            per_second,
            window: std::sync::Mutex::new((i64::MIN, 0, 0)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (i64, u32, u64)> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a line at `now_ms` may be logged. When it may and lines were held back before
    /// it, says how many, at info.
    fn take(&self, now_ms: i64) -> bool {
        let mut w = self.lock();
        let second = now_ms.div_euclid(1000);
        if w.0 != second {
            w.0 = second;
            w.1 = 0;
        }
        if w.1 >= self.per_second {
            w.2 += 1;
            return false;
        }
        w.1 += 1;
        let held_back = std::mem::take(&mut w.2);
        drop(w);
        self.log(held_back);
        true
    }

    /// Says how many lines were held back, once the second they were held back in has ended
    /// (or at once with `all`).
    fn report(&self, now_ms: i64, all: bool) {
        let mut w = self.lock();
        if all || w.0 != now_ms.div_euclid(1000) {
            let held_back = std::mem::take(&mut w.2);
            drop(w);
            self.log(held_back);
        }
    }

    fn log(&self, held_back: u64) {
        if held_back > 0 {
            tracing::info!(
                held_back,
                "{held_back} more host state changes were recorded without a line each \
                 (past {} a second; each is in /api/v1/events)",
                self.per_second
            );
        }
    }
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
        // A crossing, a ban counted for carpet bombing or an unban changes what is wanted of
        // the host's own prefix only.
        match ip {
            Some(ip) => state.checker.wake_for([ip]),
            None => state.checker.wake(),
        }
    }
    // A host's state change at info, up to `LOGGED_PER_SECOND`; repeats, stale and duplicate
    // deliveries, and the changes past the budget, at debug. (`ip` is left out for a hostgroup;
    // fields are only formatted when the line is logged.)
    let outcome = recorded.outcome.as_str();
    let change = matches!(recorded.outcome, Outcome::Banned | Outcome::Unbanned);
    if change && STATE_CHANGES.take(received_at) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn held_back(b: &LogBudget) -> u64 {
        b.window.lock().map(|w| w.2).unwrap_or(0)
    }

    #[test]
    fn a_budget_logs_so_many_a_second_and_counts_the_rest() {
        let b = LogBudget::new(3);
        let t = 1_764_000_000_000;
        let first: Vec<bool> = (0..5).map(|i| b.take(t + i)).collect();
        assert_eq!(first, [true, true, true, false, false]);
        assert_eq!(held_back(&b), 2);
        // Still the same second: nothing more.
        assert!(!b.take(t + 999));
        assert_eq!(held_back(&b), 3);
        // The next second logs again, and the count held back is reported with it.
        assert!(b.take(t + 1000));
        assert_eq!(held_back(&b), 0);
        assert!(b.take(t + 1001));
        // Clocks step back: a new window all the same.
        assert!(b.take(t - 5000));
    }

    #[test]
    fn what_was_held_back_is_reported_once_its_second_is_over() {
        let b = LogBudget::new(1);
        let t = 1_764_000_000_000;
        assert!(b.take(t));
        assert!(!b.take(t + 1));
        assert!(!b.take(t + 2));
        // Within the same second nothing is reported yet.
        b.report(t + 500, false);
        assert_eq!(held_back(&b), 2);
        // After it, the count is reported (and so not again with the next line).
        b.report(t + 1000, false);
        assert_eq!(held_back(&b), 0);
        // At shutdown, whatever is left, at once.
        assert!(b.take(t + 1001));
        assert!(!b.take(t + 1002));
        b.report(t + 1003, true);
        assert_eq!(held_back(&b), 0);
    }
}
