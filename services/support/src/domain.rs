//! Support's domain, without I/O: tickets, comments, attachments, refund
//! steps and their states; what a valid ticket is, how a refund is spread
//! over the subscriptions it cancels, and how it ends.

use csp_kit::clock::Micros;
use csp_kit::error::quoted;
use csp_kit::ids::{PartnerId, RequestId, SubscriptionId, TicketId};
use csp_kit::{ApiError, FieldViolation};
use csp_proto::support::v1 as pb;
use prost::bytes::Bytes;
use sha2::{Digest, Sha256};

/// At most this many attachments per ticket.
pub const MAX_ATTACHMENTS: usize = 5;
/// At most this many bytes per attachment.
pub const MAX_ATTACHMENT_BYTES: usize = 10 * 1024 * 1024;
/// The largest request the support service decodes: five full attachments
/// and the rest of the ticket.
pub const MAX_REQUEST_BYTES: usize = MAX_ATTACHMENTS * MAX_ATTACHMENT_BYTES + 1024 * 1024;
/// What one partner may keep in attachments over all its tickets; a ticket
/// whose attachments would pass either figure is refused whole
/// (RESOURCE_EXHAUSTED with a `QuotaFailure`).
#[derive(clap::Args, Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachmentQuota {
    /// Attachments one partner may keep, over all its tickets.
    #[arg(
        long = "attachment-quota-files",
        env = "CSP_ATTACHMENT_QUOTA_FILES",
        default_value_t = AttachmentQuota::DEFAULT.files
    )]
    pub files: u64,
    /// Bytes of attachments one partner may keep, over all its tickets.
    #[arg(
        long = "attachment-quota-bytes",
        env = "CSP_ATTACHMENT_QUOTA_BYTES",
        default_value_t = AttachmentQuota::DEFAULT.bytes
    )]
    pub bytes: u64,
}

impl AttachmentQuota {
    /// 500 files and 256 MiB per partner: a few dozen full tickets' worth,
    /// and well below what eight full tickets at once (400 MiB) would take.
    pub const DEFAULT: AttachmentQuota = AttachmentQuota {
        files: 500,
        bytes: 256 * 1024 * 1024,
    };

    /// Whether a partner holding `used` may add `adding`; the refusal names
    /// the figure passed.
    pub fn admit(&self, partner: PartnerId, used: Usage, adding: Usage) -> Result<(), ApiError> {
        let files = used.files.saturating_add(adding.files);
        if files > self.files {
            return Err(ApiError::QuotaExceeded {
                subject: format!("partner/{partner}/attachment-files"),
                message: format!(
                    "these {} attachments would take your partner past its quota of {} attachments ({} kept now); \
                     file the ticket without them or ask the operator to raise the quota",
                    adding.files, self.files, used.files
                ),
            });
        }
        let bytes = used.bytes.saturating_add(adding.bytes);
        if bytes > self.bytes {
            return Err(ApiError::QuotaExceeded {
                subject: format!("partner/{partner}/attachment-bytes"),
                message: format!(
                    "these attachments ({} bytes) would take your partner past its quota of {} bytes ({} kept now); \
                     file the ticket with smaller or fewer attachments or ask the operator to raise the quota",
                    adding.bytes, self.bytes, used.bytes
                ),
            });
        }
        Ok(())
    }
}

impl Default for AttachmentQuota {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Attachments counted against a quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// How many.
    pub files: u64,
    /// Their bytes together.
    pub bytes: u64,
}

impl Usage {
    /// What `attachments` add.
    pub fn of<'a>(attachments: impl IntoIterator<Item = &'a Attachment>) -> Usage {
        attachments
            .into_iter()
            .fold(Usage { files: 0, bytes: 0 }, |u, a| Usage {
                files: u.files + 1,
                bytes: u.bytes + u64::try_from(a.size_bytes).unwrap_or(0),
            })
    }
}

