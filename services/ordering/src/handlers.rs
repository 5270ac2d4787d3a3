//! The gRPC handlers, public and internal: each decodes its request (field
//! by field, with field-level errors), takes the caller, calls one use case
//! and encodes the answer. No rule and no storage here.

use csp_kit::error::Violations;
use csp_kit::ids::{OrderId, PartnerId, RequestId, SubscriptionId, TenantId};
use csp_kit::market::MarketCode;
use csp_kit::{ApiError, ApiResult, Caller};
use csp_proto::common::v1::Money;
use csp_proto::ordering::v1 as pb;
use csp_proto::ordering::v1::billing_service_server::BillingService;
use csp_proto::ordering::v1::ordering_internal_service_server::OrderingInternalService;
use csp_proto::ordering::v1::ordering_service_server::OrderingService;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::domain::{self, SubscriptionStatus};
use crate::use_cases::{
    CancelSubscription, CustomerRef, NewCustomer, Ordering, PageRequest, PlaceOrder, RefundTarget,
    Target,
};

/// The ordering API (public and internal) over its use cases.
#[derive(Clone)]
pub struct OrderingApi {
    ordering: Ordering,
}

impl OrderingApi {
    /// The API over `ordering`.
    pub fn new(ordering: Ordering) -> Self {
        Self { ordering }
    }
}

#[tonic::async_trait]
impl OrderingService for OrderingApi {
    async fn create_customer(
        &self,
        request: Request<pb::CreateCustomerRequest>,
    ) -> Result<Response<pb::CreateCustomerResponse>, Status> {
        let user = Caller::user_of(&request)?.clone();
        let new = decode_new_customer(request.get_ref())?;
        let customer = self.ordering.create_customer(&user, new).await?;
        Ok(Response::new(pb::CreateCustomerResponse {
            customer: Some(convert::customer(&customer)),
        }))
    }

    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::GetCustomerResponse>, Status> {
        let partner = Caller::user_of(&request)?.partner_id;
        let named = match &request.get_ref().customer {
            Some(pb::get_customer_request::Customer::TenantId(id)) => {
                CustomerRef::Tenant(TenantId::parse("tenant_id", id)?)
            }
            Some(pb::get_customer_request::Customer::DomainName(name)) => {
                CustomerRef::Domain(domain::parse_domain_name("domain_name", name)?)
            }
            None => {
                return Err(ApiError::invalid("customer", "set tenant_id or domain_name").into());
            }
        };
        let customer = self.ordering.customer(partner, &named).await?;
        Ok(Response::new(pb::GetCustomerResponse {
            customer: Some(convert::customer(&customer)),
        }))
    }

    async fn list_customers(
        &self,
        request: Request<pb::ListCustomersRequest>,
    ) -> Result<Response<pb::ListCustomersResponse>, Status> {
        let partner = Caller::user_of(&request)?.partner_id;
        let r = request.into_inner();
        let page = PageRequest {
            size: r.page_size,
            token: r.page_token,
        };
        let (customers, next_page_token) = self
            .ordering
            .list_customers(partner, &r.query, &page)
            .await?;
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
        let place = decode_place_order(request.get_ref())?;
        let order = self.ordering.place_order(&user, place).await?;
        Ok(Response::new(pb::PlaceOrderResponse {
            order: Some(convert::order(&order)),
        }))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let partner = Caller::user_of(&request)?.partner_id;
        let id = OrderId::parse("order_id", &request.get_ref().order_id)?;
        let order = self.ordering.order(partner, id).await?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(convert::order(&order)),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let partner = Caller::user_of(&request)?.partner_id;
        let r = request.into_inner();
        let customer = TenantId::parse("customer_tenant_id", &r.customer_tenant_id)?;
        let page = PageRequest {
            size: r.page_size,
            token: r.page_token,
        };
        let (orders, next_page_token) = self.ordering.list_orders(partner, customer, &page).await?;
        Ok(Response::new(pb::ListOrdersResponse {
            orders: orders.iter().map(convert::order).collect(),
            next_page_token,
        }))
    }

    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::GetSubscriptionResponse>, Status> {
        let partner = Caller::user_of(&request)?.partner_id;
        let id = SubscriptionId::parse("subscription_id", &request.get_ref().subscription_id)?;
        let subscription = self.ordering.subscription(partner, id).await?;
        Ok(Response::new(pb::GetSubscriptionResponse {
            subscription: Some(convert::subscription(&subscription)),
        }))
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let partner = Caller::user_of(&request)?.partner_id;
        let r = request.into_inner();
        let customer = TenantId::parse("customer_tenant_id", &r.customer_tenant_id)?;
        let status = decode_status_filter(r.status)?;
        let page = PageRequest {
            size: r.page_size,
            token: r.page_token,
        };
        let (subscriptions, next_page_token) = self
            .ordering
            .list_subscriptions(partner, customer, status, r.status, &page)
            .await?;
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions: subscriptions.iter().map(convert::subscription).collect(),
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
        let target = decode_refund_target(request.into_inner())?;
        let found = self.ordering.resolve_refund_target(target).await?;
        let money = |minor_units| Money {
            currency_code: found.currency_code.clone(),
            minor_units,
            minor_unit_digits: u32::try_from(found.minor_unit_digits).unwrap_or(2),
        };
        Ok(Response::new(pb::ResolveRefundTargetResponse {
            subscriptions: found
                .subscriptions
                .iter()
                .map(|(s, _)| convert::subscription(s))
                .collect(),
            amount_paid: Some(money(found.paid_minor)),
            amount_refundable: Some(money(found.refundable_minor)),
            refundable_amounts: found
                .subscriptions
                .iter()
                .map(|(_, refund)| money(*refund))
                .collect(),
            refund_deadline: Some(csp_kit::clock::to_timestamp(found.deadline)),
        }))
    }

