//! SQLite through sqlx: the only place with SQL outside `migrations/`. Writes go through one
//! connection (SQLite has one writer anyway, and a queue beats lock contention); notifications,
//! reconciliation, samples and the escalation ledger reach it through the recorder thread
//! (`record`), everything else through sqlx directly. Reads use a small pool; the banned hosts,
//! read in full at every checker cycle, are also kept in memory by the recorder (`banned`,
//! `read`). WAL mode; a write that returned has been committed, or (notifications under load)
//! journaled, and is committed before any read sees the database.

mod banned;
mod escalations;
mod events;
mod hosts;
mod journal;
mod read;
mod record;

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub use escalations::{
    Attributes, EscalationRow, EscalationView, LedgerWrite, NewEscalation, SuppressionRow,
};
pub use events::{EventFilter, EventRow, NewEvent};
pub use hosts::{
    EpisodeRow, HostFilter, HostRow, Incoming, Outcome, Reconciled, Recorded, SampleIn, SampleRow,
};
pub use read::BannedNow;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid database setting `{0}`")]
    Url(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("the database writer has stopped")]
    WriterStopped,
    #[error("cannot start the database writer: {0}")]
    Writer(String),
    #[error("{0}")]
    Journal(String),
}

#[derive(Clone)]
pub struct Store {
    write: SqlitePool,
    read: SqlitePool,
    /// Notifications, samples and ledger writes go through here, in order (see `record`).
    recorder: record::Recorder,
    /// The banned hosts and their newest samples, kept by the recorder (see `banned`).
    banned: std::sync::Arc<banned::BannedIndex>,
    /// Stops when the last clone of the store is dropped.
    _checkpointer: Option<Checkpointer>,
}

/// How often the checkpointer copies the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// WAL pages (4 KiB) past which the writer checkpoints itself, if the checkpointer lags.
const BACKSTOP_PAGES: &str = "10000";

/// Checkpoints the WAL from a connection of its own, every `CHECKPOINT_EVERY`. Left to SQLite,
/// the commit that takes the WAL past 1,000 pages checkpoints it (copies it into the database
/// and syncs both) on the recorder's thread, and every notification waits meanwhile: with a
/// commit per 50 ms under load, that was nearly every commit, and target 2's p99 was 17–24 ms
/// against 6.8 ms without it (see BENCHMARKS.md). A passive checkpoint on another connection
/// runs beside the writer.
#[derive(Clone)]
struct Checkpointer {
    /// The thread ends when the last clone of this is dropped.
    _stop: std::sync::mpsc::Sender<()>,
}

impl Checkpointer {
    fn start(database: &std::path::Path) -> Result<Checkpointer, StoreError> {
        let conn = rusqlite::Connection::open_with_flags(
            database,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("fnm-checkpoint".into())
            .spawn(move || {
                // Ends when the store is dropped (the sender with it).
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    if let Err(e) =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "WAL checkpoint failed; the writer checkpoints past the backstop");
                    }
                }
            })
            .map_err(|e| StoreError::Writer(e.to_string()))?;
        Ok(Checkpointer { _stop: stop })
    }
}

impl Store {
    /// Opens (creating if needed) the database named by `server.database`: a `sqlite:` URL or a
    /// file path. Runs pending migrations.
    pub async fn open(database: &str) -> Result<Store, StoreError> {
        let opts = if database.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(database)
                .map_err(|e| StoreError::Url(format!("{database}: {e}")))?
        } else {
            SqliteConnectOptions::new().filename(database)
        };
        let opts = opts
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode NORMAL is durable against a crash of the process, `kill -9` included:
            // the commit is in the WAL file before the call returns. FULL would add an fsync per
            // commit, which only matters for power loss, at a large cost in ingest rate.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory");
        let journal_file = journal_path(database, &opts);
        let db_file = opts.get_filename().to_path_buf();
        // Page caches are per connection and count in the resident memory once filled (a
        // checker cycle over 100,000 banned hosts fills them): 8 MiB for the one writer, 2 MiB
        // (SQLite's default) for each reader; the OS page cache holds the rest.
        // The one writer is a local file that cannot go away under us: no ping before each use
        // (the recorder borrows it for every run of work, and a ping is a round trip to sqlx's
        // worker thread).
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with({
                let writer = opts.clone().pragma("cache_size", "-8000");
                // With a file, checkpoints are the checkpointer's (below); the writer's own
                // only if the WAL grows past this, as a backstop.
                if journal_file.is_some() {
                    writer.pragma("wal_autocheckpoint", BACKSTOP_PAGES)
                } else {
                    writer
                }
            })
            .await?;
        MIGRATOR.run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.read_only(true).pragma("cache_size", "-2000"))
            .await?;
        let (journal, checkpointer) = match journal_file {
            Some(path) => (
                Some(open_journal(&write, &path).await?),
                Some(Checkpointer::start(&db_file)?),
            ),
            None => (None, None),
        };
        let banned = std::sync::Arc::new(banned::BannedIndex::default());
        let recorder = record::Recorder::start(write.clone(), journal, banned.clone())?;
        Ok(Store {
            write,
            read,
            recorder,
            banned,
            _checkpointer: checkpointer,
        })
    }

    /// Waits until every notification acknowledged so far is committed, so that a read on
    /// another connection sees it (see `journal`); at once when none waits.
    pub async fn settle(&self) -> Result<(), StoreError> {
        self.recorder.settle().await
    }

    /// The read pool, once what was acknowledged before is visible on it.
    async fn reads(&self) -> Result<&SqlitePool, StoreError> {
        self.settle().await?;
        Ok(&self.read)
    }

    /// A cheap write that proves the database is writable (for `/readyz`).
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        sqlx::query("BEGIN IMMEDIATE; ROLLBACK;")
            .execute(&self.write)
            .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