/// Content types an attachment may have.
pub const CONTENT_TYPES: [&str; 5] = [
    "application/pdf",
    "image/png",
    "image/jpeg",
    "text/plain",
    "text/csv",
];

csp_kit::stored_enum! {
    /// What a ticket is about.
    pub enum IssueType {
        /// "CSP purchase/refund on behalf of customer": cancels purchases.
        PurchaseRefund = "purchase_refund",
        /// Billing.
        Billing = "billing",
        /// Technical.
        Technical = "technical",
        /// Anything else.
        Other = "other",
    }
}

impl IssueType {
    /// The issue type a request names; `None` when it names none.
    pub fn from_pb(value: i32) -> Option<Self> {
        match pb::IssueType::try_from(value).ok()? {
            pb::IssueType::Unspecified => None,
            pb::IssueType::PurchaseRefund => Some(IssueType::PurchaseRefund),
            pb::IssueType::Billing => Some(IssueType::Billing),
            pb::IssueType::Technical => Some(IssueType::Technical),
            pb::IssueType::Other => Some(IssueType::Other),
        }
    }
}

csp_kit::stored_enum! {
    /// How badly the partner is affected.
    pub enum Impact {
        /// Critical.
        Critical = "critical",
        /// Moderate.
        Moderate = "moderate",
        /// Minimal.
        Minimal = "minimal",
    }
}

impl Impact {
    /// The impact a request names; `None` when it names none.
    pub fn from_pb(value: i32) -> Option<Self> {
        match pb::Impact::try_from(value).ok()? {
            pb::Impact::Unspecified => None,
            pb::Impact::Critical => Some(Impact::Critical),
            pb::Impact::Moderate => Some(Impact::Moderate),
            pb::Impact::Minimal => Some(Impact::Minimal),
        }
    }
}

csp_kit::stored_enum! {
    /// Where a ticket stands.
    pub enum TicketStatus {
        /// Filed; a refund ticket's workflow is running.
        Submitted = "submitted",
        /// Done: something was refunded.
        Resolved = "resolved",
        /// Done: nothing could be refunded.
        Rejected = "rejected",
        /// Closed by the partner.
        Closed = "closed",
    }
}

csp_kit::stored_enum! {
    /// Where one step of a refund stands.
    pub enum StepState {
        /// Nothing done yet: the subscription is to be cancelled in ordering.
        Pending = "pending",
        /// Cancelled in ordering; its keys and links are to be revoked.
        Cancelled = "cancelled",
        /// Cancelled and revoked.
        Done = "done",
        /// Refused for good (the window closed meanwhile, ...).
        Failed = "failed",
    }
}

/// A ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// Id.
    pub id: TicketId,
    /// The partner.
    pub partner_id: PartnerId,
    /// What it is about.
    pub issue_type: IssueType,
    /// How badly the partner is affected.
    pub impact: Impact,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Contact name.
    pub contact_name: String,
    /// Contact email.
    pub contact_email: String,
    /// Contact phone (E.164).
    pub contact_phone: String,
    /// Where it stands.
    pub status: TicketStatus,
    /// A refund's customer, by tenant id (as named, or as ordering found it).
    pub refund_customer_tenant_id: Option<String>,
    /// A refund's customer, by domain name, as named.
    pub refund_customer_domain_name: Option<String>,
    /// A refund's order, as named.
    pub refund_order_id: Option<String>,
    /// A refund's subscription, as named.
    pub refund_subscription_id: Option<String>,
    /// Why the refund is asked for.
    pub refund_reason: Option<String>,
    /// The refund's currency (what was paid in).
    pub refund_currency_code: Option<String>,
    /// Its minor unit digits.
    pub refund_minor_unit_digits: Option<i32>,
    /// The refund asked for, minor units.
    pub refund_requested_minor: Option<i64>,
    /// What the cancellation policies refunded when the ticket was filed
    /// (the most that may be asked), minor units.
    pub refund_refundable_minor: Option<i64>,
    /// The first window's end when it was filed.
    pub refund_deadline: Option<Micros>,
    /// What was refunded, once resolved.
    pub refunded_minor: Option<i64>,
    /// Why nothing (or not everything) was refunded.
    pub rejection_reason: Option<String>,
    /// The client's request id.
    pub request_id: RequestId,
    /// The fingerprint of the request.
    pub request_fingerprint: String,
    /// Who filed it.
    pub created_by_user_id: String,
    /// When.
    pub created_at: Micros,
    /// Last change.
    pub updated_at: Micros,
}

