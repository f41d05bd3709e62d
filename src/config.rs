//! Typed configuration: embedded defaults, then one TOML file, then `FNM_ESCALATOR__SECTION__KEY`
//! environment overrides. Unknown keys are errors, and every validation error names its key, so
//! a typo never silently turns a safety rail off.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::bgp::{Community, LargeCommunity};

/// Environment prefix for overrides: `FNM_ESCALATOR__ESCALATION__MIN_HOLD=10m`.
pub const ENV_PREFIX: &str = "FNM_ESCALATOR__";

const REDACTED: &str = "<redacted>";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: Server,
    pub auth: Auth,
    pub networks: Networks,
    pub thresholds: Thresholds,
    pub escalation: Escalation,
    pub bgp: Bgp,
    pub notify: Notify,
    pub fastnetmon: Fastnetmon,
    pub samples: Samples,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    pub listen: SocketAddr,
    /// `sqlite:///var/lib/fnm-escalator/state.db` or a plain file path.
    pub database: String,
    /// Largest request body accepted, in bytes (413 beyond it).
    pub max_body_bytes: usize,
    /// A request (including reading its body) that takes longer is answered 408.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How often the spool directory of the notify command is swept for notifications that
    /// could not be delivered while the service was down.
    #[serde(with = "humantime_serde")]
    pub spool_sweep_interval: Duration,
    /// Largest `POST /write` body (InfluxDB push) accepted, in bytes: one push carries every
    /// active host of the network, far more than a notification.
    pub max_write_bytes: usize,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: SocketAddr::from(([127, 0, 0, 1], 8650)),
            database: "./fnm-escalator.db".into(),
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            spool_sweep_interval: Duration::from_secs(5),
            max_write_bytes: 16 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    pub tokens: Vec<Token>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    pub name: String,
    pub token: String,
    pub role: Role,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("token", &REDACTED)
            .field("role", &self.role)
            .finish()
    }
}

/// What a token may do: `read` (GET), `notify` (notifications, `/write`), `admin` (everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Notify,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Notify => "notify",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Networks {
    /// Only covering prefixes inside these are ever escalated (like FastNetMon's networks_list).
    pub ours: Vec<IpNet>,
    /// A prefix overlapping any of these is never announced.
    pub protected: Vec<IpNet>,
}

/// Per-host emergency thresholds; any one crossed escalates. `0` switches a threshold off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    pub incoming_mbps: u64,
    pub outgoing_mbps: u64,
    pub incoming_pps: u64,
    pub outgoing_pps: u64,
    /// A traffic sample older than this never counts as crossing (nor as quiet).
    #[serde(with = "humantime_serde")]
    pub sample_max_age: Duration,
    /// Overrides for more specific networks; the most specific one containing the host wins.
    pub network: Vec<NetworkThresholds>,
}

impl Default for Thresholds {
    fn default() -> Self {
        // The published escalation script's values.
        Thresholds {
            incoming_mbps: 100,
            outgoing_mbps: 100,
            incoming_pps: 2000,
            outgoing_pps: 2000,
            sample_max_age: Duration::from_secs(60),
            network: Vec::new(),
        }
    }
}

/// A `[[thresholds.network]]` entry: keys left out inherit the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkThresholds {
    pub network: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incoming_mbps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outgoing_mbps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incoming_pps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outgoing_pps: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Escalation {
    pub ipv4_prefix_length: u8,
    pub ipv6_prefix_length: u8,
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub min_hold: Duration,
    #[serde(with = "humantime_serde")]
    pub release_after: Duration,
    pub max_active: usize,
    pub carpet_bombing_hosts: usize,
    pub dry_run: bool,
}

