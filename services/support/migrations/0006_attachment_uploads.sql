-- Attachments uploaded (UploadAttachment) and not yet named by a ticket:
-- counted in the partner's quota, deleted after 24 hours unclaimed.
CREATE TABLE attachment_uploads (
    id TEXT PRIMARY KEY,
    partner_id TEXT NOT NULL,
    object_key TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    created_at_us BIGINT NOT NULL
);

CREATE INDEX attachment_uploads_partner ON attachment_uploads (partner_id);
CREATE INDEX attachment_uploads_created ON attachment_uploads (created_at_us);
