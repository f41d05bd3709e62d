//! The escalation ledger's writes, run by the recorder (see `escalations.rs` for the ledger and
//! `LedgerWrite`): in order with notifications, each state change with its audit event.

use rusqlite::{params, TransactionBehavior};

use super::{insert_event, Db};
use crate::clock::Millis;
use crate::store::escalations::{route_family, LedgerWrite, NewEscalation};
use crate::store::{to_json_list, NewEvent, StoreError};

/// Escalation-ledger writes in one transaction, in order, each with its event as the ledger
/// requires (see `escalations.rs`). Returns the ids of the rows inserted.
pub(super) fn record_ledger(
    db: &Db<'_>,
    writes: &[LedgerWrite],
    actor: &str,
    at: Millis,
) -> Result<Vec<i64>, StoreError> {
    let tx = rusqlite::Transaction::new_unchecked(db.conn, TransactionBehavior::Immediate)?;
    let mut inserted = Vec::new();
    for w in writes {
        match w {
            LedgerWrite::Insert(e) => inserted.push(insert_escalation(db, e)?),
            LedgerWrite::ClearRefusal { prefix } => {
                db.stmt(
                    "UPDATE escalations SET withdrawn_at = ?1, updated_at = ?1
                     WHERE prefix = ?2 AND state = 'refused' AND withdrawn_at IS NULL",
                )?
                .execute(params![at, prefix])?;
            }
            LedgerWrite::Withdraw { id, prefix, reason } => {
                db.stmt(
                    "UPDATE escalations SET withdraw_requested_at = ?1, withdraw_reason = ?2,
                         updated_at = ?1, next_attempt_at = NULL
                     WHERE id = ?3 AND withdraw_requested_at IS NULL",
                )?
                .execute(params![at, reason, id])?;
                escalation_event(
                    db,
                    at,
                    actor,
                    "withdraw",
                    prefix,
                    format!("withdraw {prefix}: {reason}"),
                    serde_json::json!({ "escalation_id": id }),
                )?;
            }
            LedgerWrite::Track {
                id,
                last_crossing_at,
                quiet_since,
                hosts,
            } => {
                db.stmt(
                    "UPDATE escalations SET last_crossing_at = ?, quiet_since = ?, hosts = ?,
                         updated_at = ?
                     WHERE id = ?",
                )?
                .execute(params![
                    last_crossing_at,
                    quiet_since,
                    to_json_list(hosts),
                    at,
                    id
                ])?;
            }
            LedgerWrite::Adopt { id, prefix, reason } => {
                db.stmt(
                    "UPDATE escalations SET origin = 'auto', reason = ?1, expires_at = NULL,
                         last_crossing_at = ?2, updated_at = ?2
                     WHERE id = ?3",
                )?
                .execute(params![reason, at, id])?;
                let message = format!(
                    "manual escalation of {prefix} expired while still wanted; kept as auto: \
                     {reason}"
                );
                let detail = serde_json::json!({ "escalation_id": id });
                escalation_event(db, at, actor, "adopt", prefix, message, detail)?;
            }
            LedgerWrite::Announced { id, prefix, note } => {
                db.stmt(
                    "UPDATE escalations SET state = 'active',
                         announced_at = COALESCE(announced_at, ?1), updated_at = ?1,
                         attempts = attempts + 1, next_attempt_at = NULL, last_error = NULL
                     WHERE id = ?2",
                )?
                .execute(params![at, id])?;
                escalation_event(
                    db,
                    at,
                    actor,
                    "announced",
                    prefix,
                    format!("announced {prefix}{note}"),
                    serde_json::json!({ "escalation_id": id }),
                )?;
            }
            LedgerWrite::AnnounceFailed {
                id,
                prefix,
                error,
                next_attempt_at,
            } => {
                let attempts: i64 = db
                    .stmt(
                        "UPDATE escalations SET state = 'failed', updated_at = ?1,
                             attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3
                         WHERE id = ?4 RETURNING attempts",
                    )?
                    .query_row(params![at, next_attempt_at, error, id], |r| r.get(0))?;
                if failure_is_logged(attempts) {
                    escalation_event(
                        db,
                        at,
                        actor,
                        "announce_failed",
                        prefix,
                        format!("announce of {prefix} failed (attempt {attempts}): {error}"),
                        serde_json::json!({ "escalation_id": id, "attempts": attempts }),
                    )?;
                }
            }
            LedgerWrite::Withdrawn { id, prefix, note } => {
                db.stmt(
                    "UPDATE escalations SET state = 'withdrawn', withdrawn_at = ?1, updated_at = ?1,
                         next_attempt_at = NULL, last_error = NULL
                     WHERE id = ?2",
                )?
                .execute(params![at, id])?;
                escalation_event(
                    db,
                    at,
                    actor,
                    "withdrawn",
                    prefix,
                    format!("withdrew {prefix}{note}"),
                    serde_json::json!({ "escalation_id": id }),
                )?;
            }
            LedgerWrite::WithdrawFailed {
                id,
                prefix,
                error,
                next_attempt_at,
            } => {
                let attempts: i64 = db
                    .stmt(
                        "UPDATE escalations SET updated_at = ?1, attempts = attempts + 1,
                             next_attempt_at = ?2, last_error = ?3
                         WHERE id = ?4 RETURNING attempts",
                    )?
                    .query_row(params![at, next_attempt_at, error, id], |r| r.get(0))?;
                if failure_is_logged(attempts) {
                    escalation_event(
                        db,
                        at,
                        actor,
                        "withdraw_failed",
                        prefix,
                        format!("withdrawal of {prefix} failed: {error}"),
                        serde_json::json!({ "escalation_id": id, "attempts": attempts }),
                    )?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(inserted)
}

/// A decided escalation or refusal, with its event. A refusal replaces the prefix's open one.
fn insert_escalation(db: &Db<'_>, e: &NewEscalation) -> Result<i64, StoreError> {
    let prefix = e.route.prefix.to_string();
    let refused = e.state == "refused";
    if refused {
        db.stmt(
            "UPDATE escalations SET withdrawn_at = ?1, updated_at = ?1
             WHERE prefix = ?2 AND state = 'refused' AND withdrawn_at IS NULL",
        )?
        .execute(params![e.at, prefix])?;
    }
    let communities: Vec<String> = e.route.communities.iter().map(|c| c.to_string()).collect();
    let large: Vec<String> = e
        .route
        .large_communities
        .iter()
        .map(|c| c.to_string())
        .collect();
    let id: i64 = db
        .stmt(
            "INSERT INTO escalations (prefix, family, state, origin, reason, rule, hosts, next_hop,
                 communities, large_communities, dry_run, created_at, updated_at, last_crossing_at,
                 expires_at, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13, ?14, ?15)
             RETURNING id",
        )?
        .query_row(
            params![
                prefix,
                route_family(&e.route),
                e.state,
                e.origin,
                e.reason,
                e.rule,
                to_json_list(&e.hosts),
                e.route.next_hop.to_string(),
                to_json_list(&communities),
                to_json_list(&large),
                e.dry_run,
                e.at,
                (!refused).then_some(e.at),
                e.expires_at,
                e.created_by,
            ],
            |r| r.get(0),
        )?;
    let (kind, message) = if refused {
        (
            "refused",
            format!(
                "refused to escalate {} (rule {}): {}",
                e.route.prefix,
                e.rule.unwrap_or("?"),
                e.reason
            ),
        )
    } else {
        (
            "escalate",
            format!("escalate {} ({}): {}", e.route.prefix, e.origin, e.reason),
        )
    };
    escalation_event(
        db,
        e.at,
        &e.created_by,
        kind,
        &prefix,
        message,
        serde_json::json!({
            "escalation_id": id,
            "hosts": e.hosts,
            "rule": e.rule,
            "dry_run": e.dry_run,
            "reason": e.detail,
        }),
    )?;
    Ok(id)
}

/// Failed announcements and withdrawals are events at the first attempt and then every tenth:
/// a long outage must not flood the audit log.
fn failure_is_logged(attempts: i64) -> bool {
    attempts == 1 || attempts % 10 == 0
}

/// An event about the escalation of `prefix` (the ledger's events name no host).
fn escalation_event(
    db: &Db<'_>,
    at: Millis,
    actor: &str,
    kind: &str,
    prefix: &str,
    message: String,
    detail: serde_json::Value,
) -> Result<(), StoreError> {
    insert_event(
        db,
        &NewEvent {
            at,
            actor: actor.into(),
            kind: kind.into(),
            ip: None,
            prefix: Some(prefix.into()),
            message,
            detail: Some(detail),
        },
    )
}
