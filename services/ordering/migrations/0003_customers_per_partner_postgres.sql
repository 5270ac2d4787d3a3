-- Customers belong to one partner: the tenant id and the domain name are
-- unique per partner, not in the whole system (one customer tenant may have
-- several CSP partners, and no partner may learn of another's customers).
ALTER TABLE orders DROP CONSTRAINT orders_customer_tenant_id_fkey;
ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_customer_tenant_id_fkey;
ALTER TABLE customers DROP CONSTRAINT customers_domain_name_key;
ALTER TABLE customers DROP CONSTRAINT customers_pkey;
ALTER TABLE customers ADD CONSTRAINT customers_pkey PRIMARY KEY (partner_id, tenant_id);
ALTER TABLE customers ADD CONSTRAINT customers_partner_domain_key UNIQUE (partner_id, domain_name);
ALTER TABLE orders ADD CONSTRAINT orders_customer_fkey
    FOREIGN KEY (partner_id, customer_tenant_id) REFERENCES customers (partner_id, tenant_id);
ALTER TABLE subscriptions ADD CONSTRAINT subscriptions_customer_fkey
    FOREIGN KEY (partner_id, customer_tenant_id) REFERENCES customers (partner_id, tenant_id);
