//! Ordering storage: SQL over SQLite or PostgreSQL. Every read is scoped to a
//! partner, so another partner's rows are simply not found. Ids and states
//! are written as text and read back typed; a stored value that does not
//! read is a [`StoreError::Corrupt`](csp_store::StoreError), never a default.

use csp_kit::clock::Micros;
use csp_kit::ids::{OrderId, PartnerId, RequestId, SubscriptionId, TenantId};
use csp_store::db::{Db, DbTx, MigrationSource, Migrations};
use csp_store::error::{column, parse};
use csp_store::outbox::{self, Message};
use csp_store::{StoreError, StoreResult, on_db, on_tx};
use sqlx::Row as _;

use crate::domain::{
    BillingLineItem, Cancellation, CurrencyStatement, Customer, Order, OrderLine, OrderStatus,
    RefundCap, SoldPolicy, Subscription, SubscriptionStatus,
};

/// The ordering service's migrations.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        ORDERING,
        outbox::sqlite_migration(2),
        MigrationSource {
            version: 3,
            description: "customers per partner",
            sql: include_str!("../migrations/0003_customers_per_partner_sqlite.sql"),
        },
        outbox::due_index_migration(4),
        PRICE_LIST_VERSION,
        POLICIES,
        BILLING,
        CAP_VALUES,
    ],
    postgres: &[
        ORDERING,
        outbox::postgres_migration(2),
        MigrationSource {
            version: 3,
            description: "customers per partner",
            sql: include_str!("../migrations/0003_customers_per_partner_postgres.sql"),
        },
        outbox::due_index_migration(4),
        PRICE_LIST_VERSION,
        POLICIES,
        BILLING,
        CAP_VALUES,
        outbox::postgres_event_ids_not_unique_migration(9),
    ],
};

const CAP_VALUES: MigrationSource = MigrationSource {
    version: 8,
    description: "refunds count toward a cap in its currency",
    sql: include_str!("../migrations/0008_cap_values.sql"),
};

const BILLING: MigrationSource = MigrationSource {
    version: 7,
    description: "billing line items",
    sql: include_str!("../migrations/0007_billing_line_items.sql"),
};

const POLICIES: MigrationSource = MigrationSource {
    version: 6,
    description: "subscriptions keep their cancellation policy",
    sql: include_str!("../migrations/0006_subscription_policies.sql"),
};

const PRICE_LIST_VERSION: MigrationSource = MigrationSource {
    version: 5,
    description: "orders record their price list",
    sql: include_str!("../migrations/0005_order_price_list.sql"),
};

const ORDERING: MigrationSource = MigrationSource {
    version: 1,
    description: "ordering",
    sql: include_str!("../migrations/0001_ordering.sql"),
};

/// The unique constraint on a partner's request ids (`PlaceOrder` retries).
pub const ORDER_REQUEST_KEY: &str = "orders_partner_request_key";
/// The unique constraint on a partner's customers' domain names.
pub const CUSTOMER_DOMAIN_KEY: &str = "customers_partner_domain_key";
/// The primary key of customers (partner and tenant id).
pub const CUSTOMER_TENANT_KEY: &str = "customers_pkey";

/// Reads the cancellation policy columns of a subscription row; evaluates
/// to `StoreResult<SoldPolicy>`.
macro_rules! sold_policy {
    ($row:expr) => {
        (|| -> StoreResult<SoldPolicy> {
            let row = $row;
            let unit: String = row.try_get("policy_window_unit")?;
            let rule: String = row.try_get("policy_refund_rule")?;
            let version: i64 = row.try_get("policy_version")?;
            let amount: Option<i64> = row.try_get("policy_window_amount")?;
            let cap_amount: Option<i64> = row.try_get("policy_cap_amount_minor")?;
            let cap_currency: Option<String> = row.try_get("policy_cap_currency")?;
            let cap_period: Option<i64> = row.try_get("policy_cap_period_days")?;
            let small = |column: &'static str, value: i64| {
                u32::try_from(value).map_err(|_| StoreError::corrupt(column, value.to_string()))
            };
            Ok(SoldPolicy {
                id: row.try_get("policy_id")?,
                version: small("subscriptions.policy_version", version)?,
                window_unit: parse("subscriptions.policy_window_unit", &unit)?,
                window_amount: amount
                    .map(|a| small("subscriptions.policy_window_amount", a))
                    .transpose()?,
                refund_rule: parse("subscriptions.policy_refund_rule", &rule)?,
                cap: match (cap_amount, cap_currency, cap_period) {
                    (Some(amount_minor), Some(currency), Some(period)) => Some(RefundCap {
                        amount_minor,
                        currency,
                        period_days: small("subscriptions.policy_cap_period_days", period)?,
                    }),
                    _ => None,
                },
            })
        })()
    };
}

