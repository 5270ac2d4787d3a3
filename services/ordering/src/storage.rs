//! Ordering storage: SQL over SQLite or PostgreSQL. Every read is scoped to a
//! partner, so another partner's rows are simply not found.

use csp_kit::clock::Micros;
use csp_store::db::{Db, MigrationSource, Migrations};
use csp_store::outbox::{self, Message};
use csp_store::{StoreResult, on_db, on_tx};
use sqlx::Row as _;

/// The ordering service's migrations.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[ORDERING, outbox::sqlite_migration(2)],
    postgres: &[ORDERING, outbox::postgres_migration(2)],
};

const ORDERING: MigrationSource = MigrationSource {
    version: 1,
    description: "ordering",
    sql: include_str!("../migrations/0001_ordering.sql"),
};

/// A partner's customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Customer {
    /// Tenant id (UUID text).
    pub tenant_id: String,
    /// The partner.
    pub partner_id: String,
    /// Domain name, lower case.
    pub domain_name: String,
    /// Company name.
    pub company_name: String,
    /// Market code.
    pub market: String,
    /// Created at.
    pub created_at: Micros,
}

/// A line of a placed order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderLine {
    /// 1-based.
    pub line_number: i32,
    /// SKU.
    pub sku_id: String,
    /// Product.
    pub product_id: String,
    /// Product title at order time.
    pub product_title: String,
    /// `server_subscription` or `azure_reservation`.
    pub product_kind: String,
    /// `P1Y` or `P3Y`.
    pub term: String,
    /// Units.
    pub quantity: i32,
    /// Unit price, minor units.
    pub unit_price_minor: i64,
    /// Line amount, minor units.
    pub amount_minor: i64,
    /// The subscription it became.
    pub subscription_id: String,
}

/// A placed order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    /// Id.
    pub id: String,
    /// Partner.
    pub partner_id: String,
    /// Customer.
    pub customer_tenant_id: String,
    /// The client's request id.
    pub request_id: String,
    /// Fingerprint of the request body.
    pub request_fingerprint: String,
    /// `completed` or `cancelled`.
    pub status: String,
    /// Currency.
    pub currency_code: String,
    /// Minor unit digits.
    pub minor_unit_digits: i32,
    /// Total, minor units.
    pub total_minor: i64,
    /// Whether prices include tax.
    pub tax_included: bool,
    /// Who placed it.
    pub placed_by_user_id: String,
    /// When.
    pub created_at: Micros,
    /// Lines.
    pub lines: Vec<OrderLine>,
}

/// A subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// Id.
    pub id: String,
    /// Partner.
    pub partner_id: String,
    /// Customer.
    pub customer_tenant_id: String,
    /// Order.
    pub order_id: String,
    /// Its order line.
    pub line_number: i32,
    /// Product.
    pub product_id: String,
    /// Product kind.
    pub product_kind: String,
    /// SKU.
    pub sku_id: String,
    /// `active` or `cancelled`.
    pub status: String,
    /// Units.
    pub quantity: i32,
    /// Currency.
    pub currency_code: String,
    /// Minor unit digits.
    pub minor_unit_digits: i32,
    /// Paid, minor units.
    pub amount_paid_minor: i64,
    /// Bought at.
    pub purchased_at: Micros,
    /// The window in days.
    pub cancellation_window_days: i32,
    /// End (exclusive) of the window.
    pub cancellable_until: Micros,
    /// Cancelled at.
    pub cancelled_at: Option<Micros>,
    /// Refunded, minor units.
    pub refunded_minor: Option<i64>,
    /// Why it was cancelled.
    pub cancel_reason: Option<String>,
    /// The ticket that cancelled it.
    pub cancel_ticket_id: Option<String>,
}

/// A cancellation to record.
#[derive(Clone, Debug)]
pub struct Cancellation {
    /// Partner.
    pub partner_id: String,
    /// Subscription.
    pub subscription_id: String,
    /// When.
    pub at: Micros,
    /// Refund, minor units.
    pub refund_minor: i64,
    /// Why.
    pub reason: String,
    /// The ticket.
    pub ticket_id: String,
}

