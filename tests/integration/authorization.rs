//! Authorization: every route against every role, tokens never in the logs, and no input of any
//! role that can make the service announce outside `networks.ours` or over `networks.protected`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use fnm_escalator::bgp::Speaker;
use reqwest::Method;
use serde_json::json;

use crate::support::app::{
    free_addr, spawn_app, spawn_app_with_speaker, test_config, write_config, ADMIN, NOTIFY, READ,
};
use crate::support::fake_speaker::FakeSpeaker;

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Nobody,
    WrongToken,
    Read,
    Notify,
    Admin,
}

const EVERYONE: [Who; 5] = [
    Who::Nobody,
    Who::WrongToken,
    Who::Read,
    Who::Notify,
    Who::Admin,
];

/// Which callers a route lets through.
#[derive(Debug, Clone, Copy)]
enum Needs {
    Nothing,
    Read,
    Notify,
    Admin,
}

impl Needs {
    fn lets_in(self, who: Who) -> bool {
        match (self, who) {
            (Needs::Nothing, _) => true,
            (_, Who::Nobody | Who::WrongToken) => false,
            (_, Who::Admin) => true,
            (Needs::Read, Who::Read) | (Needs::Notify, Who::Notify) => true,
            _ => false,
        }
    }
}

struct Case {
    method: Method,
    path: &'static str,
    needs: Needs,
    body: Option<serde_json::Value>,
}

fn case(method: Method, path: &'static str, needs: Needs) -> Case {
    Case {
        method,
        path,
        needs,
        body: None,
    }
}

/// Every route of the API (the OpenAPI test keeps that list complete), with a request that an
/// authorized caller gets through with.
fn table() -> Vec<Case> {
    let ban = json!({"ip": "198.51.100.9", "action": "ban", "alert_scope": "host"});
    let manual = json!({"prefix": "198.51.102.0/24", "reason": "authz table"});
    vec![
        Case {
            body: Some(ban),
            ..case(Method::POST, "/api/v1/notifications", Needs::Notify)
        },
        case(Method::POST, "/write?db=fastnetmon", Needs::Notify),
        case(Method::GET, "/api/v1/hosts", Needs::Read),
        case(Method::GET, "/api/v1/hosts/198.51.100.9", Needs::Read),
        case(Method::GET, "/api/v1/escalations", Needs::Read),
        Case {
            body: Some(manual),
            ..case(Method::POST, "/api/v1/escalations", Needs::Admin)
        },
        case(
            Method::GET,
            "/api/v1/escalations/198.51.102.0%2F24",
            Needs::Read,
        ),
        case(
            Method::GET,
            "/api/v1/escalations/198.51.102.0/24",
            Needs::Read,
        ),
        case(
            Method::DELETE,
            "/api/v1/escalations/198.51.103.0%2F24?suppress=1m",
            Needs::Admin,
        ),
        case(
            Method::DELETE,
            "/api/v1/escalations/198.51.103.0/24?suppress=1m",
            Needs::Admin,
        ),
        case(Method::GET, "/api/v1/suppressions", Needs::Read),
        case(
            Method::DELETE,
            "/api/v1/suppressions/198.51.103.0%2F24",
            Needs::Admin,
        ),
        case(
            Method::DELETE,
            "/api/v1/suppressions/198.51.103.0/24",
            Needs::Admin,
        ),
        case(Method::GET, "/api/v1/events", Needs::Read),
        case(Method::GET, "/metrics", Needs::Read),
        case(Method::GET, "/api/v1/openapi.json", Needs::Nothing),
        case(Method::GET, "/healthz", Needs::Nothing),
        case(Method::GET, "/readyz", Needs::Nothing),
    ]
}

