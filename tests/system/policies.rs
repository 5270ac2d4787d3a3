//! Cancellation policies from outside: subscriptions sold under each shipped
//! policy refund as it says at the window's edges (inside by one second,
//! outside by one second), prorated to the expected minor unit; a refund
//! ticket shows what is refundable and until when, and may ask no more; the
//! reservation cap holds across tickets; a later version of a policy does
//! not change subscriptions sold before.

use std::time::Duration;

use csp_kit::clock::{self, DAY, HOUR, ManualClock, SECOND};
use csp_kit::roles::Role;
use csp_kit::service_name::ServiceName;
use csp_proto::catalog::v1::ImportPriceListRequest;
use csp_proto::ordering::v1::{
    CreateCustomerRequest, GetSubscriptionRequest, Order, OrderLineRequest, PlaceOrderRequest,
    ResolveRefundTargetRequest, resolve_refund_target_request,
};
use csp_proto::support::v1::{GetTicketRequest, Ticket, TicketStatus, refund_request};
use csp_tests::TestSystem;
use tonic::Code;
use tonic_types::StatusExt as _;
use uuid::Uuid;

const HEADER: &str = "ProductId,ProductTitle,ProductDescription,ProductKind,Publisher,SkuId,SkuTitle,TermDuration,BillingPlan,Market,MarketName,Currency,UnitPrice,TaxIncluded,EffectiveStartDate,EffectiveEndDate,DownloadOptions,CancellationPolicyId";
const OPTIONS: &str = "versions=2022;languages=en-US;file_types=iso-x64:ISO 64-bit";

/// One SKU per shipped policy, priced so a year's hours (8,760) and days
/// (365) divide the price evenly.
fn policy_list() -> Vec<u8> {
    let software = |product: &str, price: &str, policy: &str| {
        format!(
            "{product},{product},,server_subscription,Microsoft Corporation,{product}-p1y,{product} 1 year,P1Y,Annual,US,United States,USD,{price},false,2026-01-01,,{OPTIONS},{policy}"
        )
    };
    let lines = [
        HEADER.to_owned(),
        software("article", "1200.00", "csp-2019-60-days"),
        software("new-commerce", "8760.00", "new-commerce-168-hours"),
        software("perpetual", "300.00", "perpetual-software-30-days"),
        "reservation,Reserved VM,,azure_reservation,Microsoft Corporation,reservation-p1y,Reserved VM 1 year,P1Y,Annual,US,United States,USD,36500.00,false,2026-01-01,,,azure-reservation".to_owned(),
        "reservation,Reserved VM,,azure_reservation,Microsoft Corporation,reservation-p1y,Reserved VM 1 year,P1Y,Annual,DE,Germany,EUR,33580.00,false,2026-01-01,,,azure-reservation".to_owned(),
    ];
    let mut text = lines.join("\n");
    text.push('\n');
    text.into_bytes()
}

struct Fixture {
    system: TestSystem,
    clock: std::sync::Arc<ManualClock>,
    start: i64,
    tenant: String,
}

async fn fixture() -> Fixture {
    fixture_in("US").await
}

