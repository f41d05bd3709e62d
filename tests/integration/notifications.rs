//! Receiving and recording FastNetMon notifications: every real payload, every calling
//! convention, bad input, auth, duplicates, durability and the notify spool.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::app::{
    capture, fixture, free_addr, run_notify, spawn_app, write_config, Service, ADMIN, NOTIFY, READ,
};

fn with_action(sample: &str, action: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&fixture(sample)).expect("json");
    v["action"] = json!(action);
    serde_json::to_vec(&v).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_advanced_sample_is_accepted_and_shows_up_in_hosts() {
    let app = spawn_app(|_| {}).await;
    for f in [
        "advanced/ban_host.json",
        "advanced/ban_hostgroup.json",
        "advanced/partial_block.json",
        "advanced/partial_unblock.json",
    ] {
        let (status, body) = app.post("/api/v1/notifications", NOTIFY, fixture(f)).await;
        assert_eq!(status, 201, "{f}: {body}");
    }
    let (status, body) = app
        .post(
            "/api/v1/notifications",
            NOTIFY,
            with_action("advanced/ban_host.json", "attack_status"),
        )
        .await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (201, Some("already_banned"))
    );

    let (_, host) = app.get("/api/v1/hosts/10.154.0.2", READ).await;
    assert_eq!(host["state"], "banned");
    assert_eq!(host["attack_uuid"], "56df6f3d-12c2-4249-aeeb-2a44aa731513");
    assert_eq!(host["covering_prefix"], "10.154.0.0/24");
    // total_incoming_traffic is bytes per second: 7036735 B/s = 56293880 bit/s.
    assert_eq!(host["traffic"]["in_bps"], 56_293_880);
    assert_eq!(host["traffic"]["in_pps"], 175);
    assert_eq!(host["episodes"].as_array().map(Vec::len), Some(1));
    assert_eq!(host["episodes"][0]["notifications"], 2);

    let (status, _) = app
        .post(
            "/api/v1/notifications",
            NOTIFY,
            with_action("advanced/ban_host.json", "unban"),
        )
        .await;
    assert_eq!(status, 201);
    let (_, host) = app.get("/api/v1/hosts/10.154.0.2", READ).await;
    assert_eq!(host["state"], "unbanned");
    assert!(host["episodes"][0]["ended_at"].is_string());

    // Hostgroup and Flow Spec notifications are in the audit log.
    let (_, events) = app.get("/api/v1/events?kind=notification", READ).await;
    let messages: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("hostgroup servers")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with("partial_block")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with("partial_unblock")),
        "{messages:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn community_captures_through_the_notify_command() {
    let app = spawn_app(|_| {}).await;
    let config = app.write_config();
    for case in ["auto_ban", "auto_attack_details", "manual_api_ban"] {
        let (argv, stdin) = capture(case);
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let (code, stderr, took) = run_notify(&config, &args, &stdin);
        assert_eq!(code, 0, "{case}: {stderr}");
        assert!(stderr.is_empty(), "{case}: {stderr}");
        assert!(took < Duration::from_secs(2), "{case} took {took:?}");
    }
    let (_, host) = app.get("/api/v1/hosts/10.10.10.5", READ).await;
    assert_eq!(host["state"], "banned", "{host}");
    assert_eq!(host["source"], "notify_text");
    assert_eq!(host["direction"], "incoming");
    // From the report: 29 mbps, 3625 pps.
    assert_eq!(host["traffic"]["in_bps"], 29_000_000);
    assert_eq!(host["traffic"]["in_pps"], 3625);
    assert_eq!(host["episodes"][0]["attack_type"], "udp_flood");
    assert_eq!(host["episodes"][0]["protocol"], "udp");
    assert_eq!(
        host["episodes"][0]["notifications"], 2,
        "ban + attack_details: one episode"
    );
    let (_, manual) = app.get("/api/v1/hosts/10.10.10.7", READ).await;
    assert_eq!(manual["state"], "banned");

    for case in ["auto_unban", "manual_api_unban"] {
        let (argv, stdin) = capture(case);
        assert!(stdin.is_empty());
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let (code, stderr, _) = run_notify(&config, &args, &stdin);
        assert_eq!(code, 0, "{case}: {stderr}");
    }
    for ip in ["10.10.10.5", "10.10.10.7"] {
        let (_, host) = app.get(&format!("/api/v1/hosts/{ip}"), READ).await;
        assert_eq!(host["state"], "unbanned", "{ip}: {host}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advanced_json_notify_script_with_and_without_legacy_argv() {
    let app = spawn_app(|_| {}).await;
    let config = app.write_config();
    let ban = fixture("advanced/ban_host.json");
    let (code, stderr, _) = run_notify(&config, &["ban", "10.154.0.2"], &ban);
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr, _) = run_notify(&config, &[], &fixture("advanced/ban_hostgroup.json"));
    assert_eq!(code, 0, "{stderr}");
    let (_, host) = app.get("/api/v1/hosts/10.154.0.2", READ).await;
    assert_eq!(host["state"], "banned");
    assert_eq!(host["source"], "notify_json");
    let (code, _, _) = run_notify(
        &config,
        &[],
        &with_action("advanced/ban_host.json", "unban"),
    );
    assert_eq!(code, 0);
    let (_, host) = app.get("/api/v1/hosts/10.154.0.2", READ).await;
    assert_eq!(host["state"], "unbanned");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_gets_4xx_with_a_json_error_and_the_service_stays_up() {
    let app = spawn_app(|c| c.server.max_body_bytes = 64 * 1024).await;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("empty body", b"".to_vec(), 400),
        ("not json", b"ban 10.0.0.1".to_vec(), 400),
        ("truncated", br#"{"ip":"10.0.0.1","action":"ba"#.to_vec(), 400),
        ("array", br#"["ban","10.0.0.1"]"#.to_vec(), 400),
        ("string", br#""ban""#.to_vec(), 400),
        ("missing action", br#"{"ip":"10.0.0.1"}"#.to_vec(), 422),
        ("unknown action", br#"{"ip":"10.0.0.1","action":"nuke"}"#.to_vec(), 422),
        ("action not a string", br#"{"ip":"10.0.0.1","action":7}"#.to_vec(), 422),
        ("invalid ip", br#"{"ip":"10.0.0.300","action":"ban"}"#.to_vec(), 422),
        ("ip not a string", br#"{"ip":167772161,"action":"ban"}"#.to_vec(), 422),
        ("missing ip", br#"{"action":"ban"}"#.to_vec(), 422),
        (
            "pps not a number",
            br#"{"ip":"10.0.0.1","action":"ban","attack_details":{"total_incoming_pps":"lots"}}"#
                .to_vec(),
            422,
        ),
        (
            "negative traffic",
            br#"{"ip":"10.0.0.1","action":"ban","attack_details":{"total_incoming_traffic":-5}}"#
                .to_vec(),
            422,
        ),
        (
            "bad hostgroup network",
            br#"{"alert_scope":"hostgroup","hostgroup_name":"x","action":"ban","hostgroup_networks":["nope"]}"#
                .to_vec(),
            422,
        ),
        ("invalid utf-8", vec![b'{', 0xff, 0xfe, b'}'], 400),
        ("oversized", vec![b' '; 100 * 1024], 413),
    ];
    for (name, body, want) in cases {
        let (status, json) = app.post("/api/v1/notifications", NOTIFY, body).await;
        assert_eq!(status, want, "{name}: {json}");
        assert!(
            json["error"].is_string(),
            "{name}: error body is JSON: {json}"
        );
    }
    // Headers of our own delivery protocol are checked too.
    let r = app
        .http
        .post(format!("{}/api/v1/notifications", app.url))
        .bearer_auth(NOTIFY)
        .header("x-fnm-observed-at", "yesterday")
        .body(fixture("advanced/ban_host.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 422);
    // Bad path and query parameters.
    for (path, want) in [
        ("/api/v1/hosts/not-an-ip", 422),
        ("/api/v1/hosts/10.0.0.1", 404),
        ("/api/v1/hosts?state=sideways", 422),
        ("/api/v1/hosts?limit=0", 422),
        ("/api/v1/hosts?limit=abc", 422),
        ("/api/v1/hosts?bogus=1", 422),
        ("/api/v1/escalations?state=nope", 422),
        ("/api/v1/escalations/10.0.0.0%2F99", 422),
        ("/api/v1/events?since=never", 422),
        ("/api/v1/nope", 404),
    ] {
        let (status, json) = app.get(path, ADMIN).await;
        assert_eq!(status, want, "{path}: {json}");
        assert!(json["error"].is_string(), "{path}: {json}");
    }
    let (status, _) = app.get("/healthz", READ).await;
    assert_eq!(status, 200);
    // Nothing stored was lost: a valid notification still works and nothing bad was stored.
    let (status, _) = app
        .post(
            "/api/v1/notifications",
            NOTIFY,
            fixture("advanced/ban_host.json"),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(app.store.count_notifications().await.expect("count"), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_have_roles_and_basic_auth_is_accepted_for_notifications() {
    let app = spawn_app(|_| {}).await;
    let ban = fixture("advanced/ban_host.json");
    // No credentials, wrong token: 401.
    let r = app
        .http
        .post(format!("{}/api/v1/notifications", app.url))
        .body(ban.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    let (status, _) = app
        .post("/api/v1/notifications", "wrong-token-123", ban.clone())
        .await;
    assert_eq!(status, 401);
    // Read may not notify; notify may not read.
    let (status, body) = app.post("/api/v1/notifications", READ, ban.clone()).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = app.get("/api/v1/hosts", NOTIFY).await;
    assert_eq!(status, 403);
    // FastNetMon's callback URL: http://fastnetmon:TOKEN@host/api/v1/notifications
    let r = app
        .http
        .post(format!("{}/api/v1/notifications", app.url))
        .basic_auth("fastnetmon", Some(NOTIFY))
        .body(ban.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 201);
    let r = app
        .http
        .post(format!("{}/api/v1/notifications", app.url))
        .basic_auth("noc", Some(NOTIFY))
        .body(ban)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401, "the user name must match the token's name");
    // The audit log names the token that acted.
    let (_, events) = app.get("/api/v1/events", READ).await;
    assert_eq!(events["events"][0]["actor"], "fastnetmon");
    // /healthz needs nothing.
    let r = app
        .http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_notifications_do_not_duplicate_hosts_or_episodes() {
    let app = spawn_app(|_| {}).await;
    // Two FastNetMon instances (HA) report the same attack, with their own uuids.
    let mut a: Value = serde_json::from_slice(&fixture("advanced/ban_host.json")).expect("json");
    let mut b = a.clone();
    a["attack_details"]["attack_uuid"] = json!("11111111-1111-1111-1111-111111111111");
    b["attack_details"]["attack_uuid"] = json!("22222222-2222-2222-2222-222222222222");
    for doc in [&a, &b, &a, &b] {
        let (status, _) = app
            .post(
                "/api/v1/notifications",
                NOTIFY,
                serde_json::to_vec(doc).expect("json"),
            )
            .await;
        assert_eq!(status, 201);
    }
    let (_, hosts) = app.get("/api/v1/hosts", READ).await;
    assert_eq!(hosts["total"], 1);
    let (_, host) = app.get("/api/v1/hosts/10.154.0.2", READ).await;
    assert_eq!(host["episodes"].as_array().map(Vec::len), Some(1));
    assert_eq!(host["episodes"][0]["notifications"], 4);
    assert_eq!(host["attack_uuid"], "11111111-1111-1111-1111-111111111111");

    // A redelivery with the same idempotency key is stored once.
    for _ in 0..3 {
        let r = app
            .http
            .post(format!("{}/api/v1/notifications", app.url))
            .bearer_auth(NOTIFY)
            .header("idempotency-key", "spool-key-1")
            .body(with_action("advanced/ban_host.json", "unban"))
            .send()
            .await
            .expect("request");
        assert!(r.status().is_success());
    }
    assert_eq!(app.store.count_notifications().await.expect("count"), 5);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_delivery_ends_in_the_in_order_state() {
    let app = spawn_app(|_| {}).await;
    let post_at = |action: &'static str, at: &'static str| {
        let app = &app;
        async move {
            let r = app
                .http
                .post(format!("{}/api/v1/notifications", app.url))
                .bearer_auth(NOTIFY)
                .header("x-fnm-observed-at", at)
                .body(with_action("advanced/ban_host.json", action))
                .send()
                .await
                .expect("request");
            let v: Value = r.json().await.expect("json");
            v["outcome"].as_str().unwrap_or("").to_string()
        }
    };
    // In order: ban at t1, unban at t2. Delivered: unban first, then the late ban.
    assert_eq!(post_at("unban", "2026-01-01T00:00:02Z").await, "not_banned");
    assert_eq!(post_at("ban", "2026-01-01T00:00:01Z").await, "stale");
    let (_, host) = app.get("/api/v1/hosts/10.154.0.2", READ).await;
    assert_eq!(host["state"], "unbanned");
    // A later ban does apply.
    assert_eq!(post_at("ban", "2026-01-01T00:00:03Z").await, "banned");
    let (_, host) = app.get("/api/v1/hosts/10.154.0.2", READ).await;
    assert_eq!(host["state"], "banned");
    app.stop().await;
}

/// SIGKILL right after a burst: every acknowledged notification is there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_notifications_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = crate::support::app::test_config(dir.path());
    let addr = free_addr();
    config.server.listen = addr;
    let cfg_path = write_config(&config, dir.path());
    let mut svc = Service::start(&cfg_path, addr, &dir.path().join("serve1.log"));
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let url = format!("{}/api/v1/notifications", svc.url);
    // 16 clients, 50 notifications each, for distinct hosts; the kill lands mid-burst.
    let mut tasks = Vec::new();
    for c in 0..16u32 {
        let http = http.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..50u32 {
                let ip = format!("198.51.{}.{}", 100 + c / 8, (c % 8) * 30 + i % 30 + 1);
                let ip = if i >= 30 {
                    format!("2001:db8:{c}::{i}")
                } else {
                    ip
                };
                let body = json!({"ip": ip, "action": "ban", "alert_scope": "host"});
                match http.post(&url).bearer_auth(NOTIFY).json(&body).send().await {
                    Ok(r) if r.status().is_success() => acked.push(ip),
                    _ => {}
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    svc.kill9();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("task"));
    }
    assert!(
        !acked.is_empty(),
        "some notifications were acknowledged before the kill"
    );

    let svc = Service::start(&cfg_path, addr, &dir.path().join("serve2.log"));
    for ip in &acked {
        let r = http
            .get(format!("{}/api/v1/hosts/{ip}", svc.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200, "acknowledged ban of {ip} lost");
    }
    drop(svc);
}

/// SIGKILL the moment the last answer of a burst is in: under load groups are answered once
/// they are in the ingest journal, before their commit; the next start applies them. Every
/// acknowledged ban is there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_answered_before_their_commit_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = crate::support::app::test_config(dir.path());
    let addr = free_addr();
    config.server.listen = addr;
    let cfg_path = write_config(&config, dir.path());
    let mut svc = Service::start(&cfg_path, addr, &dir.path().join("serve1.log"));
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let url = format!("{}/api/v1/notifications", svc.url);
    let mut tasks = Vec::new();
    for c in 0..64u32 {
        let http = http.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..40u32 {
                let ip = format!("10.77.{}.{}", c, i + 1);
                let body = json!({"ip": ip, "action": "ban", "alert_scope": "host"});
                let r = http.post(&url).bearer_auth(NOTIFY).json(&body).send().await;
                let Ok(r) = r else { continue };
                if r.status().is_success() {
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    acked.push((ip, v["id"].as_i64()));
                }
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("task"));
    }
    svc.kill9();
    assert_eq!(acked.len(), 64 * 40, "every notification was answered");

    let svc = Service::start(&cfg_path, addr, &dir.path().join("serve2.log"));
    let log = std::fs::read_to_string(dir.path().join("serve2.log")).unwrap_or_default();
    eprintln!(
        "after the kill: {}",
        log.lines()
            .find(|l| l.contains("left uncommitted by the last stop"))
            .unwrap_or("nothing was left in the ingest journal")
    );
    for (ip, id) in &acked {
        let r = http
            .get(format!("{}/api/v1/hosts/{ip}", svc.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200, "acknowledged ban of {ip} lost");
        let host: Value = r.json().await.expect("json");
        assert_eq!(host["state"], "banned", "{ip}");
        assert!(id.is_some(), "{ip} was answered with its id");
    }
    drop(svc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_spools_while_the_service_is_down_and_delivers_later_in_order_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = crate::support::app::test_config(dir.path());
    let addr = free_addr();
    config.server.listen = addr;
    let cfg_path = write_config(&config, dir.path());
    // Service down: ban/unban/ban of one host and bans of 17 others, each call fast and exit 0.
    let mut sequence = vec![
        ("10.10.10.9", "ban"),
        ("10.10.10.9", "unban"),
        ("10.10.10.9", "ban"),
    ];
    let others: Vec<String> = (1..=17).map(|i| format!("10.10.10.{}", 100 + i)).collect();
    for ip in &others {
        sequence.push((ip.as_str(), "ban"));
    }
    for (ip, action) in &sequence {
        let (code, stderr, took) = run_notify(&cfg_path, &[ip, "incoming", "5000", action], b"");
        assert_eq!(code, 0, "{stderr}");
        assert!(took < Duration::from_millis(1500), "notify took {took:?}");
        assert!(stderr.contains("spooled"), "{stderr}");
    }
    let spooled = std::fs::read_dir(dir.path().join("spool"))
        .expect("spool dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .count();
    assert_eq!(spooled, sequence.len());

    // Service back: the spool is delivered by the service's sweep.
    let svc = Service::start(&cfg_path, addr, &dir.path().join("serve.log"));
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let events = loop {
        let v: Value = svc
            .get(&http, "/api/v1/events?kind=notification&limit=1000")
            .await;
        let n = v["events"].as_array().map(Vec::len).unwrap_or(0);
        if n >= sequence.len() || std::time::Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut delivered: Vec<String> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .map(|m| m.split(" (").next().unwrap_or("").to_string())
        .collect();
    delivered.reverse(); // the log is newest first
    let expected: Vec<String> = sequence.iter().map(|(ip, a)| format!("{a} {ip}")).collect();
    assert_eq!(delivered, expected, "each delivered once, in order");
    let host: Value = svc.get(&http, "/api/v1/hosts/10.10.10.9").await;
    assert_eq!(host["state"], "banned");
    assert_eq!(host["episodes"].as_array().map(Vec::len), Some(2));
    // A later notify finds an empty spool and delivers directly.
    let (code, stderr, _) = run_notify(&cfg_path, &["10.10.10.9", "incoming", "0", "unban"], b"");
    assert_eq!((code, stderr.as_str()), (0, ""));
    drop(svc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_rejects_calls_that_fit_no_convention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = crate::support::app::test_config(dir.path());
    let cfg_path = write_config(&config, dir.path());
    for (args, stdin) in [
        (vec![], b"".to_vec()),
        (vec!["10.0.0.1", "incoming"], b"".to_vec()),
        (vec!["not-an-ip", "incoming", "5", "ban"], b"".to_vec()),
        (vec!["10.0.0.1", "incoming", "5", "explode"], b"".to_vec()),
    ] {
        let (code, stderr, _) = run_notify(&cfg_path, &args, &stdin);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains("cannot understand"), "{stderr}");
    }
    // Kept for the operator in quarantine, not retried.
    let q = dir.path().join("spool/quarantine");
    assert!(std::fs::read_dir(q).map(|d| d.count()).unwrap_or(0) >= 4);
}

#[test]
fn check_config_prints_redacted_settings_or_names_the_bad_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[[auth.tokens]]\nname = \"fastnetmon\"\ntoken = \"very-secret-token\"\nrole = \"notify\"\n\
         [networks]\nours = [\"203.0.113.0/24\"]\n",
    )
    .expect("write");
    let out = std::process::Command::new(crate::support::app::binary())
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("203.0.113.0/24"));
    assert!(!stdout.contains("very-secret-token"));
    assert!(stdout.contains("<redacted>"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[networks]\nours = [\"203.0.113.0/24\"]\nprotected = [\"10.0.0.0/8\"]\n[escalation]\nipv4_prefix_length = 40\n").expect("write");
    let out = std::process::Command::new(crate::support::app::binary())
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("networks.protected[0]"), "{stderr}");
    assert!(stderr.contains("escalation.ipv4_prefix_length"), "{stderr}");
}

#[test]
fn check_config_accepts_the_example_config_which_names_every_key() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.example.toml");
    let out = std::process::Command::new(crate::support::app::binary())
        .args(["check-config", "--config"])
        .arg(&example)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("change-me"),
        "secrets are redacted: {stdout}"
    );

    // Every `key =` of every section of the effective config appears in the example, so a key
    // added to the code without a line in the example fails here.
    let text = std::fs::read_to_string(&example).expect("read example");
    let written: std::collections::BTreeSet<(String, String)> = keys(&text);
    let effective = keys(&stdout);
    let missing: Vec<_> = effective.difference(&written).collect();
    assert!(
        missing.is_empty(),
        "keys missing from the example: {missing:?}"
    );

    fn keys(toml: &str) -> std::collections::BTreeSet<(String, String)> {
        let mut section = String::new();
        let mut out = std::collections::BTreeSet::new();
        for line in toml.lines().map(str::trim) {
            if line.starts_with('#') {
                continue;
            }
            if let Some(s) = line.strip_prefix('[') {
                section = s.trim_matches(|c| c == '[' || c == ']').to_string();
            } else if let Some((key, _)) = line.split_once(" = ") {
                if !key.contains(' ') && !key.starts_with('"') {
                    out.insert((section.clone(), key.to_string()));
                }
            }
        }
        out
    }
}