    async fn check_customer(
        &self,
        request: Request<pb::CheckCustomerRequest>,
    ) -> Result<Response<pb::CheckCustomerResponse>, Status> {
        Caller::service_of(&request)?;
        let r = request.get_ref();
        let partner = PartnerId::parse("partner_id", &r.partner_id)?;
        let tenant = TenantId::parse("tenant_id", &r.tenant_id)?;
        let customer = self
            .ordering
            .customer(partner, &CustomerRef::Tenant(tenant))
            .await?;
        Ok(Response::new(pb::CheckCustomerResponse {
            customer: Some(convert::customer(&customer)),
        }))
    }

    async fn cancel_subscription(
        &self,
        request: Request<pb::CancelSubscriptionRequest>,
    ) -> Result<Response<pb::CancelSubscriptionResponse>, Status> {
        let actor = Caller::service_of(&request)?.to_string();
        let cancel = decode_cancel(request.into_inner())?;
        let cancelled = self.ordering.cancel_subscription(&actor, cancel).await?;
        Ok(Response::new(pb::CancelSubscriptionResponse {
            subscription: Some(convert::subscription(&cancelled)),
        }))
    }
}

fn decode_new_customer(r: &pb::CreateCustomerRequest) -> ApiResult<NewCustomer> {
    let mut violations = Violations::new();
    let tenant_id = if r.tenant_id.trim().is_empty() {
        Some(TenantId::new())
    } else {
        violations.check(TenantId::parse("tenant_id", &r.tenant_id))
    };
    let domain_name = violations.check(domain::parse_domain_name("domain_name", &r.domain_name));
    let company_name =
        violations.check(domain::parse_company_name("company_name", &r.company_name));
    let market = violations.check(MarketCode::parse("market", &r.market));
    match (tenant_id, domain_name, company_name, market) {
        (Some(tenant_id), Some(domain_name), Some(company_name), Some(market)) => Ok(NewCustomer {
            tenant_id,
            domain_name,
            company_name,
            market: market.to_string(),
        }),
        _ => Err(violations.into_error()),
    }
}

fn decode_place_order(r: &pb::PlaceOrderRequest) -> ApiResult<PlaceOrder> {
    let mut violations = Violations::new();
    let customer = violations.check(TenantId::parse("customer_tenant_id", &r.customer_tenant_id));
    let request_id = violations.check(RequestId::parse("request_id", &r.request_id));
    let lines: Vec<(String, i32)> = r
        .lines
        .iter()
        .map(|l| (l.sku_id.clone(), l.quantity))
        .collect();
    let lines = violations.check(domain::check_lines(&lines));
    match (customer, request_id, lines) {
        (Some(customer), Some(request_id), Some(lines)) => Ok(PlaceOrder {
            customer,
            request_id,
            lines,
        }),
        _ => Err(violations.into_error()),
    }
}

