//! The ordering storage contract: what `OrderingStore` promises its use
//! cases, pinned below the whole-system tests. Customers are scoped to their
//! partner and unique by domain name (across partners) and tenant id; the
//! customer list is ordered and paged by folded company name and searches
//! literally; an order is stored with its lines, subscriptions, charge and
//! outbox messages in one transaction, once per partner and request id;
//! a cancellation happens once, inside the window, with its refund and
//! messages, and cancels the order with its last active subscription; a
//! stored value this version cannot read is `StoreError::Corrupt`.
//!
//! Runs on SQLite, or on PostgreSQL when `CSP_TEST_POSTGRES_URL` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use csp_kit::clock::{DAY, Micros, SECOND};
use csp_kit::ids::{OrderId, PartnerId, RecordId, RequestId, SubscriptionId, TenantId};
use csp_ordering::domain::{
    Cancellation, Customer, LineRequest, Order, OrderHeader, OrderStatus, ProductKind, Quote,
    SoldPolicy, Subscription, SubscriptionStatus, Term, price_order,
};
use csp_ordering::storage::{
    CUSTOMER_DOMAIN_KEY, CUSTOMER_TENANT_KEY, CancelOutcome, MIGRATIONS, ORDER_REQUEST_KEY,
    OrderingStore,
};
use csp_store::StoreError;
use csp_store::db::Db;
use csp_store::outbox::{Message, backlog};
use csp_store::testing::TestDb;

/// A moment in November 2023.
const T0: Micros = 1_700_000_000 * SECOND;

async fn setup() -> (TestDb, OrderingStore) {
    let test = TestDb::migrated(&MIGRATIONS).await;
    let store = OrderingStore::new(test.db.clone());
    (test, store)
}

fn customer(partner: PartnerId, domain: &str, company: &str) -> Customer {
    Customer {
        tenant_id: TenantId::new(),
        partner_id: partner,
        domain_name: domain.to_owned(),
        company_name: company.to_owned(),
        market: "US".to_owned(),
        created_at: T0,
    }
}

/// An order of `lines` lines for `customer` placed at `at`, priced by the
/// domain, with the subscriptions its lines became (a 30-day window): odd
/// lines are software for one year, even lines Azure reservations for three.
fn order_with(customer: &Customer, at: Micros, lines: i32) -> (Order, Vec<Subscription>) {
    let header = OrderHeader {
        id: OrderId::new(),
        partner_id: customer.partner_id,
        customer_tenant_id: customer.tenant_id,
        request_id: RequestId::new(),
        request_fingerprint: format!("fingerprint-{at}"),
        placed_by_user_id: "agent-1".to_owned(),
        at,
    };
    let requests: Vec<LineRequest> = (1..=lines)
        .map(|n| LineRequest {
            sku_id: format!("sku-{n}"),
            quantity: n,
        })
        .collect();
    let quotes: Vec<Quote> = (1..=lines)
        .map(|n| {
            let software = n % 2 == 1;
            Quote {
                sku_id: format!("sku-{n}"),
                product_id: format!("product-{n}"),
                product_title: format!("Product {n}"),
                product_kind: if software {
                    ProductKind::ServerSubscription
                } else {
                    ProductKind::AzureReservation
                },
                term: if software {
                    Term::OneYear
                } else {
                    Term::ThreeYears
                },
                unit_minor: 1000,
                currency_code: "USD".to_owned(),
                minor_unit_digits: 2,
                tax_included: true,
                policy: SoldPolicy::article(30),
                cap_unit_minor: None,
                price_list_version: 7,
            }
        })
        .collect();
    price_order(header, &requests, &quotes).unwrap()
}

/// A migrated database with one customer and its order of `lines` lines,
/// placed at `T0` without messages.
async fn with_order(lines: i32) -> (TestDb, OrderingStore, Order, Vec<Subscription>) {
    let (test, store) = setup().await;
    let c = customer(PartnerId::new(), "contoso.com", "Contoso");
    store.insert_customer(&c).await.unwrap();
    let (order, subs) = order_with(&c, T0, lines);
    store.insert_order(&order, &subs, &[]).await.unwrap();
    (test, store, order, subs)
}

