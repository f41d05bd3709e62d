//! Live sources beside the notifications: FastNetMon Advanced's REST API (ban list and per-host
//! counters, polled), its InfluxDB export (pushed to `POST /write`) and Community's gRPC ban
//! list. Each source keeps its health here, for `/readyz` and `/metrics`.

pub mod advanced;
pub mod community;
pub mod influxdb;
mod reconcile;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

pub use reconcile::{ReconcileReport, Reconciler, ABSENT_POLLS};

use crate::clock::{ms, rfc3339, Millis};
use crate::config::Config;
use crate::fastnetmon::notification::{parse_host_ip, parse_network, snippet};

/// Sample source and health names, as they appear in `/api/v1/hosts`, `/readyz` and metrics.
pub const ADVANCED: &str = "fastnetmon_api";
pub const COMMUNITY: &str = "fastnetmon_grpc";
pub const INFLUXDB: &str = "influxdb";

/// FastNetMon's ban list as one source reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BanList {
    pub hosts: Vec<IpAddr>,
    /// Entries that are not one host (a blackholed subnet, garbage), with why.
    pub skipped: Vec<String>,
}

impl BanList {
    /// Logs the entries that are not one host (once per poll, the first named).
    pub fn warn_skipped(&self, source: &str) {
        if let Some(first) = self.skipped.first() {
            tracing::warn!(
                source,
                skipped = self.skipped.len(),
                first = %first,
                "ban-list entries that are not hosts were ignored"
            );
        }
    }

    /// From FastNetMon's entries: `10.1.2.3/32`, `2001:db8::1/128` or a bare address.
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = &'a str>) -> BanList {
        let mut list = BanList::default();
        for entry in entries {
            match parse_host_ip(entry) {
                Some(ip) => list.hosts.push(ip),
                None if parse_network(entry).is_some() => list
                    .skipped
                    .push(format!("`{}` is a network, not a host", snippet(entry))),
                None => list
                    .skipped
                    .push(format!("`{}` is not an IP address", snippet(entry))),
            }
        }
        list.hosts.sort();
        list.hosts.dedup();
        list
    }
}

/// Whether a source is polled by us or pushes to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Poll,
    Push,
}

/// What one successful cycle (poll or push) saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cycle {
    pub ms: f64,
    /// Hosts in FastNetMon's ban list (pollers) or host points in the push.
    pub hosts: u64,
    /// Samples stored.
    pub samples: u64,
    /// Hosts whose counters could not be had (error, timeout, cut off by the cycle deadline).
    pub host_errors: u64,
    /// The last of those errors.
    pub host_error: Option<String>,
    /// Lines of a push that could not be used.
    pub bad_lines: u64,
}

#[derive(Debug, Clone, Default)]
struct Health {
    enabled: bool,
    enabled_at: Millis,
    last_success: Option<Millis>,
    last_error: Option<String>,
    last_error_at: Option<Millis>,
    polls: u64,
    errors: u64,
    last_cycle_ms: Option<f64>,
    hosts: u64,
    samples: u64,
    host_errors: u64,
    bad_lines: u64,
    banned: u64,
    unbanned: u64,
}

/// One source's health. Cheap to clone: clones share the counters.
#[derive(Clone)]
pub struct SourceHealth {
    name: &'static str,
    kind: Kind,
    /// Unhealthy when the last success is older than this.
    stale_after: Duration,
    inner: Arc<Mutex<Health>>,
}

/// A source's health as `/readyz` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SourceView {
    pub name: &'static str,
    pub kind: Kind,
    pub enabled: bool,
    pub healthy: bool,
    pub last_success: Option<String>,
    /// Seconds since the last success.
    pub lag_seconds: Option<f64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub polls: u64,
    pub errors: u64,
    pub last_cycle_ms: Option<f64>,
    pub hosts: u64,
    pub samples: u64,
    pub host_errors: u64,
    pub bad_lines: u64,
    /// Hosts banned and unbanned by ban-list reconciliation since start.
    pub banned: u64,
    pub unbanned: u64,
    pub stale_after_seconds: f64,
}

