-- The new catalog tables move the catalog's version like the others.
CREATE TRIGGER price_periods_insert_bumps_version AFTER INSERT ON price_periods
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER price_periods_update_bumps_version AFTER UPDATE ON price_periods
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER price_periods_delete_bumps_version AFTER DELETE ON price_periods
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER cancellation_policies_insert_bumps_version AFTER INSERT ON cancellation_policies
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER cancellation_policies_update_bumps_version AFTER UPDATE ON cancellation_policies
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER cancellation_policies_delete_bumps_version AFTER DELETE ON cancellation_policies
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER price_lists_insert_bumps_version AFTER INSERT ON price_lists
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
END;
