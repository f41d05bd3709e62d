//! The OpenAPI 3 document of the whole API, served at `/api/v1/openapi.json`. It is generated
//! from the handlers' own annotations by the same router builder that serves them
//! (`utoipa_axum`), so a route cannot exist without its documentation, nor the other way round.

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::Extension;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every error: `{"error": "...", "detail": ...}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// One sentence saying what is wrong (a refusal names its rule).
    pub error: String,
    /// More detail when there is any: a string, or an object (a refusal carries `rule` and
    /// `reason`).
    pub detail: Option<serde_json::Value>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "fnm-escalator",
        description = "Escalates FastNetMon host blackholes to covering-prefix BGP announcements, \
                       and withdraws them when the attack is over.",
        license(name = "Apache-2.0")
    ),
    modifiers(&Security),
    components(schemas(ErrorBody)),
    tags(
        (name = "notifications", description = "FastNetMon in: ban/unban notifications and InfluxDB counters"),
        (name = "hosts", description = "What FastNetMon told us about each host"),
        (name = "escalations", description = "Covering prefixes: the ledger, and manual overrides"),
        (name = "events", description = "The audit log"),
        (name = "operations", description = "Health, readiness, metrics, this document")
    )
)]
pub struct ApiDoc;

/// Bearer tokens everywhere; Basic (user = token name, password = token) too, for FastNetMon's
/// callback URL.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

/// The rendered document, shared by the handler.
#[derive(Clone)]
pub struct Document(pub Arc<String>);

/// The OpenAPI 3 document of this API.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3 document", content_type = "application/json", body = Object))
)]
pub async fn document(Extension(doc): Extension<Document>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.0.as_str().to_owned(),
    )
}
