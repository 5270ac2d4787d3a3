//! gRPC handlers, public and internal: decode, validate, call storage and
//! the domain rules, map to the contract.

use std::sync::Arc;

use csp_kit::activity::Activity;
use csp_kit::clock::{Clock, Micros};
use csp_kit::identity::UserCaller;
use csp_kit::ids::{PartnerId, RecordId, parse_uuid};
use csp_kit::market::MarketCode;
use csp_kit::{ApiError, ApiResult, Caller, paging};
use csp_proto::audit::v1::ActivityType;
use csp_proto::ordering::v1 as pb;
use csp_proto::ordering::v1::ordering_internal_service_server::OrderingInternalService;
use csp_proto::ordering::v1::ordering_service_server::OrderingService;
use csp_store::idempotency::{CreateOnce, Replayable};
use csp_store::outbox::{self, Message};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::convert;
use crate::domain::{self, CancellationTerms};
use crate::storage::{Cancellation, Customer, Order, OrderLine, OrderingStore, Subscription};
use crate::upstream::{Catalog, LICENSING};

/// The ordering API (public and internal).
#[derive(Clone)]
pub struct OrderingApi {
    store: OrderingStore,
    catalog: Catalog,
    clock: Arc<dyn Clock>,
    relay: Arc<Notify>,
}

impl OrderingApi {
    /// The API over `store`; `relay` is woken after events are written.
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

    async fn customer_of(&self, partner: &str, tenant_id: &str) -> ApiResult<Customer> {
        self.store
            .customer_by_tenant(partner, tenant_id)
            .await?
            .ok_or_else(|| ApiError::not_found("customer", tenant_id))
    }

