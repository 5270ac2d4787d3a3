-- no-transaction
-- Customers belong to one partner: the tenant id and the domain name are
-- unique per partner, not in the whole system (one customer tenant may have
-- several CSP partners, and no partner may learn of another's customers).
-- SQLite cannot change a primary key in place: the customers table and the
-- two tables whose foreign keys point at it are rebuilt the way SQLite
-- documents it: foreign keys off around one transaction that copies every
-- row (nothing is lost or changed), drops the old table and renames the new.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

CREATE TABLE customers_new (
    tenant_id TEXT NOT NULL,
    partner_id TEXT NOT NULL,
    domain_name TEXT NOT NULL,
    company_name TEXT NOT NULL,
    -- Lower-case company name, for search and ordering.
    company_name_folded TEXT NOT NULL,
    market TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    CONSTRAINT customers_pkey PRIMARY KEY (partner_id, tenant_id),
    CONSTRAINT customers_partner_domain_key UNIQUE (partner_id, domain_name)
);

INSERT INTO customers_new (tenant_id, partner_id, domain_name, company_name, company_name_folded, market, created_at_us)
SELECT tenant_id, partner_id, domain_name, company_name, company_name_folded, market, created_at_us FROM customers;
DROP TABLE customers;
ALTER TABLE customers_new RENAME TO customers;
CREATE INDEX customers_partner_name ON customers (partner_id, company_name_folded, tenant_id);

CREATE TABLE orders_new (
    id TEXT PRIMARY KEY,
    partner_id TEXT NOT NULL,
    customer_tenant_id TEXT NOT NULL,
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
    CONSTRAINT orders_partner_request_key UNIQUE (partner_id, request_id),
    FOREIGN KEY (partner_id, customer_tenant_id) REFERENCES customers (partner_id, tenant_id)
);

INSERT INTO orders_new (id, partner_id, customer_tenant_id, request_id, request_fingerprint, status, currency_code, minor_unit_digits, total_minor, tax_included, placed_by_user_id, created_at_us)
SELECT id, partner_id, customer_tenant_id, request_id, request_fingerprint, status, currency_code, minor_unit_digits, total_minor, tax_included, placed_by_user_id, created_at_us FROM orders;
DROP TABLE orders;
ALTER TABLE orders_new RENAME TO orders;
CREATE INDEX orders_customer ON orders (partner_id, customer_tenant_id, created_at_us, id);

CREATE TABLE subscriptions_new (
    id TEXT PRIMARY KEY,
    partner_id TEXT NOT NULL,
    customer_tenant_id TEXT NOT NULL,
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
    cancel_ticket_id TEXT,
    FOREIGN KEY (partner_id, customer_tenant_id) REFERENCES customers (partner_id, tenant_id)
);

INSERT INTO subscriptions_new (id, partner_id, customer_tenant_id, order_id, line_number, product_id, product_kind, sku_id, status, quantity, currency_code, minor_unit_digits, amount_paid_minor, purchased_at_us, cancellation_window_days, cancellable_until_us, cancelled_at_us, refunded_minor, cancel_reason, cancel_ticket_id)
SELECT id, partner_id, customer_tenant_id, order_id, line_number, product_id, product_kind, sku_id, status, quantity, currency_code, minor_unit_digits, amount_paid_minor, purchased_at_us, cancellation_window_days, cancellable_until_us, cancelled_at_us, refunded_minor, cancel_reason, cancel_ticket_id FROM subscriptions;
DROP TABLE subscriptions;
ALTER TABLE subscriptions_new RENAME TO subscriptions;
CREATE INDEX subscriptions_customer ON subscriptions (partner_id, customer_tenant_id, purchased_at_us, id);
CREATE INDEX subscriptions_order ON subscriptions (order_id, line_number);

COMMIT;
PRAGMA foreign_keys = ON;