/// Reads a subscription row; evaluates to `StoreResult<Subscription>`.
macro_rules! subscription_from_row {
    ($row:expr) => {
        (|| -> StoreResult<Subscription> {
            let row = $row;
            Ok(Subscription {
                id: column(row, "id")?,
                partner_id: column(row, "partner_id")?,
                customer_tenant_id: column(row, "customer_tenant_id")?,
                order_id: column(row, "order_id")?,
                line_number: row.try_get("line_number")?,
                product_id: row.try_get("product_id")?,
                product_kind: column(row, "product_kind")?,
                sku_id: row.try_get("sku_id")?,
                status: column(row, "status")?,
                quantity: row.try_get("quantity")?,
                currency_code: row.try_get("currency_code")?,
                minor_unit_digits: row.try_get("minor_unit_digits")?,
                amount_paid_minor: row.try_get("amount_paid_minor")?,
                purchased_at: row.try_get("purchased_at_us")?,
                cancellation_window_days: row.try_get("cancellation_window_days")?,
                cancellable_until: row.try_get("cancellable_until_us")?,
                term_ends_at: row.try_get("term_ends_at_us")?,
                policy: sold_policy!(row)?,
                cap_value_minor: row.try_get("cap_value_minor")?,
                refunded_cap_minor: row.try_get("refunded_cap_minor")?,
                cancelled_at: row.try_get("cancelled_at_us")?,
                refunded_minor: row.try_get("refunded_minor")?,
                cancel_reason: row.try_get("cancel_reason")?,
                cancel_ticket_id: row.try_get("cancel_ticket_id")?,
            })
        })()
    };
}

/// Reads an order row (without its lines); evaluates to `StoreResult<Order>`.
macro_rules! order_from_row {
    ($row:expr) => {
        (|| -> StoreResult<Order> {
            let row = $row;
            Ok(Order {
                id: column(row, "id")?,
                partner_id: column(row, "partner_id")?,
                customer_tenant_id: column(row, "customer_tenant_id")?,
                request_id: column(row, "request_id")?,
                request_fingerprint: row.try_get("request_fingerprint")?,
                status: column(row, "status")?,
                currency_code: row.try_get("currency_code")?,
                minor_unit_digits: row.try_get("minor_unit_digits")?,
                total_minor: row.try_get("total_minor")?,
                tax_included: row.try_get("tax_included")?,
                price_list_version: row.try_get("price_list_version")?,
                placed_by_user_id: row.try_get("placed_by_user_id")?,
                created_at: row.try_get("created_at_us")?,
                lines: Vec::new(),
            })
        })()
    };
}

/// Reads a customer row; evaluates to `StoreResult<Customer>`.
macro_rules! customer_from_row {
    ($row:expr) => {
        (|| -> StoreResult<Customer> {
            let row = $row;
            Ok(Customer {
                tenant_id: column(row, "tenant_id")?,
                partner_id: column(row, "partner_id")?,
                domain_name: row.try_get("domain_name")?,
                company_name: row.try_get("company_name")?,
                market: row.try_get("market")?,
                created_at: row.try_get("created_at_us")?,
            })
        })()
    };
}

