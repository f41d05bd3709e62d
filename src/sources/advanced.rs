//! FastNetMon Advanced's REST API, polled: `GET /blackhole` (the ban list, reconciled) and then
//! `GET /single_host_counters/<ip>` for every banned host, a bounded number at a time, each with
//! its own timeout, the whole cycle within one poll interval. Optionally the ban list alone in
//! between (`ban_list_interval`), so that new bans do not wait for the next full poll.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, USER_AGENT};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use futures_util::stream::{self, StreamExt};
use serde_json::Value;
use tokio::sync::watch;

use super::reconcile::Follow;
use super::{error_chain, BanList, Cycle, Reconciler, SourceHealth, ADVANCED};
use crate::checker::CheckerHandle;
use crate::clock::{ms, now_ms, Millis};
use crate::config::Config;
use crate::decision::{crossing, Policy};
use crate::fastnetmon::notification::snippet;
use crate::fastnetmon::Traffic;
use crate::store::{SampleIn, Store, StoreError};

/// A write of samples in flight: how many, and the outcome.
type Flush =
    std::pin::Pin<Box<dyn std::future::Future<Output = (usize, Result<(), StoreError>)> + Send>>;

/// Largest `/blackhole` answer read (about 100 bytes a host).
const MAX_LIST_BYTES: usize = 32 * 1024 * 1024;
/// Largest `/single_host_counters` answer read.
const MAX_COUNTERS_BYTES: usize = 1024 * 1024;

/// A failed call to the API, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ApiError(pub String);

/// A client of FastNetMon Advanced's REST API (HTTP Basic auth).
#[derive(Clone)]
pub struct AdvancedApi {
    http: Client<QuickAckConnector, Empty<Bytes>>,
    base: String,
    authorization: HeaderValue,
    timeout: Duration,
}

impl AdvancedApi {
    pub fn new(
        base: &str,
        user: &str,
        password: &str,
        timeout: Duration,
        concurrency: usize,
    ) -> Result<AdvancedApi, ApiError> {
        // No proxy from the environment: the API listens on loopback or a management network.
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(concurrency)
            .build(QuickAckConnector(connector));
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut authorization = HeaderValue::from_str(&format!("Basic {credentials}"))
            .map_err(|_| ApiError("the API credentials do not fit in an HTTP header".into()))?;
        authorization.set_sensitive(true);
        Ok(AdvancedApi {
            http,
            base: base.trim_end_matches('/').to_string(),
            authorization,
            timeout,
        })
    }

    /// `GET /blackhole`: the hosts FastNetMon has blackholed.
    pub async fn ban_list(&self) -> Result<BanList, ApiError> {
        let body = self.get("/blackhole", MAX_LIST_BYTES).await?;
        parse_blackhole(&body).map_err(|e| ApiError(format!("GET /blackhole: {e}")))
    }

    /// `GET /single_host_counters/<ip>` (`single_host_counters_v6` for IPv6): per-second rates.
    pub async fn host_counters(&self, ip: IpAddr) -> Result<Traffic, ApiError> {
        let path = match ip {
            IpAddr::V4(_) => format!("/single_host_counters/{ip}"),
            IpAddr::V6(_) => format!("/single_host_counters_v6/{ip}"),
        };
        let body = self.get(&path, MAX_COUNTERS_BYTES).await?;
        parse_counters(&body).map_err(|e| ApiError(format!("GET {path}: {e}")))
    }

