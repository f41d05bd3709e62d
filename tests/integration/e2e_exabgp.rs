//! End to end through ExaBGP 4.2: a ban notification over threshold makes a real BIRD hold the
//! covering prefix with our community and next hop, announced by a real ExaBGP whose API process
//! is our bridge; the unban withdraws it after min_hold; routes that are not ours (ExaBGP's own
//! static routes) survive every step; a crashed and restarted ExaBGP gets our active routes
//! back; the bridge never outlives ExaBGP.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fnm_escalator::bgp::exabgp::ExabgpSpeaker;
use fnm_escalator::bgp::{Community, LargeCommunity, Route, Speaker};
use fnm_escalator::config::Backend;
use serde_json::json;

use crate::support::app::{ban, binary, spawn_app, unban, TestApp, NOTIFY, READ};
use crate::support::exabgp_lab::ExabgpLab;
use crate::support::lab::{has, BirdRoute};

const RECONCILE: Duration = Duration::from_secs(1);

fn route<'a>(routes: &'a [BirdRoute], prefix: &str) -> &'a BirdRoute {
    routes
        .iter()
        .find(|r| r.prefix.to_string() == prefix)
        .unwrap_or_else(|| panic!("{prefix} not at BIRD: {routes:?}"))
}

/// Routes in ExaBGP's own config: an operator's /24 and a FastNetMon-style /32 blackhole.
const NOT_OURS: &[&str] = &[
    "route 198.51.103.0/24 next-hop 192.0.2.9 community [65000:1]",
    "route 198.51.100.7/32 next-hop 192.0.2.1 community [65535:666]",
    "route 198.51.101.0/24 next-hop 192.0.2.9 community [65000:1]",
];

async fn service(socket: std::path::PathBuf) -> TestApp {
    spawn_app(move |c| {
        c.bgp.backend = Backend::Exabgp;
        c.bgp.exabgp_socket = socket;
        c.bgp.communities = vec!["65001:666".parse().expect("community")];
        c.bgp.large_communities = vec!["65001:2:666".parse().expect("large community")];
        c.bgp.next_hop_ipv4 = Some("192.0.2.1".parse().expect("ip"));
        c.bgp.next_hop_ipv6 = Some("100::1".parse().expect("ip"));
        c.bgp.reconcile_interval = RECONCILE;
        c.bgp.timeout = Duration::from_secs(2);
        c.bgp.retry_initial = Duration::from_millis(200);
        c.bgp.retry_max = Duration::from_secs(1);
        c.escalation.check_interval = Duration::from_millis(500);
        c.escalation.min_hold = Duration::from_secs(2);
        c.networks.ours = vec![
            "198.51.100.0/22".parse().expect("net"),
            "2001:db8::/32".parse().expect("net"),
        ];
    })
    .await
}

