//! Support rules, without I/O: what a valid ticket is, and how a refund is
//! spread over the subscriptions it cancels.

use csp_kit::error::quoted;
use csp_kit::{ApiError, FieldViolation};
use csp_proto::support::v1 as pb;
use sha2::{Digest, Sha256};

/// At most this many attachments per ticket.
pub const MAX_ATTACHMENTS: usize = 5;
/// At most this many bytes per attachment.
pub const MAX_ATTACHMENT_BYTES: usize = 10 * 1024 * 1024;
/// The largest request the support service decodes: five full attachments
/// and the rest of the ticket.
pub const MAX_REQUEST_BYTES: usize = MAX_ATTACHMENTS * MAX_ATTACHMENT_BYTES + 1024 * 1024;
/// Content types an attachment may have.
pub const CONTENT_TYPES: [&str; 5] = [
    "application/pdf",
    "image/png",
    "image/jpeg",
    "text/plain",
    "text/csv",
];

/// Stored spelling of an issue type.
pub fn issue_type_to_db(value: i32) -> Option<&'static str> {
    Some(match pb::IssueType::try_from(value).ok()? {
        pb::IssueType::Unspecified => return None,
        pb::IssueType::PurchaseRefund => "purchase_refund",
        pb::IssueType::Billing => "billing",
        pb::IssueType::Technical => "technical",
        pb::IssueType::Other => "other",
    })
}

/// Stored spelling of an impact.
pub fn impact_to_db(value: i32) -> Option<&'static str> {
    Some(match pb::Impact::try_from(value).ok()? {
        pb::Impact::Unspecified => return None,
        pb::Impact::Critical => "critical",
        pb::Impact::Moderate => "moderate",
        pb::Impact::Minimal => "minimal",
    })
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

/// Checks a new ticket, naming every bad field.
pub fn check_ticket(r: &pb::CreateTicketRequest) -> Result<(), ApiError> {
    let mut violations = Vec::new();
    let issue_type = issue_type_to_db(r.issue_type);
    if issue_type.is_none() {
        violations.push(FieldViolation::new(
            "issue_type",
            "required: ISSUE_TYPE_PURCHASE_REFUND, ISSUE_TYPE_BILLING, ISSUE_TYPE_TECHNICAL or ISSUE_TYPE_OTHER",
        ));
    }
    if impact_to_db(r.impact).is_none() {
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
        if a.content.is_empty() || a.content.len() > MAX_ATTACHMENT_BYTES {
            violations.push(FieldViolation::new(
                format!("attachments[{i}].content"),
                format!("1 byte to 10 MiB, not {} bytes", a.content.len()),
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
        (Some("purchase_refund"), None) => violations.push(FieldViolation::new(
            "refund",
            "a purchase/refund ticket names the customer, the order or subscription, the reason and the amount",
        )),
        (Some("purchase_refund"), Some(refund)) => check_refund(&mut violations, refund),
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
    let mut without_id = r.clone();
    without_id.request_id.clear();
    Sha256::digest(without_id.encode_to_vec())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
                content: vec![1],
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
    fn fingerprints_ignore_the_request_id() {
        let a = ticket();
        let mut b = a.clone();
        b.request_id = "other".into();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        b.title = "Other".into();
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }
}
