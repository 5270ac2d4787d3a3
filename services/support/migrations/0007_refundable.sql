-- What a refund ticket's cancellation policies refunded when it was filed
-- (the most it may ask), and the first window's end.
ALTER TABLE tickets ADD COLUMN refund_refundable_minor BIGINT;
ALTER TABLE tickets ADD COLUMN refund_deadline_us BIGINT;
