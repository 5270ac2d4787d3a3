//! The gRPC handlers: each decodes its request, takes the caller, calls one
//! use case and encodes the answer.

use csp_kit::clock::to_timestamp;
use csp_kit::ids::TicketId;
use csp_kit::{ApiError, ApiResult, Caller};
use csp_proto::common::v1::Money;
use csp_proto::support::v1 as pb;
use csp_proto::support::v1::support_service_server::SupportService;
use tonic::{Request, Response, Status};

use crate::domain::{self, Attachment, Impact, IssueType, Ticket, TicketStatus};
use crate::use_cases::{Support, TicketFilter, TicketView};

/// The support API over its use cases.
#[derive(Clone)]
pub struct SupportApi {
    support: Support,
}

impl SupportApi {
    /// The API over `support`.
    pub fn new(support: Support) -> Self {
        Self { support }
    }
}

#[tonic::async_trait]
impl SupportService for SupportApi {
    async fn create_ticket(
        &self,
        request: Request<pb::CreateTicketRequest>,
    ) -> Result<Response<pb::CreateTicketResponse>, Status> {
        let user = Caller::user_of(&request)?.clone();
        let new = domain::read_ticket(request.into_inner())?;
        let view = self.support.create_ticket(&user, new).await?;
        Ok(Response::new(pb::CreateTicketResponse {
            ticket: Some(ticket_to_pb(&view)),
        }))
    }

    async fn upload_attachment(
        &self,
        request: Request<tonic::Streaming<pb::UploadAttachmentRequest>>,
    ) -> Result<Response<pb::UploadAttachmentResponse>, Status> {
        use tokio_stream::StreamExt as _;
        let user = Caller::user_of(&request)?.clone();
        let chunks = request.into_inner().map(|message| {
            message.map(|m| m.chunk).map_err(|status| {
                tracing::info!(code = ?status.code(), "an attachment upload broke off");
                ApiError::invalid(
                    "chunk",
                    "the upload ended with an error before it was complete; nothing was kept",
                )
            })
        });
        let uploaded = self.support.upload_attachment(&user, chunks).await?;
        Ok(Response::new(pb::UploadAttachmentResponse {
            upload_id: uploaded.id,
            size_bytes: u64::try_from(uploaded.size_bytes).unwrap_or(0),
            sha256: uploaded.sha256,
            expire_time: Some(to_timestamp(uploaded.expires_at)),
        }))
    }

    async fn get_ticket(
        &self,
        request: Request<pb::GetTicketRequest>,
    ) -> Result<Response<pb::GetTicketResponse>, Status> {
        let partner = Caller::user_of(&request)?.partner_id;
        let id = TicketId::parse("ticket_id", &request.get_ref().ticket_id)?;
        let view = self.support.ticket(partner, id).await?;
        Ok(Response::new(pb::GetTicketResponse {
            ticket: Some(ticket_to_pb(&view)),
        }))
    }

