//! The escalation ledger and suppressions. Every state change is written together with its
//! event, in one transaction, so the audit log never disagrees with the ledger. Ledger changes
//! are `LedgerWrite`s, run by the recorder thread (`record/ledger.rs`); reads stay here.

use serde::Serialize;
use sqlx::FromRow;

use super::events::{insert as insert_event, NewEvent};
use super::{from_json_list, Store, StoreError};
use crate::bgp::{Community, LargeCommunity, Route};
use crate::clock::{serde_time, Millis};

#[derive(Debug, Clone, FromRow)]
pub struct EscalationRow {
    pub id: i64,
    pub prefix: String,
    pub family: i64,
    pub state: String,
    pub origin: String,
    pub reason: String,
    pub rule: Option<String>,
    pub hosts: String,
    pub next_hop: String,
    pub communities: String,
    pub large_communities: String,
    pub dry_run: bool,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub announced_at: Option<Millis>,
    pub last_crossing_at: Option<Millis>,
    pub quiet_since: Option<Millis>,
    pub expires_at: Option<Millis>,
    pub withdraw_requested_at: Option<Millis>,
    pub withdraw_reason: Option<String>,
    pub withdrawn_at: Option<Millis>,
    pub attempts: i64,
    pub next_attempt_at: Option<Millis>,
    pub last_error: Option<String>,
    pub created_by: String,
}

/// The API view of an escalation.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EscalationView {
    pub id: i64,
    pub prefix: String,
    pub state: String,
    pub origin: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub hosts: Vec<String>,
    pub attributes: Attributes,
    pub dry_run: bool,
    pub created_by: String,
    #[serde(with = "serde_time")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Millis,
    #[serde(with = "serde_time")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Millis,
    #[serde(with = "serde_time::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub announced_at: Option<Millis>,
    #[serde(with = "serde_time::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_crossing_at: Option<Millis>,
    #[serde(with = "serde_time::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub quiet_since: Option<Millis>,
    #[serde(with = "serde_time::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Millis>,
    #[serde(with = "serde_time::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub withdraw_requested_at: Option<Millis>,
    pub withdraw_reason: Option<String>,
    #[serde(with = "serde_time::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub withdrawn_at: Option<Millis>,
    pub attempts: i64,
    #[serde(with = "serde_time::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<Millis>,
    pub last_error: Option<String>,
}

/// What the route carries.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Attributes {
    pub next_hop: String,
    pub communities: Vec<String>,
    pub large_communities: Vec<String>,
}

impl EscalationRow {
    pub fn hosts(&self) -> Vec<String> {
        from_json_list(&self.hosts)
    }

    /// The route this escalation announces, as recorded when it was decided.
    pub fn route(&self) -> Result<Route, StoreError> {
        let corrupt = |what: &str| {
            StoreError::Corrupt(format!("escalation {} has an invalid {what}", self.id))
        };
        let communities: Vec<String> = from_json_list(&self.communities);
        let large: Vec<String> = from_json_list(&self.large_communities);
        Ok(Route {
            prefix: self.prefix.parse().map_err(|_| corrupt("prefix"))?,
            next_hop: self.next_hop.parse().map_err(|_| corrupt("next hop"))?,
            communities: communities
                .iter()
                .map(|c| c.parse::<Community>())
                .collect::<Result<_, _>>()
                .map_err(|_| corrupt("community"))?,
            large_communities: large
                .iter()
                .map(|c| c.parse::<LargeCommunity>())
                .collect::<Result<_, _>>()
                .map_err(|_| corrupt("large community"))?,
        })
    }

    pub fn view(&self) -> EscalationView {
        EscalationView {
            id: self.id,
            prefix: self.prefix.clone(),
            state: self.state.clone(),
            origin: self.origin.clone(),
            reason: self.reason.clone(),
            rule: self.rule.clone(),
            hosts: self.hosts(),
            attributes: Attributes {
                next_hop: self.next_hop.clone(),
                communities: from_json_list(&self.communities),
                large_communities: from_json_list(&self.large_communities),
            },
            dry_run: self.dry_run,
            created_by: self.created_by.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            announced_at: self.announced_at,
            last_crossing_at: self.last_crossing_at,
            quiet_since: self.quiet_since,
            expires_at: self.expires_at,
            withdraw_requested_at: self.withdraw_requested_at,
            withdraw_reason: self.withdraw_reason.clone(),
            withdrawn_at: self.withdrawn_at,
            attempts: self.attempts,
            next_attempt_at: self.next_attempt_at,
            last_error: self.last_error.clone(),
        }
    }
}

