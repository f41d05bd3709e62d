//! End to end with real daemons: a ban notification over threshold makes a real BIRD (the
//! "upstream") hold the covering prefix with our community and next hop, announced through a
//! real gobgpd; the unban withdraws it after min_hold; routes that are not ours survive every
//! step; a restarted gobgpd gets our routes back.

use std::time::Duration;

use fnm_escalator::bgp::{Community, LargeCommunity};

use crate::support::app::{ban, spawn_app, unban, TestApp, NOTIFY, READ};
use crate::support::lab::{has, BirdRoute, Lab};

fn route<'a>(routes: &'a [BirdRoute], prefix: &str) -> &'a BirdRoute {
    routes
        .iter()
        .find(|r| r.prefix.to_string() == prefix)
        .unwrap_or_else(|| panic!("{prefix} not at BIRD: {routes:?}"))
}

async fn service(lab: &Lab) -> TestApp {
    let api = lab.gobgp_api();
    spawn_app(move |c| {
        c.bgp.backend = fnm_escalator::config::Backend::Gobgp;
        c.bgp.gobgp_api = api;
        c.bgp.communities = vec!["65001:666".parse().expect("community")];
        c.bgp.large_communities = vec!["65001:2:666".parse().expect("large community")];
        c.bgp.next_hop_ipv4 = Some("192.0.2.1".parse().expect("ip"));
        c.bgp.next_hop_ipv6 = Some("100::1".parse().expect("ip"));
        c.bgp.reconcile_interval = Duration::from_secs(1);
        c.bgp.timeout = Duration::from_secs(2);
        c.escalation.check_interval = Duration::from_millis(500);
        c.escalation.min_hold = Duration::from_secs(2);
        c.networks.ours = vec![
            "198.51.100.0/22".parse().expect("net"),
            "2001:db8::/32".parse().expect("net"),
        ];
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_reaches_bird_and_goes_away_with_the_unban() {
    let mut lab = Lab::start();
    // Routes that are not ours: an operator's /24 and FastNetMon's /32 blackhole, same gobgpd.
    fn foreign(lab: &Lab) {
        lab.gobgp_cli(&[
            "global",
            "rib",
            "add",
            "-a",
            "ipv4",
            "198.51.103.0/24",
            "community",
            "65000:1",
            "nexthop",
            "192.0.2.9",
        ]);
        lab.gobgp_cli(&[
            "global",
            "rib",
            "add",
            "-a",
            "ipv4",
            "198.51.100.7/32",
            "community",
            "65535:666",
            "nexthop",
            "192.0.2.1",
        ]);
    }
    foreign(&lab);
    let app = service(&lab).await;

    // 25 MB/s = 200 Mbit/s, over the 100 Mbit/s default.
    let (s, body) = app
        .post(
            "/api/v1/notifications",
            NOTIFY,
            ban("198.51.100.7", 25_000_000, 10),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let (s, _) = app
        .post(
            "/api/v1/notifications",
            NOTIFY,
            ban("2001:db8:5::7", 25_000_000, 10),
        )
        .await;
    assert_eq!(s, 201);
    let routes = lab.wait_for_routes(
        |r| has(r, "198.51.100.0/24") && has(r, "2001:db8:5::/48"),
        Duration::from_secs(10),
    );
    let v4 = route(&routes, "198.51.100.0/24");
    assert_eq!(v4.next_hop, Some("192.0.2.1".parse().expect("ip")));
    assert_eq!(v4.communities, vec![Community::new(65001, 666)]);
    assert_eq!(
        v4.large_communities,
        vec!["65001:2:666".parse::<LargeCommunity>().expect("lc")]
    );
    assert_eq!(v4.kind, "blackhole");
    let v6 = route(&routes, "2001:db8:5::/48");
    assert_eq!(v6.next_hop, Some("100::1".parse().expect("ip")));
    assert_eq!(v6.communities, vec![Community::new(65001, 666)]);
    assert!(has(&routes, "198.51.103.0/24") && has(&routes, "198.51.100.7/32"));

    app.expect_escalation_state("198.51.100.0/24", "active")
        .await;

    // Unban: the /24 goes after min_hold; everything that is not ours stays.
    app.post("/api/v1/notifications", NOTIFY, unban("198.51.100.7"))
        .await;
    let routes = lab.wait_for_routes(|r| !has(r, "198.51.100.0/24"), Duration::from_secs(10));
    assert!(!has(&routes, "198.51.100.0/24"), "{routes:?}");
    assert!(
        has(&routes, "198.51.103.0/24"),
        "foreign /24 touched: {routes:?}"
    );
    assert!(
        has(&routes, "198.51.100.7/32"),
        "FastNetMon's /32 touched: {routes:?}"
    );
    assert!(has(&routes, "2001:db8:5::/48"));
    app.expect_escalation_state("198.51.100.0/24", "withdrawn")
        .await;

    // gobgpd dies and comes back empty: reconciliation re-announces what is active, and only
    // that (the withdrawn /24 stays withdrawn).
    lab.kill_gobgpd();
    lab.start_gobgpd();
    let routes = lab.wait_for_routes(|r| has(r, "2001:db8:5::/48"), Duration::from_secs(8));
    assert!(
        has(&routes, "2001:db8:5::/48"),
        "not re-announced: {routes:?}"
    );
    assert!(!has(&routes, "198.51.100.0/24"), "{routes:?}");
    foreign(&lab);

    app.post("/api/v1/notifications", NOTIFY, unban("2001:db8:5::7"))
        .await;
    let routes = lab.wait_for_routes(|r| !has(r, "2001:db8:5::/48"), Duration::from_secs(10));
    assert!(!has(&routes, "2001:db8:5::/48"), "{routes:?}");
    assert!(has(&routes, "198.51.103.0/24") && has(&routes, "198.51.100.7/32"));
    let (_, ev) = app.get("/api/v1/events?kind=reconcile", READ).await;
    assert!(
        ev["events"].as_array().is_some_and(|e| !e.is_empty()),
        "the re-announcement is in the audit log: {ev}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_announces_over_a_foreign_route_of_the_same_prefix() {
    let lab = Lab::start();
    lab.gobgp_cli(&[
        "global",
        "rib",
        "add",
        "-a",
        "ipv4",
        "198.51.101.0/24",
        "community",
        "65000:1",
        "nexthop",
        "192.0.2.9",
    ]);
    let app = service(&lab).await;
    app.post(
        "/api/v1/notifications",
        NOTIFY,
        ban("198.51.101.5", 25_000_000, 10),
    )
    .await;
    let e = app
        .wait_for(
            "/api/v1/escalations?state=refused",
            Duration::from_secs(10),
            |v| v["escalations"].as_array().is_some_and(|a| !a.is_empty()),
        )
        .await;
    assert_eq!(e["escalations"][0]["rule"], "foreign_route", "{e}");
    let routes = lab.bird_routes();
    let r = route(&routes, "198.51.101.0/24");
    assert_eq!(
        r.communities,
        vec![Community::new(65000, 1)],
        "foreign route replaced"
    );
    app.stop().await;
}
