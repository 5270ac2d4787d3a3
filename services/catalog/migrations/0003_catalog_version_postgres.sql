-- A number that changes whenever anything in the catalog does, however it
-- changed (the seed, an import, or SQL by hand): each replica polls it and
-- reloads its in-memory snapshot when it moved.
CREATE TABLE catalog_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO catalog_version (id, version) VALUES (1, 1);
CREATE FUNCTION bump_catalog_version() RETURNS trigger AS $$
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER markets_bump_version AFTER INSERT OR UPDATE OR DELETE ON markets
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER products_bump_version AFTER INSERT OR UPDATE OR DELETE ON products
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER skus_bump_version AFTER INSERT OR UPDATE OR DELETE ON skus
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER prices_bump_version AFTER INSERT OR UPDATE OR DELETE ON prices
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER download_options_bump_version AFTER INSERT OR UPDATE OR DELETE ON download_options
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER compute_rates_bump_version AFTER INSERT OR UPDATE OR DELETE ON compute_rates
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