fn decode_status_filter(status: i32) -> ApiResult<Option<SubscriptionStatus>> {
    match pb::SubscriptionStatus::try_from(status) {
        Ok(pb::SubscriptionStatus::Unspecified) => Ok(None),
        Ok(pb::SubscriptionStatus::Active) => Ok(Some(SubscriptionStatus::Active)),
        Ok(pb::SubscriptionStatus::Cancelled) => Ok(Some(SubscriptionStatus::Cancelled)),
        Err(_) => Err(ApiError::invalid(
            "status",
            format!("{status} is not a SubscriptionStatus"),
        )),
    }
}

fn decode_cancel(r: pb::CancelSubscriptionRequest) -> ApiResult<CancelSubscription> {
    let mut violations = Violations::new();
    let partner_id = violations.check(PartnerId::parse("partner_id", &r.partner_id));
    let subscription_id =
        violations.check(SubscriptionId::parse("subscription_id", &r.subscription_id));
    if r.refund.is_none() {
        violations.push("refund", "required: the amount to refund");
    }
    let requested_at = match &r.requested_time {
        None => Some(None),
        Some(t) => match csp_kit::clock::from_timestamp(t) {
            Some(at) => Some(Some(at)),
            None => {
                violations.push("requested_time", "not a valid time");
                None
            }
        },
    };
    match (partner_id, subscription_id, r.refund, requested_at) {
        (Some(partner_id), Some(subscription_id), Some(refund), Some(requested_at)) => {
            Ok(CancelSubscription {
                partner_id,
                subscription_id,
                refund_minor: refund.minor_units,
                refund_currency: refund.currency_code,
                reason: r.reason,
                ticket_id: r.ticket_id,
                requested_at,
            })
        }
        _ => Err(violations.into_error()),
    }
}

fn decode_refund_target(r: pb::ResolveRefundTargetRequest) -> ApiResult<RefundTarget> {
    use pb::resolve_refund_target_request::{Customer, Target as Named};
    let partner_id = PartnerId::parse("partner_id", &r.partner_id)?;
    let customer = match r.customer {
        Some(Customer::CustomerTenantId(id)) => {
            CustomerRef::Tenant(TenantId::parse("customer_tenant_id", &id)?)
        }
        Some(Customer::CustomerDomainName(name)) => {
            CustomerRef::Domain(domain::parse_domain_name("customer_domain_name", &name)?)
        }
        None => {
            return Err(ApiError::invalid(
                "customer",
                "name the customer by tenant id or domain name",
            ));
        }
    };
    let target = match r.target {
        Some(Named::OrderId(id)) => Target::Order(OrderId::parse("order_id", &id)?),
        Some(Named::SubscriptionId(id)) => {
            Target::Subscription(SubscriptionId::parse("subscription_id", &id)?)
        }
        None => {
            return Err(ApiError::invalid(
                "target",
                "name an order id or a subscription id",
            ));
        }
    };
    Ok(RefundTarget {
        partner_id,
        customer,
        target,
    })
}

#[tonic::async_trait]
impl BillingService for OrderingApi {
    async fn list_billing_line_items(
        &self,
        request: Request<pb::ListBillingLineItemsRequest>,
    ) -> Result<Response<pb::ListBillingLineItemsResponse>, Status> {
        let partner = Caller::user_of(&request)?.partner_id;
        let r = request.into_inner();
        let page = PageRequest {
            size: r.page_size,
            token: r.page_token,
        };
        let (items, next_page_token) = self
            .ordering
            .line_items(partner, &r.month, &r.currency_code, &page)
            .await?;
        Ok(Response::new(pb::ListBillingLineItemsResponse {
            line_items: items.iter().map(convert::line_item).collect(),
            next_page_token,
        }))
    }

    async fn get_billing_statement(
        &self,
        request: Request<pb::GetBillingStatementRequest>,
    ) -> Result<Response<pb::GetBillingStatementResponse>, Status> {
        let partner = Caller::user_of(&request)?.partner_id;
        let month = request.get_ref().month.trim().to_owned();
        let statements = self.ordering.statement(partner, &month).await?;
        Ok(Response::new(pb::GetBillingStatementResponse {
            month,
            statements: statements.iter().map(convert::statement).collect(),
        }))
    }

    async fn export_billing_line_items(
        &self,
        request: Request<pb::ExportBillingLineItemsRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<pb::ExportBillingLineItemsResponse>>, Status>
    {
        use tokio_stream::StreamExt as _;
        let partner = Caller::user_of(&request)?.partner_id;
        let r = request.get_ref();
        let chunks = self.ordering.export(partner, &r.month, &r.currency_code)?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(chunks).map(|chunk| {
            chunk
                .map(|data| pb::ExportBillingLineItemsResponse { data })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
