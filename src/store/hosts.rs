//! Hosts, ban episodes, notifications and traffic samples.
//!
//! A host's state is a last-writer-wins register keyed by observation time: duplicate
//! notifications (FastNetMon HA pairs) fold into the open episode, and a notification observed
//! before the host's current state never overrides it, so late or reordered delivery ends in the
//! same state as one in-order stream.

use std::net::IpAddr;

use serde::Serialize;
use sqlx::{FromRow, Sqlite, Transaction};

use super::{Store, StoreError};
use crate::clock::{serde_time, Millis};
use crate::fastnetmon::{Action, Notification, Scope, Traffic};

/// A notification as it reaches the store.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub notification: Notification,
    /// When FastNetMon produced it (the notify command stamps it; else the receive time).
    pub observed_at: Millis,
    pub received_at: Millis,
    pub idempotency_key: Option<String>,
    /// `web_callback`, `notify_json`, `notify_text`, `spool`, `reconcile`.
    pub source: String,
    /// Who delivered it: the token name, or `fastnetmon`.
    pub actor: String,
    /// The document as received (or as the notify command rendered it).
    pub payload: String,
}

/// A synthetic notification from ban-list reconciliation, and why it was made.
#[derive(Debug, Clone)]
pub struct Reconciled {
    pub incoming: Incoming,
    /// Goes into the `reconcile` event: "absent from FastNetMon's ban list for 2 consecutive
    /// polls".
    pub reason: String,
}

/// What recording a notification did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The host became banned (a new episode).
    Banned,
    /// The host was banned already; folded into the open episode.
    AlreadyBanned,
    Unbanned,
    /// Unban for a host that is not banned.
    NotBanned,
    /// Observed before the host's current state: stored, state unchanged.
    Stale,
    /// Hostgroup scope or Flow Spec: recorded as an event, escalates nothing.
    RecordedOnly,
    /// Same idempotency key as one already stored: nothing done.
    Duplicate,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Banned => "banned",
            Outcome::AlreadyBanned => "already_banned",
            Outcome::Unbanned => "unbanned",
            Outcome::NotBanned => "not_banned",
            Outcome::Stale => "stale",
            Outcome::RecordedOnly => "recorded_only",
            Outcome::Duplicate => "duplicate",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    pub id: Option<i64>,
    pub outcome: Outcome,
    /// Whether the ban set or the traffic changed, so the checker should look at once.
    #[serde(skip)]
    pub wake_checker: bool,
}

#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct HostRow {
    pub ip: String,
    pub family: i64,
    pub state: String,
    #[serde(with = "serde_time")]
    #[schema(value_type = String, format = DateTime)]
    pub state_at: Millis,
    #[serde(with = "serde_time::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub banned_at: Option<Millis>,
    #[serde(with = "serde_time::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub unbanned_at: Option<Millis>,
    pub attack_uuid: Option<String>,
    pub direction: Option<String>,
    pub source: String,
    #[serde(with = "serde_time")]
    #[schema(value_type = String, format = DateTime)]
    pub first_seen_at: Millis,
    #[serde(with = "serde_time")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Millis,
}

#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct EpisodeRow {
    pub id: i64,
    #[serde(skip)]
    pub ip: String,
    #[serde(with = "serde_time")]
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Millis,
    #[serde(with = "serde_time::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<Millis>,
    pub attack_uuid: Option<String>,
    pub attack_type: Option<String>,
    pub protocol: Option<String>,
    pub direction: Option<String>,
    pub severity: Option<String>,
    pub source: String,
    pub end_reason: Option<String>,
    pub notifications: i64,
}

/// A traffic sample to store, in bits and packets per second.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleIn {
    pub ip: IpAddr,
    pub at: Millis,
    pub source: String,
    pub traffic: Traffic,
}

#[derive(Debug, Clone, FromRow)]
pub struct SampleRow {
    pub ip: String,
    pub at: Millis,
    pub source: String,
    pub in_bps: i64,
    pub out_bps: i64,
    pub in_pps: i64,
    pub out_pps: i64,
}