    async fn create_customer(
        &self,
        user: &UserCaller,
        r: pb::CreateCustomerRequest,
    ) -> ApiResult<Customer> {
        let mut violations = Vec::new();
        let tenant_id = if r.tenant_id.trim().is_empty() {
            Some(Uuid::new_v4())
        } else {
            collect(&mut violations, parse_uuid("tenant_id", &r.tenant_id))
        };
        let domain_name = collect(
            &mut violations,
            domain::parse_domain_name("domain_name", &r.domain_name),
        );
        let company_name = collect(
            &mut violations,
            domain::parse_company_name("company_name", &r.company_name),
        );
        let market = collect(
            &mut violations,
            MarketCode::parse("market", &r.market).map(|code| code.to_string()),
        );
        let (Some(tenant_id), Some(domain_name), Some(company_name), Some(market)) =
            (tenant_id, domain_name, company_name, market)
        else {
            return Err(ApiError::InvalidArgument(violations));
        };
        let markets = self.catalog.markets().await?;
        if !markets.iter().any(|m| m.code == market) {
            let known: Vec<&str> = markets.iter().map(|m| m.code.as_str()).collect();
            return Err(ApiError::invalid(
                "market",
                format!(
                    "unknown market {}; the catalog sells in {}",
                    csp_kit::error::quoted(&market),
                    known.join(", ")
                ),
            ));
        }
        let customer = Customer {
            tenant_id: tenant_id.to_string(),
            partner_id: user.partner_id.to_string(),
            domain_name,
            company_name,
            market,
            created_at: self.clock.now(),
        };
        match self.store.insert_customer(&customer).await {
            Ok(()) => Ok(customer),
            Err(error) if error.is_unique("customers_domain_name_key", "domain_name") => {
                Err(ApiError::AlreadyExists {
                    resource_type: "customer",
                    name: customer.domain_name.clone(),
                    message: format!(
                        "domain_name: a customer with the domain {} already exists",
                        customer.domain_name
                    ),
                })
            }
            Err(error) if error.is_unique("customers_pkey", "tenant_id") => {
                Err(ApiError::AlreadyExists {
                    resource_type: "customer",
                    name: customer.tenant_id.clone(),
                    message: format!(
                        "tenant_id: a customer with the tenant id {} already exists",
                        customer.tenant_id
                    ),
                })
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn place_order(&self, user: &UserCaller, r: pb::PlaceOrderRequest) -> ApiResult<Order> {
        let partner = user.partner_id.to_string();
        let mut violations = Vec::new();
        let customer_id = collect(
            &mut violations,
            parse_uuid("customer_tenant_id", &r.customer_tenant_id),
        );
        let request_id = collect(&mut violations, parse_uuid("request_id", &r.request_id));
        let lines = collect(
            &mut violations,
            domain::check_lines(
                &r.lines
                    .iter()
                    .map(|l| (l.sku_id.clone(), l.quantity))
                    .collect::<Vec<_>>(),
            ),
        );
        let (Some(customer_id), Some(request_id), Some(lines)) = (customer_id, request_id, lines)
        else {
            return Err(ApiError::InvalidArgument(violations));
        };
        let request_id = request_id.to_string();
        let fingerprint = domain::fingerprint(customer_id, &lines);

        let once = CreateOnce::new("order", "orders_partner_request_key", &fingerprint);
        if let Some(first) =
            once.replay(self.store.order_by_request(&partner, &request_id).await?)?
        {
            return Ok(first);
        }
        let customer = self.customer_of(&partner, &customer_id.to_string()).await?;
        let sku_ids: Vec<String> = lines.iter().map(|l| l.sku_id.clone()).collect();
        let quotes = self.catalog.quote(&customer.market, &sku_ids).await?;

        let now = self.clock.now();
        let order_id = Uuid::new_v4().to_string();
        let mut order_lines = Vec::with_capacity(lines.len());
        let mut subscriptions = Vec::with_capacity(lines.len());
        let mut total: i64 = 0;
        let (mut currency, mut digits, mut tax_included) = (String::new(), 2, false);
        for (i, (line, quote)) in lines.iter().zip(&quotes).enumerate() {
            let (Some(sku), Some(product)) = (&quote.sku, &quote.product) else {
                return Err(ApiError::Internal(anyhow::anyhow!(
                    "the catalog sent an incomplete quote"
                )));
            };
            let price = sku
                .price
                .as_ref()
                .and_then(|p| p.amount.as_ref().map(|a| (a, p.tax_included)))
                .ok_or_else(|| {
                    ApiError::Internal(anyhow::anyhow!("the catalog sent no price for {}", sku.id))
                })?;
            let (amount, tax) = price;
            if i == 0 {
                currency = amount.currency_code.clone();
                digits = i32::try_from(amount.minor_unit_digits).unwrap_or(2);
                tax_included = tax;
            } else if amount.currency_code != currency {
                return Err(ApiError::Internal(anyhow::anyhow!(
                    "the catalog priced one order in two currencies"
                )));
            }
            let line_amount = domain::line_amount(amount.minor_units, line.quantity, i)?;
            total = total
                .checked_add(line_amount)
                .ok_or_else(|| ApiError::invalid("lines", "the order total is too large"))?;
            let subscription_id = Uuid::new_v4().to_string();
            let line_number = i32::try_from(i + 1).unwrap_or(i32::MAX);
            let kind = convert::kind_to_db(product.kind).ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!(
                    "the catalog sent product {} with unknown kind {}",
                    product.id,
                    product.kind
                ))
            })?;
            order_lines.push(OrderLine {
                line_number,
                sku_id: sku.id.clone(),
                product_id: product.id.clone(),
                product_title: product.title.clone(),
                product_kind: kind.to_owned(),
                term: convert::term_to_db(sku.term).to_owned(),
                quantity: line.quantity,
                unit_price_minor: amount.minor_units,
                amount_minor: line_amount,
                subscription_id: subscription_id.clone(),
            });
            subscriptions.push(Subscription {
                id: subscription_id,
                partner_id: partner.clone(),
                customer_tenant_id: customer.tenant_id.clone(),
                order_id: order_id.clone(),
                line_number,
                product_id: product.id.clone(),
                product_kind: kind.to_owned(),
                sku_id: sku.id.clone(),
                status: "active".to_owned(),
                quantity: line.quantity,
                currency_code: amount.currency_code.clone(),
                minor_unit_digits: digits,
                amount_paid_minor: line_amount,
                purchased_at: now,
                cancellation_window_days: i32::try_from(product.cancellation_window_days)
                    .unwrap_or(i32::MAX),
                cancellable_until: domain::cancellable_until(now, product.cancellation_window_days),
                cancelled_at: None,
                refunded_minor: None,
                cancel_reason: None,
                cancel_ticket_id: None,
            });
        }
        let order = Order {
            id: order_id.clone(),
            partner_id: partner.clone(),
            customer_tenant_id: customer.tenant_id.clone(),
            request_id: request_id.clone(),
            request_fingerprint: fingerprint.clone(),
            status: "completed".to_owned(),
            currency_code: currency.clone(),
            minor_unit_digits: digits,
            total_minor: total,
            tax_included,
            placed_by_user_id: user.user_id.clone(),
            created_at: now,
            lines: order_lines,
        };

        let event_id = RecordId::new();
        let placed = Activity::with_id(event_id, user.partner_id, ActivityType::OrderPlaced, now)
            .by_user(user)
            .customer(&customer.tenant_id)
            .detail("order_id", &order_id)
            .detail("total_minor", total)
            .detail("currency_code", &currency)
            .detail("lines", order.lines.len());
        let messages = [
            Message {
                destination: LICENSING,
                event_id: event_id.to_string(),
                stream: order_id.clone(),
                payload: outbox::encode(&convert::order_placed(
                    &event_id.to_string(),
                    user,
                    &order,
                    &subscriptions,
                )),
            },
            Message::activity(&order_id, placed),
        ];
        let inserted = self
            .store
            .insert_order(&order, &subscriptions, &messages)
            .await
            .map(|()| order);
        let order = once
            .settle(inserted, || {
                self.store.order_by_request(&partner, &request_id)
            })
            .await?;
        if order.id == order_id {
            self.relay.notify_one();
            tracing::info!(order_id = %order.id, partner_id = %partner, lines = order.lines.len(), "order placed");
        }
        Ok(order)
    }

