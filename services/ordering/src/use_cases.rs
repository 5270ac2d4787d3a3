//! Ordering's use cases: each public or internal operation as one flow,
//! from a decoded request to stored rows and back. A use case checks what
//! needs the database or a peer, applies the domain's rules, owns the
//! transaction (one storage call that writes everything, outbox messages
//! included) and wakes the relay. Handlers call exactly one of these.

use std::sync::Arc;

use csp_kit::activity::Activity;
use csp_kit::clock::{Clock, Micros};
use csp_kit::error::quoted;
use csp_kit::identity::UserCaller;
use csp_kit::ids::{OrderId, PartnerId, RecordId, RequestId, SubscriptionId, TenantId};
use csp_kit::{ApiError, ApiResult, paging};
use csp_proto::audit::v1::ActivityType;
use csp_store::idempotency::CreateOnce;
use csp_store::outbox::{self, Message};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::convert;
use crate::domain::{
    self, Cancellation, Customer, LineRequest, Order, OrderHeader, Refundable, Subscription,
    SubscriptionStatus,
};
use crate::peers::{Catalog, LICENSING};
use crate::storage::CancelOutcome;
use crate::storage::{CUSTOMER_DOMAIN_KEY, CUSTOMER_TENANT_KEY, ORDER_REQUEST_KEY, OrderingStore};

/// A customer to create (validated).
#[derive(Clone, Debug)]
pub struct NewCustomer {
    /// Its tenant id (a new one when the request named none).
    pub tenant_id: TenantId,
    /// Domain name, lower case.
    pub domain_name: String,
    /// Company name.
    pub company_name: String,
    /// Market code, upper case.
    pub market: String,
}

/// How a request names a customer.
#[derive(Clone, Debug)]
pub enum CustomerRef {
    /// By tenant id.
    Tenant(TenantId),
    /// By domain name (lower case).
    Domain(String),
}

/// An order to place (validated).
#[derive(Clone, Debug)]
pub struct PlaceOrder {
    /// The customer.
    pub customer: TenantId,
    /// The client's idempotency key.
    pub request_id: RequestId,
    /// The lines.
    pub lines: Vec<LineRequest>,
}

/// A page request as it arrived.
#[derive(Clone, Debug)]
pub struct PageRequest {
    /// Requested size (0: the default).
    pub size: i32,
    /// The previous page's token (empty: the first page).
    pub token: String,
}

/// A cancellation asked by the refund workflow (validated).
#[derive(Clone, Debug)]
pub struct CancelSubscription {
    /// The partner.
    pub partner_id: PartnerId,
    /// The subscription.
    pub subscription_id: SubscriptionId,
    /// The refund, minor units.
    pub refund_minor: i64,
    /// Its currency.
    pub refund_currency: String,
    /// Why.
    pub reason: String,
    /// The support ticket that asked.
    pub ticket_id: String,
    /// When the customer asked (the ticket's filing): the window and the
    /// refund are judged at that time (`None`: now).
    pub requested_at: Option<Micros>,
}

/// How long after a refund ticket was filed its cancellation is still
/// judged at the filing time (the refund workflow retries for a while).
pub const MAX_REQUEST_AGE: Micros = 7 * csp_kit::clock::DAY;
/// How far ahead of this service's clock a request time may be (another
/// host's clock).
pub const MAX_CLOCK_SKEW: Micros = 60 * csp_kit::clock::SECOND;

/// What a refund ticket names (validated).
#[derive(Clone, Debug)]
pub struct RefundTarget {
    /// The partner.
    pub partner_id: PartnerId,
    /// The customer.
    pub customer: CustomerRef,
    /// An order or one subscription.
    pub target: Target,
}

/// An order or one subscription.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// Every subscription of an order.
    Order(OrderId),
    /// One subscription.
    Subscription(SubscriptionId),
}

#[derive(Serialize, Deserialize)]
struct NameCursor {
    name: String,
    id: String,
    query: String,
}

#[derive(Serialize, Deserialize)]
struct TimeCursor {
    at: Micros,
    id: String,
    customer: String,
    status: i32,
}

/// Ordering's use cases.
#[derive(Clone)]
pub struct Ordering {
    store: OrderingStore,
    catalog: Catalog,
    clock: Arc<dyn Clock>,
    relay: Arc<Notify>,
}

