//! The audit log: append-only (triggers in the schema refuse UPDATE and DELETE).

use serde::Serialize;
use sqlx::{FromRow, Sqlite, Transaction};

use super::{Store, StoreError};
use crate::clock::{serde_time, Millis};

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub at: Millis,
    /// Who or what: a token name, `fastnetmon`, `checker`, `reconciler`.
    pub actor: String,
    /// `notification`, `escalate`, `announced`, `announce_failed`, `refused`, `withdraw`, ...
    pub kind: String,
    pub ip: Option<String>,
    pub prefix: Option<String>,
    pub message: String,
    pub detail: Option<serde_json::Value>,
}

/// One audit-log entry: who (`actor`) did what (`kind`) to which host or prefix, and why.
#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct EventRow {
    pub id: i64,
    #[serde(with = "serde_time")]
    #[schema(value_type = String, format = DateTime)]
    pub at: Millis,
    pub actor: String,
    pub kind: String,
    pub ip: Option<String>,
    pub prefix: Option<String>,
    pub message: String,
    /// Structured detail of the event (kind-specific JSON), or null.
    #[serde(serialize_with = "raw_json")]
    #[schema(value_type = Option<Object>)]
    pub detail: Option<String>,
}

fn raw_json<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v.as_deref().map(serde_json::from_str::<serde_json::Value>) {
        Some(Ok(v)) => v.serialize(s),
        Some(Err(_)) | None => s.serialize_none(),
    }
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub ip: Option<String>,
    pub prefix: Option<String>,
    pub kind: Option<String>,
    pub actor: Option<String>,
    pub since: Option<Millis>,
    pub until: Option<Millis>,
    /// Keyset pagination: events with an id below this (newest first).
    pub before_id: Option<i64>,
    pub limit: i64,
}

pub(super) async fn insert(
    tx: &mut Transaction<'_, Sqlite>,
    e: &NewEvent,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO events (at, actor, kind, ip, prefix, message, detail)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(e.at)
    .bind(&e.actor)
    .bind(&e.kind)
    .bind(&e.ip)
    .bind(&e.prefix)
    .bind(&e.message)
    .bind(e.detail.as_ref().map(|d| d.to_string()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    pub async fn record_event(&self, e: &NewEvent) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await?;
        insert(&mut tx, e).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Newest first.
    pub async fn events(&self, f: &EventFilter) -> Result<Vec<EventRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM events
             WHERE (?1 IS NULL OR ip = ?1) AND (?2 IS NULL OR prefix = ?2)
               AND (?3 IS NULL OR kind = ?3) AND (?4 IS NULL OR actor = ?4)
               AND (?5 IS NULL OR at >= ?5) AND (?6 IS NULL OR at < ?6)
               AND (?7 IS NULL OR id < ?7)
             ORDER BY id DESC LIMIT ?8",
        )
        .bind(&f.ip)
        .bind(&f.prefix)
        .bind(&f.kind)
        .bind(&f.actor)
        .bind(f.since)
        .bind(f.until)
        .bind(f.before_id)
        .bind(f.limit)
        .fetch_all(&self.read)
        .await?)
    }
}
