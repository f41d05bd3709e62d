//! The OpenAPI document: served, complete, and true. Every documented operation is exercised
//! against a live service, and every response (success and error) is validated against the
//! schema the document gives for its status.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::app::{spawn_app, TestApp, ADMIN, NOTIFY, READ};

/// The routes of PRODUCT.md section 3 and the ones the service adds; a route dropped from the
/// document (or added without being listed here) fails the test.
const DOCUMENTED: &[(&str, &str)] = &[
    ("post", "/api/v1/notifications"),
    ("post", "/write"),
    ("get", "/api/v1/hosts"),
    ("get", "/api/v1/hosts/{ip}"),
    ("get", "/api/v1/escalations"),
    ("post", "/api/v1/escalations"),
    ("get", "/api/v1/escalations/{prefix}"),
    ("delete", "/api/v1/escalations/{prefix}"),
    ("get", "/api/v1/escalations/{addr}/{len}"),
    ("delete", "/api/v1/escalations/{addr}/{len}"),
    ("get", "/api/v1/suppressions"),
    ("delete", "/api/v1/suppressions/{prefix}"),
    ("delete", "/api/v1/suppressions/{addr}/{len}"),
    ("get", "/api/v1/events"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

struct Checker<'a> {
    app: &'a TestApp,
    doc: Value,
    exercised: BTreeSet<(String, String)>,
}

impl Checker<'_> {
    /// Sends one request and validates the answer against the document: the operation must be
    /// documented, its status must have a response (or a `default`), and a JSON body must match
    /// that response's schema.
    async fn call(
        &mut self,
        method: Method,
        template: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> (u16, Value) {
        let mut req = self
            .app
            .http
            .request(method.clone(), format!("{}{path}", self.app.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some((content_type, bytes)) = body {
            req = req.header("content-type", content_type).body(bytes);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = resp.bytes().await.expect("body");

        let m = method.as_str().to_lowercase();
        let op = &self.doc["paths"][template][&m];
        assert!(op.is_object(), "{m} {template} is not documented");
        self.exercised.insert((m.clone(), template.to_string()));
        let responses = &op["responses"];
        let documented = if responses[status.to_string()].is_object() {
            &responses[status.to_string()]
        } else {
            &responses["default"]
        };
        assert!(
            documented.is_object(),
            "{m} {path}: status {status} is not documented ({responses})"
        );
        let content = &documented["content"];
        if bytes.is_empty() {
            assert!(
                content.is_null() || status == 204,
                "{m} {path}: {status} documented with a body, got none"
            );
            return (status, Value::Null);
        }
        let media = content_type.split(';').next().unwrap_or("").trim();
        let schema = &content[media]["schema"];
        assert!(
            schema.is_object(),
            "{m} {path}: {status} answered {media}, documented {content}"
        );
        if media != "application/json" {
            return (status, Value::Null);
        }
        let value: Value = serde_json::from_slice(&bytes).expect("JSON body");
        let mut root = schema.clone();
        root["components"] = self.doc["components"].clone();
        let validator = jsonschema::validator_for(&root)
            .unwrap_or_else(|e| panic!("{m} {template} {status}: schema does not compile: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "{m} {path} {status}: the body does not match the documented schema: {errors:#?}\n{value:#}"
        );
        (status, value)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route_and_every_live_response() {
    let app = spawn_app(|c| {
        c.escalation.min_hold = Duration::ZERO;
    })
    .await;
    let doc: Value = app
        .http
        .get(format!("{}/api/v1/openapi.json", app.url))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "fnm-escalator");
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .expect("operations")
                .keys()
                .filter(|k| *k != "parameters")
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = DOCUMENTED
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, expected);
    // The document serves what the code generates.
    assert_eq!(
        doc,
        serde_json::to_value(fnm_escalator::api::openapi_document()).expect("doc")
    );

    let mut c = Checker {
        app: &app,
        doc,
        exercised: BTreeSet::new(),
    };
    let ban = serde_json::to_vec(&json!({
        "ip": "198.51.100.9", "action": "ban", "attack_details": {
            "attack_uuid": "4b1c7e8a-0000-4000-8000-000000000001",
            "total_incoming_traffic": 60_000_000, "total_incoming_pps": 10}
    }))
    .expect("json");
    let notifications = "/api/v1/notifications";
    let (s, _) = c
        .call(
            Method::POST,
            notifications,
            notifications,
            Some(NOTIFY),
            Some(("application/json", ban.clone())),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = c
        .call(
            Method::POST,
            notifications,
            notifications,
            Some(NOTIFY),
            Some(("application/json", b"{not json".to_vec())),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = c
        .call(
            Method::POST,
            notifications,
            notifications,
            None,
            Some(("application/json", ban)),
        )
        .await;
    assert_eq!(s, 401);

    let line = "hosts_traffic,host=198.51.100.9 bits_incoming=1000i,packets_incoming=1i,bits_outgoing=0i,packets_outgoing=0i\n";
    let (s, _) = c
        .call(
            Method::POST,
            "/write",
            "/write?db=fastnetmon",
            Some(NOTIFY),
            Some(("text/plain", line.as_bytes().to_vec())),
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = c
        .call(
            Method::POST,
            "/write",
            "/write",
            Some(NOTIFY),
            Some(("text/plain", b"garbage".to_vec())),
        )
        .await;
    assert_eq!(s, 400);

    let (s, v) = c
        .call(
            Method::GET,
            "/api/v1/hosts",
            "/api/v1/hosts",
            Some(READ),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["total"], 1);
    let (s, _) = c
        .call(
            Method::GET,
            "/api/v1/hosts",
            "/api/v1/hosts?state=nope",
            Some(READ),
            None,
        )
        .await;
    assert_eq!(s, 422);
    let (s, v) = c
        .call(
            Method::GET,
            "/api/v1/hosts/{ip}",
            "/api/v1/hosts/198.51.100.9",
            Some(READ),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["episodes"].as_array().map(Vec::len), Some(1));
    let (s, _) = c
        .call(
            Method::GET,
            "/api/v1/hosts/{ip}",
            "/api/v1/hosts/198.51.100.10",
            Some(READ),
            None,
        )
        .await;
    assert_eq!(s, 404);

    app.wait_for(
        "/api/v1/escalations?state=active",
        Duration::from_secs(10),
        |v| v["escalations"].as_array().is_some_and(|a| !a.is_empty()),
    )
    .await;
    let (s, v) = c
        .call(
            Method::GET,
            "/api/v1/escalations",
            "/api/v1/escalations?state=active",
            Some(READ),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["escalations"][0]["prefix"], "198.51.100.0/24");
    let (s, _) = c
        .call(
            Method::GET,
            "/api/v1/escalations/{prefix}",
            "/api/v1/escalations/198.51.100.0%2F24",
            Some(READ),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = c
        .call(
            Method::GET,
            "/api/v1/escalations/{addr}/{len}",
            "/api/v1/escalations/198.51.100.0/24",
            Some(READ),
            None,
        )
        .await;
    assert_eq!(s, 200);

    let manual = |prefix: &str| {
        Some((
            "application/json",
            serde_json::to_vec(&json!({"prefix": prefix, "reason": "scrubbing", "duration": "1h"}))
                .expect("json"),
        ))
    };
    let (s, v) = c
        .call(
            Method::POST,
            "/api/v1/escalations",
            "/api/v1/escalations",
            Some(ADMIN),
            manual("198.51.101.0/24"),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["origin"], "manual");
    let (s, v) = c
        .call(
            Method::POST,
            "/api/v1/escalations",
            "/api/v1/escalations",
            Some(ADMIN),
            manual("192.0.2.0/24"),
        )
        .await;
    assert_eq!(s, 422);
    assert_eq!(v["detail"]["rule"], "outside_ours");
    let (s, _) = c
        .call(
            Method::POST,
            "/api/v1/escalations",
            "/api/v1/escalations",
            Some(READ),
            manual("198.51.102.0/24"),
        )
        .await;
    assert_eq!(s, 403);

    let (s, v) = c
        .call(
            Method::DELETE,
            "/api/v1/escalations/{prefix}",
            "/api/v1/escalations/198.51.101.0%2F24?suppress=30m",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["state"], "withdrawing");
    let (s, _) = c
        .call(
            Method::DELETE,
            "/api/v1/escalations/{addr}/{len}",
            "/api/v1/escalations/198.51.102.0/24?suppress=10m",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 202);
    let (s, _) = c
        .call(
            Method::DELETE,
            "/api/v1/escalations/{prefix}",
            "/api/v1/escalations/not-a-prefix",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 422);
    let (s, v) = c
        .call(
            Method::GET,
            "/api/v1/suppressions",
            "/api/v1/suppressions",
            Some(READ),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["suppressions"].as_array().map(Vec::len), Some(2));
    let (s, _) = c
        .call(
            Method::DELETE,
            "/api/v1/suppressions/{prefix}",
            "/api/v1/suppressions/198.51.101.0%2F24",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = c
        .call(
            Method::DELETE,
            "/api/v1/suppressions/{addr}/{len}",
            "/api/v1/suppressions/198.51.102.0/24",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = c
        .call(
            Method::DELETE,
            "/api/v1/suppressions/{addr}/{len}",
            "/api/v1/suppressions/198.51.102.0/24",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 404);

    let (s, v) = c
        .call(
            Method::GET,
            "/api/v1/events",
            "/api/v1/events?limit=5",
            Some(READ),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["events"].as_array().map(Vec::len), Some(5));
    let (s, _) = c
        .call(
            Method::GET,
            "/api/v1/events",
            "/api/v1/events?since=yesterday",
            Some(READ),
            None,
        )
        .await;
    assert_eq!(s, 422);

    for (template, token) in [
        ("/healthz", None),
        ("/readyz", None),
        ("/metrics", Some(READ)),
        ("/api/v1/openapi.json", None),
    ] {
        let (s, _) = c.call(Method::GET, template, template, token, None).await;
        assert_eq!(s, 200, "{template}");
    }
    let (s, _) = c
        .call(Method::GET, "/metrics", "/metrics", Some(NOTIFY), None)
        .await;
    assert_eq!(s, 403);

    let missed: Vec<_> = expected.difference(&c.exercised).collect();
    assert!(missed.is_empty(), "operations never exercised: {missed:?}");
    app.stop().await;
}
