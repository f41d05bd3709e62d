//! A throw-away ExaBGP lab for one test: ExaBGP 4.2 (AS65001) peering over eBGP with BIRD 2
//! (AS65000, the "upstream"), both on their own loopback addresses with a free port, ExaBGP's API
//! process being our own `fnm-escalator exabgp-bridge --socket SOCKET`. BIRD resolves the RTBH
//! next hops to static blackhole routes and has no kernel protocol. ExaBGP, BIRD and every bridge
//! ExaBGP started are stopped by PID when the lab is dropped, panicking tests included (ExaBGP
//! 4.2 does not always stop its API processes itself).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::support::lab::{parse_bird_routes, BirdRoute, BLACKHOLE_NH4, BLACKHOLE_NH6};

const EXABGP_ASN: u32 = 65001;
const BIRD_ASN: u32 = 65000;
/// BIRD's name for the session, and the protocol its routes from ExaBGP carry.
pub const BIRD_PROTOCOL: &str = "exabgp";
const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The environment ExaBGP runs with: stay in the foreground as the current user, log to stdout,
/// no listening socket, no CLI named pipes (so nothing is needed in /run), and the defaults the
/// bridge relies on spelled out (acks on; respawn a bridge that died).
pub const EXABGP_ENV: &[(&str, &str)] = &[
    ("exabgp_daemon_daemonize", "false"),
    ("exabgp_daemon_drop", "false"),
    ("exabgp_daemon_pid", ""),
    ("exabgp_log_destination", "stdout"),
    ("exabgp_tcp_bind", ""),
    ("exabgp_api_cli", "false"),
    ("exabgp_api_ack", "true"),
    ("exabgp_api_respawn", "true"),
];

pub struct ExabgpLab {
    dir: tempfile::TempDir,
    socket: PathBuf,
    bird_addr: Ipv4Addr,
    exabgp_addr: Ipv4Addr,
    bird_port: u16,
    bird_bin: PathBuf,
    birdc_bin: PathBuf,
    exabgp_bin: PathBuf,
    bird: Option<Child>,
    exabgp: Option<Child>,
    /// Every bridge seen running under ExaBGP, so none outlives the lab.
    bridges: Vec<u32>,
}

impl ExabgpLab {
    /// Starts BIRD and ExaBGP (whose bridge connects to `socket`), with `statics` as extra
    /// routes in ExaBGP's config (`route P next-hop NH community [..];` lines, routes that are
    /// not ours), and waits until their BGP session is Established.
    pub fn start(socket: &Path, statics: &[&str]) -> ExabgpLab {
        let [bird_bin, birdc_bin, exabgp_bin] = ["bird", "birdc", "exabgp"].map(find_binary);
        let dir = tempfile::Builder::new()
            .prefix("fnm-exabgp-lab-")
            .tempdir()
            .expect("create a temp dir for the ExaBGP lab");
        let (bird_addr, exabgp_addr) = next_addrs();
        let port = TcpListener::bind((bird_addr, 0))
            .unwrap_or_else(|e| panic!("bind {bird_addr}:0 to pick a free port: {e}"));
        let bird_port = port.local_addr().expect("listener address").port();
        drop(port);
        let mut lab = ExabgpLab {
            dir,
            socket: socket.to_path_buf(),
            bird_addr,
            exabgp_addr,
            bird_port,
            bird_bin,
            birdc_bin,
            exabgp_bin,
            bird: None,
            exabgp: None,
            bridges: Vec::new(),
        };
        lab.write_configs(statics);
        lab.spawn_bird();
        lab.spawn_exabgp();
        lab.wait_established();
        lab
    }

    /// The ExaBGP config this lab runs (for a failing test's message, and the README).
    pub fn exabgp_conf(&self) -> String {
        std::fs::read_to_string(self.path("exabgp.conf")).unwrap_or_default()
    }

    /// The routes BIRD learned from ExaBGP, IPv4 and IPv6.
    pub fn bird_routes(&self) -> Vec<BirdRoute> {
        let out = self.birdc(&["show", "route", "all"]);
        parse_bird_routes(&out)
            .into_iter()
            .filter(|r| r.protocol == BIRD_PROTOCOL)
            .collect()
    }

