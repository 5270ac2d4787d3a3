//! gRPC handlers of the support API.

use std::collections::HashMap;
use std::sync::Arc;

use csp_kit::clock::{Clock, Micros, to_timestamp};
use csp_kit::identity::UserCaller;
use csp_kit::peer::{Failure, PeerError, PeerResult as _, Signed};
use csp_kit::roles::Role;
use csp_kit::{ApiError, ApiResult, Caller, paging};
use csp_proto::audit::v1::ActivityType;
use csp_proto::common::v1::Money;
use csp_proto::ordering::v1::ordering_internal_service_client::OrderingInternalServiceClient;
use csp_proto::ordering::v1::{ResolveRefundTargetRequest, resolve_refund_target_request};
use csp_proto::support::v1 as pb;
use csp_proto::support::v1::support_service_server::SupportService;
use csp_store::idempotency::{CreateOnce, Replayable};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt as _;
use uuid::Uuid;

use crate::domain;
use crate::refunds;
use crate::storage::{Attachment, Step, SupportStore, Ticket};

/// The support API.
#[derive(Clone)]
pub struct SupportApi {
    store: SupportStore,
    ordering: OrderingInternalServiceClient<Signed>,
    clock: Arc<dyn Clock>,
    refunds: Arc<Notify>,
    relay: Arc<Notify>,
}

