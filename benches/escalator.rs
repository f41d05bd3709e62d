//! The benchmark harness: fnm-escalator side by side with the published script, and against the
//! machine's own limits (see BENCHMARKS.md for the targets and the last recorded run).
//!
//! ```sh
//! cargo bench --bench escalator                      # every target, at the sizes BENCHMARKS.md names
//! FNM_BENCH_QUICK=1 cargo bench --bench escalator    # small numbers, about a minute
//! ```
//!
//! Knobs (environment): `FNM_BENCH_TARGETS=1,3,4` (which targets), `FNM_BENCH_N=1000,10000`
//! (convergence sizes: the script runs at the first only), `FNM_BENCH_TRIALS=200`,
//! `FNM_BENCH_ACTIVE=0` (/24s escalated before target 3's trials, so each trial's announcement
//! meets a full RIB), `FNM_BENCH_BANNED=0` (hosts banned below thresholds before target 3's
//! trials, in 10.128.0.0/10), `FNM_BENCH_BAN_RATE=0` (more of them per second during the
//! trials), `FNM_BENCH_CARPET=100000,2000` (without those two, target 3 runs a second time
//! beside that many hosts banned below thresholds and that many more a second; `0` skips it),
//! `FNM_BENCH_BURST=5000`, `FNM_BENCH_HOSTS=100000`, `FNM_BENCH_ESCALATIONS=1000`,
//! `FNM_BENCH_SECS=10` (each ingest phase), `FNM_BENCH_DISTINCT=0` (target 2's traffic shape:
//! its bans cycle over that many hosts, so that past the first round every one is a repeated
//! ban of a banned host, as FastNetMon's attack updates and HA pairs send; 0: every ban a new
//! host), `FNM_BENCH_API_CONCURRENCY=128` (the service's
//! `fastnetmon.api_concurrency` in target 1), `FNM_BENCH_BAN_LIST_MS=500` (its
//! `fastnetmon.ban_list_interval`; 0: the ban list only with each poll), `FNM_BENCH_PER24=1`
//! and `FNM_BENCH_HOT_EVERY=1` (target 1's shape: blackholed hosts per /24, and every how
//! many-th of them is over threshold; the others are blackholed below it), `FNM_BENCH_SCRIPT=0`
//! (skip the script's run), `FNM_BENCH_KEEP=DIR` (keep each service's log), `FNM_BENCH_LOG` (its
//! RUST_LOG), `FNM_BENCH_SERVICE=PATH` (another build of the service binary, to compare two
//! builds), `FNM_BENCH_ANCHORS=DIR` (the published script and its stand-in API; default
//! `../shared/anchors` next to the repository; without it the script column is skipped and the
//! Rust stand-in API is polled instead).
//!
//! Everything runs on loopback: a gobgpd + BIRD 2 lab (the integration tests' own), the real
//! `fnm-escalator` binary as a child process with its own database in a temp dir, and the load
//! generator in this process. Children are stopped by PID when dropped, also on panic.

#[allow(dead_code)]
#[path = "../tests/integration/support/fnm_api.rs"]
mod fnm_api;
#[allow(dead_code, unused_imports)]
#[path = "../tests/integration/support/lab.rs"]
mod lab;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fnm_escalator::bgp::Community;
use fnm_escalator::config::{Backend, Config, Role, Token};
use serde_json::{json, Value};

use lab::Lab;

const NOTIFY: &str = "bench-notify-token";
const ADMIN: &str = "bench-admin-token";
/// Crossing: 50 MB/s = 400 Mbit/s and 50 kpps against thresholds of 100 Mbit/s and 2000 pps.
const HOT_BYTES: u64 = 50_000_000;
const HOT_PACKETS: u64 = 50_000;
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(900);

// ---------------------------------------------------------------------------------------------
// Knobs and results

