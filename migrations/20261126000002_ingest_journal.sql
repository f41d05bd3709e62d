-- The last ingest-journal entry whose notification is committed (see src/store/journal.rs):
-- updated in the transaction that commits it, so that entries a stop left in the journal after
-- their commit are not applied twice.
CREATE TABLE journal_applied (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
) STRICT;
INSERT INTO journal_applied (id, seq) VALUES (1, 0);