impl SupportApi {
    /// The API.
    pub fn new(
        store: SupportStore,
        ordering: Signed,
        clock: Arc<dyn Clock>,
        refunds: Arc<Notify>,
        relay: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            ordering: OrderingInternalServiceClient::new(ordering),
            clock,
            refunds,
            relay,
        }
    }

    async fn create(&self, user: &UserCaller, r: pb::CreateTicketRequest) -> ApiResult<Ticket> {
        domain::check_ticket(&r)?;
        let is_refund = r.issue_type == pb::IssueType::PurchaseRefund as i32;
        if is_refund && !user.roles.contains(Role::AdminAgent) {
            return Err(ApiError::PermissionDenied(
                "only an admin agent may file a CSP purchase/refund ticket; your roles allow other tickets".to_owned(),
            ));
        }
        let partner = user.partner_id.to_string();
        let request_id = r.request_id.trim().to_owned();
        let fingerprint = domain::fingerprint(&r);
        let once = CreateOnce::new("ticket", "tickets_partner_request_key", &fingerprint);
        if let Some(first) =
            once.replay(self.store.ticket_by_request(&partner, &request_id).await?)?
        {
            return Ok(first);
        }
        let now = self.clock.now();
        let id = Uuid::new_v4().to_string();
        let contact = r.contact.clone().unwrap_or_default();
        let mut ticket = Ticket {
            id: id.clone(),
            partner_id: partner.clone(),
            issue_type: domain::issue_type_to_db(r.issue_type)
                .unwrap_or("other")
                .to_owned(),
            impact: domain::impact_to_db(r.impact)
                .unwrap_or("minimal")
                .to_owned(),
            title: r.title.trim().to_owned(),
            description: r.description.trim().to_owned(),
            contact_name: contact.name.trim().to_owned(),
            contact_email: contact.email.trim().to_owned(),
            contact_phone: domain::normalize_phone(&contact.phone).unwrap_or_default(),
            status: "submitted".to_owned(),
            request_id: request_id.clone(),
            request_fingerprint: fingerprint.clone(),
            created_by_user_id: user.user_id.clone(),
            created_at: now,
            updated_at: now,
            ..Ticket::default()
        };
        let mut steps = Vec::new();
        let mut messages = Vec::new();
        if let Some(refund) = &r.refund {
            steps = self.plan_refund(&partner, &id, refund, &mut ticket).await?;
            messages.push(refunds::activity(
                &ticket,
                ActivityType::RefundTicketSubmitted,
                now,
                HashMap::from([
                    (
                        "requested_minor".to_owned(),
                        ticket.refund_requested_minor.unwrap_or(0).to_string(),
                    ),
                    (
                        "currency_code".to_owned(),
                        ticket.refund_currency_code.clone().unwrap_or_default(),
                    ),
                    (
                        "reason".to_owned(),
                        ticket.refund_reason.clone().unwrap_or_default(),
                    ),
                    ("subscriptions".to_owned(), steps.len().to_string()),
                ]),
            )?);
        }
        let attachments: Vec<Attachment> = r
            .attachments
            .iter()
            .map(|a| Attachment {
                id: Uuid::new_v4().to_string(),
                file_name: a.file_name.trim().to_owned(),
                content_type: a.content_type.clone(),
                size_bytes: a.content.len() as i64,
                sha256: domain::sha256(&a.content),
                content: a.content.clone(),
            })
            .collect();
        let inserted = self
            .store
            .insert(&ticket, &attachments, &steps, &messages, now)
            .await
            .map(|()| ticket);
        let ticket = once
            .settle(inserted, || {
                self.store.ticket_by_request(&partner, &request_id)
            })
            .await?;
        if ticket.id == id {
            if !steps.is_empty() {
                self.refunds.notify_one();
                self.relay.notify_one();
            }
            tracing::info!(ticket_id = %id, issue_type = %ticket.issue_type, "ticket filed");
        }
        Ok(ticket)
    }

    /// Checks at once what can be known at once (the customer, the order or
    /// subscription, the window, the amount) and plans one step per
    /// subscription, with its share of the refund.
    async fn plan_refund(
        &self,
        partner: &str,
        ticket_id: &str,
        refund: &pb::RefundRequest,
        ticket: &mut Ticket,
    ) -> ApiResult<Vec<Step>> {
        use pb::refund_request::{Customer, Target};
        let customer = match &refund.customer {
            Some(Customer::CustomerTenantId(id)) => {
                ticket.refund_customer_tenant_id = Some(id.trim().to_owned());
                resolve_refund_target_request::Customer::CustomerTenantId(id.trim().to_owned())
            }
            Some(Customer::CustomerDomainName(name)) => {
                ticket.refund_customer_domain_name = Some(name.trim().to_owned());
                resolve_refund_target_request::Customer::CustomerDomainName(name.trim().to_owned())
            }
            None => return Err(ApiError::invalid("refund.customer", "required")),
        };
        let target = match &refund.target {
            Some(Target::OrderId(id)) => {
                ticket.refund_order_id = Some(id.trim().to_owned());
                resolve_refund_target_request::Target::OrderId(id.trim().to_owned())
            }
            Some(Target::SubscriptionId(id)) => {
                ticket.refund_subscription_id = Some(id.trim().to_owned());
                resolve_refund_target_request::Target::SubscriptionId(id.trim().to_owned())
            }
            None => return Err(ApiError::invalid("refund.target", "required")),
        };
        let resolved = self
            .ordering
            .clone()
            .resolve_refund_target(ResolveRefundTargetRequest {
                partner_id: partner.to_owned(),
                customer: Some(customer),
                target: Some(target),
            })
            .await
            .peer("ordering")
            .map_err(from_ordering)?;
        let paid = resolved.amount_paid.unwrap_or_default();
        let requested = refund.requested_amount.clone().unwrap_or_default();
        if requested.currency_code != paid.currency_code {
            return Err(ApiError::invalid(
                "refund.requested_amount.currency_code",
                format!(
                    "the purchase was paid in {}, not {}",
                    paid.currency_code, requested.currency_code
                ),
            ));
        }
        let shares = domain::allocate(
            requested.minor_units,
            &resolved
                .subscriptions
                .iter()
                .map(|s| s.amount_paid.as_ref().map(|m| m.minor_units).unwrap_or(0))
                .collect::<Vec<_>>(),
        )
        .ok_or_else(|| {
            ApiError::invalid(
                "refund.requested_amount.minor_units",
                format!(
                    "{} is more than the {} {} paid for what the ticket names",
                    requested.minor_units, paid.minor_units, paid.currency_code
                ),
            )
        })?;
        ticket.refund_reason = Some(refund.reason.trim().to_owned());
        ticket.refund_currency_code = Some(paid.currency_code.clone());
        ticket.refund_minor_unit_digits = Some(i32::try_from(paid.minor_unit_digits).unwrap_or(2));
        ticket.refund_requested_minor = Some(requested.minor_units);
        if ticket.refund_customer_tenant_id.is_none() {
            ticket.refund_customer_tenant_id = resolved
                .subscriptions
                .first()
                .map(|s| s.customer_tenant_id.clone());
        }
        Ok(resolved
            .subscriptions
            .iter()
            .zip(shares)
            .enumerate()
            .map(|(i, (s, share))| Step {
                ticket_id: ticket_id.to_owned(),
                position: i32::try_from(i).unwrap_or(i32::MAX),
                partner_id: partner.to_owned(),
                subscription_id: s.id.clone(),
                refund_minor: share,
                state: "pending".to_owned(),
                attempts: 0,
            })
            .collect())
    }

    async fn owned(&self, user: &UserCaller, ticket_id: &str) -> ApiResult<Ticket> {
        let id = Uuid::parse_str(ticket_id.trim())
            .map_err(|_| {
                ApiError::invalid(
                    "ticket_id",
                    format!("{} is not a UUID", csp_kit::error::quoted(ticket_id)),
                )
            })?
            .to_string();
        self.store
            .ticket(&user.partner_id.to_string(), &id)
            .await?
            .ok_or_else(|| ApiError::not_found("ticket", id))
    }

    async fn view(&self, t: &Ticket) -> ApiResult<pb::Ticket> {
        let comments = self.store.comments(&t.id).await?;
        let attachments = self.store.attachments(&t.id).await?;
        Ok(ticket_to_pb(t, &comments, &attachments))
    }
}