/// Reads an order line row; evaluates to `StoreResult<OrderLine>`.
macro_rules! line_from_row {
    ($row:expr) => {
        (|| -> StoreResult<OrderLine> {
            let row = $row;
            Ok(OrderLine {
                line_number: row.try_get("line_number")?,
                sku_id: row.try_get("sku_id")?,
                product_id: row.try_get("product_id")?,
                product_title: row.try_get("product_title")?,
                product_kind: column(row, "product_kind")?,
                term: column(row, "term")?,
                quantity: row.try_get("quantity")?,
                unit_price_minor: row.try_get("unit_price_minor")?,
                amount_minor: row.try_get("amount_minor")?,
                subscription_id: column(row, "subscription_id")?,
            })
        })()
    };
}

const CUSTOMER_COLUMNS: &str =
    "tenant_id, partner_id, domain_name, company_name, market, created_at_us";
const ORDER_COLUMNS: &str = "id, partner_id, customer_tenant_id, request_id, request_fingerprint, status, currency_code, \
                             minor_unit_digits, total_minor, tax_included, placed_by_user_id, created_at_us, price_list_version";
const SUBSCRIPTION_COLUMNS: &str = "id, partner_id, customer_tenant_id, order_id, line_number, product_id, product_kind, \
                                    sku_id, status, quantity, currency_code, minor_unit_digits, amount_paid_minor, \
                                    purchased_at_us, cancellation_window_days, cancellable_until_us, cancelled_at_us, \
                                    refunded_minor, cancel_reason, cancel_ticket_id, term_ends_at_us, policy_id, \
                                    policy_version, policy_window_unit, policy_window_amount, policy_refund_rule, \
                                    policy_cap_amount_minor, policy_cap_currency, policy_cap_period_days, \
                                    cap_value_minor, refunded_cap_minor";

/// Reads and writes the ordering tables.
#[derive(Clone, Debug)]
pub struct OrderingStore {
    db: Db,
}

