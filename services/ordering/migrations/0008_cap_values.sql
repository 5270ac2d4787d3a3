-- A refund cap counts refunds in its own currency: each capped subscription
-- keeps what was paid in that currency (the price list's own rate: the SKU's
-- price in a market of that currency), and each refund what it counted.
-- Rows from before were capped only in their own currency.
ALTER TABLE subscriptions ADD COLUMN cap_value_minor BIGINT;
ALTER TABLE subscriptions ADD COLUMN refunded_cap_minor BIGINT;
UPDATE subscriptions SET cap_value_minor = amount_paid_minor
    WHERE policy_cap_currency IS NOT NULL AND policy_cap_currency = currency_code;
UPDATE subscriptions SET refunded_cap_minor = refunded_minor
    WHERE cap_value_minor IS NOT NULL AND refunded_minor IS NOT NULL;