impl SourceHealth {
    pub fn new(name: &'static str, kind: Kind, stale_after: Duration) -> SourceHealth {
        SourceHealth {
            name,
            kind,
            stale_after,
            inner: Arc::new(Mutex::new(Health::default())),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    fn update(&self, f: impl FnOnce(&mut Health)) {
        if let Ok(mut h) = self.inner.lock() {
            f(&mut h);
        }
    }

    fn read(&self) -> Health {
        self.inner.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// From now on the source is expected to report (its grace period starts now).
    pub fn enable(&self, now: Millis) {
        self.update(|h| {
            if !h.enabled {
                h.enabled = true;
                h.enabled_at = now;
            }
        });
    }

    pub fn is_enabled(&self) -> bool {
        self.read().enabled
    }

    pub fn success(&self, now: Millis, cycle: Cycle) {
        crate::metrics::metrics().source_poll(self.name, cycle.ms / 1000.0, true);
        self.update(|h| {
            h.polls += 1;
            h.last_success = Some(now);
            h.last_cycle_ms = Some(cycle.ms);
            h.hosts = cycle.hosts;
            h.samples = cycle.samples;
            h.host_errors = cycle.host_errors;
            h.bad_lines += cycle.bad_lines;
            if let Some(e) = cycle.host_error {
                h.last_error = Some(e);
                h.last_error_at = Some(now);
            }
        });
    }

    pub fn failure(&self, now: Millis, error: &str, cycle_ms: f64) {
        crate::metrics::metrics().source_poll(self.name, cycle_ms / 1000.0, false);
        self.update(|h| {
            h.polls += 1;
            h.errors += 1;
            h.last_cycle_ms = Some(cycle_ms);
            h.last_error = Some(error.to_string());
            h.last_error_at = Some(now);
        });
    }

    /// An error that does not fail the cycle (a write of samples, one reconciliation step).
    pub fn note_error(&self, now: Millis, error: &str) {
        self.update(|h| {
            h.last_error = Some(error.to_string());
            h.last_error_at = Some(now);
        });
    }

    pub fn reconciled(&self, report: &ReconcileReport) {
        self.update(|h| {
            h.banned += report.banned as u64;
            h.unbanned += report.unbanned as u64;
        });
    }

    /// Enabled, and a success (or the start) no older than `stale_after`.
    pub fn healthy(&self, now: Millis) -> bool {
        let h = self.read();
        Self::healthy_of(&h, self.stale_after, now)
    }

    fn healthy_of(h: &Health, stale_after: Duration, now: Millis) -> bool {
        if !h.enabled {
            return true;
        }
        let since = h.last_success.unwrap_or(h.enabled_at);
        now - since <= ms(stale_after)
    }

    /// The last success as Unix milliseconds (metrics).
    pub fn last_success(&self) -> Option<Millis> {
        self.read().last_success
    }

    pub fn view(&self, now: Millis) -> SourceView {
        let h = self.read();
        SourceView {
            name: self.name,
            kind: self.kind,
            enabled: h.enabled,
            healthy: Self::healthy_of(&h, self.stale_after, now),
            last_success: h.last_success.map(rfc3339),
            lag_seconds: h.last_success.map(|t| (now - t).max(0) as f64 / 1000.0),
            last_error: h.last_error.clone(),
            last_error_at: h.last_error_at.map(rfc3339),
            polls: h.polls,
            errors: h.errors,
            last_cycle_ms: h.last_cycle_ms,
            hosts: h.hosts,
            samples: h.samples,
            host_errors: h.host_errors,
            bad_lines: h.bad_lines,
            banned: h.banned,
            unbanned: h.unbanned,
            stale_after_seconds: self.stale_after.as_secs_f64(),
        }
    }
}

/// The health of every source. Pollers are enabled when configured; the InfluxDB push once the
/// first push arrives (whether FastNetMon pushes is its configuration, not ours).
#[derive(Clone)]
pub struct Sources {
    pub advanced: SourceHealth,
    pub community: SourceHealth,
    pub influxdb: SourceHealth,
}

/// A poller is stale after missing this many intervals.
const STALE_INTERVALS: u32 = 3;

impl Sources {
    pub fn new(config: &Config, now: Millis) -> Sources {
        let f = &config.fastnetmon;
        let sources = Sources {
            advanced: SourceHealth::new(
                ADVANCED,
                Kind::Poll,
                f.poll_interval.saturating_mul(STALE_INTERVALS),
            ),
            community: SourceHealth::new(
                COMMUNITY,
                Kind::Poll,
                f.community_poll_interval.saturating_mul(STALE_INTERVALS),
            ),
            // Older pushes give samples that no longer count anyway.
            influxdb: SourceHealth::new(INFLUXDB, Kind::Push, config.thresholds.sample_max_age),
        };
        if f.api_url.is_some() {
            sources.advanced.enable(now);
        }
        if f.community_grpc.is_some() {
            sources.community.enable(now);
        }
        sources
    }

    pub fn all(&self) -> [&SourceHealth; 3] {
        [&self.advanced, &self.community, &self.influxdb]
    }

    pub fn views(&self, now: Millis) -> BTreeMap<&'static str, SourceView> {
        self.all()
            .into_iter()
            .map(|s| (s.name, s.view(now)))
            .collect()
    }

    /// Names of enabled sources that are not healthy.
    pub fn unhealthy(&self, now: Millis) -> Vec<&'static str> {
        self.all()
            .into_iter()
            .filter(|s| !s.healthy(now))
            .map(|s| s.name)
            .collect()
    }
}

/// An error with its causes, one line (reqwest and hyper hide the useful part in `source()`).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// A source polled on an interval.
pub(crate) trait Poller {
    /// One cycle; its outcome is recorded in the source's health by the poller itself.
    fn cycle(&mut self) -> impl std::future::Future<Output = ()> + Send;
}

/// Runs `poller` every `interval` until `shutdown`; a cycle in flight is abandoned on shutdown.
/// A late cycle delays the next one instead of bunching them up.
pub(crate) async fn run_every(
    poller: &mut impl Poller,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {
                tokio::select! {
                    _ = shutdown.changed() => break,
                    _ = poller.cycle() => {}
                }
            }
        }
        if *shutdown.borrow() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_list_takes_hosts_and_skips_the_rest() {
        let list = BanList::from_entries([
            "10.10.10.5/32",
            "2001:db8::1/128",
            "10.0.0.9",
            "10.10.10.5/32",
            "10.20.0.0/24",
            "garbage",
        ]);
        let want: Vec<IpAddr> = ["10.0.0.9", "10.10.10.5", "2001:db8::1"]
            .iter()
            .map(|s| s.parse().expect("ip"))
            .collect();
        assert_eq!(list.hosts, want);
        assert_eq!(list.skipped.len(), 2, "{:?}", list.skipped);
        assert!(list.skipped[0].contains("network"));
    }

    #[test]
    fn a_poller_is_unhealthy_after_three_intervals_without_success() {
        let h = SourceHealth::new(ADVANCED, Kind::Poll, Duration::from_secs(15));
        assert!(h.healthy(0), "disabled sources are never degraded");
        h.enable(1_000);
        assert!(h.healthy(10_000), "grace period after start");
        assert!(!h.healthy(17_000));
        h.success(
            17_000,
            Cycle {
                hosts: 3,
                ..Cycle::default()
            },
        );
        assert!(h.healthy(20_000));
        h.failure(21_000, "HTTP 500", 1.0);
        let v = h.view(25_000);
        assert!(v.healthy);
        assert_eq!((v.polls, v.errors, v.hosts), (2, 1, 3));
        assert_eq!(v.lag_seconds, Some(8.0));
        assert_eq!(v.last_error.as_deref(), Some("HTTP 500"));
        assert!(!h.healthy(33_000));
    }
}