fn cancellation(s: &Subscription, at: Micros, refund_minor: i64) -> Cancellation {
    Cancellation {
        partner_id: s.partner_id,
        subscription_id: s.id,
        customer_tenant_id: s.customer_tenant_id,
        at,
        judged_at: at,
        refund_minor,
        reason: "the customer changed their mind".to_owned(),
        ticket_id: "ticket-1".to_owned(),
        cap: None,
        refund_cap_minor: refund_minor,
    }
}

/// Cancels; whether it was cancelled now.
async fn cancel_now(
    store: &OrderingStore,
    cancellation: &Cancellation,
    messages: &[Message],
) -> Result<bool, StoreError> {
    store
        .cancel(cancellation, messages)
        .await
        .map(|outcome| outcome == CancelOutcome::Cancelled)
}

/// One message for licensing and one for audit, in `stream`.
fn messages(stream: impl std::fmt::Display) -> Vec<Message> {
    ["licensing", "audit"]
        .into_iter()
        .map(|destination| Message {
            destination,
            event_id: RecordId::new().to_string(),
            stream: stream.to_string(),
            payload: vec![1, 2, 3],
        })
        .collect()
}

/// The outbox rows per destination.
async fn outbox(db: &Db) -> Vec<(String, i64)> {
    backlog(db).await.unwrap()
}

/// What [`outbox`] reads after `n` calls that each wrote [`messages`].
fn per_destination(n: i64) -> Vec<(String, i64)> {
    if n == 0 {
        Vec::new()
    } else {
        vec![("audit".to_owned(), n), ("licensing".to_owned(), n)]
    }
}

/// The partner's billing rows of `kind` for an order, oldest first.
async fn billed(db: &Db, order: OrderId, kind: &str) -> Vec<i64> {
    // An order's purchases as one charge (its total), refunds one by one.
    const SQL: &str = "SELECT CAST(SUM(amount_minor) AS BIGINT) FROM billing_line_items \
                       WHERE order_id = $1 AND charge_type = 'purchase' AND $2 = 'charge' GROUP BY order_id \
                       UNION ALL SELECT amount_minor FROM billing_line_items \
                       WHERE order_id = $1 AND charge_type = 'refund' AND $2 = 'refund'";
    csp_store::on_db!(db, pool => sqlx::query_scalar::<_, i64>(SQL)
        .bind(order.to_string())
        .bind(kind.to_owned())
        .fetch_all(pool)
        .await)
    .unwrap()
}

/// Runs one raw statement with one text parameter (to write a bad row).
async fn execute(db: &Db, sql: &'static str, value: String) {
    csp_store::on_db!(db, pool => sqlx::query(sql).bind(value).execute(pool).await.map(drop))
        .unwrap();
}

#[tokio::test]
async fn customers_round_trip_typed_by_tenant_and_by_domain() {
    let (test, store) = setup().await;
    let c = Customer {
        created_at: T0 + 123,
        ..customer(PartnerId::new(), "contoso.onmicrosoft.com", "Contoso Ltd")
    };
    store.insert_customer(&c).await.unwrap();
    let by_tenant = store.customer_by_tenant(c.partner_id, c.tenant_id).await;
    assert_eq!(by_tenant.unwrap(), Some(c.clone()), "on {}", test.backend());
    let by_domain = store.customer_by_domain(c.partner_id, &c.domain_name).await;
    assert_eq!(by_domain.unwrap(), Some(c.clone()));
    let unknown = store
        .customer_by_tenant(c.partner_id, TenantId::new())
        .await;
    assert_eq!(unknown.unwrap(), None);
    test.remove().await;
}