/// Ordering's refusal, as the support API states it.
fn from_ordering(error: PeerError) -> ApiError {
    if error.failure == Failure::Transient {
        return error.into();
    }
    let status = &error.status;
    match status.code() {
        Code::NotFound => {
            let what = status
                .get_error_details()
                .resource_info()
                .map(|r| r.resource_type.clone())
                .unwrap_or_else(|| "customer, order or subscription".to_owned());
            ApiError::not_found(
                "refund target",
                format!("{what} named by the refund ({})", status.message()),
            )
        }
        Code::FailedPrecondition => {
            let subject = status
                .get_error_details()
                .precondition_failure()
                .and_then(|p| p.violations.first().map(|v| v.subject.clone()))
                .unwrap_or_default();
            ApiError::failed_precondition(
                "CANCELLATION_NOT_POSSIBLE",
                subject,
                status.message().to_owned(),
            )
        }
        Code::InvalidArgument => ApiError::invalid("refund", status.message().to_owned()),
        _ => error.into(),
    }
}

impl Replayable for Ticket {
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

fn money(t: &Ticket, minor: i64) -> Money {
    Money {
        currency_code: t.refund_currency_code.clone().unwrap_or_default(),
        minor_units: minor,
        minor_unit_digits: u32::try_from(t.refund_minor_unit_digits.unwrap_or(2)).unwrap_or(2),
    }
}

fn ticket_to_pb(
    t: &Ticket,
    comments: &[crate::storage::Comment],
    attachments: &[Attachment],
) -> pb::Ticket {
    use pb::refund_request::{Customer, Target};
    let refund = (t.issue_type == "purchase_refund").then(|| pb::RefundRequest {
        customer: match (&t.refund_customer_domain_name, &t.refund_customer_tenant_id) {
            (Some(domain), _) => Some(Customer::CustomerDomainName(domain.clone())),
            (None, Some(tenant)) => Some(Customer::CustomerTenantId(tenant.clone())),
            _ => None,
        },
        target: match (&t.refund_order_id, &t.refund_subscription_id) {
            (Some(order), _) => Some(Target::OrderId(order.clone())),
            (None, Some(subscription)) => Some(Target::SubscriptionId(subscription.clone())),
            _ => None,
        },
        reason: t.refund_reason.clone().unwrap_or_default(),
        requested_amount: t.refund_requested_minor.map(|m| money(t, m)),
    });
    pb::Ticket {
        id: t.id.clone(),
        issue_type: match t.issue_type.as_str() {
            "purchase_refund" => pb::IssueType::PurchaseRefund,
            "billing" => pb::IssueType::Billing,
            "technical" => pb::IssueType::Technical,
            _ => pb::IssueType::Other,
        } as i32,
        impact: match t.impact.as_str() {
            "critical" => pb::Impact::Critical,
            "moderate" => pb::Impact::Moderate,
            _ => pb::Impact::Minimal,
        } as i32,
        title: t.title.clone(),
        description: t.description.clone(),
        contact: Some(pb::Contact {
            name: t.contact_name.clone(),
            email: t.contact_email.clone(),
            phone: t.contact_phone.clone(),
        }),
        status: match t.status.as_str() {
            "resolved" => pb::TicketStatus::Resolved,
            "rejected" => pb::TicketStatus::Rejected,
            "closed" => pb::TicketStatus::Closed,
            _ => pb::TicketStatus::Submitted,
        } as i32,
        refund,
        refunded_amount: t.refunded_minor.map(|m| money(t, m)),
        rejection_reason: t.rejection_reason.clone().unwrap_or_default(),
        attachments: attachments.iter().map(attachment_to_pb).collect(),
        comments: comments
            .iter()
            .map(|c| pb::Comment {
                author_user_id: c.author_user_id.clone(),
                text: c.text.clone(),
                create_time: Some(to_timestamp(c.created_at)),
            })
            .collect(),
        created_by_user_id: t.created_by_user_id.clone(),
        create_time: Some(to_timestamp(t.created_at)),
        update_time: Some(to_timestamp(t.updated_at)),
    }
}

fn attachment_to_pb(a: &Attachment) -> pb::Attachment {
    pb::Attachment {
        id: a.id.clone(),
        file_name: a.file_name.clone(),
        content_type: a.content_type.clone(),
        size_bytes: u64::try_from(a.size_bytes).unwrap_or(0),
        sha256: a.sha256.clone(),
    }
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    at: Micros,
    id: String,
    status: i32,
    issue_type: i32,
}

#[tonic::async_trait]
impl SupportService for SupportApi {
    async fn create_ticket(
        &self,
        request: Request<pb::CreateTicketRequest>,
    ) -> Result<Response<pb::CreateTicketResponse>, Status> {
        let user = Caller::user_of(&request)?.clone();
        let ticket = self.create(&user, request.into_inner()).await?;
        Ok(Response::new(pb::CreateTicketResponse {
            ticket: Some(self.view(&ticket).await?),
        }))
    }

