//! The decision (PRODUCT.md section 5) as a pure function: banned hosts, their newest samples,
//! the escalation ledger, manual overrides, the policy and `now` in; actions out. No I/O and no
//! clock: the checker gathers the world, calls `decide`, and carries the actions out.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::clock::{ms, Millis};
use crate::config::{Config, NetworkThresholds};
use crate::fastnetmon::Traffic;

/// How stale the recorded `last_crossing_at` of a live escalation may get (it is informational).
pub const TRACK_GRANULARITY: Millis = 5_000;

/// A prefix that may be announced: built only by the covering rule (`of`) or by checking a
/// manual request against the configured length (`manual`), so it is never shorter than
/// configured (no /0 from a bug).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CoveringPrefix(IpNet);

impl CoveringPrefix {
    /// The covering prefix of a host: its address truncated to the configured length.
    pub fn of(ip: IpAddr, policy: &Policy) -> CoveringPrefix {
        let len = policy.covering_length(ip);
        // The lengths are validated (8..=32, 16..=128), so this cannot fail; fall back to the
        // host route rather than to anything shorter.
        let net = IpNet::new(ip, len)
            .map(|n| n.trunc())
            .unwrap_or_else(|_| IpNet::from(ip));
        CoveringPrefix(net)
    }

    /// A prefix asked for by an operator, if it is not shorter than the configured length.
    pub fn manual(net: IpNet, policy: &Policy) -> Result<CoveringPrefix, Refusal> {
        let len = policy.covering_length(net.addr());
        if net.prefix_len() < len {
            return Err(Refusal {
                rule: Rule::TooShort,
                reason: format!("{net} is shorter than the configured covering length /{len}"),
            });
        }
        Ok(CoveringPrefix(net.trunc()))
    }

    pub fn net(&self) -> IpNet {
        self.0
    }
}

impl fmt::Display for CoveringPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The safety rails, by the names used in events, metrics and API errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The prefix is not inside `networks.ours`.
    OutsideOurs,
    /// The prefix overlaps `networks.protected`.
    Protected,
    /// The prefix is shorter than the configured covering length.
    TooShort,
    /// `escalation.max_active` prefixes are already escalated.
    MaxActive,
    /// The prefix is already in the speaker's RIB with attributes that are not ours.
    ForeignRoute,
    /// An operator suppressed the prefix.
    Suppressed,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::OutsideOurs => "outside_ours",
            Rule::Protected => "protected",
            Rule::TooShort => "too_short",
            Rule::MaxActive => "max_active",
            Rule::ForeignRoute => "foreign_route",
            Rule::Suppressed => "suppressed",
        }
    }

    pub fn parse(s: &str) -> Option<Rule> {
        Some(match s {
            "outside_ours" => Rule::OutsideOurs,
            "protected" => Rule::Protected,
            "too_short" => Rule::TooShort,
            "max_active" => Rule::MaxActive,
            "foreign_route" => Rule::ForeignRoute,
            "suppressed" => Rule::Suppressed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub rule: Rule,
    pub reason: String,
}

/// Thresholds for one host, after `[[thresholds.network]]` overrides. `0` = off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub incoming_bps: u64,
    pub outgoing_bps: u64,
    pub incoming_pps: u64,
    pub outgoing_pps: u64,
}

/// The parts of the configuration the decision needs, with overrides pre-sorted.
#[derive(Debug, Clone)]
pub struct Policy {
    pub ipv4_prefix_length: u8,
    pub ipv6_prefix_length: u8,
    pub ours: Vec<IpNet>,
    pub protected: Vec<IpNet>,
    pub defaults: Limits,
    /// Most specific first.
    pub overrides: Vec<(IpNet, NetworkThresholds)>,
    pub sample_max_age: Millis,
    pub min_hold: Millis,
    /// 0: withdraw only when no banned host is left.
    pub release_after: Millis,
    pub max_active: usize,
    /// 0: off.
    pub carpet_bombing_hosts: usize,
}

const MBIT: u64 = 1_000_000;

impl Policy {
    pub fn from_config(c: &Config) -> Policy {
        let t = &c.thresholds;
        let mut overrides: Vec<(IpNet, NetworkThresholds)> = t
            .network
            .iter()
            .map(|n| (n.network.trunc(), n.clone()))
            .collect();
        overrides.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        Policy {
            ipv4_prefix_length: c.escalation.ipv4_prefix_length,
            ipv6_prefix_length: c.escalation.ipv6_prefix_length,
            ours: c.networks.ours.clone(),
            protected: c.networks.protected.clone(),
            defaults: Limits {
                incoming_bps: t.incoming_mbps.saturating_mul(MBIT),
                outgoing_bps: t.outgoing_mbps.saturating_mul(MBIT),
                incoming_pps: t.incoming_pps,
                outgoing_pps: t.outgoing_pps,
            },
            overrides,
            sample_max_age: ms(t.sample_max_age),
            min_hold: ms(c.escalation.min_hold),
            release_after: ms(c.escalation.release_after),
            max_active: c.escalation.max_active,
            carpet_bombing_hosts: c.escalation.carpet_bombing_hosts,
        }
    }

    pub fn covering_length(&self, ip: IpAddr) -> u8 {
        match ip {
            IpAddr::V4(_) => self.ipv4_prefix_length,
            IpAddr::V6(_) => self.ipv6_prefix_length,
        }
    }

    /// The limits for a host: the most specific `[[thresholds.network]]` containing it wins.
    pub fn limits_for(&self, ip: IpAddr) -> Limits {
        let d = self.defaults;
        match self.overrides.iter().find(|(net, _)| net.contains(&ip)) {
            None => d,
            Some((_, o)) => Limits {
                incoming_bps: o
                    .incoming_mbps
                    .map_or(d.incoming_bps, |v| v.saturating_mul(MBIT)),
                outgoing_bps: o
                    .outgoing_mbps
                    .map_or(d.outgoing_bps, |v| v.saturating_mul(MBIT)),
                incoming_pps: o.incoming_pps.unwrap_or(d.incoming_pps),
                outgoing_pps: o.outgoing_pps.unwrap_or(d.outgoing_pps),
            },
        }
    }

    /// The rails a prefix must pass to be announced, other than the cap.
    pub fn check_rails(&self, prefix: &CoveringPrefix) -> Result<(), Refusal> {
        let net = prefix.net();
        if !self.ours.iter().any(|o| o.contains(&net)) {
            return Err(Refusal {
                rule: Rule::OutsideOurs,
                reason: format!("{net} is not inside networks.ours"),
            });
        }
        if let Some(p) = self
            .protected
            .iter()
            .find(|p| p.contains(&net) || net.contains(*p))
        {
            return Err(Refusal {
                rule: Rule::Protected,
                reason: format!("{net} overlaps protected network {p}"),
            });
        }
        Ok(())
    }
}

/// Which threshold a sample crossed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Crossing {
    pub host: IpAddr,
    /// `incoming_mbps`, `outgoing_mbps`, `incoming_pps`, `outgoing_pps`.
    pub metric: &'static str,
    pub value: u64,
    pub limit: u64,
}