/// A new ledger row: a decided escalation (state `pending`) or a refusal (state `refused`).
#[derive(Debug, Clone)]
pub struct NewEscalation {
    pub route: Route,
    pub state: &'static str,
    pub origin: &'static str,
    pub reason: String,
    pub rule: Option<&'static str>,
    pub hosts: Vec<String>,
    pub dry_run: bool,
    pub expires_at: Option<Millis>,
    pub created_by: String,
    pub at: Millis,
    /// Event detail (the structured reason).
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct SuppressionRow {
    pub prefix: String,
    #[serde(with = "serde_time")]
    #[schema(value_type = String, format = DateTime)]
    pub until: Millis,
    pub reason: String,
    pub created_by: String,
    #[serde(with = "serde_time")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Millis,
}

pub(super) fn route_family(route: &Route) -> i64 {
    match route.prefix {
        ipnet::IpNet::V4(_) => 4,
        ipnet::IpNet::V6(_) => 6,
    }
}

/// `SELECT` of an [`EscalationRow`]'s columns, in its order (see `escalation_from`), then
/// `$rest`.
macro_rules! select_escalations {
    ($rest:literal) => {
        concat!(
            "SELECT id, prefix, family, state, origin, reason, rule, hosts, next_hop, communities,
                    large_communities, dry_run, created_at, updated_at, announced_at,
                    last_crossing_at, quiet_since, expires_at, withdraw_requested_at,
                    withdraw_reason, withdrawn_at, attempts, next_attempt_at, last_error,
                    created_by
             FROM escalations ",
            $rest
        )
    };
}

/// A row of `select_escalations!`.
fn escalation_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<EscalationRow> {
    Ok(EscalationRow {
        id: r.get(0)?,
        prefix: r.get(1)?,
        family: r.get(2)?,
        state: r.get(3)?,
        origin: r.get(4)?,
        reason: r.get(5)?,
        rule: r.get(6)?,
        hosts: r.get(7)?,
        next_hop: r.get(8)?,
        communities: r.get(9)?,
        large_communities: r.get(10)?,
        dry_run: r.get(11)?,
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
        announced_at: r.get(14)?,
        last_crossing_at: r.get(15)?,
        quiet_since: r.get(16)?,
        expires_at: r.get(17)?,
        withdraw_requested_at: r.get(18)?,
        withdraw_reason: r.get(19)?,
        withdrawn_at: r.get(20)?,
        attempts: r.get(21)?,
        next_attempt_at: r.get(22)?,
        last_error: r.get(23)?,
        created_by: r.get(24)?,
    })
}

impl Store {
    /// The ledger rows `sql` (a `select_escalations!`) selects, read on the write connection
    /// (what the checker decides on must include its own last writes) with rusqlite: through
    /// sqlx, 5,000 live rows took a checker cycle about 30 ms.
    async fn escalation_rows(&self, sql: &'static str) -> Result<Vec<EscalationRow>, StoreError> {
        super::read::with_read(&self.write, move |c| {
            let mut stmt = c.prepare(sql)?;
            let rows = stmt.query_map([], escalation_from)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Escalations the speaker should carry: pending, active, failed.
    pub async fn live_escalations(&self) -> Result<Vec<EscalationRow>, StoreError> {
        self.escalation_rows(select_escalations!(
            "WHERE state IN ('pending', 'active', 'failed') ORDER BY id"
        ))
        .await
    }

    /// The live escalations the speaker has something to do for: pending or failed ones (to
    /// announce) and those whose withdrawal was asked. The checker reads these at every cycle;
    /// reading every live row instead cost it 30 ms a cycle with 5,000 active, most of a
    /// reaction's time.
    pub async fn escalations_to_carry_out(&self) -> Result<Vec<EscalationRow>, StoreError> {
        self.escalation_rows(select_escalations!(
            "WHERE state IN ('pending', 'failed')
                OR (state = 'active' AND withdraw_requested_at IS NOT NULL)
             ORDER BY id"
        ))
        .await
    }

    pub async fn open_refusals(&self) -> Result<Vec<EscalationRow>, StoreError> {
        self.escalation_rows(select_escalations!(
            "WHERE state = 'refused' AND withdrawn_at IS NULL ORDER BY id"
        ))
        .await
    }

    pub async fn list_escalations(
        &self,
        state: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<EscalationRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM escalations WHERE (?1 IS NULL OR state = ?1)
             ORDER BY id DESC LIMIT ?2 OFFSET ?3",
        )
        .bind(state)
        .bind(limit)
        .bind(offset)
        .fetch_all(self.reads().await?)
        .await?)
    }

    /// Every ledger row of one prefix, newest first.
    pub async fn escalation_history(&self, prefix: &str) -> Result<Vec<EscalationRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM escalations WHERE prefix = ? ORDER BY id DESC LIMIT 100")
                .bind(prefix)
                .fetch_all(self.reads().await?)
                .await?,
        )
    }

