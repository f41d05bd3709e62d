//! Ban-list reconciliation: FastNetMon's ban list is the truth about who is banned, and a lost
//! notification or a restart (Community forgets its bans without an unban) must not leave us
//! wrong. Hosts it lists are banned here; hosts it leaves out twice in a row are unbanned.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use serde_json::json;

use crate::clock::{now_ms, Millis};
use crate::fastnetmon::{Action, Notification, Scope};
use crate::store::{Incoming, Outcome, Reconciled, Store, StoreError};

/// Consecutive polls a banned host must be absent from FastNetMon's list before it is unbanned:
/// one poll can race a ban that FastNetMon is still carrying out.
pub const ABSENT_POLLS: u32 = 2;

/// Reconciled changes per transaction, so one huge list does not hold the writer for long.
const CHUNK: usize = 500;

/// What reconciliation changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub banned: usize,
    pub unbanned: usize,
    /// The hosts banned, in address order.
    pub banned_hosts: Vec<IpAddr>,
}

/// What one reading of the list may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// A full poll: hosts listed are banned, hosts absent `ABSENT_POLLS` polls in a row unbanned.
    All,
    /// A reading between full polls: hosts listed are banned, nothing else. Absences are not
    /// counted, so the unban rule keeps its span of `ABSENT_POLLS` full polls however often the
    /// list is read.
    BansOnly,
}

impl ReconcileReport {
    pub fn changed(&self) -> bool {
        self.banned + self.unbanned > 0
    }
}

/// What to do about one poll's list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub ban: Vec<IpAddr>,
    pub unban: Vec<IpAddr>,
}

/// Reconciles one source's ban list; remembers for how many polls each banned host was absent.
pub struct Reconciler {
    /// The sample/health name of the source (`fastnetmon_api`).
    source: &'static str,
    /// Who the synthetic notifications come from (`fastnetmon-api`).
    actor: &'static str,
    /// How events name the list: "FastNetMon's ban list (Advanced API)".
    list: &'static str,
    absent: HashMap<IpAddr, u32>,
}

impl Reconciler {
    pub fn new(source: &'static str, actor: &'static str, list: &'static str) -> Reconciler {
        Reconciler {
            source,
            actor,
            list,
            absent: HashMap::new(),
        }
    }

    /// Pure: compares the list FastNetMon gave (requested at `polled_at`) with the hosts banned
    /// here and their ban times. A host banned at or after `polled_at` may simply be newer than
    /// the list, so its absence is not counted.
    pub fn plan(
        &mut self,
        listed: &HashSet<IpAddr>,
        banned_here: &[(IpAddr, Millis)],
        polled_at: Millis,
    ) -> Plan {
        let here: HashSet<IpAddr> = banned_here.iter().map(|(ip, _)| *ip).collect();
        let mut plan = Plan {
            ban: listed.difference(&here).copied().collect(),
            unban: Vec::new(),
        };
        plan.ban.sort();
        for (ip, banned_at) in banned_here {
            if listed.contains(ip) {
                self.absent.remove(ip);
                continue;
            }
            if *banned_at >= polled_at {
                continue;
            }
            let count = self.absent.get(ip).copied().unwrap_or(0) + 1;
            if count >= ABSENT_POLLS {
                self.absent.remove(ip);
                plan.unban.push(*ip);
            } else {
                self.absent.insert(*ip, count);
            }
        }
        plan.unban.sort();
        // Hosts unbanned some other way start from zero if banned again.
        self.absent.retain(|ip, _| here.contains(ip));
        plan
    }

    /// Hosts seen absent once, waiting for the next poll (for tests and logs).
    pub fn pending(&self) -> usize {
        self.absent.len()
    }