async fn fixture_in(market: &str) -> Fixture {
    // 2027 has no 29 February: a one-year term from here is 365 days.
    let start = clock::parse_date("2026-12-01").unwrap();
    let clock = ManualClock::new(start);
    let system = TestSystem::start_with_clock(clock.clone()).await;
    let mut operator = system.catalog_internal(ServiceName::Operator).await;
    operator
        .import_price_list(ImportPriceListRequest {
            content: policy_list(),
            file_name: "policies.csv".into(),
            imported_by: "test".into(),
            dry_run: false,
        })
        .await
        .unwrap();
    let mut ordering = system.ordering(&[Role::AdminAgent]).await;
    let tenant = ordering
        .create_customer(CreateCustomerRequest {
            tenant_id: String::new(),
            domain_name: format!("c{}.example.com", Uuid::new_v4().simple()),
            company_name: "Policies Ltd".into(),
            market: market.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap()
        .tenant_id;
    Fixture {
        system,
        clock,
        start,
        tenant,
    }
}

impl Fixture {
    async fn buy(&self, skus: &[&str]) -> Order {
        let mut ordering = self.system.ordering(&[Role::AdminAgent]).await;
        ordering
            .place_order(PlaceOrderRequest {
                customer_tenant_id: self.tenant.clone(),
                lines: skus
                    .iter()
                    .map(|sku| OrderLineRequest {
                        sku_id: (*sku).into(),
                        quantity: 1,
                    })
                    .collect(),
                request_id: Uuid::new_v4().to_string(),
            })
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap()
    }

    /// What cancelling `subscription` refunds now, as support asks ordering.
    async fn refundable(&self, subscription: &str) -> Result<i64, tonic::Status> {
        let mut internal = self.system.ordering_internal().await;
        internal
            .resolve_refund_target(ResolveRefundTargetRequest {
                partner_id: self.system.partner.to_string(),
                customer: Some(resolve_refund_target_request::Customer::CustomerTenantId(
                    self.tenant.clone(),
                )),
                target: Some(resolve_refund_target_request::Target::SubscriptionId(
                    subscription.into(),
                )),
            })
            .await
            .map(|r| r.into_inner().amount_refundable.unwrap().minor_units)
    }

    async fn file_refund(&self, subscription: &str, minor: i64) -> Result<Ticket, tonic::Status> {
        let mut support = self.system.support(&[Role::AdminAgent]).await;
        support
            .create_ticket(csp_tests::refund_ticket(
                refund_request::Customer::CustomerTenantId(self.tenant.clone()),
                refund_request::Target::SubscriptionId(subscription.into()),
                minor,
            ))
            .await
            .map(|r| r.into_inner().ticket.unwrap())
    }

    async fn settled(&self, ticket: &str) -> Ticket {
        let mut support = self.system.support(&[Role::AdminAgent]).await;
        for _ in 0..600 {
            let t = support
                .get_ticket(GetTicketRequest {
                    ticket_id: ticket.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .ticket
                .unwrap();
            if t.status != TicketStatus::Submitted as i32 {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("ticket {ticket} never settled");
    }
}

fn closed_reason(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_policy_refunds_as_it_says_at_its_window_edges() {
    let f = fixture().await;
    let order = f
        .buy(&[
            "article-p1y",
            "new-commerce-p1y",
            "perpetual-p1y",
            "reservation-p1y",
        ])
        .await;
    let ids: Vec<String> = order
        .lines
        .iter()
        .map(|l| l.subscription_id.clone())
        .collect();
    let (article, new_commerce, perpetual, reservation) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    // Each subscription shows the policy it was sold under.
    let mut ordering = f.system.ordering(&[Role::AdminAgent]).await;
    let shown = ordering
        .get_subscription(GetSubscriptionRequest {
            subscription_id: new_commerce.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert_eq!(
        (
            shown.cancellation_policy_id.as_str(),
            shown.cancellation_policy_version
        ),
        ("new-commerce-168-hours", 1)
    );
    let cancellable =
        shown.cancellable_until.unwrap().seconds - shown.purchase_time.unwrap().seconds;
    assert_eq!(cancellable, 168 * 3600);
    assert_eq!(
        shown.term_end_time.unwrap().seconds,
        (f.start + 365 * DAY) / SECOND
    );

    // At purchase every policy refunds the whole price.
    assert_eq!(f.refundable(article).await.unwrap(), 120_000);
    assert_eq!(f.refundable(new_commerce).await.unwrap(), 876_000);
    assert_eq!(f.refundable(reservation).await.unwrap(), 3_650_000);

    // 2 h 30 min in: new commerce refunds the 8,757 whole hours left of
    // 8,760, at 1.00 USD an hour.
    f.clock.set(f.start + 2 * HOUR + 30 * 60 * SECOND);
    assert_eq!(f.refundable(new_commerce).await.unwrap(), 875_700);
    // One second inside 168 hours: 8,592 hours left; at 168 hours: closed.
    f.clock.set(f.start + 168 * HOUR - SECOND);
    assert_eq!(f.refundable(new_commerce).await.unwrap(), 859_200);
    f.clock.set(f.start + 168 * HOUR);
    let closed = f.refundable(new_commerce).await.unwrap_err();
    assert_eq!(closed.code(), Code::FailedPrecondition);
    assert_eq!(closed_reason(&closed), "CANCELLATION_WINDOW_CLOSED");
    assert!(
        closed.message().contains("168-hour cancellation window"),
        "{}",
        closed.message()
    );

    // Perpetual: in full until one second before 30 days.
    f.clock.set(f.start + 30 * DAY - SECOND);
    assert_eq!(f.refundable(perpetual).await.unwrap(), 30_000);
    f.clock.set(f.start + 30 * DAY);
    let closed = f.refundable(perpetual).await.unwrap_err();
    assert!(
        closed.message().contains("30-day cancellation window"),
        "{}",
        closed.message()
    );

    // The article's rule: in full until one second before 60 days.
    f.clock.set(f.start + 60 * DAY - SECOND);
    assert_eq!(f.refundable(article).await.unwrap(), 120_000);
    f.clock.set(f.start + 60 * DAY);
    let closed = f.refundable(article).await.unwrap_err();
    assert!(
        closed.message().contains("60-day cancellation window"),
        "{}",
        closed.message()
    );

    // A reservation: prorated by whole days left, 100.00 USD a day, until
    // its term ends.
    f.clock.set(f.start + 10 * DAY + SECOND);
    assert_eq!(f.refundable(reservation).await.unwrap(), 3_540_000);
    f.clock.set(f.start + 365 * DAY - SECOND);
    assert_eq!(f.refundable(reservation).await.unwrap(), 0);
    f.clock.set(f.start + 365 * DAY);
    let closed = f.refundable(reservation).await.unwrap_err();
    assert_eq!(closed_reason(&closed), "CANCELLATION_WINDOW_CLOSED");
    f.system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_ticket_shows_what_is_refundable_and_asks_no_more() {
    let f = fixture().await;
    let order = f.buy(&["new-commerce-p1y"]).await;
    let subscription = order.lines[0].subscription_id.clone();
    f.clock.set(f.start + 2 * HOUR + 30 * 60 * SECOND);
    let too_much = f.file_refund(&subscription, 875_701).await.unwrap_err();
    assert_eq!(too_much.code(), Code::InvalidArgument);
    assert!(
        too_much.message().contains("875700"),
        "{}",
        too_much.message()
    );
    let ticket = f.file_refund(&subscription, 875_700).await.unwrap();
    assert_eq!(ticket.refundable_amount.unwrap().minor_units, 875_700);
    assert_eq!(
        ticket.refund_deadline.unwrap().seconds,
        (f.start + 168 * HOUR) / SECOND
    );
    // The refund workflow carries it out a little later (an hour boundary
    // passes): judged when the customer asked, it still refunds 8,757.00.
    f.clock.advance(HOUR);
    let settled = f.settled(&ticket.id).await;
    assert_eq!(settled.status, TicketStatus::Resolved as i32, "{settled:?}");
    assert_eq!(settled.refunded_amount.unwrap().minor_units, 875_700);
    f.system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reservation_cap_holds_across_tickets() {
    let f = fixture().await;
    let first = f.buy(&["reservation-p1y"]).await.lines[0]
        .subscription_id
        .clone();
    let second = f.buy(&["reservation-p1y"]).await.lines[0]
        .subscription_id
        .clone();
    let third = f.buy(&["reservation-p1y"]).await.lines[0]
        .subscription_id
        .clone();
    // The first refunds in full: 36,500.00 USD of the 50,000.00 cap.
    let ticket = f.file_refund(&first, 3_650_000).await.unwrap();
    let settled = f.settled(&ticket.id).await;
    assert_eq!(settled.status, TicketStatus::Resolved as i32, "{settled:?}");
    // The second may refund only what the cap leaves: 13,500.00.
    assert_eq!(f.refundable(&second).await.unwrap(), 1_350_000);
    let refused = f.file_refund(&second, 1_350_001).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let ticket = f.file_refund(&second, 1_350_000).await.unwrap();
    assert_eq!(ticket.refundable_amount.unwrap().minor_units, 1_350_000);
    let settled = f.settled(&ticket.id).await;
    assert_eq!(settled.status, TicketStatus::Resolved as i32, "{settled:?}");
    // Nothing is left for the third within 12 months...
    assert_eq!(f.refundable(&third).await.unwrap(), 0);
    // ...and the cap rolls: a year and a day after the first refunds, the
    // third's term is over, so the cap is seen on a fresh purchase.
    f.clock.set(f.start + 366 * DAY);
    let fourth = f.buy(&["reservation-p1y"]).await.lines[0]
        .subscription_id
        .clone();
    assert_eq!(f.refundable(&fourth).await.unwrap(), 3_650_000);
    f.system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_policy_version_leaves_earlier_subscriptions_alone() {
    let f = fixture().await;
    let before = f.buy(&["new-commerce-p1y"]).await.lines[0]
        .subscription_id
        .clone();
    // Version 2 of the policy: a 72-hour window.
    let catalog_db = f.system.service_db("catalog").await;
    csp_store::on_db!(&catalog_db, pool => csp_tests::sqlx::query(
        "INSERT INTO cancellation_policies (id, version, title, window_amount, window_unit, refund_rule, effective_from) \
         VALUES ('new-commerce-168-hours', 2, 'Three days', 72, 'hours', 'prorated_by_hour', 0)"
    )
    .execute(pool)
    .await
    .map(drop))
    .unwrap();
    // The catalog serves it within a second.
    let mut after = None;
    for _ in 0..100 {
        let order = f.buy(&["new-commerce-p1y"]).await;
        let id = order.lines[0].subscription_id.clone();
        let mut ordering = f.system.ordering(&[Role::AdminAgent]).await;
        let s = ordering
            .get_subscription(GetSubscriptionRequest {
                subscription_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .subscription
            .unwrap();
        if s.cancellation_policy_version == 2 {
            after = Some(id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = after.expect("the new policy version was never served");
    f.clock.set(f.start + 100 * HOUR);
    let closed = f.refundable(&after).await.unwrap_err();
    assert!(closed.message().contains("72-hour"), "{}", closed.message());
    // The earlier subscription keeps 168 hours.
    assert_eq!(f.refundable(&before).await.unwrap(), 866_000);
    f.system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reservation_cap_counts_other_currencies_at_the_price_lists_rate() {
    // In Germany a reservation costs 33,580.00 EUR, which the same price
    // list prices at 36,500.00 USD in the US.
    let f = fixture_in("DE").await;
    let first = f.buy(&["reservation-p1y"]).await.lines[0]
        .subscription_id
        .clone();
    let second = f.buy(&["reservation-p1y"]).await.lines[0]
        .subscription_id
        .clone();
    let mut ticket = csp_tests::refund_ticket(
        refund_request::Customer::CustomerTenantId(f.tenant.clone()),
        refund_request::Target::SubscriptionId(first.clone()),
        3_358_000,
    );
    ticket
        .refund
        .as_mut()
        .unwrap()
        .requested_amount
        .as_mut()
        .unwrap()
        .currency_code = "EUR".into();
    let mut support = f.system.support(&[Role::AdminAgent]).await;
    let filed = support
        .create_ticket(ticket)
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let settled = f.settled(&filed.id).await;
    assert_eq!(settled.status, TicketStatus::Resolved as i32, "{settled:?}");
    // 36,500.00 of the 50,000.00 USD cap used: 13,500.00 USD left, which is
    // 12,420.00 EUR at the list's rate.
    assert_eq!(f.refundable(&second).await.unwrap(), 1_242_000);
    f.system.stop().await;
}
