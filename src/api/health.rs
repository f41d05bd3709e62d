//! `/healthz` (the process answers) and `/readyz` (the database is writable and the BGP speaker
//! reachable; the body says which part is not, and how the live FastNetMon sources are doing).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::bgp::SpeakerHealth;
use crate::checker::CheckerStatus;
use crate::clock::now_ms;
use crate::sources::SourceView;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

#[derive(Serialize, ToSchema)]
struct Alive {
    /// Always `ok`.
    status: &'static str,
}

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Alive)))]
async fn healthz() -> Json<Alive> {
    Json(Alive { status: "ok" })
}

#[derive(Serialize, ToSchema)]
struct DatabaseHealth {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct Readiness {
    /// `ready`, or `degraded` with the parts named in `degraded`.
    status: &'static str,
    /// `database`, `bgp`, `sources`.
    degraded: Vec<&'static str>,
    database: DatabaseHealth,
    bgp: SpeakerHealth,
    checker: CheckerStatus,
    #[schema(value_type = BTreeMap<String, SourceView>)]
    sources: BTreeMap<&'static str, SourceView>,
    dry_run: bool,
}

/// The database is writable and the BGP speaker reachable (else 503); stale FastNetMon sources
/// degrade the service but leave it ready.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready (possibly degraded: see `degraded`)", body = Readiness),
        (status = 503, description = "Not ready: the database or the speaker", body = Readiness)
    )
)]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let db = match state.store.check_writable().await {
        Ok(()) => DatabaseHealth {
            ok: true,
            detail: None,
        },
        Err(e) => DatabaseHealth {
            ok: false,
            detail: Some(e.to_string()),
        },
    };
    let speaker = state.speaker.health().await;
    let checker = state.checker.status();
    let db_ok = db.ok;
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
        Json(Readiness {
            status: if degraded.is_empty() {
                "ready"
            } else {
                "degraded"
            },
            degraded,
            database: db,
            bgp: speaker,
            checker,
            sources: state.sources.views(now),
            dry_run: state.config.escalation.dry_run,
        }),
    )
}
