//! The `exec` backend end to end: the gobgp CLI as the announce and withdraw templates makes a
//! real BIRD hold the covering prefix with our community and next hop, and lose it again with
//! the unban; a command that fails is retried and its exit code shown on the escalation.

use std::time::Duration;

use fnm_escalator::bgp::{Community, LargeCommunity};
use fnm_escalator::config::Backend;

use crate::support::app::{ban, spawn_app, unban, NOTIFY, READ};
use crate::support::lab::{has, Lab};

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_backend_announces_and_withdraws_through_the_gobgp_cli() {
    let lab = Lab::start();
    let api = lab.gobgp_api();
    let (host, port) = api.split_once(':').expect("host:port");
    let cli = ["gobgp", "-u", host, "-p", port, "global", "rib"];
    let announce = [
        &cli[..],
        &[
            "add",
            "-a",
            "{afi}",
            "{prefix}",
            "community",
            "{communities}",
            "large-community",
            "{large_communities}",
            "nexthop",
            "{next_hop}",
        ],
    ]
    .concat();
    let withdraw = [&cli[..], &["del", "-a", "{afi}", "{prefix}"]].concat();
    let app = spawn_app(move |c| {
        c.bgp.backend = Backend::Exec;
        c.bgp.exec.announce = argv(&announce);
        c.bgp.exec.withdraw = argv(&withdraw);
        c.bgp.communities = vec!["65001:666".parse().expect("community")];
        c.bgp.large_communities = vec!["65001:2:666".parse().expect("large community")];
        c.bgp.next_hop_ipv4 = Some("192.0.2.1".parse().expect("ip"));
        c.bgp.next_hop_ipv6 = Some("100::1".parse().expect("ip"));
        c.bgp.timeout = Duration::from_secs(5);
        c.escalation.check_interval = Duration::from_millis(500);
        c.escalation.min_hold = Duration::from_secs(2);
        c.networks.ours = vec![
            "198.51.100.0/22".parse().expect("net"),
            "2001:db8::/32".parse().expect("net"),
        ];
    })
    .await;
    let (_, ready) = app.get("/readyz", READ).await;
    assert_eq!(ready["bgp"]["backend"], "exec", "{ready}");
    assert_eq!(ready["bgp"]["reachable"], true, "{ready}");

    for ip in ["198.51.100.7", "2001:db8:5::7"] {
        let (s, body) = app
            .post("/api/v1/notifications", NOTIFY, ban(ip, 25_000_000, 10))
            .await;
        assert_eq!(s, 201, "{body}");
    }
    let routes = lab.wait_for_routes(
        |r| has(r, "198.51.100.0/24") && has(r, "2001:db8:5::/48"),
        Duration::from_secs(10),
    );
    for (prefix, nh) in [
        ("198.51.100.0/24", "192.0.2.1"),
        ("2001:db8:5::/48", "100::1"),
    ] {
        let r = routes
            .iter()
            .find(|r| r.prefix.to_string() == prefix)
            .unwrap_or_else(|| panic!("{prefix} not at BIRD: {routes:?}"));
        assert_eq!(r.next_hop, Some(nh.parse().expect("ip")), "{prefix}");
        assert_eq!(r.communities, vec![Community::new(65001, 666)], "{prefix}");
        assert_eq!(
            r.large_communities,
            vec!["65001:2:666".parse::<LargeCommunity>().expect("lc")],
            "{prefix}"
        );
        assert_eq!(r.kind, "blackhole", "{prefix}");
    }
    app.expect_escalation_state("198.51.100.0/24", "active")
        .await;

    app.post("/api/v1/notifications", NOTIFY, unban("198.51.100.7"))
        .await;
    let routes = lab.wait_for_routes(|r| !has(r, "198.51.100.0/24"), Duration::from_secs(10));
    assert!(!has(&routes, "198.51.100.0/24"), "{routes:?}");
    assert!(has(&routes, "2001:db8:5::/48"), "{routes:?}");
    app.expect_escalation_state("198.51.100.0/24", "withdrawn")
        .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_is_retried_and_its_exit_code_reported() {
    let app = spawn_app(|c| {
        c.bgp.backend = Backend::Exec;
        c.bgp.exec.announce = argv(&["/bin/false", "{prefix}"]);
        c.bgp.exec.withdraw = argv(&["/bin/true", "{prefix}"]);
        c.bgp.retry_initial = Duration::from_millis(100);
        c.bgp.retry_max = Duration::from_millis(200);
        c.escalation.check_interval = Duration::from_millis(100);
        c.networks.ours = vec!["198.51.100.0/22".parse().expect("net")];
    })
    .await;
    app.post(
        "/api/v1/notifications",
        NOTIFY,
        ban("198.51.100.7", 25_000_000, 10),
    )
    .await;
    let e = app
        .wait_for(
            "/api/v1/escalations/198.51.100.0%2F24",
            Duration::from_secs(10),
            |e| e["attempts"].as_i64().is_some_and(|a| a >= 3),
        )
        .await;
    assert_eq!(e["state"], "failed", "{e}");
    assert!(
        e["attempts"].as_i64().is_some_and(|a| a >= 3),
        "retried: {e}"
    );
    let error = e["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("/bin/false 198.51.100.0/24") && error.contains("exited with code 1"),
        "{e}"
    );
    let (_, ev) = app.get("/api/v1/events?kind=announce_failed", READ).await;
    assert!(
        ev["events"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("exited with code 1")),
        "the failure is in the audit log: {ev}"
    );
    app.stop().await;
}
