//! The reads done for every banned host at every checker cycle, poll and push (100,000 hosts
//! under carpet bombing): run with rusqlite on a read connection's handle, on a blocking thread,
//! decoding straight into addresses and numbers. Through sqlx every row was copied into an
//! owned row and its text into a `String` first; a checker cycle over 100,000 banned hosts
//! spent over half a second and tens of MiB doing so.

use std::net::IpAddr;

use rusqlite::Connection;
use sqlx::SqlitePool;

use super::hosts::from_sql_u64;
use super::{Lent, Store, StoreError};
use crate::clock::Millis;
use crate::fastnetmon::Traffic;

/// A banned host as the checker sees it: since when, and its newest sample if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BannedNow {
    pub ip: IpAddr,
    pub since: Millis,
    pub sample: Option<(Millis, Traffic)>,
}

impl Store {
    /// Each banned host and since when, oldest ban first.
    pub async fn banned_since(&self) -> Result<Vec<(IpAddr, Millis)>, StoreError> {
        let mut out = with_read(self.reads().await?, |c| {
            let mut stmt = c.prepare(
                "SELECT ip, COALESCE(banned_at, state_at) FROM hosts WHERE state = 'banned'",
            )?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                if let Some(ip) = parse_ip(r)? {
                    out.push((ip, r.get(1)?));
                }
            }
            Ok(out)
        })
        .await?;
        out.sort_unstable_by_key(|&(ip, since)| (since, ip));
        Ok(out)
    }

    /// Every banned host with its newest sample, oldest ban first: what a checker cycle
    /// decides on, in one read.
    pub async fn banned_now(&self) -> Result<Vec<BannedNow>, StoreError> {
        let mut out = with_read(self.reads().await?, |c| {
            let mut stmt = c.prepare(
                "SELECT h.ip, COALESCE(h.banned_at, h.state_at),
                        s.at, s.in_bps, s.out_bps, s.in_pps, s.out_pps
                 FROM hosts h LEFT JOIN latest_samples s ON s.ip = h.ip
                 WHERE h.state = 'banned'",
            )?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let Some(ip) = parse_ip(r)? else {
                    continue;
                };
                let at: Option<Millis> = r.get(2)?;
                let sample = match at {
                    Some(at) => Some((
                        at,
                        Traffic {
                            in_bps: from_sql_u64(r.get(3)?),
                            out_bps: from_sql_u64(r.get(4)?),
                            in_pps: from_sql_u64(r.get(5)?),
                            out_pps: from_sql_u64(r.get(6)?),
                        },
                    )),
                    None => None,
                };
                out.push(BannedNow {
                    ip,
                    since: r.get(1)?,
                    sample,
                });
            }
            Ok(out)
        })
        .await?;
        out.sort_unstable_by_key(|b| (b.since, b.ip));
        Ok(out)
    }
}

/// The address in the row's first column; None (the row is skipped, as the sqlx reads did)
/// if it is not one.
fn parse_ip(r: &rusqlite::Row<'_>) -> Result<Option<IpAddr>, StoreError> {
    Ok(r.get_ref(0)?
        .as_str()
        .ok()
        .and_then(|s| s.parse::<IpAddr>().ok()))
}

/// Runs `f` with rusqlite on a connection of `pool` (the read pool but for the ledger's own
/// reads, on the write connection), on a blocking thread.
pub(super) async fn with_read<T: Send + 'static>(
    pool: &SqlitePool,
    f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let mut conn = pool.acquire().await?;
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        // On this thread from start to end, so the borrowed handle is never left in use by an
        // abandoned future.
        let mut handle = runtime.block_on(conn.lock_handle())?;
        let lent = Lent::new(&mut handle)?;
        f(&lent)
    })
    .await
    .map_err(|e| StoreError::Unavailable(format!("a database read stopped: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Incoming, SampleIn};

    fn note(ip: &str, action: &str, at: Millis) -> Incoming {
        let body =
            serde_json::json!({ "ip": ip, "action": action, "alert_scope": "host" }).to_string();
        crate::store::incoming(&body, at, None)
    }

    #[tokio::test]
    async fn banned_hosts_come_with_their_newest_sample_oldest_ban_first() {
        let (_dir, store) = crate::store::open_temp().await;
        for (ip, action, at) in [
            ("10.0.0.2", "ban", 2_000),
            ("2001:db8::1", "ban", 1_000),
            ("10.0.0.3", "ban", 3_000),
            ("10.0.0.3", "unban", 4_000),
            ("10.0.0.1", "ban", 2_000),
        ] {
            store
                .record_notification(note(ip, action, at))
                .await
                .expect("record");
        }
        let traffic = |mbps: u64| Traffic {
            in_bps: mbps * 1_000_000,
            out_bps: 0,
            in_pps: mbps,
            out_pps: 0,
        };
        let sample = |ip: &str, at: Millis, mbps: u64| SampleIn {
            ip: ip.parse().expect("ip"),
            at,
            source: "influxdb".into(),
            traffic: traffic(mbps),
        };
        store
            .record_samples(&[
                sample("10.0.0.2", 5_000, 10),
                sample("10.0.0.2", 6_000, 20),
                sample("10.0.0.3", 6_000, 30),
            ])
            .await
            .expect("samples");
        let now = store.banned_now().await.expect("read");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            now,
            vec![
                BannedNow {
                    ip: ip("2001:db8::1"),
                    since: 1_000,
                    sample: None
                },
                BannedNow {
                    ip: ip("10.0.0.1"),
                    since: 2_000,
                    sample: None
                },
                BannedNow {
                    ip: ip("10.0.0.2"),
                    since: 2_000,
                    sample: Some((6_000, traffic(20)))
                },
            ]
        );
        let since = store.banned_since().await.expect("read");
        let want: Vec<(IpAddr, Millis)> = now.iter().map(|b| (b.ip, b.since)).collect();
        assert_eq!(since, want);
    }
}
