//! `fnm-escalator notify`: FastNetMon's notify script. It reads all of stdin (FastNetMon may
//! misbehave otherwise), turns any calling convention into the JSON document the API takes,
//! and delivers it; when the service cannot take it, the notification goes to the spool and
//! the command still exits 0 within about a second. The service sweeps the spool too.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::api::notifications::{IDEMPOTENCY_KEY, OBSERVED_AT, SOURCE};
use crate::checker::CheckerHandle;
use crate::clock::now_ms;
use crate::config::Config;
use crate::fastnetmon::{notification, script};
use crate::spool::{Envelope, Spool};
use crate::store::{Incoming, Store};

/// The whole run must end well inside FastNetMon's patience; a second in all.
const BUDGET: Duration = Duration::from_millis(900);
/// Most stdin kept; the rest is read and dropped (FastNetMon's packet dumps can be large).
const MAX_STDIN: usize = 4 * 1024 * 1024;
/// How long to wait for FastNetMon to close stdin.
const STDIN_WAIT: Duration = Duration::from_millis(400);

/// Reads all of stdin on a thread, keeping at most `MAX_STDIN` bytes, giving up after
/// `STDIN_WAIT` (FastNetMon's unban inherits its own stdin, which may never close).
fn read_stdin() -> Vec<u8> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Vec::new();
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        let mut lock = std::io::stdin().lock();
        loop {
            match lock.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = MAX_STDIN.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = tx.send(kept);
    });
    rx.recv_timeout(STDIN_WAIT).unwrap_or_default()
}

/// What happened, for the exit code and the message on stderr.
#[derive(Debug, PartialEq, Eq)]
pub enum NotifyOutcome {
    Delivered,
    Spooled(String),
    /// The input fits no convention (exit 2); kept in the spool's quarantine for the record.
    Rejected(String),
}

pub async fn run(config_path: Option<PathBuf>, args: Vec<String>) -> NotifyOutcome {
    let started = Instant::now();
    let stdin = read_stdin();
    let config = match Config::load(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            // Never lose a notification to a config problem: fall back to the defaults (and
            // their spool directory) and say so.
            eprintln!("fnm-escalator notify: {e}; using embedded defaults");
            Config::default()
        }
    };
    deliver(&config, &args, &stdin, started).await
}

pub async fn deliver(
    config: &Config,
    args: &[String],
    stdin: &[u8],
    started: Instant,
) -> NotifyOutcome {
    let spool = Spool::new(config.spool_dir());
    let (body, source) = match script::parse_invocation(args, stdin) {
        Ok(n) => {
            let json_stdin = stdin.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
            if json_stdin {
                // Forward FastNetMon's JSON exactly as sent.
                match serde_json::from_slice::<serde_json::Value>(stdin) {
                    Ok(v) => (v, "notify_json"),
                    Err(_) => (notification::to_json(&n), "notify_json"),
                }
            } else {
                (notification::to_json(&n), "notify_text")
            }
        }
        Err(e) => {
            let reason = format!("cannot understand this notify call: {e}");
            let env = Envelope {
                version: 1,
                idempotency_key: uuid::Uuid::new_v4().to_string(),
                observed_at: now_ms(),
                source: "notify_text".into(),
                body: serde_json::json!({
                    "argv": args,
                    "stdin": String::from_utf8_lossy(&stdin[..stdin.len().min(64 * 1024)]),
                }),
            };
            if let Ok(p) = spool.put(&env) {
                let _ = spool.quarantine(&p, &reason);
            }
            return NotifyOutcome::Rejected(reason);
        }
    };
    let env = Envelope {
        version: 1,
        idempotency_key: uuid::Uuid::new_v4().to_string(),
        observed_at: now_ms(),
        source: source.into(),
        body,
    };
    let client = Client::new(config);

    // Order: if anything is waiting in the spool, this one queues behind it.
    let mut why = "earlier notifications are still spooled".to_string();
    if spool.is_empty() {
        match client.post(&env, remaining(started)).await {
            Delivery::Ok => return NotifyOutcome::Delivered,
            Delivery::Invalid(reason) => {
                let _ = spool.put(&env).and_then(|p| spool.quarantine(&p, &reason));
                return NotifyOutcome::Rejected(reason);
            }
            Delivery::Later(reason) => why = reason,
        }
    }
    let why = match spool.put(&env) {
        Ok(p) => format!("not delivered ({why}); spooled to {}", p.display()),
        Err(e) => {
            return NotifyOutcome::Spooled(format!(
                "service unreachable and the spool failed ({e}); notification lost"
            ))
        }
    };
    drain_over_http(&spool, &client, started).await;
    if spool.is_empty() {
        NotifyOutcome::Delivered
    } else {
        NotifyOutcome::Spooled(why)
    }
}

