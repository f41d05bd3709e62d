//! `GobgpSpeaker` against a real gobgpd peering with BIRD: what we announce is what the
//! upstream router gets, and paths that are not ours are never replaced nor withdrawn.

use std::time::{Duration, Instant};

use fnm_escalator::bgp::gobgp::GobgpSpeaker;
use fnm_escalator::bgp::{BgpError, Community, LargeCommunity, Route, Speaker, Withdrawn};

use crate::support::lab::{BirdRoute, Lab, BLACKHOLE_NH4, BLACKHOLE_NH6};

const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// gobgpd -> BIRD takes about 10 ms; this only bounds a failing test.
const PROPAGATION: Duration = Duration::from_secs(10);

fn speaker(lab: &Lab) -> GobgpSpeaker {
    GobgpSpeaker::new(&lab.gobgp_api(), CALL_TIMEOUT).expect("speaker")
}

fn route(prefix: &str, next_hop: &str) -> Route {
    Route {
        prefix: prefix.parse().expect("prefix"),
        next_hop: next_hop.parse().expect("next hop"),
        communities: vec![Community::new(65001, 777)],
        large_communities: vec![LargeCommunity {
            global_admin: 65001,
            local_data1: 1,
            local_data2: 777,
        }],
    }
}

fn find<'a>(routes: &'a [BirdRoute], prefix: &str) -> Option<&'a BirdRoute> {
    let prefix = prefix.parse().expect("prefix");
    routes.iter().find(|r| r.prefix == prefix)
}

fn has(prefix: &str) -> impl Fn(&[BirdRoute]) -> bool + '_ {
    move |routes| find(routes, prefix).is_some()
}

/// Asserts BIRD holds `r` exactly as we announced it, resolved to a blackhole.
fn assert_at_bird(routes: &[BirdRoute], r: &Route) {
    let prefix = r.prefix.to_string();
    let got = find(routes, &prefix).unwrap_or_else(|| panic!("{prefix} not at BIRD: {routes:#?}"));
    assert_eq!(got.kind, "blackhole", "{got:?}");
    assert_eq!(got.next_hop, Some(r.next_hop), "{got:?}");
    assert_eq!(got.communities, r.communities, "{got:?}");
    assert_eq!(got.large_communities, r.large_communities, "{got:?}");
}

/// Runs `call` and asserts it fails as Unreachable within `timeout` (plus scheduling slack).
async fn assert_unreachable_within<F, Fut>(timeout: Duration, call: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), BgpError>>,
{
    let started = Instant::now();
    let res = call().await;
    let took = started.elapsed();
    assert!(
        matches!(res, Err(BgpError::Unreachable(_))),
        "expected Unreachable, got {res:?}"
    );
    assert!(took < timeout + Duration::from_millis(500), "took {took:?}");
}

#[tokio::test]
async fn announces_ipv4_with_communities_and_next_hop() {
    let lab = Lab::start();
    let s = speaker(&lab);
    let r = route("198.51.100.0/24", BLACKHOLE_NH4);

    s.announce(&r).await.expect("announce");
    assert_at_bird(
        &lab.wait_for_routes(has("198.51.100.0/24"), PROPAGATION),
        &r,
    );

    let listed = s
        .list()
        .await
        .expect("list")
        .expect("gobgp reads its RIB back");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(r.matches(&listed[0]), "{listed:?}");

    // Announcing the same route again is fine and changes nothing.
    s.announce(&r).await.expect("re-announce");
    assert_eq!(s.list().await.expect("list").expect("rib").len(), 1);
    assert_at_bird(&lab.bird_routes(), &r);
}

#[tokio::test]
async fn announces_ipv6_with_mp_reach_next_hop() {
    let lab = Lab::start();
    let s = speaker(&lab);
    let r = route("2001:db8:1::/48", BLACKHOLE_NH6);

    s.announce(&r).await.expect("announce");
    assert_at_bird(
        &lab.wait_for_routes(has("2001:db8:1::/48"), PROPAGATION),
        &r,
    );

    let listed = s.list().await.expect("list").expect("rib");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(r.matches(&listed[0]), "{listed:?}");
}

