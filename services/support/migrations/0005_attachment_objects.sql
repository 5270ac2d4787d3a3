-- Attachments live in the object store (`attachments/PARTNER/TICKET/ID`, or
-- `uploads/PARTNER/ID` for one uploaded before its ticket);
-- the row keeps the object's key, size and SHA-256, and an empty content.
-- Rows written before (object_key NULL) are moved to the store at start.
ALTER TABLE ticket_attachments ADD COLUMN object_key TEXT;