impl OrderingStore {
    /// A store over `db` (migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Inserts a customer. A domain name ([`CUSTOMER_DOMAIN_KEY`]) or tenant
    /// id ([`CUSTOMER_TENANT_KEY`]) the partner already has is a conflict;
    /// another partner's customers do not count.
    pub async fn insert_customer(&self, customer: &Customer) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO customers ({CUSTOMER_COLUMNS}, company_name_folded) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        );
        on_db!(&self.db, pool => sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(customer.tenant_id.to_string())
            .bind(customer.partner_id.to_string())
            .bind(&customer.domain_name)
            .bind(&customer.company_name)
            .bind(&customer.market)
            .bind(customer.created_at)
            .bind(customer.company_name.to_lowercase())
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }

    /// A partner's customer by tenant id.
    pub async fn customer_by_tenant(
        &self,
        partner_id: PartnerId,
        tenant_id: TenantId,
    ) -> StoreResult<Option<Customer>> {
        let sql = format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE partner_id = $1 AND tenant_id = $2"
        );
        self.one_customer(&sql, partner_id, &tenant_id.to_string())
            .await
    }

    /// A partner's customer by domain name (lower case).
    pub async fn customer_by_domain(
        &self,
        partner_id: PartnerId,
        domain_name: &str,
    ) -> StoreResult<Option<Customer>> {
        let sql = format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE partner_id = $1 AND domain_name = $2"
        );
        self.one_customer(&sql, partner_id, domain_name).await
    }

    async fn one_customer(
        &self,
        sql: &str,
        partner_id: PartnerId,
        key: &str,
    ) -> StoreResult<Option<Customer>> {
        on_db!(&self.db, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(partner_id.to_string())
                .bind(key)
                .fetch_optional(pool)
                .await?;
            row.map(|r| customer_from_row!(&r)).transpose()
        })
    }

    /// A page of a partner's customers by company name, after the cursor
    /// (folded name, tenant id), whose folded name or domain contains
    /// `search` (lower case; empty matches all).
    pub async fn list_customers(
        &self,
        partner_id: PartnerId,
        search: &str,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> StoreResult<Vec<Customer>> {
        let pattern = format!("%{}%", escape_like(search));
        let (after_name, after_id) = after.unwrap_or(("", ""));
        let sql = format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE partner_id = $1 \
             AND (company_name_folded LIKE $2 ESCAPE '\\' OR domain_name LIKE $2 ESCAPE '\\') \
             AND (company_name_folded, tenant_id) > ($3, $4) \
             ORDER BY company_name_folded, tenant_id LIMIT $5"
        );
        on_db!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(partner_id.to_string())
                .bind(&pattern)
                .bind(after_name)
                .bind(after_id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| customer_from_row!(r)).collect()
        })
    }

    /// The order a partner placed with `request_id`, if any.
    pub async fn order_by_request(
        &self,
        partner_id: PartnerId,
        request_id: RequestId,
    ) -> StoreResult<Option<Order>> {
        let sql =
            format!("SELECT {ORDER_COLUMNS} FROM orders WHERE partner_id = $1 AND request_id = $2");
        self.one_order(&sql, partner_id, &request_id.to_string())
            .await
    }

    /// A partner's order.
    pub async fn order(
        &self,
        partner_id: PartnerId,
        order_id: OrderId,
    ) -> StoreResult<Option<Order>> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE partner_id = $1 AND id = $2");
        self.one_order(&sql, partner_id, &order_id.to_string())
            .await
    }

    async fn one_order(
        &self,
        sql: &str,
        partner_id: PartnerId,
        key: &str,
    ) -> StoreResult<Option<Order>> {
        let order: Option<Order> = on_db!(&self.db, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(partner_id.to_string())
                .bind(key)
                .fetch_optional(pool)
                .await?;
            row.map(|r| order_from_row!(&r)).transpose()
        })?;
        match order {
            Some(mut order) => {
                order.lines = self.lines(order.id).await?;
                Ok(Some(order))
            }
            None => Ok(None),
        }
    }

    async fn lines(&self, order_id: OrderId) -> StoreResult<Vec<OrderLine>> {
        const SQL: &str = "SELECT line_number, sku_id, product_id, product_title, product_kind, term, quantity, \
                           unit_price_minor, amount_minor, subscription_id FROM order_lines WHERE order_id = $1 \
                           ORDER BY line_number";
        on_db!(&self.db, pool => {
            let rows = sqlx::query(SQL).bind(order_id.to_string()).fetch_all(pool).await?;
            rows.iter().map(|r| line_from_row!(r)).collect()
        })
    }

    /// A page of a customer's orders, newest first, after the cursor
    /// (created at, id).
    pub async fn list_orders(
        &self,
        partner_id: PartnerId,
        customer: TenantId,
        before: Option<(Micros, &str)>,
        limit: u32,
    ) -> StoreResult<Vec<Order>> {
        let (before_at, before_id) = before.unwrap_or((Micros::MAX, ""));
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE partner_id = $1 AND customer_tenant_id = $2 \
             AND (created_at_us, id) < ($3, $4) \
             ORDER BY created_at_us DESC, id DESC LIMIT $5"
        );
        let mut orders: Vec<Order> = on_db!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(partner_id.to_string())
                .bind(customer.to_string())
                .bind(before_at)
                .bind(before_id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| order_from_row!(r)).collect::<StoreResult<Vec<_>>>()
        })?;
        for order in &mut orders {
            order.lines = self.lines(order.id).await?;
        }
        Ok(orders)
    }

    /// A partner's subscription.
    pub async fn subscription(
        &self,
        partner_id: PartnerId,
        id: SubscriptionId,
    ) -> StoreResult<Option<Subscription>> {
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE partner_id = $1 AND id = $2"
        );
        on_db!(&self.db, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(partner_id.to_string())
                .bind(id.to_string())
                .fetch_optional(pool)
                .await?;
            row.map(|r| subscription_from_row!(&r)).transpose()
        })
    }

    /// The subscriptions of a partner's order, by line.
    pub async fn subscriptions_of_order(
        &self,
        partner_id: PartnerId,
        order_id: OrderId,
    ) -> StoreResult<Vec<Subscription>> {
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE partner_id = $1 AND order_id = $2 ORDER BY line_number"
        );
        on_db!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(partner_id.to_string())
                .bind(order_id.to_string())
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| subscription_from_row!(r)).collect()
        })
    }

    /// A page of a customer's subscriptions by purchase time, after the
    /// cursor (purchased at, id), optionally of one status.
    pub async fn list_subscriptions(
        &self,
        partner_id: PartnerId,
        customer: TenantId,
        status: Option<SubscriptionStatus>,
        after: Option<(Micros, &str)>,
        limit: u32,
    ) -> StoreResult<Vec<Subscription>> {
        let (after_at, after_id) = after.unwrap_or((Micros::MIN, ""));
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE partner_id = $1 AND customer_tenant_id = $2 \
             AND ($3 = '' OR status = $3) \
             AND (purchased_at_us, id) > ($4, $5) \
             ORDER BY purchased_at_us, id LIMIT $6"
        );
        on_db!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(partner_id.to_string())
                .bind(customer.to_string())
                .bind(status.map_or("", SubscriptionStatus::as_db))
                .bind(after_at)
                .bind(after_id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| subscription_from_row!(r)).collect()
        })
    }

    /// Inserts a placed order with its lines, subscriptions, the partner's
    /// charge and the outbox messages, in one transaction. A partner's
    /// request id used before is a conflict on [`ORDER_REQUEST_KEY`].
    pub async fn insert_order(
        &self,
        order: &Order,
        subscriptions: &[Subscription],
        messages: &[Message],
    ) -> StoreResult<()> {
        let mut tx = self.db.begin().await?;
        let order_sql = format!(
            "INSERT INTO orders ({ORDER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        );
        on_tx!(&mut tx, t => sqlx::query(sqlx::AssertSqlSafe(order_sql.as_str()))
            .bind(order.id.to_string())
            .bind(order.partner_id.to_string())
            .bind(order.customer_tenant_id.to_string())
            .bind(order.request_id.to_string())
            .bind(&order.request_fingerprint)
            .bind(order.status.as_db())
            .bind(&order.currency_code)
            .bind(order.minor_unit_digits)
            .bind(order.total_minor)
            .bind(order.tax_included)
            .bind(&order.placed_by_user_id)
            .bind(order.created_at)
            .bind(order.price_list_version)
            .execute(&mut **t)
            .await
            .map(drop))?;
        for line in &order.lines {
            const SQL: &str = "INSERT INTO order_lines (order_id, line_number, sku_id, product_id, product_title, \
                               product_kind, term, quantity, unit_price_minor, amount_minor, subscription_id) \
                               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
            on_tx!(&mut tx, t => sqlx::query(SQL)
                .bind(order.id.to_string())
                .bind(line.line_number)
                .bind(&line.sku_id)
                .bind(&line.product_id)
                .bind(&line.product_title)
                .bind(line.product_kind.as_db())
                .bind(line.term.as_db())
                .bind(line.quantity)
                .bind(line.unit_price_minor)
                .bind(line.amount_minor)
                .bind(line.subscription_id.to_string())
                .execute(&mut **t)
                .await
            .map(drop))?;
        }
        for s in subscriptions {
            let sql = format!(
                "INSERT INTO subscriptions ({SUBSCRIPTION_COLUMNS}) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, NULL, NULL, NULL, NULL, \
                 $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, NULL)"
            );
            on_tx!(&mut tx, t => sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(s.id.to_string())
                .bind(s.partner_id.to_string())
                .bind(s.customer_tenant_id.to_string())
                .bind(s.order_id.to_string())
                .bind(s.line_number)
                .bind(&s.product_id)
                .bind(s.product_kind.as_db())
                .bind(&s.sku_id)
                .bind(s.status.as_db())
                .bind(s.quantity)
                .bind(&s.currency_code)
                .bind(s.minor_unit_digits)
                .bind(s.amount_paid_minor)
                .bind(s.purchased_at)
                .bind(s.cancellation_window_days)
                .bind(s.cancellable_until)
                .bind(s.term_ends_at)
                .bind(&s.policy.id)
                .bind(i64::from(s.policy.version))
                .bind(s.policy.window_unit.as_db())
                .bind(s.policy.window_amount.map(i64::from))
                .bind(s.policy.refund_rule.as_db())
                .bind(s.policy.cap.as_ref().map(|c| c.amount_minor))
                .bind(s.policy.cap.as_ref().map(|c| c.currency.clone()))
                .bind(s.policy.cap.as_ref().map(|c| i64::from(c.period_days)))
                .bind(s.cap_value_minor)
                .execute(&mut **t)
                .await
            .map(drop))?;
        }
        on_tx!(&mut tx, t => sqlx::query(BILL_PURCHASES)
            .bind(order.id.to_string())
            .execute(&mut **t)
            .await
            .map(drop))?;
        for message in messages {
            outbox::enqueue(&mut tx, message).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Cancels an active subscription inside its window, records the refund
    /// and the outbox messages, and marks the order cancelled when none of
    /// its subscriptions is left active, in one transaction. Returns false
    /// when the subscription was no longer active and cancellable (another
    /// call got there first, or the window closed).
    pub async fn cancel(
        &self,
        cancellation: &Cancellation,
        messages: &[Message],
    ) -> StoreResult<CancelOutcome> {
        let cancel = format!(
            "UPDATE subscriptions SET status = '{cancelled}', cancelled_at_us = $3, refunded_minor = $4, \
             cancel_reason = $5, cancel_ticket_id = $6, refunded_cap_minor = $8 \
             WHERE partner_id = $1 AND id = $2 AND status = '{active}' AND cancellable_until_us > $7",
            cancelled = SubscriptionStatus::Cancelled.as_db(),
            active = SubscriptionStatus::Active.as_db(),
        );
        let order_done = format!(
            "UPDATE orders SET status = '{cancelled}' WHERE id = \
             (SELECT order_id FROM subscriptions WHERE id = $1) \
             AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.order_id = orders.id \
             AND s.status = '{active}')",
            cancelled = OrderStatus::Cancelled.as_db(),
            active = SubscriptionStatus::Active.as_db(),
        );
        let mut tx = self.db.begin().await?;
        let c = cancellation;
        // One cancellation at a time per customer, so a refund cap's sum is
        // read and kept in one transaction (SQLite: the writer queue).
        if let DbTx::Postgres(t) = &mut tx {
            sqlx::query(
                "SELECT 1 FROM customers WHERE partner_id = $1 AND tenant_id = $2 FOR UPDATE",
            )
            .bind(c.partner_id.to_string())
            .bind(c.customer_tenant_id.to_string())
            .execute(&mut **t)
            .await?;
        }
        let changed = on_tx!(&mut tx, t => sqlx::query(sqlx::AssertSqlSafe(cancel.as_str()))
            .bind(c.partner_id.to_string())
            .bind(c.subscription_id.to_string())
            .bind(c.at)
            .bind(c.refund_minor)
            .bind(&c.reason)
            .bind(&c.ticket_id)
            .bind(c.judged_at)
            .bind(c.cap.as_ref().map(|_| c.refund_cap_minor))
            .execute(&mut **t)
            .await
            .map(|r| r.rows_affected()))?;
        if changed == 0 {
            return Ok(CancelOutcome::NotActive);
        }
        if let Some((amount, currency, since)) = &c.cap {
            // This refund included: over the cap, nothing is written.
            let used: i64 = on_tx!(&mut tx, t => sqlx::query_scalar(REFUNDS_IN_PERIOD)
                .bind(c.partner_id.to_string())
                .bind(c.customer_tenant_id.to_string())
                .bind(currency)
                .bind(*since)
                .fetch_one(&mut **t)
                .await)?;
            if used > *amount {
                return Ok(CancelOutcome::CapExceeded {
                    left: (amount - (used - c.refund_cap_minor)).max(0),
                });
            }
        }
        on_tx!(&mut tx, t => {
            sqlx::query(BILL_REFUND)
                .bind(c.subscription_id.to_string())
                .execute(&mut **t)
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(order_done.as_str()))
                .bind(c.subscription_id.to_string())
                .execute(&mut **t)
                .await
                .map(drop)
        })?;
        for message in messages {
            outbox::enqueue(&mut tx, message).await?;
        }
        tx.commit().await?;
        Ok(CancelOutcome::Cancelled)
    }

    /// What a customer's refunds since `since` counted toward caps in
    /// `currency` (a refund cap's rolling period).
    pub async fn refunds_in_period(
        &self,
        partner: PartnerId,
        customer: TenantId,
        currency: &str,
        since: Micros,
    ) -> StoreResult<i64> {
        Ok(
            on_db!(&self.db, pool => sqlx::query_scalar(REFUNDS_IN_PERIOD)
            .bind(partner.to_string())
            .bind(customer.to_string())
            .bind(currency)
            .bind(since)
            .fetch_one(pool)
            .await)?,
        )
    }
}

/// Reads a billing line item row; evaluates to `StoreResult<BillingLineItem>`.
macro_rules! line_item_from_row {
    ($row:expr) => {
        (|| -> StoreResult<BillingLineItem> {
            let r = $row;
            let policy_version: i64 = r.try_get("policy_version")?;
            Ok(BillingLineItem {
                id: r.try_get("id")?,
                partner_id: column(r, "partner_id")?,
                charge_type: column(r, "charge_type")?,
                billed_at: r.try_get("billed_at_us")?,
                order_id: column(r, "order_id")?,
                subscription_id: column(r, "subscription_id")?,
                customer_tenant_id: column(r, "customer_tenant_id")?,
                sku_id: r.try_get("sku_id")?,
                product_id: r.try_get("product_id")?,
                market: r.try_get("market")?,
                currency_code: r.try_get("currency_code")?,
                minor_unit_digits: r.try_get("minor_unit_digits")?,
                quantity: r.try_get("quantity")?,
                unit_price_minor: r.try_get("unit_price_minor")?,
                amount_minor: r.try_get("amount_minor")?,
                tax_included: r.try_get("tax_included")?,
                price_list_version: r.try_get("price_list_version")?,
                policy_id: r.try_get("policy_id")?,
                policy_version: u32::try_from(policy_version).map_err(|_| {
                    StoreError::corrupt(
                        "billing_line_items.policy_version",
                        policy_version.to_string(),
                    )
                })?,
            })
        })()
    };
}

/// The columns of a billing line item, in [`BillingLineItem`] order.
macro_rules! line_item_columns {
    () => {
        "id, partner_id, charge_type, billed_at_us, order_id, subscription_id, customer_tenant_id, sku_id, \
         product_id, market, currency_code, minor_unit_digits, quantity, unit_price_minor, amount_minor, \
         tax_included, price_list_version, policy_id, policy_version"
    };
}

/// The line items of what a row of subscriptions joined with its order,
/// order line and customer bills (the same SELECT as migration 7's).
macro_rules! bill_from {
    ($charge:literal, $at:literal, $amount:literal, $where:literal) => {
        concat!(
            "INSERT INTO billing_line_items (",
            line_item_columns!(),
            ") SELECT '",
            $charge,
            "-' || s.id, s.partner_id, '",
            $charge,
            "', ",
            $at,
            ", o.id, s.id, s.customer_tenant_id, l.sku_id, l.product_id, c.market, o.currency_code, \
             o.minor_unit_digits, l.quantity, l.unit_price_minor, ",
            $amount,
            ", o.tax_included, o.price_list_version, s.policy_id, s.policy_version \
             FROM subscriptions s JOIN orders o ON o.id = s.order_id \
             JOIN order_lines l ON l.order_id = s.order_id AND l.line_number = s.line_number \
             JOIN customers c ON c.partner_id = s.partner_id AND c.tenant_id = s.customer_tenant_id WHERE ",
            $where
        )
    };
}

/// A purchase line item for each line of order $1.
const BILL_PURCHASES: &str = bill_from!(
    "purchase",
    "o.created_at_us",
    "l.amount_minor",
    "s.order_id = $1"
);
/// The refund line item of cancelled subscription $1.
const BILL_REFUND: &str = bill_from!(
    "refund",
    "s.cancelled_at_us",
    "-s.refunded_minor",
    "s.id = $1"
);
/// A partner's line items billed in [$2, $3), optionally in currency $4
/// (empty: all), after ($5, $6) in (time, id) order, at most $7.
const LINE_ITEMS: &str = concat!(
    "SELECT ",
    line_item_columns!(),
    " FROM billing_line_items WHERE partner_id = $1 AND billed_at_us >= $2 AND billed_at_us < $3 \
     AND ($4 = '' OR currency_code = $4) AND (billed_at_us > $5 OR (billed_at_us = $5 AND id > $6)) \
     ORDER BY billed_at_us, id LIMIT $7"
);
/// Per currency: the partner's balance before $2, and the charges, credits
/// and count in [$2, $3).
const STATEMENT: &str = "SELECT currency_code, MAX(minor_unit_digits), \
     CAST(COALESCE(SUM(CASE WHEN billed_at_us < $2 THEN amount_minor ELSE 0 END), 0) AS BIGINT), \
     CAST(COALESCE(SUM(CASE WHEN billed_at_us >= $2 AND charge_type = 'purchase' THEN amount_minor ELSE 0 END), 0) AS BIGINT), \
     CAST(COALESCE(SUM(CASE WHEN billed_at_us >= $2 AND charge_type = 'refund' THEN amount_minor ELSE 0 END), 0) AS BIGINT), \
     CAST(COALESCE(SUM(CASE WHEN billed_at_us >= $2 THEN 1 ELSE 0 END), 0) AS BIGINT) \
     FROM billing_line_items WHERE partner_id = $1 AND billed_at_us < $3 \
     GROUP BY currency_code ORDER BY currency_code";

impl OrderingStore {
    /// A partner's line items billed in `[from, until)`, in `currency`
    /// (empty: all), after `after` in (time, id) order, at most `limit`.
    pub async fn line_items(
        &self,
        partner: PartnerId,
        (from, until): (Micros, Micros),
        currency: &str,
        after: (Micros, &str),
        limit: u32,
    ) -> StoreResult<Vec<BillingLineItem>> {
        on_db!(&self.db, pool => {
            let rows = sqlx::query(LINE_ITEMS)
                .bind(partner.to_string())
                .bind(from)
                .bind(until)
                .bind(currency)
                .bind(after.0)
                .bind(after.1)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| line_item_from_row!(r)).collect()
        })
    }

    /// Per currency, the partner's balance before `from` and the month
    /// `[from, until)`'s charges, credits and line items.
    pub async fn statement(
        &self,
        partner: PartnerId,
        (from, until): (Micros, Micros),
    ) -> StoreResult<Vec<CurrencyStatement>> {
        let rows: Vec<(String, i32, i64, i64, i64, i64)> = on_db!(&self.db, pool => sqlx::query_as(STATEMENT)
            .bind(partner.to_string())
            .bind(from)
            .bind(until)
            .fetch_all(pool)
            .await)?;
        Ok(rows
            .into_iter()
            .map(
                |(currency_code, minor_unit_digits, opening, charges, credits, count)| {
                    CurrencyStatement {
                        currency_code,
                        minor_unit_digits,
                        opening_minor: opening,
                        charges_minor: charges,
                        credits_minor: credits,
                        line_items: count,
                    }
                },
            )
            .collect())
    }
}

/// What a cancellation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Cancelled now, with its refund and events.
    Cancelled,
    /// Nothing: not active (cancelled already) or its window closed.
    NotActive,
    /// Nothing: the refund would pass the customer's cap, of which `left`
    /// is left.
    CapExceeded {
        /// Minor units.
        left: i64,
    },
}

/// What a customer's refunds since a time counted toward caps in one
/// currency ($1 partner, $2 customer, $3 the cap's currency, $4 since).
const REFUNDS_IN_PERIOD: &str = "SELECT CAST(COALESCE(SUM(refunded_cap_minor), 0) AS BIGINT) FROM subscriptions \
                                 WHERE partner_id = $1 AND customer_tenant_id = $2 AND policy_cap_currency = $3 \
                                 AND status = 'cancelled' AND cancelled_at_us > $4";

/// Escapes LIKE wildcards so a search text matches literally.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(escape_like("50%_off\\"), "50\\%\\_off\\\\");
    }
}
