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

    /// Newest first. The WHERE clause names only the filters given, so SQLite can use the index
    /// of the address or the prefix (a catch-all `?1 IS NULL OR ip = ?1` scanned the whole log).
    pub async fn events(&self, f: &EventFilter) -> Result<Vec<EventRow>, StoreError> {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("SELECT * FROM events WHERE 1");
        if let Some(ip) = &f.ip {
            q.push(" AND ip = ").push_bind(ip);
        }
        if let Some(prefix) = &f.prefix {
            q.push(" AND prefix = ").push_bind(prefix);
        }
        if let Some(kind) = &f.kind {
            q.push(" AND kind = ").push_bind(kind);
        }
        if let Some(actor) = &f.actor {
            q.push(" AND actor = ").push_bind(actor);
        }
        if let Some(since) = f.since {
            q.push(" AND at >= ").push_bind(since);
        }
        if let Some(until) = f.until {
            q.push(" AND at < ").push_bind(until);
        }
        if let Some(before) = f.before_id {
            q.push(" AND id < ").push_bind(before);
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(f.limit);
        Ok(q.build_query_as().fetch_all(self.reads().await?).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_filter_narrows_and_pages_newest_first() {
        let (_dir, store) = crate::store::open_temp().await;
        let ev = |at: Millis, actor: &str, kind: &str, ip: Option<&str>, prefix: Option<&str>| {
            NewEvent {
                at,
                actor: actor.into(),
                kind: kind.into(),
                ip: ip.map(String::from),
                prefix: prefix.map(String::from),
                message: format!("{kind} at {at}"),
                detail: None,
            }
        };
        for e in [
            ev(1, "fastnetmon", "notification", Some("10.0.0.1"), None),
            ev(2, "checker", "escalate", None, Some("10.0.0.0/24")),
            ev(3, "fastnetmon", "notification", Some("10.0.0.1"), None),
            ev(4, "noc", "withdraw", None, Some("10.0.0.0/24")),
            ev(5, "fastnetmon", "notification", Some("10.0.0.2"), None),
        ] {
            store.record_event(&e).await.expect("event");
        }
        let all = EventFilter {
            limit: 100,
            ..Default::default()
        };
        let ats = |rows: Vec<EventRow>| rows.iter().map(|r| r.at).collect::<Vec<_>>();
        let get = |f: EventFilter| {
            let store = store.clone();
            async move { ats(store.events(&f).await.expect("events")) }
        };
        assert_eq!(get(all.clone()).await, [5, 4, 3, 2, 1]);
        let by_ip = EventFilter {
            ip: Some("10.0.0.1".into()),
            ..all.clone()
        };
        assert_eq!(get(by_ip.clone()).await, [3, 1]);
        let by_prefix = EventFilter {
            prefix: Some("10.0.0.0/24".into()),
            ..all.clone()
        };
        assert_eq!(get(by_prefix.clone()).await, [4, 2]);
        let by_actor_kind = EventFilter {
            prefix: Some("10.0.0.0/24".into()),
            actor: Some("noc".into()),
            kind: Some("withdraw".into()),
            ..all.clone()
        };
        assert_eq!(get(by_actor_kind).await, [4]);
        let window = EventFilter {
            since: Some(2),
            until: Some(5),
            ..all.clone()
        };
        assert_eq!(get(window).await, [4, 3, 2]);
        // Keyset pagination: two at a time.
        let first = store
            .events(&EventFilter {
                limit: 2,
                ..all.clone()
            })
            .await
            .expect("page");
        assert_eq!(ats(first.clone()), [5, 4]);
        let next = EventFilter {
            limit: 2,
            before_id: first.last().map(|r| r.id),
            ..all.clone()
        };
        assert_eq!(get(next).await, [3, 2]);
        let nothing = EventFilter {
            ip: Some("10.0.0.9".into()),
            ..all
        };
        assert!(get(nothing).await.is_empty());
    }
}
