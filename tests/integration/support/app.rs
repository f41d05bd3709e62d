//! A service for one test: fresh database in a temp dir, port 0, in-process (`spawn_app`) or as
//! the real binary (`Service`), so a test can `kill -9` it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fnm_escalator::bgp::Speaker;
use fnm_escalator::config::{Config, Role, Token};
use fnm_escalator::store::Store;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;

pub const ADMIN: &str = "admin-token-123";
pub const NOTIFY: &str = "notify-token-123";
pub const READ: &str = "read-token-123";

/// A config for tests: tokens of each role, our test networks, a database in `dir`.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.server.database = dir.join("state.db").display().to_string();
    c.notify.spool_dir = Some(dir.join("spool"));
    c.server.spool_sweep_interval = Duration::from_millis(200);
    c.auth.tokens = vec![
        Token {
            name: "noc".into(),
            token: ADMIN.into(),
            role: Role::Admin,
        },
        Token {
            name: "fastnetmon".into(),
            token: NOTIFY.into(),
            role: Role::Notify,
        },
        Token {
            name: "grafana".into(),
            token: READ.into(),
            role: Role::Read,
        },
    ];
    c.networks.ours = vec![
        "10.10.10.0/24".parse().expect("net"),
        "10.154.0.0/16".parse().expect("net"),
        "198.51.100.0/22".parse().expect("net"),
        "2001:db8::/32".parse().expect("net"),
    ];
    c
}

pub struct TestApp {
    pub url: String,
    pub store: Store,
    pub config: Config,
    pub dir: TempDir,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Starts the service in-process on 127.0.0.1:0 with `edit` applied to the test config.
pub async fn spawn_app(edit: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with_speaker(edit, None).await
}

pub async fn spawn_app_with_speaker(
    edit: impl FnOnce(&mut Config),
    speaker: Option<Arc<dyn Speaker>>,
) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    edit(&mut config);
    config.validate().expect("test config is valid");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    config.server.listen = addr;
    let store = Store::open(&config.server.database).await.expect("store");
    let speaker = match speaker {
        Some(s) => s,
        None => fnm_escalator::speaker(&config).expect("speaker"),
    };
    let (tx, rx) = oneshot::channel::<()>();
    let cfg = Arc::new(config.clone());
    let st = store.clone();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.await;
        };
        if let Err(e) = fnm_escalator::run_with(cfg, st, speaker, listener, shutdown).await {
            panic!("service failed: {e}");
        }
    });
    TestApp {
        url: format!("http://{addr}"),
        store,
        config,
        dir,
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client"),
        shutdown: Some(tx),
        task: Some(task),
    }
}

impl TestApp {
    pub async fn post(
        &self,
        path: &str,
        token: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self
            .http
            .delete(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls `GET path` until `pred` holds (bounded); returns the last body.
    pub async fn wait_for(
        &self,
        path: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, body) = self.get(path, ADMIN).await;
            if pred(&body) || Instant::now() > deadline {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (at most 5 s) for the live escalation of the /24 or /48 `prefix` to be in `state`,
    /// and asserts it is: the ledger is written once the speaker has confirmed, so BIRD may see
    /// an announcement or a withdrawal before the ledger says so. Returns the escalation.
    pub async fn expect_escalation_state(&self, prefix: &str, state: &str) -> Value {
        let path = format!("/api/v1/escalations/{}", prefix.replace('/', "%2F"));
        let e = self
            .wait_for(&path, Duration::from_secs(5), |e| e["state"] == state)
            .await;
        assert_eq!(e["state"], state, "{e}");
        e
    }

    /// Writes the config as a TOML file (for the binary's notify command).
    pub fn write_config(&self) -> PathBuf {
        write_config(&self.config, self.dir.path())
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn write_config(config: &Config, dir: &Path) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, toml::to_string(config).expect("toml")).expect("write config");
    path
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_fnm-escalator")
}

/// Runs `fnm-escalator notify --config CFG ARGS` with `stdin`; returns (exit code, stderr, time).
pub fn run_notify(config: &Path, args: &[&str], stdin: &[u8]) -> (i32, String, Duration) {
    use std::io::Write;
    let started = Instant::now();
    let mut child = Command::new(binary())
        .arg("notify")
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn notify");
    if let Some(mut s) = child.stdin.take() {
        let _ = s.write_all(stdin);
    }
    let out = child.wait_with_output().expect("notify output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

/// The real binary running `serve`, killed (SIGKILL) on drop.
pub struct Service {
    pub child: Child,
    pub url: String,
}

impl Service {
    /// Starts `serve --config` and waits (bounded) for `/healthz`.
    pub fn start(config: &Path, addr: SocketAddr, log: &Path) -> Service {
        let log = std::fs::File::create(log).expect("log file");
        let child = Command::new(binary())
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn serve");
        let svc = Service {
            child,
            url: format!("http://{addr}"),
        };
        // The socket listens (and the kernel accepts connections) before the service has
        // opened its database, which at a start after `kill -9` includes applying the ingest
        // journal: wait for an answer, not for the port.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if healthz_answers(addr) {
                return svc;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        panic!("service did not answer /healthz on {addr}");
    }

    /// `GET path` with the admin token; the JSON body.
    pub async fn get(&self, http: &reqwest::Client, path: &str) -> Value {
        http.get(format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json")
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Whether `GET /healthz` at `addr` answers 200 (within a second).
fn healthz_answers(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100))
    else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
    let request = format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    if conn.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

pub fn fixture(rel: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// A captured Community call: (argv, stdin).
pub fn capture(case: &str) -> (Vec<String>, Vec<u8>) {
    let argv = String::from_utf8(fixture(&format!("community-1.2.4/{case}.argv"))).expect("utf8");
    (
        argv.lines().map(str::to_string).collect(),
        fixture(&format!("community-1.2.4/{case}.stdin")),
    )
}

/// A ban notification as FastNetMon Advanced sends it, with the traffic at detection time.
pub fn ban(ip: &str, in_bytes_per_s: u64, pps: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ip": ip,
        "action": "ban",
        "alert_scope": "host",
        "attack_details": {
            "attack_direction": "incoming",
            "total_incoming_traffic": in_bytes_per_s,
            "total_incoming_pps": pps,
        }
    }))
    .expect("json")
}

pub fn unban(ip: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "ip": ip, "action": "unban", "alert_scope": "host" }))
        .expect("json")
}
