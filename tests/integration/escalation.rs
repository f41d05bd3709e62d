//! The checker end to end through the HTTP API, against a recording speaker: escalation at
//! once on a crossing notification, withdrawal on unban after min_hold, rails with their events,
//! retries, dry run, manual overrides and suppression.

use std::sync::Arc;
use std::time::Duration;

use fnm_escalator::bgp::Speaker;
use serde_json::{json, Value};

use crate::support::app::{ban, spawn_app_with_speaker, unban, TestApp, ADMIN, NOTIFY, READ};
use crate::support::fake_speaker::FakeSpeaker;

async fn app_with(
    edit: impl FnOnce(&mut fnm_escalator::config::Config),
) -> (TestApp, Arc<FakeSpeaker>) {
    let fake = Arc::new(FakeSpeaker::default());
    let speaker: Arc<dyn Speaker> = fake.clone();
    let app = spawn_app_with_speaker(
        |c| {
            // The tick is far away: anything that happens within a test happened because the
            // checker was woken by the notification.
            c.escalation.check_interval = Duration::from_secs(3600);
            c.bgp.reconcile_interval = Duration::from_secs(3600);
            c.escalation.min_hold = Duration::from_millis(300);
            c.bgp.retry_initial = Duration::from_millis(100);
            c.bgp.retry_max = Duration::from_millis(200);
            edit(c)
        },
        Some(speaker),
    )
    .await;
    (app, fake)
}

async fn escalation(app: &TestApp, prefix: &str) -> Value {
    app.get(
        &format!("/api/v1/escalations/{}", prefix.replace('/', "%2F")),
        READ,
    )
    .await
    .1
}

async fn wait_state(app: &TestApp, prefix: &str, state: &str) -> Value {
    let path = format!("/api/v1/escalations/{}", prefix.replace('/', "%2F"));
    app.wait_for(&path, Duration::from_secs(10), |v| v["state"] == state)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_notification_escalates_at_once_and_unban_withdraws_after_min_hold() {
    let (app, fake) = app_with(|_| {}).await;
    // 20 MB/s = 160 Mbit/s > 100.
    let (s, _) = app
        .post(
            "/api/v1/notifications",
            NOTIFY,
            ban("198.51.100.7", 20_000_000, 100),
        )
        .await;
    assert_eq!(s, 201);
    let e = wait_state(&app, "198.51.100.0/24", "active").await;
    assert_eq!(e["state"], "active", "{e}");
    assert_eq!(e["origin"], "auto");
    assert_eq!(e["hosts"], json!(["198.51.100.7"]));
    assert!(
        e["reason"].as_str().unwrap_or("").contains("incoming_mbps"),
        "{e}"
    );
    assert_eq!(e["attributes"]["next_hop"], "192.0.2.1");
    assert_eq!(e["attributes"]["communities"], json!(["65001:777"]));
    assert_eq!(fake.prefixes(), vec!["198.51.100.0/24"]);

    // A second host in the same /24 escalates nothing new.
    app.post(
        "/api/v1/notifications",
        NOTIFY,
        ban("198.51.100.8", 20_000_000, 100),
    )
    .await;
    // Unban of one host: another is still banned, the /24 stays.
    app.post("/api/v1/notifications", NOTIFY, unban("198.51.100.7"))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(escalation(&app, "198.51.100.0/24").await["state"], "active");
    // The last one: withdrawn (min_hold has passed).
    app.post("/api/v1/notifications", NOTIFY, unban("198.51.100.8"))
        .await;
    let e = wait_state(&app, "198.51.100.0/24", "withdrawn").await;
    assert_eq!(e["state"], "withdrawn", "{e}");
    assert!(fake.prefixes().is_empty());
    assert_eq!(
        fake.calls(),
        vec!["announce 198.51.100.0/24", "withdraw 198.51.100.0/24"]
    );
    // Every transition is in the audit log.
    let (_, ev) = app
        .get("/api/v1/events?prefix=198.51.100.0%2F24", READ)
        .await;
    let kinds: Vec<&str> = ev["events"]
        .as_array()
        .expect("events")
        .iter()
        .rev()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        vec!["escalate", "announced", "withdraw", "withdrawn"]
    );
    app.stop().await;
}

