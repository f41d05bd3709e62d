//! The live sources: FastNetMon Advanced's REST API (a stand-in with changing counters,
//! latencies and failures), FastNetMon's InfluxDB push to `/write`, ban-list reconciliation
//! (restarts, lost notifications), source health, and sample retention.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fnm_escalator::bgp::Speaker;
use fnm_escalator::clock::now_ms;
use fnm_escalator::config::Config;
use fnm_escalator::fastnetmon::Traffic;
use fnm_escalator::store::SampleIn;
use serde_json::{json, Value};

use crate::support::app::{
    ban, fixture, free_addr, spawn_app, spawn_app_with_speaker, TestApp, ADMIN, NOTIFY, READ,
};
use crate::support::fake_speaker::FakeSpeaker;
use crate::support::fnm_api::{Counters, FnmApi, PASSWORD, USER};

/// 20 MB/s = 160 Mbit/s: above the default 100 Mbit/s.
const FLOOD: Counters = Counters {
    in_bytes: 20_000_000,
    out_bytes: 0,
    in_packets: 20_000,
    out_packets: 0,
};
/// 1 MB/s = 8 Mbit/s, 100 pps: below every default threshold.
const QUIET: Counters = Counters {
    in_bytes: 1_000_000,
    out_bytes: 0,
    in_packets: 100,
    out_packets: 0,
};

fn use_api(c: &mut Config, api: &FnmApi, interval: Duration, timeout: Duration) {
    c.fastnetmon.api_url = Some(api.url.clone());
    c.fastnetmon.api_user = USER.into();
    c.fastnetmon.api_password = PASSWORD.into();
    c.fastnetmon.poll_interval = interval;
    c.fastnetmon.api_timeout = timeout;
}

/// An app whose checker acts only when woken (the tick is an hour away), on a fake speaker.
async fn app_with(edit: impl FnOnce(&mut Config)) -> (TestApp, Arc<FakeSpeaker>) {
    let fake = Arc::new(FakeSpeaker::default());
    let speaker: Arc<dyn Speaker> = fake.clone();
    let app = spawn_app_with_speaker(
        |c| {
            c.escalation.check_interval = Duration::from_secs(3600);
            c.bgp.reconcile_interval = Duration::from_secs(3600);
            c.escalation.min_hold = Duration::from_millis(300);
            edit(c)
        },
        Some(speaker),
    )
    .await;
    (app, fake)
}

async fn host(app: &TestApp, ip: &str) -> Value {
    app.get(&format!("/api/v1/hosts/{ip}"), READ).await.1
}

async fn wait_host(
    app: &TestApp,
    ip: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    app.wait_for(&format!("/api/v1/hosts/{ip}"), timeout, pred)
        .await
}

async fn wait_escalation(app: &TestApp, prefix: &str, state: &str, timeout: Duration) -> Value {
    let path = format!("/api/v1/escalations/{}", prefix.replace('/', "%2F"));
    app.wait_for(&path, timeout, |v| v["state"] == state).await
}

async fn ready(app: &TestApp) -> (u16, Value) {
    app.get("/readyz", READ).await
}

/// Waits (bounded) until the Advanced source has completed `n` polls; its health entry.
async fn wait_polls(app: &TestApp, n: u64, timeout: Duration) -> Value {
    let body = app
        .wait_for("/readyz", timeout, |v| {
            v["sources"]["fastnetmon_api"]["polls"].as_u64() >= Some(n)
        })
        .await;
    body["sources"]["fastnetmon_api"].clone()
}

