//! Hosts, ban episodes, notifications and traffic samples.
//!
//! A host's state is a last-writer-wins register keyed by observation time: duplicate
//! notifications (FastNetMon HA pairs) fold into the open episode, and a notification observed
//! before the host's current state never overrides it, so late or reordered delivery ends in the
//! same state as one in-order stream.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use super::{Store, StoreError};
use crate::clock::{serde_time, Millis};
use crate::fastnetmon::{Notification, Traffic};

/// A notification as it reaches the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The document as received (or as the notify command rendered it): `notification` is its
    /// parse. (The ingest journal keeps only the document, and parses it again when read.)
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

#[derive(Debug, Clone, Default)]
pub struct HostFilter {
    pub state: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

pub(super) fn family(ip: IpAddr) -> i64 {
    match ip {
        IpAddr::V4(_) => 4,
        IpAddr::V6(_) => 6,
    }
}

pub(super) fn sql_u64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A rate read back from SQL (never negative as stored; a negative one reads as 0).
pub(super) fn from_sql_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    /// Records one notification and applies it to the host: when this returns Ok the
    /// notification is committed. Notifications arriving together share a transaction (see
    /// `record`); each one's outcome is what it would have been alone.
    pub async fn record_notification(&self, inc: Incoming) -> Result<Recorded, StoreError> {
        self.recorder.notification(inc).await
    }

    /// Records ban-list reconciliation (synthetic ban/unban notifications from a FastNetMon
    /// source) in one transaction, with a `reconcile` event saying why for each one that
    /// changed a host's state.
    pub async fn record_reconciliation(
        &self,
        items: &[Reconciled],
    ) -> Result<Vec<Recorded>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        self.recorder.reconciliation(items.to_vec()).await
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
        self.recorder.samples(samples.to_vec(), history_every).await
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
            .fetch_one(self.reads().await?)
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
        .fetch_all(self.reads().await?)
        .await?;
        Ok(rows)
    }

    pub async fn count_hosts(&self, state: Option<&str>) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM hosts WHERE (?1 IS NULL OR state = ?1)")
                .bind(state)
                .fetch_one(self.reads().await?)
                .await?,
        )
    }

    pub async fn get_host(&self, ip: IpAddr) -> Result<Option<HostRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM hosts WHERE ip = ?")
            .bind(ip.to_string())
            .fetch_optional(self.reads().await?)
            .await?)
    }

    pub async fn episodes(&self, ip: IpAddr) -> Result<Vec<EpisodeRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM ban_episodes WHERE ip = ? ORDER BY started_at DESC, id DESC LIMIT 100",
        )
        .bind(ip.to_string())
        .fetch_all(self.reads().await?)
        .await?)
    }

    /// The newest sample of each of `ips` (all hosts when `ips` is None).
    pub async fn latest_samples(&self) -> Result<Vec<SampleRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM latest_samples")
            .fetch_all(self.reads().await?)
            .await?)
    }

    pub async fn latest_sample(&self, ip: IpAddr) -> Result<Option<SampleRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM latest_samples WHERE ip = ?")
            .bind(ip.to_string())
            .fetch_optional(self.reads().await?)
            .await?)
    }

    /// Banned hosts, whole rows.
    pub async fn banned_hosts(&self) -> Result<Vec<HostRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM hosts WHERE state = 'banned' ORDER BY banned_at, ip")
                .fetch_all(self.reads().await?)
                .await?,
        )
    }

    /// Number of notifications stored (tests and metrics).
    pub async fn count_notifications(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM notifications")
            .fetch_one(self.reads().await?)
            .await?)
    }
}
