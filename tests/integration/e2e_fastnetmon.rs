//! The whole chain with the real programs: NetFlow sent to a real FastNetMon Community makes it
//! ban a host and call `fnm-escalator notify` through the deploy wrapper; its InfluxDB export
//! pushes live counters to `/write`; the service escalates the covering /24 through a real BGP
//! speaker (gobgpd over gRPC, ExaBGP through its process API, or the gobgp CLI run by the exec
//! backend); a real BIRD holds it with our community and next hop; when the flood stops and
//! FastNetMon unbans, the /24 is withdrawn after min_hold.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use fnm_escalator::bgp::Community;
use fnm_escalator::config::{Backend, Config};

use crate::support::app::{binary, spawn_app, NOTIFY, READ};
use crate::support::exabgp_lab::ExabgpLab;
use crate::support::fastnetmon::{Fastnetmon, FastnetmonOptions};
use crate::support::lab::{BirdRoute, Lab};

/// The upstream side of one run: a BGP speaker of some kind peering with BIRD.
enum Upstream {
    Gobgp(Lab),
    /// The socket's directory lives as long as ExaBGP does.
    Exabgp {
        lab: ExabgpLab,
        _socket_dir: tempfile::TempDir,
    },
}

impl Upstream {
    fn wait_for_routes(
        &self,
        pred: impl Fn(&[BirdRoute]) -> bool,
        timeout: Duration,
    ) -> Vec<BirdRoute> {
        match self {
            Upstream::Gobgp(lab) => lab.wait_for_routes(pred, timeout),
            Upstream::Exabgp { lab, .. } => lab.wait_for_routes(pred, timeout),
        }
    }
}

