-- Indexes are paid for by every notification (each one writes a notification row and an event),
-- so only those a query uses are kept.

-- No query looks notifications up by address (the API reads hosts, episodes and events).
DROP INDEX IF EXISTS notifications_ip;

-- Most events (one per notification) have no prefix: index only those that do. A query with
-- `prefix = ?` implies `prefix IS NOT NULL`, so it still uses this index.
DROP INDEX IF EXISTS events_prefix;
CREATE INDEX events_prefix ON events (prefix, id) WHERE prefix IS NOT NULL;
