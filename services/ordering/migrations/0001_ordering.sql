-- Customers, orders, subscriptions and what the partner was billed. The same
-- SQL runs on SQLite and PostgreSQL. Ids are UUIDs in text form; times are
-- microseconds since the Unix epoch (UTC); money is integer minor units.

CREATE TABLE customers (
    tenant_id TEXT PRIMARY KEY,
    partner_id TEXT NOT NULL,
    domain_name TEXT NOT NULL,
    company_name TEXT NOT NULL,
    -- Lower-case company name, for search and ordering.
    company_name_folded TEXT NOT NULL,
    market TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    CONSTRAINT customers_domain_name_key UNIQUE (domain_name)
);

CREATE INDEX customers_partner_name ON customers (partner_id, company_name_folded, tenant_id);

CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    partner_id TEXT NOT NULL,
    customer_tenant_id TEXT NOT NULL REFERENCES customers (tenant_id),
    -- The client's request id and a fingerprint of what it asked for: a retry
    -- with the same id returns this order; another body with it is refused.
    request_id TEXT NOT NULL,
    request_fingerprint TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('completed', 'cancelled')),
    currency_code TEXT NOT NULL,
    minor_unit_digits INTEGER NOT NULL,
    total_minor BIGINT NOT NULL CHECK (total_minor >= 0),
    tax_included BOOLEAN NOT NULL,
    placed_by_user_id TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    CONSTRAINT orders_partner_request_key UNIQUE (partner_id, request_id)
);

CREATE INDEX orders_customer ON orders (partner_id, customer_tenant_id, created_at_us, id);

-- Lines with prices frozen at order time.
CREATE TABLE order_lines (
    order_id TEXT NOT NULL REFERENCES orders (id),
    line_number INTEGER NOT NULL,
    sku_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    product_title TEXT NOT NULL,
    product_kind TEXT NOT NULL,
    term TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_minor BIGINT NOT NULL CHECK (unit_price_minor >= 0),
    amount_minor BIGINT NOT NULL CHECK (amount_minor >= 0),
    subscription_id TEXT NOT NULL,
    PRIMARY KEY (order_id, line_number)
);

CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    partner_id TEXT NOT NULL,
    customer_tenant_id TEXT NOT NULL REFERENCES customers (tenant_id),
    order_id TEXT NOT NULL REFERENCES orders (id),
    line_number INTEGER NOT NULL,
    product_id TEXT NOT NULL,
    product_kind TEXT NOT NULL,
    sku_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'cancelled')),
    quantity INTEGER NOT NULL,
    currency_code TEXT NOT NULL,
    minor_unit_digits INTEGER NOT NULL,
    amount_paid_minor BIGINT NOT NULL,
    purchased_at_us BIGINT NOT NULL,
    -- The product's cancellation policy at purchase time.
    cancellation_window_days INTEGER NOT NULL,
    cancellable_until_us BIGINT NOT NULL,
    cancelled_at_us BIGINT,
    refunded_minor BIGINT,
    cancel_reason TEXT,
    cancel_ticket_id TEXT
);

CREATE INDEX subscriptions_customer ON subscriptions (partner_id, customer_tenant_id, purchased_at_us, id);
CREATE INDEX subscriptions_order ON subscriptions (order_id, line_number);

-- What the partner was billed: one charge per order, one refund per
-- cancelled subscription (negative amount).
CREATE TABLE partner_billing (
    id TEXT PRIMARY KEY,
    partner_id TEXT NOT NULL,
    order_id TEXT NOT NULL REFERENCES orders (id),
    subscription_id TEXT,
    kind TEXT NOT NULL CHECK (kind IN ('charge', 'refund')),
    currency_code TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    created_at_us BIGINT NOT NULL
);

CREATE UNIQUE INDEX partner_billing_one_charge ON partner_billing (order_id) WHERE kind = 'charge';
CREATE UNIQUE INDEX partner_billing_one_refund ON partner_billing (subscription_id) WHERE kind = 'refund';
