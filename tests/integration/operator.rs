//! The operator's surface: metrics, the CLI client.

use std::time::Duration;

use serde_json::json;

use crate::support::app::{binary, spawn_app, ADMIN, NOTIFY, READ};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_with_conventional_names() {
    let app = spawn_app(|_| {}).await;
    let body = serde_json::to_vec(&json!({
        "ip": "198.51.100.4", "action": "ban",
        "attack_details": {"total_incoming_traffic": 50_000_000, "total_incoming_pps": 5}
    }))
    .expect("json");
    app.post("/api/v1/notifications", NOTIFY, body).await;
    app.wait_for(
        "/api/v1/escalations?state=active",
        Duration::from_secs(10),
        |v| v["escalations"].as_array().is_some_and(|a| !a.is_empty()),
    )
    .await;
    let r = app
        .http
        .get(format!("{}/metrics", app.url))
        .bearer_auth(READ)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("text");
    for needle in [
        "fnm_escalator_banned_hosts 1",
        "fnm_escalator_escalations{state=\"active\"} 1",
        "fnm_escalator_notifications_total{action=\"ban\",outcome=\"banned\"}",
        "fnm_escalator_decisions_total{decision=\"escalate\"}",
        "fnm_escalator_bgp_operations_total{backend=\"none\",operation=\"announce\",result=\"ok\"}",
        "fnm_escalator_checker_cycle_duration_seconds_bucket",
        "fnm_escalator_checker_focused_cycle_duration_seconds_count",
        "fnm_escalator_http_requests_total{method=\"POST\",route=\"/api/v1/notifications\",status=\"201\"}",
        "fnm_escalator_http_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    let (status, _) = app.get("/metrics", NOTIFY).await;
    assert_eq!(status, 403);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_client_shows_tables_and_json_and_drives_overrides() {
    let app = spawn_app(|_| {}).await;
    let url = app.url.clone();
    let run = move |args: &[&str]| {
        let out = std::process::Command::new(binary())
            .args(args)
            .env("FNM_ESCALATOR_URL", &url)
            .env("FNM_ESCALATOR_TOKEN", ADMIN)
            .output()
            .expect("run client");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let run2 = run.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run2(&[
            "escalate",
            "198.51.100.0/24",
            "--reason",
            "seen upstream",
            "--duration",
            "2h",
        ])
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("198.51.100.0/24"), "{out}");
    app.wait_for(
        "/api/v1/escalations/198.51.100.0%2F24",
        Duration::from_secs(10),
        |v| v["state"] == "active",
    )
    .await;
    let run2 = run.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || run2(&["escalations"]))
        .await
        .expect("join");
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("PREFIX"), "{out}");
    assert!(
        lines[1].starts_with("198.51.100.0/24  active  manual"),
        "{out}"
    );
    let run2 = run.clone();
    let (code, out, _) = tokio::task::spawn_blocking(move || run2(&["escalations", "--json"]))
        .await
        .expect("join");
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json output");
    assert_eq!(v["escalations"][0]["origin"], "manual");
    let run2 = run.clone();
    let (code, _, err) = tokio::task::spawn_blocking(move || {
        run2(&["escalate", "192.0.2.0/24", "--reason", "outside"])
    })
    .await
    .expect("join");
    assert_eq!(code, 1);
    assert!(err.contains("outside_ours"), "{err}");
    let run2 = run.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run2(&["withdraw", "198.51.100.0/24", "--suppress", "30m"])
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("suppressed until"), "{out}");
    let run2 = run.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || run2(&["status"]))
        .await
        .expect("join");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("status:") && out.contains("bgp backend:"),
        "{out}"
    );
    let (code, out, _) =
        tokio::task::spawn_blocking(move || run(&["events", "--prefix", "198.51.100.0/24"]))
            .await
            .expect("join");
    assert_eq!(code, 0);
    assert!(out.lines().next().unwrap_or("").starts_with("ID"), "{out}");
    assert!(out.contains("noc"), "the audit log names who acted: {out}");
    app.stop().await;
}

/// SIGTERM: the request in flight completes, the process exits cleanly, and the announced
/// route stays at the upstream (routes are state, not process lifetime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_and_leaves_routes_in_place() {
    use std::io::{Read, Write};

    use crate::support::app::{free_addr, test_config, write_config, Service};
    use crate::support::lab::Lab;

    let lab = Lab::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    let addr = free_addr();
    config.server.listen = addr;
    config.bgp.backend = fnm_escalator::config::Backend::Gobgp;
    config.bgp.gobgp_api = lab.gobgp_api();
    let cfg = write_config(&config, dir.path());
    let mut svc = Service::start(&cfg, addr, &dir.path().join("serve.log"));
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let ban = serde_json::to_vec(&json!({
        "ip": "198.51.100.4", "action": "ban",
        "attack_details": {"total_incoming_traffic": 50_000_000, "total_incoming_pps": 5}
    }))
    .expect("json");
    let r = http
        .post(format!("{}/api/v1/notifications", svc.url))
        .bearer_auth(NOTIFY)
        .body(ban.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 201);
    let routes = lab.wait_for_routes(
        |r| r.iter().any(|r| r.prefix.to_string() == "198.51.100.0/24"),
        Duration::from_secs(10),
    );
    assert!(routes
        .iter()
        .any(|r| r.prefix.to_string() == "198.51.100.0/24"));

    // A request half sent when SIGTERM arrives.
    let (status_line, exit) = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let head = format!(
            "POST /api/v1/notifications HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {NOTIFY}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            ban.len()
        );
        s.write_all(head.as_bytes()).expect("write");
        s.write_all(&ban[..10]).expect("write");
        std::thread::sleep(Duration::from_millis(200));
        let pid = svc.child.id().to_string();
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
        std::thread::sleep(Duration::from_millis(300));
        s.write_all(&ban[10..]).expect("write rest");
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap_or(0);
        let status_line = String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        drop(s);
        let exit = svc.child.wait().expect("wait");
        (status_line, exit)
    })
    .await
    .expect("join");
    assert!(
        status_line.contains(" 201") || status_line.contains(" 200"),
        "{status_line:?}"
    );
    assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");
    // The route is still at BIRD after the service is gone.
    std::thread::sleep(Duration::from_millis(300));
    let routes = lab.bird_routes();
    assert!(
        routes
            .iter()
            .any(|r| r.prefix.to_string() == "198.51.100.0/24"),
        "{routes:?}"
    );
}