    pub async fn count_escalations_by_state(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT state, COUNT(*) FROM escalations GROUP BY state")
                .fetch_all(self.reads().await?)
                .await?,
        )
    }

    /// Whether we ever announced this prefix (reconciliation withdraws only such prefixes).
    pub async fn ever_announced(&self, prefix: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM escalations WHERE prefix = ? AND announced_at IS NOT NULL",
        )
        .bind(prefix)
        .fetch_one(&self.write)
        .await?;
        Ok(n > 0)
    }

    /// The newest announced row of a prefix (its route is what we put into the speaker).
    pub async fn last_announced(&self, prefix: &str) -> Result<Option<EscalationRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM escalations WHERE prefix = ? AND announced_at IS NOT NULL
             ORDER BY id DESC LIMIT 1",
        )
        .bind(prefix)
        .fetch_optional(&self.write)
        .await?)
    }

    /// Records a decided escalation or refusal with its event. Returns the new row.
    pub async fn insert_escalation(&self, e: &NewEscalation) -> Result<EscalationRow, StoreError> {
        let ids = self
            .recorder
            .ledger(
                vec![LedgerWrite::Insert(Box::new(e.clone()))],
                e.created_by.clone(),
                e.at,
            )
            .await?;
        let id = ids
            .first()
            .copied()
            .ok_or_else(|| StoreError::Corrupt("an inserted escalation has no id".into()))?;
        Ok(sqlx::query_as("SELECT * FROM escalations WHERE id = ?")
            .bind(id)
            .fetch_one(&self.write)
            .await?)
    }

    /// The speaker confirmed the announcement.
    pub async fn mark_announced(
        &self,
        id: i64,
        prefix: &str,
        at: Millis,
        actor: &str,
        note: &str,
    ) -> Result<(), StoreError> {
        self.mark_announced_many(&[(id, prefix.to_string())], at, actor, note)
            .await
    }

    /// Many confirmations in one transaction (a burst of escalations is one commit).
    pub async fn mark_announced_many(
        &self,
        rows: &[(i64, String)],
        at: Millis,
        actor: &str,
        note: &str,
    ) -> Result<(), StoreError> {
        let writes: Vec<LedgerWrite> = rows
            .iter()
            .map(|(id, prefix)| LedgerWrite::Announced {
                id: *id,
                prefix: prefix.clone(),
                note: note.into(),
            })
            .collect();
        self.record_ledger(&writes, actor, at).await
    }

    /// An announce failed: state `failed`, retried at `next_attempt_at`.
    pub async fn mark_announce_failed(
        &self,
        id: i64,
        prefix: &str,
        at: Millis,
        error: &str,
        next_attempt_at: Millis,
    ) -> Result<(), StoreError> {
        self.mark_announce_failed_many(
            &[(id, prefix.to_string(), error.to_string(), next_attempt_at)],
            at,
        )
        .await
    }

    /// Many failures in one transaction: `(id, prefix, error, next_attempt_at)`.
    pub async fn mark_announce_failed_many(
        &self,
        rows: &[(i64, String, String, Millis)],
        at: Millis,
    ) -> Result<(), StoreError> {
        let writes: Vec<LedgerWrite> = rows
            .iter()
            .map(
                |(id, prefix, error, next_attempt_at)| LedgerWrite::AnnounceFailed {
                    id: *id,
                    prefix: prefix.clone(),
                    error: error.clone(),
                    next_attempt_at: *next_attempt_at,
                },
            )
            .collect();
        self.record_ledger(&writes, "checker", at).await
    }

    /// A withdrawal was decided; the checker carries it out (and retries it).
    pub async fn request_withdraw(
        &self,
        id: i64,
        prefix: &str,
        at: Millis,
        actor: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let write = LedgerWrite::Withdraw {
            id,
            prefix: prefix.into(),
            reason: reason.into(),
        };
        self.record_ledger(&[write], actor, at).await
    }

    pub async fn mark_withdrawn(
        &self,
        id: i64,
        prefix: &str,
        at: Millis,
        actor: &str,
        note: &str,
    ) -> Result<(), StoreError> {
        let write = LedgerWrite::Withdrawn {
            id,
            prefix: prefix.into(),
            note: note.into(),
        };
        self.record_ledger(&[write], actor, at).await
    }

    pub async fn mark_withdraw_failed(
        &self,
        id: i64,
        prefix: &str,
        at: Millis,
        error: &str,
        next_attempt_at: Millis,
    ) -> Result<(), StoreError> {
        let write = LedgerWrite::WithdrawFailed {
            id,
            prefix: prefix.into(),
            error: error.into(),
            next_attempt_at,
        };
        self.record_ledger(&[write], "checker", at).await
    }

    pub async fn active_suppressions(
        &self,
        now: Millis,
    ) -> Result<Vec<SuppressionRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM suppressions WHERE until > ? ORDER BY prefix")
                .bind(now)
                .fetch_all(&self.write)
                .await?,
        )
    }

    pub async fn suppress(
        &self,
        prefix: &str,
        until: Millis,
        reason: &str,
        actor: &str,
        at: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "INSERT INTO suppressions (prefix, until, reason, created_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (prefix) DO UPDATE SET until = ?2, reason = ?3, created_by = ?4, created_at = ?5",
        )
        .bind(prefix)
        .bind(until)
        .bind(reason)
        .bind(actor)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        insert_event(
            &mut tx,
            &NewEvent {
                at,
                actor: actor.into(),
                kind: "suppress".into(),
                ip: None,
                prefix: Some(prefix.into()),
                message: format!(
                    "{prefix} suppressed until {}: {reason}",
                    crate::clock::rfc3339(until)
                ),
                detail: None,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Lifts a suppression; false if there was none.
    pub async fn lift_suppression(
        &self,
        prefix: &str,
        actor: &str,
        at: Millis,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        let n = sqlx::query("DELETE FROM suppressions WHERE prefix = ?")
            .bind(prefix)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n > 0 {
            insert_event(
                &mut tx,
                &NewEvent {
                    at,
                    actor: actor.into(),
                    kind: "unsuppress".into(),
                    ip: None,
                    prefix: Some(prefix.into()),
                    message: format!("suppression of {prefix} lifted"),
                    detail: None,
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }
}

/// One write to the escalation ledger. A cycle's writes are committed together (see
/// [`Store::record_ledger`]), each with its event, as the single-write methods do.
#[derive(Debug, Clone)]
pub enum LedgerWrite {
    Insert(Box<NewEscalation>),
    ClearRefusal {
        prefix: String,
    },
    Withdraw {
        id: i64,
        prefix: String,
        reason: String,
    },
    Track {
        id: i64,
        last_crossing_at: Option<Millis>,
        quiet_since: Option<Millis>,
        hosts: Vec<String>,
    },
    Adopt {
        id: i64,
        prefix: String,
        reason: String,
    },
    /// The speaker confirmed the announcement (`note` ends the event's message).
    Announced {
        id: i64,
        prefix: String,
        note: String,
    },
    /// The announcement failed; retried at `next_attempt_at`.
    AnnounceFailed {
        id: i64,
        prefix: String,
        error: String,
        next_attempt_at: Millis,
    },
    /// The route is gone from the speaker (`note` ends the event's message).
    Withdrawn {
        id: i64,
        prefix: String,
        note: String,
    },
    /// The withdrawal failed; retried at `next_attempt_at`.
    WithdrawFailed {
        id: i64,
        prefix: String,
        error: String,
        next_attempt_at: Millis,
    },
}

/// Writes per transaction in [`Store::record_ledger`]: a burst of thousands of escalations costs
/// a few commits, and notifications wait for the write connection at most one chunk's time.
const LEDGER_CHUNK: usize = 512;

impl Store {
    /// Records a cycle's decided writes, in order, `LEDGER_CHUNK` to a transaction. Each write is
    /// whole (a row and its event commit together); a failure leaves earlier chunks committed,
    /// as one transaction per write did, and the next cycle decides the rest again.
    pub async fn record_ledger(
        &self,
        writes: &[LedgerWrite],
        actor: &str,
        at: Millis,
    ) -> Result<(), StoreError> {
        // Through the recorder, one job per chunk: notifications queued meanwhile are
        // recorded between chunks, not after the whole burst.
        for chunk in writes.chunks(LEDGER_CHUNK) {
            self.recorder
                .ledger(chunk.to_vec(), actor.into(), at)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(prefix: &str, at: Millis) -> NewEscalation {
        NewEscalation {
            route: Route {
                prefix: prefix.parse().expect("prefix"),
                next_hop: "192.0.2.1".parse().expect("next hop"),
                communities: vec!["65001:666".parse().expect("community")],
                large_communities: Vec::new(),
            },
            state: "pending",
            origin: "auto",
            reason: "test".into(),
            rule: None,
            hosts: vec!["10.0.0.7".into()],
            dry_run: false,
            expires_at: None,
            created_by: "checker".into(),
            at,
            detail: serde_json::Value::Null,
        }
    }

    /// What the speaker has to do: pending and failed rows, and active ones asked to go; not
    /// the active ones that stay.
    #[tokio::test]
    async fn what_to_carry_out_leaves_the_settled_active_rows() {
        let (_dir, store) = crate::store::open_temp().await;
        let writes: Vec<LedgerWrite> = (1..=4)
            .map(|i| LedgerWrite::Insert(Box::new(new(&format!("10.0.{i}.0/24"), 1_000))))
            .collect();
        store
            .record_ledger(&writes, "checker", 1_000)
            .await
            .expect("record");
        let ids: Vec<(i64, String)> = store
            .live_escalations()
            .await
            .expect("live")
            .iter()
            .map(|r| (r.id, r.prefix.clone()))
            .collect();
        store
            .mark_announced_many(&ids[..2], 2_000, "checker", "")
            .await
            .expect("announced");
        let (id, prefix) = &ids[2];
        store
            .mark_announce_failed_many(&[(*id, prefix.clone(), "down".into(), 9_000)], 2_000)
            .await
            .expect("failed");
        let (id, prefix) = &ids[1];
        store
            .record_ledger(
                &[LedgerWrite::Withdraw {
                    id: *id,
                    prefix: prefix.clone(),
                    reason: "released".into(),
                }],
                "checker",
                3_000,
            )
            .await
            .expect("withdraw asked");
        let todo: Vec<(String, String)> = store
            .escalations_to_carry_out()
            .await
            .expect("to carry out")
            .into_iter()
            .map(|r| (r.prefix, r.state))
            .collect();
        assert_eq!(
            todo,
            [
                ("10.0.2.0/24".to_string(), "active".to_string()),
                ("10.0.3.0/24".to_string(), "failed".to_string()),
                ("10.0.4.0/24".to_string(), "pending".to_string()),
            ]
        );
        assert_eq!(store.live_escalations().await.expect("live").len(), 4);
    }

    /// A cycle's writes across several chunks: every row with its event, in order, and the
    /// later writes of the same call see the earlier ones.
    #[tokio::test]
    async fn a_cycle_is_recorded_whole_across_chunks() {
        let (_dir, store) = crate::store::open_temp().await;
        let n = LEDGER_CHUNK * 2 + 7;
        let writes: Vec<LedgerWrite> = (0..n)
            .map(|i| {
                let prefix = format!("10.{}.{}.0/24", i / 256, i % 256);
                LedgerWrite::Insert(Box::new(new(&prefix, 1_000)))
            })
            .collect();
        store
            .record_ledger(&writes, "checker", 1_000)
            .await
            .expect("record");
        let live = store.live_escalations().await.expect("live");
        assert_eq!(live.len(), n);
        assert_eq!(live[0].prefix, "10.0.0.0/24");
        let first = &live[0];
        let last = &live[n - 1];
        let follow_up = vec![
            LedgerWrite::Track {
                id: first.id,
                last_crossing_at: Some(2_000),
                quiet_since: Some(2_000),
                hosts: vec!["10.0.0.8".into()],
            },
            LedgerWrite::Withdraw {
                id: last.id,
                prefix: last.prefix.clone(),
                reason: "released".into(),
            },
        ];
        store
            .record_ledger(&follow_up, "checker", 2_000)
            .await
            .expect("record");
        let live = store.live_escalations().await.expect("live");
        assert_eq!(live[0].quiet_since, Some(2_000));
        assert_eq!(live[0].hosts(), vec!["10.0.0.8".to_string()]);
        assert_eq!(live[n - 1].withdraw_requested_at, Some(2_000));
        assert_eq!(live[n - 1].withdraw_reason.as_deref(), Some("released"));
        let (escalate, withdraw): (i64, i64) =
            sqlx::query_as("SELECT sum(kind = 'escalate'), sum(kind = 'withdraw') FROM events")
                .fetch_one(&store.read)
                .await
                .expect("events");
        assert_eq!((escalate, withdraw), (n as i64, 1));
    }

    /// Refusals (one open per prefix), clearing one, and adopting a manual escalation, each
    /// with the event the ledger promises.
    #[tokio::test]
    async fn refusals_and_adoption_keep_the_ledger_and_its_events_together() {
        let (_dir, store) = crate::store::open_temp().await;
        let refusal = |rule: &'static str, at: Millis| {
            let mut e = new("10.9.0.0/24", at);
            e.state = "refused";
            e.rule = Some(rule);
            LedgerWrite::Insert(Box::new(e))
        };
        let mut manual = new("10.8.0.0/24", 1_000);
        manual.origin = "manual";
        manual.expires_at = Some(5_000);
        store
            .record_ledger(
                &[
                    refusal("max_active", 1_000),
                    refusal("protected", 2_000),
                    LedgerWrite::Insert(Box::new(manual)),
                ],
                "checker",
                2_000,
            )
            .await
            .expect("record");
        let open_refusals = store.open_refusals().await.expect("refusals");
        assert_eq!(
            open_refusals.len(),
            1,
            "a new refusal replaces the open one"
        );
        assert_eq!(open_refusals[0].rule.as_deref(), Some("protected"));
        assert_eq!(open_refusals[0].last_crossing_at, None);
        let manual = store.live_escalations().await.expect("live").remove(0);
        store
            .record_ledger(
                &[
                    LedgerWrite::ClearRefusal {
                        prefix: "10.9.0.0/24".into(),
                    },
                    LedgerWrite::Adopt {
                        id: manual.id,
                        prefix: manual.prefix.clone(),
                        reason: "still over thresholds".into(),
                    },
                ],
                "checker",
                6_000,
            )
            .await
            .expect("record");
        assert!(store.open_refusals().await.expect("refusals").is_empty());
        let adopted = store.live_escalations().await.expect("live").remove(0);
        assert_eq!(adopted.origin, "auto");
        assert_eq!(adopted.reason, "still over thresholds");
        assert_eq!(adopted.expires_at, None);
        assert_eq!(adopted.last_crossing_at, Some(6_000));
        let kinds: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT kind, prefix FROM events ORDER BY id")
                .fetch_all(&store.read)
                .await
                .expect("events");
        let kinds: Vec<&str> = kinds.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kinds, ["refused", "refused", "escalate", "adopt"]);
        let row = store
            .insert_escalation(&new("10.7.0.0/24", 7_000))
            .await
            .expect("insert");
        assert_eq!(
            (row.prefix.as_str(), row.state.as_str()),
            ("10.7.0.0/24", "pending")
        );
        assert_eq!(row.route().expect("route").communities.len(), 1);
    }
}
