-- The catalog. The same SQL runs on SQLite and PostgreSQL.

CREATE TABLE markets (
    code TEXT PRIMARY KEY CHECK (length(code) = 2),
    display_name TEXT NOT NULL,
    currency_code TEXT NOT NULL CHECK (length(currency_code) = 3),
    minor_unit_digits INTEGER NOT NULL CHECK (minor_unit_digits BETWEEN 0 AND 4),
    tax_included BOOLEAN NOT NULL,
    azure_reservations_available BOOLEAN NOT NULL
);

CREATE TABLE products (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('server_subscription', 'azure_reservation')),
    -- The cancellation policy is data: days after purchase a subscription of
    -- this product can be cancelled without fee.
    cancellation_window_days INTEGER NOT NULL DEFAULT 60 CHECK (cancellation_window_days >= 0)
);

CREATE INDEX products_kind ON products (kind, id);

CREATE TABLE skus (
    id TEXT PRIMARY KEY,
    product_id TEXT NOT NULL REFERENCES products (id),
    title TEXT NOT NULL,
    term TEXT NOT NULL CHECK (term IN ('P1Y', 'P3Y'))
);

CREATE INDEX skus_product ON skus (product_id, id);

-- One price per SKU and market, in the market's currency, in minor units.
CREATE TABLE prices (
    sku_id TEXT NOT NULL REFERENCES skus (id),
    market TEXT NOT NULL REFERENCES markets (code),
    amount_minor BIGINT NOT NULL CHECK (amount_minor >= 0),
    PRIMARY KEY (sku_id, market)
);

-- Download options of software products: kind is 'version', 'language' or
-- 'file_type'; position orders them for display.
CREATE TABLE download_options (
    product_id TEXT NOT NULL REFERENCES products (id),
    kind TEXT NOT NULL CHECK (kind IN ('version', 'language', 'file_type')),
    value TEXT NOT NULL,
    display_name TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (product_id, kind, value)
);