    /// Polls [`ExabgpLab::bird_routes`] until `pred` holds or `timeout` passes; returns the
    /// routes last seen either way.
    pub fn wait_for_routes(
        &self,
        pred: impl Fn(&[BirdRoute]) -> bool,
        timeout: Duration,
    ) -> Vec<BirdRoute> {
        let deadline = Instant::now() + timeout;
        loop {
            let routes = self.bird_routes();
            if pred(&routes) || Instant::now() >= deadline {
                return routes;
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// The bridges running under ExaBGP now (their PIDs), remembered for clean-up.
    pub fn bridge_pids(&mut self) -> Vec<u32> {
        let Some(exabgp) = self.exabgp.as_ref().map(Child::id) else {
            return Vec::new();
        };
        let mut pids = Vec::new();
        let tasks = std::fs::read_dir(format!("/proc/{exabgp}/task"))
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default();
        for task in tasks {
            let children = std::fs::read_to_string(task.join("children")).unwrap_or_default();
            for pid in children.split_whitespace().filter_map(|p| p.parse().ok()) {
                if self.is_our_bridge(pid) && !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
        for pid in &pids {
            if !self.bridges.contains(pid) {
                self.bridges.push(*pid);
            }
        }
        pids
    }

    /// Waits (bounded) for a bridge ExaBGP started, and returns its PID.
    pub fn wait_bridge(&mut self, timeout: Duration) -> u32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pid) = self.bridge_pids().first() {
                return *pid;
            }
            assert!(
                Instant::now() < deadline,
                "ExaBGP started no bridge within {timeout:?}\n{}",
                self.logs()
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// Whether `pid` is a bridge of this lab (a recycled PID is not).
    fn is_our_bridge(&self, pid: u32) -> bool {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        cmdline.contains("exabgp-bridge") && cmdline.contains(&*self.socket.to_string_lossy())
    }

    /// Whether `pid` still runs (a zombie does not count).
    pub fn running(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next().map(|r| r.trim().starts_with('Z')))
            .is_some_and(|zombie| !zombie)
    }

    /// Waits (bounded) for `pid` to be gone; false if it still runs.
    pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !Self::running(pid) {
                return true;
            }
            sleep(Duration::from_millis(20));
        }
        !Self::running(pid)
    }

    /// Kills ExaBGP outright (SIGKILL), as a crash would: its RIB and its session go with it.
    pub fn kill_exabgp(&mut self) {
        self.bridge_pids();
        if let Some(mut child) = self.exabgp.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops ExaBGP as its service manager would (SIGTERM; SIGKILL after a grace period).
    pub fn stop_exabgp(&mut self) {
        self.bridge_pids();
        if let Some(child) = self.exabgp.take() {
            stop(child);
        }
    }

    /// Starts ExaBGP again with the same config and waits for the session.
    pub fn start_exabgp(&mut self) {
        assert!(self.exabgp.is_none(), "ExaBGP is already running");
        self.spawn_exabgp();
        self.wait_established();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_configs(&self, statics: &[&str]) {
        let statics = if statics.is_empty() {
            String::new()
        } else {
            let mut s = String::from("    static {\n");
            for route in statics {
                let _ = writeln!(s, "        {route};");
            }
            s.push_str("    }\n");
            s
        };
        let exabgp_conf = format!(
            r#"process fnm-escalator {{
    run {bridge} exabgp-bridge --socket {socket};
    encoder text;
}}

neighbor {bird} {{
    router-id {exabgp};
    local-address {exabgp};
    local-as {EXABGP_ASN};
    peer-as {BIRD_ASN};
    connect {port};
    family {{
        ipv4 unicast;
        ipv6 unicast;
    }}
    api {{
        processes [ fnm-escalator ];
    }}
{statics}}}
"#,
            bridge = env!("CARGO_BIN_EXE_fnm-escalator"),
            socket = self.socket.display(),
            bird = self.bird_addr,
            exabgp = self.exabgp_addr,
            port = self.bird_port,
        );
        // passive: ExaBGP connects to BIRD. error wait: after ExaBGP dies, take its
        // reconnection at once, not after BIRD's default 60 s.
        let bird_conf = format!(
            r#"router id {bird};
log "{log}" all;
protocol device {{ }}
protocol static bh_nh4 {{ ipv4; route {BLACKHOLE_NH4}/32 blackhole; }}
protocol static bh_nh6 {{ ipv6; route {BLACKHOLE_NH6}/128 blackhole; }}
protocol bgp {BIRD_PROTOCOL} {{
  local {bird} port {port} as {BIRD_ASN};
  neighbor {exabgp} as {EXABGP_ASN};
  strict bind yes;
  multihop;
  passive on;
  error wait time 1, 2;
  ipv4 {{ import all; export none; gateway recursive; }};
  ipv6 {{ import all; export none; gateway recursive; next hop address ::1; }};
}}
"#,
            bird = self.bird_addr,
            exabgp = self.exabgp_addr,
            log = self.path("bird.log").display(),
            port = self.bird_port,
        );
        std::fs::write(self.path("exabgp.conf"), exabgp_conf).expect("write exabgp.conf");
        std::fs::write(self.path("bird.conf"), bird_conf).expect("write bird.conf");
    }

    fn spawn_bird(&mut self) {
        let log = log_file(&self.path("bird.stderr"));
        let child = Command::new(&self.bird_bin)
            .arg("-f")
            .arg("-c")
            .arg(self.path("bird.conf"))
            .arg("-s")
            .arg(self.path("bird.ctl"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log file"))
            .stderr(log)
            .spawn()
            .expect("start bird");
        self.bird = Some(child);
    }

    fn spawn_exabgp(&mut self) {
        // Appended: the log of an earlier run of this lab's ExaBGP stays readable.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("exabgp.log"))
            .expect("open exabgp.log");
        let child = Command::new(&self.exabgp_bin)
            .arg(self.path("exabgp.conf"))
            .envs(EXABGP_ENV.iter().copied())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log file"))
            .stderr(log)
            .spawn()
            .expect("start exabgp");
        self.exabgp = Some(child);
    }

    fn wait_established(&mut self) {
        let deadline = Instant::now() + ESTABLISHED_TIMEOUT;
        loop {
            self.check_alive();
            if self
                .birdc(&["show", "protocols", BIRD_PROTOCOL])
                .contains("Established")
            {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the BGP session ExaBGP <-> BIRD was not Established within {ESTABLISHED_TIMEOUT:?}\n{}",
                    self.logs()
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    fn check_alive(&mut self) {
        let mut exited = None;
        for (name, child) in [("exabgp", &mut self.exabgp), ("bird", &mut self.bird)] {
            if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
                *child = None;
                exited = Some(format!("{name} exited ({status}) during start-up"));
            }
        }
        if let Some(what) = exited {
            panic!("{what}\n{}", self.logs());
        }
    }

    fn birdc(&self, args: &[&str]) -> String {
        Command::new(&self.birdc_bin)
            .arg("-s")
            .arg(self.path("bird.ctl"))
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// The tails of both daemons' logs (the bridges log into ExaBGP's), for panic messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["exabgp.log", "bird.log", "bird.stderr"] {
            let text = std::fs::read_to_string(self.path(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            let _ = writeln!(out, "---- {name} (last {} lines) ----", tail.len());
            for line in tail {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }
}

impl Drop for ExabgpLab {
    fn drop(&mut self) {
        self.bridge_pids();
        for child in [self.exabgp.take(), self.bird.take()].into_iter().flatten() {
            stop(child);
        }
        // A bridge exits when ExaBGP closes its stdin; make sure, by PID, that none is left.
        for pid in std::mem::take(&mut self.bridges) {
            if self.is_our_bridge(pid) && !Self::wait_gone(pid, Duration::from_secs(2)) {
                signal(pid, "-KILL");
            }
        }
    }
}

fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// SIGTERM, then SIGKILL if the process is still there after a grace period.
fn stop(mut child: Child) {
    signal(child.id(), "-TERM");
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Loopback addresses for this lab's BIRD and ExaBGP, distinct per process and per lab, and
/// apart from the gobgpd labs' (whose third octet stays below 250).
fn next_addrs() -> (Ipv4Addr, Ipv4Addr) {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let second = (1 + pid % 250) as u8;
    let third = (250 + n / 120 % 5) as u8;
    let fourth = (2 + 2 * (n % 120)) as u8;
    (
        Ipv4Addr::new(127, second, third, fourth),
        Ipv4Addr::new(127, second, third, fourth + 1),
    )
}

fn log_file(path: &Path) -> std::fs::File {
    std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
}

/// Finds a daemon on PATH or in the sbin directories (bird, birdc and exabgp live in /usr/sbin).
fn find_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: the ExaBGP integration tests need ExaBGP 4.2 and BIRD \
                 2. Run tests/run.sh, which installs them (apt-get install -y exabgp bird2)."
            )
        })
}
