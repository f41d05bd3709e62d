//! Reliability: the service killed mid-burst, its BGP neighbours restarted. What was
//! acknowledged is never lost nor doubled, and the routes at the upstream end where they would
//! have been without the fault.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Row};

use crate::support::app::{free_addr, test_config, write_config, Service, ADMIN, NOTIFY};
use crate::support::lab::{BirdRoute, Lab};

const CLIENTS: usize = 32;
const NOTIFICATIONS: usize = 20_000;
/// Covering /24s the burst touches: 198.18.0.0/24 .. 198.18.63.0/24.
const PREFIXES: usize = 64;

/// One notification of the burst: its key, body and observation time.
#[derive(Clone)]
struct Planned {
    key: String,
    observed_at_ms: i64,
    body: Vec<u8>,
}

/// 10,000 hosts in 64 /24s, each banned then unbanned or not: every host of an even /24 is
/// banned over threshold and stays banned; every host of an odd /24 is banned over threshold
/// and then unbanned. Without any fault, the even /24s end escalated and the odd ones not.
/// Each client sends its hosts' notifications in order.
fn plan() -> Vec<Vec<Planned>> {
    // Observed in the recent past, 1 ms apart, so the traffic they carry is fresh.
    let base_ms = fnm_escalator::clock::now_ms() - 30_000;
    let mut clients: Vec<Vec<Planned>> = vec![Vec::new(); CLIENTS];
    for h in 0..NOTIFICATIONS / 2 {
        let prefix = h % PREFIXES;
        let ip = format!("198.18.{prefix}.{}", 1 + (h / PREFIXES) % 250);
        let stays_banned = prefix.is_multiple_of(2);
        let client = h % CLIENTS;
        let ban = json!({
            "ip": ip, "action": "ban", "alert_scope": "host",
            "attack_details": {"total_incoming_traffic": 50_000_000, "total_incoming_pps": 10}
        });
        // An even host is banned twice (FastNetMon re-announcing the ban): a duplicate the
        // store must fold, not a second episode.
        let second = if stays_banned {
            ban.clone()
        } else {
            json!({"ip": ip, "action": "unban", "alert_scope": "host"})
        };
        for (i, body) in [ban, second].into_iter().enumerate() {
            clients[client].push(Planned {
                key: format!("burst-{h}-{i}"),
                observed_at_ms: base_ms + (h as i64) * 2 + i as i64,
                body: serde_json::to_vec(&body).expect("json"),
            });
        }
    }
    clients
}

fn expected_prefixes() -> BTreeSet<String> {
    (0..PREFIXES)
        .filter(|p| p.is_multiple_of(2))
        .map(|p| format!("198.18.{p}.0/24"))
        .collect()
}

/// Sends a client's notifications in order until one fails (the service died); returns the
/// keys acknowledged and the notifications not acknowledged (to redeliver, as the notify
/// spool would, with the same idempotency key).
async fn send_all(
    http: reqwest::Client,
    url: String,
    todo: Vec<Planned>,
    acked_total: Arc<AtomicUsize>,
) -> (Vec<String>, Vec<Planned>) {
    let mut acked = Vec::new();
    let mut rest = todo.into_iter();
    while let Some(n) = rest.next() {
        let r = http
            .post(&url)
            .bearer_auth(NOTIFY)
            .header("idempotency-key", &n.key)
            .header("x-fnm-observed-at", n.observed_at_ms.to_string())
            .header("content-type", "application/json")
            .body(n.body.clone())
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => {
                acked.push(n.key);
                acked_total.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => panic!("{}: {} {:?}", n.key, r.status(), r.text().await),
            Err(_) => {
                let mut unacked = vec![n];
                unacked.extend(rest);
                return (acked, unacked);
            }
        }
    }
    (acked, Vec::new())
}