impl Ordering {
    /// Over `store`; `relay` is woken after events are written.
    pub fn new(
        store: OrderingStore,
        catalog: Catalog,
        clock: Arc<dyn Clock>,
        relay: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            catalog,
            clock,
            relay,
        }
    }

    /// Creates a customer in a market the catalog sells in; a taken domain
    /// name or tenant id is ALREADY_EXISTS.
    pub async fn create_customer(
        &self,
        user: &UserCaller,
        new: NewCustomer,
    ) -> ApiResult<Customer> {
        let known = self.catalog.market_codes().await?;
        if !known.contains(&new.market) {
            return Err(ApiError::invalid(
                "market",
                format!(
                    "unknown market {}; the catalog sells in {}",
                    quoted(&new.market),
                    known.join(", ")
                ),
            ));
        }
        let customer = Customer {
            tenant_id: new.tenant_id,
            partner_id: user.partner_id,
            domain_name: new.domain_name,
            company_name: new.company_name,
            market: new.market,
            created_at: self.clock.now(),
        };
        match self.store.insert_customer(&customer).await {
            Ok(()) => Ok(customer),
            Err(error) if error.is_unique(CUSTOMER_DOMAIN_KEY, "domain_name") => {
                Err(ApiError::AlreadyExists {
                    resource_type: "customer",
                    name: customer.domain_name.clone(),
                    message: format!(
                        "domain_name: a customer with the domain {} already exists",
                        customer.domain_name
                    ),
                })
            }
            Err(error) if error.is_unique(CUSTOMER_TENANT_KEY, "tenant_id") => {
                Err(ApiError::AlreadyExists {
                    resource_type: "customer",
                    name: customer.tenant_id.to_string(),
                    message: format!(
                        "tenant_id: a customer with the tenant id {} already exists",
                        customer.tenant_id
                    ),
                })
            }
            Err(error) => Err(error.into()),
        }
    }

    /// A partner's customer, by tenant id or domain name; NOT_FOUND names
    /// what was asked for.
    pub async fn customer(&self, partner: PartnerId, named: &CustomerRef) -> ApiResult<Customer> {
        let (found, name) = match named {
            CustomerRef::Tenant(id) => (
                self.store.customer_by_tenant(partner, *id).await?,
                id.to_string(),
            ),
            CustomerRef::Domain(domain) => (
                self.store.customer_by_domain(partner, domain).await?,
                domain.clone(),
            ),
        };
        found.ok_or_else(|| ApiError::not_found("customer", name))
    }

    /// A page of a partner's customers by company name whose name or domain
    /// contains `query`, and the next page's token.
    pub async fn list_customers(
        &self,
        partner: PartnerId,
        query: &str,
        page: &PageRequest,
    ) -> ApiResult<(Vec<Customer>, String)> {
        let query = query.trim().to_lowercase();
        let size = page_size(page)?;
        let cursor = paging::decode::<NameCursor>(&page.token)?;
        if cursor.as_ref().is_some_and(|c| c.query != query) {
            return Err(wrong_query());
        }
        let mut customers = self
            .store
            .list_customers(
                partner,
                &query,
                cursor.as_ref().map(|c| (c.name.as_str(), c.id.as_str())),
                size + 1,
            )
            .await?;
        let next = paging::finish_page(&mut customers, size, |c| NameCursor {
            name: c.company_name.to_lowercase(),
            id: c.tenant_id.to_string(),
            query: query.clone(),
        });
        Ok((customers, next))
    }

    /// Places an order once per request id: prices every line in the
    /// customer's market, freezes the prices, and stores the order, one
    /// subscription per line, the charge and the "order placed" events in
    /// one transaction. A retry answers with the first order.
    pub async fn place_order(&self, user: &UserCaller, request: PlaceOrder) -> ApiResult<Order> {
        let partner = user.partner_id;
        let fingerprint = domain::fingerprint(request.customer.as_uuid(), &request.lines);
        let once = CreateOnce::new("order", ORDER_REQUEST_KEY, &fingerprint);
        let first = self
            .store
            .order_by_request(partner, request.request_id)
            .await?;
        if let Some(first) = once.replay(first)? {
            return Ok(first);
        }
        let customer = self
            .customer(partner, &CustomerRef::Tenant(request.customer))
            .await?;
        let sku_ids: Vec<String> = request.lines.iter().map(|l| l.sku_id.clone()).collect();
        let quotes = self.catalog.quote(&customer.market, &sku_ids).await?;
        let id = OrderId::new();
        let header = OrderHeader {
            id,
            partner_id: partner,
            customer_tenant_id: customer.tenant_id,
            request_id: request.request_id,
            request_fingerprint: fingerprint.clone(),
            placed_by_user_id: user.user_id.clone(),
            at: self.clock.now(),
        };
        let (order, subscriptions) = domain::price_order(header, &request.lines, &quotes)?;
        let messages = order_placed_messages(user, &order, &subscriptions);
        let inserted = self
            .store
            .insert_order(&order, &subscriptions, &messages)
            .await
            .map(|()| order);
        let order = once
            .settle(inserted, || {
                self.store.order_by_request(partner, request.request_id)
            })
            .await?;
        if order.id == id {
            self.relay.notify_one();
            tracing::info!(order_id = %order.id, partner_id = %partner, lines = order.lines.len(), "order placed");
        }
        Ok(order)
    }

    /// A partner's order.
    pub async fn order(&self, partner: PartnerId, id: OrderId) -> ApiResult<Order> {
        self.store
            .order(partner, id)
            .await?
            .ok_or_else(|| ApiError::not_found("order", id.to_string()))
    }

    /// A page of a customer's orders, newest first, and the next page's token.
    pub async fn list_orders(
        &self,
        partner: PartnerId,
        customer: TenantId,
        page: &PageRequest,
    ) -> ApiResult<(Vec<Order>, String)> {
        let size = page_size(page)?;
        let cursor = paging::decode::<TimeCursor>(&page.token)?;
        if cursor
            .as_ref()
            .is_some_and(|c| c.customer != customer.to_string())
        {
            return Err(wrong_query());
        }
        self.customer(partner, &CustomerRef::Tenant(customer))
            .await?;
        let mut orders = self
            .store
            .list_orders(
                partner,
                customer,
                cursor.as_ref().map(|c| (c.at, c.id.as_str())),
                size + 1,
            )
            .await?;
        let next = paging::finish_page(&mut orders, size, |o| TimeCursor {
            at: o.created_at,
            id: o.id.to_string(),
            customer: customer.to_string(),
            status: 0,
        });
        Ok((orders, next))
    }

    /// A partner's subscription.
    pub async fn subscription(
        &self,
        partner: PartnerId,
        id: SubscriptionId,
    ) -> ApiResult<Subscription> {
        self.store
            .subscription(partner, id)
            .await?
            .ok_or_else(|| ApiError::not_found("subscription", id.to_string()))
    }

    /// A page of a customer's subscriptions by purchase time, optionally of
    /// one status (`status_filter` is the request's value, bound into the
    /// page token), and the next page's token.
    pub async fn list_subscriptions(
        &self,
        partner: PartnerId,
        customer: TenantId,
        status: Option<SubscriptionStatus>,
        status_filter: i32,
        page: &PageRequest,
    ) -> ApiResult<(Vec<Subscription>, String)> {
        let size = page_size(page)?;
        let cursor = paging::decode::<TimeCursor>(&page.token)?;
        if cursor
            .as_ref()
            .is_some_and(|c| c.customer != customer.to_string() || c.status != status_filter)
        {
            return Err(wrong_query());
        }
        self.customer(partner, &CustomerRef::Tenant(customer))
            .await?;
        let mut found = self
            .store
            .list_subscriptions(
                partner,
                customer,
                status,
                cursor.as_ref().map(|c| (c.at, c.id.as_str())),
                size + 1,
            )
            .await?;
        let next = paging::finish_page(&mut found, size, |s| TimeCursor {
            at: s.purchased_at,
            id: s.id.to_string(),
            customer: customer.to_string(),
            status: status_filter,
        });
        Ok((found, next))
    }

    /// Cancels a subscription for the refund workflow (`actor` is the
    /// calling service): inside its window and refunding at most what its
    /// policy gives, both judged when the customer asked (the ticket's
    /// filing, at most [`MAX_REQUEST_AGE`] ago), within the customer's
    /// refund cap (checked again in the transaction), recording the refund
    /// and the "subscription cancelled" events in one transaction.
    /// Repeating it answers with the same outcome.
    pub async fn cancel_subscription(
        &self,
        actor: &str,
        request: CancelSubscription,
    ) -> ApiResult<Subscription> {
        let (partner, id) = (request.partner_id, request.subscription_id);
        let current = self.subscription(partner, id).await?;
        if current.status == SubscriptionStatus::Cancelled {
            return Ok(current); // the same outcome again
        }
        let now = self.clock.now();
        let judged_at = match request.requested_at {
            // Another host's clock may run a little ahead of this one.
            Some(at) if at > now + MAX_CLOCK_SKEW => {
                return Err(ApiError::invalid(
                    "requested_time",
                    "is in the future: the time the customer asked, at most a minute ahead of now",
                ));
            }
            Some(at) if now - at <= MAX_REQUEST_AGE => at.min(now),
            // Asked too long ago (or never said): judged now.
            _ => now,
        };
        let terms = current.terms();
        let cap = terms.cap().cloned();
        let cap_left = match &cap {
            Some(cap) => Some(
                (cap.amount_minor
                    - self
                        .store
                        .refunds_in_period(
                            partner,
                            current.customer_tenant_id,
                            &cap.currency,
                            now - i64::from(cap.period_days) * csp_kit::clock::DAY,
                        )
                        .await?)
                    .max(0),
            ),
            None => None,
        };
        domain::check_cancellation(
            &terms,
            judged_at,
            request.refund_minor,
            &request.refund_currency,
            cap_left,
        )?;
        let mut cancelled = current.clone();
        cancelled.status = SubscriptionStatus::Cancelled;
        cancelled.cancelled_at = Some(now);
        cancelled.refunded_minor = Some(request.refund_minor);
        cancelled.cancel_reason = Some(request.reason.clone());
        cancelled.cancel_ticket_id = Some(request.ticket_id.clone());
        let messages = cancelled_messages(actor, now, &cancelled, &request);
        let cancellation = Cancellation {
            partner_id: partner,
            subscription_id: id,
            customer_tenant_id: current.customer_tenant_id,
            at: now,
            judged_at,
            refund_minor: request.refund_minor,
            reason: request.reason,
            ticket_id: request.ticket_id,
            cap: cap.as_ref().map(|cap| {
                (
                    cap.amount_minor,
                    cap.currency.clone(),
                    now - i64::from(cap.period_days) * csp_kit::clock::DAY,
                )
            }),
            refund_cap_minor: terms.in_cap_currency(request.refund_minor),
        };
        match self.store.cancel(&cancellation, &messages).await? {
            CancelOutcome::Cancelled => {
                self.relay.notify_one();
                tracing::info!(subscription_id = %id, partner_id = %partner, "subscription cancelled");
            }
            CancelOutcome::CapExceeded { left } => {
                if let Some(cap) = &cap {
                    return Err(domain::cap_exceeded(&terms, cap, left));
                }
            }
            CancelOutcome::NotActive => {}
        }
        // Whoever cancelled it, answer with what is stored now.
        let stored = self.subscription(partner, id).await?;
        if stored.status != SubscriptionStatus::Cancelled {
            return Err(domain::window_closed(&stored.terms()));
        }
        Ok(stored)
    }

    /// What a refund ticket may cancel: the customer's order or
    /// subscription, every named subscription still active and inside its
    /// window, and what was paid for them.
    pub async fn resolve_refund_target(&self, request: RefundTarget) -> ApiResult<Refundable> {
        let partner = request.partner_id;
        let customer = self.customer(partner, &request.customer).await?;
        let subscriptions = match request.target {
            Target::Order(id) => {
                let found = self.store.subscriptions_of_order(partner, id).await?;
                if found.is_empty()
                    || found
                        .iter()
                        .any(|s| s.customer_tenant_id != customer.tenant_id)
                {
                    return Err(ApiError::not_found("order", id.to_string()));
                }
                found
            }
            Target::Subscription(id) => match self.store.subscription(partner, id).await? {
                Some(s) if s.customer_tenant_id == customer.tenant_id => vec![s],
                _ => return Err(ApiError::not_found("subscription", id.to_string())),
            },
        };
        let now = self.clock.now();
        let cap = subscriptions
            .iter()
            .filter(|s| s.status == SubscriptionStatus::Active)
            .find_map(|s| s.terms().cap().cloned());
        let cap_used = match cap {
            Some(cap) => {
                self.store
                    .refunds_in_period(
                        partner,
                        customer.tenant_id,
                        &cap.currency,
                        now - i64::from(cap.period_days) * csp_kit::clock::DAY,
                    )
                    .await?
            }
            None => 0,
        };
        domain::refundable(subscriptions, now, cap_used)
    }
}