    async fn get_ticket(
        &self,
        request: Request<pb::GetTicketRequest>,
    ) -> Result<Response<pb::GetTicketResponse>, Status> {
        let user = Caller::user_of(&request)?.clone();
        let ticket = self.owned(&user, &request.get_ref().ticket_id).await?;
        Ok(Response::new(pb::GetTicketResponse {
            ticket: Some(self.view(&ticket).await?),
        }))
    }

    async fn list_tickets(
        &self,
        request: Request<pb::ListTicketsRequest>,
    ) -> Result<Response<pb::ListTicketsResponse>, Status> {
        let user = Caller::user_of(&request)?.clone();
        let r = request.into_inner();
        let status = match r.status {
            0 => "",
            1 => "submitted",
            2 => "resolved",
            3 => "rejected",
            4 => "closed",
            n => {
                return Err(
                    ApiError::invalid("status", format!("{n} is not a TicketStatus")).into(),
                );
            }
        };
        let issue_type = match r.issue_type {
            0 => "",
            n => domain::issue_type_to_db(n).ok_or_else(|| {
                ApiError::invalid("issue_type", format!("{n} is not an IssueType"))
            })?,
        };
        let size = paging::page_size(
            r.page_size,
            paging::DEFAULT_PAGE_SIZE,
            paging::MAX_PAGE_SIZE,
        )?;
        let cursor = paging::decode::<Cursor>(&r.page_token)?;
        if cursor
            .as_ref()
            .is_some_and(|c| c.status != r.status || c.issue_type != r.issue_type)
        {
            return Err(ApiError::invalid(
                "page_token",
                "this page token belongs to a query with other filters; start again from an empty page_token",
            )
            .into());
        }
        let mut tickets = self
            .store
            .list(
                &user.partner_id.to_string(),
                status,
                issue_type,
                cursor.as_ref().map(|c| (c.at, c.id.as_str())),
                size + 1,
            )
            .await?;
        let next_page_token = paging::finish_page(&mut tickets, size, |t| Cursor {
            at: t.created_at,
            id: t.id.clone(),
            status: r.status,
            issue_type: r.issue_type,
        });
        let mut views = Vec::with_capacity(tickets.len());
        for t in &tickets {
            views.push(self.view(t).await?);
        }
        Ok(Response::new(pb::ListTicketsResponse {
            tickets: views,
            next_page_token,
        }))
    }

