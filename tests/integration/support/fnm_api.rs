//! A stand-in FastNetMon Advanced REST API on 127.0.0.1:0, as the service sees it: Basic auth,
//! `GET /blackhole` and `GET /single_host_counters[_v6]/<ip>` in FastNetMon's envelopes. A test
//! sets the ban list and counters, and injects latency and failures per host or for all of it.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use serde_json::json;

pub const USER: &str = "admin";
pub const PASSWORD: &str = "fnm-api-secret";

/// Per-second rates, as `/single_host_counters` reports them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub in_bytes: u64,
    pub out_bytes: u64,
    pub in_packets: u64,
    pub out_packets: u64,
}

impl Counters {
    pub fn incoming(bytes: u64, packets: u64) -> Counters {
        Counters {
            in_bytes: bytes,
            in_packets: packets,
            ..Counters::default()
        }
    }
}

#[derive(Default)]
struct Inner {
    /// ip -> blackhole uuid
    banned: BTreeMap<IpAddr, String>,
    /// Entries listed as they are (subnets, garbage).
    raw_entries: Vec<String>,
    counters: HashMap<IpAddr, Counters>,
    latency: HashMap<IpAddr, Duration>,
    failing: HashMap<IpAddr, u16>,
    /// Every request answered with this status.
    api_failure: Option<u16>,
    /// Every request waits this long before answering.
    api_latency: Option<Duration>,
    /// Every request answers 200 with a body that is not FastNetMon's JSON.
    garbage: bool,
    /// `/blackhole` answers served since the last restart.
    lists_since_restart: u64,
    counter_requests: u64,
    in_flight: usize,
    max_in_flight: usize,
}

type Task = Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>;

#[derive(Clone)]
pub struct FnmApi {
    pub url: String,
    addr: std::net::SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: Task,
}

impl Drop for FnmApi {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            if let Some(t) = self.task.lock().ok().and_then(|mut t| t.take()) {
                t.abort();
            }
        }
    }
}

fn app(inner: Shared) -> Router {
    Router::new()
        .route("/blackhole", get(blackhole))
        .route("/single_host_counters/{ip}", get(counters))
        .route("/single_host_counters_v6/{ip}", get(counters))
        .layer(axum::middleware::from_fn_with_state(
            inner.clone(),
            api_wide,
        ))
        .with_state(inner)
}