macro_rules! subscription_from_row {
    ($row:expr) => {
        Subscription {
            id: $row.try_get("id")?,
            partner_id: $row.try_get("partner_id")?,
            customer_tenant_id: $row.try_get("customer_tenant_id")?,
            order_id: $row.try_get("order_id")?,
            line_number: $row.try_get("line_number")?,
            product_id: $row.try_get("product_id")?,
            product_kind: $row.try_get("product_kind")?,
            sku_id: $row.try_get("sku_id")?,
            status: $row.try_get("status")?,
            quantity: $row.try_get("quantity")?,
            currency_code: $row.try_get("currency_code")?,
            minor_unit_digits: $row.try_get("minor_unit_digits")?,
            amount_paid_minor: $row.try_get("amount_paid_minor")?,
            purchased_at: $row.try_get("purchased_at_us")?,
            cancellation_window_days: $row.try_get("cancellation_window_days")?,
            cancellable_until: $row.try_get("cancellable_until_us")?,
            cancelled_at: $row.try_get("cancelled_at_us")?,
            refunded_minor: $row.try_get("refunded_minor")?,
            cancel_reason: $row.try_get("cancel_reason")?,
            cancel_ticket_id: $row.try_get("cancel_ticket_id")?,
        }
    };
}

macro_rules! order_from_row {
    ($row:expr) => {
        Order {
            id: $row.try_get("id")?,
            partner_id: $row.try_get("partner_id")?,
            customer_tenant_id: $row.try_get("customer_tenant_id")?,
            request_id: $row.try_get("request_id")?,
            request_fingerprint: $row.try_get("request_fingerprint")?,
            status: $row.try_get("status")?,
            currency_code: $row.try_get("currency_code")?,
            minor_unit_digits: $row.try_get("minor_unit_digits")?,
            total_minor: $row.try_get("total_minor")?,
            tax_included: $row.try_get("tax_included")?,
            placed_by_user_id: $row.try_get("placed_by_user_id")?,
            created_at: $row.try_get("created_at_us")?,
            lines: Vec::new(),
        }
    };
}

const CUSTOMER_COLUMNS: &str =
    "tenant_id, partner_id, domain_name, company_name, market, created_at_us";
const ORDER_COLUMNS: &str = "id, partner_id, customer_tenant_id, request_id, request_fingerprint, status, currency_code, \
                             minor_unit_digits, total_minor, tax_included, placed_by_user_id, created_at_us";
const SUBSCRIPTION_COLUMNS: &str = "id, partner_id, customer_tenant_id, order_id, line_number, product_id, product_kind, \
                                    sku_id, status, quantity, currency_code, minor_unit_digits, amount_paid_minor, \
                                    purchased_at_us, cancellation_window_days, cancellable_until_us, cancelled_at_us, \
                                    refunded_minor, cancel_reason, cancel_ticket_id";

type CustomerRow = (String, String, String, String, String, i64);