/// "Order placed" for licensing and for the audit log, under one event id,
/// in the order's stream.
fn order_placed_messages(
    user: &UserCaller,
    order: &Order,
    subscriptions: &[Subscription],
) -> [Message; 2] {
    let event_id = RecordId::new();
    let placed = Activity::with_id(
        event_id,
        order.partner_id,
        ActivityType::OrderPlaced,
        order.created_at,
    )
    .by_user(user)
    .customer(order.customer_tenant_id)
    .detail("order_id", order.id)
    .detail("total_minor", order.total_minor)
    .detail("currency_code", &order.currency_code)
    .detail("lines", order.lines.len());
    [
        Message {
            destination: LICENSING,
            event_id: event_id.to_string(),
            stream: order.id.to_string(),
            payload: outbox::encode(&convert::order_placed(
                &event_id.to_string(),
                user,
                order,
                subscriptions,
            )),
        },
        Message::activity(order.id, placed),
    ]
}

/// "Subscription cancelled" for licensing and for the audit log, under one
/// event id, in the order's stream.
fn cancelled_messages(
    actor: &str,
    now: Micros,
    cancelled: &Subscription,
    request: &CancelSubscription,
) -> [Message; 2] {
    let event_id = RecordId::new();
    let activity = Activity::with_id(
        event_id,
        cancelled.partner_id,
        ActivityType::SubscriptionCancelled,
        now,
    )
    .by(actor, actor)
    .customer(cancelled.customer_tenant_id)
    .subscription(cancelled.id)
    .product(&cancelled.product_id)
    .detail("order_id", cancelled.order_id)
    .detail("refunded_minor", request.refund_minor)
    .detail("currency_code", &cancelled.currency_code)
    .detail("ticket_id", &request.ticket_id);
    [
        Message {
            destination: LICENSING,
            event_id: event_id.to_string(),
            stream: cancelled.order_id.to_string(),
            payload: outbox::encode(&convert::subscription_cancelled(
                &event_id.to_string(),
                actor,
                now,
                cancelled,
                &request.ticket_id,
            )),
        },
        Message::activity(cancelled.order_id, activity),
    ]
}