/// A comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comment {
    /// Who wrote it.
    pub author_user_id: String,
    /// What.
    pub text: String,
    /// When.
    pub created_at: Micros,
}

/// An attachment (its content loaded only when asked for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// Id.
    pub id: String,
    /// File name.
    pub file_name: String,
    /// Content type.
    pub content_type: String,
    /// Size.
    pub size_bytes: i64,
    /// SHA-256, hex.
    pub sha256: String,
    /// Where its bytes are in the object store; `None` for one still kept in
    /// the database (written before attachments moved to the store).
    pub object_key: Option<String>,
    /// The bytes (empty unless loaded).
    pub content: Bytes,
}

/// A step of a refund: one subscription to cancel and revoke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The ticket.
    pub ticket_id: TicketId,
    /// Its place among the ticket's steps.
    pub position: i32,
    /// The partner.
    pub partner_id: PartnerId,
    /// The subscription.
    pub subscription_id: SubscriptionId,
    /// Its share of the refund, minor units.
    pub refund_minor: i64,
    /// Where it stands.
    pub state: StepState,
    /// Failed attempts so far.
    pub attempts: i32,
}

/// A step as the end of a refund sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepResult {
    /// Where it stands.
    pub state: StepState,
    /// Its share of the refund, minor units.
    pub refund_minor: i64,
    /// The last error, if any.
    pub last_error: Option<String>,
}

/// How a refund ticket ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundOutcome {
    /// Resolved (something was refunded) or rejected.
    pub status: TicketStatus,
    /// What was refunded, minor units.
    pub refunded_minor: i64,
    /// Why not everything (or nothing) was refunded.
    pub rejection: Option<String>,
}

/// How a refund ends once no step is left to run: RESOLVED with what the
/// done steps refunded (and a note naming what failed), REJECTED with the
/// reasons when nothing could be cancelled; `None` while a step is pending
/// or half done.
pub fn refund_outcome(steps: &[StepResult]) -> Option<RefundOutcome> {
    if steps
        .iter()
        .any(|s| matches!(s.state, StepState::Pending | StepState::Cancelled))
    {
        return None;
    }
    let refunded_minor = steps
        .iter()
        .filter(|s| s.state == StepState::Done)
        .map(|s| s.refund_minor)
        .sum();
    let failures: Vec<&str> = steps
        .iter()
        .filter(|s| s.state == StepState::Failed)
        .filter_map(|s| s.last_error.as_deref())
        .collect();
    if steps.iter().any(|s| s.state == StepState::Done) {
        let rejection = (!failures.is_empty()).then(|| {
            format!(
                "not every subscription could be cancelled: {}",
                failures.join("; ")
            )
        });
        Some(RefundOutcome {
            status: TicketStatus::Resolved,
            refunded_minor,
            rejection,
        })
    } else {
        Some(RefundOutcome {
            status: TicketStatus::Rejected,
            refunded_minor,
            rejection: Some(failures.join("; ")),
        })
    }
}

/// The longest comment, in characters.
pub const MAX_COMMENT: usize = 10_000;

/// Checks and trims a comment: 1 to [`MAX_COMMENT`] characters.
pub fn read_comment(text: &str) -> Result<&str, ApiError> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > MAX_COMMENT {
        return Err(ApiError::invalid("text", "1 to 10000 characters"));
    }
    Ok(text)
}