fn socket_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("fnm-exabgp-sock-")
        .tempdir()
        .expect("tempdir");
    let socket = dir.path().join("exabgp.sock");
    (dir, socket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_reaches_bird_through_exabgp_and_comes_back_after_a_crash() {
    let (_dir, socket) = socket_dir();
    let app = service(socket.clone()).await;
    let mut lab = ExabgpLab::start(&socket, NOT_OURS);
    let ready = app
        .wait_for("/readyz", Duration::from_secs(10), |v| {
            v["bgp"]["reachable"] == true && v["bgp"]["peers"][0]["state"] == "established"
        })
        .await;
    assert_eq!(ready["bgp"]["backend"], "exabgp", "{ready}");
    assert_eq!(
        ready["bgp"]["reachable"],
        true,
        "{ready}\n{}\n{}",
        lab.exabgp_conf(),
        lab.logs()
    );
    assert_eq!(ready["bgp"]["peers"][0]["state"], "established", "{ready}");

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
    assert_eq!(v6.kind, "blackhole");
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
        "the /32 touched: {routes:?}"
    );
    assert!(has(&routes, "2001:db8:5::/48"));
    app.expect_escalation_state("198.51.100.0/24", "withdrawn")
        .await;

    // ExaBGP crashes: its bridge goes with it (stdin closed), BIRD drops the routes.
    let bridge = lab.wait_bridge(Duration::from_secs(5));
    lab.kill_exabgp();
    assert!(
        ExabgpLab::wait_gone(bridge, Duration::from_secs(3)),
        "the bridge outlived ExaBGP\n{}",
        lab.logs()
    );
    let routes = lab.wait_for_routes(|r| r.is_empty(), Duration::from_secs(5));
    assert!(routes.is_empty(), "{routes:?}");
    // ExaBGP comes back empty: reconciliation announces what is active, and only that.
    let restarted = Instant::now();
    lab.start_exabgp();
    let routes = lab.wait_for_routes(
        |r| has(r, "2001:db8:5::/48"),
        RECONCILE + Duration::from_secs(5),
    );
    assert!(
        has(&routes, "2001:db8:5::/48"),
        "not re-announced within {:?}: {routes:?}\n{}",
        RECONCILE + Duration::from_secs(5),
        lab.logs()
    );
    eprintln!(
        "re-announced {:?} after ExaBGP was started again",
        restarted.elapsed()
    );
    assert!(!has(&routes, "198.51.100.0/24"), "{routes:?}");
    assert!(has(&routes, "198.51.103.0/24") && has(&routes, "198.51.100.7/32"));
    let (_, ev) = app.get("/api/v1/events?kind=reconcile", READ).await;
    assert!(
        ev["events"].as_array().is_some_and(|e| !e.is_empty()),
        "the re-announcement is in the audit log: {ev}"
    );

    // Unban after the restart: withdrawn through the new ExaBGP.
    app.post("/api/v1/notifications", NOTIFY, unban("2001:db8:5::7"))
        .await;
    let routes = lab.wait_for_routes(|r| !has(r, "2001:db8:5::/48"), Duration::from_secs(10));
    assert!(!has(&routes, "2001:db8:5::/48"), "{routes:?}");
    assert!(has(&routes, "198.51.103.0/24") && has(&routes, "198.51.100.7/32"));

    // ExaBGP stopped as a service manager does: the bridge does not linger either.
    let bridge = lab.wait_bridge(Duration::from_secs(5));
    lab.stop_exabgp();
    assert!(
        ExabgpLab::wait_gone(bridge, Duration::from_secs(3)),
        "the bridge outlived a stopped ExaBGP"
    );
    let ready = app
        .wait_for("/readyz", Duration::from_secs(5), |v| {
            v["bgp"]["reachable"] == false
        })
        .await;
    assert_eq!(ready["degraded"], json!(["bgp"]), "{ready}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_announces_over_a_route_exabgp_holds_for_someone_else() {
    let (_dir, socket) = socket_dir();
    let app = service(socket.clone()).await;
    let lab = ExabgpLab::start(&socket, NOT_OURS);
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
    assert_eq!(
        e["escalations"][0]["rule"],
        "foreign_route",
        "{e}\n{}",
        lab.logs()
    );
    let routes = lab.bird_routes();
    let r = route(&routes, "198.51.101.0/24");
    assert_eq!(
        r.communities,
        vec![Community::new(65000, 1)],
        "foreign route replaced"
    );
    app.stop().await;
}

/// The bridge as ExaBGP runs it, with the test playing ExaBGP on its stdin and stdout.
struct Bridge {
    child: std::process::Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Bridge {
    fn spawn(socket: &std::path::Path) -> Bridge {
        let mut child = Command::new(binary())
            .args(["exabgp-bridge", "--socket"])
            .arg(socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the bridge");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Bridge { child, stdout }
    }

    /// Answers the service's commands as ExaBGP with an empty RIB would, on a thread, until
    /// stdin or stdout closes; returns the commands seen.
    fn play_exabgp(mut self) -> (std::thread::JoinHandle<Vec<String>>, u32) {
        let pid = self.child.id();
        let mut stdin = self.child.stdin.take().expect("stdin");
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut line = String::new();
            while self.stdout.read_line(&mut line).is_ok_and(|n| n > 0) {
                seen.push(line.trim_end().to_string());
                line.clear();
                if writeln!(stdin, "done").is_err() {
                    break;
                }
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
            seen
        });
        (handle, pid)
    }
}

fn route_v4() -> Route {
    Route {
        prefix: "198.51.100.0/24".parse().expect("net"),
        next_hop: "192.0.2.1".parse().expect("ip"),
        communities: vec![Community::new(65001, 777)],
        large_communities: vec![],
    }
}

#[tokio::test]
async fn the_bridge_relays_and_reconnects_when_the_service_restarts() {
    let (_dir, socket) = socket_dir();
    let (exabgp, pid) = Bridge::spawn(&socket).play_exabgp();

    let speaker = ExabgpSpeaker::new(&socket, Duration::from_secs(5)).expect("speaker");
    speaker.announce(&route_v4()).await.expect("announce");
    // The service goes away and comes back on the same socket: the bridge finds it again.
    drop(speaker);
    let speaker = ExabgpSpeaker::new(&socket, Duration::from_secs(5)).expect("speaker again");
    let listed = speaker.list().await.expect("list");
    assert_eq!(listed, Some(vec![]), "a fake ExaBGP with an empty RIB");
    assert!(ExabgpLab::running(pid));
    drop(speaker);
    // Closing the bridge's stdin (ExaBGP gone) ends it; the thread does that on EOF of stdout.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let seen = exabgp.join().expect("fake exabgp");
    assert_eq!(
        seen,
        [
            "show adj-rib out extensive",
            "announce route 198.51.100.0/24 next-hop 192.0.2.1 community [65001:777]",
            "show adj-rib out extensive",
        ]
    );
}

#[test]
fn the_bridge_exits_when_exabgp_closes_its_stdin_and_on_sigterm() {
    let (_dir, socket) = socket_dir();
    // Nobody listens on the socket: the bridge keeps retrying, and still exits at once.
    for how in ["stdin", "sigterm"] {
        let mut bridge = Bridge::spawn(&socket);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            bridge.child.try_wait().expect("wait").is_none(),
            "{how}: exited early"
        );
        let started = Instant::now();
        match how {
            "stdin" => drop(bridge.child.stdin.take()),
            _ => {
                let _ = Command::new("kill")
                    .args(["-TERM", &bridge.child.id().to_string()])
                    .status();
            }
        }
        let status = loop {
            if let Some(status) = bridge.child.try_wait().expect("wait") {
                break Some(status);
            }
            if started.elapsed() > Duration::from_secs(3) {
                let _ = bridge.child.kill();
                let _ = bridge.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let status = status.unwrap_or_else(|| panic!("{how}: the bridge did not exit within 3 s"));
        assert!(status.success(), "{how}: {status}");
        // Nothing but commands ever goes to ExaBGP: stdout stays empty.
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut bridge.stdout, &mut out);
        assert_eq!(out, "", "{how}");
    }
}