    async fn get(&self, path: &str, limit: usize) -> Result<Vec<u8>, ApiError> {
        let call = async {
            let uri: Uri = format!("{}{path}", self.base)
                .parse()
                .map_err(|e| ApiError(format!("GET {path}: not a valid URL: {e}")))?;
            let req = Request::get(uri)
                .header(AUTHORIZATION, self.authorization.clone())
                .header(USER_AGENT, USER_AGENT_VALUE)
                .body(Empty::new())
                .map_err(|e| ApiError(format!("GET {path}: {e}")))?;
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| ApiError(format!("GET {path}: {}", error_chain(&e))))?;
            let status = resp.status();
            let body = read_limited(resp, limit)
                .await
                .map_err(|e| ApiError(format!("GET {path}: {e}")))?;
            if status == StatusCode::UNAUTHORIZED {
                return Err(ApiError(format!(
                    "GET {path}: HTTP 401: FastNetMon refused the credentials (check \
                     fastnetmon.api_user and fastnetmon.api_password)"
                )));
            }
            if !status.is_success() {
                let text = error_text(&body)
                    .unwrap_or_else(|| snippet(&String::from_utf8_lossy(&body)).to_string());
                return Err(ApiError(format!(
                    "GET {path}: HTTP {}: {text}",
                    status.as_u16()
                )));
            }
            Ok(body)
        };
        // One bound for the whole call: connecting, the answer's headers and its body.
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(ApiError(format!(
                    "GET {path}: timed out after {}",
                    humantime::format_duration(self.timeout)
                )))
            })
    }
}

const USER_AGENT_VALUE: &str = concat!("fnm-escalator/", env!("CARGO_PKG_VERSION"));

async fn read_limited(resp: Response<Incoming>, limit: usize) -> Result<Vec<u8>, String> {
    let too_large = || format!("answer larger than {limit} bytes");
    let declared = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(resp.into_body(), limit).collect().await {
        Ok(body) => Ok(body.to_bytes().to_vec()),
        Err(e) if e.is::<LengthLimitError>() => Err(too_large()),
        Err(e) => Err(format!("reading the answer: {}", error_chain(e.as_ref()))),
    }
}

/// Connects as hyper-util's `HttpConnector` does, and hands out connections that ask for
/// immediate ACKs.
///
/// Why: an API server that writes a response's headers and body in two `send`s (Python's
/// `http.server` does, and so may any server without `TCP_NODELAY`) holds the body back under
/// Nagle until the headers are acknowledged, while Linux delays that ACK by up to 40 ms on a
/// kept-alive connection. Every request then took ~40 ms however idle both ends were, so a poll
/// of 1,000 banned hosts was bound by `api_concurrency` x 25 requests/s (measured: 43 ms per
/// request against `mock_fnm_api.py`, 0.09 ms with the immediate ACK). `TCP_QUICKACK` is not
/// sticky, so it is set again before every read; elsewhere than Linux this is a no-op.
#[derive(Clone)]
struct QuickAckConnector(HttpConnector);

impl tower::Service<Uri> for QuickAckConnector {
    type Response = QuickAck;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<QuickAck, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { Ok(QuickAck(connecting.await?)) })
    }
}

/// A connection that re-arms `TCP_QUICKACK` before each read (see [`QuickAckConnector`]).
struct QuickAck(TokioIo<TcpStream>);

impl QuickAck {
    fn arm(&self) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            // Best effort: without it the answer is only slower.
            let _ = socket2::SockRef::from(self.0.inner()).set_tcp_quickack(true);
        }
    }
}

impl hyper::rt::Read for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.arm();
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

impl Connection for QuickAck {
    fn connected(&self) -> Connected {
        self.0.connected()
    }
}

/// FastNetMon's `{"success": false, "error_text": "..."}`.
fn error_text(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("error_text")?
        .as_str()
        .map(|s| snippet(s).to_string())
}

fn envelope(body: &[u8]) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("answer is not JSON: {e}"))?;
    if v.get("success").and_then(Value::as_bool) == Some(false) {
        let text = v
            .get("error_text")
            .and_then(Value::as_str)
            .unwrap_or("no error_text");
        return Err(format!("FastNetMon says: {}", snippet(text)));
    }
    Ok(v)
}

