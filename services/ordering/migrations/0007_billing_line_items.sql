-- What the partner was billed, line by line, so it can reconcile: a
-- purchase per order line (charged when the order is placed) and a refund
-- per cancelled subscription (a negative amount), each with what it was
-- priced from. It replaces partner_billing (one charge per order, one refund
-- per subscription), whose every row it carries over in more detail.
CREATE TABLE billing_line_items (
    -- "purchase-<subscription id>" or "refund-<subscription id>".
    id TEXT PRIMARY KEY,
    partner_id TEXT NOT NULL,
    charge_type TEXT NOT NULL CHECK (charge_type IN ('purchase', 'refund')),
    billed_at_us BIGINT NOT NULL,
    order_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    customer_tenant_id TEXT NOT NULL,
    sku_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    market TEXT NOT NULL,
    currency_code TEXT NOT NULL,
    minor_unit_digits INTEGER NOT NULL,
    quantity INTEGER NOT NULL,
    unit_price_minor BIGINT NOT NULL,
    amount_minor BIGINT NOT NULL,
    tax_included BOOLEAN NOT NULL,
    price_list_version BIGINT NOT NULL,
    policy_id TEXT NOT NULL,
    policy_version BIGINT NOT NULL
);
CREATE INDEX billing_line_items_by_time ON billing_line_items (partner_id, billed_at_us, id);

INSERT INTO billing_line_items (id, partner_id, charge_type, billed_at_us, order_id, subscription_id,
    customer_tenant_id, sku_id, product_id, market, currency_code, minor_unit_digits, quantity,
    unit_price_minor, amount_minor, tax_included, price_list_version, policy_id, policy_version)
SELECT 'purchase-' || s.id, s.partner_id, 'purchase', o.created_at_us, o.id, s.id, s.customer_tenant_id,
    l.sku_id, l.product_id, c.market, o.currency_code, o.minor_unit_digits, l.quantity, l.unit_price_minor,
    l.amount_minor, o.tax_included, o.price_list_version, s.policy_id, s.policy_version
FROM subscriptions s
JOIN orders o ON o.id = s.order_id
JOIN order_lines l ON l.order_id = s.order_id AND l.line_number = s.line_number
JOIN customers c ON c.partner_id = s.partner_id AND c.tenant_id = s.customer_tenant_id;

INSERT INTO billing_line_items (id, partner_id, charge_type, billed_at_us, order_id, subscription_id,
    customer_tenant_id, sku_id, product_id, market, currency_code, minor_unit_digits, quantity,
    unit_price_minor, amount_minor, tax_included, price_list_version, policy_id, policy_version)
SELECT 'refund-' || s.id, s.partner_id, 'refund', s.cancelled_at_us, o.id, s.id, s.customer_tenant_id,
    l.sku_id, l.product_id, c.market, o.currency_code, o.minor_unit_digits, l.quantity, l.unit_price_minor,
    -s.refunded_minor, o.tax_included, o.price_list_version, s.policy_id, s.policy_version
FROM subscriptions s
JOIN orders o ON o.id = s.order_id
JOIN order_lines l ON l.order_id = s.order_id AND l.line_number = s.line_number
JOIN customers c ON c.partner_id = s.partner_id AND c.tenant_id = s.customer_tenant_id
WHERE s.status = 'cancelled' AND s.refunded_minor IS NOT NULL AND s.cancelled_at_us IS NOT NULL;

DROP TABLE partner_billing;