    async fn cancel(
        &self,
        r: pb::CancelSubscriptionRequest,
        actor: &str,
    ) -> ApiResult<Subscription> {
        let mut violations = Vec::new();
        let partner = collect(&mut violations, parse_uuid("partner_id", &r.partner_id));
        let subscription_id = collect(
            &mut violations,
            parse_uuid("subscription_id", &r.subscription_id),
        );
        let refund = r.refund.clone();
        if refund.is_none() {
            violations.push(csp_kit::FieldViolation::new(
                "refund",
                "required: the amount to refund",
            ));
        }
        let (Some(partner), Some(subscription_id), Some(refund)) =
            (partner, subscription_id, refund)
        else {
            return Err(ApiError::InvalidArgument(violations));
        };
        let partner_id = PartnerId::from_uuid(partner);
        let (partner, subscription_id) = (partner.to_string(), subscription_id.to_string());
        let current = self
            .store
            .subscription(&partner, &subscription_id)
            .await?
            .ok_or_else(|| ApiError::not_found("subscription", &subscription_id))?;
        if current.status == "cancelled" {
            return Ok(current); // the same outcome again
        }
        let now = self.clock.now();
        domain::check_cancellation(
            &terms(&current),
            now,
            refund.minor_units,
            &refund.currency_code,
        )?;

        let mut cancelled = current.clone();
        cancelled.status = "cancelled".to_owned();
        cancelled.cancelled_at = Some(now);
        cancelled.refunded_minor = Some(refund.minor_units);
        cancelled.cancel_reason = Some(r.reason.clone());
        cancelled.cancel_ticket_id = Some(r.ticket_id.clone());
        let event_id = RecordId::new();
        let activity = Activity::with_id(
            event_id,
            partner_id,
            ActivityType::SubscriptionCancelled,
            now,
        )
        .by(actor, actor)
        .customer(&current.customer_tenant_id)
        .subscription(&current.id)
        .product(&current.product_id)
        .detail("order_id", &current.order_id)
        .detail("refunded_minor", refund.minor_units)
        .detail("currency_code", &current.currency_code)
        .detail("ticket_id", &r.ticket_id);
        let messages = [
            Message {
                destination: LICENSING,
                event_id: event_id.to_string(),
                stream: current.order_id.clone(),
                payload: outbox::encode(&convert::subscription_cancelled(
                    &event_id.to_string(),
                    actor,
                    now,
                    &cancelled,
                    &r.ticket_id,
                )),
            },
            Message::activity(&current.order_id, activity),
        ];
        let cancellation = Cancellation {
            partner_id: partner.clone(),
            subscription_id: subscription_id.clone(),
            at: now,
            refund_minor: refund.minor_units,
            reason: r.reason,
            ticket_id: r.ticket_id,
        };
        let changed = self.store.cancel(&cancellation, &messages).await?;
        if changed {
            self.relay.notify_one();
            tracing::info!(subscription_id = %subscription_id, partner_id = %partner, "subscription cancelled");
        }
        // Whoever cancelled it, answer with what is stored now.
        let stored = self
            .store
            .subscription(&partner, &subscription_id)
            .await?
            .ok_or_else(|| ApiError::not_found("subscription", &subscription_id))?;
        if stored.status != "cancelled" {
            return Err(domain::window_closed(&terms(&stored)));
        }
        Ok(stored)
    }

