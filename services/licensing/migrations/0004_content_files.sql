-- The software files in the object store: one per product, version,
-- language and file type, with the size and SHA-256 measured when it was
-- stored (`csp content put`, or the demo placeholders of `csp up`). A link
-- is issued only for a selection that has one.
CREATE TABLE content_files (
    product_id TEXT NOT NULL,
    version TEXT NOT NULL,
    language TEXT NOT NULL,
    file_type TEXT NOT NULL,
    object_key TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    stored_at_us BIGINT NOT NULL,
    PRIMARY KEY (product_id, version, language, file_type)
);
