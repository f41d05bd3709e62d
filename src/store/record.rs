//! Recording notifications, samples and the escalation ledger: the hot writes, on a thread
//! of its own.
//!
//! A notification is a transaction's worth of work: the notification itself, its host, the
//! host's ban episode, an audit event and a traffic sample, about eight statements. Through
//! sqlx's SQLite driver every statement is a hand-off between the caller and the connection's
//! thread, and one transaction per notification writes every touched page to the WAL at each
//! commit; together they capped ingest at about 1,200 notifications/s while SQLite itself was
//! 1.4% of the profile (see BENCHMARKS.md). So this module does two things:
//!
//! - **Group commit.** Notifications go through a queue to one recorder thread. Those that
//!   arrive while it is busy go together into its next group; nobody waits for a group to
//!   fill, an idle recorder takes a single notification at once. Each one's outcome is what it
//!   would have been alone: they are applied in arrival order, by the same statements. If a
//!   group fails, its notifications are recorded one by one, so one bad notification fails
//!   alone.
//! - **Answered from the journal under load.** A lone notification is committed before it is
//!   answered. While groups keep coming, the transaction stays open across them, and each
//!   group is answered once it is appended to the ingest journal (`journal.rs`), durable
//!   against `kill -9` as a commit is; the transaction is committed when the recorder lets the
//!   connection go (idle for `IDLE`, or after `HOLD`) or before any other kind of write. A
//!   commit writes every page it dirtied to the WAL, so one per `HOLD` instead of one per group
//!   took a third off the recorder's time per notification. Readers on other connections
//!   `settle` first (wait for that commit), so what was answered is what they read.
//! - **No hand-offs.** The recorder borrows the write connection's SQLite handle from sqlx
//!   (`lock_handle`, which parks sqlx's worker thread for the while) and runs the statements
//!   itself through rusqlite, each statement prepared once per borrowing of the connection
//!   (which lasts while work keeps coming, up to `HOLD`). sqlx keeps owning the connection, its
//!   settings (WAL, `synchronous`, busy timeout, foreign keys) and every other query.
//!
//! Ban-list reconciliation, traffic samples and the escalation ledger's writes (`ledger.rs`)
//! take the same path, each as a transaction of its own in arrival order.
//!
//! As the one writer of hosts and samples, the recorder also keeps the banned hosts in memory
//! (`banned`): each job's changes are published when it is acknowledged, before its answer.

use std::cell::{RefCell, RefMut};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension, Statement, TransactionBehavior};
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::banned::{BannedIndex, Change};
use super::escalations::LedgerWrite;
use super::hosts::{family, sql_u64};
use super::journal::{Entry as JournalEntry, Journal};
use super::read::traffic_at;
use super::{Incoming, Lent, NewEvent, Outcome, Reconciled, Recorded, SampleIn, StoreError};
use crate::clock::Millis;
use crate::fastnetmon::{Action, Scope, Traffic};
use ledger::record_ledger;

mod ledger;

/// Most notifications in one transaction. At 64 concurrent clients a group is at most 64;
/// the cap bounds one transaction's time after a stall.
const MAX_GROUP: usize = 256;
/// Jobs waiting for the recorder before callers themselves wait.
const QUEUE: usize = 4096;
/// How long the recorder keeps the write connection while work keeps coming.
const HOLD: Duration = Duration::from_millis(50);
/// How long it keeps it, idle, for the next notification (under load one comes every few tens
/// of microseconds).
const IDLE: Duration = Duration::from_millis(2);

/// A notification waiting to be recorded, and who waits for it.
type Waiting = (Box<Incoming>, oneshot::Sender<Result<Recorded, StoreError>>);