    async fn resolve(
        &self,
        r: pb::ResolveRefundTargetRequest,
    ) -> ApiResult<pb::ResolveRefundTargetResponse> {
        let partner = parse_uuid("partner_id", &r.partner_id)?.to_string();
        let (customer, named_customer) = match r.customer {
            Some(pb::resolve_refund_target_request::Customer::CustomerTenantId(id)) => {
                let id = parse_uuid("customer_tenant_id", &id)?.to_string();
                (self.store.customer_by_tenant(&partner, &id).await?, id)
            }
            Some(pb::resolve_refund_target_request::Customer::CustomerDomainName(name)) => {
                let name = domain::parse_domain_name("customer_domain_name", &name)?;
                (self.store.customer_by_domain(&partner, &name).await?, name)
            }
            None => {
                return Err(ApiError::invalid(
                    "customer",
                    "name the customer by tenant id or domain name",
                ));
            }
        };
        let customer = customer.ok_or_else(|| ApiError::not_found("customer", named_customer))?;
        let subscriptions = match r.target {
            Some(pb::resolve_refund_target_request::Target::OrderId(id)) => {
                let id = parse_uuid("order_id", &id)?.to_string();
                let found = self.store.subscriptions_of_order(&partner, &id).await?;
                if found.is_empty()
                    || found
                        .iter()
                        .any(|s| s.customer_tenant_id != customer.tenant_id)
                {
                    return Err(ApiError::not_found("order", id));
                }
                found
            }
            Some(pb::resolve_refund_target_request::Target::SubscriptionId(id)) => {
                let id = parse_uuid("subscription_id", &id)?.to_string();
                match self.store.subscription(&partner, &id).await? {
                    Some(s) if s.customer_tenant_id == customer.tenant_id => vec![s],
                    _ => return Err(ApiError::not_found("subscription", id)),
                }
            }
            None => {
                return Err(ApiError::invalid(
                    "target",
                    "name an order id or a subscription id",
                ));
            }
        };
        let now = self.clock.now();
        let active: Vec<&Subscription> = subscriptions
            .iter()
            .filter(|s| s.status == "active")
            .collect();
        if active.is_empty() {
            return Err(ApiError::failed_precondition(
                "ALREADY_CANCELLED",
                format!("subscription/{}", subscriptions[0].id),
                "every subscription named is already cancelled",
            ));
        }
        for s in &active {
            if now >= s.cancellable_until {
                return Err(domain::window_closed(&terms(s)));
            }
        }
        let paid: i64 = active.iter().map(|s| s.amount_paid_minor).sum();
        let first = active[0];
        Ok(pb::ResolveRefundTargetResponse {
            subscriptions: active.iter().map(|s| convert::subscription(s)).collect(),
            amount_paid: Some(csp_proto::common::v1::Money {
                currency_code: first.currency_code.clone(),
                minor_units: paid,
                minor_unit_digits: u32::try_from(first.minor_unit_digits).unwrap_or(2),
            }),
        })
    }
}

fn terms(s: &Subscription) -> CancellationTerms {
    CancellationTerms {
        subscription_id: s.id.clone(),
        purchased_at: s.purchased_at,
        window_days: u32::try_from(s.cancellation_window_days).unwrap_or(0),
        cancellable_until: s.cancellable_until,
        amount_paid_minor: s.amount_paid_minor,
        currency_code: s.currency_code.clone(),
    }
}

/// Keeps a field's value, or its violations for the one error that names
/// every bad field.
fn collect<T>(violations: &mut Vec<csp_kit::FieldViolation>, result: ApiResult<T>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(ApiError::InvalidArgument(v)) => {
            violations.extend(v);
            None
        }
        Err(other) => {
            violations.push(csp_kit::FieldViolation::new("request", other.to_string()));
            None
        }
    }
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

