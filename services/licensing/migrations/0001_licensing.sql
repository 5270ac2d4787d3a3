-- Entitlements, product keys and download links. The same SQL runs on SQLite
-- and PostgreSQL. Secrets (product keys, link tokens) are stored only sealed
-- (ChaCha20-Poly1305 under the configured key, base64 of nonce and
-- ciphertext); links are found by the SHA-256 of their token.

-- Events already applied, so a redelivered event changes nothing.
CREATE TABLE processed_events (
    event_id TEXT PRIMARY KEY,
    processed_at_us BIGINT NOT NULL
);

-- Software bought for a customer: one per software subscription.
CREATE TABLE entitlements (
    subscription_id TEXT PRIMARY KEY,
    partner_id TEXT NOT NULL,
    customer_tenant_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    product_title TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    provisioned_at_us BIGINT NOT NULL,
    revoked_at_us BIGINT
);

CREATE INDEX entitlements_customer ON entitlements (partner_id, customer_tenant_id, subscription_id);

-- One product key per subscription and version, made once.
CREATE TABLE product_keys (
    subscription_id TEXT NOT NULL REFERENCES entitlements (subscription_id),
    version TEXT NOT NULL,
    sealed_key TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    PRIMARY KEY (subscription_id, version)
);

CREATE TABLE download_links (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    sealed_token TEXT NOT NULL,
    partner_id TEXT NOT NULL,
    customer_tenant_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL REFERENCES entitlements (subscription_id),
    product_id TEXT NOT NULL,
    version TEXT NOT NULL,
    language TEXT NOT NULL,
    file_type TEXT NOT NULL,
    issued_by_user_id TEXT NOT NULL,
    issued_at_us BIGINT NOT NULL,
    expires_at_us BIGINT NOT NULL,
    downloads INTEGER NOT NULL DEFAULT 0,
    max_downloads INTEGER NOT NULL,
    revoked_at_us BIGINT,
    CONSTRAINT download_links_token_hash_key UNIQUE (token_hash),
    CHECK (downloads >= 0 AND downloads <= max_downloads)
);

CREATE INDEX download_links_selection
    ON download_links (subscription_id, version, language, file_type, issued_at_us);