impl SampleRow {
    pub fn traffic(&self) -> Traffic {
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        Traffic {
            in_bps: u(self.in_bps),
            out_bps: u(self.out_bps),
            in_pps: u(self.in_pps),
            out_pps: u(self.out_pps),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct HostFilter {
    pub state: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

fn family(ip: IpAddr) -> i64 {
    match ip {
        IpAddr::V4(_) => 4,
        IpAddr::V6(_) => 6,
    }
}

fn sql_u64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Records one notification and applies it to the host, in one transaction: when this
    /// returns Ok the notification is committed.
    pub async fn record_notification(&self, inc: &Incoming) -> Result<Recorded, StoreError> {
        let mut tx = self.write.begin().await?;
        let recorded = record_in(&mut tx, inc).await?;
        if recorded.outcome == Outcome::Duplicate {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(recorded)
    }

    /// Records ban-list reconciliation (synthetic ban/unban notifications from a FastNetMon
    /// source) in one transaction, with a `reconcile` event saying why for each one that
    /// changed a host's state.
    pub async fn record_reconciliation(
        &self,
        items: &[Reconciled],
    ) -> Result<Vec<Recorded>, StoreError> {
        let mut out = Vec::with_capacity(items.len());
        if items.is_empty() {
            return Ok(out);
        }
        let mut tx = self.write.begin().await?;
        for item in items {
            let inc = &item.incoming;
            let recorded = record_in(&mut tx, inc).await?;
            if matches!(recorded.outcome, Outcome::Banned | Outcome::Unbanned) {
                let ip = match &inc.notification.scope {
                    Scope::Host { ip } => Some(ip.to_string()),
                    Scope::Hostgroup { .. } => None,
                };
                let event = super::NewEvent {
                    at: inc.received_at,
                    actor: inc.actor.clone(),
                    kind: "reconcile".into(),
                    message: format!(
                        "{} {}: {}",
                        inc.notification.action.as_str(),
                        ip.as_deref().unwrap_or("-"),
                        item.reason
                    ),
                    ip,
                    prefix: None,
                    detail: Some(serde_json::json!({
                        "notification_id": recorded.id,
                        "outcome": recorded.outcome,
                        "source": inc.source,
                    })),
                };
                super::events::insert(&mut tx, &event).await?;
            }
            out.push(recorded);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Stores traffic samples (InfluxDB push, API poll) in one transaction, every one of them
    /// into the history.
    pub async fn record_samples(&self, samples: &[SampleIn]) -> Result<(), StoreError> {
        self.record_live_samples(samples, 0).await
    }

    /// As `record_samples`, keeping at most one history row per host per `history_every` ms
    /// (the newest sample per host is always updated): a push every second must not grow the
    /// database by every host every second.
    pub async fn record_live_samples(
        &self,
        samples: &[SampleIn],
        history_every: Millis,
    ) -> Result<(), StoreError> {
        if samples.is_empty() {
            return Ok(());
        }
        let mut tx = self.write.begin().await?;
        for s in samples {
            insert_sample(&mut tx, s, history_every).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes up to `batch` history rows older than `before`; returns how many. Small batches
    /// keep the one writer free for notifications in between.
    pub async fn prune_samples(&self, before: Millis, batch: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM traffic_samples WHERE id IN
                 (SELECT id FROM traffic_samples WHERE at < ? LIMIT ?)",
        )
        .bind(before)
        .bind(batch)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected())
    }

    /// History rows stored (for one host, or all).
    pub async fn count_samples(&self, ip: Option<IpAddr>) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM traffic_samples WHERE (?1 IS NULL OR ip = ?1)",
            )
            .bind(ip.map(|i| i.to_string()))
            .fetch_one(&self.read)
            .await?,
        )
    }

    pub async fn list_hosts(&self, f: &HostFilter) -> Result<Vec<HostRow>, StoreError> {
        let rows = sqlx::query_as::<_, HostRow>(
            "SELECT * FROM hosts WHERE (?1 IS NULL OR state = ?1)
             ORDER BY updated_at DESC, ip LIMIT ?2 OFFSET ?3",
        )
        .bind(&f.state)
        .bind(f.limit)
        .bind(f.offset)
        .fetch_all(&self.read)
        .await?;
        Ok(rows)
    }

    pub async fn count_hosts(&self, state: Option<&str>) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM hosts WHERE (?1 IS NULL OR state = ?1)")
                .bind(state)
                .fetch_one(&self.read)
                .await?,
        )
    }

    pub async fn get_host(&self, ip: IpAddr) -> Result<Option<HostRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM hosts WHERE ip = ?")
            .bind(ip.to_string())
            .fetch_optional(&self.read)
            .await?)
    }

    pub async fn episodes(&self, ip: IpAddr) -> Result<Vec<EpisodeRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM ban_episodes WHERE ip = ? ORDER BY started_at DESC, id DESC LIMIT 100",
        )
        .bind(ip.to_string())
        .fetch_all(&self.read)
        .await?)
    }

    /// The newest sample of each of `ips` (all hosts when `ips` is None).
    pub async fn latest_samples(&self) -> Result<Vec<SampleRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM latest_samples")
            .fetch_all(&self.read)
            .await?)
    }

    pub async fn latest_sample(&self, ip: IpAddr) -> Result<Option<SampleRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM latest_samples WHERE ip = ?")
            .bind(ip.to_string())
            .fetch_optional(&self.read)
            .await?)
    }

    /// Each banned host and since when, oldest ban first: the two columns the checker and the
    /// pollers need, read every cycle for every banned host (100,000 under carpet bombing), so
    /// nothing else is decoded.
    pub async fn banned_since(&self) -> Result<Vec<(IpAddr, Millis)>, StoreError> {
        let rows: Vec<(String, Millis)> = sqlx::query_as(
            "SELECT ip, COALESCE(banned_at, state_at) AS since FROM hosts WHERE state = 'banned'",
        )
        .fetch_all(&self.read)
        .await?;
        let mut out: Vec<(IpAddr, Millis)> = rows
            .into_iter()
            .filter_map(|(ip, since)| Some((ip.parse().ok()?, since)))
            .collect();
        out.sort_unstable_by_key(|&(ip, since)| (since, ip));
        Ok(out)
    }

    /// The newest sample of every banned host (the others are of no use to the checker).
    pub async fn banned_samples(&self) -> Result<Vec<SampleRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT s.ip, s.at, s.source, s.in_bps, s.out_bps, s.in_pps, s.out_pps
             FROM latest_samples s JOIN hosts h ON h.ip = s.ip WHERE h.state = 'banned'",
        )
        .fetch_all(&self.read)
        .await?)
    }

    /// Banned hosts, whole rows.
    pub async fn banned_hosts(&self) -> Result<Vec<HostRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM hosts WHERE state = 'banned' ORDER BY banned_at, ip")
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Number of notifications stored (tests and metrics).
    pub async fn count_notifications(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM notifications")
            .fetch_one(&self.read)
            .await?)
    }
}