enum Job {
    Notification {
        incoming: Box<Incoming>,
        reply: oneshot::Sender<Result<Recorded, StoreError>>,
    },
    Reconciliation {
        items: Vec<Reconciled>,
        reply: oneshot::Sender<Result<Vec<Recorded>, StoreError>>,
    },
    Samples {
        samples: Vec<SampleIn>,
        history_every: Millis,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Ledger {
        writes: Vec<LedgerWrite>,
        actor: String,
        at: Millis,
        reply: oneshot::Sender<Result<Vec<i64>, StoreError>>,
    },
    /// Commit what was acknowledged through the journal, so that other connections see it.
    Flush {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// The handle through which writes reach the recorder thread.
#[derive(Clone)]
pub(super) struct Recorder {
    jobs: mpsc::Sender<Job>,
    /// Notifications were acknowledged that other connections cannot see yet (see `journal`).
    uncommitted: Arc<AtomicBool>,
}

impl Recorder {
    /// Starts the recorder thread on `pool` (the one write connection), acknowledging groups
    /// through `journal` under load when there is one, and keeping `index` (loaded first
    /// thing). The thread ends when the last `Recorder` is dropped.
    pub fn start(
        pool: SqlitePool,
        journal: Option<Journal>,
        index: Arc<BannedIndex>,
    ) -> Result<Recorder, StoreError> {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let ingest = Ingest::new(journal, index);
        let uncommitted = ingest.uncommitted.clone();
        // Its own runtime: the recorder blocks in SQLite while it writes, which must not hold
        // up a worker of the service's runtime.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Writer(e.to_string()))?;
        std::thread::Builder::new()
            .name("fnm-recorder".into())
            .spawn(move || {
                raise_priority();
                runtime.block_on(run(pool, rx, ingest))
            })
            .map_err(|e| StoreError::Writer(e.to_string()))?;
        Ok(Recorder { jobs, uncommitted })
    }

    async fn submit<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(job(reply))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Records one notification; Ok once it is durable (committed, or journaled; see
    /// `journal`).
    pub async fn notification(&self, incoming: Incoming) -> Result<Recorded, StoreError> {
        self.submit(|reply| Job::Notification {
            incoming: Box::new(incoming),
            reply,
        })
        .await
    }

    /// Returns once everything acknowledged so far is committed: what a reader on another
    /// connection must wait for to see it. Costs nothing when nothing waits for a commit.
    pub async fn settle(&self) -> Result<(), StoreError> {
        if !self.uncommitted.load(Ordering::Acquire) {
            return Ok(());
        }
        self.submit(|reply| Job::Flush { reply }).await
    }

    /// Records ban-list reconciliation in one transaction.
    pub async fn reconciliation(
        &self,
        items: Vec<Reconciled>,
    ) -> Result<Vec<Recorded>, StoreError> {
        self.submit(|reply| Job::Reconciliation { items, reply })
            .await
    }

    /// Records escalation-ledger writes in one transaction, in order; returns the ids of the
    /// rows inserted.
    pub async fn ledger(
        &self,
        writes: Vec<LedgerWrite>,
        actor: String,
        at: Millis,
    ) -> Result<Vec<i64>, StoreError> {
        self.submit(|reply| Job::Ledger {
            writes,
            actor,
            at,
            reply,
        })
        .await
    }

    /// Stores samples in one transaction (see `Store::record_live_samples`).
    pub async fn samples(
        &self,
        samples: Vec<SampleIn>,
        history_every: Millis,
    ) -> Result<(), StoreError> {
        self.submit(|reply| Job::Samples {
            samples,
            history_every,
            reply,
        })
        .await
    }
}

/// The recorder is the one serial stage of ingest: under load every request waits for it, so
/// it runs ahead of the HTTP workers when the system allows (root, or `CAP_SYS_NICE`, or a
/// `LimitNICE` in the unit); otherwise at the same priority as the rest.
fn raise_priority() {
    // SAFETY: plain system calls on the calling thread; no memory is shared with them.
    let done = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, -10)
    };
    if done != 0 {
        tracing::debug!("the recorder runs at normal priority (cannot raise it)");
    }
}

async fn run(pool: SqlitePool, mut rx: mpsc::Receiver<Job>, mut ingest: Ingest) {
    if let Err(e) = load_index(&pool, &ingest.index).await {
        tracing::warn!(error = %e, "cannot load the banned hosts into memory; they are read from the database");
    }
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut jobs, MAX_GROUP).await > 0 {
        if let Err(e) = hold(&pool, &mut rx, &mut jobs, &mut ingest).await {
            tracing::error!(error = %e, "the database is unavailable to record notifications");
            let e = e.to_string();
            for job in jobs.drain(..) {
                job.fail(StoreError::Unavailable(e.clone()));
            }
        }
    }
}

/// Borrows the write connection and does `jobs`, then what comes next, while work keeps coming:
/// a busy recorder starts its next group as soon as it has answered one, without handing the
/// connection back (and borrowing it again, two round trips to sqlx's worker thread) in
/// between. Under load (more than one job came at once) it waits up to `IDLE` for more; a lone
/// job, as when notifications come one at a time, is followed only by what is already queued,
/// so the checker's own queries on the write connection do not wait for the idle time. It lets
/// the others in after `HOLD` in any case, and commits what is open before it does.
async fn hold(
    pool: &SqlitePool,
    rx: &mut mpsc::Receiver<Job>,
    jobs: &mut Vec<Job>,
    ingest: &mut Ingest,
) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    let mut handle = conn.lock_handle().await?;
    let lent = Lent::new(&mut handle)?;
    let db = Db::new(&lent);
    let since = Instant::now();
    loop {
        // Busy: more than one job came at once, or one came while acknowledged work waits for
        // its commit (a lull within a burst, not the end of it).
        let busy = jobs.len() > 1 || ingest.open;
        work(&db, jobs, ingest, busy);
        let left = HOLD.saturating_sub(since.elapsed());
        if left.is_zero() {
            break;
        }
        // `timeout` polls `recv_many` once before it looks at the time: with no wait, this
        // takes what is queued and nothing more.
        let wait = if busy { IDLE.min(left) } else { Duration::ZERO };
        match tokio::time::timeout(wait, rx.recv_many(jobs, MAX_GROUP)).await {
            Ok(n) if n > 0 => {}
            // Idle, or every sender has gone.
            _ => break,
        }
    }
    if let Err(e) = ingest.commit(&db) {
        tracing::error!(error = %e, "cannot commit acknowledged notifications; they stay in the ingest journal");
    }
    if !ingest.index.is_valid() && !ingest.recovering() {
        reload_index(&db, &ingest.index);
    }
    Ok(())
}

/// Loads the banned-host index from the write connection (see `banned`).
async fn load_index(pool: &SqlitePool, index: &BannedIndex) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    let mut handle = conn.lock_handle().await?;
    let lent = Lent::new(&mut handle)?;
    reload_index(&Db::new(&lent), index);
    Ok(())
}

/// Reads the banned hosts on the writer's own connection, so that what it reads is everything
/// acknowledged: nothing is written meanwhile, and whatever is open in its transaction was
/// acknowledged. Left invalid (readers use the database) if the read fails.
fn reload_index(db: &Db<'_>, index: &BannedIndex) {
    match super::read::banned_hosts(db.conn) {
        Ok(banned) => {
            tracing::debug!(hosts = banned.len(), "banned hosts loaded into memory");
            index.load(banned);
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot load the banned hosts into memory; they are read from the database");
        }
    }
}

impl Job {
    fn fail(self, e: StoreError) {
        // A caller that has gone needs no answer.
        match self {
            Job::Notification { reply, .. } => drop(reply.send(Err(e))),
            Job::Reconciliation { reply, .. } => drop(reply.send(Err(e))),
            Job::Samples { reply, .. } => drop(reply.send(Err(e))),
            Job::Ledger { reply, .. } => drop(reply.send(Err(e))),
            Job::Flush { reply } => drop(reply.send(Err(e))),
        }
    }
}

/// Does `jobs`, in order: the notifications among them as groups, anything else alone, in a
/// transaction of its own once what came before it is committed.
fn work(db: &Db<'_>, jobs: &mut Vec<Job>, ingest: &mut Ingest, busy: bool) {
    let mut group = Vec::with_capacity(jobs.len());
    for job in jobs.drain(..) {
        if let Job::Notification { incoming, reply } = job {
            group.push((incoming, reply));
            continue;
        }
        record_notifications(db, &mut group, ingest, busy);
        if let Err(e) = ingest.commit(db) {
            job.fail(e);
            continue;
        }
        match job {
            Job::Reconciliation { items, reply } => {
                let items: Vec<(&Incoming, Option<&str>)> = items
                    .iter()
                    .map(|r| (&r.incoming, Some(r.reason.as_str())))
                    .collect();
                let result = record_group(db, &items);
                ingest.publish(db, result.is_ok());
                let _ = reply.send(result);
            }
            Job::Samples {
                samples,
                history_every,
                reply,
            } => {
                let result = record_samples(db, &samples, history_every);
                ingest.publish(db, result.is_ok());
                let _ = reply.send(result);
            }
            Job::Ledger {
                writes,
                actor,
                at,
                reply,
            } => {
                let _ = reply.send(record_ledger(db, &writes, &actor, at));
            }
            Job::Flush { reply } => {
                let _ = reply.send(Ok(()));
            }
            Job::Notification { .. } => {}
        }
    }
    record_notifications(db, &mut group, ingest, busy);
}

/// The write transaction notifications go into, and what it holds that was acknowledged
/// through the journal.
struct Ingest {
    /// None for a database in memory, which has nothing to be durable on.
    journal: Option<Journal>,
    /// The banned hosts in memory, kept with what is acknowledged (see `banned`).
    index: Arc<BannedIndex>,
    /// A transaction is open (`BEGIN` done, no `COMMIT` yet).
    open: bool,
    /// The notifications acknowledged in the open transaction through the journal, in order:
    /// applied again if its commit fails.
    kept: Vec<Incoming>,
    /// The last journal entry in the open transaction.
    last_seq: Option<u64>,
    uncommitted: Arc<AtomicBool>,
}