/// FAILED_PRECONDITION for a change to a closed ticket.
pub fn ticket_closed(id: TicketId) -> ApiError {
    ApiError::failed_precondition(
        "TICKET_CLOSED",
        format!("ticket/{id}"),
        format!("ticket {id} is closed; file a new ticket"),
    )
}

/// Whether a ticket may be closed now: not while its refund runs.
pub fn check_closable(ticket: &Ticket) -> Result<(), ApiError> {
    if ticket.status == TicketStatus::Submitted && ticket.issue_type == IssueType::PurchaseRefund {
        return Err(ApiError::failed_precondition(
            "REFUND_IN_PROGRESS",
            format!("ticket/{}", ticket.id),
            "the refund is still being carried out; the ticket can be closed once it is resolved or rejected",
        ));
    }
    Ok(())
}

fn text(violations: &mut Vec<FieldViolation>, field: &str, value: &str, max: usize) {
    let value = value.trim();
    if value.is_empty() {
        violations.push(FieldViolation::new(field, "required"));
    } else if value.chars().count() > max {
        violations.push(FieldViolation::new(
            field,
            format!("at most {max} characters"),
        ));
    }
}

/// Whether `email` looks like an address: one `@`, a local part of 1 to 64
/// printable characters, a domain with a dot.
pub fn is_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && local.chars().all(|c| c.is_ascii_graphic() && c != '@')
        && domain.len() <= 253
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A phone number in international (E.164) form: `+`, then 8 to 15 digits,
/// the first not 0; spaces and hyphens are ignored.
pub fn normalize_phone(phone: &str) -> Option<String> {
    let compact: String = phone.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    let digits = compact.strip_prefix('+')?;
    let ok = (8..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0');
    ok.then_some(compact)
}

/// How a refund names the customer, as the partner wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CustomerNamed {
    /// By tenant id.
    Tenant(String),
    /// By domain name.
    Domain(String),
}

/// How a refund names what to cancel, as the partner wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetNamed {
    /// A whole order.
    Order(String),
    /// One subscription.
    Subscription(String),
}

/// The refund a purchase/refund ticket asks for (checked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundAsked {
    /// The customer.
    pub customer: CustomerNamed,
    /// The order or subscription.
    pub target: TargetNamed,
    /// Why.
    pub reason: String,
    /// How much, minor units.
    pub requested_minor: i64,
    /// In what currency.
    pub requested_currency: String,
}

/// A file attached to a new ticket (checked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAttachment {
    /// File name.
    pub file_name: String,
    /// Content type.
    pub content_type: String,
    /// The bytes: a slice of the received request (decoding copies
    /// nothing); empty for an upload.
    pub content: Bytes,
    /// The upload that holds the bytes, when they were uploaded before.
    pub upload_id: Option<String>,
}

/// A ticket to file (checked and normalized).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTicket {
    /// What it is about.
    pub issue_type: IssueType,
    /// How badly the partner is affected.
    pub impact: Impact,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Contact name.
    pub contact_name: String,
    /// Contact email.
    pub contact_email: String,
    /// Contact phone, E.164.
    pub contact_phone: String,
    /// The client's request id.
    pub request_id: RequestId,
    /// The request id as the client sent it (trimmed): tickets stored before
    /// ids were normalized hold it in this form.
    pub request_id_as_sent: String,
    /// The fingerprint of the request.
    pub fingerprint: String,
    /// The refund, for a purchase/refund ticket.
    pub refund: Option<RefundAsked>,
    /// Attachments.
    pub attachments: Vec<NewAttachment>,
}