fn token(who: Who) -> Option<(&'static str, &'static str)> {
    match who {
        Who::Nobody => None,
        Who::WrongToken => Some(("noc", "admin-token-124")),
        Who::Read => Some(("grafana", READ)),
        Who::Notify => Some(("fastnetmon", NOTIFY)),
        Who::Admin => Some(("noc", ADMIN)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_against_every_role_with_bearer_and_basic_auth() {
    let app = spawn_app(|_| {}).await;
    let mut checked = 0;
    for basic in [false, true] {
        for c in table() {
            for who in EVERYONE {
                let mut req = app
                    .http
                    .request(c.method.clone(), format!("{}{}", app.url, c.path));
                if let Some((name, secret)) = token(who) {
                    req = if basic {
                        req.basic_auth(name, Some(secret))
                    } else {
                        req.bearer_auth(secret)
                    };
                }
                req = match &c.body {
                    Some(b) => req.json(b),
                    None if c.path.starts_with("/write") => req.body(
                        "hosts_traffic,host=198.51.100.9 bits_incoming=8i,packets_incoming=1i\n",
                    ),
                    None => req,
                };
                let r = req.send().await.expect("request");
                let status = r.status().as_u16();
                let what = format!(
                    "{} {} as {who:?} ({})",
                    c.method,
                    c.path,
                    if basic { "basic" } else { "bearer" }
                );
                if c.needs.lets_in(who) {
                    assert!(
                        status < 400 || status == 404 || status == 409,
                        "{what}: let in, but got {status}"
                    );
                } else {
                    let expected = if matches!(who, Who::Nobody | Who::WrongToken) {
                        401
                    } else {
                        403
                    };
                    assert_eq!(status, expected, "{what}");
                    if status == 401 {
                        assert!(
                            r.headers().contains_key("www-authenticate"),
                            "{what}: 401 without WWW-Authenticate"
                        );
                    }
                    let body: serde_json::Value = r.json().await.expect("JSON error body");
                    assert!(body["error"].is_string(), "{what}: {body}");
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 2 * table().len() * EVERYONE.len());

    // The InfluxDB style: the token as `p` (with or without `u`), nothing else.
    for (query, status) in [
        (format!("?db=x&u=fastnetmon&p={NOTIFY}"), 204),
        (format!("?db=x&p={NOTIFY}"), 204),
        (format!("?db=x&p={ADMIN}"), 204),
        (format!("?db=x&p={READ}"), 403),
        ("?db=x&u=fastnetmon&p=wrong".to_string(), 401),
        (format!("?db=x&u=noc&p={NOTIFY}"), 401),
    ] {
        let r = app
            .http
            .post(format!("{}/write{query}", app.url))
            .body("hosts_traffic,host=198.51.100.9 bits_incoming=8i\n")
            .send()
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), status, "/write{query}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    let addr = free_addr();
    config.server.listen = addr;
    let cfg = write_config(&config, dir.path());
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).expect("log");
    /// Kills the service by its PID when the test ends, failing or not.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let service = Kill(
        std::process::Command::new(crate::support::app::binary())
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "trace")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "service did not start"
        );
        std::thread::sleep(Duration::from_millis(30));
    }

    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = format!("http://{addr}");
    let wrong = "wrong-secret-token-987";
    let basic = |user: &str, pass: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    };
    for auth in [
        format!("Bearer {ADMIN}"),
        format!("Bearer {NOTIFY}"),
        format!("Bearer {READ}"),
        format!("Bearer {wrong}"),
        basic("fastnetmon", NOTIFY),
        basic("fastnetmon", wrong),
    ] {
        for path in ["/api/v1/hosts", "/api/v1/escalations", "/metrics"] {
            let _ = http
                .get(format!("{url}{path}"))
                .header("authorization", &auth)
                .send()
                .await
                .expect("request");
        }
        let _ = http
            .post(format!("{url}/api/v1/notifications"))
            .header("authorization", &auth)
            .body(r#"{"ip":"198.51.100.3","action":"ban"}"#)
            .send()
            .await
            .expect("request");
    }
    for p in [NOTIFY, wrong] {
        let _ = http
            .post(format!("{url}/write?db=x&u=fastnetmon&p={p}"))
            .body("hosts_traffic,host=198.51.100.3 bits_incoming=8i\n")
            .send()
            .await
            .expect("request");
    }
    drop(service);
    let log = std::fs::read_to_string(&log_path).expect("log");
    assert!(log.contains("request"), "the log is there: {log}");
    for secret in [ADMIN, NOTIFY, READ, wrong] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("fastnetmon:{NOTIFY}"));
    assert!(!log.contains(&encoded), "a Basic credential in the log");
}

/// Whatever any caller sends (bans over threshold, carpet bombing, manual escalations), nothing
/// outside `networks.ours` or overlapping `networks.protected` is ever announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_outside_ours_or_over_protected_is_ever_announced() {
    let fake = Arc::new(FakeSpeaker::default());
    let speaker: Arc<dyn Speaker> = fake.clone();
    let app = spawn_app_with_speaker(
        |c| {
            c.networks.ours = vec![
                "198.51.100.0/22".parse().expect("net"),
                "2001:db8::/32".parse().expect("net"),
            ];
            c.networks.protected = vec![
                "198.51.101.0/28".parse().expect("net"),
                "2001:db8:1::/64".parse().expect("net"),
            ];
            c.escalation.carpet_bombing_hosts = 2;
            c.escalation.min_hold = Duration::ZERO;
            c.escalation.check_interval = Duration::from_millis(100);
        },
        Some(speaker),
    )
    .await;
    let outside_or_protected = [
        "203.0.113.5",   // outside ours
        "198.51.104.1",  // just past ours
        "198.51.99.255", // just before ours
        "198.51.101.5",  // its /24 overlaps protected
        "198.51.101.200",
        "2001:db9::1",   // outside ours
        "2001:db8:1::5", // its /48 overlaps protected
        "2001:db8:1:1::5",
        "10.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "::1",
    ];
    for ip in outside_or_protected {
        for _ in 0..2 {
            let body = json!({
                "ip": ip, "action": "ban", "alert_scope": "host",
                "attack_details": {"total_incoming_traffic": 10_000_000_000u64, "total_incoming_pps": 10_000_000}
            });
            let (s, b) = app
                .post(
                    "/api/v1/notifications",
                    NOTIFY,
                    serde_json::to_vec(&body).expect("json"),
                )
                .await;
            assert!(s == 201 || s == 200 || s == 422, "{ip}: {s} {b}");
        }
    }
    // Carpet bombing inside protected /24s: many hosts, still refused.
    for i in 16..40 {
        let body = json!({"ip": format!("198.51.101.{i}"), "action": "ban", "alert_scope": "host"});
        app.post(
            "/api/v1/notifications",
            NOTIFY,
            serde_json::to_vec(&body).expect("json"),
        )
        .await;
    }
    for prefix in [
        "203.0.113.0/24",
        "198.51.101.0/24",
        "198.51.100.0/22",
        "198.51.100.0/23",
        "0.0.0.0/0",
        "198.51.0.0/16",
        "2001:db8:1::/48",
        "2001:db8::/32",
        "::/0",
        "2001:db9::/48",
    ] {
        let (s, b) = app
            .post(
                "/api/v1/escalations",
                ADMIN,
                serde_json::to_vec(&json!({"prefix": prefix, "reason": "rails"})).expect("json"),
            )
            .await;
        assert!(s == 422 || s == 409, "{prefix}: {s} {b}");
        assert!(b["detail"]["rule"].is_string(), "{prefix}: {b}");
    }
    // Give the checker many cycles to get it wrong.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let announced: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("announce"))
        .collect();
    assert!(announced.is_empty(), "announced: {announced:?}");
    assert!(fake.prefixes().is_empty());
    let (_, refused) = app
        .get("/api/v1/escalations?state=refused&limit=1000", READ)
        .await;
    let rules: std::collections::BTreeSet<String> = refused["escalations"]
        .as_array()
        .expect("escalations")
        .iter()
        .filter_map(|e| e["rule"].as_str().map(str::to_string))
        .collect();
    assert!(
        rules.contains("outside_ours") && rules.contains("protected"),
        "refusals are recorded with their rule: {rules:?}"
    );

    // The control: a host inside ours and away from protected does escalate.
    let body = json!({
        "ip": "198.51.102.9", "action": "ban", "alert_scope": "host",
        "attack_details": {"total_incoming_traffic": 50_000_000, "total_incoming_pps": 10}
    });
    app.post(
        "/api/v1/notifications",
        NOTIFY,
        serde_json::to_vec(&body).expect("json"),
    )
    .await;
    app.wait_for(
        "/api/v1/escalations?state=active",
        Duration::from_secs(5),
        |v| v["escalations"].as_array().is_some_and(|a| !a.is_empty()),
    )
    .await;
    assert_eq!(fake.prefixes(), vec!["198.51.102.0/24".to_string()]);
    app.stop().await;
}