    /// Follows one ban list read from FastNetMon: reconciles the hosts here with it (`what`
    /// says how far), records that in the source's health, and wakes the checker when a host's
    /// state changed.
    pub async fn follow(
        &mut self,
        list: &super::BanList,
        store: &Store,
        health: &super::SourceHealth,
        checker: &crate::checker::CheckerHandle,
        polled_at: Millis,
        what: Follow,
    ) -> Result<ReconcileReport, StoreError> {
        let listed: HashSet<IpAddr> = list.hosts.iter().copied().collect();
        let rec = match what {
            Follow::All => self.apply(store, &listed, polled_at).await?,
            Follow::BansOnly => {
                let here: HashSet<IpAddr> = store
                    .banned_since()
                    .await?
                    .into_iter()
                    .map(|(ip, _)| ip)
                    .collect();
                let mut ban: Vec<IpAddr> = listed.difference(&here).copied().collect();
                ban.sort();
                let plan = Plan {
                    ban,
                    unban: Vec::new(),
                };
                self.record(store, plan, polled_at).await?
            }
        };
        health.reconciled(&rec);
        if rec.changed() {
            checker.wake();
        }
        Ok(rec)
    }

    /// Plans against the store and records the changes, each with an event saying why.
    pub async fn apply(
        &mut self,
        store: &Store,
        listed: &HashSet<IpAddr>,
        polled_at: Millis,
    ) -> Result<ReconcileReport, StoreError> {
        let banned_here: Vec<(IpAddr, Millis)> = store.banned_since().await?;
        let plan = self.plan(listed, &banned_here, polled_at);
        self.record(store, plan, polled_at).await
    }

    /// Records `plan` (the list's time is `polled_at`), each change with an event saying why.
    async fn record(
        &self,
        store: &Store,
        plan: Plan,
        polled_at: Millis,
    ) -> Result<ReconcileReport, StoreError> {
        let received_at = now_ms();
        let ban_reason = format!("listed in {} but not banned here", self.list);
        let unban_reason = format!(
            "absent from {} for {ABSENT_POLLS} consecutive polls",
            self.list
        );
        let items: Vec<Reconciled> = plan
            .ban
            .iter()
            .map(|ip| (Action::Ban, *ip, &ban_reason))
            .chain(
                plan.unban
                    .iter()
                    .map(|ip| (Action::Unban, *ip, &unban_reason)),
            )
            .map(|(action, ip, reason)| Reconciled {
                incoming: Incoming {
                    notification: synthetic(action, ip),
                    // The list's time, so a notification newer than the list wins (the store's
                    // state is last-writer-wins on observation time).
                    observed_at: polled_at,
                    received_at,
                    idempotency_key: None,
                    source: "reconcile".into(),
                    actor: self.actor.into(),
                    payload: json!({
                        "reconcile": self.source,
                        "action": action.as_str(),
                        "ip": ip,
                        "reason": reason,
                    })
                    .to_string(),
                },
                reason: reason.clone(),
            })
            .collect();
        let mut report = ReconcileReport::default();
        for chunk in items.chunks(CHUNK) {
            for (item, recorded) in chunk.iter().zip(store.record_reconciliation(chunk).await?) {
                let ip = match item.incoming.notification.scope {
                    Scope::Host { ip } => ip,
                    Scope::Hostgroup { .. } => continue,
                };
                match recorded.outcome {
                    Outcome::Banned => {
                        report.banned += 1;
                        report.banned_hosts.push(ip);
                        tracing::info!(source = self.source, %ip, "ban added: {}", item.reason);
                    }
                    Outcome::Unbanned => {
                        report.unbanned += 1;
                        tracing::warn!(source = self.source, %ip, "unban: {}", item.reason);
                    }
                    other => tracing::debug!(
                        source = self.source,
                        %ip,
                        outcome = other.as_str(),
                        "reconciliation overtaken by a newer notification"
                    ),
                }
            }
        }
        Ok(report)
    }
}