/// The ingest journal's file, beside a database on disk (none for one in memory).
fn journal_path(database: &str, opts: &SqliteConnectOptions) -> Option<std::path::PathBuf> {
    let file = opts.get_filename();
    let name = file.to_string_lossy();
    if database.contains(":memory:") || database.contains("mode=memory") || name.is_empty() {
        return None;
    }
    Some(journal::Journal::path_for(file))
}

/// Applies what the journal holds past the last commit, then opens it empty.
async fn open_journal(
    write: &SqlitePool,
    path: &std::path::Path,
) -> Result<journal::Journal, StoreError> {
    let lock = journal::Journal::lock(path).await?;
    let entries = journal::Journal::read(path)?;
    let (applied, last) = record::replay(write, &entries).await.map_err(|e| {
        StoreError::Journal(format!(
            "cannot apply the ingest journal {}: {e}",
            path.display()
        ))
    })?;
    if applied > 0 {
        tracing::info!(
            notifications = applied,
            journal = %path.display(),
            "acknowledged notifications left uncommitted by the last stop are now committed"
        );
    }
    journal::Journal::create(path, lock, last + 1)
}

/// JSON-encoded list column helpers.
fn to_json_list<T: serde::Serialize>(items: &[T]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

fn from_json_list<T: serde::de::DeserializeOwned>(s: &str) -> Vec<T> {
    serde_json::from_str(s).unwrap_or_default()
}

/// A rusqlite connection on the SQLite handle sqlx has lent with `lock_handle`, usable for as
/// long as the lend lasts (across awaits too: the recorder keeps it while work keeps coming).
/// For the recorder's writes and the reads of every banned host, which sqlx's per-row copying
/// made slow.
struct Lent<'h> {
    conn: rusqlite::Connection,
    _lend: std::marker::PhantomData<&'h mut ()>,
}

impl<'h> Lent<'h> {
    fn new(handle: &'h mut sqlx::sqlite::LockedSqliteHandle<'_>) -> Result<Lent<'h>, StoreError> {
        // SAFETY: `lock_handle` parks sqlx's worker thread until `handle` is dropped, and
        // `handle` stays mutably borrowed for as long as the returned `Lent` lives (`'h`), so
        // nothing else uses the SQLite handle meanwhile. `from_handle` does not take ownership
        // (dropping the rusqlite connection does not close the handle), and the rusqlite
        // connection, with any statement prepared on it (they borrow the `Lent`), is dropped
        // with the `Lent`, before the borrow of `handle` ends.
        let conn = unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr()) }?;
        Ok(Lent {
            conn,
            _lend: std::marker::PhantomData,
        })
    }
}

impl std::ops::Deref for Lent<'_> {
    type Target = rusqlite::Connection;

    fn deref(&self) -> &rusqlite::Connection {
        &self.conn
    }
}

/// A notification as the web callback delivers it: `body` (FastNetMon's JSON), observed and
/// received at `at`, with idempotency key `key`.
#[cfg(test)]
pub(crate) fn incoming(body: &str, at: crate::clock::Millis, key: Option<&str>) -> Incoming {
    Incoming {
        notification: crate::fastnetmon::notification::parse_json(body.as_bytes())
            .expect("a notification"),
        observed_at: at,
        received_at: at,
        idempotency_key: key.map(String::from),
        source: "web_callback".into(),
        actor: "test".into(),
        payload: body.into(),
    }
}

