-- A number that changes whenever anything in the catalog does, however it
-- changed (the seed, an import, or SQL by hand): each replica polls it and
-- reloads its in-memory snapshot when it moved.
CREATE TABLE catalog_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO catalog_version (id, version) VALUES (1, 1);
CREATE TRIGGER markets_insert_bumps_version AFTER INSERT ON markets
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER markets_update_bumps_version AFTER UPDATE ON markets
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER markets_delete_bumps_version AFTER DELETE ON markets
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER products_insert_bumps_version AFTER INSERT ON products
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER products_update_bumps_version AFTER UPDATE ON products
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER products_delete_bumps_version AFTER DELETE ON products
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER skus_insert_bumps_version AFTER INSERT ON skus
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER skus_update_bumps_version AFTER UPDATE ON skus
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER skus_delete_bumps_version AFTER DELETE ON skus
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER prices_insert_bumps_version AFTER INSERT ON prices
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER prices_update_bumps_version AFTER UPDATE ON prices
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER prices_delete_bumps_version AFTER DELETE ON prices
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER download_options_insert_bumps_version AFTER INSERT ON download_options
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER download_options_update_bumps_version AFTER UPDATE ON download_options
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER download_options_delete_bumps_version AFTER DELETE ON download_options
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER compute_rates_insert_bumps_version AFTER INSERT ON compute_rates
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER compute_rates_update_bumps_version AFTER UPDATE ON compute_rates
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER compute_rates_delete_bumps_version AFTER DELETE ON compute_rates
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
