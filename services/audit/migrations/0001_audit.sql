-- The activity log: per partner, a hash chain of records numbered 1, 2, 3...
-- Each record stores the hash of its predecessor and its own hash over its
-- content; the chain head is checkpointed under a key the database does not
-- hold. The same SQL runs on SQLite and PostgreSQL; times are microseconds
-- since the Unix epoch (UTC).

CREATE TABLE activities (
    partner_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    occur_at_us BIGINT NOT NULL,
    recorded_at_us BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    user_display_name TEXT NOT NULL,
    customer_tenant_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    -- A JSON object with sorted keys.
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (partner_id, seq),
    CONSTRAINT activities_id_key UNIQUE (id)
);

CREATE INDEX activities_time ON activities (partner_id, occur_at_us, seq);

-- The newest record of each partner's chain; appending locks this row, so
-- replicas append one at a time per partner and the chain never forks.
CREATE TABLE chain_heads (
    partner_id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);

-- Signed chain heads: HMAC-SHA256 under the checkpoint key of
-- "partner_id|seq|hash". Also written outside the database.
CREATE TABLE checkpoints (
    partner_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    mac TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    PRIMARY KEY (partner_id, seq)
);
