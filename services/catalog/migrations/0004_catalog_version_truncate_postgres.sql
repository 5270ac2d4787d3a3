-- TRUNCATE fires no row or statement trigger of 0003: bump the catalog
-- version on it too, so a table emptied by hand is reloaded as well. (SQLite
-- has no TRUNCATE; its DELETE fires 0003's triggers.)
CREATE TRIGGER markets_truncate_bumps_version AFTER TRUNCATE ON markets
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER products_truncate_bumps_version AFTER TRUNCATE ON products
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER skus_truncate_bumps_version AFTER TRUNCATE ON skus
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER prices_truncate_bumps_version AFTER TRUNCATE ON prices
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER download_options_truncate_bumps_version AFTER TRUNCATE ON download_options
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER compute_rates_truncate_bumps_version AFTER TRUNCATE ON compute_rates
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