    async fn add_comment(
        &self,
        request: Request<pb::AddCommentRequest>,
    ) -> Result<Response<pb::AddCommentResponse>, Status> {
        let user = Caller::user_of(&request)?.clone();
        let r = request.into_inner();
        let text = r.text.trim();
        if text.is_empty() || text.chars().count() > 10_000 {
            return Err(ApiError::invalid("text", "1 to 10000 characters").into());
        }
        let ticket = self.owned(&user, &r.ticket_id).await?;
        if ticket.status == "closed" {
            return Err(ApiError::failed_precondition(
                "TICKET_CLOSED",
                format!("ticket/{}", ticket.id),
                format!("ticket {} is closed; file a new ticket", ticket.id),
            )
            .into());
        }
        self.store
            .add_comment(&ticket.id, &user.user_id, text, self.clock.now())
            .await?;
        let ticket = self.owned(&user, &ticket.id).await?;
        Ok(Response::new(pb::AddCommentResponse {
            ticket: Some(self.view(&ticket).await?),
        }))
    }

    async fn close_ticket(
        &self,
        request: Request<pb::CloseTicketRequest>,
    ) -> Result<Response<pb::CloseTicketResponse>, Status> {
        let user = Caller::user_of(&request)?.clone();
        let ticket = self.owned(&user, &request.get_ref().ticket_id).await?;
        if ticket.status == "submitted" && ticket.issue_type == "purchase_refund" {
            return Err(ApiError::failed_precondition(
                "REFUND_IN_PROGRESS",
                format!("ticket/{}", ticket.id),
                "the refund is still being carried out; the ticket can be closed once it is resolved or rejected",
            )
            .into());
        }
        if ticket.status != "closed" {
            self.store.close(&ticket.id, self.clock.now()).await?;
        }
        let ticket = self.owned(&user, &ticket.id).await?;
        Ok(Response::new(pb::CloseTicketResponse {
            ticket: Some(self.view(&ticket).await?),
        }))
    }

    async fn get_attachment(
        &self,
        request: Request<pb::GetAttachmentRequest>,
    ) -> Result<Response<pb::GetAttachmentResponse>, Status> {
        let user = Caller::user_of(&request)?.clone();
        let r = request.into_inner();
        let ticket = self.owned(&user, &r.ticket_id).await?;
        let attachment = self
            .store
            .attachment(&ticket.id, r.attachment_id.trim())
            .await?
            .ok_or_else(|| ApiError::not_found("attachment", r.attachment_id.trim()))?;
        Ok(Response::new(pb::GetAttachmentResponse {
            attachment: Some(attachment_to_pb(&attachment)),
            content: attachment.content,
        }))
    }
}
