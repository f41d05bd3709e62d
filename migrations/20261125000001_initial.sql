-- fnm-escalator schema. Times are Unix milliseconds (UTC). Addresses and prefixes are stored in
-- their canonical text form (ipnet / std::net Display), so equality in SQL is equality of values.

-- One row per host FastNetMon ever told us about. `state_at` is the observation time of the
-- notification the state came from: an older notification arriving late never overrides a newer one.
CREATE TABLE hosts (
    ip            TEXT    PRIMARY KEY,
    family        INTEGER NOT NULL CHECK (family IN (4, 6)),
    state         TEXT    NOT NULL CHECK (state IN ('banned', 'unbanned')),
    state_at      INTEGER NOT NULL,
    banned_at     INTEGER,
    unbanned_at   INTEGER,
    attack_uuid   TEXT,
    direction     TEXT,
    source        TEXT    NOT NULL,
    first_seen_at INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX hosts_state ON hosts (state);

-- A ban episode: from the ban that found the host unbanned to the unban that ended it.
-- Duplicate bans (FastNetMon HA pairs, attack_status, attack_details) fold into the open episode.
CREATE TABLE ban_episodes (
    id           INTEGER PRIMARY KEY,
    ip           TEXT    NOT NULL REFERENCES hosts (ip),
    started_at   INTEGER NOT NULL,
    ended_at     INTEGER,
    attack_uuid  TEXT,
    attack_type  TEXT,
    protocol     TEXT,
    direction    TEXT,
    severity     TEXT,
    source       TEXT    NOT NULL,
    end_reason   TEXT,
    notifications INTEGER NOT NULL DEFAULT 1
) STRICT;
CREATE INDEX ban_episodes_ip ON ban_episodes (ip, started_at);
CREATE UNIQUE INDEX ban_episodes_one_open ON ban_episodes (ip) WHERE ended_at IS NULL;

-- Every notification accepted, as received. `idempotency_key` makes redelivery (notify spool,
-- client retries) a no-op: a key is stored once.
CREATE TABLE notifications (
    id              INTEGER PRIMARY KEY,
    received_at     INTEGER NOT NULL,
    observed_at     INTEGER NOT NULL,
    idempotency_key TEXT    UNIQUE,
    source          TEXT    NOT NULL,
    actor           TEXT    NOT NULL,
    action          TEXT    NOT NULL,
    scope           TEXT    NOT NULL,
    ip              TEXT,
    attack_uuid     TEXT,
    outcome         TEXT    NOT NULL,
    payload         TEXT    NOT NULL
) STRICT;
CREATE INDEX notifications_ip ON notifications (ip, observed_at);

-- Traffic samples in bits and packets per second. The newest per host is what the checker uses;
-- history is kept for the API and thinned by retention.
CREATE TABLE traffic_samples (
    id          INTEGER PRIMARY KEY,
    ip          TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    source      TEXT    NOT NULL,
    in_bps      INTEGER NOT NULL,
    out_bps     INTEGER NOT NULL,
    in_pps      INTEGER NOT NULL,
    out_pps     INTEGER NOT NULL
) STRICT;
CREATE INDEX traffic_samples_ip_at ON traffic_samples (ip, at);

-- The newest sample per host, kept apart so the checker reads one row per host.
CREATE TABLE latest_samples (
    ip          TEXT    PRIMARY KEY,
    at          INTEGER NOT NULL,
    source      TEXT    NOT NULL,
    in_bps      INTEGER NOT NULL,
    out_bps     INTEGER NOT NULL,
    in_pps      INTEGER NOT NULL,
    out_pps     INTEGER NOT NULL
) STRICT;

-- Escalations: our ledger of covering prefixes. A prefix has at most one live row (pending,
-- active, failed); withdrawn and refused rows are history. Only prefixes in this ledger are ever
-- withdrawn from the speaker.
CREATE TABLE escalations (
    id                    INTEGER PRIMARY KEY,
    prefix                TEXT    NOT NULL,
    family                INTEGER NOT NULL CHECK (family IN (4, 6)),
    state                 TEXT    NOT NULL CHECK (state IN ('pending', 'active', 'withdrawn', 'refused', 'failed')),
    origin                TEXT    NOT NULL CHECK (origin IN ('auto', 'manual')),
    reason                TEXT    NOT NULL,
    rule                  TEXT,
    hosts                 TEXT    NOT NULL DEFAULT '[]',
    next_hop              TEXT    NOT NULL,
    communities           TEXT    NOT NULL DEFAULT '[]',
    large_communities     TEXT    NOT NULL DEFAULT '[]',
    dry_run               INTEGER NOT NULL DEFAULT 0,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    announced_at          INTEGER,
    last_crossing_at      INTEGER,
    quiet_since           INTEGER,
    expires_at            INTEGER,
    withdraw_requested_at INTEGER,
    withdraw_reason       TEXT,
    withdrawn_at          INTEGER,
    attempts              INTEGER NOT NULL DEFAULT 0,
    next_attempt_at       INTEGER,
    last_error            TEXT,
    created_by            TEXT    NOT NULL
) STRICT;
CREATE UNIQUE INDEX escalations_one_live ON escalations (prefix) WHERE state IN ('pending', 'active', 'failed');
CREATE UNIQUE INDEX escalations_one_open_refusal ON escalations (prefix) WHERE state = 'refused' AND withdrawn_at IS NULL;
CREATE INDEX escalations_state ON escalations (state);
CREATE INDEX escalations_prefix ON escalations (prefix, created_at);

-- Manual suppressions: the checker does not escalate these prefixes until `until`.
CREATE TABLE suppressions (
    prefix     TEXT    PRIMARY KEY,
    until      INTEGER NOT NULL,
    reason     TEXT    NOT NULL,
    created_by TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

-- The audit log: append-only, enforced below.
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    kind    TEXT    NOT NULL,
    ip      TEXT,
    prefix  TEXT,
    message TEXT    NOT NULL,
    detail  TEXT
) STRICT;
CREATE INDEX events_ip ON events (ip, id);
CREATE INDEX events_prefix ON events (prefix, id);
CREATE INDEX events_at ON events (at);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;