    async fn list_tickets(
        &self,
        request: Request<pb::ListTicketsRequest>,
    ) -> Result<Response<pb::ListTicketsResponse>, Status> {
        let partner = Caller::user_of(&request)?.partner_id;
        let r = request.into_inner();
        let filter = TicketFilter {
            status: decode_status(r.status)?,
            issue_type: match r.issue_type {
                0 => None,
                n => Some(IssueType::from_pb(n).ok_or_else(|| {
                    ApiError::invalid("issue_type", format!("{n} is not an IssueType"))
                })?),
            },
            raw: (r.status, r.issue_type),
        };
        let (views, next_page_token) = self
            .support
            .list_tickets(partner, &filter, r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(pb::ListTicketsResponse {
            tickets: views.iter().map(ticket_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn add_comment(
        &self,
        request: Request<pb::AddCommentRequest>,
    ) -> Result<Response<pb::AddCommentResponse>, Status> {
        let user = Caller::user_of(&request)?.clone();
        let r = request.get_ref();
        let text = domain::read_comment(&r.text)?;
        let id = TicketId::parse("ticket_id", &r.ticket_id)?;
        let view = self.support.add_comment(&user, id, text).await?;
        Ok(Response::new(pb::AddCommentResponse {
            ticket: Some(ticket_to_pb(&view)),
        }))
    }

    async fn close_ticket(
        &self,
        request: Request<pb::CloseTicketRequest>,
    ) -> Result<Response<pb::CloseTicketResponse>, Status> {
        let partner = Caller::user_of(&request)?.partner_id;
        let id = TicketId::parse("ticket_id", &request.get_ref().ticket_id)?;
        let view = self.support.close_ticket(partner, id).await?;
        Ok(Response::new(pb::CloseTicketResponse {
            ticket: Some(ticket_to_pb(&view)),
        }))
    }

    async fn get_attachment(
        &self,
        request: Request<pb::GetAttachmentRequest>,
    ) -> Result<Response<pb::GetAttachmentResponse>, Status> {
        let partner = Caller::user_of(&request)?.partner_id;
        let r = request.get_ref();
        let id = TicketId::parse("ticket_id", &r.ticket_id)?;
        let download = self
            .support
            .attachment(partner, id, r.attachment_id.trim())
            .await?;
        let (download_url, expire_time) = match download.url {
            Some(url) => {
                let micros = url
                    .expires_at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
                (url.url, Some(to_timestamp(micros)))
            }
            None => (String::new(), None),
        };
        Ok(Response::new(pb::GetAttachmentResponse {
            attachment: Some(attachment_to_pb(&download.attachment)),
            content: Vec::from(download.content),
            download_url,
            download_url_expire_time: expire_time,
        }))
    }
}

fn decode_status(status: i32) -> ApiResult<Option<TicketStatus>> {
    match pb::TicketStatus::try_from(status) {
        Ok(pb::TicketStatus::Unspecified) => Ok(None),
        Ok(pb::TicketStatus::Submitted) => Ok(Some(TicketStatus::Submitted)),
        Ok(pb::TicketStatus::Resolved) => Ok(Some(TicketStatus::Resolved)),
        Ok(pb::TicketStatus::Rejected) => Ok(Some(TicketStatus::Rejected)),
        Ok(pb::TicketStatus::Closed) => Ok(Some(TicketStatus::Closed)),
        Err(_) => Err(ApiError::invalid(
            "status",
            format!("{status} is not a TicketStatus"),
        )),
    }
}

fn money(t: &Ticket, minor: i64) -> Money {
    Money {
        currency_code: t.refund_currency_code.clone().unwrap_or_default(),
        minor_units: minor,
        minor_unit_digits: u32::try_from(t.refund_minor_unit_digits.unwrap_or(2)).unwrap_or(2),
    }
}

fn refund_to_pb(t: &Ticket) -> Option<pb::RefundRequest> {
    use pb::refund_request::{Customer, Target};
    (t.issue_type == IssueType::PurchaseRefund).then(|| pb::RefundRequest {
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
    })
}

fn ticket_to_pb(view: &TicketView) -> pb::Ticket {
    let t = &view.ticket;
    pb::Ticket {
        id: t.id.to_string(),
        issue_type: match t.issue_type {
            IssueType::PurchaseRefund => pb::IssueType::PurchaseRefund,
            IssueType::Billing => pb::IssueType::Billing,
            IssueType::Technical => pb::IssueType::Technical,
            IssueType::Other => pb::IssueType::Other,
        } as i32,
        impact: match t.impact {
            Impact::Critical => pb::Impact::Critical,
            Impact::Moderate => pb::Impact::Moderate,
            Impact::Minimal => pb::Impact::Minimal,
        } as i32,
        title: t.title.clone(),
        description: t.description.clone(),
        contact: Some(pb::Contact {
            name: t.contact_name.clone(),
            email: t.contact_email.clone(),
            phone: t.contact_phone.clone(),
        }),
        status: match t.status {
            TicketStatus::Submitted => pb::TicketStatus::Submitted,
            TicketStatus::Resolved => pb::TicketStatus::Resolved,
            TicketStatus::Rejected => pb::TicketStatus::Rejected,
            TicketStatus::Closed => pb::TicketStatus::Closed,
        } as i32,
        refund: refund_to_pb(t),
        refunded_amount: t.refunded_minor.map(|m| money(t, m)),
        rejection_reason: t.rejection_reason.clone().unwrap_or_default(),
        attachments: view.attachments.iter().map(attachment_to_pb).collect(),
        comments: view
            .comments
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
        refundable_amount: t.refund_refundable_minor.map(|m| money(t, m)),
        refund_deadline: t.refund_deadline.map(to_timestamp),
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