/// Reads a CreateTicket request: every field checked ([`check_ticket`]),
/// then trimmed and normalized.
pub fn read_ticket(r: pb::CreateTicketRequest) -> Result<NewTicket, ApiError> {
    check_ticket(&r)?;
    let invalid = |field: &str| ApiError::invalid(field, "required");
    let contact = r.contact.clone().unwrap_or_default();
    let refund = r.refund.as_ref().map(read_refund).transpose()?;
    let fingerprint = fingerprint(&r);
    Ok(NewTicket {
        issue_type: IssueType::from_pb(r.issue_type).ok_or_else(|| invalid("issue_type"))?,
        impact: Impact::from_pb(r.impact).ok_or_else(|| invalid("impact"))?,
        title: r.title.trim().to_owned(),
        description: r.description.trim().to_owned(),
        contact_name: contact.name.trim().to_owned(),
        contact_email: contact.email.trim().to_owned(),
        contact_phone: normalize_phone(&contact.phone).ok_or_else(|| invalid("contact.phone"))?,
        request_id: RequestId::parse("request_id", &r.request_id)?,
        request_id_as_sent: r.request_id.trim().to_owned(),
        fingerprint,
        refund,
        // The contents are moved (slices of the received request).
        attachments: r
            .attachments
            .into_iter()
            .map(|a| NewAttachment {
                file_name: a.file_name.trim().to_owned(),
                content_type: a.content_type,
                content: a.content,
                upload_id: Some(a.upload_id.trim().to_owned()).filter(|id| !id.is_empty()),
            })
            .collect(),
    })
}

fn read_refund(refund: &pb::RefundRequest) -> Result<RefundAsked, ApiError> {
    use pb::refund_request::{Customer, Target};
    let customer = match &refund.customer {
        Some(Customer::CustomerTenantId(id)) => CustomerNamed::Tenant(id.trim().to_owned()),
        Some(Customer::CustomerDomainName(name)) => CustomerNamed::Domain(name.trim().to_owned()),
        None => return Err(ApiError::invalid("refund.customer", "required")),
    };
    let target = match &refund.target {
        Some(Target::OrderId(id)) => TargetNamed::Order(id.trim().to_owned()),
        Some(Target::SubscriptionId(id)) => TargetNamed::Subscription(id.trim().to_owned()),
        None => return Err(ApiError::invalid("refund.target", "required")),
    };
    let amount = refund.requested_amount.clone().unwrap_or_default();
    Ok(RefundAsked {
        customer,
        target,
        reason: refund.reason.trim().to_owned(),
        requested_minor: amount.minor_units,
        requested_currency: amount.currency_code,
    })
}