#[tokio::test]
async fn another_partners_customer_is_not_found() {
    let (test, store) = setup().await;
    let c = customer(PartnerId::new(), "contoso.com", "Contoso");
    store.insert_customer(&c).await.unwrap();
    let other = PartnerId::new();
    assert_eq!(
        store.customer_by_tenant(other, c.tenant_id).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .customer_by_domain(other, &c.domain_name)
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .list_customers(other, "", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    test.remove().await;
}

#[tokio::test]
async fn a_domain_name_is_unique_among_a_partners_customers() {
    let (test, store) = setup().await;
    let partner = PartnerId::new();
    let first = customer(partner, "contoso.com", "Contoso");
    store.insert_customer(&first).await.unwrap();
    let second = customer(partner, "contoso.com", "Contoso Again");
    let error = store.insert_customer(&second).await.unwrap_err();
    assert!(
        error.is_unique(CUSTOMER_DOMAIN_KEY, "domain_name"),
        "{error:?} on {}",
        test.backend()
    );
    assert!(
        !error.is_unique(CUSTOMER_TENANT_KEY, "tenant_id"),
        "{error:?}"
    );
    let stored = store
        .customer_by_tenant(second.partner_id, second.tenant_id)
        .await;
    assert_eq!(stored.unwrap(), None);
    test.remove().await;
}

#[tokio::test]
async fn a_tenant_id_is_one_customer_of_a_partner() {
    let (test, store) = setup().await;
    let first = customer(PartnerId::new(), "contoso.com", "Contoso");
    store.insert_customer(&first).await.unwrap();
    let again = Customer {
        domain_name: "contoso-two.com".to_owned(),
        ..first.clone()
    };
    let error = store.insert_customer(&again).await.unwrap_err();
    assert!(
        error.is_unique(CUSTOMER_TENANT_KEY, "tenant_id"),
        "{error:?} on {}",
        test.backend()
    );
    assert!(
        !error.is_unique(CUSTOMER_DOMAIN_KEY, "domain_name"),
        "{error:?}"
    );
    let stored = store
        .customer_by_tenant(first.partner_id, first.tenant_id)
        .await;
    assert_eq!(stored.unwrap(), Some(first));
    test.remove().await;
}

#[tokio::test]
async fn another_partner_may_have_the_same_customer_and_each_sees_only_their_own() {
    let (test, store) = setup().await;
    let first = customer(PartnerId::new(), "contoso.com", "Contoso");
    store.insert_customer(&first).await.unwrap();
    let same = Customer {
        partner_id: PartnerId::new(),
        company_name: "Contoso Ltd".to_owned(),
        ..first.clone()
    };
    store.insert_customer(&same).await.unwrap();
    for c in [&first, &same] {
        let by_tenant = store.customer_by_tenant(c.partner_id, c.tenant_id).await;
        assert_eq!(
            by_tenant.unwrap().as_ref(),
            Some(c),
            "on {}",
            test.backend()
        );
        let by_domain = store.customer_by_domain(c.partner_id, "contoso.com").await;
        assert_eq!(by_domain.unwrap().as_ref(), Some(c));
        let listed = store
            .list_customers(c.partner_id, "", None, 10)
            .await
            .unwrap();
        assert_eq!(listed, std::slice::from_ref(c));
    }
    test.remove().await;
}

#[tokio::test]
async fn customers_are_listed_by_folded_company_name_and_paged_by_name_and_id() {
    let (test, store) = setup().await;
    let p = PartnerId::new();
    // Unfolded, "Bravo" would sort before "alpha"; the two bravos tie on the name.
    for (i, name) in ["charlie", "Bravo", "alpha", "bravo"]
        .into_iter()
        .enumerate()
    {
        let c = customer(p, &format!("c{i}.example.com"), name);
        store.insert_customer(&c).await.unwrap();
    }
    let theirs = customer(PartnerId::new(), "other.example.com", "Aardvark");
    store.insert_customer(&theirs).await.unwrap();
    let all = store.list_customers(p, "", None, 10).await.unwrap();
    let folded: Vec<String> = all.iter().map(|c| c.company_name.to_lowercase()).collect();
    assert_eq!(
        folded,
        ["alpha", "bravo", "bravo", "charlie"],
        "on {}",
        test.backend()
    );
    let mut paged = Vec::new();
    let mut after: Option<(String, String)> = None;
    for _ in 0..10 {
        let cursor = after
            .as_ref()
            .map(|(name, id)| (name.as_str(), id.as_str()));
        let page = store.list_customers(p, "", cursor, 2).await.unwrap();
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 2);
        after = Some((last.company_name.to_lowercase(), last.tenant_id.to_string()));
        paged.extend(page);
    }
    assert_eq!(
        paged, all,
        "pages of two give every customer once, in order"
    );
    test.remove().await;
}

#[tokio::test]
async fn the_customer_search_treats_percent_and_underscore_literally() {
    let (test, store) = setup().await;
    let p = PartnerId::new();
    for (domain, company) in [
        ("fifty.example.com", "50% Off Ltd"),
        ("five.example.com", "500 Offers"),
        ("under.example.com", "a_b Corp"),
        ("axb.example.com", "axb Corp"),
    ] {
        store
            .insert_customer(&customer(p, domain, company))
            .await
            .unwrap();
    }
    let names = |found: Vec<Customer>| -> Vec<String> {
        found.into_iter().map(|c| c.company_name).collect()
    };
    let percent = store.list_customers(p, "50%", None, 10).await.unwrap();
    assert_eq!(names(percent), ["50% Off Ltd"], "on {}", test.backend());
    let underscore = store.list_customers(p, "a_b", None, 10).await.unwrap();
    assert_eq!(names(underscore), ["a_b Corp"]);
    let by_domain = store
        .list_customers(p, "five.example", None, 10)
        .await
        .unwrap();
    assert_eq!(names(by_domain), ["500 Offers"]);
    test.remove().await;
}

#[tokio::test]
async fn an_order_round_trips_with_its_lines_subscriptions_charge_and_messages() {
    let (test, store) = setup().await;
    let c = customer(PartnerId::new(), "contoso.com", "Contoso");
    store.insert_customer(&c).await.unwrap();
    let (order, subs) = order_with(&c, T0, 3);
    store
        .insert_order(&order, &subs, &messages(order.id))
        .await
        .unwrap();
    let p = c.partner_id;
    let stored = store.order(p, order.id).await.unwrap();
    assert_eq!(stored, Some(order.clone()), "on {}", test.backend());
    let by_request = store.order_by_request(p, order.request_id).await.unwrap();
    assert_eq!(by_request, Some(order.clone()));
    assert_eq!(
        store.subscriptions_of_order(p, order.id).await.unwrap(),
        subs
    );
    for s in &subs {
        assert_eq!(store.subscription(p, s.id).await.unwrap().as_ref(), Some(s));
    }
    assert_eq!(
        billed(&test.db, order.id, "charge").await,
        [order.total_minor]
    );
    assert_eq!(outbox(&test.db).await, per_destination(1));
    let other = PartnerId::new();
    assert_eq!(store.order(other, order.id).await.unwrap(), None);
    assert_eq!(
        store
            .order_by_request(other, order.request_id)
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .subscriptions_of_order(other, order.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.subscription(other, subs[0].id).await.unwrap(), None);
    test.remove().await;
}

#[tokio::test]
async fn a_request_id_places_one_order_per_partner_but_another_partner_may_reuse_it() {
    let (test, store) = setup().await;
    let c = customer(PartnerId::new(), "contoso.com", "Contoso");
    store.insert_customer(&c).await.unwrap();
    let (first, subs) = order_with(&c, T0, 1);
    store
        .insert_order(&first, &subs, &messages(first.id))
        .await
        .unwrap();
    let (mut retry, retry_subs) = order_with(&c, T0 + SECOND, 1);
    retry.request_id = first.request_id;
    let refused = store
        .insert_order(&retry, &retry_subs, &messages(retry.id))
        .await;
    let error = refused.unwrap_err();
    assert!(
        error.is_unique(ORDER_REQUEST_KEY, "request_id"),
        "{error:?} on {}",
        test.backend()
    );
    // Nothing of the refused order was written.
    assert_eq!(store.order(c.partner_id, retry.id).await.unwrap(), None);
    assert_eq!(
        store
            .subscription(c.partner_id, retry_subs[0].id)
            .await
            .unwrap(),
        None
    );
    assert!(billed(&test.db, retry.id, "charge").await.is_empty());
    assert_eq!(outbox(&test.db).await, per_destination(1));
    let found = store
        .order_by_request(c.partner_id, first.request_id)
        .await
        .unwrap();
    assert_eq!(found, Some(first.clone()));

    let other = customer(PartnerId::new(), "fabrikam.com", "Fabrikam");
    store.insert_customer(&other).await.unwrap();
    let (mut theirs, their_subs) = order_with(&other, T0, 1);
    theirs.request_id = first.request_id;
    store.insert_order(&theirs, &their_subs, &[]).await.unwrap();
    let found = store
        .order_by_request(other.partner_id, first.request_id)
        .await
        .unwrap();
    assert_eq!(found, Some(theirs));
    test.remove().await;
}

#[tokio::test]
async fn orders_are_listed_newest_first_and_paged_before_the_cursor() {
    let (test, store) = setup().await;
    let c = customer(PartnerId::new(), "contoso.com", "Contoso");
    let sibling = customer(c.partner_id, "fabrikam.com", "Fabrikam");
    store.insert_customer(&c).await.unwrap();
    store.insert_customer(&sibling).await.unwrap();
    let mut placed = Vec::new();
    for i in 0..3 {
        let (order, subs) = order_with(&c, T0 + i * SECOND, 2);
        store.insert_order(&order, &subs, &[]).await.unwrap();
        placed.push(order);
    }
    let (theirs, their_subs) = order_with(&sibling, T0 + 10 * SECOND, 1);
    store.insert_order(&theirs, &their_subs, &[]).await.unwrap();
    let (p, t) = (c.partner_id, c.tenant_id);
    let listed = store.list_orders(p, t, None, 10).await.unwrap();
    let newest_first = [placed[2].clone(), placed[1].clone(), placed[0].clone()];
    assert_eq!(listed, newest_first, "on {}", test.backend());
    let cursor = placed[1].id.to_string();
    let before = Some((placed[1].created_at, cursor.as_str()));
    assert_eq!(
        store.list_orders(p, t, before, 10).await.unwrap(),
        [placed[0].clone()]
    );
    assert_eq!(
        store.list_orders(p, t, None, 1).await.unwrap(),
        [placed[2].clone()]
    );
    assert!(
        store
            .list_orders(PartnerId::new(), t, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    test.remove().await;
}

#[tokio::test]
async fn subscriptions_are_listed_by_purchase_and_filtered_by_status() {
    let (test, store, a, a_subs) = with_order(2).await;
    let (p, t) = (a.partner_id, a.customer_tenant_id);
    let c = store.customer_by_tenant(p, t).await.unwrap().unwrap();
    let (b, b_subs) = order_with(&c, T0 + SECOND, 1);
    store.insert_order(&b, &b_subs, &[]).await.unwrap();
    assert!(
        cancel_now(&store, &cancellation(&a_subs[1], T0 + DAY, 0), &[])
            .await
            .unwrap()
    );
    let ids = |found: Vec<Subscription>| -> Vec<SubscriptionId> {
        found.into_iter().map(|s| s.id).collect()
    };
    let (active, cancelled) = (
        Some(SubscriptionStatus::Active),
        Some(SubscriptionStatus::Cancelled),
    );
    let listed = store
        .list_subscriptions(p, t, active, None, 10)
        .await
        .unwrap();
    assert_eq!(
        ids(listed),
        [a_subs[0].id, b_subs[0].id],
        "on {}",
        test.backend()
    );
    let listed = store
        .list_subscriptions(p, t, cancelled, None, 10)
        .await
        .unwrap();
    assert_eq!(ids(listed), [a_subs[1].id]);
    assert_eq!(
        store
            .list_subscriptions(p, t, None, None, 10)
            .await
            .unwrap()
            .len(),
        3
    );
    let cursor = a_subs[0].id.to_string();
    let after = Some((a_subs[0].purchased_at, cursor.as_str()));
    let rest = store
        .list_subscriptions(p, t, active, after, 10)
        .await
        .unwrap();
    assert_eq!(ids(rest), [b_subs[0].id]);
    test.remove().await;
}

#[tokio::test]
async fn cancel_cancels_an_active_subscription_once_with_its_refund_and_messages() {
    let (test, store, order, subs) = with_order(2).await;
    let at = T0 + DAY;
    let done = cancel_now(
        &store,
        &cancellation(&subs[0], at, 400),
        &messages(order.id),
    )
    .await;
    assert!(done.unwrap(), "on {}", test.backend());
    let cancelled = Subscription {
        status: SubscriptionStatus::Cancelled,
        cancelled_at: Some(at),
        refunded_minor: Some(400),
        cancel_reason: Some("the customer changed their mind".to_owned()),
        cancel_ticket_id: Some("ticket-1".to_owned()),
        ..subs[0].clone()
    };
    let stored = store
        .subscription(order.partner_id, subs[0].id)
        .await
        .unwrap();
    assert_eq!(stored, Some(cancelled.clone()));
    assert_eq!(billed(&test.db, order.id, "refund").await, [-400]);
    assert_eq!(outbox(&test.db).await, per_destination(1));
    // The second time changes nothing and writes nothing.
    let again = cancel_now(
        &store,
        &cancellation(&subs[0], at + SECOND, 100),
        &messages(order.id),
    )
    .await;
    assert!(!again.unwrap());
    let stored = store
        .subscription(order.partner_id, subs[0].id)
        .await
        .unwrap();
    assert_eq!(stored, Some(cancelled));
    assert_eq!(billed(&test.db, order.id, "refund").await, [-400]);
    assert_eq!(outbox(&test.db).await, per_destination(1));
    test.remove().await;
}

#[tokio::test]
async fn cancel_refuses_once_the_window_has_closed_or_for_another_partner() {
    let (test, store, order, subs) = with_order(2).await;
    let closes = subs[0].cancellable_until;
    let late = cancel_now(
        &store,
        &cancellation(&subs[0], closes, 0),
        &messages(order.id),
    )
    .await;
    assert!(!late.unwrap(), "on {}", test.backend());
    let strange = Cancellation {
        partner_id: PartnerId::new(),
        ..cancellation(&subs[0], T0 + DAY, 0)
    };
    assert!(
        !cancel_now(&store, &strange, &messages(order.id))
            .await
            .unwrap()
    );
    let stored = store
        .subscription(order.partner_id, subs[0].id)
        .await
        .unwrap();
    assert_eq!(stored, Some(subs[0].clone()));
    assert!(billed(&test.db, order.id, "refund").await.is_empty());
    assert_eq!(outbox(&test.db).await, per_destination(0));
    // One microsecond before the window closes is still inside it.
    let last_moment = cancellation(&subs[1], subs[1].cancellable_until - 1, 0);
    assert!(cancel_now(&store, &last_moment, &[]).await.unwrap());
    test.remove().await;
}

#[tokio::test]
async fn the_order_is_cancelled_only_when_no_subscription_is_left_active() {
    let (test, store, order, subs) = with_order(2).await;
    let p = order.partner_id;
    assert!(
        cancel_now(&store, &cancellation(&subs[0], T0 + DAY, 100), &[])
            .await
            .unwrap()
    );
    let status = store.order(p, order.id).await.unwrap().unwrap().status;
    assert_eq!(status, OrderStatus::Completed, "on {}", test.backend());
    assert!(
        cancel_now(&store, &cancellation(&subs[1], T0 + 2 * DAY, 200), &[])
            .await
            .unwrap()
    );
    let status = store.order(p, order.id).await.unwrap().unwrap().status;
    assert_eq!(status, OrderStatus::Cancelled);
    assert_eq!(billed(&test.db, order.id, "refund").await, [-100, -200]);
    test.remove().await;
}

#[tokio::test]
async fn an_unknown_stored_kind_or_term_reads_as_corrupt() {
    let (test, store, order, subs) = with_order(1).await;
    let p = order.partner_id;
    const KIND: &str = "UPDATE subscriptions SET product_kind = 'desktop_license' WHERE id = $1";
    execute(&test.db, KIND, subs[0].id.to_string()).await;
    let read = store.subscription(p, subs[0].id).await;
    assert!(
        matches!(&read, Err(StoreError::Corrupt { column: "product_kind", value }) if value == "desktop_license"),
        "{read:?} on {}",
        test.backend()
    );
    let listed = store.subscriptions_of_order(p, order.id).await;
    assert!(
        matches!(listed, Err(StoreError::Corrupt { .. })),
        "{listed:?}"
    );
    const TERM: &str = "UPDATE order_lines SET term = 'P2Y' WHERE order_id = $1";
    execute(&test.db, TERM, order.id.to_string()).await;
    let read = store.order(p, order.id).await;
    assert!(
        matches!(&read, Err(StoreError::Corrupt { column: "term", .. })),
        "{read:?}"
    );
    test.remove().await;
}

#[tokio::test]
async fn a_malformed_stored_id_reads_as_corrupt() {
    let (test, store, order, _) = with_order(1).await;
    let p = order.partner_id;
    const REQUEST: &str = "UPDATE orders SET request_id = 'nope' WHERE id = $1";
    execute(&test.db, REQUEST, order.id.to_string()).await;
    let read = store.order(p, order.id).await;
    assert!(
        matches!(&read, Err(StoreError::Corrupt { column: "request_id", value }) if value == "nope"),
        "{read:?} on {}",
        test.backend()
    );
    let c = customer(p, "fabrikam.com", "Fabrikam");
    store.insert_customer(&c).await.unwrap();
    const TENANT: &str = "UPDATE customers SET tenant_id = 'not-a-uuid' WHERE domain_name = $1";
    execute(&test.db, TENANT, c.domain_name.clone()).await;
    let read = store.customer_by_domain(p, &c.domain_name).await;
    assert!(
        matches!(
            &read,
            Err(StoreError::Corrupt {
                column: "tenant_id",
                ..
            })
        ),
        "{read:?}"
    );
    test.remove().await;
}

/// Writes a customer and its order as the schema of migration 2 holds them
/// (the store of today writes later columns).
async fn insert_as_of_version_2(
    db: &Db,
    c: &Customer,
    order: &Order,
    subscriptions: &[Subscription],
) {
    csp_store::on_db!(db, pool => {
        sqlx::query("INSERT INTO customers (tenant_id, partner_id, domain_name, company_name, company_name_folded, market, created_at_us) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(c.tenant_id.to_string())
            .bind(c.partner_id.to_string())
            .bind(&c.domain_name)
            .bind(&c.company_name)
            .bind(c.company_name.to_lowercase())
            .bind(&c.market)
            .bind(c.created_at)
            .execute(pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO orders (id, partner_id, customer_tenant_id, request_id, request_fingerprint, status, \
                     currency_code, minor_unit_digits, total_minor, tax_included, placed_by_user_id, created_at_us) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)")
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
            .execute(pool)
            .await
            .unwrap();
        for l in &order.lines {
            sqlx::query("INSERT INTO order_lines (order_id, line_number, sku_id, product_id, product_title, product_kind, \
                         term, quantity, unit_price_minor, amount_minor, subscription_id) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
                .bind(order.id.to_string())
                .bind(l.line_number)
                .bind(&l.sku_id)
                .bind(&l.product_id)
                .bind(&l.product_title)
                .bind(l.product_kind.as_db())
                .bind(l.term.as_db())
                .bind(l.quantity)
                .bind(l.unit_price_minor)
                .bind(l.amount_minor)
                .bind(l.subscription_id.to_string())
                .execute(pool)
                .await
                .unwrap();
        }
        for s in subscriptions {
            sqlx::query("INSERT INTO subscriptions (id, partner_id, customer_tenant_id, order_id, line_number, product_id, \
                         product_kind, sku_id, status, quantity, currency_code, minor_unit_digits, amount_paid_minor, \
                         purchased_at_us, cancellation_window_days, cancellable_until_us) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)")
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
                .execute(pool)
                .await
                .unwrap();
        }
    });
}

#[tokio::test]
async fn a_refund_past_the_customers_cap_is_not_written() {
    // Three subscriptions under a policy capping a customer's refunds.
    let (test, store) = setup().await;
    let c = customer(PartnerId::new(), "contoso.com", "Contoso");
    store.insert_customer(&c).await.unwrap();
    let (order, mut subs) = order_with(&c, T0, 3);
    for s in &mut subs {
        s.policy.cap = Some(csp_ordering::domain::RefundCap {
            amount_minor: 1000,
            currency: "USD".to_owned(),
            period_days: 365,
        });
        s.cap_value_minor = Some(s.amount_paid_minor);
    }
    store.insert_order(&order, &subs, &[]).await.unwrap();
    let cap = |s: &Subscription, refund| Cancellation {
        cap: Some((1000, "USD".to_owned(), T0 - DAY)),
        ..cancellation(s, T0 + SECOND, refund)
    };
    assert_eq!(
        store.cancel(&cap(&subs[0], 700), &[]).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        store.cancel(&cap(&subs[1], 301), &[]).await.unwrap(),
        CancelOutcome::CapExceeded { left: 300 },
        "on {}",
        test.backend()
    );
    let still = store
        .subscription(order.partner_id, subs[1].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(still.status, SubscriptionStatus::Active);
    assert_eq!(
        store
            .refunds_in_period(order.partner_id, order.customer_tenant_id, "USD", T0 - DAY)
            .await
            .unwrap(),
        700
    );
    assert_eq!(
        store.cancel(&cap(&subs[1], 300), &[]).await.unwrap(),
        CancelOutcome::Cancelled
    );
    test.remove().await;
}

#[tokio::test]
async fn moving_customers_to_per_partner_keeps_every_row_and_the_foreign_keys() {
    // A database as the release before customers-per-partner left it.
    let before = csp_store::db::Migrations {
        sqlite: &MIGRATIONS.sqlite[..2],
        postgres: &MIGRATIONS.postgres[..2],
    };
    let test = TestDb::migrated(&before).await;
    let store = OrderingStore::new(test.db.clone());
    let first = customer(PartnerId::new(), "contoso.com", "Contoso");
    let (order, subscriptions) = order_with(&first, T0, 3);
    insert_as_of_version_2(&test.db, &first, &order, &subscriptions).await;

    test.db.migrate(&MIGRATIONS).await.unwrap();
    // What later migrations give rows from before them: no price list, the
    // article's rule with the row's own window, a term of 365 days a year.
    let order = Order {
        price_list_version: 0,
        ..order
    };
    let subscriptions: Vec<Subscription> = subscriptions
        .into_iter()
        .map(|s| {
            let years = if s.product_kind == ProductKind::AzureReservation {
                3
            } else {
                1
            };
            Subscription {
                term_ends_at: s.purchased_at + years * 365 * DAY,
                ..s
            }
        })
        .collect();

    let backend = test.backend();
    assert_eq!(
        store
            .customer_by_tenant(first.partner_id, first.tenant_id)
            .await
            .unwrap()
            .as_ref(),
        Some(&first),
        "on {backend}"
    );
    assert_eq!(
        store.order(first.partner_id, order.id).await.unwrap(),
        Some(order.clone())
    );
    assert_eq!(
        store
            .subscriptions_of_order(first.partner_id, order.id)
            .await
            .unwrap(),
        subscriptions
    );
    // The same customer for another partner is now allowed.
    let same = Customer {
        partner_id: PartnerId::new(),
        ..first.clone()
    };
    store.insert_customer(&same).await.unwrap();
    // Orders still need a customer of their own partner.
    let stranger = Customer {
        partner_id: PartnerId::new(),
        ..first.clone()
    };
    let (orphan, orphan_subscriptions) = order_with(&stranger, T0, 1);
    let refused = store
        .insert_order(&orphan, &orphan_subscriptions, &[])
        .await;
    assert!(
        matches!(refused, Err(StoreError::Database(_))),
        "an order for another partner's customer is refused: {refused:?}"
    );
    test.remove().await;
}