/// `{"success":true,"values":[{"uuid":"…","ip":"10.1.2.3/32"}]}`. Only an explicit list counts:
/// an answer without one is an error, never an empty ban list (which would unban everything).
pub fn parse_blackhole(body: &[u8]) -> Result<BanList, String> {
    let v = envelope(body)?;
    let values = v
        .get("values")
        .and_then(Value::as_array)
        .ok_or("no `values` list in the answer")?;
    let mut bad = Vec::new();
    let entries: Vec<&str> = values
        .iter()
        .filter_map(|e| {
            let ip = e.get("ip").and_then(Value::as_str);
            if ip.is_none() {
                bad.push(format!("entry without `ip`: {}", snippet(&e.to_string())));
            }
            ip
        })
        .collect();
    let mut list = BanList::from_entries(entries);
    list.skipped.extend(bad);
    Ok(list)
}

/// `{"success":true,"object":{"in_bytes":…,"out_bytes":…,"in_packets":…,"out_packets":…}}`,
/// bytes and packets per second. All four are required: zeros made up for a missing field
/// would look like a quiet host.
pub fn parse_counters(body: &[u8]) -> Result<Traffic, String> {
    let v = envelope(body)?;
    let object = v
        .get("object")
        .filter(|o| o.is_object())
        .ok_or("no `object` in the answer")?;
    let rate = |key: &str| -> Result<u64, String> {
        let value = object
            .get(key)
            .ok_or_else(|| format!("no `{key}` in the counters"))?;
        match (value.as_u64(), value.as_f64()) {
            (Some(n), _) => Ok(n),
            // `as` saturates; NaN and infinities are not JSON.
            (None, Some(x)) if x >= 0.0 => Ok(x.round() as u64),
            _ => Err(format!(
                "`{key}` is not a rate: {}",
                snippet(&value.to_string())
            )),
        }
    };
    Ok(Traffic {
        in_bps: rate("in_bytes")?.saturating_mul(8),
        out_bps: rate("out_bytes")?.saturating_mul(8),
        in_pps: rate("in_packets")?,
        out_pps: rate("out_packets")?,
    })
}

/// What one poll did (tests and logs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PollReport {
    pub ok: bool,
    pub listed: usize,
    pub banned: usize,
    pub unbanned: usize,
    /// Hosts whose counters were asked for.
    pub polled: usize,
    pub samples: usize,
    pub host_errors: usize,
    /// Hosts not asked because the cycle's deadline came first (and, rarely, asked but not
    /// answered within a further `poll_interval`).
    pub cut_off: usize,
    pub ms: f64,
}

/// The poll loop of one FastNetMon Advanced.
pub struct AdvancedPoller {
    api: AdvancedApi,
    store: Store,
    policy: Arc<Policy>,
    checker: CheckerHandle,
    health: SourceHealth,
    reconciler: Option<Reconciler>,
    interval: Duration,
    /// The ban list alone, between full polls (zero: only with them).
    list_interval: Duration,
    concurrency: usize,
    history_every: Millis,
    cuts: CutWarnings,
}

/// How often a sweep too long for one cycle is warned about: it cuts every cycle while it
/// lasts (30,000 banned hosts at a 1 s interval), and a line a second says nothing new.
const CUT_WARN_EVERY: Duration = Duration::from_secs(60);

