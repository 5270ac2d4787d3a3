-- The catalog price list an order's prices were frozen from (0: placed
-- before price lists).
ALTER TABLE orders ADD COLUMN price_list_version BIGINT NOT NULL DEFAULT 0;