/// The body of `record_notification`, inside the caller's transaction. A known idempotency key
/// writes nothing and answers `Duplicate`.
async fn record_in(
    tx: &mut Transaction<'_, Sqlite>,
    inc: &Incoming,
) -> Result<Recorded, StoreError> {
    if let Some(key) = &inc.idempotency_key {
        let seen: Option<(i64,)> =
            sqlx::query_as("SELECT id FROM notifications WHERE idempotency_key = ?")
                .bind(key)
                .fetch_optional(&mut **tx)
                .await?;
        if let Some((id,)) = seen {
            return Ok(Recorded {
                id: Some(id),
                outcome: Outcome::Duplicate,
                wake_checker: false,
            });
        }
    }
    let n = &inc.notification;
    let (outcome, ip) = match &n.scope {
        Scope::Host { ip } if is_host_action(n.action) => {
            (apply_to_host(tx, inc, *ip).await?, Some(*ip))
        }
        Scope::Host { ip } => (Outcome::RecordedOnly, Some(*ip)),
        Scope::Hostgroup { .. } => (Outcome::RecordedOnly, None),
    };
    let mut wake = matches!(outcome, Outcome::Banned | Outcome::Unbanned);
    // Traffic at detection time is a sample like any other; attack_status does not refresh
    // it (FastNetMon sends the detection-time figures again) and unban carries none.
    if let (Some(ip), Some(traffic)) = (ip, n.traffic) {
        if matches!(n.action, Action::Ban | Action::AttackDetails) && outcome != Outcome::Stale {
            let sample = SampleIn {
                ip,
                at: inc.observed_at,
                source: "notification".into(),
                traffic,
            };
            insert_sample(tx, &sample, 0).await?;
            wake = true;
        }
    }
    let scope = match &n.scope {
        Scope::Host { .. } => "host",
        Scope::Hostgroup { .. } => "hostgroup",
    };
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO notifications (received_at, observed_at, idempotency_key, source, actor,
             action, scope, ip, attack_uuid, outcome, payload)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(inc.received_at)
    .bind(inc.observed_at)
    .bind(&inc.idempotency_key)
    .bind(&inc.source)
    .bind(&inc.actor)
    .bind(n.action.as_str())
    .bind(scope)
    .bind(ip.map(|i| i.to_string()))
    .bind(&n.attack_uuid)
    .bind(outcome.as_str())
    .bind(&inc.payload)
    .fetch_one(&mut **tx)
    .await?;

    let target = match &n.scope {
        Scope::Host { ip } => ip.to_string(),
        Scope::Hostgroup { name, .. } => format!("hostgroup {name}"),
    };
    let mut message = format!("{} {}", n.action.as_str(), target);
    if let Some(d) = &n.direction {
        message.push_str(&format!(" ({d}"));
        if let Some(t) = &n.attack_type {
            message.push_str(&format!(", {t}"));
        }
        message.push(')');
    }
    message.push_str(&format!(": {}", outcome.as_str()));
    let detail = serde_json::json!({
        "notification_id": id,
        "source": inc.source,
        "outcome": outcome,
        "attack_uuid": n.attack_uuid,
        "traffic": n.traffic,
        "networks": match &n.scope {
            Scope::Hostgroup { networks, .. } => Some(networks.iter().map(|n| n.to_string()).collect::<Vec<_>>()),
            Scope::Host { .. } => None,
        },
        "flow_spec_rules": if n.flow_spec_rules.is_empty() { None } else { Some(&n.flow_spec_rules) },
    });
    sqlx::query(
        "INSERT INTO events (at, actor, kind, ip, prefix, message, detail)
         VALUES (?, ?, 'notification', ?, NULL, ?, ?)",
    )
    .bind(inc.received_at)
    .bind(&inc.actor)
    .bind(ip.map(|i| i.to_string()))
    .bind(message)
    .bind(detail.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(Recorded {
        id: Some(id),
        outcome,
        wake_checker: wake,
    })
}

fn is_host_action(a: Action) -> bool {
    matches!(
        a,
        Action::Ban | Action::Unban | Action::AttackStatus | Action::AttackDetails
    )
}

async fn apply_to_host(
    tx: &mut Transaction<'_, Sqlite>,
    inc: &Incoming,
    ip: IpAddr,
) -> Result<Outcome, StoreError> {
    let n = &inc.notification;
    let ip_s = ip.to_string();
    let t = inc.observed_at;
    let host: Option<HostRow> = sqlx::query_as("SELECT * FROM hosts WHERE ip = ?")
        .bind(&ip_s)
        .fetch_optional(&mut **tx)
        .await?;
    let banning = n.action != Action::Unban;
    let outcome = match (&host, banning) {
        (Some(h), _) if t < h.state_at && (h.state == "banned") != banning => Outcome::Stale,
        (Some(h), true) if h.state == "banned" => Outcome::AlreadyBanned,
        (None, true) | (Some(_), true) => Outcome::Banned,
        (Some(h), false) if h.state == "banned" => Outcome::Unbanned,
        (_, false) => Outcome::NotBanned,
    };
    match outcome {
        Outcome::Banned => {
            if host.is_none() {
                sqlx::query(
                    "INSERT INTO hosts (ip, family, state, state_at, banned_at, attack_uuid,
                         direction, source, first_seen_at, updated_at)
                     VALUES (?, ?, 'banned', ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&ip_s)
                .bind(family(ip))
                .bind(t)
                .bind(t)
                .bind(&n.attack_uuid)
                .bind(&n.direction)
                .bind(&inc.source)
                .bind(inc.received_at)
                .bind(inc.received_at)
                .execute(&mut **tx)
                .await?;
            } else {
                sqlx::query(
                    "UPDATE hosts SET state = 'banned', state_at = ?, banned_at = ?,
                         attack_uuid = ?, direction = ?, source = ?, updated_at = ?
                     WHERE ip = ?",
                )
                .bind(t)
                .bind(t)
                .bind(&n.attack_uuid)
                .bind(&n.direction)
                .bind(&inc.source)
                .bind(inc.received_at)
                .bind(&ip_s)
                .execute(&mut **tx)
                .await?;
            }
            sqlx::query(
                "INSERT INTO ban_episodes (ip, started_at, attack_uuid, attack_type, protocol,
                     direction, severity, source)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&ip_s)
            .bind(t)
            .bind(&n.attack_uuid)
            .bind(&n.attack_type)
            .bind(&n.protocol)
            .bind(&n.direction)
            .bind(&n.severity)
            .bind(&inc.source)
            .execute(&mut **tx)
            .await?;
        }
        Outcome::AlreadyBanned => {
            // Fill in what the first notification lacked (Community's text ban has no uuid;
            // attack_details brings the attack type), and keep the newest observation time.
            sqlx::query(
                "UPDATE hosts SET state_at = MAX(state_at, ?), attack_uuid = COALESCE(attack_uuid, ?),
                     direction = COALESCE(direction, ?), updated_at = ?
                 WHERE ip = ?",
            )
            .bind(t)
            .bind(&n.attack_uuid)
            .bind(&n.direction)
            .bind(inc.received_at)
            .bind(&ip_s)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "UPDATE ban_episodes SET notifications = notifications + 1,
                     attack_uuid = COALESCE(attack_uuid, ?), attack_type = COALESCE(attack_type, ?),
                     protocol = COALESCE(protocol, ?), direction = COALESCE(direction, ?),
                     severity = COALESCE(severity, ?)
                 WHERE ip = ? AND ended_at IS NULL",
            )
            .bind(&n.attack_uuid)
            .bind(&n.attack_type)
            .bind(&n.protocol)
            .bind(&n.direction)
            .bind(&n.severity)
            .bind(&ip_s)
            .execute(&mut **tx)
            .await?;
        }
        Outcome::Unbanned => {
            sqlx::query(
                "UPDATE hosts SET state = 'unbanned', state_at = ?, unbanned_at = ?, updated_at = ?
                 WHERE ip = ?",
            )
            .bind(t)
            .bind(t)
            .bind(inc.received_at)
            .bind(&ip_s)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "UPDATE ban_episodes SET ended_at = ?, end_reason = ?
                 WHERE ip = ? AND ended_at IS NULL",
            )
            .bind(t)
            .bind(format!("unban ({})", inc.source))
            .bind(&ip_s)
            .execute(&mut **tx)
            .await?;
        }
        Outcome::NotBanned => {
            if host.is_none() {
                sqlx::query(
                    "INSERT INTO hosts (ip, family, state, state_at, unbanned_at, source,
                         first_seen_at, updated_at)
                     VALUES (?, ?, 'unbanned', ?, ?, ?, ?, ?)",
                )
                .bind(&ip_s)
                .bind(family(ip))
                .bind(t)
                .bind(t)
                .bind(&inc.source)
                .bind(inc.received_at)
                .bind(inc.received_at)
                .execute(&mut **tx)
                .await?;
            } else {
                sqlx::query("UPDATE hosts SET state_at = MAX(state_at, ?) WHERE ip = ?")
                    .bind(t)
                    .bind(&ip_s)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Outcome::Stale | Outcome::RecordedOnly | Outcome::Duplicate => {}
    }
    Ok(outcome)
}