#[derive(Clone)]
struct Knobs {
    targets: Vec<u8>,
    n: Vec<usize>,
    trials: usize,
    /// Escalations already announced when target 3's trials start (FNM_BENCH_ACTIVE).
    active: usize,
    /// Hosts banned below thresholds when target 3's trials start (FNM_BENCH_BANNED): a
    /// carpet-bombing attack's many small victims, which the checker must look past.
    banned: usize,
    /// More such bans per second while target 3's trials run (FNM_BENCH_BAN_RATE): the attack
    /// still spreading.
    ban_rate: usize,
    /// Target 3's second run, beside a carpet bombing (FNM_BENCH_CARPET): hosts banned below
    /// thresholds before it, and more per second during it.
    carpet: Option<(usize, usize)>,
    burst: usize,
    hosts: usize,
    /// Target 2's bans cycle over this many hosts (FNM_BENCH_DISTINCT; 0: every ban a new one).
    distinct: usize,
    escalations: usize,
    secs: u64,
    anchors: Option<PathBuf>,
    /// FNM_BENCH_SCRIPT=0 skips the script's run (it takes minutes beyond a few thousand hosts).
    script: bool,
    /// `fastnetmon.api_concurrency` of the service in target 1 (FNM_BENCH_API_CONCURRENCY).
    api_concurrency: usize,
    /// `fastnetmon.ban_list_interval` of the service in target 1, in ms (FNM_BENCH_BAN_LIST_MS;
    /// 0: the ban list only with each poll).
    ban_list_ms: u64,
    /// Target 1's shape: blackholed hosts per /24 (FNM_BENCH_PER24, 1 to 248).
    per24: usize,
    /// Target 1's shape: host `i` is over threshold when `i % hot_every == 0`
    /// (FNM_BENCH_HOT_EVERY); the others are blackholed below thresholds.
    hot_every: usize,
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

impl Knobs {
    fn from_env() -> Knobs {
        let quick = std::env::var("FNM_BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
        let list = |name: &str, default: &str| -> Vec<String> {
            std::env::var(name)
                .unwrap_or_else(|_| default.to_string())
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let targets = list("FNM_BENCH_TARGETS", "1,2,3,4,5")
            .iter()
            .map(|s| s.parse().unwrap_or_else(|_| panic!("bad target {s}")))
            .collect();
        let n = list("FNM_BENCH_N", if quick { "200,2000" } else { "1000,10000" })
            .iter()
            .map(|s| s.parse().unwrap_or_else(|_| panic!("bad N {s}")))
            .collect();
        let anchors = match std::env::var_os("FNM_BENCH_ANCHORS") {
            Some(dir) => PathBuf::from(dir),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/anchors"),
        };
        let anchors = anchors
            .join("seed_escalation.py")
            .is_file()
            .then(|| anchors.canonicalize().unwrap_or(anchors));
        Knobs {
            targets,
            n,
            trials: env_usize("FNM_BENCH_TRIALS", if quick { 50 } else { 200 }),
            active: env_usize("FNM_BENCH_ACTIVE", 0),
            banned: env_usize("FNM_BENCH_BANNED", 0),
            ban_rate: env_usize("FNM_BENCH_BAN_RATE", 0),
            carpet: {
                let carpet = list(
                    "FNM_BENCH_CARPET",
                    if quick { "10000,500" } else { "100000,2000" },
                );
                let n = |i: usize| -> usize {
                    carpet.get(i).map_or(0, |s| {
                        s.parse()
                            .unwrap_or_else(|_| panic!("FNM_BENCH_CARPET: bad number {s}"))
                    })
                };
                (n(0) > 0).then(|| (n(0), n(1)))
            },
            burst: env_usize("FNM_BENCH_BURST", if quick { 1000 } else { 5000 }),
            hosts: env_usize("FNM_BENCH_HOSTS", if quick { 10_000 } else { 100_000 }),
            distinct: env_usize("FNM_BENCH_DISTINCT", 0),
            escalations: env_usize("FNM_BENCH_ESCALATIONS", if quick { 200 } else { 1000 }),
            secs: env_usize("FNM_BENCH_SECS", if quick { 3 } else { 10 }) as u64,
            anchors,
            api_concurrency: env_usize("FNM_BENCH_API_CONCURRENCY", 128),
            ban_list_ms: env_usize("FNM_BENCH_BAN_LIST_MS", 500) as u64,
            script: std::env::var("FNM_BENCH_SCRIPT").map_or(true, |v| v != "0"),
            per24: env_usize("FNM_BENCH_PER24", 1),
            hot_every: env_usize("FNM_BENCH_HOT_EVERY", 1),
        }
    }

    fn wants(&self, t: u8) -> bool {
        self.targets.contains(&t)
    }
}

struct Row {
    target: &'static str,
    metric: String,
    measured: String,
    goal: String,
    verdict: &'static str,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
}

impl Report {
    fn add(
        &mut self,
        target: &'static str,
        metric: impl Into<String>,
        measured: impl Into<String>,
        goal: impl Into<String>,
        ok: Option<bool>,
    ) {
        let row = Row {
            target,
            metric: metric.into(),
            measured: measured.into(),
            goal: goal.into(),
            verdict: match ok {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "-",
            },
        };
        println!(
            "  [{}] {}: {} (target {}) {}",
            row.target, row.metric, row.measured, row.goal, row.verdict
        );
        self.rows.push(row);
    }

    fn print(&self) {
        let w =
            |f: &dyn Fn(&Row) -> usize, min: usize| self.rows.iter().map(f).fold(min, usize::max);
        let (a, b, c, d) = (
            w(&|r| r.target.len(), 6),
            w(&|r| r.metric.len(), 6),
            w(&|r| r.measured.len(), 8),
            w(&|r| r.goal.len(), 6),
        );
        println!();
        println!(
            "| {:a$} | {:b$} | {:c$} | {:d$} | verdict |",
            "target", "metric", "measured", "target"
        );
        println!(
            "|-{}-|-{}-|-{}-|-{}-|---------|",
            "-".repeat(a),
            "-".repeat(b),
            "-".repeat(c),
            "-".repeat(d)
        );
        for r in &self.rows {
            println!(
                "| {:a$} | {:b$} | {:c$} | {:d$} | {:7} |",
                r.target, r.metric, r.measured, r.goal, r.verdict
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The service under test: the real binary, its own database and config in a temp dir

/// Clock ticks per second in /proc/PID/stat (USER_HZ on Linux).
const USER_HZ: f64 = 100.0;

/// utime + stime of a process (`self` for this one), in clock ticks.
fn cpu_ticks_of(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    stat_ticks(&stat).1
}

/// The command name and utime + stime, in clock ticks, of a `/proc/.../stat` line.
fn stat_ticks(stat: &str) -> (&str, u64) {
    // Fields after the command name (which may hold spaces) start at field 3.
    let (head, rest) = stat.rsplit_once(')').unwrap_or(("", ""));
    let name = head.split_once('(').map(|(_, n)| n).unwrap_or("?");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (name, n(11) + n(12))
}

/// utime + stime of each of a process's threads, in clock ticks, summed by thread name (the
/// runtime's workers share one).
fn thread_ticks_of(pid: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (name, ticks) = stat_ticks(&stat);
        *out.entry(name.to_string()).or_insert(0) += ticks;
    }
    out
}

/// This process's CPU (the load generator's), in clock ticks.
fn own_cpu_ticks() -> u64 {
    cpu_ticks_of("self")
}

struct Service {
    child: Option<Child>,
    url: String,
    dir: tempfile::TempDir,
}

impl Service {
    /// Starts `fnm-escalator serve` on a free loopback port with the bench's base config and
    /// `edit` applied, and waits (bounded) for `/healthz`.
    async fn start(http: &reqwest::Client, edit: impl FnOnce(&mut Config)) -> Service {
        let dir = tempfile::Builder::new()
            .prefix("fnm-bench-")
            .tempdir()
            .expect("create a temp dir for the service");
        let mut c = Config::default();
        c.server.database = dir.path().join("state.db").display().to_string();
        c.notify.spool_dir = Some(dir.path().join("spool"));
        c.auth.tokens = vec![
            Token {
                name: "fastnetmon".into(),
                token: NOTIFY.into(),
                role: Role::Notify,
            },
            Token {
                name: "noc".into(),
                token: ADMIN.into(),
                role: Role::Admin,
            },
        ];
        c.networks.ours = vec!["10.0.0.0/8".parse().expect("net")];
        c.escalation.max_active = 50_000;
        c.bgp.communities = vec![Community::new(65001, 777)];
        c.bgp.next_hop_ipv4 = Some(lab::BLACKHOLE_NH4.parse().expect("ip"));
        edit(&mut c);
        let addr = free_addr();
        c.server.listen = addr;
        if let Err(e) = c.validate() {
            panic!("bench config is invalid: {e}");
        }
        let config = dir.path().join("config.toml");
        std::fs::write(&config, toml::to_string(&c).expect("config to TOML"))
            .expect("write config");
        let log = std::fs::File::create(dir.path().join("service.log")).expect("service log");
        // Another build of the service, to compare two side by side under one harness.
        let binary = std::env::var_os("FNM_BENCH_SERVICE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_fnm-escalator")));
        let child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env(
                "RUST_LOG",
                std::env::var("FNM_BENCH_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start fnm-escalator serve");
        let svc = Service {
            child: Some(child),
            url: format!("http://{addr}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                if let Ok(r) = http.get(format!("{}/healthz", svc.url)).send().await {
                    if r.status().is_success() {
                        return svc;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "the service did not answer /healthz within 30 s; log: {}",
                svc.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("service.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// (VmRSS, VmHWM) in KiB.
    fn rss_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// utime + stime, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        cpu_ticks_of(&self.pid().to_string())
    }

    /// utime + stime by thread name, in clock ticks.
    fn thread_ticks(&self) -> BTreeMap<String, u64> {
        thread_ticks_of(&self.pid().to_string())
    }

    async fn sql_i64(&self, query: &str) -> i64 {
        svc_sql(&self.db(), query).await
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // FNM_BENCH_KEEP=DIR keeps each service's log (the temp dir goes).
        if let Some(keep) = std::env::var_os("FNM_BENCH_KEEP") {
            static SEQ: AtomicUsize = AtomicUsize::new(0);
            let to = Path::new(&keep).join(format!(
                "service-{}.log",
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::create_dir_all(&keep);
            let _ = std::fs::copy(self.dir.path().join("service.log"), &to);
        }
    }
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr")
}

// ---------------------------------------------------------------------------------------------
// The published script's stand-in API (Python), or the Rust one when the anchors are absent

struct PyMock {
    child: Child,
    url: String,
}

impl PyMock {
    fn start(anchors: &Path) -> PyMock {
        let addr = free_addr();
        let child = Command::new("python3")
            .arg(anchors.join("mock_fnm_api.py"))
            .args([&addr.port().to_string(), "admin", "secret"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mock_fnm_api.py");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            assert!(Instant::now() < deadline, "mock_fnm_api.py did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        PyMock {
            child,
            url: format!("http://{addr}"),
        }
    }
}

impl Drop for PyMock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Api {
    Py(PyMock),
    /// The Rust stand-in, and the hosts it lists now (its state is set host by host).
    Rust(fnm_api::FnmApi, std::sync::Mutex<Vec<String>>),
}

impl Api {
    fn url(&self) -> &str {
        match self {
            Api::Py(m) => &m.url,
            Api::Rust(m, _) => &m.url,
        }
    }

    fn credentials(&self) -> (&'static str, &'static str) {
        match self {
            Api::Py(_) => ("admin", "secret"),
            Api::Rust(..) => (fnm_api::USER, fnm_api::PASSWORD),
        }
    }

    /// Replaces the ban list with `hosts`, each over threshold.
    async fn set(&self, http: &reqwest::Client, hosts: &[Ipv4Addr]) {
        let hosts: Vec<(Ipv4Addr, bool)> = hosts.iter().map(|&ip| (ip, true)).collect();
        self.set_shaped(http, &hosts).await
    }

    /// Replaces the ban list with `hosts`: each blackholed, over thresholds when its flag is
    /// set, below them (1 Mbit/s, 10 pps) otherwise.
    async fn set_shaped(&self, http: &reqwest::Client, hosts: &[(Ipv4Addr, bool)]) {
        let counters = |hot: bool| {
            if hot {
                (HOT_BYTES, HOT_PACKETS)
            } else {
                (125_000, 10)
            }
        };
        match self {
            Api::Py(m) => {
                let state: serde_json::Map<String, Value> = hosts
                    .iter()
                    .map(|&(ip, hot)| {
                        let (bytes, packets) = counters(hot);
                        (
                            ip.to_string(),
                            json!({"in_bytes": bytes, "in_packets": packets}),
                        )
                    })
                    .collect();
                let r = http
                    .put(format!("{}/_mock/state", m.url))
                    .json(&json!({ "hosts": state }))
                    .send()
                    .await
                    .expect("PUT /_mock/state");
                assert!(r.status().is_success(), "PUT /_mock/state: {}", r.status());
            }
            Api::Rust(m, listed) => {
                let mut listed = listed.lock().expect("the listed hosts");
                for ip in listed.drain(..) {
                    m.unban(&ip);
                }
                for &(ip, hot) in hosts {
                    let ip = ip.to_string();
                    let (bytes, packets) = counters(hot);
                    m.set_counters(&ip, fnm_api::Counters::incoming(bytes, packets));
                    m.ban(&ip);
                    listed.push(ip);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the results: gobgpd's RIB (CLI summary) and BIRD's (its control socket, kept open)

fn gobgp_ipv4_count(lab: &Lab) -> usize {
    let out = lab.gobgp_cli(&["global", "rib", "summary", "-a", "ipv4"]);
    out.split("Destination:")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn clear_gobgp(lab: &Lab, bird: &mut BirdCtl) {
    lab.gobgp_cli(&["global", "rib", "-a", "ipv4", "del", "all"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while bird.gobgp_routes() > 0 || gobgp_ipv4_count(lab) > 0 {
        assert!(
            Instant::now() < deadline,
            "routes did not leave BIRD within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client of BIRD's control socket, as birdc is, without a process per question.
struct BirdCtl {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl BirdCtl {
    fn connect(path: &Path) -> BirdCtl {
        let stream = UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("connect to BIRD at {}: {e}", path.display()));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("socket timeout");
        let writer = stream.try_clone().expect("clone socket");
        let mut ctl = BirdCtl {
            reader: BufReader::new(stream),
            writer,
        };
        ctl.read_reply(); // "0001 BIRD 2.x ready."
        ctl
    }

    /// One reply: lines until one whose 4-digit code is followed by a space.
    fn read_reply(&mut self) -> String {
        let mut out = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read from BIRD");
            assert!(n > 0, "BIRD closed its control socket");
            out.push_str(&line);
            let b = line.as_bytes();
            if b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b' ' {
                return out;
            }
        }
    }

    fn cmd(&mut self, cmd: &str) -> String {
        self.writer
            .write_all(format!("{cmd}\n").as_bytes())
            .expect("write to BIRD");
        self.read_reply()
    }

    fn has(&mut self, prefix: &str) -> bool {
        let out = self.cmd(&format!("show route {prefix} protocol gobgp"));
        out.contains(prefix)
    }

    /// Routes BIRD holds from gobgpd (`N of M routes` lines, summed over tables).
    fn gobgp_routes(&mut self) -> usize {
        let out = self.cmd("show route protocol gobgp count");
        out.lines()
            .filter_map(|l| {
                let l = l.get(5..).unwrap_or("");
                let (n, rest) = l.trim().split_once(' ')?;
                rest.starts_with("of ").then(|| n.parse::<usize>().ok())?
            })
            .sum()
    }
}

// ---------------------------------------------------------------------------------------------
// Load generation

fn ip(a: u8, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, a + (i / 256) as u8, (i % 256) as u8, 7)
}

/// Target 2's `i`-th host, below thresholds in 10.128.0.0/10 (one per request), so that ingest
/// is measured alone; also the hosts of its floor's rows, and target 3's background bans.
fn cold(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + i as u32)
}

/// A ban notification in FastNetMon Advanced's JSON, over thresholds or not.
fn ban(ip: Ipv4Addr, hot: bool) -> String {
    let (bytes, pps) = if hot {
        (HOT_BYTES, HOT_PACKETS)
    } else {
        (1_000, 10)
    };
    json!({
        "ip": ip.to_string(), "action": "ban", "alert_scope": "host",
        "attack_details": { "total_incoming_traffic": bytes, "total_incoming_pps": pps }
    })
    .to_string()
}

/// A ban of `ip` posted to the notifications endpoint at `url`, as FastNetMon's web callback
/// would.
fn post_ban(http: &reqwest::Client, url: &str, ip: Ipv4Addr, hot: bool) -> reqwest::RequestBuilder {
    http.post(url)
        .bearer_auth(NOTIFY)
        .header("content-type", "application/json")
        .body(ban(ip, hot))
}

/// Target 2's request: a cold host's ban, formatted as any client would.
fn cold_ban_request(addr: SocketAddr, ip: Ipv4Addr) -> Vec<u8> {
    let body = ban(ip, false);
    format!(
        "POST /api/v1/notifications HTTP/1.1\r\nhost: {addr}\r\n\
         authorization: Bearer {NOTIFY}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The same bytes as `cold_ban_request`, from a template rendered once: target 2 sets the
/// service's rate for notifications beside its rate for `GET /healthz`, on the same two cores
/// as this load generator, so what the generator spends building a request (a JSON document
/// through `serde_json::Value`, then the request around it: about 3 us, more than it spends on
/// a /healthz request in all) is taken from the service. Checked equal before the load starts.
struct ColdBan {
    /// The request up to `content-length: `, the body before the address, the body after it.
    head: Vec<u8>,
    before: Vec<u8>,
    after: Vec<u8>,
}

impl ColdBan {
    /// Where the address goes in the body: found by rendering one with a marker address.
    fn new(addr: SocketAddr) -> ColdBan {
        let marker = Ipv4Addr::new(203, 0, 113, 254);
        let body = ban(marker, false);
        let (before, after) = body
            .split_once(&marker.to_string())
            .expect("the ban carries its address");
        let head = format!(
            "POST /api/v1/notifications HTTP/1.1\r\nhost: {addr}\r\n\
             authorization: Bearer {NOTIFY}\r\ncontent-type: application/json\r\n\
             content-length: "
        );
        ColdBan {
            head: head.into_bytes(),
            before: before.as_bytes().to_vec(),
            after: after.as_bytes().to_vec(),
        }
    }

    fn render(&self, ip: Ipv4Addr) -> Vec<u8> {
        let mut ip_text = [0u8; 15];
        let ip_len = {
            let mut w = &mut ip_text[..];
            write!(w, "{ip}").expect("an IPv4 address fits in 15 bytes");
            15 - w.len()
        };
        let body_len = self.before.len() + ip_len + self.after.len();
        let mut out = Vec::with_capacity(self.head.len() + 8 + body_len);
        out.extend_from_slice(&self.head);
        write!(out, "{body_len}\r\n\r\n").expect("writing to a Vec");
        out.extend_from_slice(&self.before);
        out.extend_from_slice(&ip_text[..ip_len]);
        out.extend_from_slice(&self.after);
        out
    }
}

struct Load {
    ok: usize,
    failed: usize,
    secs: f64,
    lat_us: Vec<u64>,
}

impl Load {
    /// Adds up the clients' (successes, failures, latencies) once they have all finished.
    async fn gather(
        mut tasks: tokio::task::JoinSet<(usize, usize, Vec<u64>)>,
        started: Instant,
    ) -> Load {
        let mut out = Load {
            ok: 0,
            failed: 0,
            secs: 0.0,
            lat_us: Vec::new(),
        };
        while let Some(r) = tasks.join_next().await {
            let (ok, failed, lat) = r.expect("load task");
            out.ok += ok;
            out.failed += failed;
            out.lat_us.extend(lat);
        }
        out.secs = started.elapsed().as_secs_f64();
        out.lat_us.sort_unstable();
        out
    }

    fn rate(&self) -> f64 {
        self.ok as f64 / self.secs
    }
}

/// Builds request number `i`.
type MakeRequest = Arc<dyn Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Send + Sync>;

/// `clients` concurrent clients on keep-alive connections, each sending requests made by `req`
/// (given a global sequence number) back to back until `duration` passes or `count` are sent.
async fn load(
    http: &reqwest::Client,
    clients: usize,
    duration: Duration,
    count: usize,
    req: MakeRequest,
) -> Load {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (http, next, req) = (http.clone(), next.clone(), req.clone());
        tasks.spawn(async move {
            let (mut ok, mut failed, mut lat) = (0usize, 0usize, Vec::new());
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let t = Instant::now();
                match req(&http, i).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        ok += 1;
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    Ok(r) => {
                        if failed == 0 {
                            eprintln!("  request {i}: {}", r.status());
                        }
                        failed += 1;
                    }
                    Err(e) => {
                        if failed == 0 {
                            eprintln!("  request {i}: {e}");
                        }
                        failed += 1;
                    }
                }
            }
            (ok, failed, lat)
        });
    }
    Load::gather(tasks, started).await
}

/// Builds the bytes of request number `i` (a whole HTTP/1.1 request).
type MakeRaw = Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync>;

/// As `load`, with a minimal HTTP/1.1 client (one keep-alive connection per client, Nagle
/// off, the request written whole, the response read by its Content-Length): the ingest target
/// compares two of the server's rates, and a general-purpose client's own cost per request
/// (reqwest's is several times this one's) would be most of what is measured on two cores.
async fn raw_load(
    addr: SocketAddr,
    clients: usize,
    duration: Duration,
    count: usize,
    req: MakeRaw,
) -> Load {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (next, req) = (next.clone(), req.clone());
        tasks.spawn(async move {
            let (mut ok, mut failed, mut lat) = (0usize, 0usize, Vec::new());
            let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
            conn.set_nodelay(true).expect("nodelay");
            let mut buf = vec![0u8; 16 * 1024];
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let t = Instant::now();
                conn.write_all(&req(i)).await.expect("write request");
                // Read the head, then the rest of the body.
                let mut have = 0;
                let (status, total) = loop {
                    let n = conn.read(&mut buf[have..]).await.expect("read response");
                    assert!(n > 0, "the service closed the connection");
                    have += n;
                    if let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = std::str::from_utf8(&buf[..end]).expect("response head");
                        let status: u16 = head
                            .get(9..12)
                            .and_then(|s| s.parse().ok())
                            .expect("status line");
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .expect("content-length");
                        break (status, end + 4 + length);
                    }
                };
                while have < total {
                    let n = conn.read(&mut buf[have..]).await.expect("read body");
                    assert!(n > 0, "the service closed the connection");
                    have += n;
                }
                if (200..300).contains(&status) {
                    ok += 1;
                    lat.push(t.elapsed().as_micros() as u64);
                } else {
                    if failed == 0 {
                        eprintln!("  request {i}: {status}");
                    }
                    failed += 1;
                }
            }
            (ok, failed, lat)
        });
    }
    Load::gather(tasks, started).await
}

/// Sends ban notifications for `hosts` (from `clients` connections).
async fn ban_all(http: &reqwest::Client, svc: &Service, hosts: Vec<Ipv4Addr>, hot: bool) -> Load {
    let url = format!("{}/api/v1/notifications", svc.url);
    let n = hosts.len();
    let hosts = Arc::new(hosts);
    load(
        http,
        32,
        Duration::from_secs(600),
        n,
        Arc::new(move |c, i| post_ban(c, &url, hosts[i], hot)),
    )
    .await
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// Target 1: convergence against the published script

async fn convergence(
    k: &Knobs,
    http: &reqwest::Client,
    lab: &Lab,
    bird: &mut BirdCtl,
    report: &mut Report,
) {
    let api = match &k.anchors {
        Some(dir) => Api::Py(PyMock::start(dir)),
        None => {
            println!(
                "  the anchors (seed_escalation.py, mock_fnm_api.py) are not at FNM_BENCH_ANCHORS or \
                 ../shared/anchors: the script column is skipped, the service polls the Rust stand-in API"
            );
            Api::Rust(fnm_api::FnmApi::start().await, Default::default())
        }
    };
    let what = match &api {
        Api::Py(_) => "mock_fnm_api.py",
        Api::Rust(..) => "the Rust stand-in API",
    };
    println!("  stand-in Advanced API: {what} at {}", api.url());
    // The stand-in's own ceiling for the requests the service makes most: what bounds a poll.
    {
        let hosts: Vec<Ipv4Addr> = (0..1000).map(|i| ip(0, i)).collect();
        api.set(http, &hosts).await;
        let (user, password) = api.credentials();
        let base = api.url().to_string();
        let hosts = Arc::new(hosts);
        let l = load(
            http,
            k.api_concurrency,
            Duration::from_secs(3),
            usize::MAX,
            Arc::new(move |c, i| {
                c.get(format!(
                    "{base}/single_host_counters/{}",
                    hosts[i % hosts.len()]
                ))
                .basic_auth(user, Some(password))
            }),
        )
        .await;
        api.set(http, &[]).await;
        report.add(
            "1",
            format!(
                "{what}: GET /single_host_counters, {} keep-alive clients",
                k.api_concurrency
            ),
            format!("{:.0} req/s (p50 {})", l.rate(), ms(pct(&l.lat_us, 50.0))),
            "-",
            None,
        );
    }
    let mut own_first: Option<Duration> = None;
    assert!(
        (1..=248).contains(&k.per24) && k.hot_every >= 1,
        "FNM_BENCH_PER24 is 1 to 248 and FNM_BENCH_HOT_EVERY at least 1"
    );
    // The shape, named in each row when it is not the default (one host per /24, all hot).
    let shape = match (k.per24, k.hot_every) {
        (1, 1) => String::new(),
        (1, h) => format!(", 1 in {h} over threshold"),
        (p, 1) => format!(", {p} hosts per /24"),
        (p, h) => format!(", {p} hosts per /24, 1 in {h} over threshold"),
    };
    for (round, &n) in k.n.iter().enumerate() {
        let hosts: Vec<(Ipv4Addr, bool)> = (0..n)
            .map(|i| {
                let net = i / k.per24;
                let addr = Ipv4Addr::new(
                    10,
                    (net / 256) as u8,
                    (net % 256) as u8,
                    7 + (i % k.per24) as u8,
                );
                (addr, i % k.hot_every == 0)
            })
            .collect();
        assert!(
            n.div_ceil(k.per24) <= 200 * 256,
            "N / FNM_BENCH_PER24 at most 51,200 (/24s in 10.0.0.0/8)"
        );
        // What both must announce: the /24 of every host over threshold, and nothing else.
        let want = {
            let mut nets: Vec<usize> = (0..n)
                .filter(|i| i % k.hot_every == 0)
                .map(|i| i / k.per24)
                .collect();
            nets.dedup();
            nets.len()
        };
        // The script, once, at the first N only.
        let mut script_time = None;
        if let (0, Api::Py(_), Some(dir), true) = (round, &api, &k.anchors, k.script) {
            clear_gobgp(lab, bird);
            api.set(http, &[]).await;
            let t0 = Instant::now();
            api.set_shaped(http, &hosts).await;
            let (user, password) = api.credentials();
            let port = lab.gobgp_api().rsplit(':').next().unwrap_or("").to_string();
            let log = tempfile::NamedTempFile::new().expect("temp file");
            let mut child = Command::new("python3")
                .arg(dir.join("seed_escalation.py"))
                .env("SEED_API", api.url())
                .env("SEED_GOBGP_PORT", &port)
                .env("SEED_USER", user)
                .env("SEED_PASSWORD", password)
                .env("SEED_COMMUNITY", "65001:777")
                .env("SEED_NEXT_HOP", lab::BLACKHOLE_NH4)
                .env("SEED_LOG", log.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("run seed_escalation.py");
            let status = loop {
                if let Some(s) = child.try_wait().expect("wait for the script") {
                    break s;
                }
                if t0.elapsed() > SCRIPT_TIMEOUT {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("seed_escalation.py ran longer than {SCRIPT_TIMEOUT:?}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let took = t0.elapsed();
            let got = gobgp_ipv4_count(lab);
            println!(
                "  script, N={n}{shape}: {} ({status}), {got} /24s in gobgpd",
                secs(took)
            );
            assert_eq!(got, want, "the script left {got} of {want} /24s in gobgpd");
            script_time = Some(took);
        }

        // The service, polling the same API, announcing through the same gobgpd.
        clear_gobgp(lab, bird);
        api.set(http, &[]).await;
        let (user, password) = api.credentials();
        let (url, gobgp) = (api.url().to_string(), lab.gobgp_api());
        let api_concurrency = k.api_concurrency;
        let ban_list_interval = Duration::from_millis(k.ban_list_ms);
        let svc = Service::start(http, |c| {
            c.bgp.backend = Backend::Gobgp;
            c.bgp.gobgp_api = gobgp;
            c.fastnetmon.api_url = Some(url);
            c.fastnetmon.api_user = user.into();
            c.fastnetmon.api_password = password.into();
            c.fastnetmon.poll_interval = Duration::from_secs(1);
            c.fastnetmon.api_timeout = Duration::from_millis(900);
            c.fastnetmon.api_concurrency = api_concurrency;
            c.fastnetmon.ban_list_interval = ban_list_interval;
        })
        .await;
        // Wait for a first (empty) poll, so the clock does not include start-up.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ready: Value = http
                .get(format!("{}/readyz", svc.url))
                .send()
                .await
                .expect("readyz")
                .json()
                .await
                .unwrap_or(Value::Null);
            if ready["sources"]["fastnetmon_api"]["polls"].as_u64() >= Some(1) {
                break;
            }
            assert!(Instant::now() < deadline, "no poll within 15 s: {ready}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let timeout = Duration::from_secs(60 + n as u64 / 50);
        let t0 = Instant::now();
        api.set_shaped(http, &hosts).await;
        let mut got = 0;
        while t0.elapsed() < timeout {
            got = gobgp_ipv4_count(lab);
            if got >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = t0.elapsed();
        // A /24 with only hosts below thresholds must stay out: look again after a poll.
        if got >= want {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            got = gobgp_ipv4_count(lab);
        }
        println!(
            "  service, N={n}{shape}: {} ({got} of {want} /24s in gobgpd)",
            secs(took)
        );
        if got != want {
            println!("  service log tail:\n{}", svc.log_tail());
        }
        // Where the time went, from the service's own audit log: the first ban it recorded
        // (the poll that found the hosts) to its last confirmed announcement. The rest of the
        // measured time is the wait for that poll (the clock starts just after one).
        let found = svc
            .sql_i64("SELECT coalesce(min(at), 0) FROM events WHERE kind = 'reconcile'")
            .await;
        let announced = svc
            .sql_i64("SELECT coalesce(max(at), 0) FROM events WHERE kind = 'announced'")
            .await;
        drop(svc);
        let converged = got == want;
        let label = format!("N={n}{shape}: service, hosts in API -> all {want} /24s in gobgpd");
        match round {
            0 => {
                own_first = converged.then_some(took);
                match script_time {
                    Some(script) => {
                        let ratio = script.as_secs_f64() / took.as_secs_f64();
                        report.add(
                            "1",
                            format!("N={n}{shape}: seed_escalation.py, one run"),
                            secs(script),
                            "-",
                            None,
                        );
                        report.add("1", label, secs(took), "-", Some(converged));
                        report.add(
                            "1",
                            format!("N={n}{shape}: speed-up over the script"),
                            format!("{ratio:.1}x"),
                            ">= 25x",
                            Some(converged && ratio >= 25.0),
                        );
                    }
                    None => report.add("1", label, secs(took), "script not run", Some(converged)),
                }
            }
            _ => {
                let base = own_first.map(|b| took.as_secs_f64() / b.as_secs_f64());
                report.add(
                    "1",
                    label,
                    format!(
                        "{} ({})",
                        secs(took),
                        base.map_or("no base".into(), |r| format!("{r:.1}x the first N"))
                    ),
                    "<= 10x the first N",
                    Some(converged && base.is_some_and(|r| r <= 10.0)),
                );
            }
        }
        if converged && announced >= found && found > 0 {
            report.add(
                "1",
                format!("N={n}{shape}: service, poll that found the hosts -> last announced"),
                secs(Duration::from_millis((announced - found) as u64)),
                "-",
                None,
            );
        }
    }
    clear_gobgp(lab, bird);
}

// ---------------------------------------------------------------------------------------------
// Target 3: reaction time, crossing notification accepted -> route at BIRD

async fn reaction(
    k: &Knobs,
    http: &reqwest::Client,
    lab: &Lab,
    bird: &mut BirdCtl,
    report: &mut Report,
) {
    clear_gobgp(lab, bird);
    let gobgp = lab.gobgp_api();
    let svc = Service::start(http, |c| {
        c.bgp.backend = Backend::Gobgp;
        c.bgp.gobgp_api = gobgp;
    })
    .await;
    let url = format!("{}/api/v1/notifications", svc.url);
    // A RIB that is already full: FNM_BENCH_ACTIVE /24s escalated (from 10.120.0.0/24 on, away
    // from the trials' 10.100.x.0/24s) and at BIRD before the first trial.
    if k.active > 0 {
        assert!(k.active <= 136 * 256, "FNM_BENCH_ACTIVE at most 34,816");
        let hosts: Vec<Ipv4Addr> = (0..k.active).map(|i| ip(120, i)).collect();
        let banned = ban_all(http, &svc, hosts, true).await;
        assert_eq!(banned.ok, k.active, "not every ban was accepted");
        let deadline = Instant::now() + Duration::from_secs(60 + k.active as u64 / 100);
        while bird.gobgp_routes() < k.active {
            assert!(
                Instant::now() < deadline,
                "the {} background escalations did not reach BIRD",
                k.active
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("  {} routes at BIRD before the trials", k.active);
    }
    // Many small victims (below thresholds, in 10.128.0.0/10, away from the other hosts): what
    // each decision has to look past under carpet bombing.
    if k.banned > 0 {
        let hosts: Vec<Ipv4Addr> = (0..k.banned).map(cold).collect();
        let banned = ban_all(http, &svc, hosts, false).await;
        assert_eq!(banned.ok, k.banned, "not every background ban was accepted");
        println!(
            "  {} hosts banned below thresholds before the trials",
            k.banned
        );
    }
    // The attack still spreading: more small victims banned while the trials run, in ticks of
    // 10 ms, until the trials end (and at most a million).
    let stop = Arc::new(AtomicBool::new(false));
    let background = (k.ban_rate > 0).then(|| {
        let (http, url, stop) = (http.clone(), url.clone(), stop.clone());
        let (first, per_tick) = (k.banned, k.ban_rate.div_ceil(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let (started, mut sent, mut failed) = (Instant::now(), 0usize, 0usize);
            while !stop.load(Ordering::Relaxed) && sent < 1_000_000 {
                tick.tick().await;
                let bans = (0..per_tick)
                    .map(|j| post_ban(&http, &url, cold(first + sent + j), false).send());
                for r in futures_util::future::join_all(bans).await {
                    if !r.is_ok_and(|r| r.status().is_success()) {
                        failed += 1;
                    }
                }
                sent += per_tick;
            }
            (sent, failed, started.elapsed())
        })
    });
    let (mut from_accept, mut from_send) = (Vec::new(), Vec::new());
    let mut missed = 0;
    for i in 0..k.trials {
        let host = ip(100, i);
        let prefix = format!("{}/24", Ipv4Addr::from(u32::from(host) & 0xffff_ff00));
        let sent = Instant::now();
        let r = post_ban(http, &url, host, true)
            .send()
            .await
            .expect("POST notification");
        let accepted = Instant::now();
        assert!(r.status().is_success(), "notification: {}", r.status());
        let deadline = accepted + Duration::from_secs(5);
        loop {
            if bird.has(&prefix) {
                let seen = Instant::now();
                from_accept.push((seen - accepted).as_micros() as u64);
                from_send.push((seen - sent).as_micros() as u64);
                break;
            }
            if Instant::now() > deadline {
                missed += 1;
                from_accept.push(5_000_000);
                from_send.push(5_000_000);
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let background = match background {
        Some(task) => Some(task.await.expect("the background bans")),
        None => None,
    };
    from_accept.sort_unstable();
    from_send.sort_unstable();
    let (p50, p99) = (pct(&from_accept, 50.0), pct(&from_accept, 99.0));
    let mut label = format!("{} trials", k.trials);
    if k.active > 0 {
        label += &format!(", {} routes already announced", k.active);
    }
    if k.banned > 0 {
        label += &format!(", {} hosts banned below thresholds", k.banned);
    }
    if k.ban_rate > 0 {
        label += &format!(", {}/s more", k.ban_rate);
    }
    report.add(
        "3",
        format!("{label}: p50 notification accepted -> route at BIRD"),
        ms(p50),
        "<= 50 ms",
        Some(p50 <= 50_000),
    );
    report.add(
        "3",
        format!("{label}: p99 notification accepted -> route at BIRD"),
        format!(
            "{} (max {}, {missed} over 5 s)",
            ms(p99),
            ms(*from_accept.last().unwrap_or(&0))
        ),
        "<= 250 ms",
        Some(p99 <= 250_000 && missed == 0),
    );
    report.add(
        "3",
        format!("{label}: p50 / p99 from the request sent"),
        format!(
            "{} / {}",
            ms(pct(&from_send, 50.0)),
            ms(pct(&from_send, 99.0))
        ),
        "-",
        None,
    );
    if let Some((sent, failed, took)) = background {
        report.add(
            "3",
            format!("{label}: bans during the trials"),
            format!(
                "{sent} in {} = {:.0}/s, {failed} failed",
                secs(took),
                sent as f64 / took.as_secs_f64()
            ),
            "-",
            Some(failed == 0),
        );
    }
    drop(svc);
    clear_gobgp(lab, bird);
}

// ---------------------------------------------------------------------------------------------
// Target 4: announce throughput, a burst of escalations decided at once -> BIRD

async fn burst(
    k: &Knobs,
    http: &reqwest::Client,
    lab: &Lab,
    bird: &mut BirdCtl,
    report: &mut Report,
) {
    clear_gobgp(lab, bird);
    let gobgp = lab.gobgp_api();
    let svc = Service::start(http, |c| {
        c.bgp.backend = Backend::Gobgp;
        c.bgp.gobgp_api = gobgp;
    })
    .await;
    assert!(k.burst <= 100 * 256, "burst at most 25,600");
    let hosts: Vec<Ipv4Addr> = (0..k.burst).map(|i| ip(120, i)).collect();
    // Banned below thresholds first: nothing to escalate yet.
    let banned = ban_all(http, &svc, hosts.clone(), false).await;
    assert_eq!(banned.ok, k.burst, "not every ban was accepted");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Then one InfluxDB push in which every one of them crosses: one decision, k.burst prefixes.
    let body: String = hosts
        .iter()
        .map(|h| {
            format!(
                "hosts_traffic,host={h} bits_incoming={},packets_incoming={HOT_PACKETS}\n",
                HOT_BYTES * 8
            )
        })
        .collect();
    let sent = Instant::now();
    let r = http
        .post(format!(
            "{}/write?db=fastnetmon&u=fastnetmon&p={NOTIFY}",
            svc.url
        ))
        .body(body)
        .send()
        .await
        .expect("POST /write");
    let accepted = Instant::now();
    assert!(r.status().is_success(), "/write: {}", r.status());
    let (mut at_gobgp, mut at_bird) = (None, None);
    let deadline = accepted + Duration::from_secs(120);
    while Instant::now() < deadline && at_bird.is_none() {
        if at_gobgp.is_none() && gobgp_ipv4_count(lab) >= k.burst {
            at_gobgp = Some(accepted.elapsed());
        }
        if bird.gobgp_routes() >= k.burst {
            at_bird = Some(accepted.elapsed());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let at_gobgp = at_gobgp.or(at_bird);
    let n = k.burst;
    report.add(
        "4",
        format!("{n} escalations, /write accepted -> all in gobgpd"),
        at_gobgp.map_or("not reached".into(), secs),
        "-",
        None,
    );
    report.add(
        "4",
        format!("{n} escalations, /write accepted -> all at BIRD"),
        match at_bird {
            Some(d) => format!(
                "{} ({:.0} routes/s; /write took {})",
                secs(d),
                n as f64 / d.as_secs_f64(),
                ms((accepted - sent).as_micros() as u64)
            ),
            None => format!("{} of {n} after 120 s", bird.gobgp_routes()),
        },
        "<= 5 s",
        Some(at_bird.is_some_and(|d| d <= Duration::from_secs(5))),
    );
    drop(svc);
    clear_gobgp(lab, bird);
}

// ---------------------------------------------------------------------------------------------
// Targets 2 and 5: ingest against the HTTP ceiling, then the footprint of a loaded service

/// Busy and total jiffies of all CPUs, from /proc/stat.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // idle and iowait
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Waits (at most `max`) until the machine is at least 90% idle over two 250 ms windows in a
/// row. Returns the wait and the idle share of the last window.
fn wait_quiet(max: Duration) -> (Duration, f64) {
    let started = Instant::now();
    let mut quiet = 0;
    let mut idle = 0.0;
    let Some(mut last) = cpu_jiffies() else {
        return (Duration::ZERO, 0.0);
    };
    while quiet < 2 && started.elapsed() < max {
        std::thread::sleep(Duration::from_millis(250));
        let Some(now) = cpu_jiffies() else { break };
        let (busy, total) = (now.0 - last.0, now.1 - last.1);
        idle = 1.0 - busy as f64 / total.max(1) as f64;
        quiet = if idle >= 0.9 { quiet + 1 } else { 0 };
        last = now;
    }
    (started.elapsed(), idle)
}

/// Records the bench's bans through `Store::record_notification` from `callers` concurrent
/// tasks for `duration`, on a fresh database: the rate of the storage path alone (its
/// recorder groups what arrives together, as under HTTP load). Returns the rate and a note.
async fn recorder_alone(callers: usize, duration: Duration) -> (f64, String) {
    use fnm_escalator::store::{Incoming, Store};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("alone.db");
    let store = Store::open(path.to_str().expect("path"))
        .await
        .expect("open a store");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (store, next) = (store.clone(), next.clone());
        tasks.spawn(async move {
            let mut done = 0usize;
            while started.elapsed() < duration {
                let i = next.fetch_add(1, Ordering::Relaxed);
                // The bench's cold hosts, in 10.64.0.0/10 (any 10/8 address would do).
                let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 0)) + i as u32);
                let body = ban(ip, false);
                let now = fnm_escalator::clock::now_ms();
                let incoming = Incoming {
                    notification: fnm_escalator::fastnetmon::notification::parse_json(
                        body.as_bytes(),
                    )
                    .expect("the bench's ban parses"),
                    observed_at: now,
                    received_at: now,
                    idempotency_key: None,
                    source: "web_callback".into(),
                    actor: "bench".into(),
                    payload: body,
                };
                store.record_notification(incoming).await.expect("recorded");
                done += 1;
            }
            done
        });
    }
    let mut done = 0;
    while let Some(n) = tasks.join_next().await {
        done += n.expect("caller task");
    }
    let secs = started.elapsed().as_secs_f64();
    store.close().await;
    (done as f64 / secs, format!("{done} in {secs:.1} s"))
}

/// SQLite's own cost of the rows a cold host's ban writes (the recorder's statements, as
/// `store::record` has them), without HTTP, the recorder's queue or its journal, in a fresh
/// database of the service's schema, committed like the recorder's held transaction (WAL,
/// `synchronous = NORMAL`, the write connection's cache). `rows`: `n` of each in one
/// transaction per table, in the order the recorder writes them: the least any arrangement of
/// these rows costs per notification. `interleaved`: the same rows written as the recorder
/// does, each notification's in turn, `n` notifications in one transaction.
struct RowsFloor {
    rows: Vec<(&'static str, f64)>,
    interleaved: f64,
}

async fn rows_floor(n: usize) -> RowsFloor {
    use rusqlite::params;
    type Row<'a> = Box<dyn Fn(&mut rusqlite::Statement<'_>, usize) + 'a>;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conns = Vec::new();
    for name in ["floor.db", "interleaved.db"] {
        let path = dir.path().join(name);
        // The schema as the service makes it (migrations, WAL).
        fnm_escalator::store::Store::open(path.to_str().expect("path"))
            .await
            .expect("open a store")
            .close()
            .await;
        let conn = rusqlite::Connection::open(&path).expect("open the database");
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA cache_size = -8000;")
            .expect("pragmas");
        conns.push(conn);
    }
    let ips: Vec<String> = (0..n).map(|i| cold(i).to_string()).collect();
    let payloads: Vec<String> = (0..n).map(|i| ban(cold(i), false)).collect();
    let t0 = fnm_escalator::clock::now_ms();
    let (ips, payloads) = (&ips, &payloads);
    let statements: Vec<(&'static str, &'static str, Row<'_>)> = vec![
        (
            "host lookup",
            "SELECT state, state_at FROM hosts WHERE ip = ?",
            Box::new(move |s, i| {
                let found = s.exists([&ips[i]]).expect("lookup");
                assert!(!found, "a cold host is new");
            }),
        ),
        (
            "host",
            "INSERT INTO hosts (ip, family, state, state_at, banned_at, attack_uuid,
                 direction, source, first_seen_at, updated_at)
             VALUES (?, ?, 'banned', ?, ?, ?, ?, ?, ?, ?)",
            Box::new(move |s, i| {
                let t = t0 + i as i64;
                s.execute(params![
                    ips[i],
                    4,
                    t,
                    t,
                    None::<String>,
                    "incoming",
                    "web_callback",
                    t,
                    t
                ])
                .expect("host");
            }),
        ),
        (
            "sample lookup",
            "SELECT at, in_bps, out_bps, in_pps, out_pps FROM latest_samples WHERE ip = ?",
            Box::new(move |s, i| {
                let found = s.exists([&ips[i]]).expect("lookup");
                assert!(!found, "a cold host has no sample before its ban");
            }),
        ),
        (
            "episode",
            "INSERT INTO ban_episodes (ip, started_at, attack_uuid, attack_type, protocol,
                 direction, severity, source)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            Box::new(move |s, i| {
                let none = None::<String>;
                s.execute(params![
                    ips[i],
                    t0 + i as i64,
                    none,
                    none,
                    none,
                    "incoming",
                    none,
                    "web_callback"
                ])
                .expect("episode");
            }),
        ),
        (
            "latest sample",
            "INSERT INTO latest_samples (ip, at, source, in_bps, out_bps, in_pps, out_pps)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (ip) DO UPDATE SET at = ?2, source = ?3, in_bps = ?4, out_bps = ?5,
                 in_pps = ?6, out_pps = ?7
             WHERE excluded.at >= latest_samples.at",
            Box::new(move |s, i| {
                s.execute(params![
                    ips[i],
                    t0 + i as i64,
                    "notification",
                    8000,
                    0,
                    10,
                    0
                ])
                .expect("latest sample");
            }),
        ),
        (
            "notification",
            "INSERT INTO notifications (received_at, observed_at, idempotency_key, source, actor,
                 action, scope, ip, attack_uuid, outcome, payload)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            Box::new(move |s, i| {
                let t = t0 + i as i64;
                let none = None::<String>;
                s.execute(params![
                    t,
                    t,
                    none,
                    "web_callback",
                    "notify",
                    "ban",
                    "host",
                    ips[i],
                    none,
                    "banned",
                    payloads[i]
                ])
                .expect("notification");
            }),
        ),
        (
            "event",
            "INSERT INTO events (at, actor, kind, ip, prefix, message, detail)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            Box::new(move |s, i| {
                // The recorder's message and detail for a cold ban, in shape and length.
                let message = format!("ban {}: banned", ips[i]);
                let detail = format!(
                    "{{\"attack_uuid\":null,\"notification_id\":{},\"outcome\":\"banned\",\
                     \"source\":\"web_callback\",\"traffic\":{{\"in_bps\":8000,\"out_bps\":0,\
                     \"in_pps\":10,\"out_pps\":0}}}}",
                    i + 1
                );
                s.execute(params![
                    t0 + i as i64,
                    "notify",
                    "notification",
                    ips[i],
                    None::<String>,
                    message,
                    detail
                ])
                .expect("event");
            }),
        ),
    ];
    let per_row = |started: Instant| started.elapsed().as_secs_f64() * 1e6 / n as f64;
    let mut rows = Vec::new();
    let conn = &conns[0];
    for (label, sql, row) in &statements {
        let started = Instant::now();
        conn.execute_batch("BEGIN").expect("begin");
        {
            let mut stmt = conn.prepare(sql).expect("prepare");
            for i in 0..n {
                row(&mut stmt, i);
            }
        }
        conn.execute_batch("COMMIT").expect("commit");
        rows.push((*label, per_row(started)));
    }
    let conn = &conns[1];
    let started = Instant::now();
    conn.execute_batch("BEGIN").expect("begin");
    {
        let mut prepared: Vec<rusqlite::Statement<'_>> = statements
            .iter()
            .map(|(_, sql, _)| conn.prepare(sql).expect("prepare"))
            .collect();
        for i in 0..n {
            for (stmt, (_, _, row)) in prepared.iter_mut().zip(&statements) {
                row(stmt, i);
            }
        }
    }
    conn.execute_batch("COMMIT").expect("commit");
    let interleaved = per_row(started);
    RowsFloor { rows, interleaved }
}

/// What parsing a cold ban costs alone (the body as target 2 sends it, into what the recorder
/// is given), in us per notification, on one thread.
fn parse_floor(n: usize) -> f64 {
    let bodies: Vec<String> = (0..n).map(|i| ban(cold(i), false)).collect();
    let started = Instant::now();
    let mut parsed = 0usize;
    for b in &bodies {
        let n = fnm_escalator::fastnetmon::notification::parse_json(b.as_bytes())
            .expect("the bench's ban parses");
        parsed += usize::from(n.traffic.is_some());
    }
    assert_eq!(parsed, n, "every ban carries its traffic");
    started.elapsed().as_secs_f64() * 1e6 / n as f64
}

async fn ingest_and_footprint(
    k: &Knobs,
    http: &reqwest::Client,
    lab: &Lab,
    bird: &mut BirdCtl,
    report: &mut Report,
) {
    clear_gobgp(lab, bird);
    let gobgp = lab.gobgp_api();
    let svc = Service::start(http, |c| {
        c.bgp.backend = Backend::Gobgp;
        c.bgp.gobgp_api = gobgp;
    })
    .await;
    let duration = Duration::from_secs(k.secs);
    let sent = Arc::new(AtomicUsize::new(0));
    if k.wants(2) {
        let addr: SocketAddr = svc
            .url
            .trim_start_matches("http://")
            .parse()
            .expect("service address");
        // The previous target's daemons may still be busy (gobgpd and BIRD dropping thousands
        // of routes): a ceiling measured beside them is not the machine's.
        let (waited, idle) = wait_quiet(Duration::from_secs(20));
        println!(
            "  machine quiet after {} ({:.0}% idle)",
            secs(waited),
            idle * 100.0
        );
        let healthz: MakeRaw = Arc::new(move |_| {
            format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\n\r\n").into_bytes()
        });
        raw_load(
            addr,
            64,
            Duration::from_secs(1),
            usize::MAX,
            healthz.clone(),
        )
        .await;
        let cpu0 = (svc.cpu_ticks(), own_cpu_ticks());
        let h = raw_load(addr, 64, duration, usize::MAX, healthz).await;
        let cpu1 = (svc.cpu_ticks(), own_cpu_ticks());
        let threads1 = svc.thread_ticks();
        let counter = sent.clone();
        let request = ColdBan::new(addr);
        for i in [0, 9, 255, 70_000, k.hosts.saturating_sub(1)] {
            assert_eq!(
                request.render(cold(i)),
                cold_ban_request(addr, cold(i)),
                "the pre-rendered request differs from the formatted one"
            );
        }
        let distinct = match k.distinct {
            0 => usize::MAX,
            d => d,
        };
        let n = raw_load(
            addr,
            64,
            duration,
            k.hosts,
            Arc::new(move |i| {
                counter.fetch_max((i + 1).min(distinct), Ordering::Relaxed);
                request.render(cold(i % distinct))
            }),
        )
        .await;
        let cpu2 = (svc.cpu_ticks(), own_cpu_ticks());
        let threads2 = svc.thread_ticks();
        // Under load the service answers once a group is in its ingest journal and commits
        // the rows within `HOLD` (50 ms): read the database until they are all there (at most
        // 2 s); a shortfall after that is a lost notification.
        let mut stored = 0;
        for _ in 0..200 {
            stored = svc.sql_i64("SELECT count(*) FROM notifications").await;
            if stored >= n.ok as i64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ratio = n.rate() / h.rate();
        let p99 = pct(&n.lat_us, 99.0);
        report.add(
            "2",
            "GET /healthz, 64 keep-alive clients",
            format!(
                "{:.0} req/s (p50 {}, p99 {})",
                h.rate(),
                ms(pct(&h.lat_us, 50.0)),
                ms(pct(&h.lat_us, 99.0))
            ),
            "-",
            None,
        );
        report.add(
            "2",
            format!(
                "POST /api/v1/notifications (ban{}), same clients",
                match k.distinct {
                    0 => String::new(),
                    d => format!(", cycling over {d} hosts"),
                }
            ),
            format!(
                "{:.0} req/s = {:.0}% of /healthz ({} 2xx, {} failed, {stored} in the database)",
                n.rate(),
                ratio * 100.0,
                n.ok,
                n.failed
            ),
            ">= 50% of /healthz",
            Some(ratio >= 0.5 && n.failed == 0 && stored as usize >= n.ok),
        );
        // CPU per request: steadier than the rates on a busy machine, and it says which side
        // (the service or this load generator) a request costs.
        let per_request =
            |ticks: u64, requests: usize| ticks as f64 / USER_HZ * 1e6 / requests.max(1) as f64;
        let (svc_h, svc_n) = (
            per_request(cpu1.0 - cpu0.0, h.ok + h.failed),
            per_request(cpu2.0 - cpu1.0, n.ok + n.failed),
        );
        report.add(
            "2",
            "service CPU per request: /healthz, notification",
            format!(
                "{svc_h:.1} us, {svc_n:.1} us ({:.1}x); load generator {:.1} us, {:.1} us",
                svc_n / svc_h,
                per_request(cpu1.1 - cpu0.1, h.ok + h.failed),
                per_request(cpu2.1 - cpu1.1, n.ok + n.failed),
            ),
            "-",
            None,
        );
        report.add(
            "2",
            "notification latency p50 / p99",
            format!("{} / {}", ms(pct(&n.lat_us, 50.0)), ms(p99)),
            "p99 <= 25 ms",
            Some(p99 <= 25_000),
        );
        // What storage alone allows: the same bans through the library's store, in this
        // process, without HTTP. Against the same /healthz rate, it bounds the ratio above.
        // The least a notification can cost the service, measured here beside the rates: the
        // HTTP work of a /healthz request, parsing, and SQLite's own cost of its rows. Against
        // it, the most it may cost for the ratio to be met, if both phases use the two cores
        // fully (rate = cores / (service + load generator CPU per request)).
        let floor = rows_floor(50_000).await;
        let floor_rows = &floor.rows;
        let rows_us: f64 = floor_rows.iter().map(|(_, us)| us).sum();
        let parse_us = parse_floor(50_000);
        report.add(
            "2",
            "SQLite alone: a cold ban's rows, 50000 of each in one transaction",
            format!(
                "{} = {rows_us:.1} us per notification; written as the recorder does, each \
                 notification's in turn: {:.1} us",
                floor_rows
                    .iter()
                    .map(|(row, us)| format!("{row} {us:.1}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                floor.interleaved
            ),
            "-",
            None,
        );
        let gen_h = per_request(cpu1.1 - cpu0.1, h.ok + h.failed);
        let gen_n = per_request(cpu2.1 - cpu1.1, n.ok + n.failed);
        let least = svc_h + parse_us + rows_us;
        let most = 2.0 * (svc_h + gen_h) - gen_n;
        report.add(
            "2",
            "service CPU per notification: least possible, most for 50%",
            format!(
                "{least:.1} us (/healthz {svc_h:.1} + parsing {parse_us:.1} + rows {rows_us:.1}), \
                 {most:.1} us (2 x (/healthz {svc_h:.1} + generator {gen_h:.1}) - generator \
                 {gen_n:.1}); measured {svc_n:.1} us"
            ),
            "-",
            None,
        );
        // Which threads the notifications' CPU went to. What is not the writer's (the recorder
        // and the checkpointer: the rows) bounds the ratio whatever the rows cost: with them
        // free, the same CPU model allows at most (/healthz + generator) / (workers + other +
        // generator); and the writer may cost what is left of `most` for 50%.
        let by_thread = |name: &str| {
            let at = |t: &BTreeMap<String, u64>| t.get(name).copied().unwrap_or(0);
            let ticks = at(&threads2).saturating_sub(at(&threads1));
            per_request(ticks, n.ok + n.failed)
        };
        let workers = by_thread("tokio-rt-worker");
        let recorder = by_thread("fnm-recorder");
        let checkpointer = by_thread("fnm-checkpoint");
        let other = (svc_n - workers - recorder - checkpointer).max(0.0);
        report.add(
            "2",
            "service CPU per notification by thread; what is left for the rows",
            format!(
                "HTTP workers {workers:.1} us, recorder {recorder:.1} us, checkpointer \
                 {checkpointer:.1} us, other {other:.1} us; with the rows free at most {:.0}% of \
                 /healthz ((/healthz {svc_h:.1} + generator {gen_h:.1}) / (workers {workers:.1} + \
                 other {other:.1} + generator {gen_n:.1})); for 50% the recorder and the \
                 checkpointer may cost {:.1} us together",
                (svc_h + gen_h) / (workers + other + gen_n).max(0.1) * 100.0,
                most - workers - other
            ),
            "-",
            None,
        );
        for callers in [1, 64, 256] {
            let (rate, counted) =
                recorder_alone(callers, duration.min(Duration::from_secs(5))).await;
            report.add(
                "2",
                format!(
                    "storage alone (no HTTP), {callers} concurrent caller{}",
                    if callers == 1 { "" } else { "s" }
                ),
                format!(
                    "{rate:.0} notifications/s = {:.0}% of /healthz ({:.1} us each; {counted})",
                    rate / h.rate() * 100.0,
                    1e6 / rate.max(1.0),
                ),
                "-",
                None,
            );
        }
    }
    if k.wants(5) {
        // Top up to k.hosts recorded hosts, then k.escalations hosts over threshold in their own /24s.
        let from = sent.load(Ordering::Relaxed);
        let rest: Vec<Ipv4Addr> = (from..k.hosts).map(cold).collect();
        let t = Instant::now();
        let topped = ban_all(http, &svc, rest.clone(), false).await;
        println!(
            "  recorded {} more hosts in {}",
            topped.ok,
            secs(t.elapsed())
        );
        let hot: Vec<Ipv4Addr> = (0..k.escalations).map(|i| ip(160, i)).collect();
        ban_all(http, &svc, hot, true).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut active = 0;
        while Instant::now() < deadline {
            active = svc
                .sql_i64("SELECT count(*) FROM escalations WHERE state = 'active'")
                .await;
            if active as usize >= k.escalations {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let hosts = svc.sql_i64("SELECT count(*) FROM hosts").await;
        // Settle: a few checker ticks (5 s each) and a retention pass.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let (rss, hwm) = svc.rss_kib();
        let window = Duration::from_secs(k.secs.max(10));
        let (c0, t0) = (svc.cpu_ticks(), Instant::now());
        tokio::time::sleep(window).await;
        let (c1, dt) = (svc.cpu_ticks(), t0.elapsed());
        let cpu = (c1 - c0) as f64 / USER_HZ / dt.as_secs_f64() * 100.0;
        let (rss2, _) = svc.rss_kib();
        let ready: Value = http
            .get(format!("{}/readyz", svc.url))
            .send()
            .await
            .expect("readyz")
            .json()
            .await
            .unwrap_or(Value::Null);
        let cycle_ms = ready["checker"]["last_cycle_ms"]
            .as_f64()
            .unwrap_or(f64::NAN);
        report.add(
            "5",
            format!("RSS with {hosts} hosts recorded, {active} active escalations"),
            format!(
                "{:.1} MiB (after the idle window {:.1} MiB, peak {:.1} MiB)",
                rss as f64 / 1024.0,
                rss2 as f64 / 1024.0,
                hwm as f64 / 1024.0
            ),
            "<= 64 MiB",
            Some(rss2.max(rss) <= 64 * 1024 && hosts as usize >= k.hosts),
        );
        report.add(
            "5",
            format!(
                "CPU while idle ({}s window, check_interval 5s)",
                window.as_secs()
            ),
            format!("{cpu:.1}% of one core (last checker cycle {cycle_ms:.0} ms)"),
            "reported",
            None,
        );
    }
    drop(svc);
    if k.wants(5) {
        db_projection(k, http, report).await;
    }
    clear_gobgp(lab, bird);
}

/// Bytes per history row measured from 1-second pushes of 10,000 banned hosts, projected to a
/// day with the default retention settings.
async fn db_projection(k: &Knobs, http: &reqwest::Client, report: &mut Report) {
    let hosts = 10_000usize;
    let pushes = k.secs.max(5) as usize;
    let svc = Service::start(http, |c| {
        c.bgp.backend = Backend::None;
        // Every push kept, so the bytes per row are measured on many rows; projected below
        // with the defaults.
        c.samples.history_interval = Duration::ZERO;
    })
    .await;
    // 10.200.0.0/18: hosts of other targets are elsewhere.
    let list: Vec<Ipv4Addr> = (0..hosts)
        .map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + i as u32))
        .collect();
    let banned = ban_all(http, &svc, list.clone(), false).await;
    assert_eq!(banned.ok, hosts);
    let db = svc.db();
    let size = || async {
        let page = svc_sql(&db, "PRAGMA page_size").await;
        let count = svc_sql(&db, "PRAGMA page_count").await;
        let free = svc_sql(&db, "PRAGMA freelist_count").await;
        (count - free) * page
    };
    let (b0, r0) = (
        size().await,
        svc.sql_i64("SELECT count(*) FROM traffic_samples").await,
    );
    let body: String = list
        .iter()
        .map(|h| format!("hosts_traffic,host={h} bits_incoming=8000,packets_incoming=10\n"))
        .collect();
    let mut write_ms = Vec::new();
    for _ in 0..pushes {
        let t = Instant::now();
        let r = http
            .post(format!(
                "{}/write?db=fastnetmon&u=fastnetmon&p={NOTIFY}",
                svc.url
            ))
            .body(body.clone())
            .send()
            .await
            .expect("POST /write");
        assert!(r.status().is_success(), "/write: {}", r.status());
        write_ms.push(t.elapsed().as_micros() as u64);
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(t.elapsed())).await;
    }
    let (b1, r1) = (
        size().await,
        svc.sql_i64("SELECT count(*) FROM traffic_samples").await,
    );
    write_ms.sort_unstable();
    let per_row = (b1 - b0) as f64 / (r1 - r0).max(1) as f64;
    let d = Config::default().samples;
    let rows_kept =
        hosts as f64 * d.retention.as_secs_f64() / d.history_interval.as_secs_f64().max(1.0);
    // Deletion runs every tenth of the retention, so up to 10% more rows wait for it.
    let projected = b0 as f64 + rows_kept * 1.1 * per_row;
    report.add(
        "5",
        format!("/write of {hosts} hosts, each second: p50 / max"),
        format!(
            "{} / {}",
            ms(pct(&write_ms, 50.0)),
            ms(*write_ms.last().unwrap_or(&0))
        ),
        "-",
        None,
    );
    report.add(
        "5",
        format!(
            "database after a day of 1 s pushes, {hosts} hosts (retention {}, history_interval {})",
            humantime::format_duration(d.retention),
            humantime::format_duration(d.history_interval)
        ),
        format!(
            "{:.0} MiB projected ({:.0} B/history row measured over {} rows; {:.1} MiB with the hosts alone)",
            projected / 1048576.0,
            per_row,
            r1 - r0,
            b0 as f64 / 1048576.0
        ),
        "reported",
        None,
    );
}

async fn svc_sql(db: &Path, query: &str) -> i64 {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .expect("open the service's database");
    sqlx::query_scalar::<_, i64>(query)
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
}

// ---------------------------------------------------------------------------------------------

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}, MemTotal {mem}")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let k = Knobs::from_env();
    println!("fnm-escalator benchmarks: {}", machine());
    println!(
        "targets {:?}, N {:?}, trials {}, burst {}, hosts {}, escalations {}, {} s per ingest phase",
        k.targets, k.n, k.trials, k.burst, k.hosts, k.escalations, k.secs
    );
    match &k.anchors {
        Some(dir) => println!("anchors: {}", dir.display()),
        None => println!(
            "anchors not found (FNM_BENCH_ANCHORS, default ../shared/anchors): the published script is not run"
        ),
    }
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build()
        .expect("HTTP client");
    let started = Instant::now();
    let lab = Lab::start();
    let mut bird = BirdCtl::connect(&lab.bird_ctl());
    let mut report = Report::default();
    if k.wants(1) {
        println!("target 1: convergence against the published script");
        convergence(&k, &http, &lab, &mut bird, &mut report).await;
    }
    if k.wants(3) {
        println!("target 3: reaction time");
        reaction(&k, &http, &lab, &mut bird, &mut report).await;
        if let Some((banned, ban_rate)) = k.carpet.filter(|_| k.banned == 0 && k.ban_rate == 0) {
            println!("target 3: reaction time beside a carpet bombing");
            let carpet = Knobs {
                banned,
                ban_rate,
                ..k.clone()
            };
            reaction(&carpet, &http, &lab, &mut bird, &mut report).await;
        }
    }
    if k.wants(4) {
        println!("target 4: announce throughput");
        burst(&k, &http, &lab, &mut bird, &mut report).await;
    }
    if k.wants(2) || k.wants(5) {
        println!("targets 2 and 5: ingest, footprint");
        ingest_and_footprint(&k, &http, &lab, &mut bird, &mut report).await;
    }
    report.print();
    println!("\n{} in all", secs(started.elapsed()));
}