fn wrong_query() -> ApiError {
    ApiError::invalid(
        "page_token",
        "this page token belongs to a query with other filters; start again from an empty page_token",
    )
}

#[tonic::async_trait]
impl OrderingService for OrderingApi {
    async fn create_customer(
        &self,
        request: Request<pb::CreateCustomerRequest>,
    ) -> Result<Response<pb::CreateCustomerResponse>, Status> {
        let user = Caller::user_of(&request)?.clone();
        let customer = self.create_customer(&user, request.into_inner()).await?;
        Ok(Response::new(pb::CreateCustomerResponse {
            customer: Some(convert::customer(&customer)),
        }))
    }

    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::GetCustomerResponse>, Status> {
        let partner = Caller::user_of(&request)?.partner_id.to_string();
        let found = match request.into_inner().customer {
            Some(pb::get_customer_request::Customer::TenantId(id)) => {
                let id = parse_uuid("tenant_id", &id)?.to_string();
                self.store
                    .customer_by_tenant(&partner, &id)
                    .await?
                    .ok_or_else(|| ApiError::not_found("customer", id))?
            }
            Some(pb::get_customer_request::Customer::DomainName(name)) => {
                let name = domain::parse_domain_name("domain_name", &name)?;
                self.store
                    .customer_by_domain(&partner, &name)
                    .await?
                    .ok_or_else(|| ApiError::not_found("customer", name))?
            }
            None => {
                return Err(ApiError::invalid("customer", "set tenant_id or domain_name").into());
            }
        };
        Ok(Response::new(pb::GetCustomerResponse {
            customer: Some(convert::customer(&found)),
        }))
    }