impl fmt::Display for Crossing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.metric.ends_with("mbps") {
            write!(
                f,
                "{} {} {:.1} >= {}",
                self.host,
                self.metric,
                self.value as f64 / MBIT as f64,
                self.limit / MBIT
            )
        } else {
            write!(
                f,
                "{} {} {} >= {}",
                self.host, self.metric, self.value, self.limit
            )
        }
    }
}

/// The first threshold `traffic` crosses under `limits`, if any (crossing means `>=`, as in
/// the published script).
pub fn crossing(ip: IpAddr, traffic: &Traffic, limits: &Limits) -> Option<Crossing> {
    let checks = [
        ("incoming_mbps", traffic.in_bps, limits.incoming_bps),
        ("outgoing_mbps", traffic.out_bps, limits.outgoing_bps),
        ("incoming_pps", traffic.in_pps, limits.incoming_pps),
        ("outgoing_pps", traffic.out_pps, limits.outgoing_pps),
    ];
    checks
        .into_iter()
        .find(|(_, v, l)| *l > 0 && v >= l)
        .map(|(metric, value, limit)| Crossing {
            host: ip,
            metric,
            value,
            limit,
        })
}

/// Why a prefix is escalated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    Threshold { crossings: Vec<Crossing> },
    CarpetBombing { banned_hosts: usize, limit: usize },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Threshold { crossings } => {
                write!(f, "threshold crossed: ")?;
                for (i, c) in crossings.iter().take(3).enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{c}")?;
                }
                if crossings.len() > 3 {
                    write!(f, " and {} more", crossings.len() - 3)?;
                }
                Ok(())
            }
            Reason::CarpetBombing {
                banned_hosts,
                limit,
            } => write!(
                f,
                "carpet bombing: {banned_hosts} banned hosts in the prefix (limit {limit})"
            ),
        }
    }
}

/// Why a prefix is withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawReason {
    /// The last banned host in the prefix was unbanned.
    NoBannedHosts,
    /// Every banned host stayed below its thresholds for `release_after`.
    Quiet,
    /// A manual escalation's duration ended.
    ManualExpired,
}

impl WithdrawReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WithdrawReason::NoBannedHosts => "no banned host left in the prefix",
            WithdrawReason::Quiet => "all banned hosts below thresholds for release_after",
            WithdrawReason::ManualExpired => "manual escalation expired",
        }
    }
}

// ---- the world as the checker sees it ----

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BannedHost {
    pub ip: IpAddr,
    pub banned_at: Millis,
    /// Its newest sample, if it has one.
    pub sample: Option<Sample>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at: Millis,
    pub traffic: Traffic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Auto,
    Manual,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Auto => "auto",
            Origin::Manual => "manual",
        }
    }
}

/// A live escalation (pending, active or failed) from the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub prefix: IpNet,
    pub origin: Origin,
    pub created_at: Millis,
    pub announced_at: Option<Millis>,
    pub last_crossing_at: Option<Millis>,
    pub quiet_since: Option<Millis>,
    pub expires_at: Option<Millis>,
    /// A withdrawal was decided already; the checker is carrying it out.
    pub withdrawing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRefusal {
    pub prefix: IpNet,
    pub rule: Rule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    pub prefix: IpNet,
    pub until: Millis,
}

#[derive(Debug, Clone, Default)]
pub struct World {
    /// Each with its newest sample: at 100,000 banned hosts a map from address to sample beside
    /// them cost a checker cycle 8-12 MiB more, and a hash of every address.
    pub banned: Vec<BannedHost>,
    pub live: Vec<Live>,
    pub refusals: Vec<OpenRefusal>,
    pub suppressions: Vec<Suppression>,
    /// Live escalations left out of `live`, counted against `max_active`: a world of one
    /// prefix (the checker's focused cycle) still respects the cap. Zero for the whole world.
    pub live_elsewhere: usize,
}

/// What the checker must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Escalate {
        prefix: CoveringPrefix,
        reason: Reason,
        hosts: Vec<IpAddr>,
    },
    Refuse {
        prefix: IpNet,
        refusal: Refusal,
        reason: Reason,
        hosts: Vec<IpAddr>,
    },
    /// An open refusal no longer applies (the prefix no longer qualifies, or was escalated).
    ClearRefusal { prefix: IpNet },
    Withdraw {
        prefix: IpNet,
        reason: WithdrawReason,
    },
    /// Hysteresis bookkeeping of a live escalation changed.
    Track {
        prefix: IpNet,
        last_crossing_at: Option<Millis>,
        quiet_since: Option<Millis>,
        hosts: Vec<IpAddr>,
    },
    /// A manual escalation expired while the automatic rules still want it: it stays, as auto.
    Adopt { prefix: IpNet, reason: Reason },
}

/// The state of the banned hosts of one prefix.
#[derive(Debug, Default)]
struct Group {
    hosts: Vec<IpAddr>,
    crossings: Vec<Crossing>,
    /// Hosts with a fresh sample below their thresholds.
    quiet: usize,
    earliest_ban: Millis,
}

impl Group {
    fn want(&self, policy: &Policy) -> Option<Reason> {
        if !self.crossings.is_empty() {
            return Some(Reason::Threshold {
                crossings: self.crossings.clone(),
            });
        }
        if policy.carpet_bombing_hosts > 0 && self.hosts.len() >= policy.carpet_bombing_hosts {
            return Some(Reason::CarpetBombing {
                banned_hosts: self.hosts.len(),
                limit: policy.carpet_bombing_hosts,
            });
        }
        None
    }

    /// Every banned host has fresh data showing it below thresholds (missing data is not quiet).
    fn all_quiet(&self) -> bool {
        !self.hosts.is_empty() && self.quiet == self.hosts.len()
    }
}