/// The checker's counts of cycles over everything and over a few prefixes alone.
async fn cycles(app: &TestApp) -> (u64, u64) {
    let (_, r) = app.get("/readyz", READ).await;
    let n = |k: &str| r["checker"][k].as_u64().unwrap_or(u64::MAX);
    (n("cycles"), n("focused_cycles"))
}

/// A crossing, or a ban counted for carpet bombing, escalates its prefix through a cycle over
/// that prefix alone; what that cannot decide (a live prefix, an unban, the cap) goes to a
/// cycle over everything, and decides as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crossing_is_decided_by_a_cycle_over_its_prefix_alone() {
    let (app, fake) = app_with(|c| {
        c.escalation.carpet_bombing_hosts = 3;
        c.escalation.max_active = 4;
    })
    .await;
    // Start-up's cycles (the tick's first, reconciliation's) are done.
    app.wait_for("/readyz", Duration::from_secs(10), |r| {
        r["checker"]["cycles"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (full, focused) = cycles(&app).await;

    // Two banned hosts below thresholds elsewhere change nothing; a crossing escalates its /24.
    for ip in ["198.51.103.1", "198.51.103.2"] {
        app.post("/api/v1/notifications", NOTIFY, ban(ip, 1_000, 1))
            .await;
    }
    app.post(
        "/api/v1/notifications",
        NOTIFY,
        ban("198.51.100.7", 20_000_000, 100),
    )
    .await;
    wait_state(&app, "198.51.100.0/24", "active").await;
    // The third ban in 198.51.103.0/24 makes it a carpet bombing.
    app.post(
        "/api/v1/notifications",
        NOTIFY,
        ban("198.51.103.3", 1_000, 1),
    )
    .await;
    let e = wait_state(&app, "198.51.103.0/24", "active").await;
    assert!(e["reason"].as_str().unwrap_or("").contains("carpet"), "{e}");
    // Its last host unbanned (after min_hold), it is withdrawn; the other stays.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for ip in ["198.51.103.1", "198.51.103.2", "198.51.103.3"] {
        app.post("/api/v1/notifications", NOTIFY, unban(ip)).await;
    }
    wait_state(&app, "198.51.103.0/24", "withdrawn").await;
    assert_eq!(escalation(&app, "198.51.100.0/24").await["state"], "active");
    let (full_now, focused_now) = cycles(&app).await;
    assert_eq!(full_now, full, "no cycle over everything was needed");
    assert!(focused_now >= focused + 3, "{focused} -> {focused_now}");

    // Up to the cap (four) and past it: the crossing that would take the last room, and the one
    // after it, are left to cycles over everything, which decide as before.
    for ip in ["198.51.102.1", "10.154.0.1", "10.10.10.1"] {
        app.post("/api/v1/notifications", NOTIFY, ban(ip, 20_000_000, 100))
            .await;
        let prefix = format!("{}.0/24", ip.rsplit_once('.').map_or(ip, |(net, _)| net));
        wait_state(&app, &prefix, "active").await;
    }
    app.post(
        "/api/v1/notifications",
        NOTIFY,
        ban("198.51.101.1", 20_000_000, 100),
    )
    .await;
    let r = wait_state(&app, "198.51.101.0/24", "refused").await;
    assert_eq!(r["rule"], "max_active", "{r}");
    assert!(cycles(&app).await.0 > full);
    let mut announced = fake.prefixes();
    announced.sort();
    assert_eq!(
        announced,
        [
            "10.10.10.0/24",
            "10.154.0.0/24",
            "198.51.100.0/24",
            "198.51.102.0/24"
        ]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rails_refuse_loudly_and_name_the_rule() {
    let (app, fake) = app_with(|c| {
        c.networks.protected = vec!["198.51.101.0/28".parse().expect("net")];
        c.escalation.max_active = 1;
    })
    .await;
    for ip in [
        "192.0.2.77",
        "198.51.101.200",
        "198.51.100.1",
        "198.51.102.1",
    ] {
        app.post("/api/v1/notifications", NOTIFY, ban(ip, 50_000_000, 10))
            .await;
    }
    let refused = app
        .wait_for(
            "/api/v1/escalations?state=refused",
            Duration::from_secs(10),
            |v| v["escalations"].as_array().map(Vec::len) == Some(3),
        )
        .await;
    let mut rules: Vec<(String, String)> = refused["escalations"]
        .as_array()
        .expect("list")
        .iter()
        .map(|e| {
            (
                e["prefix"].as_str().unwrap_or("").to_string(),
                e["rule"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    rules.sort();
    assert_eq!(
        rules,
        vec![
            ("192.0.2.0/24".to_string(), "outside_ours".to_string()),
            ("198.51.101.0/24".to_string(), "protected".to_string()),
            ("198.51.102.0/24".to_string(), "max_active".to_string()),
        ]
    );
    assert_eq!(fake.prefixes(), vec!["198.51.100.0/24"]);
    let (_, ev) = app.get("/api/v1/events?kind=refused", READ).await;
    assert_eq!(ev["events"].as_array().map(Vec::len), Some(3));
    // Refusals are not repeated every cycle.
    app.post(
        "/api/v1/notifications",
        NOTIFY,
        ban("198.51.102.2", 50_000_000, 10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, ev) = app.get("/api/v1/events?kind=refused", READ).await;
    assert_eq!(ev["events"].as_array().map(Vec::len), Some(3));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announce_failures_are_retried_and_visible_as_failed() {
    let (app, fake) = app_with(|_| {}).await;
    fake.set_down(true);
    app.post(
        "/api/v1/notifications",
        NOTIFY,
        ban("198.51.100.9", 50_000_000, 10),
    )
    .await;
    let e = wait_state(&app, "198.51.100.0/24", "failed").await;
    assert_eq!(e["state"], "failed", "{e}");
    assert!(
        e["last_error"].as_str().unwrap_or("").contains("down"),
        "{e}"
    );
    // The retry is on the tick or a wake; a later notification wakes the checker.
    fake.set_down(false);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        app.post(
            "/api/v1/notifications",
            NOTIFY,
            ban("198.51.100.9", 50_000_000, 10),
        )
        .await;
        if escalation(&app, "198.51.100.0/24").await["state"] == "active" {
            break;
        }
    }
    let e = escalation(&app, "198.51.100.0/24").await;
    assert_eq!(e["state"], "active", "{e}");
    assert!(e["attempts"].as_i64().unwrap_or(0) >= 2);
    assert_eq!(fake.prefixes(), vec!["198.51.100.0/24"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_records_decisions_and_announces_nothing() {
    let (app, fake) = app_with(|c| c.escalation.dry_run = true).await;
    app.post(
        "/api/v1/notifications",
        NOTIFY,
        ban("198.51.100.9", 50_000_000, 10),
    )
    .await;
    let e = wait_state(&app, "198.51.100.0/24", "active").await;
    assert_eq!(e["dry_run"], true, "{e}");
    app.post("/api/v1/notifications", NOTIFY, unban("198.51.100.9"))
        .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    app.post("/api/v1/notifications", NOTIFY, unban("198.51.100.9"))
        .await;
    wait_state(&app, "198.51.100.0/24", "withdrawn").await;
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    let (_, ready) = app.get("/readyz", READ).await;
    assert_eq!(ready["dry_run"], true);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_escalation_under_the_same_rails_held_until_deleted_then_suppressed() {
    let (app, fake) = app_with(|c| {
        c.networks.protected = vec!["198.51.101.0/28".parse().expect("net")];
    })
    .await;
    for (prefix, status, rule) in [
        ("192.0.2.0/24", 422, "outside_ours"),
        ("198.51.101.0/24", 422, "protected"),
        ("198.51.100.0/23", 422, "too_short"),
    ] {
        let (s, body) = app
            .post(
                "/api/v1/escalations",
                ADMIN,
                serde_json::to_vec(&json!({"prefix": prefix, "reason": "test"})).expect("json"),
            )
            .await;
        assert_eq!(s, status, "{prefix}: {body}");
        assert_eq!(body["detail"]["rule"], rule, "{body}");
    }
    let (s, _) = app
        .post(
            "/api/v1/escalations",
            READ,
            serde_json::to_vec(&json!({"prefix": "198.51.100.0/24", "reason": "x"})).expect("json"),
        )
        .await;
    assert_eq!(s, 403);
    let (s, body) = app
        .post(
            "/api/v1/escalations",
            ADMIN,
            serde_json::to_vec(&json!({"prefix": "198.51.100.0/24", "reason": "seen upstream"}))
                .expect("json"),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let e = wait_state(&app, "198.51.100.0/24", "active").await;
    assert_eq!(e["origin"], "manual");
    assert_eq!(e["created_by"], "noc");
    // No banned host in it, min_hold long past: a manual escalation still stays.
    tokio::time::sleep(Duration::from_millis(400)).await;
    app.post("/api/v1/notifications", NOTIFY, unban("198.51.100.1"))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(escalation(&app, "198.51.100.0/24").await["state"], "active");

    // Delete with suppression: withdrawn, and a crossing host does not bring it back.
    let (s, body) = app
        .delete("/api/v1/escalations/198.51.100.0%2F24?suppress=30m", ADMIN)
        .await;
    assert_eq!(s, 202, "{body}");
    wait_state(&app, "198.51.100.0/24", "withdrawn").await;
    app.post(
        "/api/v1/notifications",
        NOTIFY,
        ban("198.51.100.3", 50_000_000, 10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        escalation(&app, "198.51.100.0/24").await["state"],
        "withdrawn"
    );
    let (_, sup) = app.get("/api/v1/suppressions", READ).await;
    assert_eq!(sup["suppressions"][0]["prefix"], "198.51.100.0/24");
    // Lifting the suppression lets the checker escalate again.
    let (s, _) = app
        .delete("/api/v1/suppressions/198.51.100.0/24", ADMIN)
        .await;
    assert_eq!(s, 204);
    let e = wait_state(&app, "198.51.100.0/24", "active").await;
    assert_eq!(e["origin"], "auto");
    assert_eq!(fake.prefixes(), vec!["198.51.100.0/24"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_reannounces_what_the_speaker_lost() {
    let (app, fake) = app_with(|c| c.bgp.reconcile_interval = Duration::from_millis(300)).await;
    app.post(
        "/api/v1/notifications",
        NOTIFY,
        ban("198.51.100.9", 50_000_000, 10),
    )
    .await;
    wait_state(&app, "198.51.100.0/24", "active").await;
    // The speaker restarts with an empty RIB.
    fake.rib.lock().expect("lock").clear();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while fake.prefixes().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fake.prefixes(), vec!["198.51.100.0/24"]);
    let (_, ev) = app.get("/api/v1/events?kind=reconcile", READ).await;
    assert!(ev["events"][0]["message"]
        .as_str()
        .unwrap_or("")
        .contains("re-announcing"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_withdraws_stale_routes_of_ours_and_nothing_else() {
    let (app, fake) = app_with(|c| c.bgp.reconcile_interval = Duration::from_millis(300)).await;
    app.post(
        "/api/v1/notifications",
        NOTIFY,
        ban("198.51.100.9", 50_000_000, 10),
    )
    .await;
    wait_state(&app, "198.51.100.0/24", "active").await;
    let ours = fake.rib.lock().expect("lock")[0].clone();
    tokio::time::sleep(Duration::from_millis(400)).await;
    app.post("/api/v1/notifications", NOTIFY, unban("198.51.100.9"))
        .await;
    wait_state(&app, "198.51.100.0/24", "withdrawn").await;
    // Our old route shows up in the RIB again (say, a speaker restored from its own config),
    // next to a foreign route of the same shape but other attributes and another prefix.
    let mut foreign = ours.clone();
    foreign.prefix = "198.51.102.0/24".parse().expect("net");
    let mut foreign_same_prefix_other_attrs = ours.clone();
    foreign_same_prefix_other_attrs.prefix = "198.51.103.0/24".parse().expect("net");
    foreign_same_prefix_other_attrs.communities = vec!["65000:1".parse().expect("community")];
    {
        let mut rib = fake.rib.lock().expect("lock");
        rib.push(ours);
        rib.push(foreign);
        rib.push(foreign_same_prefix_other_attrs);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while fake.prefixes().contains(&"198.51.100.0/24".to_string())
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Only the prefix we announced and withdrew is removed; prefixes we never announced are
    // not ours, whatever their attributes.
    assert_eq!(fake.prefixes(), vec!["198.51.102.0/24", "198.51.103.0/24"]);
    // The event is written once the speaker has answered, so just after the route went.
    let stale = |v: &Value| {
        v["events"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("stale")
    };
    let ev = app
        .wait_for(
            "/api/v1/events?kind=reconcile",
            Duration::from_secs(5),
            stale,
        )
        .await;
    assert!(stale(&ev), "{ev}");
    app.stop().await;
}
