-- Every b-tree a notification touches is paid for at every notification: under a carpet-bombing
-- burst the one writer spends most of its time in them. Three of them did no work for it.

-- 1. The idempotency key was UNIQUE on every row, so each notification without a key (every
--    web callback) added a NULL entry to its index. A partial index holds only the keys; the
--    lookup `idempotency_key = ?` implies `IS NOT NULL`, so it still uses it.
CREATE TABLE notifications_new (
    id              INTEGER PRIMARY KEY,
    received_at     INTEGER NOT NULL,
    observed_at     INTEGER NOT NULL,
    idempotency_key TEXT,
    source          TEXT    NOT NULL,
    actor           TEXT    NOT NULL,
    action          TEXT    NOT NULL,
    scope           TEXT    NOT NULL,
    ip              TEXT,
    attack_uuid     TEXT,
    outcome         TEXT    NOT NULL,
    payload         TEXT    NOT NULL
) STRICT;
INSERT INTO notifications_new SELECT * FROM notifications;
DROP TABLE notifications;
ALTER TABLE notifications_new RENAME TO notifications;
CREATE UNIQUE INDEX notifications_idempotency_key ON notifications (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- 2. The audit log's AUTOINCREMENT read and rewrote `sqlite_sequence` at every insert. Its
--    guarantee (an id is never used twice) holds without it here: events are never deleted (the
--    triggers below), so the next rowid is always past every id handed out. Ids are kept.
DROP TRIGGER events_no_update;
DROP TRIGGER events_no_delete;
CREATE TABLE events_new (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    kind    TEXT    NOT NULL,
    ip      TEXT,
    prefix  TEXT,
    message TEXT    NOT NULL,
    detail  TEXT
) STRICT;
INSERT INTO events_new SELECT * FROM events;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
DELETE FROM sqlite_sequence WHERE name = 'events';
CREATE INDEX events_ip ON events (ip, id);
CREATE INDEX events_prefix ON events (prefix, id) WHERE prefix IS NOT NULL;
CREATE INDEX events_at ON events (at);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

-- 3. The newest sample per host is looked up by address only: keyed by it (WITHOUT ROWID) it is
--    one b-tree, not a table and an index of its key.
CREATE TABLE latest_samples_new (
    ip          TEXT    PRIMARY KEY,
    at          INTEGER NOT NULL,
    source      TEXT    NOT NULL,
    in_bps      INTEGER NOT NULL,
    out_bps     INTEGER NOT NULL,
    in_pps      INTEGER NOT NULL,
    out_pps     INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO latest_samples_new SELECT * FROM latest_samples;
DROP TABLE latest_samples;
ALTER TABLE latest_samples_new RENAME TO latest_samples;
