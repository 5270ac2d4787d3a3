-- Attachments live in the object store (`attachments/PARTNER/TICKET/ID`);
-- the row keeps the object's key, size and SHA-256, and an empty content.
-- Rows written before (object_key NULL) are moved to the store at start.
ALTER TABLE ticket_attachments ADD COLUMN object_key TEXT;
