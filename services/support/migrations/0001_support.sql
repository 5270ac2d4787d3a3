-- Tickets, comments, and the refund workflow. The same SQL runs on SQLite and
-- PostgreSQL; attachments (binary) are in 0002, per backend.

CREATE TABLE tickets (
    id TEXT PRIMARY KEY,
    partner_id TEXT NOT NULL,
    issue_type TEXT NOT NULL CHECK (issue_type IN ('purchase_refund', 'billing', 'technical', 'other')),
    impact TEXT NOT NULL CHECK (impact IN ('critical', 'moderate', 'minimal')),
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    contact_name TEXT NOT NULL,
    contact_email TEXT NOT NULL,
    contact_phone TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('submitted', 'resolved', 'rejected', 'closed')),
    -- Refund tickets: what was asked for (NULL otherwise).
    refund_customer_tenant_id TEXT,
    refund_customer_domain_name TEXT,
    refund_order_id TEXT,
    refund_subscription_id TEXT,
    refund_reason TEXT,
    refund_currency_code TEXT,
    refund_minor_unit_digits INTEGER,
    refund_requested_minor BIGINT,
    refunded_minor BIGINT,
    rejection_reason TEXT,
    request_id TEXT NOT NULL,
    request_fingerprint TEXT NOT NULL,
    created_by_user_id TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    CONSTRAINT tickets_partner_request_key UNIQUE (partner_id, request_id)
);

CREATE INDEX tickets_partner ON tickets (partner_id, created_at_us, id);

CREATE TABLE ticket_comments (
    ticket_id TEXT NOT NULL REFERENCES tickets (id),
    position INTEGER NOT NULL,
    author_user_id TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    PRIMARY KEY (ticket_id, position)
);

-- The refund workflow: one step per subscription to cancel. A step is done
-- once ordering cancelled it and licensing revoked it; the runner resumes
-- unfinished steps after any failure or restart.
CREATE TABLE refund_steps (
    ticket_id TEXT NOT NULL REFERENCES tickets (id),
    position INTEGER NOT NULL,
    partner_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    refund_minor BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'cancelled', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_us BIGINT NOT NULL,
    last_error TEXT,
    PRIMARY KEY (ticket_id, position)
);

CREATE INDEX refund_steps_due ON refund_steps (state, next_attempt_at_us);
