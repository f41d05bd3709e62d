//! The checker: gathers the world from the store, runs the pure decision, records every action in
//! the ledger, and carries it out through the speaker (with retries and backoff). Woken at once by
//! notifications and samples; the interval tick is the safety net. A wake for a few hosts (a
//! crossing, an unban) runs a cycle over their covering prefixes alone when that decides as a
//! cycle over everything would (`Checker::focused`, `decision::focus`). Reconciliation with the
//! speaker's RIB runs at start-up and every `reconcile_interval`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{watch, Notify};

use crate::bgp::{BgpError, Route, Speaker, Withdrawn};
use crate::clock::{ms, now_ms, rfc3339, Millis};
use crate::config::Config;
use crate::decision::{
    decide, focus, Action, BannedHost, CoveringPrefix, Live, OpenRefusal, Origin, Policy, Rule,
    Sample, Suppression, World,
};
use crate::metrics::metrics;
use crate::store::{EscalationRow, LedgerWrite, NewEscalation, NewEvent, Store, StoreError};

const ACTOR: &str = "checker";

/// Banned hosts from which a cycle over everything goes in parts (`Checker::cycle`), and its
/// allocations are worth handing back to the system.
const LARGE_WORLD: usize = 10_000;
/// Banned hosts per part of a cycle over a large world (see `Checker::cycle`): about 1.3 MiB
/// of them in memory at a time, where the whole world was 8 MiB at 100,000.
const PART_HOSTS: usize = 16_384;

/// glibc keeps what a thread frees in that thread's arena, resident; a cycle over 100,000
/// banned hosts (carpet bombing) frees tens of MiB across the runtime's threads, which would
/// otherwise stay in the process's resident memory until the next such cycle reuses it. (The
/// service binary allocates with jemalloc, whose background thread hands memory back by itself;
/// this is for the library under glibc's malloc, as in the tests.)
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_freed_memory() {
    // SAFETY: malloc_trim only returns free pages of glibc's heaps to the kernel; it takes no
    // pointer and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() {}

/// What the checker has done lately, for `/readyz` and metrics.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct CheckerStatus {
    pub cycles: u64,
    pub last_cycle_at: Option<String>,
    pub last_cycle_ms: Option<f64>,
    pub last_error: Option<String>,
    pub reconciles: u64,
    pub last_reconcile_at: Option<String>,
    pub last_reconcile_error: Option<String>,
    /// Cycles over the prefixes of a few hosts alone: crossings, unbans (`Checker::focused`).
    pub focused_cycles: u64,
    pub last_focused_cycle_ms: Option<f64>,
}

/// Most hosts whose prefixes a woken cycle looks at alone; past it, it looks at everything.
const MAX_FOCUS: usize = 64;

/// What the wakes since the last woken cycle asked for.
#[derive(Debug, Default)]
struct Asked {
    /// A cycle over everything.
    full: bool,
    /// Hosts whose covering prefixes may want something else now (`CheckerHandle::wake_for`).
    hosts: Vec<IpAddr>,
}

/// The handle the API holds: wake the checker, read its status, build our routes.
#[derive(Clone)]
pub struct CheckerHandle {
    wake: Arc<Notify>,
    /// What the wakes since the last woken cycle asked for.
    asked: Arc<Mutex<Asked>>,
    status: Arc<Mutex<CheckerStatus>>,
    config: Arc<Config>,
}

impl CheckerHandle {
    pub fn new(config: Arc<Config>) -> Self {
        CheckerHandle {
            wake: Arc::new(Notify::new()),
            asked: Arc::default(),
            status: Arc::new(Mutex::new(CheckerStatus::default())),
            config,
        }
    }

    /// Asks for a cycle now. Wakes coalesce: a burst of notifications costs one cycle.
    pub fn wake(&self) {
        self.ask(|a| a.full = true);
    }

    /// Asks for a cycle now because `hosts` crossed a threshold, were banned while carpet
    /// bombing counts bans, or were unbanned: only what is wanted of their covering prefixes
    /// can have changed, and the cycle may look at those alone (`Checker::focused`). Coalesces
    /// like `wake`.
    pub fn wake_for(&self, hosts: impl IntoIterator<Item = IpAddr>) {
        self.ask(|a| {
            for ip in hosts {
                if a.full || a.hosts.len() >= MAX_FOCUS {
                    a.full = true;
                    break;
                }
                a.hosts.push(ip);
            }
        });
    }

    fn ask(&self, f: impl FnOnce(&mut Asked)) {
        f(&mut self.asked.lock().unwrap_or_else(|p| p.into_inner()));
        self.wake.notify_one();
    }