fn page_size(page: &PageRequest) -> ApiResult<u32> {
    paging::page_size(page.size, paging::DEFAULT_PAGE_SIZE, paging::MAX_PAGE_SIZE)
}

fn wrong_query() -> ApiError {
    ApiError::invalid(
        "page_token",
        "this page token belongs to a query with other filters; start again from an empty page_token",
    )
}

csp_store::replayable!(Order {
    fingerprint: request_fingerprint,
    request_id: request_id,
    id: id
});

/// Where the next page of ListBillingLineItems starts, and its query.
#[derive(Serialize, Deserialize)]
struct LineItemCursor {
    at: Micros,
    id: String,
    month: String,
    currency: String,
}

/// Line items per page of an export.
const EXPORT_PAGE: u32 = 500;
/// The largest chunk of an export.
const EXPORT_CHUNK: usize = 64 * 1024;

/// The columns of a billing export, in the spirit of Partner Center's
/// reconciliation files.
pub const EXPORT_COLUMNS: [&str; 19] = [
    "LineItemId",
    "ChargeType",
    "ChargeDate",
    "BillingMonth",
    "PartnerId",
    "CustomerTenantId",
    "OrderId",
    "SubscriptionId",
    "SkuId",
    "ProductId",
    "Market",
    "Currency",
    "Quantity",
    "UnitPrice",
    "Amount",
    "TaxIncluded",
    "PriceListVersion",
    "CancellationPolicyId",
    "CancellationPolicyVersion",
];