fn customer_from_row(row: CustomerRow) -> Customer {
    let (tenant_id, partner_id, domain_name, company_name, market, created_at) = row;
    Customer {
        tenant_id,
        partner_id,
        domain_name,
        company_name,
        market,
        created_at,
    }
}

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

    /// Inserts a customer. A taken domain name (`customers_domain_name_key`)
    /// or tenant id is a [`csp_store::StoreError::Conflict`].
    pub async fn insert_customer(&self, customer: &Customer) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO customers ({CUSTOMER_COLUMNS}, company_name_folded) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        );
        let result = on_db!(&self.db, pool => sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(&customer.tenant_id)
            .bind(&customer.partner_id)
            .bind(&customer.domain_name)
            .bind(&customer.company_name)
            .bind(&customer.market)
            .bind(customer.created_at)
            .bind(customer.company_name.to_lowercase())
            .execute(pool)
            .await
            .map(|_| ()));
        Ok(result?)
    }

    /// A partner's customer by tenant id.
    pub async fn customer_by_tenant(
        &self,
        partner_id: &str,
        tenant_id: &str,
    ) -> StoreResult<Option<Customer>> {
        let sql = format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE partner_id = $1 AND tenant_id = $2"
        );
        let row: Option<CustomerRow> = on_db!(&self.db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(partner_id)
            .bind(tenant_id)
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(customer_from_row))
    }

    /// A partner's customer by domain name (lower case).
    pub async fn customer_by_domain(
        &self,
        partner_id: &str,
        domain_name: &str,
    ) -> StoreResult<Option<Customer>> {
        let sql = format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE partner_id = $1 AND domain_name = $2"
        );
        let row: Option<CustomerRow> = on_db!(&self.db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(partner_id)
            .bind(domain_name)
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(customer_from_row))
    }

    /// A page of a partner's customers by company name, after the cursor
    /// (folded name, tenant id), whose folded name or domain contains
    /// `search` (lower case; empty matches all).
    pub async fn list_customers(
        &self,
        partner_id: &str,
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
        let rows: Vec<CustomerRow> = on_db!(&self.db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(partner_id)
            .bind(&pattern)
            .bind(after_name)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)?;
        Ok(rows.into_iter().map(customer_from_row).collect())
    }

    /// The order a partner placed with `request_id`, if any.
    pub async fn order_by_request(
        &self,
        partner_id: &str,
        request_id: &str,
    ) -> StoreResult<Option<Order>> {
        let sql =
            format!("SELECT {ORDER_COLUMNS} FROM orders WHERE partner_id = $1 AND request_id = $2");
        self.one_order(&sql, partner_id, request_id).await
    }

    /// A partner's order.
    pub async fn order(&self, partner_id: &str, order_id: &str) -> StoreResult<Option<Order>> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE partner_id = $1 AND id = $2");
        self.one_order(&sql, partner_id, order_id).await
    }

    async fn one_order(
        &self,
        sql: &str,
        partner_id: &str,
        key: &str,
    ) -> StoreResult<Option<Order>> {
        let order: Option<Order> = on_db!(&self.db, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(partner_id).bind(key).fetch_optional(pool).await?;
            row.map(|r| Ok::<_, sqlx::Error>(order_from_row!(r))).transpose()
        })?;
        match order {
            Some(mut order) => {
                order.lines = self.lines(&order.id).await?;
                Ok(Some(order))
            }
            None => Ok(None),
        }
    }

    async fn lines(&self, order_id: &str) -> StoreResult<Vec<OrderLine>> {
        const SQL: &str = "SELECT line_number, sku_id, product_id, product_title, product_kind, term, quantity, \
                           unit_price_minor, amount_minor, subscription_id FROM order_lines WHERE order_id = $1 \
                           ORDER BY line_number";
        type LineRow = (
            i32,
            String,
            String,
            String,
            String,
            String,
            i32,
            i64,
            i64,
            String,
        );
        let rows: Vec<LineRow> =
            on_db!(&self.db, pool => sqlx::query_as(SQL).bind(order_id).fetch_all(pool).await)?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    line_number,
                    sku_id,
                    product_id,
                    product_title,
                    product_kind,
                    term,
                    quantity,
                    unit,
                    amount,
                    sub,
                )| {
                    OrderLine {
                        line_number,
                        sku_id,
                        product_id,
                        product_title,
                        product_kind,
                        term,
                        quantity,
                        unit_price_minor: unit,
                        amount_minor: amount,
                        subscription_id: sub,
                    }
                },
            )
            .collect())
    }

    /// A page of a customer's orders, newest first, after the cursor
    /// (created at, id).
    pub async fn list_orders(
        &self,
        partner_id: &str,
        customer: &str,
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
                .bind(partner_id)
                .bind(customer)
                .bind(before_at)
                .bind(before_id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| Ok::<_, sqlx::Error>(order_from_row!(r))).collect::<Result<Vec<_>, _>>()
        })?;
        for order in &mut orders {
            order.lines = self.lines(&order.id).await?;
        }
        Ok(orders)
    }

    /// A partner's subscription.
    pub async fn subscription(
        &self,
        partner_id: &str,
        id: &str,
    ) -> StoreResult<Option<Subscription>> {
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE partner_id = $1 AND id = $2"
        );
        Ok(on_db!(&self.db, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).bind(partner_id).bind(id).fetch_optional(pool).await?;
            row.map(|r| Ok::<_, sqlx::Error>(subscription_from_row!(r))).transpose()
        })?)
    }

    /// The subscriptions of a partner's order, by line.
    pub async fn subscriptions_of_order(
        &self,
        partner_id: &str,
        order_id: &str,
    ) -> StoreResult<Vec<Subscription>> {
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE partner_id = $1 AND order_id = $2 ORDER BY line_number"
        );
        Ok(on_db!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).bind(partner_id).bind(order_id).fetch_all(pool).await?;
            rows.iter().map(|r| Ok::<_, sqlx::Error>(subscription_from_row!(r))).collect::<Result<Vec<_>, _>>()
        })?)
    }

    /// A page of a customer's subscriptions by purchase time, after the
    /// cursor (purchased at, id), optionally of one status.
    pub async fn list_subscriptions(
        &self,
        partner_id: &str,
        customer: &str,
        status: Option<&str>,
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
        Ok(on_db!(&self.db, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(partner_id)
                .bind(customer)
                .bind(status.unwrap_or(""))
                .bind(after_at)
                .bind(after_id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| Ok::<_, sqlx::Error>(subscription_from_row!(r))).collect::<Result<Vec<_>, _>>()
        })?)
    }

    /// Inserts a placed order with its lines, subscriptions, the partner's
    /// charge and the outbox messages, in one transaction.
    pub async fn insert_order(
        &self,
        order: &Order,
        subscriptions: &[Subscription],
        messages: &[Message],
    ) -> StoreResult<()> {
        let mut tx = self.db.begin().await?;
        let order_sql = format!(
            "INSERT INTO orders ({ORDER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        );
        let inserted = on_tx!(&mut tx, t => sqlx::query(sqlx::AssertSqlSafe(order_sql.as_str()))
            .bind(&order.id)
            .bind(&order.partner_id)
            .bind(&order.customer_tenant_id)
            .bind(&order.request_id)
            .bind(&order.request_fingerprint)
            .bind(&order.status)
            .bind(&order.currency_code)
            .bind(order.minor_unit_digits)
            .bind(order.total_minor)
            .bind(order.tax_included)
            .bind(&order.placed_by_user_id)
            .bind(order.created_at)
            .execute(&mut **t)
            .await
            .map(|_| ()));
        inserted?;
        for line in &order.lines {
            const SQL: &str = "INSERT INTO order_lines (order_id, line_number, sku_id, product_id, product_title, \
                               product_kind, term, quantity, unit_price_minor, amount_minor, subscription_id) \
                               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
            on_tx!(&mut tx, t => sqlx::query(SQL)
                .bind(&order.id)
                .bind(line.line_number)
                .bind(&line.sku_id)
                .bind(&line.product_id)
                .bind(&line.product_title)
                .bind(&line.product_kind)
                .bind(&line.term)
                .bind(line.quantity)
                .bind(line.unit_price_minor)
                .bind(line.amount_minor)
                .bind(&line.subscription_id)
                .execute(&mut **t)
                .await
                .map(|_| ()))?;
        }
        for s in subscriptions {
            let sql = format!(
                "INSERT INTO subscriptions ({SUBSCRIPTION_COLUMNS}) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, NULL, NULL, NULL, NULL)"
            );
            on_tx!(&mut tx, t => sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(&s.id)
                .bind(&s.partner_id)
                .bind(&s.customer_tenant_id)
                .bind(&s.order_id)
                .bind(s.line_number)
                .bind(&s.product_id)
                .bind(&s.product_kind)
                .bind(&s.sku_id)
                .bind(&s.status)
                .bind(s.quantity)
                .bind(&s.currency_code)
                .bind(s.minor_unit_digits)
                .bind(s.amount_paid_minor)
                .bind(s.purchased_at)
                .bind(s.cancellation_window_days)
                .bind(s.cancellable_until)
                .execute(&mut **t)
                .await
                .map(|_| ()))?;
        }
        const CHARGE: &str = "INSERT INTO partner_billing (id, partner_id, order_id, subscription_id, kind, \
                              currency_code, amount_minor, created_at_us) VALUES ($1, $2, $3, NULL, 'charge', $4, $5, $6)";
        on_tx!(&mut tx, t => sqlx::query(CHARGE)
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(&order.partner_id)
            .bind(&order.id)
            .bind(&order.currency_code)
            .bind(order.total_minor)
            .bind(order.created_at)
            .execute(&mut **t)
            .await
            .map(|_| ()))?;
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
    ) -> StoreResult<bool> {
        const CANCEL: &str = "UPDATE subscriptions SET status = 'cancelled', cancelled_at_us = $3, refunded_minor = $4, \
                              cancel_reason = $5, cancel_ticket_id = $6 \
                              WHERE partner_id = $1 AND id = $2 AND status = 'active' AND cancellable_until_us > $3";
        const REFUND: &str = "INSERT INTO partner_billing (id, partner_id, order_id, subscription_id, kind, \
                              currency_code, amount_minor, created_at_us) \
                              SELECT $1, partner_id, order_id, id, 'refund', currency_code, $2, $3 \
                              FROM subscriptions WHERE id = $4";
        const ORDER_DONE: &str = "UPDATE orders SET status = 'cancelled' WHERE id = \
                                  (SELECT order_id FROM subscriptions WHERE id = $1) \
                                  AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.order_id = orders.id \
                                  AND s.status = 'active')";
        let mut tx = self.db.begin().await?;
        let c = cancellation;
        let changed = on_tx!(&mut tx, t => sqlx::query(CANCEL)
            .bind(&c.partner_id)
            .bind(&c.subscription_id)
            .bind(c.at)
            .bind(c.refund_minor)
            .bind(&c.reason)
            .bind(&c.ticket_id)
            .execute(&mut **t)
            .await
            .map(|r| r.rows_affected()))?;
        if changed == 0 {
            return Ok(false);
        }
        on_tx!(&mut tx, t => {
            sqlx::query(REFUND)
                .bind(uuid::Uuid::new_v4().to_string())
                .bind(-c.refund_minor)
                .bind(c.at)
                .bind(&c.subscription_id)
                .execute(&mut **t)
                .await?;
            sqlx::query(ORDER_DONE).bind(&c.subscription_id).execute(&mut **t).await.map(|_| ())
        })?;
        for message in messages {
            outbox::enqueue(&mut tx, message).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

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