impl Ingest {
    fn new(journal: Option<Journal>, index: Arc<BannedIndex>) -> Ingest {
        Ingest {
            journal,
            index,
            open: false,
            kept: Vec::new(),
            last_seq: None,
            uncommitted: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Publishes the changes of what was just done to the banned-host index if all of it is
    /// acknowledged; otherwise something published may have been rolled back with it, and the
    /// index is loaded again at the end of the hold.
    fn publish(&self, db: &Db<'_>, acknowledged: bool) {
        let changes = db.take_changes();
        if acknowledged {
            self.index.publish(&changes);
        } else {
            self.index.invalidate();
        }
    }

    fn begin(&mut self, db: &Db<'_>) -> Result<(), StoreError> {
        if !self.open {
            db.conn.execute_batch("BEGIN IMMEDIATE")?;
            self.open = true;
        }
        Ok(())
    }

    /// Whether a group may be answered from the journal instead of a commit.
    fn journaling(&self) -> bool {
        self.journal.as_ref().is_some_and(Journal::usable)
    }

    /// Commits the open transaction, if any. If that fails, what the journal acknowledged in it
    /// is applied again in a transaction of its own; until that succeeds nothing else is
    /// recorded (the order of notifications is the order of their outcomes).
    fn commit(&mut self, db: &Db<'_>) -> Result<(), StoreError> {
        if let Err(e) = self.commit_open(db) {
            if !self.recovering() {
                return Err(e);
            }
            tracing::warn!(error = %e, notifications = self.kept.len(), "committing acknowledged notifications failed; applying them again");
        }
        self.reapply_if_needed(db)
    }

    /// A commit failed (or the open transaction was rolled back) with notifications in it that
    /// were acknowledged through the journal: they must be applied again before anything else
    /// is recorded.
    fn recovering(&self) -> bool {
        !self.open && !self.kept.is_empty()
    }

    /// Commits the open transaction, if any; if that fails, rolls it back, and what the journal
    /// acknowledged in it is to be applied again (`recovering`).
    fn commit_open(&mut self, db: &Db<'_>) -> Result<(), StoreError> {
        if !self.open {
            return Ok(());
        }
        self.open = false;
        let done = self.mark_applied(db).and_then(|()| {
            db.conn.execute_batch("COMMIT")?;
            Ok(())
        });
        match done {
            Ok(()) => {
                self.committed();
                Ok(())
            }
            Err(e) => {
                rollback(db);
                Err(e)
            }
        }
    }

    /// Applies `kept` again, alone, and commits.
    fn reapply(&mut self, db: &Db<'_>) -> Result<(), StoreError> {
        let done = (|| {
            db.conn.execute_batch("BEGIN IMMEDIATE")?;
            for inc in &self.kept {
                record_one(db, inc, None)?;
            }
            self.mark_applied(db)?;
            db.conn.execute_batch("COMMIT")?;
            Ok::<(), StoreError>(())
        })();
        // Their changes reached the banned-host index when they were acknowledged; none of
        // these (a replay, or a failed and rolled-back one) is news to it.
        db.take_changes();
        match done {
            Ok(()) => {
                tracing::info!(
                    notifications = self.kept.len(),
                    "acknowledged notifications committed on a second attempt"
                );
                self.committed();
                Ok(())
            }
            Err(e) => {
                rollback(db);
                Err(StoreError::Unavailable(format!(
                    "{} acknowledged notifications wait to be committed: {e}",
                    self.kept.len()
                )))
            }
        }
    }

    /// Rolls back the open transaction after a failure; what the journal acknowledged in it
    /// is to be applied again.
    fn abandon(&mut self, db: &Db<'_>) {
        rollback(db);
        self.open = false;
    }

    fn reapply_if_needed(&mut self, db: &Db<'_>) -> Result<(), StoreError> {
        if self.recovering() {
            self.reapply(db)
        } else {
            Ok(())
        }
    }

    fn mark_applied(&self, db: &Db<'_>) -> Result<(), StoreError> {
        if let Some(seq) = self.last_seq {
            db.stmt("UPDATE journal_applied SET seq = ? WHERE id = 1")?
                .execute([sql_u64(seq)])?;
        }
        Ok(())
    }

    fn committed(&mut self) {
        if self.last_seq.take().is_some() {
            self.kept.clear();
            if let Some(j) = &mut self.journal {
                j.clear();
            }
        }
        self.uncommitted.store(false, Ordering::Release);
    }
}

fn rollback(db: &Db<'_>) {
    if !db.conn.is_autocommit() {
        if let Err(e) = db.conn.execute_batch("ROLLBACK") {
            tracing::error!(error = %e, "cannot roll back a failed transaction");
        }
    }
}

/// Records the waiting notifications as one group and answers each caller. A lone group (the
/// recorder is not busy) is committed before its answer; under load a group is answered once
/// it is in the journal, and committed with those that follow it (at the end of the `hold`, or
/// before anything other than a notification).
fn record_notifications(db: &Db<'_>, group: &mut Vec<Waiting>, ingest: &mut Ingest, busy: bool) {
    if group.is_empty() {
        return;
    }
    let results = ingest
        .reapply_if_needed(db)
        .and_then(|()| ingest.begin(db))
        .map(|()| record_in_open(db, group, ingest, busy));
    let results = match results {
        Ok(r) => r,
        Err(e) => {
            let e = e.to_string();
            group
                .iter()
                .map(|_| Err(StoreError::Unavailable(e.clone())))
                .collect()
        }
    };
    let journaled = results.iter().any(|r| r.is_ok()) && ingest.open;
    // Before the answers: a caller that hears its ban is recorded finds it in the index.
    ingest.publish(db, results.iter().all(|r| r.is_ok()));
    for ((incoming, reply), result) in group.drain(..).zip(results) {
        let ok = result.is_ok();
        // The caller may have gone (the client hung up): the notification is stored anyway,
        // and a redelivery with its idempotency key is a no-op.
        let _ = reply.send(result);
        if ok && journaled {
            ingest.kept.push(*incoming);
        }
    }
}

/// Applies the group in the open transaction and makes it durable: by a commit, or under load
/// by the journal. One result per notification. (No savepoint per group: SQLite would copy
/// every page a group first touches into its statement journal, a fifth of the recorder's
/// time. A failure, which is rare, rolls back what is open and applies the journaled part
/// again instead.)
fn record_in_open(
    db: &Db<'_>,
    group: &[Waiting],
    ingest: &mut Ingest,
    busy: bool,
) -> Vec<Result<Recorded, StoreError>> {
    let items: Vec<(&Incoming, Option<&str>)> = group.iter().map(|(i, _)| (&**i, None)).collect();
    let all_fail = |e: &StoreError| -> Vec<Result<Recorded, StoreError>> {
        let e = e.to_string();
        items
            .iter()
            .map(|_| Err(StoreError::Unavailable(e.clone())))
            .collect()
    };
    let recorded = match record_items(db, &items) {
        Ok(recorded) => recorded,
        Err(e) => {
            ingest.abandon(db);
            if let Err(e) = ingest.reapply_if_needed(db) {
                return all_fail(&e);
            }
            if items.len() == 1 {
                return vec![Err(e)];
            }
            tracing::warn!(
                error = %e,
                notifications = items.len(),
                "recording a group of notifications failed; recording them one by one"
            );
            return items
                .iter()
                .map(|item| record_group(db, std::slice::from_ref(item)).map(|mut r| r.remove(0)))
                .collect();
        }
    };
    let journal = if busy && ingest.journaling() {
        ingest.journal.as_mut()
    } else {
        None
    };
    let Some(journal) = journal else {
        // Committed before the answer: this group, and whatever was journaled before it.
        return match ingest.commit_open(db) {
            Ok(()) => recorded.into_iter().map(Ok).collect(),
            Err(e) => {
                // This group was not acknowledged: it fails. What was journaled before it is
                // applied again.
                let out = all_fail(&e);
                if let Err(e) = ingest.reapply_if_needed(db) {
                    tracing::error!(error = %e, "cannot commit acknowledged notifications; they stay in the ingest journal");
                }
                out
            }
        };
    };
    match journal.append(group.iter().map(|(i, _)| &**i)) {
        Ok(seq) => {
            ingest.last_seq = Some(seq);
            ingest.uncommitted.store(true, Ordering::Release);
            recorded.into_iter().map(Ok).collect()
        }
        Err(e) => {
            // Not durable, so not done: the group's rows go (with what is open), and its
            // callers hear why; what was journaled before it is applied again.
            tracing::error!(error = %e, "cannot journal notifications");
            let out = all_fail(&e);
            ingest.abandon(db);
            if let Err(e) = ingest.reapply_if_needed(db) {
                tracing::error!(error = %e, "cannot commit acknowledged notifications; they stay in the ingest journal");
            }
            out
        }
    }
}

/// Applies the journal's entries past the last one committed (those a stop left uncommitted),
/// in order, in one transaction, and stores the last number. Returns how many were applied
/// and the highest number seen.
pub(super) async fn replay(
    pool: &SqlitePool,
    entries: &[JournalEntry],
) -> Result<(usize, u64), StoreError> {
    let mut conn = pool.acquire().await?;
    let mut handle = conn.lock_handle().await?;
    let lent = Lent::new(&mut handle)?;
    let db = Db::new(&lent);
    let applied: i64 = db
        .stmt("SELECT seq FROM journal_applied WHERE id = 1")?
        .query_row([], |r| r.get(0))?;
    let applied = u64::try_from(applied).unwrap_or(0);
    let last = entries.iter().map(|e| e.seq).fold(applied, u64::max);
    let todo: Vec<&JournalEntry> = entries.iter().filter(|e| e.seq > applied).collect();
    if todo.is_empty() {
        return Ok((0, last));
    }
    let tx = rusqlite::Transaction::new_unchecked(db.conn, TransactionBehavior::Immediate)?;
    for e in &todo {
        record_one(&db, &e.incoming, None)?;
    }
    db.stmt("UPDATE journal_applied SET seq = ? WHERE id = 1")?
        .execute([sql_u64(last)])?;
    tx.commit()?;
    Ok((todo.len(), last))
}

fn record_samples(
    db: &Db<'_>,
    samples: &[SampleIn],
    history_every: Millis,
) -> Result<(), StoreError> {
    let tx = rusqlite::Transaction::new_unchecked(db.conn, TransactionBehavior::Immediate)?;
    for s in samples {
        insert_sample(db, s, history_every)?;
    }
    tx.commit()?;
    Ok(())
}

/// Runs `f` on the write connection's SQLite handle, borrowed from sqlx.
#[cfg(test)]
async fn with_db<T>(pool: &SqlitePool, f: impl FnOnce(&Db<'_>) -> T) -> Result<T, StoreError> {
    let mut conn = pool.acquire().await?;
    let mut handle = conn.lock_handle().await?;
    let lent = Lent::new(&mut handle)?;
    let db = Db::new(&lent);
    let out = f(&db);
    Ok(out)
}

/// The borrowed connection, with the statements prepared on it so far (each is prepared once
/// per use of the connection, however many notifications it then records).
struct Db<'c> {
    conn: &'c Connection,
    /// By the address of their SQL text: every statement here is a `&'static str`.
    prepared: RefCell<HashMap<usize, Statement<'c>>>,
    /// What the statements run since the last `take_changes` did to the banned hosts.
    changes: RefCell<Vec<Change>>,
}

impl<'c> Db<'c> {
    fn new(conn: &'c Connection) -> Db<'c> {
        Db {
            conn,
            prepared: RefCell::new(HashMap::new()),
            changes: RefCell::new(Vec::new()),
        }
    }

    fn note(&self, change: Change) {
        self.changes.borrow_mut().push(change);
    }

    fn take_changes(&self) -> Vec<Change> {
        std::mem::take(&mut *self.changes.borrow_mut())
    }

    fn stmt(&self, sql: &'static str) -> Result<RefMut<'_, Statement<'c>>, StoreError> {
        let key = sql.as_ptr() as usize;
        let mut prepared = self
            .prepared
            .try_borrow_mut()
            .map_err(|_| StoreError::Corrupt("statement used twice at once".into()))?;
        if let Entry::Vacant(slot) = prepared.entry(key) {
            slot.insert(self.conn.prepare(sql)?);
        }
        RefMut::filter_map(prepared, |p| p.get_mut(&key))
            .map_err(|_| StoreError::Corrupt("prepared statement lost".into()))
    }
}

/// Records `items` (a notification, and why when it comes from ban-list reconciliation) in one
/// transaction, in order; one `Recorded` per item.
fn record_group(
    db: &Db<'_>,
    items: &[(&Incoming, Option<&str>)],
) -> Result<Vec<Recorded>, StoreError> {
    let tx = rusqlite::Transaction::new_unchecked(db.conn, TransactionBehavior::Immediate)?;
    let out = record_items(db, items)?;
    tx.commit()?;
    Ok(out)
}

/// Records `items` in order, inside the caller's transaction.
fn record_items(
    db: &Db<'_>,
    items: &[(&Incoming, Option<&str>)],
) -> Result<Vec<Recorded>, StoreError> {
    let mut out = Vec::with_capacity(items.len());
    for (incoming, reason) in items {
        out.push(record_one(db, incoming, *reason)?);
    }
    Ok(out)
}

/// One notification, inside the caller's transaction. A known idempotency key writes nothing
/// and answers `Duplicate`.
fn record_one(db: &Db<'_>, inc: &Incoming, reason: Option<&str>) -> Result<Recorded, StoreError> {
    if let Some(key) = &inc.idempotency_key {
        let seen: Option<i64> = db
            .stmt("SELECT id FROM notifications WHERE idempotency_key = ?")?
            .query_row([key], |r| r.get(0))
            .optional()?;
        if let Some(id) = seen {
            return Ok(Recorded {
                id: Some(id),
                outcome: Outcome::Duplicate,
                wake_checker: false,
            });
        }
    }
    let n = &inc.notification;
    let ip = match &n.scope {
        Scope::Host { ip } => Some(*ip),
        Scope::Hostgroup { .. } => None,
    };
    // The address as stored, formatted once for every row that has it.
    let ip_s = ip.map(|i| i.to_string());
    let outcome = match (ip, &ip_s) {
        (Some(ip), Some(ip_s)) if is_host_action(n.action) => apply_to_host(db, inc, ip, ip_s)?,
        _ => Outcome::RecordedOnly,
    };
    let mut wake = matches!(outcome, Outcome::Banned | Outcome::Unbanned);
    // Traffic at detection time is a sample like any other for the decision; attack_status
    // does not refresh it (FastNetMon sends the detection-time figures again) and unban
    // carries none. It has no history row: the figures are in the notification's own row and
    // its audit event already, and a burst of bans paid for a third copy of each.
    if let (Some(ip), Some(ip_s), Some(traffic)) = (ip, &ip_s, n.traffic) {
        if matches!(n.action, Action::Ban | Action::AttackDetails) && outcome != Outcome::Stale {
            upsert_latest(db, ip, ip_s, inc.observed_at, "notification", traffic)?;
            wake = true;
        }
    }
    let scope = match &n.scope {
        Scope::Host { .. } => "host",
        Scope::Hostgroup { .. } => "hostgroup",
    };
    // The id from the connection, not `RETURNING`: SQLite runs a RETURNING statement to its
    // end into a temporary b-tree, with a statement journal, before it yields the row: 2.9-3.4
    // against 1.1-1.5 us for this insert alone.
    db.stmt(
        "INSERT INTO notifications (received_at, observed_at, idempotency_key, source, actor,
             action, scope, ip, attack_uuid, outcome, payload)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        inc.received_at,
        inc.observed_at,
        inc.idempotency_key,
        inc.source,
        inc.actor,
        n.action.as_str(),
        scope,
        ip_s,
        n.attack_uuid,
        outcome.as_str(),
        inc.payload,
    ])?;
    let id = db.conn.last_insert_rowid();
    let (message, detail) = notification_event(inc, id, outcome);
    insert_event_row(
        db,
        inc.received_at,
        &inc.actor,
        "notification",
        ip_s.as_deref(),
        None,
        &message,
        Some(&detail),
    )?;
    if let Some(reason) = reason {
        if matches!(outcome, Outcome::Banned | Outcome::Unbanned) {
            insert_event(db, &reconcile_event(inc, id, outcome, ip_s, reason))?;
        }
    }
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

/// The host's last-writer-wins register (keyed by observation time) and its ban episode.
fn apply_to_host(
    db: &Db<'_>,
    inc: &Incoming,
    ip: IpAddr,
    ip_s: &str,
) -> Result<Outcome, StoreError> {
    let n = &inc.notification;
    let t = inc.observed_at;
    let host: Option<(String, Millis)> = db
        .stmt("SELECT state, state_at FROM hosts WHERE ip = ?")?
        .query_row([ip_s], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let banning = n.action != Action::Unban;
    let outcome = match &host {
        Some((state, at)) if t < *at && (state == "banned") != banning => Outcome::Stale,
        Some((state, _)) if banning && state == "banned" => Outcome::AlreadyBanned,
        _ if banning => Outcome::Banned,
        Some((state, _)) if state == "banned" => Outcome::Unbanned,
        _ => Outcome::NotBanned,
    };
    let now = inc.received_at;
    match outcome {
        Outcome::Banned => {
            if host.is_none() {
                db.stmt(
                    "INSERT INTO hosts (ip, family, state, state_at, banned_at, attack_uuid,
                         direction, source, first_seen_at, updated_at)
                     VALUES (?, ?, 'banned', ?, ?, ?, ?, ?, ?, ?)",
                )?
                .execute(params![
                    ip_s,
                    family(ip),
                    t,
                    t,
                    n.attack_uuid,
                    n.direction,
                    inc.source,
                    now,
                    now
                ])?;
            } else {
                db.stmt(
                    "UPDATE hosts SET state = 'banned', state_at = ?, banned_at = ?,
                         attack_uuid = ?, direction = ?, source = ?, updated_at = ?
                     WHERE ip = ?",
                )?
                .execute(params![
                    t,
                    t,
                    n.attack_uuid,
                    n.direction,
                    inc.source,
                    now,
                    ip_s
                ])?;
            }
            db.note(Change::Banned { ip, since: t });
            // A sample from before the ban (a push, a poll) is the host's newest until a newer
            // one comes.
            if let Some((at, traffic)) = latest_sample(db, ip_s)? {
                db.note(Change::Sample { ip, at, traffic });
            }
            db.stmt(
                "INSERT INTO ban_episodes (ip, started_at, attack_uuid, attack_type, protocol,
                     direction, severity, source)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![
                ip_s,
                t,
                n.attack_uuid,
                n.attack_type,
                n.protocol,
                n.direction,
                n.severity,
                inc.source
            ])?;
        }
        Outcome::AlreadyBanned => {
            // Fill in what the first notification lacked (Community's text ban has no uuid;
            // attack_details brings the attack type), and keep the newest observation time.
            db.stmt(
                "UPDATE hosts SET state_at = MAX(state_at, ?), attack_uuid = COALESCE(attack_uuid, ?),
                     direction = COALESCE(direction, ?), updated_at = ?
                 WHERE ip = ?",
            )?
            .execute(params![t, n.attack_uuid, n.direction, now, ip_s])?;
            db.stmt(
                "UPDATE ban_episodes SET notifications = notifications + 1,
                     attack_uuid = COALESCE(attack_uuid, ?), attack_type = COALESCE(attack_type, ?),
                     protocol = COALESCE(protocol, ?), direction = COALESCE(direction, ?),
                     severity = COALESCE(severity, ?)
                 WHERE ip = ? AND ended_at IS NULL",
            )?
            .execute(params![
                n.attack_uuid,
                n.attack_type,
                n.protocol,
                n.direction,
                n.severity,
                ip_s
            ])?;
        }
        Outcome::Unbanned => {
            db.stmt(
                "UPDATE hosts SET state = 'unbanned', state_at = ?, unbanned_at = ?, updated_at = ?
                 WHERE ip = ?",
            )?
            .execute(params![t, t, now, ip_s])?;
            db.note(Change::Unbanned { ip });
            db.stmt(
                "UPDATE ban_episodes SET ended_at = ?, end_reason = ?
                 WHERE ip = ? AND ended_at IS NULL",
            )?
            .execute(params![t, format!("unban ({})", inc.source), ip_s])?;
        }
        Outcome::NotBanned => {
            if host.is_none() {
                db.stmt(
                    "INSERT INTO hosts (ip, family, state, state_at, unbanned_at, source,
                         first_seen_at, updated_at)
                     VALUES (?, ?, 'unbanned', ?, ?, ?, ?, ?)",
                )?
                .execute(params![ip_s, family(ip), t, t, inc.source, now, now])?;
            } else {
                db.stmt("UPDATE hosts SET state_at = MAX(state_at, ?) WHERE ip = ?")?
                    .execute(params![t, ip_s])?;
            }
        }
        Outcome::Stale | Outcome::RecordedOnly | Outcome::Duplicate => {}
    }
    Ok(outcome)
}