/// A currency filter: empty, or three capital letters.
fn currency_filter(field: &str, currency: &str) -> ApiResult<String> {
    let currency = currency.trim();
    if currency.is_empty()
        || (currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Ok(currency.to_owned());
    }
    Err(ApiError::invalid(
        field,
        format!(
            "{} is not an ISO 4217 currency code such as USD",
            csp_kit::error::quoted(currency)
        ),
    ))
}

/// An amount in minor units as a decimal: `-123.45`.
fn decimal(minor: i64, digits: i32) -> String {
    let digits = u32::try_from(digits).unwrap_or(2).min(4);
    if digits == 0 {
        return minor.to_string();
    }
    let scale = 10_i64.pow(digits);
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let scale = scale.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        abs / scale,
        abs % scale,
        width = digits as usize
    )
}

/// One line item as a CSV record of [`EXPORT_COLUMNS`].
fn export_record(item: &domain::BillingLineItem, month: &str) -> [String; 19] {
    [
        item.id.clone(),
        match item.charge_type {
            domain::ChargeType::Purchase => "Purchase".to_owned(),
            domain::ChargeType::Refund => "Refund".to_owned(),
        },
        csp_kit::clock::to_rfc3339(item.billed_at),
        month.to_owned(),
        item.partner_id.to_string(),
        item.customer_tenant_id.to_string(),
        item.order_id.to_string(),
        item.subscription_id.to_string(),
        item.sku_id.clone(),
        item.product_id.clone(),
        item.market.clone(),
        item.currency_code.clone(),
        item.quantity.to_string(),
        decimal(item.unit_price_minor, item.minor_unit_digits),
        decimal(item.amount_minor, item.minor_unit_digits),
        item.tax_included.to_string(),
        item.price_list_version.to_string(),
        item.policy_id.clone(),
        item.policy_version.to_string(),
    ]
}