/// Upserts the host's newest sample; adds a history row unless one of the host is younger than
/// `history_every` ms (0: always).
async fn insert_sample(
    tx: &mut Transaction<'_, Sqlite>,
    s: &SampleIn,
    history_every: Millis,
) -> Result<(), StoreError> {
    let ip = s.ip.to_string();
    let tr = s.traffic;
    let keep = if history_every <= 0 {
        true
    } else {
        let last: Option<Millis> =
            sqlx::query_scalar("SELECT MAX(at) FROM traffic_samples WHERE ip = ?")
                .bind(&ip)
                .fetch_one(&mut **tx)
                .await?;
        last.is_none_or(|last| s.at - last >= history_every)
    };
    if keep {
        sqlx::query(
            "INSERT INTO traffic_samples (ip, at, source, in_bps, out_bps, in_pps, out_pps)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&ip)
        .bind(s.at)
        .bind(&s.source)
        .bind(sql_u64(tr.in_bps))
        .bind(sql_u64(tr.out_bps))
        .bind(sql_u64(tr.in_pps))
        .bind(sql_u64(tr.out_pps))
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO latest_samples (ip, at, source, in_bps, out_bps, in_pps, out_pps)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (ip) DO UPDATE SET at = ?2, source = ?3, in_bps = ?4, out_bps = ?5,
             in_pps = ?6, out_pps = ?7
         WHERE excluded.at >= latest_samples.at",
    )
    .bind(&ip)
    .bind(s.at)
    .bind(&s.source)
    .bind(sql_u64(tr.in_bps))
    .bind(sql_u64(tr.out_bps))
    .bind(sql_u64(tr.in_pps))
    .bind(sql_u64(tr.out_pps))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
