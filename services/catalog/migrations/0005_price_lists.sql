-- Commerce as data (shared by SQLite and PostgreSQL; each backend adds its
-- version triggers in its own file after this one).

-- Cancellation policies, versioned: a subscription records the (id,
-- version) it was sold under, so a later version never changes it. The
-- window runs from purchase: window_amount hours or days, or the whole term.
-- A refund is the price in full, or prorated by the hour or the day of the
-- term left. A cap limits the refunds of one scope (customer) over a
-- rolling period, in one currency.
CREATE TABLE cancellation_policies (
    id TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    title TEXT NOT NULL,
    window_amount INTEGER CHECK (window_amount > 0),
    window_unit TEXT NOT NULL CHECK (window_unit IN ('hours', 'days', 'term')),
    refund_rule TEXT NOT NULL CHECK (refund_rule IN ('full', 'prorated_by_hour', 'prorated_by_day')),
    cap_amount_minor BIGINT CHECK (cap_amount_minor > 0),
    cap_currency TEXT CHECK (length(cap_currency) = 3),
    cap_period_days INTEGER CHECK (cap_period_days > 0),
    cap_scope TEXT CHECK (cap_scope IN ('customer')),
    effective_from BIGINT NOT NULL,
    PRIMARY KEY (id, version),
    CHECK ((window_unit = 'term') = (window_amount IS NULL)),
    CHECK ((cap_amount_minor IS NULL) = (cap_currency IS NULL)
       AND (cap_amount_minor IS NULL) = (cap_period_days IS NULL)
       AND (cap_amount_minor IS NULL) = (cap_scope IS NULL))
);

INSERT INTO cancellation_policies
    (id, version, title, window_amount, window_unit, refund_rule, cap_amount_minor, cap_currency, cap_period_days, cap_scope, effective_from)
VALUES
    ('csp-2019-60-days', 1, 'The 2019 article''s rule: cancellable within 60 days of purchase, no fee, full refund',
        60, 'days', 'full', NULL, NULL, NULL, NULL, 0),
    ('new-commerce-168-hours', 1, 'New-commerce software subscriptions: cancellable within 7 days (168 hours), refund prorated by the hour',
        168, 'hours', 'prorated_by_hour', NULL, NULL, NULL, NULL, 0),
    ('perpetual-software-30-days', 1, 'Perpetual software: cancellable within 30 days of purchase, full refund',
        30, 'days', 'full', NULL, NULL, NULL, NULL, 0),
    ('azure-reservation', 1, 'Azure reservations: cancellable during the term, refund prorated by the day, at most 50,000 USD per customer per rolling 12 months',
        NULL, 'term', 'prorated_by_day', 5000000, 'USD', 365, 'customer', 0);

ALTER TABLE products ADD COLUMN publisher TEXT NOT NULL DEFAULT 'Microsoft Corporation';
ALTER TABLE products ADD COLUMN cancellation_policy_id TEXT NOT NULL DEFAULT 'csp-2019-60-days';
ALTER TABLE skus ADD COLUMN billing_plan TEXT NOT NULL DEFAULT 'OneTime'
    CHECK (billing_plan IN ('Annual', 'Triennial', 'OneTime'));
UPDATE skus SET billing_plan = CASE term WHEN 'P1Y' THEN 'Annual' ELSE 'Triennial' END;

-- Prices over time: a SKU's price in a market from effective_from
-- (inclusive) until effective_until (exclusive; NULL: no end), both in
-- microseconds since the Unix epoch (UTC). Periods of one SKU and market do
-- not overlap (the import checks it). Prices from before price lists start
-- at the epoch.
CREATE TABLE price_periods (
    sku_id TEXT NOT NULL REFERENCES skus (id),
    market TEXT NOT NULL REFERENCES markets (code),
    effective_from BIGINT NOT NULL,
    effective_until BIGINT,
    amount_minor BIGINT NOT NULL CHECK (amount_minor >= 0),
    PRIMARY KEY (sku_id, market, effective_from),
    CHECK (effective_until IS NULL OR effective_until > effective_from)
);
INSERT INTO price_periods (sku_id, market, effective_from, effective_until, amount_minor)
    SELECT sku_id, market, 0, NULL, amount_minor FROM prices;
DROP TABLE prices;

-- Each import that changed the catalog: its version (1, 2, ...), the file's
-- SHA-256, who ran it and when, and what it changed (JSON).
CREATE TABLE price_lists (
    version BIGINT PRIMARY KEY CHECK (version >= 1),
    checksum TEXT NOT NULL,
    file_name TEXT NOT NULL,
    imported_by TEXT NOT NULL,
    imported_at BIGINT NOT NULL,
    line_count BIGINT NOT NULL,
    changes TEXT NOT NULL
);