/// A store on a fresh database in a temporary directory (kept as long as the `TempDir`).
#[cfg(test)]
pub(crate) async fn open_temp() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.db");
    let store = Store::open(path.to_str().expect("path"))
        .await
        .expect("open");
    (dir, store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EventFilter, Outcome};

    /// A database made before 20261127000001 (fewer writes per notification) keeps its rows,
    /// ids and guarantees through it.
    #[tokio::test]
    async fn rebuilt_tables_keep_their_rows_and_guarantees() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.db");
        let url = format!("sqlite:{}?mode=rwc", path.display());
        {
            let pool = sqlx::SqlitePool::connect(&url).await.expect("connect");
            let before = sqlx::migrate::Migrator {
                migrations: MIGRATOR
                    .migrations
                    .iter()
                    .filter(|m| m.version < 20261127000001)
                    .cloned()
                    .collect::<Vec<_>>()
                    .into(),
                ..sqlx::migrate::Migrator::DEFAULT
            };
            before.run(&pool).await.expect("the older migrations");
            sqlx::query(
                "INSERT INTO notifications (received_at, observed_at, idempotency_key, source,
                     actor, action, scope, ip, outcome, payload)
                 VALUES (1, 1, 'key-1', 'spool', 'fastnetmon', 'ban', 'host', '10.1.1.1', 'banned', '{}'),
                        (2, 2, NULL, 'web_callback', 'fastnetmon', 'ban', 'host', '10.1.1.2', 'banned', '{}'),
                        (3, 3, NULL, 'web_callback', 'fastnetmon', 'ban', 'host', '10.1.1.3', 'banned', '{}');
                 INSERT INTO events (at, actor, kind, ip, message) VALUES
                     (1, 'fastnetmon', 'notification', '10.1.1.1', 'one'),
                     (2, 'fastnetmon', 'notification', '10.1.1.2', 'two'),
                     (3, 'checker', 'escalate', NULL, 'three');
                 INSERT INTO latest_samples VALUES ('10.1.1.1', 5, 'influxdb', 8, 0, 1, 0);",
            )
            .execute(&pool)
            .await
            .expect("rows of the older schema");
            pool.close().await;
        }
        let store = Store::open(path.to_str().expect("path"))
            .await
            .expect("migrated");
        assert_eq!(store.count_notifications().await.expect("count"), 3);
        let event_ids = || async {
            let all = EventFilter {
                limit: 10,
                ..Default::default()
            };
            let events = store.events(&all).await.expect("events");
            events.iter().map(|e| e.id).collect::<Vec<i64>>()
        };
        assert_eq!(event_ids().await, [3, 2, 1]);
        let sample = store
            .latest_sample("10.1.1.1".parse().expect("ip"))
            .await
            .expect("sample")
            .expect("kept");
        assert_eq!((sample.at, sample.in_bps), (5, 8));
        // A key stored before still makes its redelivery a no-op; keyless notifications are
        // stored each time.
        let ban = |ip: &str, key: Option<&str>| {
            let body = format!(r#"{{"ip":"{ip}","action":"ban","alert_scope":"host"}}"#);
            incoming(&body, 10, key)
        };
        let again = store
            .record_notification(ban("10.1.1.1", Some("key-1")))
            .await
            .expect("redelivery");
        assert_eq!((again.id, again.outcome), (Some(1), Outcome::Duplicate));
        for _ in 0..2 {
            let r = store
                .record_notification(ban("10.1.1.4", None))
                .await
                .expect("keyless");
            assert_ne!(r.outcome, Outcome::Duplicate);
        }
        let fresh = store
            .record_notification(ban("10.1.1.5", Some("key-2")))
            .await
            .expect("a new key");
        assert_eq!(fresh.id, Some(6));
        // New events continue past the old ids, and the log is still append-only.
        assert_eq!(event_ids().await, [6, 5, 4, 3, 2, 1]);
        // The key lookup still uses an index (the partial one).
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
            "EXPLAIN QUERY PLAN SELECT id FROM notifications WHERE idempotency_key = 'key-1'",
        )
        .fetch_all(&store.write)
        .await
        .expect("plan");
        assert!(
            plan.iter()
                .any(|p| p.3.contains("INDEX notifications_idempotency_key")),
            "{plan:?}"
        );
        for sql in ["UPDATE events SET message = 'x'", "DELETE FROM events"] {
            assert!(
                sqlx::query(sql).execute(&store.write).await.is_err(),
                "{sql}"
            );
        }
        store.close().await;
    }
}