impl Default for Escalation {
    fn default() -> Self {
        Escalation {
            ipv4_prefix_length: 24,
            ipv6_prefix_length: 48,
            check_interval: Duration::from_secs(5),
            min_hold: Duration::from_secs(5 * 60),
            release_after: Duration::from_secs(15 * 60),
            max_active: 100,
            carpet_bombing_hosts: 0,
            dry_run: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Gobgp,
    Exabgp,
    Exec,
    None,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Gobgp => "gobgp",
            Backend::Exabgp => "exabgp",
            Backend::Exec => "exec",
            Backend::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bgp {
    pub backend: Backend,
    /// gobgpd's gRPC API, `host:port`.
    pub gobgp_api: String,
    /// The Unix socket `fnm-escalator exabgp-bridge` (ExaBGP's API process) connects to.
    pub exabgp_socket: PathBuf,
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_hop_ipv4: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_hop_ipv6: Option<IpAddr>,
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// Per call to the speaker (connect included).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// First retry delay after a failed announce or withdraw; doubles up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// `[bgp.exec]`: the argv templates of the `exec` backend.
    pub exec: crate::bgp::exec::ExecTemplates,
}

impl Default for Bgp {
    fn default() -> Self {
        Bgp {
            backend: Backend::None,
            gobgp_api: "127.0.0.1:50051".into(),
            exabgp_socket: PathBuf::from("/run/fnm-escalator/exabgp.sock"),
            communities: vec![Community::new(65001, 777)],
            large_communities: Vec::new(),
            next_hop_ipv4: Some(IpAddr::from([192, 0, 2, 1])),
            next_hop_ipv6: Some(IpAddr::from([0x100, 0, 0, 0, 0, 0, 0, 1])),
            reconcile_interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            exec: crate::bgp::exec::ExecTemplates::default(),
        }
    }
}

#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Notify {
    /// Where the notify command delivers; default derived from `server.listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A token with the notify role; default: the first such token in `auth.tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Where undeliverable notifications wait; default `./fnm-escalator-spool`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_dir: Option<PathBuf>,
}

impl fmt::Debug for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notify")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| REDACTED))
            .field("spool_dir", &self.spool_dir)
            .finish()
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fastnetmon {
    /// FastNetMon Advanced REST API; unset = not polled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    pub api_user: String,
    pub api_password: String,
    /// How often the Advanced API is polled (ban list, then the counters of every banned host).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Per request to FastNetMon (one host's counters, the ban list, one gRPC call).
    #[serde(with = "humantime_serde")]
    pub api_timeout: Duration,
    /// Counter requests in flight at once against the Advanced API.
    pub api_concurrency: usize,
    /// Between full polls, the ban list alone this often: a host FastNetMon starts listing is
    /// banned here, and its counters asked, within this rather than at the next full poll.
    /// `0s` (the default): the ban list only with the counters, every `poll_interval`.
    #[serde(with = "humantime_serde")]
    pub ban_list_interval: Duration,
    /// Make the ban list here follow FastNetMon's (hosts missing here are banned; hosts absent
    /// there for two consecutive polls are unbanned). Off: the sources only bring counters.
    pub reconcile_ban_list: bool,
    /// FastNetMon Community's gRPC API (`127.0.0.1:50052`); unset = not polled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_grpc: Option<String>,
    #[serde(with = "humantime_serde")]
    pub community_poll_interval: Duration,
}

impl Default for Fastnetmon {
    fn default() -> Self {
        Fastnetmon {
            api_url: None,
            api_user: "admin".into(),
            api_password: String::new(),
            poll_interval: Duration::from_secs(5),
            api_timeout: Duration::from_secs(2),
            api_concurrency: 32,
            ban_list_interval: Duration::ZERO,
            reconcile_ban_list: true,
            community_grpc: None,
            community_poll_interval: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for Fastnetmon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fastnetmon")
            .field("api_url", &self.api_url)
            .field("api_user", &self.api_user)
            .field("api_password", &REDACTED)
            .field("poll_interval", &self.poll_interval)
            .field("api_timeout", &self.api_timeout)
            .field("api_concurrency", &self.api_concurrency)
            .field("ban_list_interval", &self.ban_list_interval)
            .field("reconcile_ban_list", &self.reconcile_ban_list)
            .field("community_grpc", &self.community_grpc)
            .field("community_poll_interval", &self.community_poll_interval)
            .finish()
    }
}

/// Traffic sample history. The newest sample per host is always kept (the decision reads only
/// that); older ones are history for the audit, thinned on write and expired by age.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Samples {
    /// History older than this is deleted.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// At most one history row per host per this interval from the live sources ("0s": every
    /// sample). Notification samples are always kept.
    #[serde(with = "humantime_serde")]
    pub history_interval: Duration,
}

impl Default for Samples {
    fn default() -> Self {
        Samples {
            retention: Duration::from_secs(3600),
            history_interval: Duration::from_secs(10),
        }
    }
}

/// One thing wrong with a configuration, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("invalid configuration:\n{}", .0.iter().map(|i| format!("  {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigIssue>),
}

impl Config {
    /// Embedded defaults, then `file` if given, then the environment; validated.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As `load`, with the environment passed in (tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = match file {
            Some(path) => Some(
                std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?,
            ),
            None => None,
        };
        Self::from_toml_with_env(text.as_deref(), env)
    }

    /// As `load_with_env`, with the file's text given instead of its path (tests and fuzzing).
    pub fn from_toml_with_env(
        text: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(text) = text {
            figment = figment.merge(Toml::string(text));
        }
        let overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        if !overrides.is_empty() {
            let toml = env_as_toml(&overrides)?;
            figment = figment.merge(Toml::string(&toml));
        }
        let config: Config = figment.extract().map_err(figment_issues)?;
        config.validate()?;
        Ok(config)
    }

    /// Every rule a key must follow; all problems are reported at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut issues = Vec::new();
        let mut bad = |key: String, reason: String| issues.push(ConfigIssue { key, reason });

        let e = &self.escalation;
        if !(8..=32).contains(&e.ipv4_prefix_length) {
            bad(
                "escalation.ipv4_prefix_length".into(),
                format!("{} is outside 8..=32", e.ipv4_prefix_length),
            );
        }
        if !(16..=128).contains(&e.ipv6_prefix_length) {
            bad(
                "escalation.ipv6_prefix_length".into(),
                format!("{} is outside 16..=128", e.ipv6_prefix_length),
            );
        }
        for (key, d) in [
            ("escalation.check_interval", e.check_interval),
            ("bgp.reconcile_interval", self.bgp.reconcile_interval),
            ("bgp.timeout", self.bgp.timeout),
            ("bgp.retry_initial", self.bgp.retry_initial),
            ("fastnetmon.poll_interval", self.fastnetmon.poll_interval),
            ("server.request_timeout", self.server.request_timeout),
            (
                "server.spool_sweep_interval",
                self.server.spool_sweep_interval,
            ),
            ("thresholds.sample_max_age", self.thresholds.sample_max_age),
            ("fastnetmon.api_timeout", self.fastnetmon.api_timeout),
            (
                "fastnetmon.community_poll_interval",
                self.fastnetmon.community_poll_interval,
            ),
            ("samples.retention", self.samples.retention),
        ] {
            if d.is_zero() {
                bad(key.into(), "must be longer than 0s".into());
            }
        }
        if self.bgp.retry_max < self.bgp.retry_initial {
            bad(
                "bgp.retry_max".into(),
                "must not be shorter than bgp.retry_initial".into(),
            );
        }
        if self.server.max_body_bytes < 1024 {
            bad(
                "server.max_body_bytes".into(),
                "must be at least 1024 (FastNetMon's notifications are several kB)".into(),
            );
        }

        for (i, net) in self.networks.ours.iter().enumerate() {
            if net.trunc() != *net {
                bad(
                    format!("networks.ours[{i}]"),
                    format!("{net} has host bits set (did you mean {}?)", net.trunc()),
                );
            }
            let len = self.covering_length(net.addr());
            if net.prefix_len() > len {
                bad(
                    format!("networks.ours[{i}]"),
                    format!(
                        "{net} is longer than the covering prefix length /{len}: no covering \
                         prefix could ever be inside it"
                    ),
                );
            }
        }
        for (i, net) in self.networks.protected.iter().enumerate() {
            if !self.networks.ours.iter().any(|o| o.contains(net)) {
                bad(
                    format!("networks.protected[{i}]"),
                    format!("{net} is not inside any of networks.ours"),
                );
            }
        }
        for (i, t) in self.thresholds.network.iter().enumerate() {
            if t.network.trunc() != t.network {
                bad(
                    format!("thresholds.network[{i}].network"),
                    format!("{} has host bits set", t.network),
                );
            }
        }
        let mut seen = HashSet::new();
        for (i, t) in self.thresholds.network.iter().enumerate() {
            if !seen.insert(t.network) {
                bad(
                    format!("thresholds.network[{i}].network"),
                    format!("{} appears twice", t.network),
                );
            }
        }

        let v4 = self.networks.ours.iter().any(|n| matches!(n, IpNet::V4(_)));
        let v6 = self.networks.ours.iter().any(|n| matches!(n, IpNet::V6(_)));
        match self.bgp.next_hop_ipv4 {
            None if v4 => bad(
                "bgp.next_hop_ipv4".into(),
                "missing, but networks.ours has IPv4 networks".into(),
            ),
            Some(IpAddr::V6(a)) => bad(
                "bgp.next_hop_ipv4".into(),
                format!("{a} is not an IPv4 address"),
            ),
            _ => {}
        }
        match self.bgp.next_hop_ipv6 {
            None if v6 => bad(
                "bgp.next_hop_ipv6".into(),
                "missing, but networks.ours has IPv6 networks".into(),
            ),
            Some(IpAddr::V4(a)) => bad(
                "bgp.next_hop_ipv6".into(),
                format!("{a} is not an IPv6 address"),
            ),
            _ => {}
        }
        if self.bgp.backend == Backend::Gobgp && self.bgp.gobgp_api.trim().is_empty() {
            bad("bgp.gobgp_api".into(), "empty".into());
        }
        if self.bgp.backend == Backend::Exabgp {
            let socket = self.bgp.exabgp_socket.as_os_str().len();
            if socket == 0 {
                bad("bgp.exabgp_socket".into(), "empty".into());
            } else if socket > 107 {
                bad(
                    "bgp.exabgp_socket".into(),
                    format!("{socket} bytes long; a Unix socket path has at most 107"),
                );
            }
        }
        let exec_in_use = self.bgp.backend == Backend::Exec;
        for (key, reason) in crate::bgp::exec::config_issues(&self.bgp.exec, exec_in_use) {
            bad(key, reason);
        }

        let mut names = HashSet::new();
        for (i, t) in self.auth.tokens.iter().enumerate() {
            if t.name.trim().is_empty() {
                bad(format!("auth.tokens[{i}].name"), "empty".into());
            } else if t.name.contains(':') {
                bad(
                    format!("auth.tokens[{i}].name"),
                    "must not contain `:` (it is the Basic auth user name)".into(),
                );
            }
            if !names.insert(t.name.as_str()) {
                bad(
                    format!("auth.tokens[{i}].name"),
                    format!("`{}` is used twice", t.name),
                );
            }
            if t.token.len() < 8 {
                bad(
                    format!("auth.tokens[{i}].token"),
                    "shorter than 8 characters".into(),
                );
            }
        }
        if self.auth.tokens.is_empty() && !self.server.listen.ip().is_loopback() {
            bad(
                "auth.tokens".into(),
                format!(
                    "empty while server.listen ({}) is not a loopback address: refusing to serve \
                     an unauthenticated API beyond this machine",
                    self.server.listen
                ),
            );
        }
        if let Some(url) = &self.notify.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bad(
                    "notify.url".into(),
                    format!("`{url}` is not an http:// or https:// URL"),
                );
            }
        }
        let f = &self.fastnetmon;
        if let Some(url) = &f.api_url {
            if url.starts_with("https://") {
                // reqwest is built without TLS here; fail at start-up, not at every poll.
                bad(
                    "fastnetmon.api_url".into(),
                    format!(
                        "`{url}`: https is not supported; use FastNetMon's plain-HTTP API \
                         listener (web_api_host, default 127.0.0.1:10007)"
                    ),
                );
            } else if !url.starts_with("http://") || url.len() <= "http://".len() {
                bad(
                    "fastnetmon.api_url".into(),
                    format!("`{url}` is not an http:// URL"),
                );
            }
            if f.api_timeout >= f.poll_interval && !f.api_timeout.is_zero() {
                bad(
                    "fastnetmon.api_timeout".into(),
                    format!(
                        "{} must be shorter than fastnetmon.poll_interval ({}): a poll cycle \
                         ends within one interval",
                        humantime::format_duration(f.api_timeout),
                        humantime::format_duration(f.poll_interval)
                    ),
                );
            }
        }
        if !f.ban_list_interval.is_zero() && f.ban_list_interval >= f.poll_interval {
            bad(
                "fastnetmon.ban_list_interval".into(),
                format!(
                    "{} must be shorter than fastnetmon.poll_interval ({}), or 0s (the ban \
                     list only with every poll)",
                    humantime::format_duration(f.ban_list_interval),
                    humantime::format_duration(f.poll_interval)
                ),
            );
        }
        if !(1..=1024).contains(&f.api_concurrency) {
            bad(
                "fastnetmon.api_concurrency".into(),
                format!("{} is outside 1..=1024", f.api_concurrency),
            );
        }
        if let Some(addr) = &f.community_grpc {
            if let Err(reason) = crate::sources::community::endpoint_uri(addr) {
                bad("fastnetmon.community_grpc".into(), reason);
            }
        }
        if self.server.max_write_bytes < 1024 {
            bad(
                "server.max_write_bytes".into(),
                "must be at least 1024".into(),
            );
        }
        if self.server.database.trim().is_empty() {
            bad("server.database".into(), "empty".into());
        }

        if issues.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(issues))
        }
    }

    /// The covering prefix length for an address's family.
    pub fn covering_length(&self, addr: IpAddr) -> u8 {
        match addr {
            IpAddr::V4(_) => self.escalation.ipv4_prefix_length,
            IpAddr::V6(_) => self.escalation.ipv6_prefix_length,
        }
    }

    /// The URL the notify command delivers to.
    pub fn notify_url(&self) -> String {
        if let Some(url) = &self.notify.url {
            return url.trim_end_matches('/').to_string();
        }
        let listen = self.server.listen;
        let host = match listen.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
            ip if ip.is_unspecified() => "[::1]".to_string(),
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        format!("http://{host}:{}", listen.port())
    }

    /// The token the notify command presents: `notify.token`, else the first token with the
    /// notify role, else the first admin token.
    pub fn notify_token(&self) -> Option<String> {
        self.notify.token.clone().or_else(|| {
            let by_role = |role| self.auth.tokens.iter().find(|t| t.role == role);
            by_role(Role::Notify)
                .or_else(|| by_role(Role::Admin))
                .map(|t| t.token.clone())
        })
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.notify
            .spool_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./fnm-escalator-spool"))
    }

    /// The effective settings as TOML, secrets replaced by `<redacted>`.
    pub fn redacted_toml(&self) -> String {
        let mut c = self.clone();
        for t in &mut c.auth.tokens {
            t.token = REDACTED.into();
        }
        if c.notify.token.is_some() {
            c.notify.token = Some(REDACTED.into());
        }
        if !c.fastnetmon.api_password.is_empty() {
            c.fastnetmon.api_password = REDACTED.into();
        }
        toml::to_string_pretty(&c).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Turns `FNM_ESCALATOR__SECTION__KEY=value` pairs into a TOML document, so values are typed
/// exactly as in the file (`"5s"`, `100`, `["203.0.113.0/24"]`); a bare word is taken as a string.
fn env_as_toml(vars: &[(String, String)]) -> Result<String, ConfigError> {
    let mut table = toml::Table::new();
    let mut issues = Vec::new();
    for (name, raw) in vars {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(|p| p.to_ascii_lowercase())
            .collect();
        if path.iter().any(|p| p.is_empty()) {
            issues.push(ConfigIssue {
                key: name.clone(),
                reason: "expected FNM_ESCALATOR__SECTION__KEY".into(),
            });
            continue;
        }
        let value = parse_env_value(raw);
        if !insert_path(&mut table, &path, value) {
            issues.push(ConfigIssue {
                key: name.clone(),
                reason: "conflicts with another override".into(),
            });
        }
    }
    if !issues.is_empty() {
        return Err(ConfigError::Invalid(issues));
    }
    Ok(toml::to_string(&table).unwrap_or_default())
}

fn insert_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> bool {
    match path {
        [] => false,
        [last] => {
            table.insert(last.clone(), value);
            true
        }
        [first, rest @ ..] => match table
            .entry(first.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(t) => insert_path(t, rest, value),
            _ => false,
        },
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Longest line of an issue shown: a TOML syntax error quotes the offending line, and a hostile
/// or broken file can make that line megabytes long.
const MAX_ISSUE_LINE: usize = 240;

fn clip_lines(text: &str) -> String {
    text.lines()
        .map(|line| match line.char_indices().nth(MAX_ISSUE_LINE) {
            Some((cut, _)) => format!("{}…", &line[..cut]),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn figment_issues(err: figment::Error) -> ConfigError {
    let issues = err
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                "(top level)".to_string()
            } else {
                e.path.join(".")
            };
            ConfigIssue {
                key: clip_lines(&key),
                reason: clip_lines(&e.kind.to_string()),
            }
        })
        .collect();
    ConfigError::Invalid(issues)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<Config, ConfigError> {
        load_env(toml, &[])
    }

    fn load_env(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).expect("write");
        Config::load_with_env(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    fn issue_keys(r: Result<Config, ConfigError>) -> Vec<String> {
        match r {
            Err(ConfigError::Invalid(i)) => i.into_iter().map(|i| i.key).collect(),
            other => panic!("expected invalid config, got {other:?}"),
        }
    }

    const EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:8650"
database = "sqlite:///var/lib/fnm-escalator/state.db"

[[auth.tokens]]
name = "fastnetmon"
token = "change-me"
role = "notify"

[networks]
ours = ["203.0.113.0/24", "2001:db8::/32"]
protected = ["203.0.113.0/28"]

[thresholds]
incoming_mbps = 100
outgoing_mbps = 100
incoming_pps = 2000
outgoing_pps = 2000

[[thresholds.network]]
network = "203.0.113.128/25"
incoming_mbps = 1000

[escalation]
ipv4_prefix_length = 24
ipv6_prefix_length = 48
check_interval = "5s"
min_hold = "5m"
release_after = "15m"
max_active = 100
carpet_bombing_hosts = 0
dry_run = false

[bgp]
backend = "gobgp"
gobgp_api = "127.0.0.1:50051"
communities = ["65001:777"]
large_communities = []
next_hop_ipv4 = "192.0.2.1"
next_hop_ipv6 = "100::1"
reconcile_interval = "30s"

[notify]
url = "http://127.0.0.1:8650"
token = "change-me"
spool_dir = "/var/lib/fnm-escalator/spool"

[fastnetmon]
api_url = "http://127.0.0.1:10007"
api_user = "admin"
api_password = "secret"
poll_interval = "5s"
"#;

    #[test]
    fn accepts_the_contract_example() {
        let c = load(EXAMPLE).expect("example config is valid");
        assert_eq!(c.bgp.backend, Backend::Gobgp);
        assert_eq!(c.escalation.min_hold, Duration::from_secs(300));
        assert_eq!(c.thresholds.network[0].incoming_mbps, Some(1000));
        assert_eq!(c.bgp.communities, vec![Community::new(65001, 777)]);
        assert_eq!(c.auth.tokens[0].role, Role::Notify);
    }

    #[test]
    fn a_huge_offending_line_is_clipped_in_the_message() {
        let deep = format!(
            "[server]\nlisten = {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let err = Config::from_toml_with_env(Some(&deep), Vec::new()).expect_err("too deep");
        let text = err.to_string();
        assert!(text.contains("line 2"), "{text}");
        assert!(text.len() < 4096, "{} bytes", text.len());
        let dotted = format!("{} = 1\n", vec!["é"; 50_000].join("."));
        let text = Config::from_toml_with_env(Some(&dotted), Vec::new())
            .expect_err("unknown key")
            .to_string();
        assert!(
            text.lines()
                .all(|l| l.chars().count() <= MAX_ISSUE_LINE + 8),
            "{text}"
        );
    }

    #[test]
    fn from_text_matches_loading_the_same_file() {
        let from_text = Config::from_toml_with_env(Some(EXAMPLE), Vec::new()).expect("example");
        let from_file = load(EXAMPLE).expect("example");
        assert_eq!(from_text.redacted_toml(), from_file.redacted_toml());
        let bad = Config::from_toml_with_env(Some("[server\nlisten = 1"), Vec::new());
        assert!(matches!(bad, Err(ConfigError::Invalid(ref i)) if !i.is_empty()));
    }

    #[test]
    fn embedded_defaults_are_valid() {
        let c = Config::load_with_env(None, Vec::new()).expect("defaults");
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8650");
        assert_eq!(c.server.database, "./fnm-escalator.db");
        assert_eq!(c.bgp.backend, Backend::None);
        assert_eq!(c.thresholds.incoming_mbps, 100);
        assert_eq!(c.thresholds.incoming_pps, 2000);
        assert_eq!(c.notify_url(), "http://127.0.0.1:8650");
    }

    #[test]
    fn rejects_unknown_keys_naming_them() {
        let keys = issue_keys(load("[escalation]\nmin_hodl = \"5m\"\n"));
        assert_eq!(keys, vec!["escalation.min_hodl".to_string()]);
        let err = load("[escalation]\nmin_hodl = \"5m\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("min_hodl"), "{err}");
        let err = load("[bogus]\nx = 1\n").unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn bad_cidr_names_the_key() {
        let err = load("[networks]\nours = [\"203.0.113.0/33\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("networks.ours"), "{err}");
    }

    #[test]
    fn protected_outside_ours_is_an_error() {
        let keys = issue_keys(load(
            "[networks]\nours = [\"203.0.113.0/24\"]\nprotected = [\"198.51.100.0/28\"]\n",
        ));
        assert_eq!(keys, vec!["networks.protected[0]"]);
    }

    #[test]
    fn ipv4_prefix_length_outside_8_to_32_is_an_error() {
        for len in [0, 7, 33] {
            let keys = issue_keys(load(&format!("[escalation]\nipv4_prefix_length = {len}\n")));
            assert!(keys.contains(&"escalation.ipv4_prefix_length".to_string()));
        }
        assert!(load("[escalation]\nipv4_prefix_length = 8\n").is_ok());
    }

    #[test]
    fn missing_next_hop_for_an_enabled_family_is_an_error() {
        let keys = issue_keys(load_env(
            "[networks]\nours = [\"2001:db8::/32\"]\n",
            &[("FNM_ESCALATOR__BGP__NEXT_HOP_IPV6", "\"\"")],
        ));
        assert!(keys.contains(&"bgp.next_hop_ipv6".to_string()), "{keys:?}");
        // Written without the key: a file that drops the embedded default.
        let c = Config {
            networks: Networks {
                ours: vec!["2001:db8::/32".parse().expect("net")],
                protected: vec![],
            },
            bgp: Bgp {
                next_hop_ipv6: None,
                ..Bgp::default()
            },
            ..Config::default()
        };
        match c.validate() {
            Err(ConfigError::Invalid(i)) => assert_eq!(i[0].key, "bgp.next_hop_ipv6"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn env_overrides_win_over_the_file() {
        let c = load_env(
            EXAMPLE,
            &[
                ("FNM_ESCALATOR__ESCALATION__MIN_HOLD", "10m"),
                ("FNM_ESCALATOR__ESCALATION__MAX_ACTIVE", "7"),
                ("FNM_ESCALATOR__NETWORKS__OURS", "[\"198.51.100.0/24\"]"),
                ("FNM_ESCALATOR__NETWORKS__PROTECTED", "[]"),
                ("FNM_ESCALATOR_CONFIG", "ignored"),
            ],
        )
        .expect("valid");
        assert_eq!(c.escalation.min_hold, Duration::from_secs(600));
        assert_eq!(c.escalation.max_active, 7);
        assert_eq!(
            c.networks.ours,
            vec!["198.51.100.0/24".parse::<IpNet>().expect("net")]
        );
    }

    #[test]
    fn env_override_of_an_unknown_key_is_an_error() {
        let err = load_env("", &[("FNM_ESCALATOR__SERVER__LISTN", "1")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("listn"), "{err}");
    }

    #[test]
    fn unauthenticated_api_beyond_loopback_is_refused() {
        let keys = issue_keys(load("[server]\nlisten = \"0.0.0.0:8650\"\n"));
        assert_eq!(keys, vec!["auth.tokens"]);
    }

    #[test]
    fn redacts_secrets() {
        let c = load(EXAMPLE).expect("valid");
        let out = c.redacted_toml();
        assert!(!out.contains("change-me"), "{out}");
        assert!(!out.contains("secret\""), "{out}");
        assert!(out.contains("<redacted>"));
        assert!(!format!("{c:?}").contains("change-me"));
    }

    #[test]
    fn live_sources_are_off_by_default_and_bounded() {
        let c = Config::load_with_env(None, Vec::new()).expect("defaults");
        let f = &c.fastnetmon;
        assert_eq!(f.api_url, None);
        assert_eq!(f.community_grpc, None);
        assert!(f.reconcile_ban_list);
        assert_eq!(f.api_timeout, Duration::from_secs(2));
        assert_eq!(f.api_concurrency, 32);
        assert_eq!(f.ban_list_interval, Duration::ZERO);
        assert_eq!(f.community_poll_interval, Duration::from_secs(10));
        assert_eq!(c.samples.retention, Duration::from_secs(3600));
        assert_eq!(c.samples.history_interval, Duration::from_secs(10));
        assert_eq!(c.server.max_write_bytes, 16 * 1024 * 1024);
        let c = load(
            "[fastnetmon]\ncommunity_grpc = \"127.0.0.1:50052\"\napi_timeout = \"1s\"\n\
             ban_list_interval = \"250ms\"\n\
             [samples]\nretention = \"10m\"\nhistory_interval = \"0s\"\n",
        )
        .expect("valid");
        assert_eq!(c.fastnetmon.ban_list_interval, Duration::from_millis(250));
        assert_eq!(
            c.fastnetmon.community_grpc.as_deref(),
            Some("127.0.0.1:50052")
        );
        assert_eq!(c.samples.history_interval, Duration::ZERO);
    }

    #[test]
    fn live_source_settings_name_their_key() {
        for (toml, key) in [
            (
                "[fastnetmon]\napi_url = \"https://127.0.0.1:10443\"\n",
                "fastnetmon.api_url",
            ),
            (
                "[fastnetmon]\napi_url = \"127.0.0.1:10007\"\n",
                "fastnetmon.api_url",
            ),
            (
                "[fastnetmon]\napi_url = \"http://127.0.0.1:10007\"\napi_timeout = \"5s\"\n",
                "fastnetmon.api_timeout",
            ),
            (
                "[fastnetmon]\napi_timeout = \"0s\"\n",
                "fastnetmon.api_timeout",
            ),
            (
                "[fastnetmon]\napi_concurrency = 0\n",
                "fastnetmon.api_concurrency",
            ),
            (
                "[fastnetmon]\npoll_interval = \"5s\"\nban_list_interval = \"5s\"\n",
                "fastnetmon.ban_list_interval",
            ),
            (
                "[fastnetmon]\ncommunity_grpc = \"127.0.0.1\"\n",
                "fastnetmon.community_grpc",
            ),
            (
                "[fastnetmon]\ncommunity_grpc = \"\"\n",
                "fastnetmon.community_grpc",
            ),
            (
                "[fastnetmon]\ncommunity_poll_interval = \"0s\"\n",
                "fastnetmon.community_poll_interval",
            ),
            ("[samples]\nretention = \"0s\"\n", "samples.retention"),
            ("[samples]\nretension = \"1h\"\n", "samples.retension"),
            ("[server]\nmax_write_bytes = 10\n", "server.max_write_bytes"),
        ] {
            let keys = issue_keys(load(toml));
            assert_eq!(keys, vec![key.to_string()], "{toml}");
        }
    }

    #[test]
    fn notify_token_defaults_to_a_notify_token() {
        let mut c = load(EXAMPLE).expect("valid");
        c.notify.token = None;
        assert_eq!(c.notify_token().as_deref(), Some("change-me"));
    }
}