fn remaining(started: Instant) -> Duration {
    BUDGET.saturating_sub(started.elapsed())
}

enum Delivery {
    Ok,
    /// The service rejected the content: retrying cannot help.
    Invalid(String),
    /// Down, busy, timed out, or not authorised (the service's own sweep will take it).
    Later(String),
}

struct Client {
    http: Option<reqwest::Client>,
    url: String,
    token: Option<String>,
}

impl Client {
    fn new(config: &Config) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(300))
            .pool_max_idle_per_host(1)
            .no_proxy()
            .build()
            .ok();
        Client {
            http,
            url: format!("{}/api/v1/notifications", config.notify_url()),
            token: config.notify_token(),
        }
    }

    async fn post(&self, env: &Envelope, budget: Duration) -> Delivery {
        let Some(http) = &self.http else {
            return Delivery::Later("no HTTP client".into());
        };
        if budget < Duration::from_millis(50) {
            return Delivery::Later("out of time".into());
        }
        let mut req = http
            .post(&self.url)
            .timeout(budget)
            .header(IDEMPOTENCY_KEY, &env.idempotency_key)
            .header(OBSERVED_AT, env.observed_at.to_string())
            .header(SOURCE, &env.source)
            .json(&env.body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => Delivery::Ok,
            Ok(r) if r.status() == 400 || r.status() == 413 || r.status() == 422 => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                Delivery::Invalid(format!("the service rejected it ({status}): {text}"))
            }
            Ok(r) => Delivery::Later(format!("service answered {}", r.status())),
            Err(e) => Delivery::Later(e.to_string()),
        }
    }
}

/// Delivers spooled notifications in order while time is left.
async fn drain_over_http(spool: &Spool, client: &Client, started: Instant) {
    let Ok(Some(_lock)) = spool.try_lock() else {
        return;
    };
    let Ok(files) = spool.pending() else { return };
    for path in files {
        let env = match spool.read(&path) {
            Ok(e) => e,
            Err(reason) => {
                let _ = spool.quarantine(&path, &reason);
                continue;
            }
        };
        match client.post(&env, remaining(started)).await {
            Delivery::Ok => {
                let _ = spool.remove(&path);
            }
            Delivery::Invalid(reason) => {
                let _ = spool.quarantine(&path, &reason);
            }
            Delivery::Later(_) => return,
        }
    }
}

/// The service's side of the spool: ingest straight into the store, in order, exactly once
/// (the idempotency key is stored with the notification).
pub async fn sweep(store: &Store, spool: &Spool) -> Result<usize, String> {
    let Some(_lock) = spool.try_lock().map_err(|e| e.to_string())? else {
        return Ok(0);
    };
    let mut delivered = 0;
    for path in spool.pending().map_err(|e| e.to_string())? {
        let env = match spool.read(&path) {
            Ok(e) => e,
            Err(reason) => {
                tracing::error!(file = %path.display(), %reason, "corrupt spool file quarantined");
                let _ = spool.quarantine(&path, &reason);
                continue;
            }
        };
        let body = env.body.to_string();
        let parsed = match notification::parse_json(body.as_bytes()) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "undeliverable spool file quarantined");
                let _ = spool.quarantine(&path, &e.to_string());
                continue;
            }
        };
        let now = now_ms();
        let incoming = Incoming {
            notification: parsed,
            observed_at: env.observed_at.min(now),
            received_at: now,
            idempotency_key: Some(env.idempotency_key.clone()),
            source: env.source.clone(),
            actor: "spool".into(),
            payload: body,
        };
        let action = incoming.notification.action;
        let recorded = store
            .record_notification(incoming)
            .await
            .map_err(|e| e.to_string())?;
        crate::metrics::metrics().notification(action.as_str(), recorded.outcome.as_str());
        spool.remove(&path).map_err(|e| e.to_string())?;
        delivered += 1;
    }
    Ok(delivered)
}

pub async fn sweep_loop(
    store: Store,
    dir: PathBuf,
    every: Duration,
    checker: CheckerHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let spool = Spool::new(dir);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {}
        }
        if spool.is_empty() {
            continue;
        }
        match sweep(&store, &spool).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(delivered = n, dir = %spool.dir().display(), "delivered spooled notifications");
                checker.wake();
            }
            Err(e) => {
                tracing::warn!(error = %e, dir = %spool.dir().display(), "spool sweep failed; retrying")
            }
        }
    }
}
