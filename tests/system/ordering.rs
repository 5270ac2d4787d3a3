//! Ordering through the gateway: customers, orders with frozen prices,
//! idempotent retries, tenant isolation, bad input, the cancellation window,
//! and the events left in the outbox.

use std::collections::HashSet;

use csp_kit::clock::{DAY, ManualClock, SECOND};
use csp_kit::roles::Role;
use csp_proto::audit::v1::ActivityType;
use csp_proto::catalog::v1::{GetSkuPriceRequest, ProductKind};
use csp_proto::common::v1::Money;
use csp_proto::ordering::v1::ordering_service_client::OrderingServiceClient;
use csp_proto::ordering::v1::{
    CancelSubscriptionRequest, CreateCustomerRequest, GetCustomerRequest, GetOrderRequest,
    GetSubscriptionRequest, ListCustomersRequest, ListOrdersRequest, ListSubscriptionsRequest,
    Order, PlaceOrderRequest, ResolveRefundTargetRequest, SubscriptionStatus, get_customer_request,
    resolve_refund_target_request,
};
use csp_tests::{Bearer, TestSystem, order_request};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;
use uuid::Uuid;

type Client = OrderingServiceClient<InterceptedService<Channel, Bearer>>;

fn fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

async fn customer(client: &mut Client, domain: &str, market: &str) -> String {
    client
        .create_customer(CreateCustomerRequest {
            tenant_id: String::new(),
            domain_name: domain.into(),
            company_name: format!("{domain} Ltd"),
            market: market.into(),
        })
        .await
        .unwrap_or_else(|s| panic!("create {domain}: {s:?}"))
        .into_inner()
        .customer
        .unwrap()
        .tenant_id
}