async fn reconcile_events(app: &TestApp) -> Vec<String> {
    let (_, events) = app
        .get("/api/v1/events?kind=reconcile&limit=1000", READ)
        .await;
    events["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["message"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn post_write(app: &TestApp, query: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let r = app
        .http
        .post(format!("{}/write{query}", app.url))
        .body(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn now_ns() -> i64 {
    now_ms() * 1_000_000
}

// ---- FastNetMon Advanced REST API ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_counters_crossing_a_threshold_escalate_the_covering_prefix() {
    let api = FnmApi::start().await;
    api.ban("198.51.100.7");
    api.set_counters("198.51.100.7", QUIET);
    let (app, fake) = app_with(|c| {
        use_api(
            c,
            &api,
            Duration::from_millis(300),
            Duration::from_millis(200),
        );
    })
    .await;

    // The host is known from the ban list alone, with live counters from the API.
    let h = wait_host(&app, "198.51.100.7", Duration::from_secs(5), |h| {
        h["traffic"]["source"] == "fastnetmon_api"
    })
    .await;
    assert_eq!(h["state"], "banned", "{h}");
    assert_eq!(h["traffic"]["in_bps"], 8_000_000, "{h}");
    assert_eq!(h["traffic"]["in_pps"], 100, "{h}");
    wait_polls(&app, 3, Duration::from_secs(5)).await;
    let (_, esc) = app.get("/api/v1/escalations", READ).await;
    assert_eq!(
        esc["escalations"].as_array().map(Vec::len),
        Some(0),
        "{esc}"
    );

    // The attack grows: the next poll crosses and the checker acts at once (its tick is an
    // hour away).
    api.set_counters("198.51.100.7", FLOOD);
    let started = Instant::now();
    let e = wait_escalation(&app, "198.51.100.0/24", "active", Duration::from_secs(5)).await;
    assert_eq!(e["state"], "active", "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fake.prefixes(), vec!["198.51.100.0/24".to_string()]);
    assert!(e.to_string().contains("incoming_mbps"), "{e}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_list_interval_acts_on_new_bans_between_full_polls() {
    let api = FnmApi::start().await;
    let (app, fake) = app_with(|c| {
        // The next full poll is a minute away: whatever happens within seconds is the list
        // polls' doing.
        use_api(c, &api, Duration::from_secs(60), Duration::from_millis(500));
        c.fastnetmon.ban_list_interval = Duration::from_millis(100);
    })
    .await;
    wait_polls(&app, 1, Duration::from_secs(5)).await;

    // FastNetMon bans a host under attack: banned here, its counters asked, escalated.
    api.ban("198.51.100.9");
    api.set_counters("198.51.100.9", FLOOD);
    let started = Instant::now();
    let e = wait_escalation(&app, "198.51.100.0/24", "active", Duration::from_secs(5)).await;
    assert_eq!(e["state"], "active", "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fake.prefixes(), vec!["198.51.100.0/24".to_string()]);
    let h = host(&app, "198.51.100.9").await;
    assert_eq!(h["state"], "banned", "{h}");
    assert_eq!(h["traffic"]["source"], "fastnetmon_api", "{h}");
    let polls = wait_polls(&app, 1, Duration::from_secs(1)).await;
    assert_eq!(polls["polls"], 1, "no full poll ran meanwhile: {polls}");

    // It leaves the list: list polls do not count absences, so it stays banned until full
    // polls have seen it absent twice (ABSENT_POLLS), whatever the list polls saw.
    api.unban("198.51.100.9");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let h = host(&app, "198.51.100.9").await;
    assert_eq!(h["state"], "banned", "{h}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slow_host_does_not_delay_the_others_beyond_the_timeout() {
    let api = FnmApi::start().await;
    let hosts: Vec<String> = (1..=20).map(|i| format!("198.51.100.{i}")).collect();
    for h in &hosts {
        api.ban(h);
        api.set_counters(h, QUIET);
    }
    api.set_latency("198.51.100.5", Duration::from_secs(2));
    let (app, _fake) = app_with(|c| {
        use_api(
            c,
            &api,
            Duration::from_millis(1500),
            Duration::from_millis(300),
        );
        c.fastnetmon.api_concurrency = 4;
    })
    .await;

    let health = wait_polls(&app, 1, Duration::from_secs(5)).await;
    // The cycle waited for the slow host no longer than its timeout.
    let cycle = health["last_cycle_ms"].as_f64().expect("cycle ms");
    assert!(cycle < 1000.0, "cycle took {cycle} ms: {health}");
    assert_eq!(health["hosts"], 20, "{health}");
    assert_eq!(health["samples"], 19, "{health}");
    assert_eq!(health["host_errors"], 1, "{health}");
    assert!(
        health["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("198.51.100.5") && e.contains("timed out")),
        "{health}"
    );
    assert_eq!(health["healthy"], true, "{health}");
    for h in hosts.iter().filter(|h| *h != "198.51.100.5") {
        assert_eq!(
            host(&app, h).await["traffic"]["source"],
            "fastnetmon_api",
            "{h}"
        );
    }
    assert!(host(&app, "198.51.100.5").await["traffic"].is_null());
    assert!(api.max_in_flight() <= 4, "{}", api.max_in_flight());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_api_withdraws_nothing_and_marks_the_source_degraded() {
    let api = FnmApi::start().await;
    api.ban("198.51.100.7");
    api.set_counters("198.51.100.7", FLOOD);
    let (app, fake) = app_with(|c| {
        use_api(
            c,
            &api,
            Duration::from_millis(200),
            Duration::from_millis(150),
        );
        c.thresholds.sample_max_age = Duration::from_secs(1);
        c.escalation.release_after = Duration::from_millis(500);
        c.escalation.min_hold = Duration::ZERO;
    })
    .await;
    wait_escalation(&app, "198.51.100.0/24", "active", Duration::from_secs(5)).await;

    api.fail_api(Some(500));
    let failed_from = wait_polls(&app, 0, Duration::from_secs(1)).await["errors"]
        .as_u64()
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counter_requests = api.counter_requests();
    // Several failed polls, samples long stale, release_after long passed: still escalated,
    // still banned (a failed poll is not an empty ban list).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, e) = app.get("/api/v1/escalations/198.51.100.0%2F24", READ).await;
    assert_eq!(e["state"], "active", "{e}");
    assert_eq!(fake.prefixes(), vec!["198.51.100.0/24".to_string()]);
    assert_eq!(host(&app, "198.51.100.7").await["state"], "banned");
    // While the ban list does not answer, no counter is asked for (each would only time out).
    assert_eq!(api.counter_requests(), counter_requests);

    let (status, r) = ready(&app).await;
    assert_eq!(
        status, 200,
        "a stale source does not make the service unready: {r}"
    );
    assert_eq!(r["status"], "degraded", "{r}");
    assert_eq!(r["degraded"], json!(["sources"]), "{r}");
    let s = &r["sources"]["fastnetmon_api"];
    assert_eq!(s["enabled"], true, "{s}");
    assert_eq!(s["healthy"], false, "{s}");
    assert!(s["errors"].as_u64().unwrap_or(0) >= failed_from + 5, "{s}");
    assert!(s["lag_seconds"].as_f64().unwrap_or(0.0) > 1.0, "{s}");
    assert!(
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 500") && e.contains("injected failure")),
        "{s}"
    );
    let metrics = app
        .http
        .get(format!("{}/metrics", app.url))
        .bearer_auth(READ)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("fnm_escalator_source_healthy{source=\"fastnetmon_api\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fnm_escalator_source_errors_total{source=\"fastnetmon_api\"}"),
        "{metrics}"
    );

    // Back, and quiet: now the data says the attack is over, and the prefix goes.
    api.set_counters("198.51.100.7", QUIET);
    api.fail_api(None);
    wait_escalation(&app, "198.51.100.0/24", "withdrawn", Duration::from_secs(5)).await;
    let (_, r) = ready(&app).await;
    assert_eq!(r["sources"]["fastnetmon_api"]["healthy"], true, "{r}");
    assert_eq!(r["status"], "ready", "{r}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_api_credentials_are_reported_and_unban_nothing() {
    let api = FnmApi::start().await;
    let (app, _fake) = app_with(|c| {
        use_api(
            c,
            &api,
            Duration::from_millis(200),
            Duration::from_millis(150),
        );
        c.fastnetmon.api_password = "wrong-password".into();
    })
    .await;
    app.post(
        "/api/v1/notifications",
        NOTIFY,
        ban("198.51.100.9", 1000, 10),
    )
    .await;
    let s = app
        .wait_for("/readyz", Duration::from_secs(5), |v| {
            v["sources"]["fastnetmon_api"]["errors"].as_u64() >= Some(3)
        })
        .await;
    let last = s["sources"]["fastnetmon_api"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        last.contains("HTTP 401") && last.contains("api_password"),
        "{last}"
    );
    assert!(!last.contains("wrong-password"), "{last}");
    assert_eq!(host(&app, "198.51.100.9").await["state"], "banned");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastnetmon_restart_empties_its_ban_list_and_hosts_are_unbanned_after_two_polls() {
    let api = FnmApi::start().await;
    api.ban("198.51.100.7");
    api.set_counters("198.51.100.7", FLOOD);
    let (app, fake) = app_with(|c| {
        use_api(
            c,
            &api,
            Duration::from_millis(600),
            Duration::from_millis(300),
        );
        c.escalation.min_hold = Duration::ZERO;
    })
    .await;
    // Banned through the notification as well, as FastNetMon does.
    let (s, _) = app
        .post(
            "/api/v1/notifications",
            NOTIFY,
            ban("198.51.100.7", 20_000_000, 20_000),
        )
        .await;
    assert_eq!(s, 201);
    wait_escalation(&app, "198.51.100.0/24", "active", Duration::from_secs(5)).await;

    // FastNetMon restarts: its ban list is empty, and no unban is ever sent.
    api.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    while api.lists_since_restart() < 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(api.lists_since_restart(), 1);
    assert_eq!(
        host(&app, "198.51.100.7").await["state"],
        "banned",
        "one empty poll is not enough"
    );

    let h = wait_host(&app, "198.51.100.7", Duration::from_secs(5), |h| {
        h["state"] == "unbanned"
    })
    .await;
    assert_eq!(h["state"], "unbanned", "{h}");
    assert!(api.lists_since_restart() >= 2);
    assert_eq!(h["episodes"][0]["end_reason"], "unban (reconcile)", "{h}");
    let events = reconcile_events(&app).await;
    assert!(
        events.iter().any(|m| m
            == "unban 198.51.100.7: absent from FastNetMon's ban list (Advanced API /blackhole) \
                for 2 consecutive polls"),
        "{events:?}"
    );
    // No banned host is left in the /24: it goes.
    wait_escalation(&app, "198.51.100.0/24", "withdrawn", Duration::from_secs(5)).await;
    assert!(fake.prefixes().is_empty(), "{:?}", fake.prefixes());
    let (_, r) = ready(&app).await;
    assert_eq!(r["sources"]["fastnetmon_api"]["unbanned"], 1, "{r}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_banned_in_fastnetmon_but_unknown_here_are_added() {
    let api = FnmApi::start().await;
    for ip in ["198.51.100.1", "198.51.100.2", "2001:db8::5"] {
        api.ban(ip);
    }
    api.list_raw("10.9.0.0/24");
    let (app, _fake) = app_with(|c| {
        use_api(
            c,
            &api,
            Duration::from_millis(300),
            Duration::from_millis(200),
        );
    })
    .await;
    let hosts = app
        .wait_for("/api/v1/hosts?state=banned", Duration::from_secs(5), |v| {
            v["total"] == 3
        })
        .await;
    assert_eq!(hosts["total"], 3, "{hosts}");
    // Its counters follow within the same cycle, or the next one under load.
    let h = wait_host(&app, "2001:db8::5", Duration::from_secs(5), |h| {
        h["traffic"]["source"] == "fastnetmon_api"
    })
    .await;
    assert_eq!(h["source"], "reconcile", "{h}");
    assert_eq!(h["traffic"]["source"], "fastnetmon_api", "{h}");
    let events = reconcile_events(&app).await;
    assert!(
        events.contains(
            &"ban 198.51.100.1: listed in FastNetMon's ban list (Advanced API /blackhole) but \
              not banned here"
                .to_string()
        ),
        "{events:?}"
    );
    assert_eq!(events.len(), 3, "a subnet entry is not a host: {events:?}");
    let (_, ev) = app
        .get("/api/v1/events?actor=fastnetmon-api&limit=100", READ)
        .await;
    assert!(
        ev["events"].as_array().is_some_and(|a| a.len() >= 6),
        "{ev}"
    );
    // Later polls change nothing.
    wait_polls(&app, 4, Duration::from_secs(5)).await;
    assert_eq!(reconcile_events(&app).await.len(), 3);

    // FastNetMon unbans one, and the unban notification is lost: the list still tells.
    api.unban("198.51.100.2");
    let h = wait_host(&app, "198.51.100.2", Duration::from_secs(5), |h| {
        h["state"] == "unbanned"
    })
    .await;
    assert_eq!(h["state"], "unbanned", "{h}");
    assert_eq!(host(&app, "198.51.100.1").await["state"], "banned");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_hosts_with_injected_delays_and_errors_are_polled_within_one_interval() {
    let api = FnmApi::start().await;
    let hosts: Vec<String> = (0..2000)
        .map(|i| format!("10.154.{}.{}", i / 250, i % 250 + 1))
        .collect();
    for (i, h) in hosts.iter().enumerate() {
        api.ban(h);
        api.set_counters(h, Counters::incoming(1000 + i as u64, 10));
        if i % 50 == 7 {
            api.fail_host(h, Some(500));
        }
        if i % 100 == 3 {
            api.set_latency(h, Duration::from_millis(300));
        }
    }
    let interval = Duration::from_secs(3);
    let (app, _fake) = app_with(|c| {
        use_api(c, &api, interval, Duration::from_secs(1));
    })
    .await;
    let health = wait_polls(&app, 2, Duration::from_secs(20)).await;
    let cycle = health["last_cycle_ms"].as_f64().expect("cycle ms");
    eprintln!("2000-host poll cycle: {cycle:.0} ms; first cycle added the ban list");
    assert!(cycle < interval.as_millis() as f64, "{health}");
    assert_eq!(health["hosts"], 2000, "{health}");
    assert_eq!(health["host_errors"], 40, "{health}");
    assert_eq!(health["samples"], 1960, "{health}");
    assert!(api.max_in_flight() <= 32, "{}", api.max_in_flight());
    let (_, banned) = app.get("/api/v1/hosts?state=banned&limit=1", READ).await;
    assert_eq!(banned["total"], 2000);
    let h = host(&app, "10.154.3.100").await;
    assert_eq!(h["traffic"]["source"], "fastnetmon_api", "{h}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_ends_within_its_interval_and_timeout_and_the_next_starts_where_it_stopped() {
    let api = FnmApi::start().await;
    let hosts: Vec<String> = (1..=20).map(|i| format!("198.51.100.{i}")).collect();
    for h in &hosts {
        api.ban(h);
        api.set_counters(h, QUIET);
        api.set_latency(h, Duration::from_millis(300));
    }
    // Two at a time, 300 ms each: about 6 hosts fit in one 1 s cycle.
    let (app, _fake) = app_with(|c| {
        use_api(c, &api, Duration::from_secs(1), Duration::from_millis(500));
        c.fastnetmon.api_concurrency = 2;
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut longest = 0.0f64;
    let mut cut_short = false;
    loop {
        let (_, r) = ready(&app).await;
        let s = &r["sources"]["fastnetmon_api"];
        longest = longest.max(s["last_cycle_ms"].as_f64().unwrap_or(0.0));
        cut_short |= s["host_errors"].as_u64().unwrap_or(0) > 0;
        let (_, list) = app.get("/api/v1/hosts?state=banned&limit=100", READ).await;
        let with_traffic = list["hosts"]
            .as_array()
            .map(|a| a.iter().filter(|h| h["traffic"].is_object()).count())
            .unwrap_or(0);
        if with_traffic == 20 || Instant::now() > deadline {
            assert_eq!(
                with_traffic, 20,
                "every host is reached within a few cycles: {s}"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cut_short, "the cycles were cut by their deadline");
    // The deadline (1 s) plus the requests in flight then (300 ms here, 500 at most).
    assert!(longest < 1600.0, "a cycle took {longest} ms");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_in_flight_at_the_deadline_are_kept() {
    let api = FnmApi::start().await;
    let hosts: Vec<String> = (1..=4).map(|i| format!("198.51.100.{i}")).collect();
    for h in &hosts {
        api.ban(h);
        api.set_counters(h, QUIET);
        api.set_latency(h, Duration::from_millis(700));
    }
    // Two at a time, 700 ms each: the second pair is in flight when the 1 s cycle ends.
    let (app, _fake) = app_with(|c| {
        use_api(c, &api, Duration::from_secs(1), Duration::from_millis(900));
        c.fastnetmon.api_concurrency = 2;
    })
    .await;
    let health = wait_polls(&app, 1, Duration::from_secs(5)).await;
    assert_eq!(
        health["samples"], 4,
        "all four answered in one cycle: {health}"
    );
    assert_eq!(health["host_errors"], 0, "nothing cut off: {health}");
    let cycle = health["last_cycle_ms"].as_f64().expect("cycle ms");
    assert!(
        (1000.0..1000.0 + 900.0 + 300.0).contains(&cycle),
        "past the deadline by what was in flight, within the timeout: {cycle} ms"
    );
    for h in &hosts {
        assert_eq!(
            host(&app, h).await["traffic"]["source"],
            "fastnetmon_api",
            "{h}"
        );
    }
    assert!(api.max_in_flight() <= 2, "{}", api.max_in_flight());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ban_list_reconciliation_can_be_switched_off() {
    let api = FnmApi::start().await;
    api.ban("198.51.100.1");
    let (app, _fake) = app_with(|c| {
        use_api(
            c,
            &api,
            Duration::from_millis(200),
            Duration::from_millis(150),
        );
        c.fastnetmon.reconcile_ban_list = false;
    })
    .await;
    app.post(
        "/api/v1/notifications",
        NOTIFY,
        ban("198.51.100.9", 1000, 10),
    )
    .await;
    api.set_counters("198.51.100.9", QUIET);
    let h = wait_host(&app, "198.51.100.9", Duration::from_secs(5), |h| {
        h["traffic"]["source"] == "fastnetmon_api"
    })
    .await;
    assert_eq!(h["state"], "banned", "{h}");
    wait_polls(&app, 5, Duration::from_secs(5)).await;
    assert_eq!(host(&app, "198.51.100.9").await["state"], "banned");
    assert_eq!(app.get("/api/v1/hosts/198.51.100.1", READ).await.0, 404);
    assert!(reconcile_events(&app).await.is_empty());
    app.stop().await;
}

// ---- FastNetMon Community gRPC ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_community_api_is_reported_and_unbans_nothing() {
    let addr = free_addr();
    let app = spawn_app(|c| {
        c.fastnetmon.community_grpc = Some(addr.to_string());
        c.fastnetmon.community_poll_interval = Duration::from_millis(200);
        c.fastnetmon.api_timeout = Duration::from_millis(150);
    })
    .await;
    app.post(
        "/api/v1/notifications",
        NOTIFY,
        ban("198.51.100.9", 1000, 10),
    )
    .await;
    let r = app
        .wait_for("/readyz", Duration::from_secs(5), |v| {
            v["sources"]["fastnetmon_grpc"]["errors"].as_u64() >= Some(3)
        })
        .await;
    let s = &r["sources"]["fastnetmon_grpc"];
    assert_eq!(s["enabled"], true, "{s}");
    assert!(
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&addr.to_string())),
        "{s}"
    );
    assert_eq!(host(&app, "198.51.100.9").await["state"], "banned");
    assert_eq!(r["sources"]["fastnetmon_api"]["enabled"], false, "{r}");
    app.stop().await;
}

// ---- InfluxDB push ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_push_of_the_real_sample_answers_204_and_updates_host_traffic() {
    let app = spawn_app(|_| {}).await;
    app.post("/api/v1/notifications", NOTIFY, ban("10.10.10.5", 1000, 10))
        .await;
    // As FastNetMon sends it: credentials in the query, no Authorization header.
    let r = app
        .http
        .post(format!(
            "{}/write?db=fastnetmon&u=fastnetmon&p={NOTIFY}",
            app.url
        ))
        .body(fixture("community-1.2.4/influxdb_write_sample.txt"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 204);
    assert!(r.text().await.expect("body").is_empty());

    let h = host(&app, "10.10.10.5").await;
    assert_eq!(h["traffic"]["source"], "influxdb", "{h}");
    // The newest of the three points: 72190128 bit/s, 9023 pps.
    assert_eq!(h["traffic"]["in_bps"], 72_190_128, "{h}");
    assert_eq!(h["traffic"]["in_pps"], 9023, "{h}");
    assert!(
        h["traffic"]["age_seconds"]
            .as_f64()
            .is_some_and(|a| a < 600.0),
        "{h}"
    );
    let (_, r) = ready(&app).await;
    let s = &r["sources"]["influxdb"];
    assert_eq!(
        (s["enabled"].clone(), s["polls"].clone()),
        (json!(true), json!(1)),
        "{s}"
    );
    assert_eq!(s["hosts"], 3, "{s}");
    assert_eq!(s["bad_lines"], 0, "{s}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crossing_push_escalates_at_once() {
    let (app, fake) = app_with(|_| {}).await;
    app.post(
        "/api/v1/notifications",
        NOTIFY,
        ban("198.51.100.7", 1000, 10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.prefixes().is_empty());
    let body = format!(
        "hosts_traffic,host=198.51.100.7 bits_incoming=160000000,bits_outgoing=0,\
         packets_incoming=20000,packets_outgoing=0 {}\n",
        now_ns()
    );
    let started = Instant::now();
    let (s, b) = post_write(&app, &format!("?db=fastnetmon&p={NOTIFY}"), body).await;
    assert_eq!(s, 204, "{b}");
    let e = wait_escalation(&app, "198.51.100.0/24", "active", Duration::from_secs(5)).await;
    assert_eq!(e["state"], "active", "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(fake.prefixes(), vec!["198.51.100.0/24".to_string()]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_host_left_out_of_a_push_of_its_family_is_at_zero() {
    let app = spawn_app(|_| {}).await;
    for ip in ["198.51.100.1", "198.51.100.2", "2001:db8::7"] {
        app.post("/api/v1/notifications", NOTIFY, ban(ip, 5_000_000, 5000))
            .await;
    }
    let t = now_ns();
    let body = format!(
        "hosts_traffic,host=198.51.100.1 bits_incoming=800,packets_incoming=1 {t}\n\
         hosts_traffic,host=203.0.113.50 bits_incoming=800,packets_incoming=1 {t}\n"
    );
    let (s, b) = post_write(&app, &format!("?p={NOTIFY}"), body).await;
    assert_eq!(s, 204, "{b}");
    let h = host(&app, "198.51.100.2").await;
    assert_eq!(h["traffic"]["source"], "influxdb", "{h}");
    assert_eq!(h["traffic"]["in_bps"], 0, "{h}");
    // No IPv6 points came: the IPv6 host keeps its notification sample.
    let h6 = host(&app, "2001:db8::7").await;
    assert_eq!(h6["traffic"]["source"], "notification", "{h6}");
    // Hosts that are not banned are not stored.
    assert_eq!(app.get("/api/v1/hosts/203.0.113.50", READ).await.0, 404);
    let unknown: IpAddr = "203.0.113.50".parse().expect("ip");
    assert_eq!(
        app.store.count_samples(Some(unknown)).await.expect("count"),
        0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_takes_the_token_as_p_and_refuses_bad_credentials() {
    let app = spawn_app(|_| {}).await;
    let line = "hosts_traffic,host=10.0.0.1 bits_incoming=1\n";
    for (query, want) in [
        ("".to_string(), 401),
        ("?db=fastnetmon&p=wrong-token".to_string(), 401),
        (format!("?u=noc&p={NOTIFY}"), 401),
        (format!("?p={READ}"), 403),
        (format!("?p={NOTIFY}"), 204),
        (
            format!("?db=fastnetmon&u=fastnetmon&p={NOTIFY}&rp=autogen"),
            204,
        ),
        (format!("?p={ADMIN}&precision=s"), 204),
    ] {
        let (s, body) = post_write(&app, &query, line).await;
        assert_eq!(s, want, "{query}: {body}");
        if want >= 400 {
            assert!(body["error"].is_string(), "{query}: {body}");
        }
    }
    let r = app
        .http
        .post(format!("{}/write", app.url))
        .bearer_auth(NOTIFY)
        .body(line)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 204);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_write_bodies_are_4xx_never_5xx() {
    // Small limits: a body far past a limit is refused before it is read, and the client may
    // then see the connection reset instead of the 413; just past it, the answer is read.
    let app = spawn_app(|c| {
        c.server.max_body_bytes = 64 * 1024;
        c.server.max_write_bytes = 256 * 1024;
    })
    .await;
    app.post("/api/v1/notifications", NOTIFY, ban("10.10.10.5", 1000, 10))
        .await;
    let q = format!("?db=fastnetmon&p={NOTIFY}");
    let mut xorshift = 0x9E37_79B9_7F4A_7C15u64;
    let random: Vec<u8> = (0..100_000)
        .map(|_| {
            xorshift ^= xorshift << 13;
            xorshift ^= xorshift >> 7;
            xorshift ^= xorshift << 17;
            (xorshift & 0xff) as u8
        })
        .collect();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("garbage only", b"\\\\\"\"===,,,\nnot line protocol at all\n".to_vec(), 400),
        ("random bytes", random, 400),
        ("invalid UTF-8", b"\xff\xfe\xfd hosts_traffic\n".to_vec(), 400),
        ("NUL bytes", vec![0u8; 4096], 400),
        ("empty body", Vec::new(), 204),
        ("comments only", b"# nothing\n\n".to_vec(), 204),
        (
            "a bad line among good ones",
            b"garbage\nhosts_traffic,host=10.10.10.5 bits_incoming=1i\nm f=\"open\n".to_vec(),
            204,
        ),
        (
            "valid syntax, unusable host",
            b"hosts_traffic,host=999.1.1.1 bits_incoming=1\nhosts_traffic,host=10.10.10.5 bits_incoming=-5\n".to_vec(),
            204,
        ),
        (
            "a huge number",
            b"hosts_traffic,host=10.10.10.5 bits_incoming=1e300,packets_incoming=18446744073709551615u\n".to_vec(),
            204,
        ),
        (
            "50k fields on one line",
            format!("hosts_traffic,host=10.10.10.5 {}\n", vec!["f=1"; 50_000].join(",")).into_bytes(),
            204,
        ),
        ("oversized", vec![b'#'; 256 * 1024 + 1], 413),
    ];
    for (name, body, want) in cases {
        let (s, b) = post_write(&app, &q, body).await;
        assert_eq!(s, want, "{name}: {b}");
        if s >= 400 {
            assert!(b["error"].is_string(), "{name}: {b}");
        }
    }
    // Bigger than max_body_bytes but within max_write_bytes: a real push can be.
    let big = "hosts_traffic,host=10.10.10.5 bits_incoming=1,packets_incoming=1\n".repeat(2_000);
    assert!(big.len() > app.config.server.max_body_bytes);
    assert_eq!(post_write(&app, &q, big).await.0, 204);

    let (s, b) = post_write(&app, &format!("{q}&precision=weeks"), "m f=1").await;
    assert_eq!(s, 400, "{b}");
    assert!(b.to_string().contains("precision"), "{b}");
    let r = app
        .http
        .post(format!("{}/write{q}", app.url))
        .header("content-encoding", "gzip")
        .body(vec![0x1f, 0x8b, 0, 0])
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 415);

    let (_, r) = ready(&app).await;
    let s = &r["sources"]["influxdb"];
    assert!(s["bad_lines"].as_u64().unwrap_or(0) >= 4, "{s}");
    assert!(s["errors"].as_u64().unwrap_or(0) >= 4, "{s}");
    // The service is fine.
    assert_eq!(host(&app, "10.10.10.5").await["state"], "banned");
    app.stop().await;
}

// ---- sample retention ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_history_older_than_the_bound_and_keeps_the_latest() {
    let app = spawn_app(|c| {
        c.samples.retention = Duration::from_secs(2);
    })
    .await;
    let old_host: IpAddr = "198.51.100.1".parse().expect("ip");
    let live_host: IpAddr = "198.51.100.2".parse().expect("ip");
    let now = now_ms();
    let sample = |ip, at| SampleIn {
        ip,
        at,
        source: "influxdb".into(),
        traffic: Traffic {
            in_bps: 1,
            ..Traffic::default()
        },
    };
    // 12,000 old rows: more than two delete batches.
    let old: Vec<SampleIn> = (0..12_000)
        .map(|i| sample(old_host, now - 3_600_000 + i))
        .collect();
    app.store.record_samples(&old).await.expect("old");
    app.store
        .record_samples(&[sample(live_host, now + 60_000)])
        .await
        .expect("fresh");

    let deadline = Instant::now() + Duration::from_secs(10);
    while app.store.count_samples(None).await.expect("count") > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.store.count_samples(None).await.expect("count"), 1);
    assert_eq!(
        app.store
            .count_samples(Some(live_host))
            .await
            .expect("count"),
        1
    );
    // The newest sample per host stays: it is what the decision and the API read.
    let latest = app.store.latest_sample(old_host).await.expect("latest");
    assert_eq!(latest.map(|s| s.at), Some(now - 3_600_000 + 11_999));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_thinned_on_write_and_the_latest_always_updated() {
    let app = spawn_app(|_| {}).await;
    let ip: IpAddr = "198.51.100.3".parse().expect("ip");
    let now = now_ms();
    // A push every second for a minute, history one row per 10 s.
    for i in 0..60 {
        let s = SampleIn {
            ip,
            at: now + i * 1000,
            source: "influxdb".into(),
            traffic: Traffic {
                in_bps: i as u64,
                ..Traffic::default()
            },
        };
        app.store
            .record_live_samples(&[s], 10_000)
            .await
            .expect("record");
    }
    assert_eq!(app.store.count_samples(Some(ip)).await.expect("count"), 6);
    let latest = app
        .store
        .latest_sample(ip)
        .await
        .expect("latest")
        .expect("row");
    assert_eq!((latest.at, latest.in_bps), (now + 59_000, 59));
    app.stop().await;
}

/// The FastNetMon API down (connection refused), answering in 5 s (far past the timeout), or
/// answering garbage, each for what would be ten minutes of 5-second polls (120 cycles; time
/// compressed 50x): nothing is withdrawn for lack of data, hosts stay banned, `/readyz` says
/// `degraded` and names the source, every cycle is bounded by the timeout, and recovery needs
/// no one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_down_slow_or_garbage_withdraw_nothing_and_recover_by_themselves() {
    const INTERVAL: Duration = Duration::from_millis(100);
    const TIMEOUT: Duration = Duration::from_millis(60);
    const CYCLES: u64 = 120;
    let hosts = ["198.51.100.7", "198.51.101.7", "2001:db8:1::7"];
    let prefixes = vec![
        "198.51.100.0/24".to_string(),
        "198.51.101.0/24".to_string(),
        "2001:db8:1::/48".to_string(),
    ];
    let api = FnmApi::start().await;
    for ip in hosts {
        api.ban(ip);
        api.set_counters(ip, FLOOD);
    }
    let (app, fake) = app_with(|c| {
        use_api(c, &api, INTERVAL, TIMEOUT);
        // Samples go stale within three cycles and release_after is shorter still: a service
        // that took missing data for quiet traffic would withdraw within the first second.
        c.thresholds.sample_max_age = Duration::from_millis(300);
        c.escalation.release_after = Duration::from_millis(200);
        c.escalation.min_hold = Duration::ZERO;
        c.escalation.check_interval = Duration::from_millis(100);
    })
    .await;
    for p in &prefixes {
        wait_escalation(&app, p, "active", Duration::from_secs(5)).await;
    }
    assert_eq!(fake.prefixes(), prefixes);

    for mode in ["down", "slow", "garbage"] {
        let before = ready(&app).await.1["sources"]["fastnetmon_api"]["errors"]
            .as_u64()
            .unwrap_or(0);
        match mode {
            "down" => api.down(),
            "slow" => api.slow(Some(Duration::from_secs(5))),
            _ => api.garbage(true),
        }
        let started = Instant::now();
        // A cycle is at most the timeout plus the interval; allow twice that, plus slack.
        let budget = (INTERVAL + TIMEOUT) * (2 * CYCLES as u32) + Duration::from_secs(5);
        let mut max_cycle_ms: f64 = 0.0;
        let mut seen_degraded = false;
        loop {
            let (status, r) = ready(&app).await;
            let s = &r["sources"]["fastnetmon_api"];
            max_cycle_ms = max_cycle_ms.max(s["last_cycle_ms"].as_f64().unwrap_or(0.0));
            let errors = s["errors"].as_u64().unwrap_or(0);
            assert_eq!(fake.prefixes(), prefixes, "{mode}: a route was withdrawn");
            // Once the last success is older than the staleness bound, the source is degraded.
            let lag = s["lag_seconds"].as_f64().unwrap_or(0.0);
            let stale_after = s["stale_after_seconds"].as_f64().unwrap_or(0.0);
            if lag > stale_after * 1.5 {
                seen_degraded = true;
                assert_eq!(status, 200, "{mode}: {r}");
                assert_eq!(r["status"], "degraded", "{mode}: {r}");
                assert_eq!(r["degraded"], json!(["sources"]), "{mode}: {r}");
                assert_eq!(s["healthy"], false, "{mode}: {s}");
            }
            if errors >= before + CYCLES {
                break;
            }
            assert!(
                started.elapsed() < budget,
                "{mode}: only {} failed cycles in {budget:?}: cycles are not bounded",
                errors - before
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(seen_degraded, "{mode}: /readyz never said degraded");
        let took = started.elapsed();
        eprintln!(
            "outage {mode}: {CYCLES} failed cycles in {took:?}, longest {max_cycle_ms:.0} ms"
        );
        assert!(
            max_cycle_ms <= (TIMEOUT * 3).as_secs_f64() * 1000.0,
            "{mode}: a cycle took {max_cycle_ms} ms, the timeout is {TIMEOUT:?}"
        );
        let (_, es) = app.get("/api/v1/escalations?state=active", READ).await;
        assert_eq!(
            es["escalations"].as_array().map(Vec::len),
            Some(prefixes.len()),
            "{mode}: {es}"
        );
        for ip in hosts {
            assert_eq!(host(&app, ip).await["state"], "banned", "{mode}: {ip}");
        }

        match mode {
            "down" => api.up().await,
            "slow" => api.slow(None),
            _ => api.garbage(false),
        }
        let r = app
            .wait_for("/readyz", Duration::from_secs(5), |r| {
                r["status"] == "ready"
            })
            .await;
        assert_eq!(r["status"], "ready", "{mode}: did not recover: {r}");
        assert_eq!(fake.prefixes(), prefixes);
    }

    // Data again, and it says the attack is over: now, and only now, the prefixes go.
    for ip in hosts {
        api.set_counters(ip, QUIET);
    }
    for p in &prefixes {
        wait_escalation(&app, p, "withdrawn", Duration::from_secs(5)).await;
    }
    assert!(fake.prefixes().is_empty());
    app.stop().await;
}