/// CSV text of `records`.
fn csv_text<I, R>(records: I) -> ApiResult<Vec<u8>>
where
    I: IntoIterator<Item = R>,
    R: IntoIterator,
    R::Item: AsRef<[u8]>,
{
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    for record in records {
        writer
            .write_record(record)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("cannot write CSV: {e}")))?;
    }
    writer
        .into_inner()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("cannot write CSV: {e}")))
}

impl Ordering {
    /// A page of a partner's line items billed in `month`, optionally in
    /// one currency, oldest first, and the next page's token.
    pub async fn line_items(
        &self,
        partner: PartnerId,
        month: &str,
        currency: &str,
        page: &PageRequest,
    ) -> ApiResult<(Vec<domain::BillingLineItem>, String)> {
        let range = domain::billing_month("month", month)?;
        let currency = currency_filter("currency_code", currency)?;
        let size = page_size(page)?;
        let month = month.trim().to_owned();
        let cursor = paging::decode::<LineItemCursor>(&page.token)?;
        if cursor
            .as_ref()
            .is_some_and(|c| c.month != month || c.currency != currency)
        {
            return Err(wrong_query());
        }
        let after = cursor
            .as_ref()
            .map_or((Micros::MIN, ""), |c| (c.at, c.id.as_str()));
        let mut items = self
            .store
            .line_items(partner, range, &currency, after, size + 1)
            .await?;
        let next = paging::finish_page(&mut items, size, |last| LineItemCursor {
            at: last.billed_at,
            id: last.id.clone(),
            month: month.clone(),
            currency: currency.clone(),
        });
        Ok((items, next))
    }

    /// A partner's statement of `month`, one per currency.
    pub async fn statement(
        &self,
        partner: PartnerId,
        month: &str,
    ) -> ApiResult<Vec<domain::CurrencyStatement>> {
        let range = domain::billing_month("month", month)?;
        Ok(self.store.statement(partner, range).await?)
    }

    /// A partner's line items of `month` as CSV chunks of at most 64 KiB
    /// (whole lines), oldest first, read a page at a time while the caller
    /// takes them.
    pub fn export(
        &self,
        partner: PartnerId,
        month: &str,
        currency: &str,
    ) -> ApiResult<tokio::sync::mpsc::Receiver<ApiResult<Vec<u8>>>> {
        let range = domain::billing_month("month", month)?;
        let currency = currency_filter("currency_code", currency)?;
        let month = month.trim().to_owned();
        let store = self.store.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut chunk = match csv_text([EXPORT_COLUMNS]) {
                Ok(header) => header,
                Err(error) => {
                    let _ = tx.send(Err(error)).await;
                    return;
                }
            };
            let mut after = (Micros::MIN, String::new());
            loop {
                let page = match store
                    .line_items(partner, range, &currency, (after.0, &after.1), EXPORT_PAGE)
                    .await
                {
                    Ok(page) => page,
                    Err(error) => {
                        let _ = tx.send(Err(error.into())).await;
                        return;
                    }
                };
                let last = page.len() < EXPORT_PAGE as usize;
                for item in &page {
                    let line = match csv_text([export_record(item, &month)]) {
                        Ok(line) => line,
                        Err(error) => {
                            let _ = tx.send(Err(error)).await;
                            return;
                        }
                    };
                    if chunk.len() + line.len() > EXPORT_CHUNK
                        && tx.send(Ok(std::mem::take(&mut chunk))).await.is_err()
                    {
                        return; // the caller went away
                    }
                    chunk.extend_from_slice(&line);
                }
                if let Some(item) = page.last() {
                    after = (item.billed_at, item.id.clone());
                }
                if last {
                    break;
                }
            }
            if !chunk.is_empty() {
                let _ = tx.send(Ok(chunk)).await;
            }
        });
        Ok(rx)
    }
}