    async fn list_customers(
        &self,
        request: Request<pb::ListCustomersRequest>,
    ) -> Result<Response<pb::ListCustomersResponse>, Status> {
        let partner = Caller::user_of(&request)?.partner_id.to_string();
        let r = request.into_inner();
        let query = r.query.trim().to_lowercase();
        let size = paging::page_size(
            r.page_size,
            paging::DEFAULT_PAGE_SIZE,
            paging::MAX_PAGE_SIZE,
        )?;
        let cursor = paging::decode::<NameCursor>(&r.page_token)?;
        if cursor.as_ref().is_some_and(|c| c.query != query) {
            return Err(wrong_query().into());
        }
        let mut customers = self
            .store
            .list_customers(
                &partner,
                &query,
                cursor.as_ref().map(|c| (c.name.as_str(), c.id.as_str())),
                size + 1,
            )
            .await?;
        let next_page_token = paging::finish_page(&mut customers, size, |c| NameCursor {
            name: c.company_name.to_lowercase(),
            id: c.tenant_id.clone(),
            query: query.clone(),
        });
        Ok(Response::new(pb::ListCustomersResponse {
            customers: customers.iter().map(convert::customer).collect(),
            next_page_token,
        }))
    }

    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        let user = Caller::user_of(&request)?.clone();
        let order = self.place_order(&user, request.into_inner()).await?;
        Ok(Response::new(pb::PlaceOrderResponse {
            order: Some(convert::order(&order)),
        }))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let partner = Caller::user_of(&request)?.partner_id.to_string();
        let id = parse_uuid("order_id", &request.get_ref().order_id)?.to_string();
        let order = self
            .store
            .order(&partner, &id)
            .await?
            .ok_or_else(|| ApiError::not_found("order", id))?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(convert::order(&order)),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let partner = Caller::user_of(&request)?.partner_id.to_string();
        let r = request.into_inner();
        let customer = parse_uuid("customer_tenant_id", &r.customer_tenant_id)?.to_string();
        let size = paging::page_size(
            r.page_size,
            paging::DEFAULT_PAGE_SIZE,
            paging::MAX_PAGE_SIZE,
        )?;
        let cursor = paging::decode::<TimeCursor>(&r.page_token)?;
        if cursor.as_ref().is_some_and(|c| c.customer != customer) {
            return Err(wrong_query().into());
        }
        self.customer_of(&partner, &customer).await?;
        let mut orders = self
            .store
            .list_orders(
                &partner,
                &customer,
                cursor.as_ref().map(|c| (c.at, c.id.as_str())),
                size + 1,
            )
            .await?;
        let next_page_token = paging::finish_page(&mut orders, size, |o| TimeCursor {
            at: o.created_at,
            id: o.id.clone(),
            customer: customer.clone(),
            status: 0,
        });
        Ok(Response::new(pb::ListOrdersResponse {
            orders: orders.iter().map(convert::order).collect(),
            next_page_token,
        }))
    }

    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::GetSubscriptionResponse>, Status> {
        let partner = Caller::user_of(&request)?.partner_id.to_string();
        let id = parse_uuid("subscription_id", &request.get_ref().subscription_id)?.to_string();
        let found = self
            .store
            .subscription(&partner, &id)
            .await?
            .ok_or_else(|| ApiError::not_found("subscription", id))?;
        Ok(Response::new(pb::GetSubscriptionResponse {
            subscription: Some(convert::subscription(&found)),
        }))
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let partner = Caller::user_of(&request)?.partner_id.to_string();
        let r = request.into_inner();
        let customer = parse_uuid("customer_tenant_id", &r.customer_tenant_id)?.to_string();
        let status = match pb::SubscriptionStatus::try_from(r.status) {
            Ok(pb::SubscriptionStatus::Unspecified) => None,
            Ok(pb::SubscriptionStatus::Active) => Some("active"),
            Ok(pb::SubscriptionStatus::Cancelled) => Some("cancelled"),
            Err(_) => {
                return Err(ApiError::invalid(
                    "status",
                    format!("{} is not a SubscriptionStatus", r.status),
                )
                .into());
            }
        };
        let size = paging::page_size(
            r.page_size,
            paging::DEFAULT_PAGE_SIZE,
            paging::MAX_PAGE_SIZE,
        )?;
        let cursor = paging::decode::<TimeCursor>(&r.page_token)?;
        if cursor
            .as_ref()
            .is_some_and(|c| c.customer != customer || c.status != r.status)
        {
            return Err(wrong_query().into());
        }
        self.customer_of(&partner, &customer).await?;
        let mut found = self
            .store
            .list_subscriptions(
                &partner,
                &customer,
                status,
                cursor.as_ref().map(|c| (c.at, c.id.as_str())),
                size + 1,
            )
            .await?;
        let next_page_token = paging::finish_page(&mut found, size, |s| TimeCursor {
            at: s.purchased_at,
            id: s.id.clone(),
            customer: customer.clone(),
            status: r.status,
        });
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions: found.iter().map(convert::subscription).collect(),
            next_page_token,
        }))
    }
}

#[tonic::async_trait]
impl OrderingInternalService for OrderingApi {
    async fn resolve_refund_target(
        &self,
        request: Request<pb::ResolveRefundTargetRequest>,
    ) -> Result<Response<pb::ResolveRefundTargetResponse>, Status> {
        Caller::service_of(&request)?;
        Ok(Response::new(self.resolve(request.into_inner()).await?))
    }

    async fn check_customer(
        &self,
        request: Request<pb::CheckCustomerRequest>,
    ) -> Result<Response<pb::CheckCustomerResponse>, Status> {
        Caller::service_of(&request)?;
        let r = request.into_inner();
        let partner = parse_uuid("partner_id", &r.partner_id)?.to_string();
        let tenant = parse_uuid("tenant_id", &r.tenant_id)?.to_string();
        let customer = self.customer_of(&partner, &tenant).await?;
        Ok(Response::new(pb::CheckCustomerResponse {
            customer: Some(convert::customer(&customer)),
        }))
    }

    async fn cancel_subscription(
        &self,
        request: Request<pb::CancelSubscriptionRequest>,
    ) -> Result<Response<pb::CancelSubscriptionResponse>, Status> {
        let actor = Caller::service_of(&request)?.to_owned();
        let cancelled = self.cancel(request.into_inner(), &actor).await?;
        Ok(Response::new(pb::CancelSubscriptionResponse {
            subscription: Some(convert::subscription(&cancelled)),
        }))
    }
}

impl Replayable for Order {
    fn fingerprint(&self) -> &str {
        &self.request_fingerprint
    }

    fn request_id(&self) -> String {
        self.request_id.clone()
    }

    fn id(&self) -> String {
        self.id.clone()
    }
}