async fn place(client: &mut Client, request: PlaceOrderRequest) -> Order {
    client
        .place_order(request)
        .await
        .unwrap_or_else(|s| panic!("place order: {s:?}"))
        .into_inner()
        .order
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_are_created_found_listed_and_validated() {
    let system = TestSystem::start().await;
    let mut ordering = system.ordering(&[Role::SalesAgent]).await;
    let tenant = Uuid::new_v4().to_string();
    let created = ordering
        .create_customer(CreateCustomerRequest {
            tenant_id: tenant.clone(),
            domain_name: "Contoso.OnMicrosoft.com".into(),
            company_name: "Contoso".into(),
            market: "us".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    assert_eq!(created.tenant_id, tenant);
    assert_eq!(created.domain_name, "contoso.onmicrosoft.com");
    assert_eq!(created.market, "US");
    let generated = customer(&mut ordering, "fabrikam.onmicrosoft.com", "DE").await;
    assert!(Uuid::parse_str(&generated).is_ok());

    let mut helpdesk = system.ordering(&[Role::HelpdeskAgent]).await;
    let by_domain = helpdesk
        .get_customer(GetCustomerRequest {
            customer: Some(get_customer_request::Customer::DomainName(
                "CONTOSO.onmicrosoft.com".into(),
            )),
        })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    assert_eq!(by_domain.tenant_id, tenant);
    let by_tenant = helpdesk
        .get_customer(GetCustomerRequest {
            customer: Some(get_customer_request::Customer::TenantId(generated.clone())),
        })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    assert_eq!(by_tenant.company_name, "fabrikam.onmicrosoft.com Ltd");

    // Search and paging.
    for i in 0..5 {
        customer(&mut ordering, &format!("tailspin{i}.com"), "GB").await;
    }
    let found = helpdesk
        .list_customers(ListCustomersRequest {
            query: "TAILSPIN".into(),
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.customers.len(), 2);
    let mut names: Vec<String> = found
        .customers
        .iter()
        .map(|c| c.domain_name.clone())
        .collect();
    let mut token = found.next_page_token;
    while !token.is_empty() {
        let page = helpdesk
            .list_customers(ListCustomersRequest {
                query: "tailspin".into(),
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        names.extend(page.customers.iter().map(|c| c.domain_name.clone()));
        token = page.next_page_token;
    }
    assert_eq!(
        names,
        (0..5)
            .map(|i| format!("tailspin{i}.com"))
            .collect::<Vec<_>>()
    );
    let all = helpdesk
        .list_customers(ListCustomersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.customers.len(), 7);

    // Bad input names the field.
    let bad = |tenant: &str, domain: &str, company: &str, market: &str| CreateCustomerRequest {
        tenant_id: tenant.into(),
        domain_name: domain.into(),
        company_name: company.into(),
        market: market.into(),
    };
    let status = ordering
        .create_customer(bad("not-a-uuid", "a.com", "A", "US"))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["tenant_id"]);
    let status = ordering
        .create_customer(bad("", "no_domain", "A", "US"))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["domain_name"]);
    let status = ordering
        .create_customer(bad("", "b.com", " ", "US"))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["company_name"]);
    let status = ordering
        .create_customer(bad("", "c.com", "C", "XX"))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["market"]);
    assert!(
        status.message().contains("unknown market"),
        "{}",
        status.message()
    );
    let status = ordering
        .create_customer(bad("bad", "bad", "", ""))
        .await
        .unwrap_err();
    assert_eq!(
        fields(&status),
        ["tenant_id", "domain_name", "company_name", "market"]
    );

    // The domain is unique among the partner's customers.
    let status = ordering
        .create_customer(bad("", "contoso.onmicrosoft.com", "Again", "US"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status.message().contains("domain_name"),
        "{}",
        status.message()
    );
    // Another partner may have the same customer (one tenant can have
    // several CSP partners), and learns nothing of the first partner's.
    let mut other_partner = OrderingServiceClient::with_interceptor(
        system.gateway().await,
        Bearer::new(&system.token_of(Uuid::new_v4(), &[Role::AdminAgent])),
    );
    let theirs = other_partner
        .create_customer(bad(&tenant, "contoso.onmicrosoft.com", "Contoso", "US"))
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    assert_eq!(theirs.tenant_id, tenant);
    assert_eq!(theirs.company_name, "Contoso");
    let listed = other_partner
        .list_customers(ListCustomersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .customers;
    assert_eq!(listed.len(), 1, "only their own customer: {listed:?}");
    let status = ordering
        .create_customer(bad(&tenant, "d.com", "D", "US"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_freeze_catalog_prices_and_tax_flags_and_bill_the_total() {
    let system = TestSystem::start().await;
    let mut ordering = system.ordering(&[Role::AdminAgent]).await;
    let au = customer(&mut ordering, "wingtip.com.au", "AU").await;
    let order = place(
        &mut ordering,
        order_request(
            &au,
            &[
                ("windows-server-standard-p1y", 3),
                ("azure-reserved-vm-d2s-v3-p3y", 2),
            ],
        ),
    )
    .await;

    let mut catalog = system.catalog(&[Role::AdminAgent]).await;
    let mut total = 0;
    for line in &order.lines {
        let price = catalog
            .get_sku_price(GetSkuPriceRequest {
                as_of: None,
                sku_id: line.sku_id.clone(),
                market: "AU".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .price
            .unwrap();
        let unit = line.unit_price.clone().unwrap();
        assert_eq!(unit, price.amount.clone().unwrap());
        assert_eq!(
            line.amount.clone().unwrap().minor_units,
            unit.minor_units * i64::from(line.quantity)
        );
        assert!(line.tax_included);
        total += line.amount.clone().unwrap().minor_units;
    }
    let order_total = order.total.clone().unwrap();
    assert_eq!(
        (order_total.currency_code.as_str(), order_total.minor_units),
        ("AUD", total)
    );
    assert!(order.tax_included);
    assert_eq!(
        order.lines[1].product_kind,
        ProductKind::AzureReservation as i32
    );

    // Each line became an active subscription cancellable for 60 days.
    for line in &order.lines {
        let subscription = ordering
            .get_subscription(GetSubscriptionRequest {
                subscription_id: line.subscription_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .subscription
            .unwrap();
        assert_eq!(subscription.status, SubscriptionStatus::Active as i32);
        assert_eq!(subscription.amount_paid, line.amount);
        let bought = subscription.purchase_time.unwrap();
        let until = subscription.cancellable_until.unwrap();
        assert_eq!(until.seconds - bought.seconds, 60 * 86_400);
        assert_eq!(until.nanos, bought.nanos);
    }

    // The price changes in the catalog; the order does not.
    let catalog_db = system.service_db("catalog").await;
    csp_store::on_db!(&catalog_db, pool => csp_tests::sqlx::query(
        "UPDATE price_periods SET amount_minor = 1 WHERE sku_id = 'windows-server-standard-p1y'"
    )
    .execute(pool)
    .await
    .map(drop))
    .unwrap();
    // The catalog serves a snapshot that follows the database within a
    // second.
    let mut new_price = None;
    for _ in 0..50 {
        let price = catalog
            .get_sku_price(GetSkuPriceRequest {
                as_of: None,
                sku_id: "windows-server-standard-p1y".into(),
                market: "AU".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .price
            .unwrap();
        new_price = price.amount.map(|a| a.minor_units);
        if new_price == Some(1) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(new_price, Some(1));
    let again = ordering
        .get_order(GetOrderRequest {
            order_id: order.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(again, order);
    catalog_db.close().await;

    // The partner was billed the total.
    let ordering_db = system.service_db("ordering").await;
    let billed: Vec<(String, i64)> = csp_store::on_db!(&ordering_db, pool => csp_tests::sqlx::query_as(
        "SELECT currency_code, CAST(SUM(amount_minor) AS BIGINT) FROM billing_line_items GROUP BY currency_code"
    )
    .fetch_all(pool)
    .await)
    .unwrap();
    assert_eq!(billed, [("AUD".to_owned(), total)]);
    ordering_db.close().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_cannot_be_ordered_where_unavailable_and_nothing_is_stored() {
    let system = TestSystem::start().await;
    let mut ordering = system.ordering(&[Role::SalesAgent]).await;
    let br = customer(&mut ordering, "contoso.com.br", "BR").await;
    let status = ordering
        .place_order(order_request(
            &br,
            &[
                ("windows-server-standard-p1y", 1),
                ("azure-reserved-vm-e4s-v3-p1y", 1),
            ],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("market BR"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("azure-reserved-vm-e4s-v3"),
        "{}",
        status.message()
    );
    let orders = ordering
        .list_orders(ListOrdersRequest {
            customer_tenant_id: br.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .orders;
    assert!(orders.is_empty());
    // Software alone is fine there.
    let order = place(
        &mut ordering,
        order_request(&br, &[("sql-server-standard-p3y", 2)]),
    )
    .await;
    assert!(order.tax_included, "BR prices include tax");
    assert_eq!(order.total.unwrap().currency_code, "BRL");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_order_returns_the_original_and_a_changed_body_is_refused() {
    let system = TestSystem::start().await;
    let mut ordering = system.ordering(&[Role::SalesAgent]).await;
    let tenant = customer(&mut ordering, "retry.example.com", "US").await;
    let request = order_request(&tenant, &[("windows-server-datacenter-p1y", 1)]);
    let first = place(&mut ordering, request.clone()).await;
    let second = place(&mut ordering, request.clone()).await;
    assert_eq!(first, second);

    let mut changed = request.clone();
    changed.lines[0].quantity = 2;
    let status = ordering.place_order(changed).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(fields(&status), ["request_id"]);
    assert!(status.message().contains(&first.id), "{}", status.message());

    // 100 copies racing: one order, and every copy answers with it.
    let racing = order_request(&tenant, &[("sql-server-enterprise-p3y", 4)]);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let mut client = ordering.clone();
        let request = racing.clone();
        tasks.push(tokio::spawn(
            async move { client.place_order(request).await },
        ));
    }
    let mut ids = HashSet::new();
    for task in tasks {
        let order = task
            .await
            .unwrap()
            .unwrap_or_else(|s| panic!("{s:?}"))
            .into_inner()
            .order
            .unwrap();
        ids.insert(order.id);
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let orders = ordering
        .list_orders(ListOrdersRequest {
            customer_tenant_id: tenant,
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .orders;
    assert_eq!(orders.len(), 2);
    assert_eq!(orders[0].id, *ids.iter().next().unwrap(), "newest first");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_orders_are_refused_with_the_field_named() {
    let system = TestSystem::start().await;
    let mut ordering = system.ordering(&[Role::AdminAgent]).await;
    let tenant = customer(&mut ordering, "bad-orders.example.com", "US").await;
    let cases: Vec<(PlaceOrderRequest, Vec<&str>)> = vec![
        (
            order_request("nope", &[("windows-server-standard-p1y", 1)]),
            vec!["customer_tenant_id"],
        ),
        (order_request(&tenant, &[]), vec!["lines"]),
        (
            order_request(&tenant, &[("windows-server-standard-p1y", 0)]),
            vec!["lines[0].quantity"],
        ),
        (
            order_request(
                &tenant,
                &[
                    ("windows-server-standard-p1y", 1),
                    ("windows-server-standard-p3y", 1_000_000),
                ],
            ),
            vec!["lines[1].quantity"],
        ),
        (
            order_request(&tenant, &[("no-such-sku", 1)]),
            vec!["lines[0].sku_id"],
        ),
        (
            PlaceOrderRequest {
                request_id: String::new(),
                ..order_request(&tenant, &[("windows-server-standard-p1y", 1)])
            },
            vec!["request_id"],
        ),
    ];
    for (request, expected) in cases {
        let status = ordering.place_order(request.clone()).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{request:?}: {}",
            status.message()
        );
        assert_eq!(fields(&status), expected, "{request:?}");
    }
    let status = ordering
        .place_order(order_request(
            &Uuid::new_v4().to_string(),
            &[("windows-server-standard-p1y", 1)],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = ordering
        .get_order(GetOrderRequest {
            order_id: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["order_id"]);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_partners_data_is_not_found_through_every_rpc() {
    let system = TestSystem::start().await;
    let mut mine = system.ordering(&[Role::AdminAgent]).await;
    let tenant = customer(&mut mine, "mine.example.com", "US").await;
    let order = place(
        &mut mine,
        order_request(&tenant, &[("windows-server-standard-p1y", 1)]),
    )
    .await;
    let subscription = order.lines[0].subscription_id.clone();

    let mut theirs = OrderingServiceClient::with_interceptor(
        system.gateway().await,
        Bearer::new(&system.token_of(Uuid::new_v4(), &[Role::AdminAgent])),
    );
    let not_found = |result: Result<(), tonic::Status>, what: &str| {
        let status = result.expect_err(what);
        assert_eq!(
            status.code(),
            Code::NotFound,
            "{what}: {}",
            status.message()
        );
    };
    not_found(
        theirs
            .get_customer(GetCustomerRequest {
                customer: Some(get_customer_request::Customer::TenantId(tenant.clone())),
            })
            .await
            .map(drop),
        "get customer by tenant",
    );
    not_found(
        theirs
            .get_customer(GetCustomerRequest {
                customer: Some(get_customer_request::Customer::DomainName(
                    "mine.example.com".into(),
                )),
            })
            .await
            .map(drop),
        "get customer by domain",
    );
    not_found(
        theirs
            .get_order(GetOrderRequest {
                order_id: order.id.clone(),
            })
            .await
            .map(drop),
        "get order",
    );
    not_found(
        theirs
            .list_orders(ListOrdersRequest {
                customer_tenant_id: tenant.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        "list orders",
    );
    not_found(
        theirs
            .get_subscription(GetSubscriptionRequest {
                subscription_id: subscription.clone(),
            })
            .await
            .map(drop),
        "get subscription",
    );
    not_found(
        theirs
            .list_subscriptions(ListSubscriptionsRequest {
                customer_tenant_id: tenant.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        "list subscriptions",
    );
    not_found(
        theirs
            .place_order(order_request(
                &tenant,
                &[("windows-server-standard-p1y", 1)],
            ))
            .await
            .map(drop),
        "place order",
    );
    let listed = theirs
        .list_customers(ListCustomersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .customers;
    assert!(listed.is_empty());

    // The internal API is partner-scoped too.
    let mut internal = system.ordering_internal().await;
    let status = internal
        .cancel_subscription(CancelSubscriptionRequest {
            requested_time: None,
            partner_id: Uuid::new_v4().to_string(),
            subscription_id: subscription,
            refund: order.lines[0].amount.clone(),
            reason: "x".into(),
            ticket_id: "t".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellable_one_second_before_sixty_days_and_not_at_sixty() {
    let start = 1_790_000_000 * SECOND;
    let clock = ManualClock::new(start);
    let system = TestSystem::start_with_clock(clock.clone()).await;
    let mut ordering = system.ordering(&[Role::AdminAgent]).await;
    let tenant = customer(&mut ordering, "window.example.com", "US").await;
    let order = place(
        &mut ordering,
        order_request(
            &tenant,
            &[
                ("windows-server-standard-p1y", 1),
                ("sql-server-standard-p1y", 1),
            ],
        ),
    )
    .await;
    let (early, late) = (&order.lines[0], &order.lines[1]);
    let mut internal = system.ordering_internal().await;
    let cancel = |subscription: &str, refund: Money| CancelSubscriptionRequest {
        requested_time: None,
        partner_id: system.partner.to_string(),
        subscription_id: subscription.into(),
        refund: Some(refund),
        reason: "customer changed plans".into(),
        ticket_id: "ticket-1".into(),
    };

    // A refund above what was paid is refused.
    let mut too_much = early.amount.clone().unwrap();
    too_much.minor_units += 1;
    let status = internal
        .cancel_subscription(cancel(&early.subscription_id, too_much))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["refund.minor_units"]);

    clock.set(start + 60 * DAY - SECOND);
    let cancelled = internal
        .cancel_subscription(cancel(
            &early.subscription_id,
            early.amount.clone().unwrap(),
        ))
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert_eq!(cancelled.status, SubscriptionStatus::Cancelled as i32);
    assert_eq!(cancelled.refunded, early.amount);

    clock.set(start + 60 * DAY);
    let status = internal
        .cancel_subscription(cancel(&late.subscription_id, late.amount.clone().unwrap()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("60-day cancellation window"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("2026-09-21T14:13:20Z"),
        "purchase date: {}",
        status.message()
    );
    assert!(
        status.message().contains("2026-11-20T14:13:20Z"),
        "deadline: {}",
        status.message()
    );

    // Cancelling again returns the same outcome, even after the window.
    let again = internal
        .cancel_subscription(cancel(
            &early.subscription_id,
            early.amount.clone().unwrap(),
        ))
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert_eq!(again, cancelled);

    // Lists by status.
    let active = ordering
        .list_subscriptions(ListSubscriptionsRequest {
            customer_tenant_id: tenant.clone(),
            status: SubscriptionStatus::Active as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].id, late.subscription_id);

    // The refund target of the order is the still active subscription, but
    // its window has closed.
    let status = internal
        .resolve_refund_target(ResolveRefundTargetRequest {
            partner_id: system.partner.to_string(),
            customer: Some(resolve_refund_target_request::Customer::CustomerDomainName(
                "window.example.com".into(),
            )),
            target: Some(resolve_refund_target_request::Target::OrderId(
                order.id.clone(),
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placed_and_cancelled_events_reach_licensing_and_audit() {
    let system = TestSystem::start().await;
    let mut ordering = system.ordering(&[Role::AdminAgent]).await;
    let tenant = customer(&mut ordering, "events.example.com", "US").await;
    let order = place(
        &mut ordering,
        order_request(&tenant, &[("windows-server-standard-p1y", 2)]),
    )
    .await;
    let line = &order.lines[0];
    system
        .ordering_internal()
        .await
        .cancel_subscription(CancelSubscriptionRequest {
            requested_time: None,
            partner_id: system.partner.to_string(),
            subscription_id: line.subscription_id.clone(),
            refund: line.amount.clone(),
            reason: "r".into(),
            ticket_id: "t".into(),
        })
        .await
        .unwrap();

    // Licensing takes both events in order: the software is listed, revoked.
    let mut licensing = csp_proto::licensing::v1::licensing_service_client::LicensingServiceClient::with_interceptor(
        system.gateway().await,
        Bearer::new(&system.token(&[Role::AdminAgent])),
    );
    let mut revoked = false;
    for _ in 0..300 {
        let software = licensing
            .list_software(csp_proto::licensing::v1::ListSoftwareRequest {
                customer_tenant_id: tenant.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .software;
        if software.len() == 1
            && software[0].status == csp_proto::licensing::v1::EntitlementStatus::Revoked as i32
        {
            revoked = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(revoked, "licensing did not receive both events");

    // Audit records both, in the partner's log.
    let mut audit =
        csp_proto::audit::v1::audit_service_client::AuditServiceClient::with_interceptor(
            system.gateway().await,
            Bearer::new(&system.token(&[Role::GlobalAdmin])),
        );
    let mut kinds = Vec::new();
    for _ in 0..300 {
        let listed = audit
            .list_activity(csp_proto::audit::v1::ListActivityRequest {
                start_time: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: 0,
                }),
                end_time: Some(prost_types::Timestamp {
                    seconds: 4_000_000_000,
                    nanos: 0,
                }),
                customer_tenant_id: tenant.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .activities;
        kinds = listed.iter().map(|a| a.r#type).collect();
        if kinds.len() == 2 {
            let placed = listed
                .iter()
                .find(|a| a.r#type == ActivityType::OrderPlaced as i32)
                .unwrap();
            assert_eq!(placed.details.get("order_id"), Some(&order.id));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ActivityType::OrderPlaced as i32,
            ActivityType::SubscriptionCancelled as i32
        ]
    );
    system.stop().await;
}
