//! The reads done for every banned host at every checker cycle, poll and push (100,000 hosts
//! under carpet bombing). They come from the index the recorder keeps in memory (`banned`);
//! until it is loaded, and after a failed write until it is loaded again, from the database:
//! with rusqlite on a read connection's handle, on a blocking thread, decoding straight into
//! addresses and numbers. (Through sqlx every row was copied into an owned row and its text
//! into a `String` first; a checker cycle over 100,000 banned hosts spent over half a second
//! and tens of MiB doing so.)

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
        if let Some(banned) = self.banned.since() {
            return Ok(banned);
        }
        // Only until the index is loaded: the same read as `banned_now`.
        let banned = self.banned_now().await?;
        Ok(banned.into_iter().map(|b| (b.ip, b.since)).collect())
    }

    /// The banned hosts inside `net` with their newest samples, oldest ban first, from memory;
    /// `None` until the index is loaded (the caller then looks at every banned host instead).
    pub fn banned_within(&self, net: ipnet::IpNet) -> Option<Vec<BannedNow>> {
        self.banned.within(net)
    }

    /// How many banned hosts each prefix holds (`covering` gives a host's), in address order,
    /// from memory; `None` until the index is loaded.
    pub fn banned_prefixes(
        &self,
        covering: impl Fn(IpAddr) -> ipnet::IpNet,
    ) -> Option<Vec<(ipnet::IpNet, usize)>> {
        self.banned.prefixes(covering)
    }

    /// Every banned host with its newest sample, oldest ban first: what a checker cycle
    /// decides on. From memory (see `banned`), or from the database while that is not loaded.
    pub async fn banned_now(&self) -> Result<Vec<BannedNow>, StoreError> {
        if let Some(banned) = self.banned.snapshot() {
            return Ok(banned);
        }
        let mut out = with_read(self.reads().await?, banned_hosts).await?;
        out.sort_unstable_by_key(|b| (b.since, b.ip));
        Ok(out)
    }
}

/// Every banned host with its newest sample, as the database on `c` holds them, in no order.
pub(super) fn banned_hosts(c: &Connection) -> Result<Vec<BannedNow>, StoreError> {
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
            Some(at) => Some((at, traffic_at(r, 3)?)),
            None => None,
        };
        out.push(BannedNow {
            ip,
            since: r.get(1)?,
            sample,
        });
    }
    Ok(out)
}

/// The four rates of a `latest_samples` row, from column `first` on (in, out bps; in, out pps).
pub(super) fn traffic_at(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Traffic> {
    Ok(Traffic {
        in_bps: from_sql_u64(r.get(first)?),
        out_bps: from_sql_u64(r.get(first + 1)?),
        in_pps: from_sql_u64(r.get(first + 2)?),
        out_pps: from_sql_u64(r.get(first + 3)?),
    })
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
        let now = from_index(&store).await;
        assert_eq!(now, from_database(&store).await);
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

    /// The index, once the recorder has loaded it (bounded wait).
    async fn from_index(store: &Store) -> Vec<BannedNow> {
        for _ in 0..200 {
            if let Some(banned) = store.banned.snapshot() {
                assert_eq!(banned, store.banned_now().await.expect("read"));
                return banned;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the recorder did not load the banned hosts within 2 s");
    }

    async fn from_database(store: &Store) -> Vec<BannedNow> {
        let mut out = with_read(store.reads().await.expect("settle"), banned_hosts)
            .await
            .expect("read");
        out.sort_unstable_by_key(|b| (b.since, b.ip));
        out
    }

    /// A small deterministic generator (no dependency for one test).
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    /// Bans, unbans, repeats, out-of-order and duplicate deliveries, samples and ban-list
    /// reconciliation, many at once so that they go in groups (and, under load, through the
    /// journal): the index must end as the database does, after each round.
    #[tokio::test]
    async fn the_index_matches_the_database_through_every_kind_of_write() {
        let (_dir, store) = crate::store::open_temp().await;
        from_index(&store).await;
        let mut rng = Lcg(7);
        let ips: Vec<String> = (0..24)
            .map(|i| match i % 3 {
                0 => format!("2001:db8::{i:x}"),
                _ => format!("10.9.{}.{}", i / 8, i),
            })
            .collect();
        let body = |ip: &str, action: &str, traffic: Option<u64>| {
            let mut v = serde_json::json!({ "ip": ip, "action": action, "alert_scope": "host" });
            if let Some(bytes) = traffic {
                v["attack_details"] = serde_json::json!({
                    "total_incoming_traffic": bytes, "total_incoming_pps": bytes / 100,
                });
            }
            v.to_string()
        };
        let (mut banned_seen, mut sampled_seen) = (0, 0);
        for round in 0..12 {
            let mut notes = Vec::new();
            for _ in 0..60 {
                let i = rng.below(ips.len() as u64) as usize;
                let ip = &ips[i];
                let action = ["ban", "ban", "unban", "attack_details"][rng.below(4) as usize];
                // The second half of the hosts never has a sample.
                let traffic = (i < 12 && rng.below(3) > 0).then(|| 1_000 + rng.below(1_000_000));
                // Observation times jump back and forth: stale deliveries are normal.
                let at = 1_000_000 + round * 10_000 + rng.below(20_000) as Millis;
                let key = (rng.below(5) == 0).then(|| format!("k{}", rng.below(40)));
                let mut inc = crate::store::incoming(&body(ip, action, traffic), at, None);
                inc.idempotency_key = key;
                notes.push(inc);
            }
            let results = futures_util::future::join_all(
                notes.into_iter().map(|n| store.record_notification(n)),
            )
            .await;
            assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
            let samples: Vec<SampleIn> = (0..20)
                .map(|_| SampleIn {
                    ip: ips[rng.below(12) as usize].parse().expect("ip"),
                    at: 1_000_000 + round * 10_000 + rng.below(20_000) as Millis,
                    source: "influxdb".into(),
                    traffic: Traffic {
                        in_bps: rng.below(1 << 40),
                        ..Traffic::default()
                    },
                })
                .collect();
            store.record_samples(&samples).await.expect("samples");
            let items: Vec<crate::store::Reconciled> = (0..4)
                .map(|_| {
                    let ip = &ips[rng.below(ips.len() as u64) as usize];
                    let action = if rng.below(2) == 0 { "ban" } else { "unban" };
                    let at = 1_000_000 + round * 10_000 + 20_000;
                    crate::store::Reconciled {
                        incoming: crate::store::incoming(&body(ip, action, None), at, None),
                        reason: "test".into(),
                    }
                })
                .collect();
            store
                .record_reconciliation(&items)
                .await
                .expect("reconcile");
            let (index, database) = (from_index(&store).await, from_database(&store).await);
            assert_eq!(index, database, "round {round}");
            banned_seen += index.len();
            sampled_seen += index.iter().filter(|b| b.sample.is_some()).count();
        }
        // The rounds had banned hosts with and without samples to compare.
        assert!(
            banned_seen > 24 && sampled_seen > 0 && sampled_seen < banned_seen,
            "{banned_seen} banned, {sampled_seen} with a sample"
        );
        // Invalidated (as after a failed write), the index is read from the database while
        // the recorder loads it again, at the end of its next run of work.
        let before = from_database(&store).await;
        store.banned.invalidate();
        assert_eq!(store.banned_now().await.expect("read"), before);
        store.record_samples(&[]).await.expect("nothing to record");
        store
            .record_notification(crate::store::incoming(
                &body("10.9.9.9", "unban", None),
                1,
                None,
            ))
            .await
            .expect("record");
        assert_eq!(from_index(&store).await, before);
    }
}