    fn take_asked(&self) -> Asked {
        std::mem::take(&mut self.asked.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The hosts asked for, unless a cycle over everything is asked for too (then both stay
    /// for the woken cycle).
    fn take_hosts(&self) -> Vec<IpAddr> {
        let mut asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
        if asked.full {
            return Vec::new();
        }
        std::mem::take(&mut asked.hosts)
    }

    pub fn status(&self) -> CheckerStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut CheckerStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    /// The route we announce for a prefix: the configured next hop of its family and our
    /// communities. None if the family has no next hop.
    pub fn route_for(&self, prefix: IpNet) -> Option<Route> {
        let bgp = &self.config.bgp;
        let next_hop = match prefix {
            IpNet::V4(_) => bgp.next_hop_ipv4,
            IpNet::V6(_) => bgp.next_hop_ipv6,
        }?;
        Some(Route {
            prefix,
            next_hop,
            communities: bgp.communities.clone(),
            large_communities: bgp.large_communities.clone(),
        })
    }
}

pub struct Checker {
    store: Store,
    speaker: Arc<dyn Speaker>,
    config: Arc<Config>,
    policy: Arc<Policy>,
    handle: CheckerHandle,
}

/// What a committed ledger write adds to the metrics and the cycle's report.
enum Counted {
    Escalated,
    Refused(&'static str),
    Decision(&'static str),
    Nothing,
}

impl Counted {
    fn apply(self, report: &mut CycleReport) {
        match self {
            Counted::Escalated => {
                metrics().decision("escalate");
                report.escalated += 1;
            }
            Counted::Refused(rule) => {
                metrics().refusal(rule);
                report.refused += 1;
            }
            Counted::Decision(kind) => metrics().decision(kind),
            Counted::Nothing => {}
        }
    }
}

fn banned_host(b: crate::store::BannedNow) -> BannedHost {
    BannedHost {
        ip: b.ip,
        banned_at: b.since,
        sample: b.sample.map(|(at, traffic)| Sample { at, traffic }),
    }
}

/// The live escalations as the decision sees them.
fn live_of(rows: &[EscalationRow]) -> Vec<Live> {
    rows.iter()
        .filter_map(|r| {
            Some(Live {
                prefix: r.prefix.parse().ok()?,
                origin: if r.origin == "manual" {
                    Origin::Manual
                } else {
                    Origin::Auto
                },
                created_at: r.created_at,
                announced_at: r.announced_at,
                last_crossing_at: r.last_crossing_at,
                quiet_since: r.quiet_since,
                expires_at: r.expires_at,
                withdrawing: r.withdraw_requested_at.is_some(),
            })
        })
        .collect()
}

/// The ledger as a decision reads it (see `Checker::ledger`).
struct Ledger {
    rows: Vec<EscalationRow>,
    live: Vec<Live>,
    refusals: Vec<OpenRefusal>,
    suppressions: Vec<Suppression>,
}

/// What one cycle did (tests and logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CycleReport {
    pub escalated: usize,
    pub refused: usize,
    pub withdrawn: usize,
    pub announce_failures: usize,
}

impl CycleReport {
    /// Adds what `other` (a part of the same cycle) did.
    fn add(&mut self, other: &CycleReport) {
        self.escalated += other.escalated;
        self.refused += other.refused;
        self.withdrawn += other.withdrawn;
        self.announce_failures += other.announce_failures;
    }
}

impl Checker {
    pub fn new(
        store: Store,
        speaker: Arc<dyn Speaker>,
        config: Arc<Config>,
        policy: Arc<Policy>,
        handle: CheckerHandle,
    ) -> Self {
        Checker {
            store,
            speaker,
            config,
            policy,
            handle,
        }
    }

    /// Runs until `shutdown` turns true. Routes stay announced on shutdown: they are state, not
    /// process lifetime.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.escalation.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reconcile = tokio::time::interval(self.config.bgp.reconcile_interval);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let wake = self.handle.wake.clone();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                // The first reconcile tick fires at once: reconciliation at start-up.
                _ = reconcile.tick() => {
                    self.reconcile_logged().await;
                    // Whatever reconciliation re-announced, the ledger may need a cycle.
                    self.cycle_logged().await;
                }
                _ = wake.notified() => self.woken().await,
                _ = tick.tick() => self.cycle_logged().await,
            }
            if *shutdown.borrow() {
                break;
            }
        }
        tracing::info!("checker stopped; announced routes stay in place");
    }

    async fn cycle_logged(&self) {
        let started = std::time::Instant::now();
        let result = self.cycle().await;
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        metrics().checker_cycle_duration.observe(elapsed / 1000.0);
        match &result {
            Ok(r) if *r != CycleReport::default() => {
                tracing::info!(
                    escalated = r.escalated,
                    refused = r.refused,
                    withdrawn = r.withdrawn,
                    announce_failures = r.announce_failures,
                    ms = elapsed,
                    "checker cycle"
                );
            }
            Ok(_) => tracing::debug!(ms = elapsed, "checker cycle: nothing to do"),
            Err(e) => tracing::error!(error = %e, "checker cycle failed; retrying next tick"),
        }
        self.handle.update(|s| {
            s.cycles += 1;
            s.last_cycle_at = Some(rfc3339(now_ms()));
            s.last_cycle_ms = Some(elapsed);
            s.last_error = result.as_ref().err().map(|e| e.to_string());
        });
    }

    async fn reconcile_logged(&self) {
        let result = self.reconcile().await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, "reconciliation with the speaker failed");
        }
        self.handle.update(|s| {
            s.reconciles += 1;
            s.last_reconcile_at = Some(rfc3339(now_ms()));
            s.last_reconcile_error = result.as_ref().err().cloned();
        });
    }

    /// A cycle asked for by wakes: over the covering prefixes of the hosts they named when
    /// that decides as a cycle over everything would (`focused`), over everything otherwise.
    async fn woken(&self) {
        let asked = self.handle.take_asked();
        if !asked.full {
            if asked.hosts.is_empty() {
                // What was asked was taken by the cycle before.
                return;
            }
            if self.focused_logged(&asked.hosts).await {
                return;
            }
        }
        self.cycle_logged().await;
    }

    /// Runs `focused`, logs and counts it; false when a cycle over everything is needed.
    async fn focused_logged(&self, hosts: &[IpAddr]) -> bool {
        let started = std::time::Instant::now();
        let r = match self.focused(hosts).await {
            Ok(Some(r)) => r,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "focused checker cycle failed; looking at everything");
                return false;
            }
        };
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        metrics()
            .checker_focused_cycle_duration
            .observe(elapsed / 1000.0);
        if r != CycleReport::default() {
            tracing::info!(
                escalated = r.escalated,
                refused = r.refused,
                withdrawn = r.withdrawn,
                announce_failures = r.announce_failures,
                ms = elapsed,
                "checker cycle over the prefixes of {} hosts",
                hosts.len()
            );
        }
        self.handle.update(|s| {
            s.focused_cycles += 1;
            s.last_focused_cycle_ms = Some(elapsed);
        });
        true
    }

    /// A cycle over everything. A world of `LARGE_WORLD` banned hosts or more is decided in
    /// parts of about `PART_HOSTS` hosts (`cycle_in_parts`); a smaller one, or one that only
    /// the whole world's order decides right, at once (`whole`). Public for tests.
    pub async fn cycle(&self) -> Result<CycleReport, StoreError> {
        self.cycle_in_parts(PART_HOSTS, LARGE_WORLD).await
    }

    /// A cycle over everything, as focused cycles over parts of the prefixes in address order,
    /// each holding about `part` banned hosts, when there are `large` banned hosts or more.
    ///
    /// The parts are the covering prefixes of the banned hosts, of the live escalations and of
    /// the open refusals, so every prefix the whole world's decision could act on is in one.
    /// Each part's decision is the whole world's for its prefixes (`decision::focus`, property
    /// tested), made on the ledger as the parts before it left it. Where that cannot hold, the
    /// cycle decides the whole world at once instead (what is left of it, or all): a live or
    /// refused prefix of another length than its hosts' covering one (a manual /23: only the
    /// whole world looks inside it), or a part near `max_active` (`focus` refuses it: the oldest
    /// attack first gets the room). A cycle in parts holds one part's hosts in memory at a
    /// time, where the whole world's copy of 100,000 banned hosts took 8 MiB more at every tick.
    /// Public for tests.
    pub async fn cycle_in_parts(
        &self,
        part: usize,
        large: usize,
    ) -> Result<CycleReport, StoreError> {
        let mut report = CycleReport::default();
        if let Some((parts, mut ledger)) = self.parts(part, large).await? {
            let mut all_done = true;
            for p in &parts {
                // A crossing or an unban that came meanwhile does not wait for the rest of the
                // parts: its own prefix is decided now.
                let hosts = self.handle.take_hosts();
                if !hosts.is_empty() {
                    if !self.focused_logged(&hosts).await {
                        self.handle.wake();
                    }
                    ledger = self.ledger(now_ms()).await?;
                }
                // The ledger is read again only after a part escalated or refused something
                // (and its escalations were announced): that changes how many are live, or adds
                // a refusal for the cap, which the parts after it must see. What else a part
                // writes is about its own prefixes, or makes the next parts' view of the cap
                // only more cautious (a withdrawal asked for, a refusal cleared).
                match self.decide_on(p, &ledger, now_ms(), false).await? {
                    Some(r) => {
                        report.add(&r);
                        if r.escalated > 0 || r.refused > 0 {
                            self.carry_out(&mut report).await?;
                            ledger = self.ledger(now_ms()).await?;
                        }
                    }
                    None => {
                        all_done = false;
                        break;
                    }
                }
            }
            if all_done {
                // What failed before is retried, as at the end of every cycle.
                self.carry_out(&mut report).await?;
                release_freed_memory();
                return Ok(report);
            }
        }
        report.add(&self.whole().await?);
        Ok(report)
    }

    /// The prefixes of a cycle in parts, `part` banned hosts or more to a part, and the ledger
    /// they were read with; `None` when the world is smaller than `large`, the banned hosts are
    /// not in memory yet, or a live or refused prefix is not the covering prefix of its own
    /// hosts.
    async fn parts(
        &self,
        part: usize,
        large: usize,
    ) -> Result<Option<(Vec<BTreeSet<CoveringPrefix>>, Ledger)>, StoreError> {
        let policy = &self.policy;
        let Some(counts) = self
            .store
            .banned_prefixes(|ip| CoveringPrefix::of(ip, policy).net())
        else {
            return Ok(None);
        };
        if counts.iter().map(|(_, n)| n).sum::<usize>() < large {
            return Ok(None);
        }
        let mut all: BTreeMap<CoveringPrefix, usize> = BTreeMap::new();
        for (net, n) in counts {
            *all.entry(CoveringPrefix::of(net.addr(), policy))
                .or_insert(0) += n;
        }
        let ledger = self.ledger(now_ms()).await?;
        let prefixes = ledger
            .live
            .iter()
            .map(|l| l.prefix)
            .chain(ledger.refusals.iter().map(|r| r.prefix));
        for net in prefixes {
            let covering = CoveringPrefix::of(net.addr(), policy);
            if covering.net() != net {
                return Ok(None);
            }
            all.entry(covering).or_insert(0);
        }
        let mut parts = Vec::new();
        let mut current = BTreeSet::new();
        let mut hosts = 0;
        for (prefix, n) in all {
            current.insert(prefix);
            hosts += n;
            if hosts >= part {
                parts.push(std::mem::take(&mut current));
                hosts = 0;
            }
        }
        if !current.is_empty() {
            parts.push(current);
        }
        Ok(Some((parts, ledger)))
    }

    /// The ledger as a decision reads it: the live rows (and what the decision makes of them),
    /// the open refusals and the suppressions in force at `now`.
    async fn ledger(&self, now: Millis) -> Result<Ledger, StoreError> {
        let rows = self.store.live_escalations().await?;
        Ok(Ledger {
            live: live_of(&rows),
            rows,
            refusals: self.refusals().await?,
            suppressions: self.suppressions(now).await?,
        })
    }

    /// Gathers the whole world, decides, records and applies.
    async fn whole(&self) -> Result<CycleReport, StoreError> {
        let now = now_ms();
        let t = std::time::Instant::now();
        let (world, live) = self.gather(now).await?;
        let gathered = t.elapsed();
        let actions = decide(&world, &self.policy, now);
        let decided = t.elapsed();
        let large = world.banned.len() >= LARGE_WORLD;
        drop(world);
        let (report, writes) = self.apply(actions, &live, now, true).await?;
        if writes > 0 {
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            tracing::debug!(
                writes,
                gather_ms = ms(gathered),
                decide_ms = ms(decided - gathered),
                apply_ms = ms(t.elapsed() - decided),
                "decisions recorded"
            );
        }
        if large {
            release_freed_memory();
        }
        Ok(report)
    }

    /// A cycle over the covering prefixes of `hosts` alone (see `CheckerHandle::wake_for`):
    /// their banned hosts come from a range of the index in memory, so it takes as long with a
    /// million banned hosts elsewhere as with none, where a cycle over everything passes over
    /// each of them. `None` when only a cycle over everything decides right
    /// (`decision::focus`), or the banned hosts are not in memory yet. Public for tests.
    pub async fn focused(&self, hosts: &[IpAddr]) -> Result<Option<CycleReport>, StoreError> {
        let prefixes: BTreeSet<CoveringPrefix> = hosts
            .iter()
            .map(|&ip| CoveringPrefix::of(ip, &self.policy))
            .collect();
        let now = now_ms();
        let ledger = self.ledger(now).await?;
        self.decide_on(&prefixes, &ledger, now, true).await
    }

    /// Decides `prefixes` alone on `ledger`, records the decisions and, with `carry_out`,
    /// carries out what the ledger then holds. `None` when only a cycle over everything decides
    /// right (`decision::focus`), or the banned hosts are not in memory yet.
    async fn decide_on(
        &self,
        prefixes: &BTreeSet<CoveringPrefix>,
        ledger: &Ledger,
        now: Millis,
        carry_out: bool,
    ) -> Result<Option<CycleReport>, StoreError> {
        let mut banned = Vec::new();
        for p in prefixes {
            let Some(inside) = self.store.banned_within(p.net()) else {
                return Ok(None);
            };
            banned.extend(inside.into_iter().map(banned_host));
        }
        let Some(world) = focus(
            prefixes,
            banned,
            &ledger.live,
            ledger.refusals.clone(),
            ledger.suppressions.clone(),
            &self.policy,
        ) else {
            return Ok(None);
        };
        let actions = decide(&world, &self.policy, now);
        Ok(Some(
            self.apply(actions, &ledger.rows, now, carry_out).await?.0,
        ))
    }

    /// Records the decided `actions` against the `live` ledger rows they were decided on, in
    /// one commit, and carries out what the ledger then holds. Returns the report and how many
    /// writes were recorded.
    async fn apply(
        &self,
        actions: Vec<Action>,
        live: &[EscalationRow],
        now: Millis,
        carry_out: bool,
    ) -> Result<(CycleReport, usize), StoreError> {
        let by_prefix: HashMap<String, &EscalationRow> =
            live.iter().map(|r| (r.prefix.clone(), r)).collect();
        let mut report = CycleReport::default();
        let mut writes = Vec::with_capacity(actions.len());
        let mut counted = Vec::with_capacity(actions.len());
        for action in actions {
            if let Some((write, count)) = self.ledger_write(action, &by_prefix, now) {
                writes.push(write);
                counted.push(count);
            }
        }
        // One commit for the whole cycle (in chunks): a carpet-bombing burst of thousands of
        // escalations was a transaction each, about a millisecond apiece.
        self.store.record_ledger(&writes, ACTOR, now).await?;
        for count in counted {
            count.apply(&mut report);
        }
        if carry_out {
            self.carry_out(&mut report).await?;
        }
        Ok((report, writes.len()))
    }

    /// The world the decision needs, and the live ledger rows it was built from (the cycle
    /// records its writes against those rows).
    async fn gather(&self, now: Millis) -> Result<(World, Vec<EscalationRow>), StoreError> {
        // Converted in place: the read's buffer becomes the world's (at 100,000 banned hosts,
        // one buffer of 8-10 MiB rather than two).
        let banned = self
            .store
            .banned_now()
            .await?
            .into_iter()
            .map(banned_host)
            .collect::<Vec<_>>();
        let ledger = self.ledger(now).await?;
        let world = World {
            banned,
            live: ledger.live,
            refusals: ledger.refusals,
            suppressions: ledger.suppressions,
            live_elsewhere: 0,
        };
        Ok((world, ledger.rows))
    }

    async fn refusals(&self) -> Result<Vec<OpenRefusal>, StoreError> {
        Ok(self
            .store
            .open_refusals()
            .await?
            .into_iter()
            .filter_map(|r| {
                Some(OpenRefusal {
                    prefix: r.prefix.parse().ok()?,
                    rule: Rule::parse(r.rule.as_deref()?)?,
                })
            })
            .collect())
    }

    async fn suppressions(&self, now: Millis) -> Result<Vec<Suppression>, StoreError> {
        Ok(self
            .store
            .active_suppressions(now)
            .await?
            .into_iter()
            .filter_map(|s| {
                Some(Suppression {
                    prefix: s.prefix.parse().ok()?,
                    until: s.until,
                })
            })
            .collect())
    }

    /// The ledger write for one decided action (logged here, counted once committed).
    fn ledger_write(
        &self,
        action: Action,
        live: &HashMap<String, &EscalationRow>,
        now: Millis,
    ) -> Option<(LedgerWrite, Counted)> {
        match action {
            Action::Escalate {
                prefix,
                reason,
                hosts,
            } => {
                let Some(route) = self.handle.route_for(prefix.net()) else {
                    // Validation requires a next hop for every family in networks.ours, and
                    // only prefixes inside ours get here; this is a guard, not a path.
                    tracing::error!(%prefix, "no next hop for this family; not escalating");
                    return None;
                };
                tracing::info!(%prefix, %reason, "escalating");
                let write = LedgerWrite::Insert(Box::new(NewEscalation {
                    route,
                    state: "pending",
                    origin: "auto",
                    reason: reason.to_string(),
                    rule: None,
                    hosts: hosts.iter().map(|h| h.to_string()).collect(),
                    dry_run: self.config.escalation.dry_run,
                    expires_at: None,
                    created_by: ACTOR.into(),
                    at: now,
                    detail: serde_json::to_value(&reason).unwrap_or_default(),
                }));
                Some((write, Counted::Escalated))
            }
            Action::Refuse {
                prefix,
                refusal,
                reason,
                hosts,
            } => {
                tracing::warn!(
                    %prefix,
                    rule = refusal.rule.as_str(),
                    why = %refusal.reason,
                    wanted_because = %reason,
                    "escalation refused by a safety rail"
                );
                let route = self.handle.route_for(prefix).unwrap_or(Route {
                    prefix,
                    next_hop: prefix.addr(),
                    communities: Vec::new(),
                    large_communities: Vec::new(),
                });
                let rule = refusal.rule.as_str();
                let write = LedgerWrite::Insert(Box::new(NewEscalation {
                    route,
                    state: "refused",
                    origin: "auto",
                    reason: refusal.reason.clone(),
                    rule: Some(rule),
                    hosts: hosts.iter().map(|h| h.to_string()).collect(),
                    dry_run: self.config.escalation.dry_run,
                    expires_at: None,
                    created_by: ACTOR.into(),
                    at: now,
                    detail: json!({ "wanted_because": reason, "refusal": refusal }),
                }));
                Some((write, Counted::Refused(rule)))
            }
            Action::ClearRefusal { prefix } => Some((
                LedgerWrite::ClearRefusal {
                    prefix: prefix.to_string(),
                },
                Counted::Nothing,
            )),
            Action::Withdraw { prefix, reason } => {
                let row = live.get(&prefix.to_string())?;
                tracing::info!(%prefix, reason = reason.as_str(), "withdrawing");
                let write = LedgerWrite::Withdraw {
                    id: row.id,
                    prefix: row.prefix.clone(),
                    reason: reason.as_str().into(),
                };
                Some((write, Counted::Decision("withdraw")))
            }
            Action::Track {
                prefix,
                last_crossing_at,
                quiet_since,
                hosts,
            } => {
                let row = live.get(&prefix.to_string())?;
                let write = LedgerWrite::Track {
                    id: row.id,
                    last_crossing_at,
                    quiet_since,
                    hosts: hosts.iter().map(|h| h.to_string()).collect(),
                };
                Some((write, Counted::Nothing))
            }
            Action::Adopt { prefix, reason } => {
                let row = live.get(&prefix.to_string())?;
                let write = LedgerWrite::Adopt {
                    id: row.id,
                    prefix: row.prefix.clone(),
                    reason: reason.to_string(),
                };
                Some((write, Counted::Decision("adopt")))
            }
        }
    }

    fn backoff(&self, attempts: i64) -> Duration {
        let bgp = &self.config.bgp;
        let exp = u32::try_from(attempts.clamp(0, 16)).unwrap_or(16);
        bgp.retry_initial
            .saturating_mul(2u32.saturating_pow(exp))
            .min(bgp.retry_max)
    }

    /// Announces what is pending or due for a retry, and withdraws what was decided.
    async fn carry_out(&self, report: &mut CycleReport) -> Result<(), StoreError> {
        let now = now_ms();
        let mut to_announce = Vec::new();
        for row in self.store.escalations_to_carry_out().await? {
            let due = row.next_attempt_at.is_none_or(|t| t <= now);
            if !due {
                continue;
            }
            let route = match row.route() {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(id = row.id, error = %e, "cannot rebuild route from the ledger");
                    continue;
                }
            };
            if row.withdraw_requested_at.is_some() {
                if self.withdraw(&row, &route).await? {
                    report.withdrawn += 1;
                }
            } else if row.state != "active" {
                to_announce.push((row, route));
            }
        }
        report.announce_failures += self.announce(&to_announce).await?;
        Ok(())
    }

    /// Announces ledger rows, all at once through the speaker's batch call, and records the
    /// outcomes in one transaction each; returns how many failed.
    async fn announce(&self, rows: &[(EscalationRow, Route)]) -> Result<usize, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let (dry, real): (Vec<_>, Vec<_>) = rows.iter().partition(|(row, _)| row.dry_run);
        let dry_ids: Vec<(i64, String)> =
            dry.iter().map(|(r, _)| (r.id, r.prefix.clone())).collect();
        self.store
            .mark_announced_many(
                &dry_ids,
                now,
                ACTOR,
                " (dry run: nothing sent to the speaker)",
            )
            .await?;
        if real.is_empty() {
            return Ok(0);
        }
        let routes: Vec<Route> = real.iter().map(|(_, r)| r.clone()).collect();
        let results = self.speaker.announce_batch(&routes).await;
        let now = now_ms();
        let mut ok = Vec::new();
        let mut failed = Vec::new();
        let mut foreign = Vec::new();
        for ((row, route), result) in real.iter().zip(results) {
            metrics().bgp(self.speaker.name(), "announce", result.is_ok());
            match result {
                Ok(()) => ok.push((row.id, row.prefix.clone())),
                Err(BgpError::ForeignRoute { prefix }) => foreign.push((row, route, prefix)),
                Err(e) => {
                    let wait = self.backoff(row.attempts);
                    tracing::warn!(prefix = %row.prefix, error = %e, retry_in = ?wait, "announce failed");
                    failed.push((row.id, row.prefix.clone(), e.to_string(), now + ms(wait)));
                }
            }
        }
        if !ok.is_empty() {
            tracing::info!(count = ok.len(), backend = self.speaker.name(), "announced");
        }
        self.store.mark_announced_many(&ok, now, ACTOR, "").await?;
        self.store.mark_announce_failed_many(&failed, now).await?;
        for (row, route, prefix) in &foreign {
            // Someone else's route holds the prefix: do not replace it. The escalation is
            // closed as refused; reconciliation retries once the foreign route is gone.
            tracing::warn!(%prefix, rule = "foreign_route", "not announcing over a foreign route");
            self.store
                .mark_withdrawn(
                    row.id,
                    &row.prefix,
                    now,
                    ACTOR,
                    " (never announced: a foreign route holds the prefix)",
                )
                .await?;
            self.store
                .insert_escalation(&NewEscalation {
                    route: (*route).clone(),
                    state: "refused",
                    origin: if row.origin == "manual" {
                        "manual"
                    } else {
                        "auto"
                    },
                    reason: format!(
                        "{prefix} is in the speaker's RIB with attributes that are not ours"
                    ),
                    rule: Some(Rule::ForeignRoute.as_str()),
                    hosts: row.hosts(),
                    dry_run: row.dry_run,
                    expires_at: None,
                    created_by: ACTOR.into(),
                    at: now,
                    detail: json!({ "escalation_id": row.id }),
                })
                .await?;
            metrics().refusal(Rule::ForeignRoute.as_str());
        }
        Ok(failed.len() + foreign.len())
    }

    /// Withdraws one ledger row; returns whether it is done.
    async fn withdraw(&self, row: &EscalationRow, route: &Route) -> Result<bool, StoreError> {
        let now = now_ms();
        if row.dry_run || row.announced_at.is_none() && row.attempts == 0 {
            let note = if row.dry_run {
                " (dry run: nothing sent to the speaker)"
            } else {
                " (it was never announced)"
            };
            self.store
                .mark_withdrawn(row.id, &row.prefix, now, ACTOR, note)
                .await?;
            return Ok(true);
        }
        let result = self.speaker.withdraw(route).await;
        metrics().bgp(self.speaker.name(), "withdraw", result.is_ok());
        match result {
            Ok(w) => {
                let note = match w {
                    Withdrawn::Removed => "",
                    Withdrawn::Absent => " (it was no longer in the speaker's RIB)",
                    Withdrawn::LeftForeign => {
                        " (the prefix now carries a foreign path, which was left alone)"
                    }
                };
                tracing::info!(prefix = %row.prefix, backend = self.speaker.name(), "withdrawn");
                self.store
                    .mark_withdrawn(row.id, &row.prefix, now, ACTOR, note)
                    .await?;
                Ok(true)
            }
            Err(e) => {
                let wait = self.backoff(row.attempts);
                tracing::warn!(prefix = %row.prefix, error = %e, retry_in = ?wait, "withdraw failed");
                self.store
                    .mark_withdraw_failed(row.id, &row.prefix, now, &e.to_string(), now + ms(wait))
                    .await?;
                Ok(false)
            }
        }
    }

    /// Compares the speaker's RIB with the ledger: re-announces active escalations that are
    /// missing (gobgpd forgets everything on restart), withdraws stale routes of ours (announced
    /// by us, no longer wanted), and never touches anything else.
    pub async fn reconcile(&self) -> Result<(), String> {
        let listed = self.speaker.list().await;
        metrics().bgp(self.speaker.name(), "list", listed.is_ok());
        let rib = match listed {
            Ok(Some(rib)) => rib,
            Ok(None) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        let err = |e: StoreError| e.to_string();
        let now = now_ms();
        let mut rib_by_prefix: HashMap<IpNet, Vec<&crate::bgp::RibPath>> = HashMap::new();
        for p in &rib {
            rib_by_prefix.entry(p.prefix).or_default().push(p);
        }
        let live = self.store.live_escalations().await.map_err(err)?;
        let mut live_prefixes = HashSet::new();
        for row in &live {
            let Ok(route) = row.route() else { continue };
            live_prefixes.insert(route.prefix);
            if row.dry_run || row.state != "active" || row.withdraw_requested_at.is_some() {
                continue;
            }
            let present = rib_by_prefix
                .get(&route.prefix)
                .is_some_and(|paths| paths.iter().any(|p| route.matches(p)));
            if !present {
                tracing::warn!(prefix = %row.prefix, "active escalation missing from the speaker's RIB; re-announcing");
                self.store
                    .record_event(&NewEvent {
                        at: now,
                        actor: "reconciler".into(),
                        kind: "reconcile".into(),
                        ip: None,
                        prefix: Some(row.prefix.clone()),
                        message: format!(
                            "{} missing from the speaker's RIB; re-announcing",
                            row.prefix
                        ),
                        detail: None,
                    })
                    .await
                    .map_err(err)?;
                let result = self.speaker.announce(&route).await;
                metrics().bgp(self.speaker.name(), "announce", result.is_ok());
                match result {
                    Ok(()) => {}
                    Err(e) => {
                        let wait = self.backoff(row.attempts);
                        self.store
                            .mark_announce_failed(
                                row.id,
                                &row.prefix,
                                now,
                                &e.to_string(),
                                now + ms(wait),
                            )
                            .await
                            .map_err(err)?;
                    }
                }
            }
        }
        // Stale routes of ours: in the RIB with exactly the attributes we announced, for a
        // prefix we announced once and no longer hold live.
        for (prefix, paths) in &rib_by_prefix {
            if live_prefixes.contains(prefix) {
                continue;
            }
            let Some(last) = self
                .store
                .last_announced(&prefix.to_string())
                .await
                .map_err(err)?
            else {
                continue;
            };
            let Ok(route) = last.route() else { continue };
            if !paths.iter().any(|p| route.matches(p)) {
                continue;
            }
            tracing::warn!(%prefix, "stale route of ours in the speaker's RIB; withdrawing");
            let outcome = self.speaker.withdraw(&route).await;
            metrics().bgp(self.speaker.name(), "withdraw", outcome.is_ok());
            self.store
                .record_event(&NewEvent {
                    at: now,
                    actor: "reconciler".into(),
                    kind: "reconcile".into(),
                    ip: None,
                    prefix: Some(prefix.to_string()),
                    message: match &outcome {
                        Ok(_) => {
                            format!("withdrew stale route {prefix} (ours, no longer escalated)")
                        }
                        Err(e) => format!("withdrawing stale route {prefix} failed: {e}"),
                    },
                    detail: None,
                })
                .await
                .map_err(err)?;
        }
        // Foreign-route refusals whose foreign route is gone: clear them so the checker retries.
        for r in self.store.open_refusals().await.map_err(err)? {
            if r.rule.as_deref() != Some(Rule::ForeignRoute.as_str()) {
                continue;
            }
            let Ok(prefix) = r.prefix.parse::<IpNet>() else {
                continue;
            };
            if !rib_by_prefix.contains_key(&prefix) {
                let write = LedgerWrite::ClearRefusal {
                    prefix: r.prefix.clone(),
                };
                self.store
                    .record_ledger(&[write], ACTOR, now)
                    .await
                    .map_err(err)?;
                self.handle.wake();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{incoming, open_temp};

    fn config(max_active: usize) -> Arc<Config> {
        let mut c = Config::default();
        c.networks.ours = vec![
            "10.0.0.0/8".parse().expect("net"),
            "2001:db8::/32".parse().expect("net"),
        ];
        c.networks.protected = vec!["10.9.0.0/24".parse().expect("net")];
        c.escalation.max_active = max_active;
        c.escalation.carpet_bombing_hosts = 3;
        c.escalation.min_hold = Duration::ZERO;
        Arc::new(c)
    }

    async fn checker(config: Arc<Config>) -> (tempfile::TempDir, Checker) {
        let (dir, store) = open_temp().await;
        let policy = Arc::new(Policy::from_config(&config));
        let handle = CheckerHandle::new(config.clone());
        let speaker: Arc<dyn Speaker> = Arc::new(crate::bgp::none::NoneSpeaker);
        (dir, Checker::new(store, speaker, config, policy, handle))
    }

    /// A ban over thresholds (`hot`) or below them, or an unban.
    async fn note(c: &Checker, ip: &str, action: &str, hot: bool) {
        let (bytes, pps) = if hot {
            (50_000_000, 50_000)
        } else {
            (1_000, 1)
        };
        let body = json!({
            "ip": ip,
            "action": action,
            "alert_scope": "host",
            "attack_details": {
                "attack_direction": "incoming",
                "total_incoming_traffic": bytes,
                "total_incoming_pps": pps,
            }
        });
        c.store
            .record_notification(incoming(&body.to_string(), now_ms(), None))
            .await
            .expect("recorded");
    }

    type LedgerLine = (String, String, String, String, Option<String>, String, bool);

    /// Every ledger row's prefix, state, origin, reason, rule, hosts and whether it is closed, by
    /// prefix and age.
    async fn ledger(c: &Checker) -> Vec<LedgerLine> {
        let mut rows = c
            .store
            .list_escalations(None, 1000, 0)
            .await
            .expect("ledger");
        rows.sort_by(|a, b| (&a.prefix, a.id).cmp(&(&b.prefix, b.id)));
        rows.into_iter()
            .map(|r| {
                let closed = r.withdrawn_at.is_some();
                (
                    r.prefix, r.state, r.origin, r.reason, r.rule, r.hosts, closed,
                )
            })
            .collect()
    }

    /// Two checkers on two databases given the same notifications: one cycles in parts of two
    /// banned hosts, the other over the whole world at once; their ledgers must agree.
    struct Pair {
        parts: Checker,
        whole: Checker,
        _dirs: (tempfile::TempDir, tempfile::TempDir),
    }

    impl Pair {
        async fn new(max_active: usize) -> Pair {
            let (d1, parts) = checker(config(max_active)).await;
            let (d2, whole) = checker(config(max_active)).await;
            Pair {
                parts,
                whole,
                _dirs: (d1, d2),
            }
        }

        async fn note(&self, ip: &str, action: &str, hot: bool) {
            note(&self.parts, ip, action, hot).await;
            note(&self.whole, ip, action, hot).await;
        }

        /// Cycles both; returns whether the one in parts could go in parts.
        async fn cycle(&self) -> bool {
            let in_parts = self.parts.parts(2, 0).await.expect("parts").is_some();
            let a = self.parts.cycle_in_parts(2, 0).await.expect("in parts");
            let b = self
                .whole
                .cycle_in_parts(2, usize::MAX)
                .await
                .expect("whole");
            assert_eq!(a, b, "what the two cycles did");
            let (a, b) = (ledger(&self.parts).await, ledger(&self.whole).await);
            assert_eq!(a, b, "the two ledgers");
            in_parts
        }
    }

    async fn a_world_in_three_rounds(max_active: usize) -> Vec<bool> {
        let pair = Pair::new(max_active).await;
        let mut went = Vec::new();
        // Crossings, a carpet bombing, a protected host, a host below thresholds, IPv6.
        for (ip, hot) in [
            ("10.1.0.1", true),
            ("10.2.0.1", false),
            ("10.2.0.2", false),
            ("10.2.0.3", false),
            ("10.3.0.1", false),
            ("10.9.0.5", true),
            ("10.4.0.1", true),
            ("10.5.0.1", true),
            ("2001:db8:1::1", true),
        ] {
            pair.note(ip, "ban", hot).await;
        }
        went.push(pair.cycle().await);
        let states = |l: Vec<LedgerLine>| -> Vec<(String, String)> {
            l.into_iter().map(|r| (r.0, r.1)).collect()
        };
        let after_one = states(ledger(&pair.parts).await);
        if max_active >= 100 {
            assert_eq!(
                after_one,
                [
                    ("10.1.0.0/24", "active"),
                    ("10.2.0.0/24", "active"),
                    ("10.4.0.0/24", "active"),
                    ("10.5.0.0/24", "active"),
                    ("10.9.0.0/24", "refused"),
                    ("2001:db8:1::/48", "active"),
                ]
                .map(|(p, s)| (p.to_string(), s.to_string()))
            );
        }
        // An unbanned escalation, a refusal that no longer applies, a suppressed crossing, a
        // new carpet bombing.
        pair.note("10.1.0.1", "unban", false).await;
        pair.note("10.9.0.5", "unban", false).await;
        for c in [&pair.parts, &pair.whole] {
            c.store
                .suppress("10.6.0.0/24", now_ms() + 3_600_000, "test", "noc", now_ms())
                .await
                .expect("suppressed");
        }
        pair.note("10.6.0.1", "ban", true).await;
        pair.note("10.3.0.2", "ban", false).await;
        pair.note("10.3.0.3", "ban", false).await;
        went.push(pair.cycle().await);
        if max_active >= 100 {
            let after_two = states(ledger(&pair.parts).await);
            for (prefix, state) in [
                ("10.1.0.0/24", "withdrawn"),
                ("10.3.0.0/24", "active"),
                ("10.9.0.0/24", "refused"),
            ] {
                assert!(
                    after_two.contains(&(prefix.to_string(), state.to_string())),
                    "{prefix} {state}: {after_two:?}"
                );
            }
            assert!(
                !after_two.iter().any(|(p, _)| p == "10.6.0.0/24"),
                "{after_two:?}"
            );
        }
        // A manual escalation of another length: only the whole world looks inside it.
        for c in [&pair.parts, &pair.whole] {
            let route = c
                .handle
                .route_for("10.7.0.0/23".parse().expect("net"))
                .expect("route");
            c.store
                .insert_escalation(&NewEscalation {
                    route,
                    state: "pending",
                    origin: "manual",
                    reason: "test".into(),
                    rule: None,
                    hosts: Vec::new(),
                    dry_run: false,
                    expires_at: Some(now_ms() + 3_600_000),
                    created_by: "noc".into(),
                    at: now_ms(),
                    detail: json!({}),
                })
                .await
                .expect("manual");
        }
        pair.note("10.7.1.1", "ban", true).await;
        went.push(pair.cycle().await);
        went
    }

    #[tokio::test]
    async fn a_cycle_in_parts_decides_as_the_whole_world_does() {
        assert_eq!(a_world_in_three_rounds(100).await, [true, true, false]);
    }

    #[tokio::test]
    async fn near_the_cap_a_cycle_in_parts_leaves_it_to_the_whole_world() {
        // Four prefixes want room and three fit: the parts' `focus` refuses, the whole world
        // decides who gets it, and both ledgers agree.
        a_world_in_three_rounds(3).await;
    }
}