/// Upserts the host's newest sample (an older one never replaces it); adds a history row
/// unless one of the host is younger than `history_every` ms (0: always).
fn insert_sample(db: &Db<'_>, s: &SampleIn, history_every: Millis) -> Result<(), StoreError> {
    let ip = s.ip.to_string();
    let keep = if history_every <= 0 {
        true
    } else {
        let last: Option<Millis> = db
            .stmt("SELECT MAX(at) FROM traffic_samples WHERE ip = ?")?
            .query_row([&ip], |r| r.get(0))?;
        last.is_none_or(|last| s.at - last >= history_every)
    };
    if keep {
        let tr = s.traffic;
        db.stmt(
            "INSERT INTO traffic_samples (ip, at, source, in_bps, out_bps, in_pps, out_pps)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )?
        .execute(params![
            ip,
            s.at,
            s.source,
            sql_u64(tr.in_bps),
            sql_u64(tr.out_bps),
            sql_u64(tr.in_pps),
            sql_u64(tr.out_pps)
        ])?;
    }
    upsert_latest(db, s.ip, &ip, s.at, &s.source, s.traffic)
}

/// Upserts the host's newest sample (`ip_s` is `ip` as stored); an older one never replaces it.
fn upsert_latest(
    db: &Db<'_>,
    ip: IpAddr,
    ip_s: &str,
    at: Millis,
    source: &str,
    tr: Traffic,
) -> Result<(), StoreError> {
    db.stmt(
        "INSERT INTO latest_samples (ip, at, source, in_bps, out_bps, in_pps, out_pps)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (ip) DO UPDATE SET at = ?2, source = ?3, in_bps = ?4, out_bps = ?5,
             in_pps = ?6, out_pps = ?7
         WHERE excluded.at >= latest_samples.at",
    )?
    .execute(params![
        ip_s,
        at,
        source,
        sql_u64(tr.in_bps),
        sql_u64(tr.out_bps),
        sql_u64(tr.in_pps),
        sql_u64(tr.out_pps)
    ])?;
    db.note(Change::Sample {
        ip,
        at,
        traffic: tr,
    });
    Ok(())
}

/// The host's newest sample, if it has one.
fn latest_sample(db: &Db<'_>, ip_s: &str) -> Result<Option<(Millis, Traffic)>, StoreError> {
    Ok(db
        .stmt("SELECT at, in_bps, out_bps, in_pps, out_pps FROM latest_samples WHERE ip = ?")?
        .query_row([ip_s], |r| Ok((r.get(0)?, traffic_at(r, 1)?)))
        .optional()?)
}

fn insert_event(db: &Db<'_>, e: &NewEvent) -> Result<(), StoreError> {
    insert_event_row(
        db,
        e.at,
        &e.actor,
        &e.kind,
        e.ip.as_deref(),
        e.prefix.as_deref(),
        &e.message,
        e.detail.as_ref().map(|d| d.to_string()).as_deref(),
    )
}

#[allow(clippy::too_many_arguments)] // one per column
fn insert_event_row(
    db: &Db<'_>,
    at: Millis,
    actor: &str,
    kind: &str,
    ip: Option<&str>,
    prefix: Option<&str>,
    message: &str,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    db.stmt(
        "INSERT INTO events (at, actor, kind, ip, prefix, message, detail)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![at, actor, kind, ip, prefix, message, detail])?;
    Ok(())
}

/// The audit event of a notification: its message and detail (JSON text, serialized straight
/// from the notification: building and dropping a `serde_json::Value` for it took about 5% of
/// the recorder's time under a burst of bans).
fn notification_event(inc: &Incoming, id: i64, outcome: Outcome) -> (String, String) {
    use std::fmt::Write as _;
    let n = &inc.notification;
    let mut message = String::with_capacity(64);
    // Writing to a String cannot fail.
    let _ = match &n.scope {
        Scope::Host { ip } => write!(message, "{} {ip}", n.action.as_str()),
        Scope::Hostgroup { name, .. } => write!(message, "{} hostgroup {name}", n.action.as_str()),
    };
    if let Some(d) = &n.direction {
        let _ = write!(message, " ({d}");
        if let Some(t) = &n.attack_type {
            let _ = write!(message, ", {t}");
        }
        message.push(')');
    }
    let _ = write!(message, ": {}", outcome.as_str());
    /// The fields the map built here before had, in its order (by name).
    #[derive(serde::Serialize)]
    struct Detail<'a> {
        attack_uuid: &'a Option<String>,
        flow_spec_rules: Option<&'a Vec<String>>,
        networks: Option<Vec<String>>,
        notification_id: i64,
        outcome: Outcome,
        source: &'a str,
        traffic: &'a Option<Traffic>,
    }
    let detail = Detail {
        attack_uuid: &n.attack_uuid,
        flow_spec_rules: Some(&n.flow_spec_rules).filter(|r| !r.is_empty()),
        networks: match &n.scope {
            Scope::Hostgroup { networks, .. } => {
                Some(networks.iter().map(|n| n.to_string()).collect())
            }
            Scope::Host { .. } => None,
        },
        notification_id: id,
        outcome,
        source: &inc.source,
        traffic: &n.traffic,
    };
    // Plain data with string keys: serializing it cannot fail.
    let detail = serde_json::to_string(&detail).unwrap_or_else(|_| "null".into());
    (message, detail)
}

fn reconcile_event(
    inc: &Incoming,
    id: i64,
    outcome: Outcome,
    ip: Option<String>,
    reason: &str,
) -> NewEvent {
    NewEvent {
        at: inc.received_at,
        actor: inc.actor.clone(),
        kind: "reconcile".into(),
        message: format!(
            "{} {}: {}",
            inc.notification.action.as_str(),
            ip.as_deref().unwrap_or("-"),
            reason
        ),
        ip,
        prefix: None,
        detail: Some(serde_json::json!({
            "notification_id": id,
            "outcome": outcome,
            "source": inc.source,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn note(ip: &str, action: &str, at: Millis, key: Option<&str>) -> Incoming {
        let body = serde_json::json!({
            "ip": ip, "action": action, "alert_scope": "host",
            "attack_details": { "total_incoming_traffic": 1000, "total_incoming_pps": 10 }
        })
        .to_string();
        crate::store::incoming(&body, at, key)
    }

    /// The notification's audit event as it was built before (a `json!` map, a `format!`ed
    /// message), for the real samples: the direct form must store the same message and document.
    #[test]
    fn notification_events_read_as_they_did() {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/advanced");
        for name in [
            "ban_host.json",
            "ban_hostgroup.json",
            "partial_block.json",
            "partial_unblock.json",
        ] {
            let body = std::fs::read_to_string(dir.join(name)).expect("fixture");
            let inc = crate::store::incoming(&body, 5, None);
            let n = &inc.notification;
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
            message.push_str(&format!(": {}", Outcome::Banned.as_str()));
            let detail = serde_json::json!({
                "notification_id": 42,
                "source": inc.source,
                "outcome": Outcome::Banned,
                "attack_uuid": n.attack_uuid,
                "traffic": n.traffic,
                "networks": match &n.scope {
                    Scope::Hostgroup { networks, .. } => Some(networks.iter().map(|n| n.to_string()).collect::<Vec<_>>()),
                    Scope::Host { .. } => None,
                },
                "flow_spec_rules": if n.flow_spec_rules.is_empty() { None } else { Some(&n.flow_spec_rules) },
            });
            let (m, d) = notification_event(&inc, 42, Outcome::Banned);
            assert_eq!(m, message, "{name}");
            // The same document (the API reads it back into a map, so key order is moot).
            let d: serde_json::Value = serde_json::from_str(&d).expect("detail is JSON");
            assert_eq!(d, detail, "{name}");
        }
    }

    type HostDump = (String, String, i64, Option<i64>, Option<i64>);
    type EpisodeDump = (String, i64, Option<i64>, i64, Option<String>);

    /// Everything a notification writes, comparable between stores.
    async fn dump(store: &Store) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let rows: Vec<HostDump> = sqlx::query_as(
            "SELECT ip, state, state_at, banned_at, unbanned_at FROM hosts ORDER BY ip",
        )
        .fetch_all(&store.read)
        .await
        .expect("hosts");
        out.extend(rows.iter().map(|r| format!("host {r:?}")));
        let rows: Vec<EpisodeDump> = sqlx::query_as(
            "SELECT ip, started_at, ended_at, notifications, end_reason FROM ban_episodes
             ORDER BY id",
        )
        .fetch_all(&store.read)
        .await
        .expect("episodes");
        out.extend(rows.iter().map(|r| format!("episode {r:?}")));
        let rows: Vec<(i64, Option<String>, String)> =
            sqlx::query_as("SELECT id, idempotency_key, outcome FROM notifications ORDER BY id")
                .fetch_all(&store.read)
                .await
                .expect("notifications");
        out.extend(rows.iter().map(|r| format!("notification {r:?}")));
        let rows: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT message, detail FROM events ORDER BY id")
                .fetch_all(&store.read)
                .await
                .expect("events");
        out.extend(rows.iter().map(|r| format!("event {r:?}")));
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT ip, at FROM latest_samples ORDER BY ip")
                .fetch_all(&store.read)
                .await
                .expect("samples");
        out.extend(rows.iter().map(|r| format!("sample {r:?}")));
        out
    }

    /// Bans, repeats, late (stale) deliveries, redeliveries and unbans of a few hosts.
    fn history() -> Vec<Incoming> {
        let mut v = Vec::new();
        for round in 0..3i64 {
            for h in 0..4 {
                let ip = format!("10.1.0.{h}");
                let t = 1_000_000 + round * 10_000 + h * 100;
                v.push(note(&ip, "ban", t, Some(&format!("b{round}{h}"))));
                v.push(note(&ip, "ban", t + 1, None));
                v.push(note(&ip, "ban", t, Some(&format!("b{round}{h}"))));
                v.push(note(&ip, "unban", t - 5_000, None));
                if h % 2 == 0 {
                    v.push(note(&ip, "unban", t + 5_000, Some(&format!("u{round}{h}"))));
                }
            }
        }
        v
    }

    #[tokio::test]
    async fn a_group_ends_where_one_transaction_each_would() {
        let (_d1, grouped) = crate::store::open_temp().await;
        let (_d2, single) = crate::store::open_temp().await;
        let notes = history();
        let items: Vec<(&Incoming, Option<&str>)> = notes.iter().map(|n| (n, None)).collect();
        let together = with_db(&grouped.write, |db| record_group(db, &items))
            .await
            .expect("lock")
            .expect("group");
        let mut alone = Vec::new();
        for item in &items {
            let one = with_db(&single.write, |db| {
                record_group(db, std::slice::from_ref(item))
            })
            .await
            .expect("lock")
            .expect("one");
            alone.extend(one);
        }
        let outcomes = |r: &[Recorded]| r.iter().map(|r| (r.id, r.outcome)).collect::<Vec<_>>();
        assert_eq!(outcomes(&together), outcomes(&alone));
        assert!(together.iter().any(|r| r.outcome == Outcome::Duplicate));
        assert!(together.iter().any(|r| r.outcome == Outcome::Stale));
        assert_eq!(dump(&grouped).await, dump(&single).await);
    }

    /// A journal at `path` (standing in for the service's), numbering from 1.
    fn side_journal(path: &std::path::Path) -> Journal {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("side journal");
        Journal::create(path, file, 1).expect("journal")
    }

    /// A group of bans (observed at 10) waiting for the recorder, and their answers.
    fn waiting_bans(
        ips: &[&str],
    ) -> (
        Vec<Waiting>,
        Vec<oneshot::Receiver<Result<Recorded, StoreError>>>,
    ) {
        let mut group: Vec<Waiting> = Vec::new();
        let mut answers = Vec::new();
        for ip in ips {
            let (reply, answer) = oneshot::channel();
            group.push((Box::new(note(ip, "ban", 10, None)), reply));
            answers.push(answer);
        }
        (group, answers)
    }

    #[tokio::test]
    async fn a_failing_notification_fails_alone() {
        // Committed before the answers, and (under load) answered from the journal.
        for journaled in [false, true] {
            let (dir, store) = crate::store::open_temp().await;
            // An inconsistency the ban of 10.9.9.9 cannot be recorded over: an open episode of a
            // host that is not banned (the one-open-episode index refuses a second).
            sqlx::query(
                "INSERT INTO hosts (ip, family, state, state_at, source, first_seen_at, updated_at)
                 VALUES ('10.9.9.9', 4, 'unbanned', 1, 'test', 1, 1);
                 INSERT INTO ban_episodes (ip, started_at, source) VALUES ('10.9.9.9', 1, 'test');",
            )
            .execute(&store.write)
            .await
            .expect("seed");
            let journal = journaled.then(|| side_journal(&dir.path().join("side")));
            let index = Arc::new(BannedIndex::default());
            index.load(Vec::new());
            let mut ingest = Ingest::new(journal, index.clone());
            let (mut group, answers) = waiting_bans(&["10.2.0.1", "10.9.9.9", "10.2.0.2"]);
            with_db(&store.write, |db| {
                record_notifications(db, &mut group, &mut ingest, journaled);
                // A failed group is recorded one by one, each committed: nothing waits in the
                // journal.
                assert_eq!(ingest.kept.len(), 0);
                ingest.commit(db).expect("commit");
            })
            .await
            .expect("lock");
            // What was rolled back may have been published: the index is to be loaded again.
            assert!(!index.is_valid());
            let mut results = Vec::new();
            for a in answers {
                results.push(a.await.expect("answered"));
            }
            assert_eq!(
                results[0].as_ref().map(|r| r.outcome).ok(),
                Some(Outcome::Banned)
            );
            assert!(results[1].is_err(), "{:?}", results[1]);
            assert_eq!(
                results[2].as_ref().map(|r| r.outcome).ok(),
                Some(Outcome::Banned)
            );
            assert_eq!(store.count_notifications().await.expect("count"), 2);
            if journaled {
                let side = Journal::read(&dir.path().join("side")).expect("read");
                assert!(side.is_empty(), "nothing journaled for a failed group");
            }
        }
    }

    #[tokio::test]
    async fn concurrent_redeliveries_are_stored_once() {
        let (_d, store) = crate::store::open_temp().await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..200 {
            let store = store.clone();
            tasks.spawn(async move {
                // 20 keys, each delivered 5 times at once, among 100 other hosts' bans.
                let k = (i / 2) % 20;
                let n = if i % 2 == 0 {
                    note(&format!("10.3.0.{k}"), "ban", 5, Some(&format!("k{k}")))
                } else {
                    note(&format!("10.4.0.{i}"), "ban", 5, None)
                };
                store.record_notification(n).await.expect("recorded")
            });
        }
        let mut ids = std::collections::HashMap::<i64, usize>::new();
        let mut duplicates = 0;
        while let Some(r) = tasks.join_next().await {
            let r = r.expect("task");
            if r.outcome == Outcome::Duplicate {
                duplicates += 1;
            }
            *ids.entry(r.id.expect("id")).or_default() += 1;
        }
        assert_eq!(duplicates, 80);
        assert_eq!(store.count_notifications().await.expect("count"), 120);
        assert_eq!(ids.len(), 120);
    }

    /// A group answered from the journal whose transaction was lost (the service killed before
    /// its commit) is applied at the next start; entries committed already are not applied twice.
    #[tokio::test]
    async fn journaled_notifications_survive_a_lost_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let db_path = path.to_str().expect("path").to_string();
        let journal_path = Journal::path_for(&path);
        let store = Store::open(&db_path).await.expect("open");
        // Another journal file stands in for the service's: this one is written and never
        // committed, as if the process had died after the answers.
        let side = dir.path().join("side");
        let mut ingest = Ingest::new(Some(side_journal(&side)), Arc::default());
        let (mut group, answers) = waiting_bans(&["10.3.0.1", "10.3.0.2", "10.3.0.3"]);
        with_db(&store.write, |db| {
            record_notifications(db, &mut group, &mut ingest, true);
            assert!(ingest.open, "answered before the commit");
            assert_eq!(ingest.kept.len(), 3);
            rollback(db);
        })
        .await
        .expect("lock");
        let mut ids = Vec::new();
        for a in answers {
            let r = a.await.expect("answered").expect("acknowledged");
            assert_eq!(r.outcome, Outcome::Banned);
            ids.push(r.id);
        }
        assert_eq!(store.count_notifications().await.expect("count"), 0);
        drop(ingest);
        store.close().await;
        drop(store);
        std::fs::copy(&side, &journal_path).expect("copy");

        let store = Store::open(&db_path).await.expect("reopen");
        assert_eq!(store.count_notifications().await.expect("count"), 3);
        for ip in ["10.3.0.1", "10.3.0.2", "10.3.0.3"] {
            let host = store.get_host(ip.parse().expect("ip")).await.expect("read");
            assert_eq!(host.map(|h| h.state), Some("banned".to_string()), "{ip}");
        }
        // The banned hosts in memory are loaded after the replay, so they are there too.
        let mut loaded = None;
        for _ in 0..200 {
            loaded = store.banned.snapshot();
            if loaded.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let loaded: Vec<String> = loaded
            .expect("loaded within 2 s")
            .iter()
            .map(|b| b.ip.to_string())
            .collect();
        assert_eq!(loaded, ["10.3.0.1", "10.3.0.2", "10.3.0.3"]);
        let stored: Vec<i64> = sqlx::query_scalar("SELECT id FROM notifications ORDER BY id")
            .fetch_all(&store.read)
            .await
            .expect("ids");
        assert_eq!(ids, stored.into_iter().map(Some).collect::<Vec<_>>());
        assert_eq!(
            std::fs::metadata(&journal_path).expect("journal").len(),
            0,
            "emptied once applied"
        );
        store.close().await;
        drop(store);
        // The same entries again, as if the file had not been emptied after their commit: they
        // are skipped.
        std::fs::copy(&side, &journal_path).expect("copy");
        let store = Store::open(&db_path).await.expect("reopen");
        assert_eq!(store.count_notifications().await.expect("count"), 3);
    }

    /// Under load (a busy recorder) groups are answered from the journal; what was answered is
    /// visible to every reader once `settle` returns, and committed.
    #[tokio::test]
    async fn a_busy_recorder_answers_from_the_journal_and_settles_for_readers() {
        let (_d, store) = crate::store::open_temp().await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..400u32 {
            let store = store.clone();
            tasks.spawn(async move {
                let ip = format!("10.4.{}.{}", i / 200, i % 200 + 1);
                store
                    .record_notification(note(&ip, "ban", 10, None))
                    .await
                    .map(|r| r.outcome)
            });
        }
        let mut banned = 0;
        while let Some(r) = tasks.join_next().await {
            assert_eq!(r.expect("task").expect("recorded"), Outcome::Banned);
            banned += 1;
        }
        assert_eq!(banned, 400);
        // Reads settle first: all 400 are there, whatever the recorder still had open.
        assert_eq!(store.count_notifications().await.expect("count"), 400);
        store.settle().await.expect("settle");
        let on_disk: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hosts WHERE state = 'banned'")
            .fetch_one(&store.read)
            .await
            .expect("count");
        assert_eq!(on_disk, 400);
    }
}
