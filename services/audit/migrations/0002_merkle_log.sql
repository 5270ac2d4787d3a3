-- The activity log becomes a transparency log (issue 16): per partner, a
-- Merkle tree over the records in append order (RFC 9162 hashing), its heads
-- signed as C2SP tlog-checkpoint notes with Ed25519. It replaces the hash
-- chain and the HMAC checkpoints: one mechanism, not two. The leaves of
-- records logged before are built from them, in order, when the service
-- starts (`AuditStore::build_missing_leaves`).

-- Every complete subtree's hash, at tlog's stored hash index (leaf n at
-- stored_hash_index(0, n)); lower-case hex.
CREATE TABLE tree_hashes (
    partner_id TEXT NOT NULL,
    idx BIGINT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (partner_id, idx)
);

-- Each partner's tree size and the size of its newest signed checkpoint;
-- appending locks this row, so replicas append one at a time per partner.
CREATE TABLE log_heads (
    partner_id TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    signed_size BIGINT NOT NULL
);

-- Signed checkpoints (the note text, signature line included); also
-- appended to a file outside the database.
CREATE TABLE log_checkpoints (
    partner_id TEXT NOT NULL,
    size BIGINT NOT NULL,
    root TEXT NOT NULL,
    note TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    PRIMARY KEY (partner_id, size)
);

DROP TABLE chain_heads;
DROP TABLE checkpoints;
ALTER TABLE activities DROP COLUMN prev_hash;
ALTER TABLE activities DROP COLUMN hash;