#[tokio::test]
async fn withdraw_removes_only_our_route() {
    let lab = Lab::start();
    let s = speaker(&lab);
    lab.gobgp_cli(&[
        "global",
        "rib",
        "add",
        "-a",
        "ipv4",
        "203.0.113.0/24",
        "community",
        "65002:1",
        "nexthop",
        BLACKHOLE_NH4,
    ]);
    let ours = route("198.51.100.0/24", BLACKHOLE_NH4);
    s.announce(&ours).await.expect("announce");
    lab.wait_for_routes(
        |rs| has("203.0.113.0/24")(rs) && has("198.51.100.0/24")(rs),
        PROPAGATION,
    );

    assert_eq!(
        s.withdraw(&ours).await.expect("withdraw"),
        Withdrawn::Removed
    );
    let routes = lab.wait_for_routes(|rs| !has("198.51.100.0/24")(rs), PROPAGATION);
    assert!(find(&routes, "198.51.100.0/24").is_none(), "{routes:#?}");
    let foreign = find(&routes, "203.0.113.0/24").expect("the foreign route survives");
    assert_eq!(foreign.communities, [Community::new(65002, 1)]);

    let listed = s.list().await.expect("list").expect("rib");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].prefix.to_string(), "203.0.113.0/24");
    assert_eq!(
        s.withdraw(&ours).await.expect("withdraw again"),
        Withdrawn::Absent
    );
}

#[tokio::test]
async fn refuses_to_announce_over_a_foreign_route() {
    let lab = Lab::start();
    let s = speaker(&lab);
    lab.gobgp_cli(&[
        "global",
        "rib",
        "add",
        "-a",
        "ipv4",
        "198.51.100.0/24",
        "community",
        "65001:999",
        "nexthop",
        BLACKHOLE_NH4,
    ]);
    lab.wait_for_routes(has("198.51.100.0/24"), PROPAGATION);

    let ours = route("198.51.100.0/24", BLACKHOLE_NH4);
    match s.announce(&ours).await {
        Err(BgpError::ForeignRoute { prefix }) => assert_eq!(prefix, ours.prefix),
        other => panic!("expected ForeignRoute, got {other:?}"),
    }
    // The IPv6 side of the check, through the same path.
    lab.gobgp_cli(&[
        "global",
        "rib",
        "add",
        "-a",
        "ipv6",
        "2001:db8:1::/48",
        "nexthop",
        "2001:db8::ffff",
    ]);
    let ours6 = route("2001:db8:1::/48", BLACKHOLE_NH6);
    assert!(matches!(
        s.announce(&ours6).await,
        Err(BgpError::ForeignRoute { .. })
    ));

    let listed = s.list().await.expect("list").expect("rib");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed.iter().all(|p| !ours.matches(p) && !ours6.matches(p)),
        "{listed:?}"
    );
    let at_bird = lab.bird_routes();
    let v4 = find(&at_bird, "198.51.100.0/24").expect("foreign route still at BIRD");
    assert_eq!(v4.communities, [Community::new(65001, 999)]);
    assert!(v4.large_communities.is_empty());
}

#[tokio::test]
async fn withdraw_leaves_a_foreign_path_alone() {
    let lab = Lab::start();
    let s = speaker(&lab);
    lab.gobgp_cli(&[
        "global",
        "rib",
        "add",
        "-a",
        "ipv4",
        "198.51.100.0/24",
        "community",
        "65001:777",
        "nexthop",
        "192.0.2.99",
    ]);
    lab.wait_for_routes(has("198.51.100.0/24"), PROPAGATION);

    // Same prefix and community, other next hop (and no large community): not ours.
    let ours = route("198.51.100.0/24", BLACKHOLE_NH4);
    assert_eq!(
        s.withdraw(&ours).await.expect("withdraw"),
        Withdrawn::LeftForeign
    );

    std::thread::sleep(Duration::from_millis(300));
    let at_bird = lab.bird_routes();
    let kept = find(&at_bird, "198.51.100.0/24").expect("the foreign path is still announced");
    assert_eq!(kept.next_hop, Some("192.0.2.99".parse().expect("ip")));
    assert_eq!(kept.kind, "unreachable", "{kept:?}");
    let listed = s.list().await.expect("list").expect("rib");
    assert_eq!(listed.len(), 1, "{listed:?}");
}

