-- Each subscription keeps the cancellation policy version it was sold under
-- (a later version never changes it) and when its term ends (the basis of
-- prorated refunds). Subscriptions from before policies read as the
-- article's rule with their own window in days, full refund, no cap, and a
-- term of 365 days per year.
ALTER TABLE subscriptions ADD COLUMN term_ends_at_us BIGINT NOT NULL DEFAULT 0;
UPDATE subscriptions SET term_ends_at_us = purchased_at_us + 86400000000 * 365 * (
    SELECT CASE l.term WHEN 'P3Y' THEN 3 ELSE 1 END FROM order_lines l
    WHERE l.order_id = subscriptions.order_id AND l.line_number = subscriptions.line_number);
ALTER TABLE subscriptions ADD COLUMN policy_id TEXT NOT NULL DEFAULT 'csp-2019-60-days';
ALTER TABLE subscriptions ADD COLUMN policy_version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE subscriptions ADD COLUMN policy_window_unit TEXT NOT NULL DEFAULT 'days'
    CHECK (policy_window_unit IN ('hours', 'days', 'term'));
ALTER TABLE subscriptions ADD COLUMN policy_window_amount BIGINT;
UPDATE subscriptions SET policy_window_amount = cancellation_window_days;
ALTER TABLE subscriptions ADD COLUMN policy_refund_rule TEXT NOT NULL DEFAULT 'full'
    CHECK (policy_refund_rule IN ('full', 'prorated_by_hour', 'prorated_by_day'));
ALTER TABLE subscriptions ADD COLUMN policy_cap_amount_minor BIGINT;
ALTER TABLE subscriptions ADD COLUMN policy_cap_currency TEXT;
ALTER TABLE subscriptions ADD COLUMN policy_cap_period_days BIGINT;
-- A customer's refunds over a cap's rolling period.
CREATE INDEX subscriptions_refunds ON subscriptions (partner_id, customer_tenant_id, cancelled_at_us)
    WHERE status = 'cancelled';
