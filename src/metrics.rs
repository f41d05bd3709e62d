//! Prometheus metrics: one registry for the process, conventional names and units
//! (`_total`, `_seconds`). Counters are updated where things happen; gauges that mirror the
//! ledger (banned hosts, escalations by state) are read from the store at scrape time.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Static strings: counted for every notification, so no allocation for the lookup.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    pub action: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `escalate`, `withdraw`, `adopt`.
    pub decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BgpLabels {
    pub backend: String,
    /// `announce`, `withdraw`, `list`.
    pub operation: String,
    /// `ok` or `error`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

pub struct Metrics {
    pub notifications: Family<NotificationLabels, Counter>,
    pub samples: Family<SourceLabels, Counter>,
    pub decisions: Family<DecisionLabels, Counter>,
    pub refusals: Family<RuleLabels, Counter>,
    pub bgp_operations: Family<BgpLabels, Counter>,
    pub source_polls: Family<SourceLabels, Counter>,
    pub source_errors: Family<SourceLabels, Counter>,
    pub source_poll_duration: Family<SourceLabels, Histogram>,
    /// 1 when an enabled source reported within its staleness bound (or is disabled), else 0.
    pub source_healthy: Family<SourceLabels, Gauge>,
    pub source_last_success: Family<SourceLabels, Gauge>,
    pub checker_cycle_duration: Histogram,
    pub checker_focused_cycle_duration: Histogram,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_request_duration: Family<RouteLabels, Histogram>,
    pub banned_hosts: Gauge,
    pub escalations: Family<StateLabels, Gauge>,
    registry: Registry,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("fnm_escalator");
        let m = Metrics {
            notifications: Family::default(),
            samples: Family::default(),
            decisions: Family::default(),
            refusals: Family::default(),
            bgp_operations: Family::default(),
            source_polls: Family::default(),
            source_errors: Family::default(),
            source_poll_duration: Family::new_with_constructor(latency_histogram),
            source_healthy: Family::default(),
            source_last_success: Family::default(),
            checker_cycle_duration: latency_histogram(),
            checker_focused_cycle_duration: latency_histogram(),
            http_requests: Family::default(),
            http_request_duration: Family::new_with_constructor(latency_histogram),
            banned_hosts: Gauge::default(),
            escalations: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "notifications",
            "FastNetMon notifications received, by action and outcome",
            m.notifications.clone(),
        );
        registry.register(
            "traffic_samples",
            "Traffic samples stored, by source",
            m.samples.clone(),
        );
        registry.register(
            "decisions",
            "Checker decisions carried out (escalate, withdraw, adopt)",
            m.decisions.clone(),
        );
        registry.register(
            "refusals",
            "Escalations refused by a safety rail, by rule",
            m.refusals.clone(),
        );
        registry.register(
            "bgp_operations",
            "Calls to the BGP speaker, by backend, operation and result",
            m.bgp_operations.clone(),
        );
        registry.register(
            "source_polls",
            "Polls of a live FastNetMon source",
            m.source_polls.clone(),
        );
        registry.register(
            "source_errors",
            "Failed polls of a live FastNetMon source",
            m.source_errors.clone(),
        );
        registry.register(
            "source_poll_duration_seconds",
            "Duration of one poll cycle of a source",
            m.source_poll_duration.clone(),
        );
        registry.register(
            "source_healthy",
            "1 when a live FastNetMon source reported recently enough (or is not enabled)",
            m.source_healthy.clone(),
        );
        registry.register(
            "source_last_success_timestamp_seconds",
            "Unix time of the last successful poll or push of a source",
            m.source_last_success.clone(),
        );
        registry.register(
            "checker_cycle_duration_seconds",
            "Duration of one checker cycle (gather, decide, apply)",
            m.checker_cycle_duration.clone(),
        );
        registry.register(
            "checker_focused_cycle_duration_seconds",
            "Duration of one checker cycle over the prefixes of a few hosts alone (a crossing, an unban)",
            m.checker_focused_cycle_duration.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests, by method, matched route and status",
            m.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency, by method and matched route",
            m.http_request_duration.clone(),
        );
        registry.register(
            "banned_hosts",
            "Hosts currently banned by FastNetMon",
            m.banned_hosts.clone(),
        );
        registry.register(
            "escalations",
            "Escalation ledger rows, by state",
            m.escalations.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The text exposition (OpenMetrics, which Prometheus reads).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn notification(&self, action: &'static str, outcome: &'static str) {
        self.notifications
            .get_or_create(&NotificationLabels { action, outcome })
            .inc();
    }

    pub fn decision(&self, decision: &str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                decision: decision.into(),
            })
            .inc();
    }

    pub fn refusal(&self, rule: &str) {
        self.refusals
            .get_or_create(&RuleLabels { rule: rule.into() })
            .inc();
    }

    pub fn bgp(&self, backend: &str, operation: &str, ok: bool) {
        self.bgp_operations
            .get_or_create(&BgpLabels {
                backend: backend.into(),
                operation: operation.into(),
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
    }

    pub fn source_poll(&self, source: &str, seconds: f64, ok: bool) {
        let l = SourceLabels {
            source: source.into(),
        };
        self.source_polls.get_or_create(&l).inc();
        if !ok {
            self.source_errors.get_or_create(&l).inc();
        }
        self.source_poll_duration.get_or_create(&l).observe(seconds);
    }

    pub fn samples_stored(&self, source: &str, n: u64) {
        self.samples
            .get_or_create(&SourceLabels {
                source: source.into(),
            })
            .inc_by(n);
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_conventional_names() {
        let m = metrics();
        m.notification("ban", "banned");
        m.refusal("max_active");
        m.bgp("gobgp", "announce", true);
        m.checker_cycle_duration.observe(0.003);
        m.checker_focused_cycle_duration.observe(0.001);
        let text = m.render();
        for name in [
            "fnm_escalator_notifications_total{action=\"ban\",outcome=\"banned\"}",
            "fnm_escalator_refusals_total{rule=\"max_active\"}",
            "fnm_escalator_bgp_operations_total{backend=\"gobgp\",operation=\"announce\",result=\"ok\"}",
            "fnm_escalator_checker_cycle_duration_seconds_bucket",
            "fnm_escalator_checker_focused_cycle_duration_seconds_bucket",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