#[tokio::test]
async fn reconnects_after_gobgpd_restart() {
    let mut lab = Lab::start();
    let s = speaker(&lab);
    let r = route("198.51.100.0/24", BLACKHOLE_NH4);
    s.announce(&r).await.expect("announce");
    lab.wait_for_routes(has("198.51.100.0/24"), PROPAGATION);

    lab.kill_gobgpd();
    // Every call fails as Unreachable, and within the timeout.
    assert_unreachable_within(CALL_TIMEOUT, || async { s.announce(&r).await }).await;
    assert_unreachable_within(CALL_TIMEOUT, || async { s.list().await.map(|_| ()) }).await;
    assert_unreachable_within(CALL_TIMEOUT, || async { s.withdraw(&r).await.map(|_| ()) }).await;
    let health = s.health().await;
    assert!(!health.reachable, "{health:?}");
    assert!(health.detail.is_some());
    // BIRD drops the routes when the session goes down.
    let routes = lab.wait_for_routes(|rs| rs.is_empty(), PROPAGATION);
    assert!(routes.is_empty(), "{routes:#?}");

    lab.start_gobgpd();
    // The same speaker reconnects on its own, to an empty RIB: gobgpd keeps no state.
    let listed = s.list().await.expect("list after restart").expect("rib");
    assert!(listed.is_empty(), "{listed:?}");
    s.announce(&r).await.expect("announce after restart");
    assert_at_bird(
        &lab.wait_for_routes(has("198.51.100.0/24"), PROPAGATION),
        &r,
    );
}

#[tokio::test]
async fn times_out_when_gobgpd_hangs() {
    let lab = Lab::start();
    let s = speaker(&lab);
    let r = route("198.51.100.0/24", BLACKHOLE_NH4);
    s.announce(&r).await.expect("announce");

    // A stopped gobgpd accepts connections (the kernel does) but never answers.
    lab.pause_gobgpd();
    let started = Instant::now();
    assert_unreachable_within(CALL_TIMEOUT, || async { s.list().await.map(|_| ()) }).await;
    assert!(
        started.elapsed() >= CALL_TIMEOUT / 2,
        "failed before the timeout: {:?}",
        started.elapsed()
    );
    assert_unreachable_within(CALL_TIMEOUT, || async { s.announce(&r).await }).await;
    assert!(!s.health().await.reachable);

    lab.resume_gobgpd();
    let listed = s
        .list()
        .await
        .expect("list once gobgpd runs again")
        .expect("rib");
    assert_eq!(listed.len(), 1, "{listed:?}");
}

#[tokio::test]
async fn health_reports_established_peer() {
    let lab = Lab::start();
    let health = speaker(&lab).health().await;
    assert_eq!(health.backend, "gobgp");
    assert!(health.reachable, "{health:?}");
    assert_eq!(health.detail, None);
    assert_eq!(health.peers.len(), 1, "{health:?}");
    assert_eq!(health.peers[0].address, lab.bird_addr());
    assert_eq!(health.peers[0].state, "established");
}

#[tokio::test]
async fn announce_many_pipelines_and_keeps_the_foreign_check() {
    let lab = Lab::start();
    let s = speaker(&lab);
    lab.gobgp_cli(&[
        "global",
        "rib",
        "add",
        "-a",
        "ipv4",
        "198.18.7.0/24",
        "community",
        "65002:1",
        "nexthop",
        BLACKHOLE_NH4,
    ]);
    let routes: Vec<Route> = (0..=255)
        .map(|n| route(&format!("198.18.{n}.0/24"), BLACKHOLE_NH4))
        .chain([route("2001:db8:1::/48", BLACKHOLE_NH6)])
        .collect();
    // One of them is already ours: skipped, still Ok.
    s.announce(&routes[3]).await.expect("announce one");

    let results = s.announce_many(&routes).await;
    assert_eq!(results.len(), routes.len());
    for (r, res) in routes.iter().zip(&results) {
        if r.prefix.to_string() == "198.18.7.0/24" {
            assert!(matches!(res, Err(BgpError::ForeignRoute { .. })), "{res:?}");
        } else {
            assert!(res.is_ok(), "{}: {res:?}", r.prefix);
        }
    }
    let at_bird = lab.wait_for_routes(|rs| rs.len() == routes.len(), PROPAGATION);
    assert_eq!(at_bird.len(), routes.len());
    assert_eq!(
        find(&at_bird, "198.18.7.0/24")
            .expect("foreign")
            .communities,
        [Community::new(65002, 1)]
    );
    assert_eq!(
        s.list().await.expect("list").expect("rib").len(),
        routes.len()
    );
}

#[tokio::test]
async fn routes_return_after_bird_restart() {
    let mut lab = Lab::start();
    let s = speaker(&lab);
    let r = route("198.51.100.0/24", BLACKHOLE_NH4);
    s.announce(&r).await.expect("announce");
    lab.wait_for_routes(has("198.51.100.0/24"), PROPAGATION);

    lab.restart_bird();
    // gobgpd re-sends its RIB once the session is back; nothing to do on our side.
    assert_at_bird(
        &lab.wait_for_routes(has("198.51.100.0/24"), PROPAGATION),
        &r,
    );
}
