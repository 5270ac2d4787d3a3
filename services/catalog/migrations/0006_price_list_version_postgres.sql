-- The new catalog tables move the catalog's version like the others.
CREATE TRIGGER price_periods_bump_version AFTER INSERT OR UPDATE OR DELETE ON price_periods
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER price_periods_truncate_bumps_version AFTER TRUNCATE ON price_periods
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER cancellation_policies_bump_version AFTER INSERT OR UPDATE OR DELETE ON cancellation_policies
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER price_lists_bump_version AFTER INSERT ON price_lists
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