fn synthetic(action: Action, ip: IpAddr) -> Notification {
    Notification {
        action,
        scope: Scope::Host { ip },
        attack_uuid: None,
        direction: None,
        attack_type: None,
        protocol: None,
        severity: None,
        detection_source: Some("other".into()),
        traffic: None,
        flow_spec_rules: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn set(ips: &[&str]) -> HashSet<IpAddr> {
        ips.iter().map(|s| ip(s)).collect()
    }

    #[test]
    fn hosts_listed_but_unknown_are_banned() {
        let mut r = Reconciler::new("t", "t", "t");
        let plan = r.plan(
            &set(&["10.0.0.1", "10.0.0.2"]),
            &[(ip("10.0.0.1"), 0)],
            1000,
        );
        assert_eq!(plan.ban, vec![ip("10.0.0.2")]);
        assert!(plan.unban.is_empty());
    }

    #[test]
    fn unban_needs_two_consecutive_absences() {
        let mut r = Reconciler::new("t", "t", "t");
        let here = [(ip("10.0.0.1"), 0)];
        assert!(r.plan(&set(&[]), &here, 1000).unban.is_empty());
        assert_eq!(r.pending(), 1);
        // Present again: the count starts over.
        assert!(r.plan(&set(&["10.0.0.1"]), &here, 2000).unban.is_empty());
        assert_eq!(r.pending(), 0);
        assert!(r.plan(&set(&[]), &here, 3000).unban.is_empty());
        assert_eq!(r.plan(&set(&[]), &here, 4000).unban, vec![ip("10.0.0.1")]);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn a_ban_newer_than_the_list_is_not_absent() {
        let mut r = Reconciler::new("t", "t", "t");
        let here = [(ip("10.0.0.1"), 5000)];
        assert!(r.plan(&set(&[]), &here, 5000).unban.is_empty());
        assert!(r.plan(&set(&[]), &here, 4000).unban.is_empty());
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn hosts_unbanned_elsewhere_are_forgotten() {
        let mut r = Reconciler::new("t", "t", "t");
        r.plan(&set(&[]), &[(ip("10.0.0.1"), 0)], 1000);
        assert_eq!(r.pending(), 1);
        r.plan(&set(&[]), &[], 2000);
        assert_eq!(r.pending(), 0);
        // Banned again later: one absence is not enough.
        assert!(r
            .plan(&set(&[]), &[(ip("10.0.0.1"), 2500)], 3000)
            .unban
            .is_empty());
    }

    #[tokio::test]
    async fn list_polls_between_full_ones_ban_and_count_no_absence() {
        let (_dir, store) = crate::store::open_temp().await;
        let health = super::super::SourceHealth::new(
            "t",
            super::super::Kind::Poll,
            std::time::Duration::from_secs(60),
        );
        let checker = crate::checker::CheckerHandle::new(std::sync::Arc::new(
            crate::config::Config::default(),
        ));
        let mut r = Reconciler::new("t", "t", "t");
        let list = |hosts: &[&str]| super::super::BanList::from_entries(hosts.iter().copied());
        // A full poll bans both; then one leaves the list.
        let rec = r
            .apply(&store, &set(&["10.0.0.1", "10.0.0.2"]), 1000)
            .await
            .expect("full poll");
        assert_eq!(rec.banned, 2);
        // Any number of list polls without it: nothing unbanned, no absence counted; a host
        // new to the list is banned, and returned (once).
        for at in [1100, 1200, 1300] {
            let rec = r
                .follow(
                    &list(&["10.0.0.2", "10.0.0.3"]),
                    &store,
                    &health,
                    &checker,
                    at,
                    Follow::BansOnly,
                )
                .await
                .expect("list poll");
            let want: Vec<IpAddr> = if at == 1100 {
                vec![ip("10.0.0.3")]
            } else {
                vec![]
            };
            assert_eq!(rec.banned_hosts, want);
            assert_eq!(rec.unbanned, 0);
            assert_eq!(r.pending(), 0);
        }
        let banned_here: Vec<IpAddr> = store
            .banned_since()
            .await
            .expect("read")
            .into_iter()
            .map(|(ip, _)| ip)
            .collect();
        assert_eq!(banned_here.len(), 3);
        // Full polls still unban it after two absences.
        let listed = set(&["10.0.0.2", "10.0.0.3"]);
        assert_eq!(
            r.apply(&store, &listed, 2000).await.expect("poll").unbanned,
            0
        );
        assert_eq!(
            r.apply(&store, &listed, 3000).await.expect("poll").unbanned,
            1
        );
    }
}