fn add_host(group: &mut Group, host: &BannedHost, policy: &Policy, now: Millis) {
    if group.hosts.is_empty() || host.banned_at < group.earliest_ban {
        group.earliest_ban = host.banned_at;
    }
    group.hosts.push(host.ip);
    if let Some(s) = &host.sample {
        if now - s.at <= policy.sample_max_age {
            match crossing(host.ip, &s.traffic, &policy.limits_for(host.ip)) {
                Some(c) => group.crossings.push(c),
                None => group.quiet += 1,
            }
        }
    }
}

/// The world of a cycle over a few covering prefixes alone (a focused cycle: a crossing, a ban
/// while carpet bombing counts bans, or an unban can only have changed what is wanted of its
/// own prefix), built from the banned hosts inside them (`banned_inside`, oldest ban first
/// within each prefix) and the whole ledger's `live` escalations and open `refusals`. Its
/// decision for those prefixes is the whole world's: a live prefix is tracked, held or
/// withdrawn on its own hosts and its own row; one that is not live is escalated, refused or
/// has its refusal cleared on its own hosts, its own refusal, the suppressions and the count of
/// live escalations.
///
/// `None` when only a cycle over everything decides right: some of the prefixes are not live,
/// and the cap could bind (with the live escalations and those prefixes at `max_active` or
/// past it, or a prefix refused for the cap already), so that the whole world's order (oldest
/// attack first) decides who gets the room.
pub fn focus(
    prefixes: &BTreeSet<CoveringPrefix>,
    banned_inside: Vec<BannedHost>,
    live: &[Live],
    refusals: Vec<OpenRefusal>,
    suppressions: Vec<Suppression>,
    policy: &Policy,
) -> Option<World> {
    let nets: HashSet<IpNet> = prefixes.iter().map(|p| p.net()).collect();
    let (inside, elsewhere): (Vec<&Live>, Vec<&Live>) =
        live.iter().partition(|l| nets.contains(&l.prefix));
    let not_live = nets
        .iter()
        .filter(|n| !inside.iter().any(|l| l.prefix == **n))
        .count();
    let live_elsewhere = elsewhere.iter().filter(|l| !l.withdrawing).count();
    let live_inside = inside.iter().filter(|l| !l.withdrawing).count();
    if not_live > 0
        && (live_elsewhere + live_inside + not_live >= policy.max_active
            || refusals.iter().any(|r| r.rule == Rule::MaxActive))
    {
        return None;
    }
    Some(World {
        banned: banned_inside,
        live: inside.into_iter().cloned().collect(),
        refusals: refusals
            .into_iter()
            .filter(|r| nets.contains(&r.prefix))
            .collect(),
        suppressions,
        live_elsewhere,
    })
}

/// The decision. Deterministic: the same world, policy and `now` give the same actions.
pub fn decide(world: &World, policy: &Policy, now: Millis) -> Vec<Action> {
    let mut actions = Vec::new();

    // Banned hosts by covering prefix.
    let mut groups: BTreeMap<CoveringPrefix, Group> = BTreeMap::new();
    for h in &world.banned {
        let g = groups.entry(CoveringPrefix::of(h.ip, policy)).or_default();
        add_host(g, h, policy, now);
    }

    // The live escalations: hysteresis, holds and withdrawals.
    let mut live_prefixes = HashSet::new();
    let mut live_count = world.live_elsewhere;
    for l in &world.live {
        live_prefixes.insert(l.prefix);
        if l.withdrawing {
            continue;
        }
        let covering = CoveringPrefix(l.prefix);
        let scanned;
        let group = match groups.get(&covering) {
            Some(g) if l.prefix.prefix_len() == policy.covering_length(l.prefix.addr()) => g,
            _ => {
                // A manual prefix of another length, or a length changed since: look at the
                // banned hosts inside it directly.
                let mut g = Group::default();
                for h in world.banned.iter().filter(|h| l.prefix.contains(&h.ip)) {
                    add_host(&mut g, h, policy, now);
                }
                scanned = g;
                &scanned
            }
        };
        let want = group.want(policy);
        let (last_crossing_at, quiet_since) = if want.is_some() {
            (Some(now), None)
        } else if group.all_quiet() {
            (l.last_crossing_at, Some(l.quiet_since.unwrap_or(now)))
        } else {
            // No banned host, or some host without fresh data: not quiet. Missing data must
            // never lead to a withdrawal.
            (l.last_crossing_at, None)
        };
        let since = l.announced_at.unwrap_or(l.created_at);
        let held = now - since < policy.min_hold;

        let withdraw = match l.origin {
            Origin::Manual => match l.expires_at {
                Some(exp) if now >= exp => match &want {
                    Some(reason) => {
                        actions.push(Action::Adopt {
                            prefix: l.prefix,
                            reason: reason.clone(),
                        });
                        None
                    }
                    None => Some(WithdrawReason::ManualExpired),
                },
                _ => None,
            },
            Origin::Auto if held => None,
            Origin::Auto if group.hosts.is_empty() => Some(WithdrawReason::NoBannedHosts),
            Origin::Auto => match quiet_since {
                Some(q) if policy.release_after > 0 && now - q >= policy.release_after => {
                    Some(WithdrawReason::Quiet)
                }
                _ => None,
            },
        };
        if let Some(reason) = withdraw {
            actions.push(Action::Withdraw {
                prefix: l.prefix,
                reason,
            });
            continue;
        }
        live_count += 1;
        // A host still crossing moves last_crossing_at to `now` at every cycle; writing that each
        // time costs one write per live escalation per cycle, which under a carpet bombing (a
        // cycle per batch of crossing samples, thousands live) made the checker quadratic. It is
        // only shown, never decided on, so it is kept to within TRACK_GRANULARITY; a change of
        // quiet_since (which withdrawals follow) is always written at once.
        let crossing_moved = match (l.last_crossing_at, last_crossing_at) {
            (Some(old), Some(new)) => new - old >= TRACK_GRANULARITY,
            (old, new) => old != new,
        };
        if crossing_moved || quiet_since != l.quiet_since {
            actions.push(Action::Track {
                prefix: l.prefix,
                last_crossing_at,
                quiet_since,
                hosts: group.hosts.clone(),
            });
        }
    }

    // New escalations, oldest attack first, under the rails and the cap.
    let mut candidates: Vec<(&CoveringPrefix, &Group, Reason)> = groups
        .iter()
        .filter(|(p, _)| !live_prefixes.contains(&p.net()))
        .filter_map(|(p, g)| g.want(policy).map(|r| (p, g, r)))
        .collect();
    candidates.sort_by(|a, b| (a.1.earliest_ban, a.0).cmp(&(b.1.earliest_ban, b.0)));
    let refused: HashMap<IpNet, Rule> = world.refusals.iter().map(|r| (r.prefix, r.rule)).collect();
    let mut wanted = HashSet::new();
    for (prefix, group, reason) in candidates {
        let net = prefix.net();
        if world
            .suppressions
            .iter()
            .any(|s| s.until > now && s.prefix == net)
        {
            continue;
        }
        if refused.get(&net) == Some(&Rule::ForeignRoute) {
            // Someone else's route holds this prefix at the speaker; reconciliation clears the
            // refusal once it is gone, then the prefix is escalated.
            wanted.insert(net);
            continue;
        }
        let verdict = policy.check_rails(prefix).and_then(|()| {
            if live_count >= policy.max_active {
                Err(Refusal {
                    rule: Rule::MaxActive,
                    reason: format!(
                        "{} prefixes escalated already (escalation.max_active = {})",
                        live_count, policy.max_active
                    ),
                })
            } else {
                Ok(())
            }
        });
        let hosts = match &reason {
            Reason::Threshold { crossings } => crossings.iter().map(|c| c.host).collect(),
            Reason::CarpetBombing { .. } => group.hosts.clone(),
        };
        match verdict {
            Ok(()) => {
                live_count += 1;
                if refused.contains_key(&net) {
                    actions.push(Action::ClearRefusal { prefix: net });
                }
                actions.push(Action::Escalate {
                    prefix: *prefix,
                    reason,
                    hosts,
                });
            }
            Err(refusal) => {
                wanted.insert(net);
                if refused.get(&net) != Some(&refusal.rule) {
                    actions.push(Action::Refuse {
                        prefix: net,
                        refusal,
                        reason,
                        hosts,
                    });
                }
            }
        }
    }
    // Refusals that no longer apply.
    for r in &world.refusals {
        if !wanted.contains(&r.prefix)
            && !actions
                .iter()
                .any(|a| matches!(a, Action::ClearRefusal { prefix } if *prefix == r.prefix))
        {
            actions.push(Action::ClearRefusal { prefix: r.prefix });
        }
    }
    actions
}