fn common(c: &mut Config) {
    c.bgp.communities = vec!["65001:777".parse().expect("community")];
    c.bgp.reconcile_interval = Duration::from_secs(2);
    c.escalation.min_hold = Duration::from_secs(3);
    c.escalation.check_interval = Duration::from_secs(1);
    c.networks.ours = vec!["198.51.100.0/24".parse().expect("net")];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netflow_flood_ends_as_a_24_at_bird_and_goes_away_after_the_unban() {
    let lab = Lab::start();
    let api = lab.gobgp_api();
    let app = spawn_app(move |c| {
        common(c);
        c.bgp.backend = Backend::Gobgp;
        c.bgp.gobgp_api = api;
    })
    .await;
    chain(app, Upstream::Gobgp(lab)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netflow_flood_through_exabgp() {
    let dir = tempfile::Builder::new()
        .prefix("fnm-exabgp-sock-")
        .tempdir()
        .expect("tempdir");
    let socket = dir.path().join("exabgp.sock");
    let s = socket.clone();
    let app = spawn_app(move |c| {
        common(c);
        c.bgp.backend = Backend::Exabgp;
        c.bgp.exabgp_socket = s;
    })
    .await;
    let lab = ExabgpLab::start(&socket, &[]);
    let ready = app
        .wait_for("/readyz", Duration::from_secs(15), |v| {
            v["bgp"]["peers"][0]["state"] == "established"
        })
        .await;
    assert_eq!(ready["bgp"]["peers"][0]["state"], "established", "{ready}");
    chain(
        app,
        Upstream::Exabgp {
            lab,
            _socket_dir: dir,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netflow_flood_through_the_exec_backend() {
    let lab = Lab::start();
    let api = lab.gobgp_api();
    let (host, port) = api.split_once(':').expect("host:port");
    let cli = ["gobgp", "-u", host, "-p", port, "global", "rib"];
    let argv =
        |tail: &[&str]| -> Vec<String> { cli.iter().chain(tail).map(|w| w.to_string()).collect() };
    let announce = argv(&[
        "add",
        "-a",
        "{afi}",
        "{prefix}",
        "community",
        "{communities}",
        "nexthop",
        "{next_hop}",
    ]);
    let withdraw = argv(&["del", "-a", "{afi}", "{prefix}"]);
    let app = spawn_app(move |c| {
        common(c);
        c.bgp.backend = Backend::Exec;
        c.bgp.exec.announce = announce;
        c.bgp.exec.withdraw = withdraw;
    })
    .await;
    chain(app, Upstream::Gobgp(lab)).await;
}

async fn chain(app: crate::support::app::TestApp, lab: Upstream) {
    let config = app.write_config();
    let wrapper = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/notify-fnm-escalator.sh");
    let fnm = Fastnetmon::start(FastnetmonOptions {
        networks: vec!["198.51.100.0/24".into()],
        notify_script: wrapper,
        env: vec![
            ("FNM_ESCALATOR_BIN".into(), binary().into()),
            ("FNM_ESCALATOR_CONFIG".into(), config.display().to_string()),
        ],
        influxdb: Some((app.config.server.listen, "fastnetmon".into(), NOTIFY.into())),
        threshold_pps: 1000,
        ban_time: 10,
        grpc_api: false,
    });

    let victim = Ipv4Addr::new(198, 51, 100, 5);
    let flood = fnm.flood(victim, 20_000, Duration::from_secs(60));
    let routes = lab.wait_for_routes(
        |r| r.iter().any(|r| r.prefix.to_string() == "198.51.100.0/24"),
        Duration::from_secs(30),
    );
    let route = routes
        .iter()
        .find(|r| r.prefix.to_string() == "198.51.100.0/24")
        .unwrap_or_else(|| {
            panic!(
                "no /24 at BIRD: {routes:?}\nfastnetmon log:\n{}",
                fnm.log_tail()
            )
        });
    assert_eq!(route.next_hop, Some("192.0.2.1".parse().expect("ip")));
    assert_eq!(route.communities, vec![Community::new(65001, 777)]);

    let (_, host) = app.get("/api/v1/hosts/198.51.100.5", READ).await;
    assert_eq!(host["state"], "banned", "{host}");
    assert_eq!(host["source"], "notify_text", "{host}");
    // Live counters from the InfluxDB export replace the detection-time figures.
    let host = app
        .wait_for("/api/v1/hosts/198.51.100.5", Duration::from_secs(15), |h| {
            h["traffic"]["source"] == "influxdb"
        })
        .await;
    assert_eq!(host["traffic"]["source"], "influxdb", "{host}");
    assert!(
        host["traffic"]["in_pps"].as_i64().unwrap_or(0) >= 1000,
        "{host}"
    );

    // The flood stops: FastNetMon unbans after ban_time, the /24 goes.
    drop(flood);
    let started = Instant::now();
    let routes = lab.wait_for_routes(
        |r| !r.iter().any(|r| r.prefix.to_string() == "198.51.100.0/24"),
        Duration::from_secs(60),
    );
    assert!(
        !routes
            .iter()
            .any(|r| r.prefix.to_string() == "198.51.100.0/24"),
        "still announced {:?} after the flood stopped\nfastnetmon log:\n{}",
        started.elapsed(),
        fnm.log_tail()
    );
    let (_, host) = app.get("/api/v1/hosts/198.51.100.5", READ).await;
    assert_eq!(host["state"], "unbanned", "{host}");
    app.expect_escalation_state("198.51.100.0/24", "withdrawn")
        .await;
    drop(fnm);
    app.stop().await;
}

/// Community's gRPC API as the only source: FastNetMon bans a host (its notify script does
/// nothing here), `GetBanlist` shows it and the service adds it; FastNetMon stopped (API
/// unreachable) unbans nothing; FastNetMon restarted with an empty ban list (Community forgets
/// its bans without sending unban) unbans it after two polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn community_grpc_ban_list_is_followed_across_a_restart() {
    let app = spawn_app(|c| {
        c.networks.ours = vec!["198.51.100.0/24".parse().expect("net")];
        c.fastnetmon.community_grpc = Some("127.0.0.1:50052".into());
        c.fastnetmon.community_poll_interval = Duration::from_millis(500);
        c.fastnetmon.api_timeout = Duration::from_secs(2);
    })
    .await;
    let options = || FastnetmonOptions {
        networks: vec!["198.51.100.0/24".into()],
        notify_script: "/bin/true".into(),
        env: Vec::new(),
        influxdb: None,
        threshold_pps: 1000,
        ban_time: 3600,
        grpc_api: true,
    };
    let fnm = Fastnetmon::start(options());
    let flood = fnm.flood(
        Ipv4Addr::new(198, 51, 100, 6),
        20_000,
        Duration::from_secs(60),
    );
    let host = app
        .wait_for("/api/v1/hosts/198.51.100.6", Duration::from_secs(40), |h| {
            h["state"] == "banned"
        })
        .await;
    assert_eq!(
        host["state"],
        "banned",
        "{host}\nfastnetmon log:\n{}",
        fnm.log_tail()
    );
    assert_eq!(host["source"], "reconcile", "{host}");
    drop(flood);

    // FastNetMon gone: its API does not answer; that is not an empty ban list.
    drop(fnm);
    let r = app
        .wait_for("/readyz", Duration::from_secs(10), |r| {
            r["sources"]["fastnetmon_grpc"]["errors"].as_u64() >= Some(2)
        })
        .await;
    assert!(
        r["sources"]["fastnetmon_grpc"]["errors"].as_u64() >= Some(2),
        "{r}"
    );
    let (_, host) = app.get("/api/v1/hosts/198.51.100.6", READ).await;
    assert_eq!(host["state"], "banned", "{host}");

    // Back, with its bans forgotten: two polls without the host, then it is unbanned.
    let fnm = Fastnetmon::start(options());
    let host = app
        .wait_for("/api/v1/hosts/198.51.100.6", Duration::from_secs(30), |h| {
            h["state"] == "unbanned"
        })
        .await;
    assert_eq!(
        host["state"],
        "unbanned",
        "{host}\nfastnetmon log:\n{}",
        fnm.log_tail()
    );
    let (_, events) = app
        .get("/api/v1/events?kind=reconcile&ip=198.51.100.6", READ)
        .await;
    let messages: Vec<&str> = events["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["message"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("unban 198.51.100.6: absent from")),
        "{messages:?}"
    );
    drop(fnm);
    app.stop().await;
}
