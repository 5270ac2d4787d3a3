-- The transactional outbox: messages written in the same transaction as the
-- change they announce, one row per destination, relayed at least once, in
-- order per stream. Never edit: add a new migration.
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at_us BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_us BIGINT NOT NULL,
    last_error TEXT,
    UNIQUE (destination, event_id)
);

CREATE INDEX outbox_stream ON outbox (destination, stream, seq);

-- Messages a destination rejected as permanently invalid. They keep their
-- sequence number, so a replay puts them back where they were, and they hold
-- back the later messages of their stream until replayed or discarded.
CREATE TABLE outbox_dead_letters (
    seq INTEGER PRIMARY KEY,
    destination TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at_us BIGINT NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    dead_at_us BIGINT NOT NULL
);

CREATE INDEX outbox_dead_letters_stream ON outbox_dead_letters (destination, stream);