impl FnmApi {
    pub async fn start() -> FnmApi {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = app(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        FnmApi {
            url: format!("http://{addr}"),
            addr,
            inner,
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// The API goes down: its port refuses connections until [`FnmApi::up`].
    pub fn down(&self) {
        if let Some(t) = self.task.lock().expect("lock").take() {
            t.abort();
        }
    }

    /// The API comes back on the same port, with the same state.
    pub async fn up(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("rebind {}: {e}", self.addr),
            }
        };
        let router = app(self.inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        *self.task.lock().expect("lock") = Some(task);
    }

    /// Every request waits `d` before answering (None: answers at once again).
    pub fn slow(&self, d: Option<Duration>) {
        self.with(|s| s.api_latency = d);
    }

    /// Every request answers 200 with garbage instead of FastNetMon's JSON.
    pub fn garbage(&self, on: bool) {
        self.with(|s| s.garbage = on);
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("lock"))
    }

    pub fn ban(&self, ip: &str) {
        let ip: IpAddr = ip.parse().expect("ip");
        self.with(|s| {
            let uuid = format!("00000000-0000-4000-8000-{:012x}", s.banned.len() + 1);
            s.banned.insert(ip, uuid);
        });
    }

    pub fn unban(&self, ip: &str) {
        let ip: IpAddr = ip.parse().expect("ip");
        self.with(|s| s.banned.remove(&ip));
    }

    /// An entry listed verbatim (`10.9.0.0/24`, garbage).
    pub fn list_raw(&self, entry: &str) {
        self.with(|s| s.raw_entries.push(entry.to_string()));
    }

    /// A FastNetMon restart as Community does it: the ban list and counters are gone, no unban
    /// is sent.
    pub fn restart(&self) {
        self.with(|s| {
            s.banned.clear();
            s.raw_entries.clear();
            s.counters.clear();
            s.lists_since_restart = 0;
        });
    }

    pub fn set_counters(&self, ip: &str, c: Counters) {
        let ip: IpAddr = ip.parse().expect("ip");
        self.with(|s| s.counters.insert(ip, c));
    }

    pub fn set_latency(&self, ip: &str, d: Duration) {
        let ip: IpAddr = ip.parse().expect("ip");
        self.with(|s| s.latency.insert(ip, d));
    }

    /// `/single_host_counters/<ip>` answers `status` (None: answers again).
    pub fn fail_host(&self, ip: &str, status: Option<u16>) {
        let ip: IpAddr = ip.parse().expect("ip");
        self.with(|s| match status {
            Some(code) => s.failing.insert(ip, code),
            None => s.failing.remove(&ip),
        });
    }

    /// Every request answers `status` (None: the API works again).
    pub fn fail_api(&self, status: Option<u16>) {
        self.with(|s| s.api_failure = status);
    }

    pub fn lists_since_restart(&self) -> u64 {
        self.with(|s| s.lists_since_restart)
    }

    pub fn counter_requests(&self) -> u64 {
        self.with(|s| s.counter_requests)
    }

    pub fn max_in_flight(&self) -> usize {
        self.with(|s| s.max_in_flight)
    }
}

type Shared = Arc<Mutex<Inner>>;

/// Faults that apply to the whole API: latency, then garbage.
async fn api_wide(
    State(state): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (latency, garbage) = {
        let s = state.lock().expect("lock");
        (s.api_latency, s.garbage)
    };
    if let Some(d) = latency {
        tokio::time::sleep(d).await;
    }
    if garbage {
        return (StatusCode::OK, "<html><body>502 Bad Gateway</body></html>").into_response();
    }
    next.run(req).await
}

fn authorized(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(b64) = value.strip_prefix("Basic ") else {
        return false;
    };
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .is_some_and(|s| s == format!("{USER}:{PASSWORD}"))
}

fn failure(status: u16, text: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(json!({ "success": false, "error_text": text })),
    )
        .into_response()
}

async fn blackhole(State(state): State<Shared>, headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return failure(401, "Authentication failed");
    }
    let mut s = state.lock().expect("lock");
    if let Some(code) = s.api_failure {
        return failure(code, "injected failure");
    }
    s.lists_since_restart += 1;
    let mut values: Vec<_> = s
        .banned
        .iter()
        .map(|(ip, uuid)| {
            let len = if ip.is_ipv4() { 32 } else { 128 };
            json!({ "uuid": uuid, "ip": format!("{ip}/{len}") })
        })
        .collect();
    values.extend(
        s.raw_entries
            .iter()
            .map(|e| json!({ "uuid": "raw", "ip": e })),
    );
    Json(json!({ "success": true, "values": values })).into_response()
}

/// Decrements the in-flight count when the request ends, however it ends.
struct InFlight(Shared);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.lock() {
            s.in_flight -= 1;
        }
    }
}

async fn counters(
    State(state): State<Shared>,
    Path(ip): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return failure(401, "Authentication failed");
    }
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return failure(400, "bad IP");
    };
    let (latency, fail, api_failure, c) = {
        let mut s = state.lock().expect("lock");
        s.counter_requests += 1;
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        (
            s.latency.get(&ip).copied(),
            s.failing.get(&ip).copied(),
            s.api_failure,
            s.counters.get(&ip).copied().unwrap_or_default(),
        )
    };
    let _guard = InFlight(state.clone());
    if let Some(code) = api_failure {
        return failure(code, "injected failure");
    }
    if let Some(d) = latency {
        tokio::time::sleep(d).await;
    }
    if let Some(code) = fail {
        return failure(code, "injected host failure");
    }
    Json(json!({
        "success": true,
        "object": {
            "in_bytes": c.in_bytes,
            "out_bytes": c.out_bytes,
            "in_packets": c.in_packets,
            "out_packets": c.out_packets,
            "in_flows": 0,
            "out_flows": 0,
            "tcp_in_bytes": 0,
            "udp_in_bytes": c.in_bytes,
        }
    }))
    .into_response()
}