/// Checks a new ticket, naming every bad field.
pub fn check_ticket(r: &pb::CreateTicketRequest) -> Result<(), ApiError> {
    let mut violations = Vec::new();
    let issue_type = IssueType::from_pb(r.issue_type);
    if issue_type.is_none() {
        violations.push(FieldViolation::new(
            "issue_type",
            "required: ISSUE_TYPE_PURCHASE_REFUND, ISSUE_TYPE_BILLING, ISSUE_TYPE_TECHNICAL or ISSUE_TYPE_OTHER",
        ));
    }
    if Impact::from_pb(r.impact).is_none() {
        violations.push(FieldViolation::new(
            "impact",
            "required: IMPACT_CRITICAL, IMPACT_MODERATE or IMPACT_MINIMAL",
        ));
    }
    text(&mut violations, "title", &r.title, 200);
    text(&mut violations, "description", &r.description, 10_000);
    match &r.contact {
        None => violations.push(FieldViolation::new(
            "contact",
            "required: name, email and phone",
        )),
        Some(contact) => {
            text(&mut violations, "contact.name", &contact.name, 100);
            if !is_email(contact.email.trim()) {
                violations.push(FieldViolation::new(
                    "contact.email",
                    format!("{} is not an email address", quoted(&contact.email)),
                ));
            }
            if normalize_phone(&contact.phone).is_none() {
                violations.push(FieldViolation::new(
                    "contact.phone",
                    format!(
                        "{} is not in international form, such as +14255550100",
                        quoted(&contact.phone)
                    ),
                ));
            }
        }
    }
    if r.attachments.len() > MAX_ATTACHMENTS {
        violations.push(FieldViolation::new(
            "attachments",
            format!(
                "at most {MAX_ATTACHMENTS} attachments, not {}",
                r.attachments.len()
            ),
        ));
    }
    for (i, a) in r.attachments.iter().enumerate() {
        let name = a.file_name.trim();
        if name.is_empty()
            || name.len() > 255
            || name.contains(['/', '\\'])
            || name.chars().any(char::is_control)
        {
            violations.push(FieldViolation::new(
                format!("attachments[{i}].file_name"),
                "1 to 255 characters, without path separators",
            ));
        }
        if !CONTENT_TYPES.contains(&a.content_type.as_str()) {
            violations.push(FieldViolation::new(
                format!("attachments[{i}].content_type"),
                format!(
                    "{} is not allowed; allowed are {}",
                    quoted(&a.content_type),
                    CONTENT_TYPES.join(", ")
                ),
            ));
        }
        if !a.upload_id.is_empty() {
            if !a.content.is_empty() {
                violations.push(FieldViolation::new(
                    format!("attachments[{i}].content"),
                    "empty when upload_id names an upload",
                ));
            }
            if uuid::Uuid::parse_str(a.upload_id.trim()).is_err() {
                violations.push(FieldViolation::new(
                    format!("attachments[{i}].upload_id"),
                    "the id UploadAttachment gave (a UUID)",
                ));
            } else if r.attachments[..i]
                .iter()
                .any(|b| b.upload_id.trim() == a.upload_id.trim())
            {
                violations.push(FieldViolation::new(
                    format!("attachments[{i}].upload_id"),
                    "names the same upload as an attachment before it",
                ));
            }
        } else if a.content.is_empty() || a.content.len() > MAX_ATTACHMENT_BYTES {
            violations.push(FieldViolation::new(
                format!("attachments[{i}].content"),
                format!(
                    "1 byte to 10 MiB, not {} bytes (or name an upload in upload_id)",
                    a.content.len()
                ),
            ));
        }
    }
    if uuid::Uuid::parse_str(r.request_id.trim()).is_err() {
        violations.push(FieldViolation::new(
            "request_id",
            "required: a UUID, reused when retrying",
        ));
    }
    match (issue_type, &r.refund) {
        (Some(IssueType::PurchaseRefund), None) => violations.push(FieldViolation::new(
            "refund",
            "a purchase/refund ticket names the customer, the order or subscription, the reason and the amount",
        )),
        (Some(IssueType::PurchaseRefund), Some(refund)) => check_refund(&mut violations, refund),
        (Some(_), Some(_)) => violations.push(FieldViolation::new(
            "refund",
            "only ISSUE_TYPE_PURCHASE_REFUND tickets carry a refund",
        )),
        _ => {}
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(ApiError::InvalidArgument(violations))
    }
}

fn check_refund(violations: &mut Vec<FieldViolation>, refund: &pb::RefundRequest) {
    use pb::refund_request::{Customer, Target};
    match &refund.customer {
        None => violations.push(FieldViolation::new(
            "refund.customer",
            "name the customer by customer_tenant_id or customer_domain_name",
        )),
        Some(Customer::CustomerTenantId(id)) if uuid::Uuid::parse_str(id.trim()).is_err() => {
            violations.push(FieldViolation::new(
                "refund.customer_tenant_id",
                format!("{} is not a UUID", quoted(id)),
            ));
        }
        _ => {}
    }
    match &refund.target {
        None => violations.push(FieldViolation::new(
            "refund.target",
            "name an order_id or a subscription_id",
        )),
        Some(Target::OrderId(id)) if uuid::Uuid::parse_str(id.trim()).is_err() => {
            violations.push(FieldViolation::new(
                "refund.order_id",
                format!("{} is not a UUID", quoted(id)),
            ));
        }
        Some(Target::SubscriptionId(id)) if uuid::Uuid::parse_str(id.trim()).is_err() => {
            violations.push(FieldViolation::new(
                "refund.subscription_id",
                format!("{} is not a UUID", quoted(id)),
            ));
        }
        _ => {}
    }
    text(violations, "refund.reason", &refund.reason, 2000);
    match &refund.requested_amount {
        None => violations.push(FieldViolation::new("refund.requested_amount", "required")),
        Some(amount) => {
            if amount.minor_units <= 0 {
                violations.push(FieldViolation::new(
                    "refund.requested_amount.minor_units",
                    "must be more than zero",
                ));
            }
            if amount.currency_code.len() != 3
                || !amount.currency_code.chars().all(|c| c.is_ascii_uppercase())
            {
                violations.push(FieldViolation::new(
                    "refund.requested_amount.currency_code",
                    "an ISO 4217 code such as USD",
                ));
            }
        }
    }
}

