//! `/healthz` (the process answers) and `/readyz` (the database is writable and the BGP speaker
//! reachable; the body says which part is not, and how the live FastNetMon sources are doing).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;
use crate::clock::now_ms;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let db = match state.store.check_writable().await {
        Ok(()) => json!({ "ok": true }),
        Err(e) => json!({ "ok": false, "detail": e.to_string() }),
    };
    let speaker = state.speaker.health().await;
    let checker = state.checker.status();
    let db_ok = db["ok"].as_bool().unwrap_or(false);
    let ready = db_ok && speaker.reachable;
    let mut degraded = Vec::new();
    if !db_ok {
        degraded.push("database");
    }
    if !speaker.reachable {
        degraded.push("bgp");
    }
    // A stale source degrades the service but does not make it unready: notifications still
    // escalate, and missing samples never withdraw anything. So 200, with `sources` named.
    let now = now_ms();
    let unhealthy = state.sources.unhealthy(now);
    if !unhealthy.is_empty() {
        degraded.push("sources");
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if degraded.is_empty() { "ready" } else { "degraded" },
            "degraded": degraded,
            "database": db,
            "bgp": speaker,
            "checker": checker,
            "sources": state.sources.views(now),
            "dry_run": state.config.escalation.dry_run,
        })),
    )
}