async fn burst(
    http: &reqwest::Client,
    url: &str,
    clients: Vec<Vec<Planned>>,
    acked_total: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<(Vec<String>, Vec<Planned>)>> {
    clients
        .into_iter()
        .map(|todo| {
            tokio::spawn(send_all(
                http.clone(),
                url.to_string(),
                todo,
                acked_total.clone(),
            ))
        })
        .collect()
}

/// How many times each idempotency key is stored.
async fn stored_keys(db: &std::path::Path) -> Vec<(String, i64)> {
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .expect("open database");
    sqlx::query(
        "SELECT idempotency_key, COUNT(*) FROM notifications \
         WHERE idempotency_key LIKE 'burst-%' GROUP BY idempotency_key",
    )
    .fetch_all(&mut conn)
    .await
    .expect("query")
    .iter()
    .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
    .collect()
}

fn ours_at_bird(routes: &[BirdRoute]) -> BTreeSet<String> {
    routes
        .iter()
        .map(|r| r.prefix.to_string())
        .filter(|p| p.starts_with("198.18."))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_burst_loses_nothing_acknowledged_and_ends_with_the_same_routes() {
    let lab = Lab::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    let addr = free_addr();
    config.server.listen = addr;
    config.networks.ours = vec!["198.18.0.0/16".parse().expect("net")];
    config.bgp.backend = fnm_escalator::config::Backend::Gobgp;
    config.bgp.gobgp_api = lab.gobgp_api();
    config.bgp.next_hop_ipv4 = Some("192.0.2.1".parse().expect("ip"));
    config.bgp.reconcile_interval = Duration::from_secs(2);
    config.escalation.min_hold = Duration::ZERO;
    config.escalation.check_interval = Duration::from_millis(500);
    config.thresholds.sample_max_age = Duration::from_secs(600);
    let cfg_path = write_config(&config, dir.path());
    let db = dir.path().join("state.db");

    let mut svc = Service::start(&cfg_path, addr, &dir.path().join("serve1.log"));
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(CLIENTS)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let url = format!("{}/api/v1/notifications", svc.url);
    let acked_total = Arc::new(AtomicUsize::new(0));
    let tasks = burst(&http, &url, plan(), &acked_total).await;

    // The kill lands mid-burst: once a third is acknowledged (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked_total.load(Ordering::Relaxed) < NOTIFICATIONS / 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    svc.kill9();
    let mut acked: Vec<String> = Vec::new();
    let mut unacked: Vec<Vec<Planned>> = Vec::new();
    for t in tasks {
        let (a, u) = t.await.expect("client task");
        acked.extend(a);
        unacked.push(u);
    }
    let in_flight: usize = unacked.iter().map(Vec::len).sum();
    assert!(
        acked.len() >= NOTIFICATIONS / 3 && in_flight > 0,
        "the kill landed mid-burst: {} acknowledged, {in_flight} not",
        acked.len()
    );

    // After the restart every acknowledged notification is there, exactly once.
    let svc = Service::start(&cfg_path, addr, &dir.path().join("serve2.log"));
    let stored = stored_keys(&db).await;
    assert!(stored.iter().all(|(_, n)| *n == 1), "a key stored twice");
    let stored_set: BTreeSet<&str> = stored.iter().map(|(k, _)| k.as_str()).collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|k| !stored_set.contains(k.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged notifications lost",
        lost.len()
    );
    eprintln!(
        "crash: {} acknowledged before SIGKILL, {} stored after restart, {in_flight} redelivered",
        acked.len(),
        stored.len()
    );

    // The clients redeliver what was not acknowledged (some of it may have been committed
    // just before the kill): each is stored once all the same.
    let again = burst(&http, &url, unacked, &acked_total).await;
    for t in again {
        let (_, u) = t.await.expect("client task");
        assert!(u.is_empty(), "the restarted service refused a redelivery");
    }
    // Under load the last groups are answered from the ingest journal and committed within
    // 50 ms; a read through the API waits for that commit, a read of the file does not.
    let _ = svc.get(&http, "/api/v1/events?limit=1").await;
    let stored = stored_keys(&db).await;
    assert_eq!(stored.len(), NOTIFICATIONS, "every notification stored");
    assert!(stored.iter().all(|(_, n)| *n == 1), "each exactly once");

    // The escalations, and the routes at BIRD, are those of a run without the crash.
    let want = expected_prefixes();
    let routes = lab.wait_for_routes(|r| ours_at_bird(r) == want, Duration::from_secs(60));
    assert_eq!(ours_at_bird(&routes), want, "routes at BIRD");
    let active: Value = svc
        .get(&http, "/api/v1/escalations?state=active&limit=1000")
        .await;
    let active: BTreeSet<String> = active["escalations"]
        .as_array()
        .expect("escalations")
        .iter()
        .filter_map(|e| e["prefix"].as_str().map(str::to_string))
        .collect();
    assert_eq!(active, want, "active escalations");
    let hosts: Value = svc.get(&http, "/api/v1/hosts?state=banned&limit=1").await;
    assert_eq!(hosts["total"], NOTIFICATIONS / 4, "banned hosts");
    drop(svc);
}

/// Active escalations at BIRD: 40 IPv4 /24s and 8 IPv6 /48s.
fn neighbour_plan() -> (Vec<String>, BTreeSet<String>) {
    let mut hosts = Vec::new();
    let mut prefixes = BTreeSet::new();
    for i in 0..40 {
        hosts.push(format!("198.18.{i}.7"));
        prefixes.insert(format!("198.18.{i}.0/24"));
    }
    for i in 0..8 {
        hosts.push(format!("2001:db8:{i}::7"));
        let net: ipnet::IpNet = format!("2001:db8:{i}::/48").parse().expect("net");
        prefixes.insert(net.to_string());
    }
    (hosts, prefixes)
}

fn ours(routes: &[BirdRoute], want: &BTreeSet<String>) -> BTreeSet<String> {
    routes
        .iter()
        .map(|r| r.prefix.to_string())
        .filter(|p| want.contains(p))
        .collect()
}

const FOREIGN: [&str; 2] = ["198.18.200.0/24", "198.18.0.7/32"];

fn add_foreign(lab: &Lab) {
    for (prefix, community) in [(FOREIGN[0], "65000:1"), (FOREIGN[1], "65535:666")] {
        lab.gobgp_cli(&[
            "global",
            "rib",
            "add",
            "-a",
            "ipv4",
            prefix,
            "community",
            community,
            "nexthop",
            "192.0.2.9",
        ]);
    }
}

fn foreign_intact(routes: &[BirdRoute]) -> bool {
    FOREIGN
        .iter()
        .all(|f| routes.iter().any(|r| r.prefix.to_string() == *f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_gobgpd_or_bird_restarts_every_escalation_is_back_within_reconcile_plus_5s() {
    const RECONCILE: Duration = Duration::from_secs(3);
    let bound = RECONCILE + Duration::from_secs(5);
    let mut lab = Lab::start();
    add_foreign(&lab);
    let api = lab.gobgp_api();
    let app = crate::support::app::spawn_app(move |c| {
        c.networks.ours = vec![
            "198.18.0.0/16".parse().expect("net"),
            "2001:db8::/32".parse().expect("net"),
        ];
        c.bgp.backend = fnm_escalator::config::Backend::Gobgp;
        c.bgp.gobgp_api = api;
        c.bgp.next_hop_ipv4 = Some("192.0.2.1".parse().expect("ip"));
        c.bgp.next_hop_ipv6 = Some("100::1".parse().expect("ip"));
        c.bgp.reconcile_interval = RECONCILE;
        c.bgp.timeout = Duration::from_secs(2);
    })
    .await;
    let (hosts, want) = neighbour_plan();
    for ip in &hosts {
        let body = json!({
            "ip": ip, "action": "ban", "alert_scope": "host",
            "attack_details": {"total_incoming_traffic": 50_000_000, "total_incoming_pps": 10}
        });
        let (s, b) = app
            .post(
                "/api/v1/notifications",
                NOTIFY,
                serde_json::to_vec(&body).expect("json"),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let routes = lab.wait_for_routes(|r| ours(r, &want) == want, Duration::from_secs(20));
    assert_eq!(ours(&routes, &want), want, "all escalations at BIRD");
    assert!(foreign_intact(&routes));

    for round in 0..2 {
        // gobgpd crashes and comes back empty; the operator's own routes are put back by
        // whoever owns them (here: at once).
        // Timed from the session's return (gobgpd's start-up and BGP session set-up are not
        // ours to bound); the time from its start is reported too.
        lab.kill_gobgpd();
        let spawned = Instant::now();
        lab.start_gobgpd();
        let started = Instant::now();
        add_foreign(&lab);
        let routes = lab.wait_for_routes(|r| ours(r, &want) == want, bound);
        let took = started.elapsed();
        assert_eq!(
            ours(&routes, &want),
            want,
            "round {round}: not all back within {bound:?} of gobgpd's restart"
        );
        eprintln!(
            "gobgpd restart, round {round}: {} routes back at BIRD {took:?} after the session, {:?} after the start",
            want.len(),
            spawned.elapsed()
        );

        // Timed from the session's return: how long BIRD takes to come up is not ours to bound.
        lab.restart_bird();
        let started = Instant::now();
        let routes = lab.wait_for_routes(|r| ours(r, &want) == want && foreign_intact(r), bound);
        let took = started.elapsed();
        assert_eq!(
            ours(&routes, &want),
            want,
            "round {round}: after BIRD's restart"
        );
        eprintln!(
            "BIRD restart, round {round}: {} routes back in {took:?}",
            want.len()
        );
        // Reconciliation never touched what is not ours.
        tokio::time::sleep(RECONCILE).await;
        let routes = lab.bird_routes();
        assert!(
            foreign_intact(&routes),
            "a foreign route was withdrawn: {routes:?}"
        );
        assert_eq!(ours(&routes, &want), want);
    }
    let (_, active) = app
        .get("/api/v1/escalations?state=active&limit=1000", ADMIN)
        .await;
    assert_eq!(
        active["escalations"].as_array().map(Vec::len),
        Some(want.len()),
        "every escalation still active"
    );
    app.stop().await;
}

/// With the service down, 1,000 `notify` calls (through the deploy wrapper's command line)
/// each exit 0 within a second; a corrupt file dropped into the spool among them is
/// quarantined, not retried forever; once the service is back, all 1,000 are delivered exactly
/// once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_notify_calls_while_down_are_delivered_once_in_order() {
    use crate::support::app::run_notify;
    const CALLS: usize = 1000;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    let addr = free_addr();
    config.server.listen = addr;
    config.server.spool_sweep_interval = Duration::from_millis(200);
    let cfg_path = write_config(&config, dir.path());
    let spool = dir.path().join("spool");

    // 100 hosts, ten rounds of ban / unban: the order decides every host's final state.
    let mut sequence = Vec::with_capacity(CALLS);
    for round in 0..10 {
        for h in 0..100 {
            let ip = format!("10.154.{}.{}", h / 50, 1 + h % 50);
            // Odd hosts end banned (their last round is a ban), even hosts end unbanned.
            let ban = if h % 2 == 1 {
                round % 2 == 1
            } else {
                round % 2 == 0
            };
            sequence.push((ip, if ban { "ban" } else { "unban" }));
        }
    }
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    for (i, (ip, action)) in sequence.iter().enumerate() {
        let (code, stderr, took) = run_notify(&cfg_path, &[ip, "incoming", "5000", action], b"");
        assert_eq!(code, 0, "call {i}: {stderr}");
        assert!(took < Duration::from_secs(1), "call {i} took {took:?}");
        slowest = slowest.max(took);
        if i == CALLS / 2 {
            // Something else left a corrupt file that sorts among ours.
            let name = std::fs::read_dir(&spool)
                .expect("spool")
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json"))
                .max()
                .expect("a spooled file");
            let corrupt = spool.join(name.replace(".json", "-corrupt.json"));
            std::fs::write(&corrupt, b"{\"version\": 1, \"body\": tru").expect("write corrupt");
        }
    }
    eprintln!(
        "spool: {CALLS} notify calls in {:?}, slowest {slowest:?}",
        started.elapsed()
    );

    let svc = Service::start(&cfg_path, addr, &dir.path().join("serve.log"));
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(60);
    let events = loop {
        let v: Value = svc
            .get(&http, "/api/v1/events?kind=notification&limit=1000")
            .await;
        let n = v["events"].as_array().map(Vec::len).unwrap_or(0);
        if n >= CALLS || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
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
    assert_eq!(delivered.len(), CALLS, "each delivered");
    assert_eq!(delivered, expected, "once each, in order");
    // Nothing more arrives later (a page past the thousand is empty).
    let oldest = events["events"][CALLS - 1]["id"].as_i64().expect("id");
    let more = svc
        .get(
            &http,
            &format!("/api/v1/events?kind=notification&before={oldest}"),
        )
        .await;
    assert_eq!(more["events"].as_array().map(Vec::len), Some(0), "{more}");
    let banned: Value = svc.get(&http, "/api/v1/hosts?state=banned&limit=1").await;
    assert_eq!(banned["total"], 50);

    // The corrupt file is quarantined with its reason, and the spool is empty.
    let quarantined: Vec<String> = std::fs::read_dir(spool.join("quarantine"))
        .expect("quarantine dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        quarantined.iter().any(|n| n.contains("-corrupt")),
        "{quarantined:?}"
    );
    let left: Vec<_> = std::fs::read_dir(&spool)
        .expect("spool")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file() && !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "spool not drained: {left:?}");
    let log = std::fs::read_to_string(dir.path().join("serve.log")).expect("log");
    assert!(log.contains("corrupt spool file quarantined"), "{log}");
    drop(svc);
}