/// Checks a manual escalation request against the rails: the same ones as automatic
/// escalations (length, ours, protected, the cap).
pub fn check_manual(
    net: IpNet,
    world_live: usize,
    policy: &Policy,
) -> Result<CoveringPrefix, Refusal> {
    let prefix = CoveringPrefix::manual(net, policy)?;
    policy.check_rails(&prefix)?;
    if world_live >= policy.max_active {
        return Err(Refusal {
            rule: Rule::MaxActive,
            reason: format!(
                "{world_live} prefixes escalated already (escalation.max_active = {})",
                policy.max_active
            ),
        });
    }
    Ok(prefix)
}

/// Whether a notification just recorded can change a decision at once, so that the checker
/// should look now rather than at its next tick: an unban (a prefix may have lost its last
/// banned host), any ban while carpet bombing is on, or traffic that crosses a threshold. A ban
/// below every threshold changes nothing until traffic says so; waking the checker for each of
/// a burst of them would only have it re-read every banned host while they queue for the writer.
pub fn acts_at_once(n: &crate::fastnetmon::Notification, policy: &Policy) -> bool {
    use crate::fastnetmon::{Action, Scope};
    let Scope::Host { ip } = n.scope else {
        return false;
    };
    match n.action {
        Action::Unban => true,
        Action::PartialBlock | Action::PartialUnblock => false,
        Action::Ban | Action::AttackStatus | Action::AttackDetails => {
            (n.action == Action::Ban && policy.carpet_bombing_hosts > 0)
                || n.traffic
                    .is_some_and(|t| crossing(ip, &t, &policy.limits_for(ip)).is_some())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Millis = 60_000;
    const T0: Millis = 1_800_000_000_000;

    fn policy() -> Policy {
        let mut c = Config::default();
        c.networks.ours = vec![
            "203.0.113.0/24".parse().unwrap(),
            "198.51.100.0/22".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ];
        c.networks.protected = vec!["198.51.101.0/28".parse().unwrap()];
        c.thresholds.network = vec![
            NetworkThresholds {
                network: "198.51.100.0/22".parse().unwrap(),
                incoming_mbps: Some(500),
                outgoing_mbps: None,
                incoming_pps: None,
                outgoing_pps: None,
            },
            NetworkThresholds {
                network: "198.51.100.128/25".parse().unwrap(),
                incoming_mbps: Some(1000),
                outgoing_mbps: None,
                incoming_pps: None,
                outgoing_pps: None,
            },
        ];
        Policy::from_config(&c)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn mbps(v: u64) -> Traffic {
        Traffic {
            in_bps: v * MBIT,
            ..Traffic::default()
        }
    }

    fn world(hosts: &[(&str, Option<Traffic>)], now: Millis) -> World {
        let mut w = World::default();
        for (h, t) in hosts {
            w.banned.push(BannedHost {
                ip: ip(h),
                banned_at: now - MIN,
                sample: t.map(|traffic| Sample { at: now, traffic }),
            });
        }
        w
    }

    /// The one banned host's sample, to set or change.
    fn sample_of<'w>(w: &'w mut World, host: &str) -> &'w mut Option<Sample> {
        let host = ip(host);
        &mut w
            .banned
            .iter_mut()
            .find(|b| b.ip == host)
            .expect("a banned host")
            .sample
    }

    fn live(prefix: &str, announced_at: Millis) -> Live {
        Live {
            prefix: net(prefix),
            origin: Origin::Auto,
            created_at: announced_at,
            announced_at: Some(announced_at),
            last_crossing_at: Some(announced_at),
            quiet_since: None,
            expires_at: None,
            withdrawing: false,
        }
    }

    fn escalated(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Escalate { prefix, .. } => Some(prefix.to_string()),
                _ => None,
            })
            .collect()
    }

    fn withdrawn(actions: &[Action]) -> Vec<(String, WithdrawReason)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Withdraw { prefix, reason } => Some((prefix.to_string(), *reason)),
                _ => None,
            })
            .collect()
    }

    fn refused(actions: &[Action]) -> Vec<(String, Rule)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Refuse {
                    prefix, refusal, ..
                } => Some((prefix.to_string(), refusal.rule)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn escalates_the_covering_prefix_when_a_threshold_is_crossed() {
        let p = policy();
        for (t, metric) in [
            (mbps(100), "incoming_mbps"),
            (
                Traffic {
                    out_bps: 100 * MBIT,
                    ..Traffic::default()
                },
                "outgoing_mbps",
            ),
            (
                Traffic {
                    in_pps: 2000,
                    ..Traffic::default()
                },
                "incoming_pps",
            ),
            (
                Traffic {
                    out_pps: 2000,
                    ..Traffic::default()
                },
                "outgoing_pps",
            ),
        ] {
            let a = decide(&world(&[("203.0.113.7", Some(t))], T0), &p, T0);
            assert_eq!(escalated(&a), vec!["203.0.113.0/24"], "{metric}");
            match &a[0] {
                Action::Escalate {
                    reason: Reason::Threshold { crossings },
                    hosts,
                    ..
                } => {
                    assert_eq!(crossings[0].metric, metric);
                    assert_eq!(hosts, &vec![ip("203.0.113.7")]);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn below_every_threshold_escalates_nothing() {
        let p = policy();
        let t = Traffic {
            in_bps: 99 * MBIT,
            out_bps: 99 * MBIT,
            in_pps: 1999,
            out_pps: 1999,
        };
        assert!(decide(&world(&[("203.0.113.7", Some(t))], T0), &p, T0).is_empty());
    }

    #[test]
    fn ipv6_hosts_escalate_their_48() {
        let p = policy();
        let a = decide(&world(&[("2001:db8:1:2::5", Some(mbps(200)))], T0), &p, T0);
        assert_eq!(escalated(&a), vec!["2001:db8:1::/48"]);
    }

    #[test]
    fn most_specific_network_threshold_wins() {
        let p = policy();
        // /22 override: 500 Mbit/s; /25 override inside it: 1000 Mbit/s.
        assert!(decide(&world(&[("198.51.100.5", Some(mbps(400)))], T0), &p, T0).is_empty());
        assert_eq!(
            escalated(&decide(
                &world(&[("198.51.100.5", Some(mbps(500)))], T0),
                &p,
                T0
            )),
            vec!["198.51.100.0/24"]
        );
        assert!(decide(&world(&[("198.51.100.200", Some(mbps(900)))], T0), &p, T0).is_empty());
        assert_eq!(
            escalated(&decide(
                &world(&[("198.51.100.200", Some(mbps(1000)))], T0),
                &p,
                T0
            )),
            vec!["198.51.100.0/24"]
        );
        // Keys left out of an override inherit the defaults.
        let pps = Traffic {
            in_pps: 2000,
            ..Traffic::default()
        };
        assert_eq!(
            escalated(&decide(
                &world(&[("198.51.100.200", Some(pps))], T0),
                &p,
                T0
            )),
            vec!["198.51.100.0/24"]
        );
    }

    #[test]
    fn covering_prefix_is_never_shorter_than_configured() {
        let mut p = policy();
        p.ipv4_prefix_length = 26;
        assert_eq!(
            CoveringPrefix::of(ip("203.0.113.200"), &p).to_string(),
            "203.0.113.192/26"
        );
        assert_eq!(
            CoveringPrefix::manual(net("203.0.113.0/24"), &p)
                .unwrap_err()
                .rule,
            Rule::TooShort
        );
        assert_eq!(
            CoveringPrefix::manual(net("0.0.0.0/0"), &policy())
                .unwrap_err()
                .rule,
            Rule::TooShort
        );
        assert!(CoveringPrefix::manual(net("203.0.113.64/26"), &p).is_ok());
    }

    #[test]
    fn stale_samples_never_count_as_crossing() {
        let p = policy();
        let mut w = world(&[("203.0.113.7", None)], T0);
        *sample_of(&mut w, "203.0.113.7") = Some(Sample {
            at: T0 - p.sample_max_age - 1,
            traffic: mbps(10_000),
        });
        assert!(decide(&w, &p, T0).is_empty());
    }

    #[test]
    fn carpet_bombing_escalates_without_a_single_crossing() {
        let mut p = policy();
        p.carpet_bombing_hosts = 3;
        let quiet = Some(mbps(1));
        let two = world(&[("203.0.113.1", quiet), ("203.0.113.2", quiet)], T0);
        assert!(decide(&two, &p, T0).is_empty());
        let three = world(
            &[
                ("203.0.113.1", quiet),
                ("203.0.113.2", quiet),
                ("203.0.113.3", None),
            ],
            T0,
        );
        let a = decide(&three, &p, T0);
        assert_eq!(escalated(&a), vec!["203.0.113.0/24"]);
        assert!(matches!(
            &a[0],
            Action::Escalate { reason: Reason::CarpetBombing { banned_hosts: 3, limit: 3 }, hosts, .. } if hosts.len() == 3
        ));
        // Off when 0.
        p.carpet_bombing_hosts = 0;
        assert!(decide(&three, &p, T0).is_empty());
    }

    #[test]
    fn withdraws_when_no_banned_host_is_left() {
        let p = policy();
        let mut w = World::default();
        w.live.push(live("203.0.113.0/24", T0 - 10 * MIN));
        assert_eq!(
            withdrawn(&decide(&w, &p, T0)),
            vec![("203.0.113.0/24".to_string(), WithdrawReason::NoBannedHosts)]
        );
    }

    #[test]
    fn never_withdraws_before_min_hold() {
        let p = policy();
        let mut w = World::default();
        w.live.push(live("203.0.113.0/24", T0 - 4 * MIN));
        assert!(withdrawn(&decide(&w, &p, T0)).is_empty());
        w.live[0].announced_at = Some(T0 - 5 * MIN);
        assert_eq!(withdrawn(&decide(&w, &p, T0)).len(), 1);
    }

    #[test]
    fn withdraws_after_release_after_below_thresholds() {
        let p = policy();
        let mut w = world(&[("203.0.113.7", Some(mbps(1)))], T0);
        let mut l = live("203.0.113.0/24", T0 - 30 * MIN);
        w.live.push(l.clone());
        // First quiet cycle starts the timer.
        let a = decide(&w, &p, T0);
        assert!(withdrawn(&a).is_empty());
        assert!(a.contains(&Action::Track {
            prefix: net("203.0.113.0/24"),
            last_crossing_at: Some(T0 - 30 * MIN),
            quiet_since: Some(T0),
            hosts: vec![ip("203.0.113.7")],
        }));
        // 14 minutes quiet: held; 15: withdrawn.
        l.quiet_since = Some(T0 - 14 * MIN);
        w.live[0] = l.clone();
        assert!(withdrawn(&decide(&w, &p, T0)).is_empty());
        l.quiet_since = Some(T0 - 15 * MIN);
        w.live[0] = l;
        assert_eq!(
            withdrawn(&decide(&w, &p, T0)),
            vec![("203.0.113.0/24".to_string(), WithdrawReason::Quiet)]
        );
    }

    #[test]
    fn release_after_zero_withdraws_only_on_unban() {
        let mut p = policy();
        p.release_after = 0;
        let mut w = world(&[("203.0.113.7", Some(mbps(0)))], T0);
        let mut l = live("203.0.113.0/24", T0 - 600 * MIN);
        l.quiet_since = Some(T0 - 600 * MIN);
        w.live.push(l);
        assert!(withdrawn(&decide(&w, &p, T0)).is_empty());
        w.banned.clear();
        assert_eq!(withdrawn(&decide(&w, &p, T0)).len(), 1);
    }

    #[test]
    fn blackholed_host_whose_traffic_vanished_does_not_flap() {
        // The /32 blackhole makes the host's traffic disappear from FastNetMon's view: samples
        // stop (or read zero). The /24 must stay until release_after, whatever the cycle rate.
        let p = policy();
        let mut w = world(&[("203.0.113.7", None)], T0);
        let mut l = live("203.0.113.0/24", T0 - 6 * MIN);
        // Samples stopped entirely: no data is not "quiet", for hours.
        for cycle in 0..1000 {
            let now = T0 + cycle * 5_000;
            let a = decide(&w, &p, now);
            assert!(withdrawn(&a).is_empty(), "cycle {cycle}");
            assert!(escalated(&a).is_empty());
        }
        // Samples read zero: quiet, but withdrawn only once release_after has passed.
        *sample_of(&mut w, "203.0.113.7") = Some(Sample {
            at: T0,
            traffic: Traffic::default(),
        });
        let mut withdrawals = 0;
        for cycle in 0..(20 * 12) {
            let now = T0 + cycle * 5_000;
            *sample_of(&mut w, "203.0.113.7") = Some(Sample {
                at: now,
                traffic: Traffic::default(),
            });
            w.live = vec![l.clone()];
            for a in decide(&w, &p, now) {
                match a {
                    Action::Track {
                        quiet_since,
                        last_crossing_at,
                        ..
                    } => {
                        l.quiet_since = quiet_since;
                        l.last_crossing_at = last_crossing_at;
                    }
                    Action::Withdraw { reason, .. } => {
                        assert_eq!(reason, WithdrawReason::Quiet);
                        assert!(now - T0 >= p.release_after);
                        withdrawals += 1;
                    }
                    other => panic!("{other:?}"),
                }
            }
            if withdrawals > 0 {
                break;
            }
        }
        assert_eq!(withdrawals, 1);
    }

    #[test]
    fn a_crossing_resets_the_quiet_timer() {
        let p = policy();
        let mut w = world(&[("203.0.113.7", Some(mbps(150)))], T0);
        let mut l = live("203.0.113.0/24", T0 - 30 * MIN);
        l.quiet_since = Some(T0 - 14 * MIN);
        w.live.push(l);
        let a = decide(&w, &p, T0);
        assert_eq!(
            a,
            vec![Action::Track {
                prefix: net("203.0.113.0/24"),
                last_crossing_at: Some(T0),
                quiet_since: None,
                hosts: vec![ip("203.0.113.7")],
            }]
        );
    }

    #[test]
    fn missing_data_never_causes_a_withdrawal() {
        let p = policy();
        // One host quiet, one without fresh data: not quiet.
        let mut w = world(&[("203.0.113.7", Some(mbps(1))), ("203.0.113.8", None)], T0);
        let mut l = live("203.0.113.0/24", T0 - 60 * MIN);
        l.quiet_since = Some(T0 - 30 * MIN);
        w.live.push(l);
        let a = decide(&w, &p, T0);
        assert!(withdrawn(&a).is_empty());
        assert!(matches!(
            a[0],
            Action::Track {
                quiet_since: None,
                ..
            }
        ));
    }

    #[test]
    fn only_inside_networks_ours() {
        let p = policy();
        let a = decide(&world(&[("192.0.2.10", Some(mbps(500)))], T0), &p, T0);
        assert!(escalated(&a).is_empty());
        assert_eq!(
            refused(&a),
            vec![("192.0.2.0/24".to_string(), Rule::OutsideOurs)]
        );
        // A /24 only half inside ours is outside too.
        let mut p2 = policy();
        p2.ours = vec![net("203.0.113.0/25")];
        let a = decide(&world(&[("203.0.113.7", Some(mbps(500)))], T0), &p2, T0);
        assert_eq!(
            refused(&a),
            vec![("203.0.113.0/24".to_string(), Rule::OutsideOurs)]
        );
    }

    #[test]
    fn never_overlapping_networks_protected() {
        let p = policy();
        let a = decide(&world(&[("198.51.101.200", Some(mbps(900)))], T0), &p, T0);
        assert_eq!(
            refused(&a),
            vec![("198.51.101.0/24".to_string(), Rule::Protected)]
        );
        match &a[0] {
            Action::Refuse { refusal, .. } => {
                assert!(
                    refusal.reason.contains("198.51.101.0/28"),
                    "{}",
                    refusal.reason
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn at_most_max_active() {
        let mut p = policy();
        p.max_active = 2;
        let mut w = world(
            &[
                ("198.51.100.1", Some(mbps(900))),
                ("198.51.102.1", Some(mbps(900))),
                ("198.51.103.1", Some(mbps(900))),
            ],
            T0,
        );
        // Oldest attack first.
        w.banned[2].banned_at = T0 - 10 * MIN;
        let a = decide(&w, &p, T0);
        assert_eq!(escalated(&a), vec!["198.51.103.0/24", "198.51.100.0/24"]);
        assert_eq!(
            refused(&a),
            vec![("198.51.102.0/24".to_string(), Rule::MaxActive)]
        );
        // Already refused for the same rule: not refused again (one event, not one per cycle).
        w.refusals.push(OpenRefusal {
            prefix: net("198.51.102.0/24"),
            rule: Rule::MaxActive,
        });
        let a = decide(&w, &p, T0);
        assert!(refused(&a).is_empty());
        // Capacity frees up: escalated, and the refusal is cleared.
        p.max_active = 3;
        let a = decide(&w, &p, T0);
        assert_eq!(escalated(&a).len(), 3);
        assert!(a.contains(&Action::ClearRefusal {
            prefix: net("198.51.102.0/24")
        }));
    }

    #[test]
    fn refusal_is_cleared_when_the_prefix_no_longer_qualifies() {
        let p = policy();
        let mut w = World::default();
        w.refusals.push(OpenRefusal {
            prefix: net("192.0.2.0/24"),
            rule: Rule::OutsideOurs,
        });
        assert_eq!(
            decide(&w, &p, T0),
            vec![Action::ClearRefusal {
                prefix: net("192.0.2.0/24")
            }]
        );
    }

    #[test]
    fn live_escalations_count_against_max_active() {
        let mut p = policy();
        p.max_active = 1;
        let mut w = world(
            &[
                ("203.0.113.7", Some(mbps(500))),
                ("198.51.100.1", Some(mbps(900))),
            ],
            T0,
        );
        w.live.push(live("203.0.113.0/24", T0 - MIN));
        let a = decide(&w, &p, T0);
        assert!(escalated(&a).is_empty());
        assert_eq!(
            refused(&a),
            vec![("198.51.100.0/24".to_string(), Rule::MaxActive)]
        );
    }

    #[test]
    fn live_escalations_left_out_of_the_world_count_against_max_active() {
        let mut p = policy();
        p.max_active = 2;
        let mut w = world(&[("198.51.100.1", Some(mbps(900)))], T0);
        w.live_elsewhere = 2;
        assert_eq!(
            refused(&decide(&w, &p, T0)),
            vec![("198.51.100.0/24".to_string(), Rule::MaxActive)]
        );
        w.live_elsewhere = 1;
        assert_eq!(escalated(&decide(&w, &p, T0)), ["198.51.100.0/24"]);
    }

    #[test]
    fn an_escalated_prefix_is_not_escalated_twice() {
        let p = policy();
        let mut w = world(&[("203.0.113.7", Some(mbps(500)))], T0);
        let mut l = live("203.0.113.0/24", T0 - MIN);
        l.last_crossing_at = Some(T0);
        w.live.push(l);
        assert!(decide(&w, &p, T0).is_empty());
    }

    #[test]
    fn a_crossing_is_recorded_again_only_after_the_granularity() {
        let p = policy();
        let mut w = world(&[("203.0.113.7", Some(mbps(500)))], T0);
        let mut l = live("203.0.113.0/24", T0 - MIN);
        l.last_crossing_at = Some(T0 - TRACK_GRANULARITY + 1);
        w.live.push(l.clone());
        assert!(decide(&w, &p, T0).is_empty());
        l.last_crossing_at = Some(T0 - TRACK_GRANULARITY);
        w.live[0] = l;
        assert_eq!(
            decide(&w, &p, T0),
            vec![Action::Track {
                prefix: net("203.0.113.0/24"),
                last_crossing_at: Some(T0),
                quiet_since: None,
                hosts: vec![ip("203.0.113.7")],
            }]
        );
    }

    #[test]
    fn manual_escalation_is_held_until_it_expires() {
        let p = policy();
        let mut w = World::default();
        let mut l = live("203.0.113.0/24", T0 - 600 * MIN);
        l.origin = Origin::Manual;
        w.live.push(l.clone());
        // No expiry: held forever, even with no banned host.
        assert!(decide(&w, &p, T0).is_empty());
        l.expires_at = Some(T0 + 1);
        w.live[0] = l.clone();
        assert!(decide(&w, &p, T0).is_empty());
        l.expires_at = Some(T0);
        w.live[0] = l;
        assert_eq!(
            withdrawn(&decide(&w, &p, T0)),
            vec![("203.0.113.0/24".to_string(), WithdrawReason::ManualExpired)]
        );
    }

    #[test]
    fn expired_manual_escalation_still_wanted_is_adopted() {
        let p = policy();
        let mut w = world(&[("203.0.113.7", Some(mbps(500)))], T0);
        let mut l = live("203.0.113.0/24", T0 - 600 * MIN);
        l.origin = Origin::Manual;
        l.expires_at = Some(T0 - 1);
        w.live.push(l);
        let a = decide(&w, &p, T0);
        assert!(withdrawn(&a).is_empty());
        assert!(matches!(a[0], Action::Adopt { .. }));
    }

    #[test]
    fn suppressed_prefixes_are_not_escalated() {
        let p = policy();
        let mut w = world(&[("203.0.113.7", Some(mbps(500)))], T0);
        w.suppressions.push(Suppression {
            prefix: net("203.0.113.0/24"),
            until: T0 + MIN,
        });
        assert!(decide(&w, &p, T0).is_empty());
        w.suppressions[0].until = T0;
        assert_eq!(escalated(&decide(&w, &p, T0)).len(), 1);
    }

    #[test]
    fn withdrawing_escalations_are_left_to_the_checker() {
        let p = policy();
        let mut w = World::default();
        let mut l = live("203.0.113.0/24", T0 - 600 * MIN);
        l.withdrawing = true;
        w.live.push(l);
        assert!(decide(&w, &p, T0).is_empty());
    }

    #[test]
    fn manual_requests_obey_the_same_rails() {
        let p = policy();
        assert_eq!(
            check_manual(net("192.0.2.0/24"), 0, &p).unwrap_err().rule,
            Rule::OutsideOurs
        );
        assert_eq!(
            check_manual(net("198.51.101.0/24"), 0, &p)
                .unwrap_err()
                .rule,
            Rule::Protected
        );
        assert_eq!(
            check_manual(net("203.0.113.0/23"), 0, &p).unwrap_err().rule,
            Rule::TooShort
        );
        assert_eq!(
            check_manual(net("203.0.113.0/24"), p.max_active, &p)
                .unwrap_err()
                .rule,
            Rule::MaxActive
        );
        assert_eq!(
            check_manual(net("203.0.113.0/24"), 0, &p)
                .unwrap()
                .to_string(),
            "203.0.113.0/24"
        );
    }

    #[test]
    fn decision_is_deterministic() {
        let p = policy();
        let w = world(
            &[
                ("203.0.113.7", Some(mbps(500))),
                ("198.51.100.1", Some(mbps(900))),
                ("2001:db8::1", Some(mbps(900))),
            ],
            T0,
        );
        assert_eq!(decide(&w, &p, T0), decide(&w, &p, T0));
    }

    #[test]
    fn only_unbans_crossing_traffic_and_carpet_bombing_wake_the_checker_at_once() {
        use crate::fastnetmon::notification::parse_json;
        let notification = |action: &str, bytes: u64| {
            parse_json(
                serde_json::json!({
                    "ip": "198.51.100.7", "action": action, "alert_scope": "host",
                    "attack_details": {"total_incoming_traffic": bytes, "total_incoming_pps": 1}
                })
                .to_string()
                .as_bytes(),
            )
            .expect("parse")
        };
        let mut config = Config::default();
        let policy = Policy::from_config(&config);
        // 25 MB/s = 200 Mbit/s crosses the 100 Mbit/s default; 1 kB/s does not.
        assert!(acts_at_once(&notification("ban", 25_000_000), &policy));
        assert!(!acts_at_once(&notification("ban", 1_000), &policy));
        assert!(acts_at_once(&notification("unban", 0), &policy));
        assert!(acts_at_once(
            &notification("attack_status", 25_000_000),
            &policy
        ));
        assert!(!acts_at_once(
            &notification("attack_status", 1_000),
            &policy
        ));
        config.escalation.carpet_bombing_hosts = 3;
        let carpet = Policy::from_config(&config);
        assert!(acts_at_once(&notification("ban", 1_000), &carpet));
    }

    /// A world of a few covering prefixes decides for them as the whole world does, whatever
    /// else is banned, live, refused or suppressed, and whether they are live or not (while the
    /// cap has room, which `focus` checks); and `focus` refuses the worlds it cannot stand for.
    #[test]
    fn a_focused_world_decides_its_prefixes_as_the_whole_world_does() {
        use proptest::prelude::*;
        const HOSTS: [&str; 16] = [
            "203.0.113.1",
            "203.0.113.2",
            "203.0.113.200",
            "198.51.100.1",
            "198.51.100.130",
            "198.51.101.1",
            "198.51.101.200",
            "198.51.102.9",
            "198.51.103.4",
            "198.51.103.5",
            "192.0.2.1",
            "192.0.2.77",
            "2001:db8::1",
            "2001:db8::2",
            "2001:db8:0:1::1",
            "2001:db8:7::1",
        ];
        let rules = [Rule::Protected, Rule::OutsideOurs, Rule::ForeignRoute];
        proptest!(ProptestConfig::with_cases(400), |(seed in any::<u64>())| {
            // xorshift: one seed draws the whole world.
            let mut x = seed | 1;
            let mut draw = |n: u64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % n
            };
            let mut p = policy();
            p.carpet_bombing_hosts = [0, 2, 3][draw(3) as usize];
            let mut banned = Vec::new();
            for h in HOSTS {
                if draw(3) == 0 {
                    continue;
                }
                let sample_at = if draw(4) == 0 { T0 - 10 * MIN } else { T0 - 1_000 };
                banned.push(BannedHost {
                    ip: ip(h),
                    banned_at: T0 - 1_000 * draw(20) as Millis,
                    sample: match draw(3) {
                        0 => None,
                        _ => Some(Sample { at: sample_at, traffic: mbps(draw(1500)) }),
                    },
                });
            }
            banned.sort_by_key(|b| (b.banned_at, b.ip));
            let prefixes: BTreeSet<CoveringPrefix> =
                HOSTS.iter().map(|h| CoveringPrefix::of(ip(h), &p)).collect();
            let (mut lives, mut refusals, mut suppressions) = (Vec::new(), Vec::new(), Vec::new());
            let mut focus_on = BTreeSet::new();
            for prefix in &prefixes {
                let n = prefix.net();
                if draw(3) == 0 {
                    focus_on.insert(*prefix);
                }
                if draw(3) == 0 {
                    let mut l = live(&n.to_string(), T0 - MIN * draw(30) as Millis);
                    l.quiet_since = (draw(2) == 0).then_some(T0 - MIN * draw(30) as Millis);
                    l.last_crossing_at = (draw(2) == 0).then_some(T0 - MIN * draw(30) as Millis);
                    l.withdrawing = draw(5) == 0;
                    if draw(4) == 0 {
                        l.origin = Origin::Manual;
                        l.expires_at = Some(T0 + MIN - MIN * draw(3) as Millis);
                    }
                    lives.push(l);
                }
                if draw(4) == 0 {
                    refusals.push(OpenRefusal { prefix: n, rule: rules[draw(3) as usize] });
                }
                if draw(6) == 0 {
                    suppressions.push(Suppression { prefix: n, until: T0 + MIN });
                }
            }
            prop_assume!(!focus_on.is_empty());
            // Room for every prefix: the whole world's cycle escalates every other wanted prefix
            // too, where the checker's focused cycle finds them escalated or refused already.
            p.max_active = lives.len() + prefixes.len() + draw(3) as usize + 1;
            let whole = World {
                banned: banned.clone(),
                live: lives.clone(),
                refusals: refusals.clone(),
                suppressions: suppressions.clone(),
                live_elsewhere: 0,
            };
            let nets: HashSet<IpNet> = focus_on.iter().map(|p| p.net()).collect();
            let ours = |a: &Action| match a {
                    Action::Escalate { prefix, .. } => nets.contains(&prefix.net()),
                    Action::Refuse { prefix, .. }
                    | Action::ClearRefusal { prefix }
                    | Action::Withdraw { prefix, .. }
                    | Action::Track { prefix, .. }
                    | Action::Adopt { prefix, .. } => nets.contains(prefix),
                };
            let expected: Vec<Action> = decide(&whole, &p, T0)
                .into_iter()
                .filter(|a| ours(a))
                .collect();
            // As the checker builds it: each prefix's hosts from the index, oldest ban first.
            let inside: Vec<BannedHost> = focus_on
                .iter()
                .flat_map(|f| banned.iter().filter(|b| f.net().contains(&b.ip)).cloned())
                .collect();
            let focused = focus(&focus_on, inside.clone(), &lives, refusals.clone(), suppressions.clone(), &p)
                .expect("room under the cap");
            prop_assert_eq!(decide(&focused, &p, T0), expected);

            // At the cap, or with a refusal for it open: only a world of live prefixes alone
            // (nothing to escalate) decides as the whole world does; any other is left to a
            // cycle over everything.
            let not_live = focus_on
                .iter()
                .filter(|f| !lives.iter().any(|l| l.prefix == f.net()))
                .count();
            let mut tight = p.clone();
            tight.max_active = lives.iter().filter(|l| !l.withdrawing).count() + not_live;
            let mut capped = refusals.clone();
            capped.push(OpenRefusal { prefix: net("2001:db8:99::/48"), rule: Rule::MaxActive });
            let at_cap = focus(&focus_on, inside.clone(), &lives, refusals.clone(), suppressions.clone(), &tight);
            let past_cap = focus(&focus_on, inside, &lives, capped, suppressions, &p);
            prop_assert_eq!(at_cap.is_none(), not_live > 0);
            prop_assert_eq!(past_cap.is_none(), not_live > 0);
            if let Some(w) = at_cap {
                let whole_at_cap: Vec<Action> = decide(&whole, &tight, T0)
                    .into_iter()
                    .filter(|a| ours(a))
                    .collect();
                prop_assert_eq!(decide(&w, &tight, T0), whole_at_cap);
            }
        });
    }
}