/// Cycles cut at their deadline since the last warning about it.
#[derive(Debug, Default)]
struct CutWarnings {
    warned_at: Option<Instant>,
    since: CutsSince,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct CutsSince {
    cycles: u64,
    hosts: u64,
}

/// What a cycle cut at its deadline left out: the source's last host error, and the warning.
fn cut_message(cut_off: usize, total: usize, interval: Duration) -> String {
    format!(
        "{cut_off} of {total} hosts not polled: the cycle reached its deadline of one \
         poll_interval ({})",
        humantime::format_duration(interval)
    )
}

impl CutWarnings {
    /// Counts a cycle that left `hosts` unpolled; what to warn about now, if a warning is due
    /// (the first cut, then at most one per `CUT_WARN_EVERY`).
    fn note(&mut self, now: Instant, hosts: usize) -> Option<CutsSince> {
        self.since.cycles += 1;
        self.since.hosts += hosts as u64;
        if self
            .warned_at
            .is_some_and(|at| now.saturating_duration_since(at) < CUT_WARN_EVERY)
        {
            return None;
        }
        self.warned_at = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

impl AdvancedPoller {
    /// None when `fastnetmon.api_url` is unset.
    pub fn new(
        config: &Config,
        store: Store,
        policy: Arc<Policy>,
        checker: CheckerHandle,
        health: SourceHealth,
    ) -> Result<Option<AdvancedPoller>, ApiError> {
        let f = &config.fastnetmon;
        let Some(url) = &f.api_url else {
            return Ok(None);
        };
        let api = AdvancedApi::new(
            url,
            &f.api_user,
            &f.api_password,
            f.api_timeout,
            f.api_concurrency,
        )?;
        Ok(Some(AdvancedPoller {
            api,
            store,
            policy,
            checker,
            health,
            reconciler: f.reconcile_ban_list.then(|| {
                Reconciler::new(
                    ADVANCED,
                    "fastnetmon-api",
                    "FastNetMon's ban list (Advanced API /blackhole)",
                )
            }),
            interval: f.poll_interval,
            list_interval: f.ban_list_interval,
            concurrency: f.api_concurrency.max(1),
            history_every: ms(config.samples.history_interval),
            cuts: CutWarnings::default(),
        }))
    }

    /// Polls every `poll_interval` until `shutdown`; a cycle in flight is abandoned on shutdown.
    /// With `ban_list_interval` (and reconciliation on), the ban list alone in between.
    pub async fn run(mut self, shutdown: watch::Receiver<bool>) {
        let list_polls = !self.list_interval.is_zero() && self.reconciler.is_some();
        tracing::info!(
            url = %self.api.base,
            interval = %humantime::format_duration(self.interval),
            ban_list_interval = %humantime::format_duration(if list_polls {
                self.list_interval
            } else {
                self.interval
            }),
            reconcile = self.reconciler.is_some(),
            "polling FastNetMon Advanced"
        );
        let interval = self.interval;
        if list_polls {
            self.run_with_list_polls(shutdown).await;
        } else {
            super::run_every(&mut self, interval, shutdown).await;
        }
    }

    /// Full polls every `poll_interval`, and the ban list alone every `ban_list_interval` in
    /// between (counted from the last poll of either kind). Late polls delay the next ones
    /// instead of bunching them up.
    async fn run_with_list_polls(&mut self, mut shutdown: watch::Receiver<bool>) {
        let mut full = tokio::time::interval(self.interval);
        full.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut list = tokio::time::interval(self.list_interval);
        list.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // A full poll reads the list too: when both are due, it goes first.
                biased;
                _ = shutdown.changed() => break,
                _ = full.tick() => {
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        _ = self.poll() => {}
                    }
                    list.reset();
                }
                _ = list.tick() => {
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        _ = self.poll_list() => {}
                    }
                }
            }
            if *shutdown.borrow() {
                break;
            }
        }
    }

    /// A reconciliation that failed: logged, and noted in the source's health.
    fn reconcile_failed(&self, e: &StoreError) {
        let msg = format!("reconciling the ban list: {e}");
        tracing::error!(source = ADVANCED, error = %e, "ban-list reconciliation failed");
        self.health.note_error(now_ms(), &msg);
    }

    /// The ban list alone: hosts it lists that are not banned here are banned, and their
    /// counters asked at once, instead of at the next full poll. Nothing is unbanned (full
    /// polls count absences). Whether FastNetMon answers is the full polls' to report in the
    /// source's health: a failed read of the list here is only logged at debug, and the next
    /// full poll says it loudly.
    async fn poll_list(&mut self) -> PollReport {
        let started = Instant::now();
        let polled_at = now_ms();
        let mut report = PollReport::default();
        let Some(reconciler) = &mut self.reconciler else {
            return report;
        };
        let list = match self.api.ban_list().await {
            Ok(list) => list,
            Err(e) => {
                tracing::debug!(source = ADVANCED, error = %e, "ban-list poll failed");
                return report;
            }
        };
        report.listed = list.hosts.len();
        let followed = reconciler
            .follow(
                &list,
                &self.store,
                &self.health,
                &self.checker,
                polled_at,
                Follow::BansOnly,
            )
            .await;
        let banned = match followed {
            Ok(rec) => rec.banned_hosts,
            Err(e) => {
                self.reconcile_failed(&e);
                return report;
            }
        };
        report.banned = banned.len();
        if !banned.is_empty() {
            let deadline = tokio::time::Instant::now() + self.interval;
            self.poll_counters(banned, deadline, &mut report).await;
        }
        report.ok = true;
        report.ms = started.elapsed().as_secs_f64() * 1000.0;
        if report.banned > 0 {
            tracing::debug!(
                source = ADVANCED,
                listed = report.listed,
                banned = report.banned,
                samples = report.samples,
                ms = report.ms,
                "ban-list poll found new bans"
            );
        }
        report
    }

    /// One cycle: the ban list, reconciliation, then counters until the cycle's deadline.
    pub async fn poll(&mut self) -> PollReport {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.interval;
        let polled_at = now_ms();
        let elapsed_ms = |s: Instant| s.elapsed().as_secs_f64() * 1000.0;
        let mut report = PollReport::default();

        // The ban list first: it is also the health probe. When FastNetMon does not answer it,
        // thousands of counter requests would only time out one by one.
        let list = match self.api.ban_list().await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(source = ADVANCED, error = %e, "poll failed");
                report.ms = elapsed_ms(started);
                self.health.failure(now_ms(), &e.0, report.ms);
                return report;
            }
        };
        list.warn_skipped(ADVANCED);
        report.listed = list.hosts.len();

        if let Some(r) = &mut self.reconciler {
            let followed = r
                .follow(
                    &list,
                    &self.store,
                    &self.health,
                    &self.checker,
                    polled_at,
                    Follow::All,
                )
                .await;
            match followed {
                Ok(rec) => {
                    report.banned = rec.banned;
                    report.unbanned = rec.unbanned;
                }
                Err(e) => self.reconcile_failed(&e),
            }
        }

        // Hosts without a sample first, then the stalest: a new ban is asked before any host
        // is asked twice, and hosts a cycle did not reach (its deadline came first, or their
        // request failed) come first in the next one.
        let mut hosts: Vec<(Option<Millis>, IpAddr)> = match self.store.banned_now().await {
            Ok(rows) => rows
                .into_iter()
                .map(|b| (b.sample.map(|(at, _)| at), b.ip))
                .collect(),
            Err(e) => {
                let msg = format!("reading banned hosts: {e}");
                tracing::error!(source = ADVANCED, error = %e, "poll failed");
                report.ms = elapsed_ms(started);
                self.health.failure(now_ms(), &msg, report.ms);
                return report;
            }
        };
        hosts.sort_unstable();
        let hosts: Vec<IpAddr> = hosts.into_iter().map(|(_, ip)| ip).collect();
        let total = hosts.len();
        let last_host_error = self.poll_counters(hosts, deadline, &mut report).await;
        if report.cut_off > 0 {
            if let Some(since) = self.cuts.note(Instant::now(), report.cut_off) {
                tracing::warn!(
                    source = ADVANCED,
                    cycles_cut = since.cycles,
                    hosts_not_polled = since.hosts,
                    "{}; {} cycle(s) cut, {} host polls missed, since the last such warning",
                    cut_message(report.cut_off, total, self.interval),
                    since.cycles,
                    since.hosts,
                );
            }
        }

        report.ok = true;
        report.ms = elapsed_ms(started);
        self.health.success(
            now_ms(),
            Cycle {
                ms: report.ms,
                hosts: report.listed as u64,
                samples: report.samples as u64,
                host_errors: (report.host_errors + report.cut_off) as u64,
                host_error: last_host_error,
                bad_lines: 0,
            },
        );
        tracing::debug!(
            source = ADVANCED,
            listed = report.listed,
            polled = report.polled,
            samples = report.samples,
            host_errors = report.host_errors,
            cut_off = report.cut_off,
            ms = report.ms,
            "poll done"
        );
        report
    }

    /// Counters of `hosts`, `concurrency` requests in flight, until all answered or `deadline`.
    /// At the deadline no new request starts, and those in flight are still waited for: each
    /// ends within `api_timeout`, shorter than the interval, and their answers are samples the
    /// API has already paid for (dropping them lost `api_concurrency` answers in every cycle of
    /// a sweep too long for one). Samples are written in one transaction at the end, or as soon
    /// as one crosses a threshold (then the checker is woken). That write runs while requests
    /// go on: the crossing samples that arrive meanwhile are committed together by the next
    /// one, so a carpet bombing costs one transaction per write's duration, not one per host
    /// with the requests stalled behind it. Returns the last per-host error.
    async fn poll_counters(
        &self,
        hosts: Vec<IpAddr>,
        deadline: tokio::time::Instant,
        report: &mut PollReport,
    ) -> Option<String> {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
        let total = hosts.len();
        let api = &self.api;
        let asked = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let mut answers = stream::iter(hosts)
            .take_while(|_| std::future::ready(!stop.load(Relaxed)))
            .map(|ip| {
                // Called as a request is started, not before: counts the hosts asked.
                asked.fetch_add(1, Relaxed);
                async move { (ip, api.host_counters(ip).await, now_ms()) }
            })
            .buffer_unordered(self.concurrency);
        let mut pending: Vec<SampleIn> = Vec::new();
        let mut crossed_pending = false;
        let mut writing: Option<Flush> = None;
        let mut done = 0usize;
        let mut last_error = None;
        // Past the deadline, a last bound for the requests in flight (each has its own
        // `api_timeout`; this only guards against one that never ends).
        let mut until = deadline;
        loop {
            if crossed_pending && writing.is_none() {
                writing = Some(self.start_flush(std::mem::take(&mut pending)));
                crossed_pending = false;
            }
            let write_done = async {
                match writing.as_mut() {
                    Some(w) => w.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                written = write_done => {
                    writing = None;
                    report.samples += self.flushed(written, &mut last_error);
                    self.checker.wake();
                }
                answer = tokio::time::timeout_at(until, answers.next()) => match answer {
                    Ok(Some((ip, result, at))) => {
                        done += 1;
                        match result {
                            Ok(traffic) => {
                                crossed_pending |=
                                    crossing(ip, &traffic, &self.policy.limits_for(ip)).is_some();
                                pending.push(SampleIn {
                                    ip,
                                    at,
                                    source: ADVANCED.into(),
                                    traffic,
                                });
                            }
                            Err(e) => {
                                report.host_errors += 1;
                                tracing::debug!(source = ADVANCED, %ip, error = %e, "no counters");
                                last_error = Some(e.0);
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(_) if !stop.load(Relaxed) => {
                        stop.store(true, Relaxed);
                        until = deadline + self.interval;
                    }
                    // In flight a whole interval past the deadline: abandoned.
                    Err(_) => break,
                },
            }
        }
        drop(answers);
        report.polled = asked.load(Relaxed);
        if done < total {
            report.cut_off = total - done;
            last_error = Some(cut_message(report.cut_off, total, self.interval));
        }
        if let Some(w) = writing.take() {
            report.samples += self.flushed(w.await, &mut last_error);
            self.checker.wake();
        }
        report.samples += self.flush(&mut pending, &mut last_error).await;
        if crossed_pending {
            self.checker.wake();
        }
        last_error
    }

    /// Writes `batch` in one transaction, as a future the poll loop drives beside its requests.
    fn start_flush(&self, batch: Vec<SampleIn>) -> Flush {
        let store = self.store.clone();
        let every = self.history_every;
        Box::pin(async move {
            let n = batch.len();
            (n, store.record_live_samples(&batch, every).await)
        })
    }

    fn flushed(
        &self,
        (n, result): (usize, Result<(), StoreError>),
        last_error: &mut Option<String>,
    ) -> usize {
        match result {
            Ok(()) => {
                crate::metrics::metrics().samples_stored(ADVANCED, n as u64);
                n
            }
            Err(e) => {
                tracing::error!(source = ADVANCED, error = %e, "storing samples failed");
                *last_error = Some(format!("storing samples: {e}"));
                0
            }
        }
    }

    async fn flush(&self, pending: &mut Vec<SampleIn>, last_error: &mut Option<String>) -> usize {
        if pending.is_empty() {
            return 0;
        }
        let n = pending.len();
        let result = self
            .store
            .record_live_samples(pending, self.history_every)
            .await;
        pending.clear();
        self.flushed((n, result), last_error)
    }
}

impl super::Poller for AdvancedPoller {
    async fn cycle(&mut self) {
        self.poll().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn cut_cycles_are_warned_about_once_a_minute_with_what_was_missed() {
        let mut cuts = CutWarnings::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // The first cut is warned about at once.
        assert_eq!(
            cuts.note(t0, 500),
            Some(CutsSince {
                cycles: 1,
                hosts: 500
            })
        );
        // Every cycle of the next minute is counted, not warned about.
        for i in 1..60 {
            assert_eq!(cuts.note(t0 + s(i), 100 + i as usize), None);
        }
        // A minute after the warning, one line for all of them and this one.
        assert_eq!(
            cuts.note(t0 + s(60), 7),
            Some(CutsSince {
                cycles: 60,
                hosts: (1..60).map(|i| 100 + i).sum::<u64>() + 7
            })
        );
        assert_eq!(cuts.note(t0 + s(61), 1), None);
    }

    /// A one-connection HTTP server on loopback that answers every request with `head` and then
    /// `body` in two writes (as Python's `http.server` does), and records the requests.
    async fn two_write_server(
        head: String,
        body: Vec<u8>,
    ) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            let Ok((mut sock, _)) = listener.accept().await else {
                return seen;
            };
            let mut buf = vec![0u8; 64 * 1024];
            let mut pending = Vec::new();
            for _ in 0..16 {
                let n = match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buf[..n]);
                while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    seen.push(String::from_utf8_lossy(&pending[..end]).to_string());
                    pending.drain(..end + 4);
                    if sock.write_all(head.as_bytes()).await.is_err()
                        || sock.write_all(&body).await.is_err()
                    {
                        return seen;
                    }
                }
            }
            seen
        });
        (format!("http://{addr}"), task)
    }

    fn api(base: &str) -> AdvancedApi {
        AdvancedApi::new(base, "admin", "s3cret", Duration::from_secs(5), 4).expect("client")
    }

    #[tokio::test]
    async fn answers_written_in_two_parts_are_read_over_one_connection() {
        let body = br#"{"success":true,"object":{"in_bytes":125000,"out_bytes":0,"in_packets":10,"out_packets":0}}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let (base, server) = two_write_server(head, body.to_vec()).await;
        let api = api(&base);
        for _ in 0..3 {
            let t = api
                .host_counters("10.0.0.7".parse().expect("ip"))
                .await
                .expect("counters");
            assert_eq!((t.in_bps, t.in_pps), (1_000_000, 10));
        }
        drop(api);
        let seen = server.await.expect("server");
        assert_eq!(seen.len(), 3, "three requests, one connection: {seen:?}");
        let first = seen[0].to_ascii_lowercase();
        assert!(
            first.starts_with("get /single_host_counters/10.0.0.7 http/1.1"),
            "{first}"
        );
        // admin:s3cret
        assert!(
            first.contains("authorization: basic ywrtaw46cznjcmv0"),
            "{first}"
        );
        assert!(first.contains("user-agent: fnm-escalator/"), "{first}");
    }

    #[tokio::test]
    async fn oversized_answers_are_refused_with_their_limit() {
        let declared = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            MAX_COUNTERS_BYTES + 1
        );
        let (base, _server) = two_write_server(declared, Vec::new()).await;
        let e = api(&base)
            .host_counters("10.0.0.7".parse().expect("ip"))
            .await
            .expect_err("too large");
        assert!(e.0.contains("answer larger than"), "{e}");

        // No length announced: the body is counted as it arrives.
        let chunk = vec![b'x'; 256 * 1024];
        let mut body = Vec::new();
        for _ in 0..5 {
            body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            body.extend_from_slice(&chunk);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_string();
        let (base, _server) = two_write_server(head, body).await;
        let e = api(&base)
            .host_counters("10.0.0.7".parse().expect("ip"))
            .await
            .expect_err("too large");
        assert!(e.0.contains("answer larger than"), "{e}");
    }

    #[tokio::test]
    async fn a_closed_port_is_an_error_naming_the_call() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let e = api(&format!("http://{addr}"))
            .ban_list()
            .await
            .expect_err("refused");
        assert!(e.0.starts_with("GET /blackhole: "), "{e}");
        assert!(e.0.to_lowercase().contains("connect"), "{e}");
    }

    #[test]
    fn blackhole_list_as_fastnetmon_sends_it() {
        let body = br#"{"success":true,"values":[
            {"uuid":"2518758c-a751-4984-9aeb-c5a935422e91","ip":"10.1.2.3/32"},
            {"uuid":"312e3232-2e33-332e-3434-000000000000","ip":"2001:db8::5/128"},
            {"uuid":"x","ip":"10.9.0.0/24"},
            {"uuid":"y"}
        ]}"#;
        let list = parse_blackhole(body).expect("valid");
        let want: Vec<IpAddr> = vec![
            "10.1.2.3".parse().expect("ip"),
            "2001:db8::5".parse().expect("ip"),
        ];
        assert_eq!(list.hosts, want);
        assert_eq!(list.skipped.len(), 2, "{:?}", list.skipped);
        assert_eq!(
            parse_blackhole(br#"{"success":true,"values":[]}"#).map(|l| l.hosts.len()),
            Ok(0)
        );
    }

    #[test]
    fn a_blackhole_answer_without_a_list_is_an_error_not_an_empty_list() {
        for body in [
            &br#"{"success":true}"#[..],
            br#"{"success":true,"values":null}"#,
            br#"{"success":false,"error_text":"license expired"}"#,
            br#"<html>502 Bad Gateway</html>"#,
            b"",
        ] {
            assert!(
                parse_blackhole(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(
            parse_blackhole(br#"{"success":false,"error_text":"license expired"}"#)
                .unwrap_err()
                .contains("license expired")
        );
    }

    #[test]
    fn counters_are_bytes_and_packets_per_second() {
        let body = br#"{"success":true,"object":{"in_bytes":12500000,"out_bytes":1000,
            "in_packets":25000,"out_packets":3.6,"in_flows":7,"tcp_in_bytes":5}}"#;
        assert_eq!(
            parse_counters(body),
            Ok(Traffic {
                in_bps: 100_000_000,
                out_bps: 8000,
                in_pps: 25000,
                out_pps: 4
            })
        );
    }

    #[test]
    fn incomplete_counters_are_an_error_not_zeros() {
        for body in [
            &br#"{"success":true,"object":{"in_bytes":1,"out_bytes":1,"in_packets":1}}"#[..],
            br#"{"success":true,"object":{"in_bytes":-1,"out_bytes":1,"in_packets":1,"out_packets":1}}"#,
            br#"{"success":true,"object":{"in_bytes":"1","out_bytes":1,"in_packets":1,"out_packets":1}}"#,
            br#"{"success":true,"values":[]}"#,
            br#"{"success":false,"error_text":"no such host"}"#,
            b"{",
        ] {
            assert!(
                parse_counters(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