/// A fingerprint of what a ticket asks for (the request without its id), to
/// tell a retry from a different ticket sent with the same request id.
pub fn fingerprint(r: &pb::CreateTicketRequest) -> String {
    use prost::Message as _;
    use prost::encoding::{WireType, encode_key, encode_varint};
    // The SHA-256 of the request's protobuf encoding without its id, fed to
    // the hash piece by piece so that no attachment is copied: prost writes
    // fields in number order, attachments (7) come after every other field
    // but the id (8, left out), and an attachment's content (3) after its
    // name and type. Equal to hashing `encode_to_vec` of the request with
    // its id cleared (pinned by a test), so stored fingerprints stay valid.
    // Every field named, so a new one is a compile error here, not a
    // fingerprint that silently ignores it.
    let head = pb::CreateTicketRequest {
        issue_type: r.issue_type,
        impact: r.impact,
        title: r.title.clone(),
        description: r.description.clone(),
        contact: r.contact.clone(),
        refund: r.refund.clone(),
        attachments: Vec::new(),
        request_id: String::new(),
    };
    let mut hash = Sha256::new();
    let mut scratch = Vec::new();
    head.encode_raw(&mut scratch);
    for a in &r.attachments {
        let meta = pb::AttachmentUpload {
            file_name: a.file_name.clone(),
            content_type: a.content_type.clone(),
            content: Bytes::new(),
            upload_id: String::new(),
        };
        // The upload id (4) comes after the content (3).
        let tail = pb::AttachmentUpload {
            upload_id: a.upload_id.clone(),
            ..Default::default()
        };
        let content_len = if a.content.is_empty() {
            0
        } else {
            1 + prost::encoding::encoded_len_varint(a.content.len() as u64) + a.content.len()
        };
        encode_key(7, WireType::LengthDelimited, &mut scratch);
        encode_varint(
            (meta.encoded_len() + content_len + tail.encoded_len()) as u64,
            &mut scratch,
        );
        meta.encode_raw(&mut scratch);
        if !a.content.is_empty() {
            encode_key(3, WireType::LengthDelimited, &mut scratch);
            encode_varint(a.content.len() as u64, &mut scratch);
            hash.update(&scratch);
            scratch.clear();
            hash.update(&a.content);
        }
        tail.encode_raw(&mut scratch);
    }
    hash.update(&scratch);
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of an attachment, hex.
pub fn sha256(content: &[u8]) -> String {
    Sha256::digest(content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Spreads a refund over subscriptions in order, each getting at most what
/// was paid for it. `None` when the refund exceeds the total paid.
pub fn allocate(requested: i64, paid: &[i64]) -> Option<Vec<i64>> {
    let mut left = requested;
    let shares: Vec<i64> = paid
        .iter()
        .map(|p| {
            let share = left.min(*p).max(0);
            left -= share;
            share
        })
        .collect();
    (left == 0).then_some(shares)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_and_phones() {
        assert!(is_email("ada@contoso.com"));
        for bad in [
            "",
            "ada",
            "ada@",
            "@contoso.com",
            "ada@contoso",
            "a b@c.com",
            "ada@-c.com",
        ] {
            assert!(!is_email(bad), "{bad:?}");
        }
        assert_eq!(
            normalize_phone("+1 425-555-0100").as_deref(),
            Some("+14255550100")
        );
        for bad in [
            "4255550100",
            "+0123456789",
            "+1234",
            "+1234567890123456",
            "+1 (425) 555",
        ] {
            assert!(normalize_phone(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn refunds_are_spread_in_order_up_to_each_payment() {
        assert_eq!(allocate(150, &[100, 100]), Some(vec![100, 50]));
        assert_eq!(allocate(200, &[100, 100]), Some(vec![100, 100]));
        assert_eq!(allocate(50, &[100, 100]), Some(vec![50, 0]));
        assert_eq!(allocate(201, &[100, 100]), None);
    }

    fn ticket() -> pb::CreateTicketRequest {
        pb::CreateTicketRequest {
            issue_type: pb::IssueType::Technical as i32,
            impact: pb::Impact::Minimal as i32,
            title: "Cannot download".into(),
            description: "The ISO stops at 40%".into(),
            contact: Some(pb::Contact {
                name: "Ada".into(),
                email: "ada@contoso.com".into(),
                phone: "+14255550100".into(),
            }),
            refund: None,
            attachments: vec![],
            request_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    #[test]
    fn a_plain_ticket_passes_and_bad_fields_are_named() {
        assert!(check_ticket(&ticket()).is_ok());
        let mut bad = ticket();
        bad.title.clear();
        bad.contact.as_mut().unwrap().phone = "555".into();
        bad.attachments = (0..6)
            .map(|_| pb::AttachmentUpload {
                file_name: "a.exe".into(),
                content_type: "application/x-msdownload".into(),
                content: vec![1].into(),
                upload_id: String::new(),
            })
            .collect();
        let Err(ApiError::InvalidArgument(v)) = check_ticket(&bad) else {
            panic!("expected INVALID_ARGUMENT")
        };
        let fields: Vec<&str> = v.iter().map(|v| v.field.as_str()).collect();
        assert!(
            fields.starts_with(&[
                "title",
                "contact.phone",
                "attachments",
                "attachments[0].content_type"
            ]),
            "{fields:?}"
        );
    }

    #[test]
    fn fingerprints_hash_the_encoding_without_the_id_and_copy_no_attachment() {
        use prost::Message as _;
        let mut r = ticket();
        r.refund = Some(pb::RefundRequest {
            reason: "bought by mistake".into(),
            ..Default::default()
        });
        r.attachments = vec![
            pb::AttachmentUpload {
                file_name: "a.pdf".into(),
                content_type: "application/pdf".into(),
                content: vec![7; 300].into(),
                upload_id: String::new(),
            },
            pb::AttachmentUpload {
                file_name: String::new(),
                content_type: "text/plain".into(),
                content: Bytes::new(),
                upload_id: String::new(),
            },
            pb::AttachmentUpload {
                file_name: "big.csv".into(),
                content_type: "text/csv".into(),
                content: vec![1; 200_000].into(),
                upload_id: String::new(),
            },
            pb::AttachmentUpload {
                file_name: "uploaded.pdf".into(),
                content_type: "application/pdf".into(),
                content: Bytes::new(),
                upload_id: "6f1c2a52-1d7e-4c55-9f0e-1b2c3d4e5f60".into(),
            },
            pb::AttachmentUpload {
                file_name: "both.pdf".into(),
                content_type: "application/pdf".into(),
                content: vec![2; 1000].into(),
                upload_id: "anything".into(),
            },
        ];
        for attachments in [0, 1, 2, 3, 4, 5] {
            let mut one = r.clone();
            one.attachments.truncate(attachments);
            let mut without_id = one.clone();
            without_id.request_id.clear();
            let expected: String = Sha256::digest(without_id.encode_to_vec())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(fingerprint(&one), expected, "{attachments} attachments");
        }
    }

    #[test]
    fn fingerprints_ignore_the_request_id() {
        let a = ticket();
        let mut b = a.clone();
        b.request_id = "other".into();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        b.title = "Other".into();
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }
}
